//! A small `.npy` (NumPy array file) reader and writer for the integer
//! arrays of CIFAR-10-C: uint8 images `[N, H, W, C]` and integer labels.
//!
//! Own code rather than a crate because cardc needs only C-order integer
//! arrays, streamed writes (a CIFAR-10-C file is 150 MB) and reads of one
//! slice, with every size checked against the file length.

use anyhow::{Context, bail};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element types cardc reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        Some(match descr {
            "|u1" | "<u1" | "u1" => Dtype::U8,
            "|i1" | "<i1" | "i1" => Dtype::I8,
            "<i2" => Dtype::I16,
            "<u2" => Dtype::U16,
            "<i4" => Dtype::I32,
            "<u4" => Dtype::U32,
            "<i8" => Dtype::I64,
            "<u8" => Dtype::U64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 => 4,
            Dtype::I64 | Dtype::U64 => 8,
        }
    }

    /// NumPy's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::U8 => "uint8",
            Dtype::I8 => "int8",
            Dtype::I16 => "int16",
            Dtype::U16 => "uint16",
            Dtype::I32 => "int32",
            Dtype::U32 => "uint32",
            Dtype::I64 => "int64",
            Dtype::U64 => "uint64",
        }
    }
}

/// A parsed `.npy` header: where the data starts and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

impl Header {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads and checks the header of `path`; the data must fit in the file.
pub fn read_header(path: &Path) -> anyhow::Result<(File, Header)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let file_len = f
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    let bad = |why: String| anyhow::anyhow!("{}: not a valid .npy file: {why}", path.display());
    let mut pre = [0u8; 8];
    f.read_exact(&mut pre)
        .map_err(|_| bad("shorter than the .npy preamble".into()))?;
    if &pre[..6] != MAGIC {
        return Err(bad("bad magic (expected \\x93NUMPY)".into()));
    }
    let (hlen, hstart) = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            f.read_exact(&mut b)
                .map_err(|_| bad("truncated header".into()))?;
            (u16::from_le_bytes(b) as u64, 10u64)
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            f.read_exact(&mut b)
                .map_err(|_| bad("truncated header".into()))?;
            (u32::from_le_bytes(b) as u64, 12u64)
        }
        v => return Err(bad(format!("unsupported format version {v}"))),
    };
    if hstart + hlen > file_len {
        return Err(bad(format!(
            "header of {hlen} bytes runs past the end of the file"
        )));
    }
    let mut text = vec![0u8; hlen as usize];
    f.read_exact(&mut text)
        .map_err(|_| bad("truncated header".into()))?;
    let text = String::from_utf8_lossy(&text).to_string();
    let descr = dict_value(&text, "descr")
        .and_then(|v| {
            let q = v.chars().next().filter(|c| *c == '\'' || *c == '"')?;
            v[1..].split(q).next().map(str::to_string)
        })
        .ok_or_else(|| bad("no 'descr' string in the header".into()))?;
    let dtype = Dtype::parse(&descr)
        .ok_or_else(|| bad(format!("unsupported dtype {descr:?} (integers only)")))?;
    if dict_value(&text, "fortran_order").is_some_and(|v| v.starts_with("True")) {
        return Err(bad("Fortran-order arrays are not supported".into()));
    }
    let shape_text =
        dict_value(&text, "shape").ok_or_else(|| bad("no 'shape' in the header".into()))?;
    let inner = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(s, _)| s)
        .ok_or_else(|| bad(format!("bad shape {shape_text:?}")))?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| bad(format!("bad shape ({inner})")))
        })
        .collect::<anyhow::Result<_>>()?;
    let data_offset = hstart + hlen;
    let bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| bad(format!("shape ({inner}) overflows")))?;
    // Checked: a damaged shape may claim up to u64::MAX bytes.
    if data_offset
        .checked_add(bytes)
        .is_none_or(|end| end > file_len)
    {
        return Err(bad(format!(
            "truncated: shape ({inner}) of {} needs {bytes} bytes of data, the file has {}",
            dtype.name(),
            file_len - data_offset
        )));
    }
    Ok((
        f,
        Header {
            dtype,
            shape,
            data_offset,
        },
    ))
}

/// The text after `'key':` in a header dict, up to the end.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let pos = text.find(&format!("'{key}'"))?;
    let rest = &text[pos + key.len() + 2..];
    Some(rest.trim_start().strip_prefix(':')?.trim_start())
}

/// `count` bytes of an array's data starting at element-byte `offset`.
pub fn read_bytes(
    f: &mut File,
    header: &Header,
    offset: u64,
    count: usize,
    path: &Path,
) -> anyhow::Result<Vec<u8>> {
    let total = (header.len() * header.dtype.size()) as u64;
    if offset
        .checked_add(count as u64)
        .is_none_or(|end| end > total)
    {
        bail!(
            "{}: read of {count} bytes at {offset} is outside the array",
            path.display()
        );
    }
    f.seek(SeekFrom::Start(header.data_offset + offset))
        .with_context(|| format!("cannot seek in {}", path.display()))?;
    let mut buf = vec![0u8; count];
    f.read_exact(&mut buf)
        .with_context(|| format!("{}: truncated", path.display()))?;
    Ok(buf)
}

/// Reads a 1-D integer array (e.g. labels) as i64 values.
pub fn read_ints(path: &Path) -> anyhow::Result<Vec<i64>> {
    let (mut f, h) = read_header(path)?;
    if h.shape.len() != 1 {
        bail!(
            "{}: expected a 1-D array, found shape {:?}",
            path.display(),
            h.shape
        );
    }
    let raw = read_bytes(&mut f, &h, 0, h.len() * h.dtype.size(), path)?;
    let s = h.dtype.size();
    Ok(raw
        .chunks_exact(s)
        .map(|b| match h.dtype {
            Dtype::U8 => b[0] as i64,
            Dtype::I8 => b[0] as i8 as i64,
            Dtype::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            Dtype::U16 => u16::from_le_bytes([b[0], b[1]]) as i64,
            Dtype::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            Dtype::I64 | Dtype::U64 => {
                i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
            }
        })
        .collect())
}

/// The header bytes of a version-1.0 file (padded to 64 bytes).
fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_text = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Writes a uint8 `.npy` of `shape` in pieces, atomically: the data goes to
/// a temporary file beside `path`, renamed over it by [`NpyWriter::finish`];
/// dropped unfinished, the temporary file is removed.
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    expected: u64,
    written: u64,
}

impl NpyWriter {
    /// Starts `path` (uint8, C order, `shape`).
    pub fn create(path: &Path, shape: &[usize]) -> anyhow::Result<NpyWriter> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.partial"));
        let f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&header_bytes("|u1", shape))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        Ok(NpyWriter {
            path: path.to_path_buf(),
            tmp,
            out: Some(out),
            expected: shape.iter().map(|&d| d as u64).product(),
            written: 0,
        })
    }

    /// Appends elements.
    pub fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        if self.written + data.len() as u64 > self.expected {
            bail!("{}: more data than its shape holds", self.path.display());
        }
        let out = self.out.as_mut().context("npy writer already finished")?;
        out.write_all(data)
            .with_context(|| format!("cannot write {}", self.tmp.display()))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Checks that the shape is filled, flushes and renames into place.
    pub fn finish(mut self) -> anyhow::Result<()> {
        if self.written != self.expected {
            bail!(
                "{}: {} of {} bytes written",
                self.path.display(),
                self.written,
                self.expected
            );
        }
        let out = self.out.take().context("npy writer already finished")?;
        let (tmp, path) = (&self.tmp, &self.path);
        let result = (|| -> anyhow::Result<()> {
            let f = out
                .into_inner()
                .map_err(|e| anyhow::anyhow!("cannot write {}: {}", tmp.display(), e.error()))?;
            f.sync_all()
                .with_context(|| format!("cannot sync {}", tmp.display()))?;
            std::fs::rename(tmp, path)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
        })();
        if result.is_err() {
            // No partial file left behind, whatever step failed.
            let _ = std::fs::remove_file(tmp);
        }
        result
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a whole uint8 array atomically.
pub fn write_u8(path: &Path, shape: &[usize], data: &[u8]) -> anyhow::Result<()> {
    let mut w = NpyWriter::create(path, shape)?;
    w.write(data)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let data: Vec<u8> = (0..2 * 3 * 4).map(|v| v as u8).collect();
        write_u8(&p, &[2, 3, 4], &data).unwrap();
        let (mut f, h) = read_header(&p).unwrap();
        assert_eq!(h.shape, [2, 3, 4]);
        assert_eq!(h.dtype, Dtype::U8);
        assert_eq!(h.data_offset % 64, 0);
        assert_eq!(read_bytes(&mut f, &h, 12, 12, &p).unwrap(), data[12..]);
        let q = dir.path().join("l.npy");
        write_u8(&q, &[5], &[1, 2, 3, 4, 9]).unwrap();
        assert_eq!(read_ints(&q).unwrap(), [1, 2, 3, 4, 9]);
        assert!(!dir.path().join(".a.npy.partial").exists());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.npy");
        write_u8(&p, &[100], &[7; 100]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = format!("{:#}", read_header(&p).unwrap_err());
        assert!(e.contains("truncated") && e.contains("t.npy"), "{e}");
        std::fs::write(&p, b"PK\x03\x04 not numpy at all").unwrap();
        assert!(format!("{:#}", read_header(&p).unwrap_err()).contains("magic"));
        // A huge shape in a tiny file is refused before any allocation.
        let mut h = header_bytes("|u1", &[1 << 40, 1 << 20]);
        h.extend_from_slice(&[0; 16]);
        std::fs::write(&p, &h).unwrap();
        assert!(format!("{:#}", read_header(&p).unwrap_err()).contains("truncated"));
        let f = header_bytes("<f4", &[4]);
        std::fs::write(&p, [f, vec![0; 16]].concat()).unwrap();
        assert!(format!("{:#}", read_header(&p).unwrap_err()).contains("dtype"));
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        {
            let mut w = NpyWriter::create(&p, &[10]).unwrap();
            w.write(&[1, 2, 3]).unwrap();
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let mut w = NpyWriter::create(&p, &[2]).unwrap();
        w.write(&[1]).unwrap();
        assert!(w.finish().is_err());
        assert!(!p.exists());
    }
}
