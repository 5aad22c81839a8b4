//! The generic, versioned file envelope shared by `.card`, `.deck` and
//! training checkpoints.
//!
//! Layout (all integers little-endian), [`HEADER_LEN`] bytes of header then
//! the payload:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8   | magic `CARDC\0\x1a\n` (binary-looking, stops text tools and catches CRLF mangling) |
//! | 8..12  | format version ([`FORMAT_VERSION`]) |
//! | 12..16 | content kind ([`Kind`]) |
//! | 16..24 | payload length in bytes |
//! | 24..28 | CRC-32 (IEEE) of the payload |
//! | 28..   | payload: bincode 2, standard config, of the kind's serde type |
//!
//! bincode is not self-describing, so any change to a serialized type is a
//! format change: bump [`FORMAT_VERSION`] (older cardc then refuses the file
//! with a clear message instead of misreading it).

use super::error::{CardError, one_line};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// First eight bytes of every cardc container.
pub const MAGIC: [u8; 8] = *b"CARDC\x00\x1a\n";
/// The format version this build writes and the newest it reads. Version 2
/// added the per-tensor precision (f32/f16/int8) to the models inside
/// training checkpoints; card and deck payloads are unchanged (a card's
/// tensors carry their precision in their stored encoding), so those are
/// still read from version 1 on. Version 3 added to training checkpoints
/// the progress of a part-done epoch (stops on Ctrl-C) and AdvProp's
/// auxiliary BatchNorm. See [`Kind::oldest_readable`].
pub const FORMAT_VERSION: u32 = 3;
/// Size of the fixed header before the payload.
pub const HEADER_LEN: usize = 28;

/// What a container holds. The numeric codes are part of the file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Card = 1,
    Deck = 2,
    Checkpoint = 3,
}

impl Kind {
    /// The code stored in the header.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind for a header code, if known.
    pub fn from_code(code: u32) -> Option<Kind> {
        match code {
            1 => Some(Kind::Card),
            2 => Some(Kind::Deck),
            3 => Some(Kind::Checkpoint),
            _ => None,
        }
    }

    /// The oldest format version whose payload of this kind decodes
    /// unchanged; older files are refused with a message saying so, since
    /// bincode would misread them.
    pub fn oldest_readable(self) -> u32 {
        match self {
            Kind::Card | Kind::Deck => 1,
            Kind::Checkpoint => 3,
        }
    }

    /// Lower-case name for messages ("card", "deck", "training checkpoint").
    pub fn name(self) -> &'static str {
        match self {
            Kind::Card => "card",
            Kind::Deck => "deck",
            Kind::Checkpoint => "training checkpoint",
        }
    }

    /// The name with an indefinite article, for messages.
    pub fn with_article(self) -> String {
        format!("a {}", self.name())
    }
}

/// The decoded fixed header of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub kind: Kind,
    pub payload_len: u64,
    pub crc: u32,
}

/// How a path is named in messages.
pub(crate) fn label(path: &Path) -> String {
    path.display().to_string()
}

/// Serializes `value` into a complete container image (header + payload).
pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, String> {
    let payload =
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(one_line)?;
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Checks the header of a container image without looking at the kind it
/// should be. `file` names the source in errors. The checks run in the order
/// that gives the most useful message: not ours at all, cut short, from a
/// newer cardc.
pub fn parse_header(file: &str, bytes: &[u8]) -> Result<Header, CardError> {
    let file = file.to_string();
    if bytes.is_empty() {
        return Err(CardError::Empty { file });
    }
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(CardError::BadMagic { file });
    }
    if bytes.len() < HEADER_LEN {
        return Err(CardError::TruncatedHeader {
            file,
            actual: bytes.len() as u64,
        });
    }
    let version = le_u32(&bytes[8..12]);
    let code = le_u32(&bytes[12..16]);
    let payload_len = le_u64(&bytes[16..24]);
    let crc = le_u32(&bytes[24..28]);
    if version == 0 {
        return Err(CardError::BadVersion { file, version });
    }
    let Some(kind) = Kind::from_code(code) else {
        if version > FORMAT_VERSION {
            return Err(CardError::TooNew {
                file,
                version,
                supported: FORMAT_VERSION,
            });
        }
        return Err(CardError::UnknownKind { file, code });
    };
    Ok(Header {
        version,
        kind,
        payload_len,
        crc,
    })
}

/// Decodes a complete container image that should hold `kind`.
pub fn decode<T: DeserializeOwned>(file: &str, bytes: &[u8], kind: Kind) -> Result<T, CardError> {
    let h = parse_header(file, bytes)?;
    let file = file.to_string();
    // The kind field sits at the same place in every version, so a deck is
    // reported as a deck even when it comes from a newer cardc.
    if h.kind != kind {
        return Err(CardError::WrongKind {
            file,
            found: h.kind,
            expected: kind,
        });
    }
    if h.version > FORMAT_VERSION {
        return Err(CardError::TooNew {
            file,
            version: h.version,
            supported: FORMAT_VERSION,
        });
    }
    if h.version < kind.oldest_readable() {
        return Err(CardError::Decode {
            file,
            message: format!(
                "format version {} is older than this cardc reads for {} ({}); re-create the file with this cardc",
                h.version,
                kind.with_article(),
                kind.oldest_readable()
            ),
        });
    }
    let have = (bytes.len() - HEADER_LEN) as u64;
    if have < h.payload_len {
        return Err(CardError::Truncated {
            file,
            expected: h.payload_len,
            actual: have,
        });
    }
    if have > h.payload_len {
        return Err(CardError::TrailingBytes {
            file,
            extra: have - h.payload_len,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if crc32fast::hash(payload) != h.crc {
        return Err(CardError::Checksum { file });
    }
    let (value, used) = decode_bounded::<T>(payload).map_err(|e| CardError::Decode {
        file: file.clone(),
        message: one_line(e),
    })?;
    if used != payload.len() {
        return Err(CardError::Decode {
            file,
            message: format!("{} bytes left over after the value", payload.len() - used),
        });
    }
    Ok(value)
}

/// Decodes with a bincode allocation limit proportional to the payload.
///
/// bincode pre-allocates a byte vector or string as soon as it reads its
/// length, so without a limit a damaged length could ask for exabytes. The
/// limit counts in-memory bytes, and a varint-encoded integer may claim up to
/// 8 bytes per stored byte, so 16× the payload bounds every honest file while
/// keeping allocation within a small multiple of the file size. bincode takes
/// the limit as a const generic, hence the ladder of sizes.
fn decode_bounded<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), String> {
    use bincode::config::standard;
    use bincode::serde::decode_from_slice;
    let need = payload.len().saturating_mul(16);
    macro_rules! ladder {
        ($($shift:literal)*) => {
            $(
                if need <= 1usize << $shift {
                    return decode_from_slice(payload, standard().with_limit::<{ 1usize << $shift }>())
                        .map_err(|e| e.to_string());
                }
            )*
        };
    }
    ladder!(16 18 20 22 24 26 28 30 32 34 36 38 40 44 48);
    Err(format!(
        "payload of {} bytes is too large to decode",
        payload.len()
    ))
}

/// Reads only the header of `path` (cheap: 28 bytes), e.g. to tell a card
/// from a deck before loading either.
pub fn read_header(path: &Path) -> Result<Header, CardError> {
    use std::io::Read;
    let file = label(path);
    let io = |source| CardError::Io {
        file: file.clone(),
        action: "cannot read",
        source,
    };
    let mut buf = Vec::with_capacity(HEADER_LEN);
    fs::File::open(path)
        .map_err(io)?
        .take(HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .map_err(io)?;
    parse_header(&file, &buf)
}

/// The whole content of `path` and its label for errors.
pub fn read_file(path: &Path) -> Result<(String, Vec<u8>), CardError> {
    let file = label(path);
    let bytes = fs::read(path).map_err(|source| CardError::Io {
        file: file.clone(),
        action: "cannot read",
        source,
    })?;
    Ok((file, bytes))
}

/// Reads a container of the given kind from `path`.
pub fn read<T: DeserializeOwned>(path: &Path, kind: Kind) -> Result<T, CardError> {
    let (file, bytes) = read_file(path)?;
    decode(&file, &bytes, kind)
}

/// Writes `value` as a container of `kind` at `path`, atomically: the bytes
/// go to a fresh temporary file in the same directory, are flushed to disk
/// and then renamed over `path`. A crash or error at any point leaves either
/// the old file or the complete new one at `path`, never a partial file, and
/// the temporary file is removed on error. Serialization happens before any
/// file is touched.
pub fn write_atomic<T: Serialize>(path: &Path, kind: Kind, value: &T) -> Result<(), CardError> {
    let file = label(path);
    let bytes = encode(kind, value).map_err(|message| CardError::Encode {
        file: file.clone(),
        message,
    })?;
    let io = |source| CardError::Io {
        file: file.clone(),
        action: "cannot write",
        source,
    };
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    sync_parent(path);
    Ok(())
}

/// A temporary name beside `path` that no concurrent writer (thread or
/// process) picks too.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cardc".into());
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

/// Makes the rename itself durable where the platform allows it; failure
/// here only weakens crash safety, so it is not reported.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
