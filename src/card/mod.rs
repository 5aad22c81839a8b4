//! The `.card` container: a trained (possibly pruned or binarized) model
//! with everything needed to use and judge it — normalization, class names,
//! provenance and measured metrics — in one checksummed, versioned file.
//!
//! * [`container`]: the generic file envelope (also used by decks and
//!   training checkpoints): header, checksum, atomic writes.
//! * [`stored`]: the compressed on-disk form of weights.
//! * [`bits`]: bit packing for masks and signs.
//! * [`info`]: the `cardc info` summary.

pub mod bits;
pub mod container;
mod error;
pub mod info;
pub mod stored;

pub use bits::{pack_bits, unpack_bits};
pub use container::{FORMAT_VERSION, Header, Kind, MAGIC, read, read_header, write_atomic};
pub use error::CardError;
pub use info::{summary, summary_text};
pub use stored::{StoredModel, StoredParam, StoredTensor};

use crate::data::Normalization;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// How a card was made. Free-form strings so that new methods and backends
/// need no format change; empty means unknown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Training or compression method (`dense`, `gmp`, `biprop`, `import`, ...).
    pub method: String,
    /// Architecture name or description path as given to `--arch`.
    pub arch: String,
    pub width_mult: f32,
    /// Target sparsity the method was asked for (measured sparsity is in
    /// the weights themselves).
    pub sparsity: f64,
    /// Augmentation used in training (`none`, `flipcrop`, `augmix`, ...).
    pub augment: String,
    pub seed: u64,
    /// The `--data` argument.
    pub data: String,
    /// Digest of the training data, to tell apart same-named datasets.
    pub data_digest: String,
    /// Training backend (`cpu`, `wgpu`) and the adapter it ran on.
    pub backend: String,
    pub adapter: String,
    pub epochs: usize,
    /// Version of the cardc that wrote the card.
    pub cardc_version: String,
    /// Seconds since the Unix epoch when the card was made.
    pub created_unix: u64,
    /// Anything else worth keeping (one line each).
    pub notes: Vec<String>,
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance {
            method: String::new(),
            arch: String::new(),
            width_mult: 1.0,
            sparsity: 0.0,
            augment: String::new(),
            seed: 0,
            data: String::new(),
            data_digest: String::new(),
            backend: String::new(),
            adapter: String::new(),
            epochs: 0,
            cardc_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: 0,
            notes: Vec::new(),
        }
    }
}

impl Provenance {
    /// Sets the writer's version and the creation time: now, or the
    /// `SOURCE_DATE_EPOCH` environment variable when it holds a number (the
    /// reproducible-builds convention), so that the same run with the same
    /// seed writes byte-identical cards.
    pub fn stamp(&mut self) {
        self.cardc_version = env!("CARGO_PKG_VERSION").to_string();
        let fixed = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        self.created_unix = fixed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    }
}

/// A model and what is needed to use and judge it.
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub model: Model,
    /// Input preprocessing; one mean/std per input channel.
    pub normalization: Normalization,
    /// One name per output class, in logit order.
    pub class_names: Vec<String>,
    pub provenance: Provenance,
    /// Measured results (`accuracy`, `ece`, `mean_corruption_accuracy`, ...).
    pub metrics: BTreeMap<String, f64>,
}

/// The serialized payload of a `.card`: the card with weights in stored
/// form. Changing it is a format change (see [`container`]).
#[derive(Serialize, Deserialize)]
struct CardPayload {
    model: StoredModel,
    normalization: Normalization,
    class_names: Vec<String>,
    provenance: Provenance,
    metrics: BTreeMap<String, f64>,
}

impl Card {
    /// A card with default provenance and no metrics.
    pub fn new(model: Model, normalization: Normalization, class_names: Vec<String>) -> Card {
        Card {
            model,
            normalization,
            class_names,
            provenance: Provenance::default(),
            metrics: BTreeMap::new(),
        }
    }

    /// Checks that the parts fit together: valid model, one class name per
    /// output, one finite mean and positive std per input channel.
    pub fn validate(&self) -> Result<(), String> {
        self.model.validate()?;
        self.check_finite()?;
        let classes = self.model.graph.classes();
        if self.class_names.len() != classes {
            return Err(format!(
                "{} class names for a model with {classes} outputs",
                self.class_names.len()
            ));
        }
        let [channels, _, _] = self.model.graph.input_shape();
        let n = &self.normalization;
        if n.mean.len() != channels || n.std.len() != channels {
            return Err(format!(
                "normalization has {} means and {} stds for {channels} input channels",
                n.mean.len(),
                n.std.len()
            ));
        }
        if n.mean.iter().any(|m| !m.is_finite())
            || n.std.iter().any(|s| !(*s > 0.0 && s.is_finite()))
        {
            return Err("normalization needs finite means and positive finite stds".into());
        }
        Ok(())
    }

    /// Every stored value must be finite: a NaN or infinite weight (a
    /// damaged file or a diverged run) would only show up later as NaN
    /// logits, so it is refused here, naming the layer.
    fn check_finite(&self) -> Result<(), String> {
        for (node, ts) in self.model.graph.nodes.iter().zip(&self.model.params) {
            for t in ts {
                if let Some(i) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(format!(
                        "layer '{}': parameter {} holds {} at index {i}",
                        node.name,
                        t.kind.suffix(),
                        t.data[i]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes the card atomically (see [`write_atomic`]). An invalid card is
    /// refused before anything is written.
    pub fn save(&self, path: &Path) -> Result<(), CardError> {
        self.validate().map_err(|message| CardError::Invalid {
            file: container::label(path),
            what: "card",
            message,
        })?;
        let payload = CardPayload {
            model: StoredModel::from_model(&self.model),
            normalization: self.normalization.clone(),
            class_names: self.class_names.clone(),
            provenance: self.provenance.clone(),
            metrics: self.metrics.clone(),
        };
        write_atomic(path, Kind::Card, &payload)
    }

    /// Reads and validates a card.
    pub fn load(path: &Path) -> Result<Card, CardError> {
        let (file, bytes) = container::read_file(path)?;
        Card::decode(&file, &bytes)
    }

    /// Decodes and validates a card from the bytes of a `.card` file;
    /// `file` names it in errors.
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Card, CardError> {
        let file = file.to_string();
        let p: CardPayload = container::decode(&file, bytes, Kind::Card)?;
        let invalid = |message| CardError::Invalid {
            file: file.clone(),
            what: "card",
            message,
        };
        let card = Card {
            model: p.model.into_model().map_err(invalid)?,
            normalization: p.normalization,
            class_names: p.class_names,
            provenance: p.provenance,
            metrics: p.metrics,
        };
        // The graph comes from the file: `Graph::shapes` (inside validate)
        // bounds every size before any other arithmetic uses it.
        let checked = card
            .validate()
            .and_then(|_| card.model.graph.macs().map(|_| ()));
        checked.map_err(invalid)?;
        Ok(card)
    }
}
