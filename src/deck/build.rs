//! Making a deck from cards and training images: each card's augmentation
//! (from its provenance or an override), its signature, and the clean
//! reference spectrum.

use super::signature::{clean_reference, sample_indices, signature};
use super::{Deck, DeckProvenance, GateKind, GateSettings, Member, SpectrumPlan};
use crate::card::Card;
use crate::data::{Augment, Dataset};
use std::collections::{BTreeMap, HashMap};

/// How to build a deck.
#[derive(Clone, Debug)]
pub struct BuildConfig {
    pub gate: GateSettings,
    /// At most this many training images for the reference and signatures.
    pub limit: usize,
    pub seed: u64,
    /// Per card (same order as the cards), an augmentation that replaces
    /// the one its provenance names.
    pub augment_of: Vec<Option<Augment>>,
    /// The `--data` argument, recorded in the deck's provenance.
    pub data_name: String,
}

/// The augmentation a card was trained with, as the deck will use it.
fn augmentation(
    i: usize,
    name: &str,
    card: &Card,
    over: Option<Augment>,
) -> Result<Augment, String> {
    if let Some(a) = over {
        return Ok(a);
    }
    let text = card.provenance.augment.trim();
    if text.is_empty() {
        return Err(format!(
            "card {} ('{name}') does not record its training augmentation; name it with --augment-of {}=SPEC",
            i + 1,
            i + 1
        ));
    }
    Augment::parse(text).map_err(|e| {
        format!(
            "card {} ('{name}'): its training augmentation {text:?} is not one the gate knows ({e:#}); name it with --augment-of {}=SPEC",
            i + 1,
            i + 1
        )
    })
}

/// Names unique within the deck: the given names, with `#2`, `#3`, ...
/// appended to repeats.
fn unique_names(names: &[String]) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .iter()
        .map(|n| {
            let k = seen.entry(n.as_str()).or_insert(0);
            *k += 1;
            if *k == 1 {
                n.clone()
            } else {
                format!("{n}#{k}")
            }
        })
        .collect()
}

/// Builds a deck of `cards` (name, card) on the images of `ds` (normally
/// the cards' training split). Cards with the same augmentation share one
/// signature computation, so their signatures are identical and the gate
/// picks them together.
pub fn build(cards: Vec<(String, Card)>, ds: &Dataset, cfg: &BuildConfig) -> anyhow::Result<Deck> {
    anyhow::ensure!(
        !cards.is_empty(),
        "a deck needs at least one card (--cards)"
    );
    anyhow::ensure!(cfg.limit >= 1, "--limit must be at least 1");
    anyhow::ensure!(
        !ds.is_empty(),
        "{}: no images to compute spectra from",
        ds.source
    );
    cfg.gate
        .validate(cards.len())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let shape = [ds.channels, ds.height, ds.width];
    for (name, card) in &cards {
        let s = card.model.graph.input_shape();
        anyhow::ensure!(
            s == shape,
            "card '{name}' takes {}x{}x{} images but {} has {}x{}x{}",
            s[0],
            s[1],
            s[2],
            ds.source,
            shape[0],
            shape[1],
            shape[2]
        );
    }
    let spectral = cfg.gate.kind == GateKind::Spectral;
    let mut augments = Vec::with_capacity(cards.len());
    for (i, (name, card)) in cards.iter().enumerate() {
        let over = cfg.augment_of.get(i).copied().flatten();
        match augmentation(i, name, card, over) {
            Ok(a) => augments.push(Some(a)),
            // The average gate never reads signatures: a card of unknown
            // training still joins, with an empty (zero) one.
            Err(_) if !spectral => augments.push(None),
            Err(e) => anyhow::bail!("{e}"),
        }
    }

    let plan = SpectrumPlan::new(shape[0], shape[1], shape[2]);
    let idx = sample_indices(ds.len(), cfg.limit, cfg.seed);
    let reference = clean_reference(&plan, ds, &idx);
    let mut cache: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let names = unique_names(&cards.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
    let mut members = Vec::with_capacity(cards.len());
    for ((name, (_, card)), aug) in names.into_iter().zip(cards).zip(augments) {
        let (text, sig) = match aug {
            Some(a) => {
                let key = a.to_string();
                let sig = cache
                    .entry(key.clone())
                    .or_insert_with(|| signature(&plan, ds, &idx, a, cfg.seed))
                    .clone();
                (key, sig)
            }
            None => ("unknown".to_string(), vec![0.0; plan.len()]),
        };
        members.push(Member {
            name,
            card,
            augment: text,
            signature: sig,
        });
    }
    let mut provenance = DeckProvenance {
        data: cfg.data_name.clone(),
        data_digest: ds.digest(),
        images: idx.len(),
        seed: cfg.seed,
        cardc_version: env!("CARGO_PKG_VERSION").to_string(),
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        notes: Vec::new(),
    };
    provenance.notes.push(format!("gate: {}", cfg.gate));
    let deck = Deck {
        members,
        gate: cfg.gate,
        reference,
        provenance,
        metrics: BTreeMap::new(),
    };
    deck.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(deck)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_get_suffixes() {
        let n = unique_names(&["a".into(), "b".into(), "a".into(), "a".into()]);
        assert_eq!(n, vec!["a", "b", "a#2", "a#3"]);
    }
}
