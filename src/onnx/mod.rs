//! ONNX export and import, with the ONNX message types of `tract-onnx`
//! (prost): [`export`] writes a card's dense-equivalent graph, [`import`]
//! maps the supported operators of any ONNX file onto the IR, [`meta`]
//! carries normalization, class names and provenance in `metadata_props`,
//! [`tensors`] reads constants and attributes from untrusted files.

pub mod export;
pub mod import;
pub mod meta;
pub mod tensors;

pub use export::{ExportOptions, ExportSummary, export_file, export_model};
pub use import::{Imported, import_path, import_proto};

use crate::card::Card;
use std::path::Path;

/// Preprocessing metadata an ONNX file may lack (`cardc import --mean --std --classes`).
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Per-channel mean of the [0, 1]-scaled input, if given.
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, if given.
    pub std: Option<Vec<f32>>,
    /// Class names, if given.
    pub classes: Option<Vec<String>>,
}

/// Reads an ONNX file as a card (dense weights). Notes about defaults that
/// were used (no normalization in the file, ...) go to stderr.
pub fn import_file(path: &Path, opts: &ImportOptions) -> anyhow::Result<Card> {
    let imported = import_path(path, opts)?;
    for note in &imported.notes {
        eprintln!("note: {}: {note}", path.display());
    }
    Ok(imported.card)
}
