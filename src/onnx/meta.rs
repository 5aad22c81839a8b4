//! The card's preprocessing, class names and provenance as ONNX
//! `metadata_props` (JSON values under `cardc.*` keys), so that a cardc
//! export imports back with everything it had.

use crate::card::{Card, Provenance};
use crate::data::Normalization;
use tract_onnx::pb::StringStringEntryProto;

/// Per-channel mean of the [0, 1]-scaled input (JSON array).
pub const KEY_MEAN: &str = "cardc.normalization.mean";
/// Per-channel standard deviation (JSON array).
pub const KEY_STD: &str = "cardc.normalization.std";
/// Class names in logit order (JSON array).
pub const KEY_CLASSES: &str = "cardc.class_names";
/// The card's provenance (JSON object).
pub const KEY_PROVENANCE: &str = "cardc.provenance";
/// How inputs are scaled (plain text for other tools' users).
pub const KEY_PREPROCESS: &str = "preprocessing";

/// Metadata entries describing `card`.
pub fn write(card: &Card) -> anyhow::Result<Vec<StringStringEntryProto>> {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: key.into(),
        value,
    };
    Ok(vec![
        entry(KEY_MEAN, serde_json::to_string(&card.normalization.mean)?),
        entry(KEY_STD, serde_json::to_string(&card.normalization.std)?),
        entry(KEY_CLASSES, serde_json::to_string(&card.class_names)?),
        entry(KEY_PROVENANCE, serde_json::to_string(&card.provenance)?),
        entry(
            KEY_PREPROCESS,
            "input = (pixel / 255 - mean[c]) / std[c], NCHW RGB; see cardc.normalization.*".into(),
        ),
    ])
}

/// What a file's metadata restores (each part only when present and well formed).
#[derive(Debug, Default)]
pub struct Restored {
    pub normalization: Option<Normalization>,
    pub classes: Option<Vec<String>>,
    pub provenance: Option<Provenance>,
    /// Entries that were present but unreadable (key: why).
    pub problems: Vec<String>,
}

/// Reads the `cardc.*` entries; anything absent stays `None`.
pub fn read(props: &[StringStringEntryProto]) -> Restored {
    let mut r = Restored::default();
    let get = |key: &str| {
        props
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    };
    fn parse<T: serde::de::DeserializeOwned>(
        key: &str,
        v: Option<&str>,
        problems: &mut Vec<String>,
    ) -> Option<T> {
        let v = v?;
        match serde_json::from_str(v) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(format!("{key}: {e}"));
                None
            }
        }
    }
    let mean: Option<Vec<f32>> = parse(KEY_MEAN, get(KEY_MEAN), &mut r.problems);
    let std: Option<Vec<f32>> = parse(KEY_STD, get(KEY_STD), &mut r.problems);
    if let (Some(mean), Some(std)) = (mean, std) {
        r.normalization = Some(Normalization { mean, std });
    }
    r.classes = parse(KEY_CLASSES, get(KEY_CLASSES), &mut r.problems);
    r.provenance = parse(KEY_PROVENANCE, get(KEY_PROVENANCE), &mut r.problems);
    r
}
