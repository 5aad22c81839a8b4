//! Byte-level entry points into the readers of untrusted files, shared by
//! the `cargo fuzz` targets (`fuzz/`) and the suite's regression tests that
//! replay their corpora and every crash they found.
//!
//! Each function takes the whole content of one input and runs the same
//! code a command runs on such a file, returning its error instead of
//! panicking. The directory readers (CIFAR-10 binary, CIFAR-10-C) are
//! exercised through real files in a per-process scratch directory so that
//! their path handling, seeks and size checks are what gets fuzzed.

pub mod mutate;

use crate::card::container::HEADER_LEN;
use crate::card::{Card, FORMAT_VERSION, Kind, MAGIC};
use crate::data::cifar10c::{Cifar10C, MANIFEST};
use crate::data::{Dataset, Split, load_cifar10};
use crate::deck::Deck;
use crate::onnx::{ImportOptions, import_proto};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// An entry point as the fuzzers and the suite call it.
pub type Entry = fn(&[u8]) -> anyhow::Result<()>;

/// Every fuzz target (`fuzz/fuzz_targets/<name>.rs`, corpus in
/// `fuzz/corpus/<name>/`) and its entry point, for the suite's corpus
/// replay and the mutation smoke run ([`mutate`]).
pub const TARGETS: [(&str, Entry); 5] = [
    ("card_decode", |b| card(b).map(|_| ())),
    ("cifar_reader", |b| cifar10_batch(b).map(|_| ())),
    ("deck_decode", |b| deck(b).map(|_| ())),
    ("npy_reader", |b| cifar10c(b).map(|_| ())),
    ("onnx_import", |b| onnx(b).map(|_| ())),
];

/// A `.card` file: container, payload, stored weights, validation, and the
/// `cardc info` summary of what decoded.
///
/// A checksum guards the payload, so random damage almost never gets past
/// it to the payload decoder. An input that starts with `P` is therefore
/// taken as a bare payload and wrapped in a valid header (right length and
/// checksum), so that the fuzzer explores bincode and the stored-weight
/// decoding too.
pub fn card(bytes: &[u8]) -> anyhow::Result<Card> {
    let wrapped;
    let bytes = match bytes.split_first() {
        Some((b'P', payload)) => {
            wrapped = wrap_payload(Kind::Card, payload);
            &wrapped[..]
        }
        _ => bytes,
    };
    let card = Card::decode("fuzz.card", bytes)?;
    let _ = crate::card::summary_text(&card);
    Ok(card)
}

/// A `.deck` file: container, payload, every member card (stored weights,
/// validation), the deck's consistency checks, and the `cardc info`
/// summary of what decoded (spectral band means over the signatures).
///
/// As for [`card`], an input that starts with `P` is a bare payload wrapped
/// in a valid header, so that mutations get past the checksum.
pub fn deck(bytes: &[u8]) -> anyhow::Result<Deck> {
    let wrapped;
    let bytes = match bytes.split_first() {
        Some((b'P', payload)) => {
            wrapped = wrap_payload(Kind::Deck, payload);
            &wrapped[..]
        }
        _ => bytes,
    };
    let deck = Deck::decode("fuzz.deck", bytes)?;
    let _ = crate::deck::info::summary_text(&deck);
    Ok(deck)
}

/// A container image of `kind` around `payload`, header fields correct.
pub fn wrap_payload(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// One CIFAR-10 binary batch file (`data_batch_1.bin`), read as the training
/// split of a directory holding only it.
pub fn cifar10_batch(bytes: &[u8]) -> anyhow::Result<Dataset> {
    let dir = Scratch::new()?;
    dir.write("data_batch_1.bin", bytes)?;
    load_cifar10(dir.path(), Split::Train)
}

/// A CIFAR-10-C directory packed into one input (see [`unpack_cifar10c`]):
/// `labels.npy`, an optional `cardc-corrupt.json` manifest and one
/// corruption file, opened and read cell by cell as `cardc eval` does.
pub fn cifar10c(bytes: &[u8]) -> anyhow::Result<Dataset> {
    let (labels, manifest, images) = unpack_cifar10c(bytes);
    let dir = Scratch::new()?;
    dir.write("labels.npy", labels)?;
    if !manifest.is_empty() {
        dir.write(MANIFEST, manifest)?;
    }
    dir.write("gaussian_noise.npy", images)?;
    Cifar10C::open(dir.path())?.load_all()
}

/// Splits a packed CIFAR-10-C input: a little-endian u32 length and that
/// many bytes of `labels.npy`, another length-prefixed manifest (empty: no
/// manifest), and the rest as the corruption file. Short inputs give empty
/// parts, so every byte string is a valid packing.
pub fn unpack_cifar10c(bytes: &[u8]) -> (&[u8], &[u8], &[u8]) {
    fn take(b: &[u8]) -> (&[u8], &[u8]) {
        if b.len() < 4 {
            return (&[], b);
        }
        let n = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let rest = &b[4..];
        rest.split_at(n.min(rest.len()))
    }
    let (labels, rest) = take(bytes);
    let (manifest, images) = take(rest);
    (labels, manifest, images)
}

/// The inverse of [`unpack_cifar10c`], for writing seeds and tests.
pub fn pack_cifar10c(labels: &[u8], manifest: &[u8], images: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len() + manifest.len() + images.len());
    out.extend_from_slice(&(labels.len() as u32).to_le_bytes());
    out.extend_from_slice(labels);
    out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    out.extend_from_slice(manifest);
    out.extend_from_slice(images);
    out
}

/// An ONNX file: protobuf decoding and the mapping onto the IR, as
/// `cardc import` does (without preprocessing flags).
pub fn onnx(bytes: &[u8]) -> anyhow::Result<Card> {
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(bytes)
        .map_err(|e| anyhow::anyhow!("fuzz.onnx: not an ONNX model (protobuf: {e})"))?;
    let imported = import_proto(&proto, &ImportOptions::default(), "fuzz", "fuzz.onnx")
        .context("fuzz.onnx")?;
    Ok(imported.card)
}

/// A fresh directory under the system temporary directory, removed on drop.
/// Fuzzers call the readers millions of times, so this avoids any crate and
/// any randomness: the process id and a counter make the name unique.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cardc-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("cannot write {}", p.display()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
