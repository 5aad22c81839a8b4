//! Evaluation: accuracy, expected calibration error, per-class accuracy,
//! of a card or a deck ([`Classifier`]).

use crate::backend::Backend;
use crate::card::Card;
use crate::data::{Augment, Dataset, Normalization, make_batch};
use crate::deck::Deck;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Number of confidence bins for the expected calibration error.
pub const ECE_BINS: usize = 15;

/// Predictions of a model on a dataset: top-1 class and its softmax
/// confidence per image, and the labels.
#[derive(Clone, Debug, Default)]
pub struct Predictions {
    pub predicted: Vec<usize>,
    pub confidence: Vec<f32>,
    pub labels: Vec<u32>,
    /// Decks only: per member, the images whose gate chose it (empty for a card).
    pub gate_picks: Vec<usize>,
    /// Seconds spent in a deck's gate (0 for a card).
    pub gate_seconds: f64,
    /// Seconds spent in forward passes.
    pub model_seconds: f64,
}

impl Predictions {
    /// Records one image: its softmax row's top class and confidence, and
    /// its label.
    pub fn push(&mut self, probabilities: &[f32], label: u32) {
        let (mut best, mut conf) = (0, f32::NEG_INFINITY);
        for (c, &v) in probabilities.iter().enumerate() {
            if v > conf {
                best = c;
                conf = v;
            }
        }
        self.predicted.push(best);
        self.confidence.push(conf);
        self.labels.push(label);
    }
}

/// What can be evaluated: one card, or a deck of them behind its gate.
#[derive(Clone, Copy, Debug)]
pub enum Classifier<'a> {
    Card(&'a Card),
    Deck(&'a Deck),
}

impl Classifier<'_> {
    /// `[C, H, W]` of the inputs.
    pub fn input_shape(&self) -> [usize; 3] {
        match self {
            Classifier::Card(c) => c.model.graph.input_shape(),
            Classifier::Deck(d) => d.input_shape(),
        }
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        match self {
            Classifier::Card(c) => c.model.graph.classes(),
            Classifier::Deck(d) => d.classes(),
        }
    }

    /// One name per class.
    pub fn class_names(&self) -> &[String] {
        match self {
            Classifier::Card(c) => &c.class_names,
            Classifier::Deck(d) => d.class_names(),
        }
    }

    /// The deck, if this is one.
    pub fn deck(&self) -> Option<&Deck> {
        match self {
            Classifier::Card(_) => None,
            Classifier::Deck(d) => Some(d),
        }
    }

    /// Predictions on `ds`, `batch` images per forward pass.
    pub fn predict(
        &self,
        backend: &mut dyn Backend,
        ds: &Dataset,
        batch: usize,
    ) -> anyhow::Result<Predictions> {
        match self {
            Classifier::Card(c) => predict(backend, &c.model, ds, &c.normalization, batch),
            Classifier::Deck(d) => d.predict(backend, ds, batch),
        }
    }
}

/// Summary of an evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    pub accuracy: f64,
    pub ece: f64,
    /// Accuracy per class (NaN-free: classes without images get 0 and count 0).
    pub per_class: Vec<ClassAccuracy>,
    /// Reliability diagram data: per bin (mean confidence, accuracy, count).
    pub reliability: Vec<(f64, f64, usize)>,
}

/// Accuracy on the images of one class.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassAccuracy {
    pub class: String,
    pub images: usize,
    pub accuracy: f64,
}

/// Runs `model` over `ds` in eval mode, `batch` images at a time.
pub fn predict(
    backend: &mut dyn Backend,
    model: &Model,
    ds: &Dataset,
    norm: &Normalization,
    batch: usize,
) -> anyhow::Result<Predictions> {
    let mut p = Predictions::default();
    let n = ds.len();
    let batch = batch.max(1);
    let mut start = 0;
    while start < n {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let (x, labels) = make_batch(ds, &idx, norm, Augment::None, 0);
        let t = Instant::now();
        let logits = backend.infer(model, &x)?;
        p.model_seconds += t.elapsed().as_secs_f64();
        let probs = logits.softmax_rows();
        let k = probs.shape.last().copied().unwrap_or(1);
        for (row, &l) in probs.data.chunks(k).zip(&labels) {
            p.push(row, l);
        }
        start += batch;
    }
    Ok(p)
}

/// Expected calibration error over `bins` equal-width confidence bins, and
/// the reliability diagram (mean confidence, accuracy, count per bin).
pub fn calibration(p: &Predictions, bins: usize) -> (f64, Vec<(f64, f64, usize)>) {
    let mut conf = vec![0.0f64; bins];
    let mut hit = vec![0.0f64; bins];
    let mut count = vec![0usize; bins];
    for ((&c, &pred), &l) in p.confidence.iter().zip(&p.predicted).zip(&p.labels) {
        // Bins are (i/B, (i+1)/B]; confidence 0 joins the first.
        let b = ((c as f64 * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        conf[b] += c as f64;
        hit[b] += (pred == l as usize) as u8 as f64;
        count[b] += 1;
    }
    let n = p.labels.len().max(1) as f64;
    let mut ece = 0.0;
    let mut diagram = Vec::with_capacity(bins);
    for b in 0..bins {
        if count[b] == 0 {
            diagram.push((0.0, 0.0, 0));
            continue;
        }
        let c = count[b] as f64;
        let (mc, acc) = (conf[b] / c, hit[b] / c);
        ece += c / n * (mc - acc).abs();
        diagram.push((mc, acc, count[b]));
    }
    (ece, diagram)
}

/// Accuracy, ECE and per-class accuracy of predictions.
pub fn summarize(p: &Predictions, class_names: &[String]) -> EvalResult {
    let n = p.labels.len();
    let correct = p
        .predicted
        .iter()
        .zip(&p.labels)
        .filter(|(a, b)| **a == **b as usize)
        .count();
    let (ece, reliability) = calibration(p, ECE_BINS);
    let k = class_names.len();
    let mut per = vec![(0usize, 0usize); k];
    for (&pred, &l) in p.predicted.iter().zip(&p.labels) {
        if let Some(e) = per.get_mut(l as usize) {
            e.0 += 1;
            e.1 += (pred == l as usize) as usize;
        }
    }
    EvalResult {
        images: n,
        accuracy: if n == 0 {
            0.0
        } else {
            correct as f64 / n as f64
        },
        ece,
        per_class: per
            .iter()
            .zip(class_names)
            .map(|(&(t, c), name)| ClassAccuracy {
                class: name.clone(),
                images: t,
                accuracy: if t == 0 { 0.0 } else { c as f64 / t as f64 },
            })
            .collect(),
        reliability,
    }
}

/// Evaluates `model` on `ds`.
pub fn evaluate(
    backend: &mut dyn Backend,
    model: &Model,
    ds: &Dataset,
    norm: &Normalization,
    batch: usize,
) -> anyhow::Result<EvalResult> {
    let p = predict(backend, model, ds, norm, batch)?;
    Ok(summarize(&p, &ds.class_names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_of_known_predictions() {
        // Two bins' worth: 4 predictions at confidence 0.9 with 2 right
        // (gap 0.4), 4 at 0.6 with 3 right (gap 0.15): ECE = 0.5*0.4 + 0.5*0.15.
        let p = Predictions {
            predicted: vec![0, 0, 0, 0, 1, 1, 1, 1],
            confidence: vec![0.9, 0.9, 0.9, 0.9, 0.6, 0.6, 0.6, 0.6],
            labels: vec![0, 0, 1, 1, 1, 1, 1, 0],
            ..Predictions::default()
        };
        let (ece, diag) = calibration(&p, 15);
        assert!((ece - 0.275).abs() < 1e-6, "{ece}");
        assert_eq!(diag.iter().map(|d| d.2).sum::<usize>(), 8);
        let r = summarize(&p, &["a".into(), "b".into()]);
        assert!((r.accuracy - 5.0 / 8.0).abs() < 1e-12);
        assert_eq!(r.per_class[0].images, 3);
        assert!((r.per_class[0].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.per_class[1].accuracy - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn perfectly_calibrated_has_zero_ece() {
        let p = Predictions {
            predicted: vec![0; 4],
            confidence: vec![1.0; 4],
            labels: vec![0; 4],
            ..Predictions::default()
        };
        assert!(calibration(&p, 15).0.abs() < 1e-12);
    }
}
