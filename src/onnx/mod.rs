//! ONNX export and import through `tract-onnx` (issue: ONNX). Not built yet.

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

/// Reads an ONNX file as a card (dense weights).
pub fn import_file(path: &Path, _opts: &ImportOptions) -> anyhow::Result<Card> {
    anyhow::bail!(
        "{}: ONNX import is not built yet (it arrives with ONNX import/export)",
        path.display()
    )
}
