//! The one error type of the container. Every message is a single line that
//! starts with the file it is about, because the CLI prints it as is and a
//! user with a directory of cards needs to know which one is bad.

use super::container::{HEADER_LEN, Kind};

/// Why a container file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CardError {
    /// The operating system refused (missing file, permissions, full disk).
    #[error("{file}: {action}: {source}")]
    Io {
        file: String,
        /// "cannot read" or "cannot write".
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{file}: empty file")]
    Empty { file: String },
    #[error("{file}: not a cardc file (bad magic)")]
    BadMagic { file: String },
    #[error("{file}: truncated (header needs {HEADER_LEN} bytes, file has {actual})")]
    TruncatedHeader { file: String, actual: u64 },
    #[error("{file}: truncated (header says {expected} payload bytes, file has {actual})")]
    Truncated {
        file: String,
        expected: u64,
        actual: u64,
    },
    #[error("{file}: {extra} unexpected bytes after the payload (file damaged)")]
    TrailingBytes { file: String, extra: u64 },
    #[error("{file}: checksum mismatch (file damaged)")]
    Checksum { file: String },
    #[error("{file}: format version {version} is newer than this cardc supports ({supported})")]
    TooNew {
        file: String,
        version: u32,
        supported: u32,
    },
    #[error("{file}: format version {version} is not a valid version (file damaged)")]
    BadVersion { file: String, version: u32 },
    #[error("{file}: unknown content kind {code} (file damaged or from a newer cardc)")]
    UnknownKind { file: String, code: u32 },
    #[error("{file}: is {}, not {}", found.with_article(), expected.with_article())]
    WrongKind {
        file: String,
        found: Kind,
        expected: Kind,
    },
    #[error("{file}: payload does not decode: {message}")]
    Decode { file: String, message: String },
    #[error("{file}: cannot encode: {message}")]
    Encode { file: String, message: String },
    /// Decoded fine but the content is inconsistent (shapes, masks, names).
    #[error("{file}: invalid {what}: {message}")]
    Invalid {
        file: String,
        what: &'static str,
        message: String,
    },
}

/// Collapses a possibly multi-line message into one line.
pub(crate) fn one_line(s: impl std::fmt::Display) -> String {
    s.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}
