//! Running a deck: gate decisions, then the chosen cards' mean softmax.

use super::signature::zero_dc;
use super::{Deck, GateKind, Scope, SpectrumPlan};
use crate::backend::Backend;
use crate::data::{Augment, Dataset, make_batch};
use crate::eval::Predictions;
use rayon::prelude::*;
use std::time::Instant;

/// The deck's output on some images.
#[derive(Clone, Debug, Default)]
pub struct DeckOutput {
    /// Mean softmax of the chosen cards, `[images, classes]` row-major.
    pub probabilities: Vec<f32>,
    /// Per image, the members that answered (ascending).
    pub chosen: Vec<Vec<usize>>,
    /// Seconds spent in the gate (spectra, distances, selection).
    pub gate_seconds: f64,
    /// Seconds spent running the cards.
    pub card_seconds: f64,
}

impl Deck {
    /// The input's deviation from the clean reference: its centered
    /// log-amplitude spectrum minus the reference, DC zeroed.
    pub fn deviation(&self, plan: &SpectrumPlan, image: &[u8]) -> Vec<f32> {
        let mut d = plan.log_amplitude_u8(image);
        for (v, r) in d.iter_mut().zip(&self.reference) {
            *v -= r;
        }
        zero_dc(plan, &mut d);
        d
    }

    /// The gate's choice for each of `images` (8-bit `[C, H, W]` each):
    /// one decision per image, or one for all of them with scope `batch`.
    pub fn decide(&self, images: &[&[u8]]) -> Vec<Vec<usize>> {
        let n = self.members.len();
        if self.gate.kind == GateKind::Average {
            return vec![(0..n).collect(); images.len()];
        }
        let [c, h, w] = self.input_shape();
        let plan = SpectrumPlan::new(c, h, w);
        let sigs = self.signatures();
        match self.gate.scope {
            Scope::Input => images
                .par_iter()
                .map(|img| self.gate.select(&self.deviation(&plan, img), &sigs))
                .collect(),
            Scope::Batch => {
                if images.is_empty() {
                    return Vec::new();
                }
                // Deviations are computed in parallel but summed in order.
                let devs: Vec<Vec<f32>> = images
                    .par_iter()
                    .map(|img| self.deviation(&plan, img))
                    .collect();
                let mut mean = vec![0.0f64; plan.len()];
                for d in &devs {
                    for (m, v) in mean.iter_mut().zip(d) {
                        *m += *v as f64;
                    }
                }
                let k = images.len() as f64;
                let mean: Vec<f32> = mean.into_iter().map(|v| (v / k) as f32).collect();
                vec![self.gate.select(&mean, &sigs); images.len()]
            }
        }
    }

    /// Runs the deck on the images of `ds` at `idx`: gate, then each member
    /// on the images that chose it, softmax averaged over the chosen.
    pub fn run_batch(
        &self,
        backend: &mut dyn Backend,
        ds: &Dataset,
        idx: &[usize],
    ) -> anyhow::Result<DeckOutput> {
        let classes = self.classes();
        let t = Instant::now();
        let images: Vec<&[u8]> = idx.iter().map(|&i| ds.image(i)).collect();
        let chosen = self.decide(&images);
        let gate_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let mut probs = vec![0.0f32; idx.len() * classes];
        for (m, member) in self.members.iter().enumerate() {
            let rows: Vec<usize> = (0..idx.len()).filter(|&r| chosen[r].contains(&m)).collect();
            if rows.is_empty() {
                continue;
            }
            let sub: Vec<usize> = rows.iter().map(|&r| idx[r]).collect();
            let (x, _) = make_batch(ds, &sub, &member.card.normalization, Augment::None, 0);
            let p = backend
                .infer(&member.card.model, &x)
                .map_err(|e| e.context(format!("deck card '{}'", member.name)))?
                .softmax_rows();
            for (&r, row) in rows.iter().zip(p.data.chunks(classes.max(1))) {
                let share = 1.0 / chosen[r].len() as f32;
                for (o, v) in probs[r * classes..(r + 1) * classes].iter_mut().zip(row) {
                    *o += share * v;
                }
            }
        }
        Ok(DeckOutput {
            probabilities: probs,
            chosen,
            gate_seconds,
            card_seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Predictions of the deck on `ds`, `batch` images at a time (the unit
    /// of a `batch`-scope decision), with per-member pick counts.
    pub fn predict(
        &self,
        backend: &mut dyn Backend,
        ds: &Dataset,
        batch: usize,
    ) -> anyhow::Result<Predictions> {
        let mut p = Predictions {
            gate_picks: vec![0; self.members.len()],
            ..Predictions::default()
        };
        let classes = self.classes().max(1);
        let batch = batch.max(1);
        let mut start = 0;
        while start < ds.len() {
            let idx: Vec<usize> = (start..(start + batch).min(ds.len())).collect();
            let out = self.run_batch(backend, ds, &idx)?;
            for ((row, chosen), &i) in out.probabilities.chunks(classes).zip(&out.chosen).zip(&idx)
            {
                p.push(row, ds.labels[i]);
                for &m in chosen {
                    p.gate_picks[m] += 1;
                }
            }
            p.gate_seconds += out.gate_seconds;
            p.model_seconds += out.card_seconds;
            start += batch;
        }
        Ok(p)
    }
}
