//! CARD-Decks: ensembles of cards with a spectral gate (RESEARCH.md §1).
//!
//! # Design
//! Cards trained with different augmentations are robust in different
//! frequency bands (Gaussian noise training helps against high-frequency
//! noise, AugMix more against blur, contrast and weather). A deck stores,
//! per card, a *spectral signature* of its training augmentation and picks,
//! per input (or per batch), the cards whose signature is nearest the
//! input's own spectral deviation from clean images.
//!
//! * **Spectrum** ([`spectrum`]): per channel, the centered 2-D DFT
//!   amplitude of the image in [0, 1] units (orthonormal scaling), through
//!   `rustfft`, compared in *log* amplitude `ln(|X| + 1e-3)`.
//!   Why log: natural images' amplitude falls off roughly as 1/f, so linear
//!   differences would be dominated by the few low-frequency bins where
//!   image content varies most; in log amplitude a distortion that scales a
//!   band (contrast: all non-DC bins by c; blur: high bins by its transfer
//!   function) is the same additive offset for every image, and each bin
//!   counts alike. The zero-frequency bin (mean brightness) is dropped.
//! * **Clean reference**: mean log-amplitude spectrum of up to `--limit`
//!   clean training images (seeded sample), stored in the deck.
//! * **Signature** ([`signature`]): mean over the same images of
//!   `logamp(aug(x)) − logamp(flipcrop(x))` with the same random crop on
//!   both sides: the augmentation's own distortion, without the crop border
//!   every CIFAR augmentation shares. Gaussian training's signature applies
//!   the noise to every image (the training probability only says how often
//!   the card saw it). `none`/`flipcrop` cards have a zero signature: the
//!   gate sends clean-looking inputs to them.
//! * **Gate** ([`gate`]): deviation `d(x) = logamp(x) − reference` (DC
//!   zeroed); distance to each signature by mean L1 or cosine; the `k`
//!   nearest cards answer and the deck's output is the mean of their
//!   softmax. `average` skips the gate (all cards, RobustBench's form).
//!   With `scope batch` one decision is made from the batch's mean
//!   deviation (inputs that come in batches from one source).
//! * **Container** ([`format`]): the generic checksummed envelope with
//!   kind `Deck`; member cards keep their stored (packed) weight encodings.
//!
//! Attacks on decks are refused: the gate's top-k choice has no useful
//! gradient, so a white-box attack through it would be mis-stated.

pub mod build;
pub mod format;
pub mod gate;
pub mod info;
pub mod predict;
pub mod signature;
pub mod spectrum;

pub use build::{BuildConfig, build};
pub use gate::{GateKind, GateSettings, Metric, Scope};
pub use spectrum::SpectrumPlan;

use crate::card::Card;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One card of a deck.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// Name in reports (the card's file stem, made unique within the deck).
    pub name: String,
    pub card: Card,
    /// The augmentation the signature describes (as `--augment` spells it).
    pub augment: String,
    /// Mean log-amplitude deviation of that augmentation, `[C, H, W]`
    /// centered, DC zeroed.
    pub signature: Vec<f32>,
}

/// How a deck was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DeckProvenance {
    /// The `--data` the signatures and reference come from.
    pub data: String,
    pub data_digest: String,
    /// Images used for the reference and each signature.
    pub images: usize,
    pub seed: u64,
    pub cardc_version: String,
    pub created_unix: u64,
    pub notes: Vec<String>,
}

/// A gated ensemble of cards.
#[derive(Clone, Debug, PartialEq)]
pub struct Deck {
    pub members: Vec<Member>,
    pub gate: GateSettings,
    /// Mean clean log-amplitude spectrum, `[C, H, W]` centered.
    pub reference: Vec<f32>,
    pub provenance: DeckProvenance,
    /// Measured results, like a card's.
    pub metrics: BTreeMap<String, f64>,
}

impl Deck {
    /// `[C, H, W]` of the inputs (every member's).
    pub fn input_shape(&self) -> [usize; 3] {
        self.members
            .first()
            .map_or([0, 0, 0], |m| m.card.model.graph.input_shape())
    }

    /// Output classes (every member's).
    pub fn classes(&self) -> usize {
        self.members
            .first()
            .map_or(0, |m| m.card.model.graph.classes())
    }

    /// Class names (every member's).
    pub fn class_names(&self) -> &[String] {
        self.members
            .first()
            .map_or(&[], |m| m.card.class_names.as_slice())
    }

    /// The signatures in member order.
    pub fn signatures(&self) -> Vec<Vec<f32>> {
        self.members.iter().map(|m| m.signature.clone()).collect()
    }

    /// Checks that the parts fit together: a valid gate for the member
    /// count; every card valid, with the same input shape, classes and class
    /// names; unique member names; finite signatures and reference of
    /// `C·H·W` values.
    pub fn validate(&self) -> Result<(), String> {
        self.gate.validate(self.members.len())?;
        let shape = self.input_shape();
        let names = self.class_names();
        let len: usize = shape.iter().product();
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        for (i, m) in self.members.iter().enumerate() {
            let who = format!("card {} ('{}')", i + 1, m.name);
            m.card.validate().map_err(|e| format!("{who}: {e}"))?;
            let s = m.card.model.graph.input_shape();
            if s != shape {
                return Err(format!(
                    "{who} takes {s:?} inputs, the first card {shape:?}"
                ));
            }
            if m.card.class_names != names {
                return Err(format!(
                    "{who} has classes {:?}, the first card {names:?}",
                    m.card.class_names
                ));
            }
            if m.signature.len() != len || !finite(&m.signature) {
                return Err(format!(
                    "{who}: signature needs {len} finite values, has {}",
                    m.signature.len()
                ));
            }
            if self.members[..i].iter().any(|o| o.name == m.name) {
                return Err(format!("two cards are named '{}'", m.name));
            }
        }
        if self.reference.len() != len || !finite(&self.reference) {
            return Err(format!(
                "clean reference spectrum needs {len} finite values, has {}",
                self.reference.len()
            ));
        }
        Ok(())
    }
}
