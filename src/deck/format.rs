//! The `.deck` file: the generic cardc envelope (magic, version, kind
//! `Deck`, CRC-32; see [`crate::card::container`]) around a bincode
//! [`DeckPayload`]. Member cards are stored like a `.card` stores them
//! ([`StoredModel`]: masks bit-packed, binary weights as sign bits, f16 and
//! int8 tensors in their format), so a deck costs the sum of its cards plus
//! one spectrum per card. Changing these types is a format change.

use super::{Deck, DeckProvenance, GateSettings, Member};
use crate::card::container::{self, Kind, write_atomic};
use crate::card::{Card, CardError, Provenance, StoredModel};
use crate::data::Normalization;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One member as stored: the card's payload fields plus its name,
/// augmentation and signature.
#[derive(Serialize, Deserialize)]
struct MemberPayload {
    name: String,
    model: StoredModel,
    normalization: Normalization,
    class_names: Vec<String>,
    provenance: Provenance,
    metrics: BTreeMap<String, f64>,
    augment: String,
    signature: Vec<f32>,
}

/// The serialized deck.
#[derive(Serialize, Deserialize)]
struct DeckPayload {
    members: Vec<MemberPayload>,
    gate: GateSettings,
    reference: Vec<f32>,
    provenance: DeckProvenance,
    metrics: BTreeMap<String, f64>,
}

impl Deck {
    /// Writes the deck atomically; an invalid deck is refused before
    /// anything is written.
    pub fn save(&self, path: &Path) -> Result<(), CardError> {
        self.validate().map_err(|message| CardError::Invalid {
            file: container::label(path),
            what: "deck",
            message,
        })?;
        let payload = DeckPayload {
            members: self
                .members
                .iter()
                .map(|m| MemberPayload {
                    name: m.name.clone(),
                    model: StoredModel::from_model(&m.card.model),
                    normalization: m.card.normalization.clone(),
                    class_names: m.card.class_names.clone(),
                    provenance: m.card.provenance.clone(),
                    metrics: m.card.metrics.clone(),
                    augment: m.augment.clone(),
                    signature: m.signature.clone(),
                })
                .collect(),
            gate: self.gate,
            reference: self.reference.clone(),
            provenance: self.provenance.clone(),
            metrics: self.metrics.clone(),
        };
        write_atomic(path, Kind::Deck, &payload)
    }

    /// Reads and validates a deck (every member card as
    /// [`Card::load`] would check it).
    pub fn load(path: &Path) -> Result<Deck, CardError> {
        let (file, bytes) = container::read_file(path)?;
        Deck::decode(&file, &bytes)
    }

    /// Decodes and validates a complete `.deck` image; `file` names it in
    /// errors. What [`Deck::load`] does after reading the file (and what
    /// the `deck_decode` fuzz target runs).
    pub fn decode(file: &str, bytes: &[u8]) -> Result<Deck, CardError> {
        let file = file.to_string();
        let p: DeckPayload = container::decode(&file, bytes, Kind::Deck)?;
        let invalid = |message: String| CardError::Invalid {
            file: file.clone(),
            what: "deck",
            message,
        };
        let mut members = Vec::with_capacity(p.members.len());
        for (i, m) in p.members.into_iter().enumerate() {
            let who = format!("card {} ('{}')", i + 1, m.name);
            let model = m
                .model
                .into_model()
                .map_err(|e| invalid(format!("{who}: {e}")))?;
            let card = Card {
                model,
                normalization: m.normalization,
                class_names: m.class_names,
                provenance: m.provenance,
                metrics: m.metrics,
            };
            // As in `Card::load`: `validate` bounds every size (through
            // `Graph::shapes`) before `macs` multiplies them.
            card.validate()
                .and_then(|_| card.model.graph.macs().map(|_| ()))
                .map_err(|e| invalid(format!("{who}: {e}")))?;
            // Named here, value and place: `validate` would only say that
            // the signature is not all finite.
            if let Some(j) = m.signature.iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!(
                    "{who}: signature value {j} is {}",
                    m.signature[j]
                )));
            }
            members.push(Member {
                name: m.name,
                card,
                augment: m.augment,
                signature: m.signature,
            });
        }
        if let Some(j) = p.reference.iter().position(|v| !v.is_finite()) {
            return Err(invalid(format!(
                "clean reference spectrum value {j} is {}",
                p.reference[j]
            )));
        }
        let deck = Deck {
            members,
            gate: p.gate,
            reference: p.reference,
            provenance: p.provenance,
            metrics: p.metrics,
        };
        deck.validate().map_err(invalid)?;
        Ok(deck)
    }
}
