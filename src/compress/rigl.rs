//! RigL (Evci et al., 2020): dynamic sparse training from scratch at a
//! constant sparsity. Every ΔT steps until T_end, each layer drops the
//! fraction f_t = (α/2)(1 + cos(π t / T_end)) of its active weights with the
//! smallest |w| and grows as many inactive ones with the largest |dense
//! gradient|; grown weights start at zero.

use super::popup::dense_view_gradients;
use super::select::Target;
use crate::backend::{Backend, Batch, StepStats};
use crate::model::{Model, WeightState};
use crate::train::optim::Sgd;
use crate::train::trainer::StepHook;

/// The RigL step hook.
pub struct RiglHook {
    pub targets: Vec<Target>,
    /// α: the initial drop fraction.
    pub alpha: f64,
    /// ΔT: steps between connectivity updates.
    pub interval: usize,
    /// T_end: no updates from this step on.
    pub end: usize,
}

impl RiglHook {
    /// Fraction of active weights replaced at step `t`.
    pub fn drop_fraction(&self, t: usize) -> f64 {
        self.alpha / 2.0 * (1.0 + (std::f64::consts::PI * t as f64 / self.end.max(1) as f64).cos())
    }

    /// Drop-and-grow on every target, with `grads` the dense gradients.
    pub fn update(&self, model: &mut Model, sgd: &mut Sgd, grads: &[Vec<Vec<f32>>], t: usize) {
        let f = self.drop_fraction(t);
        for &(i, k) in &self.targets {
            let tensor = &mut model.params[i][k];
            let WeightState::Masked { mask } = &mut tensor.state else {
                continue;
            };
            let active: Vec<usize> = (0..mask.len()).filter(|&j| mask[j]).collect();
            let inactive: Vec<usize> = (0..mask.len()).filter(|&j| !mask[j]).collect();
            let n = ((f * active.len() as f64).round() as usize).min(inactive.len());
            if n == 0 {
                continue;
            }
            let mut by_mag = active;
            by_mag.sort_by(|&a, &b| {
                tensor.data[a]
                    .abs()
                    .total_cmp(&tensor.data[b].abs())
                    .then(a.cmp(&b))
            });
            let g = &grads[i][k];
            let mut by_grad = inactive;
            by_grad.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()).then(a.cmp(&b)));
            for &j in &by_mag[..n] {
                mask[j] = false;
                tensor.data[j] = 0.0;
            }
            for &j in &by_grad[..n] {
                mask[j] = true;
                tensor.data[j] = 0.0;
                if let Some(v) = sgd.velocity.get_mut(i).and_then(|v| v.get_mut(k)) {
                    v[j] = 0.0;
                }
            }
        }
    }
}

impl StepHook for RiglHook {
    fn step(
        &mut self,
        backend: &mut dyn Backend,
        model: &mut Model,
        sgd: &mut Sgd,
        batch: &Batch,
        lr: f32,
        step: usize,
    ) -> anyhow::Result<StepStats> {
        let g = dense_view_gradients(backend, model, &self.targets, batch)?;
        if step > 0 && step.is_multiple_of(self.interval) && step < self.end {
            self.update(model, sgd, &g.grads, step);
        }
        // The optimizer honours the (possibly new) masks.
        sgd.step(model, &g.grads, lr);
        Ok(g.stats)
    }
}
