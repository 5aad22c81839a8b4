//! SGD with momentum (optionally Nesterov) and decoupled-from-nothing L2
//! weight decay, as PyTorch's `torch.optim.SGD`. Masks are honoured: a
//! masked-out weight gets no update and stays exactly zero.

use crate::ir::ParamKind;
use crate::model::{Model, ParamTensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Optimizer settings and state (momentum buffers, one per parameter tensor).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    /// Apply weight decay to BatchNorm γ/β and biases too (PyTorch's default
    /// applies it to everything; many CIFAR recipes do).
    pub decay_all: bool,
    /// `velocity[node][k]`, empty until the first step.
    pub velocity: Vec<Vec<Vec<f32>>>,
}

impl Sgd {
    pub fn new(momentum: f32, nesterov: bool, weight_decay: f32) -> Self {
        Sgd {
            momentum,
            nesterov,
            weight_decay,
            decay_all: true,
            velocity: Vec::new(),
        }
    }

    /// One update: for trainable tensors, g ← grad + wd·w; v ← μv + g;
    /// w ← w − lr·(g + μv if Nesterov else v). Masked entries are skipped
    /// and forced to zero.
    pub fn step(&mut self, model: &mut Model, grads: &[Vec<Vec<f32>>], lr: f32) {
        if self.velocity.is_empty() {
            self.velocity = model
                .params
                .iter()
                .map(|ts| ts.iter().map(|t| vec![0.0; t.data.len()]).collect())
                .collect();
        }
        // Taken out for the loop so `update_tensor` can borrow the settings.
        let mut velocity = std::mem::take(&mut self.velocity);
        for (i, ts) in model.params.iter_mut().enumerate() {
            for (k, t) in ts.iter_mut().enumerate() {
                self.update_tensor(t, &grads[i][k], &mut velocity[i][k], lr);
            }
        }
        self.velocity = velocity;
    }

    /// The update of one tensor with its own velocity buffer `v` (same
    /// length as the tensor); running statistics are left alone. Shared by
    /// [`Sgd::step`] and tensors kept outside the model (AdvProp's
    /// auxiliary BatchNorm).
    pub fn update_tensor(&self, t: &mut ParamTensor, g: &[f32], v: &mut [f32], lr: f32) {
        if !t.kind.trainable() {
            return;
        }
        let (mu, nesterov) = (self.momentum, self.nesterov);
        let wd = if self.decay_all || t.kind == ParamKind::Weight {
            self.weight_decay
        } else {
            0.0
        };
        let mask = match &t.state {
            crate::model::WeightState::Dense => None,
            crate::model::WeightState::Masked { mask }
            | crate::model::WeightState::Binary { mask, .. } => Some(mask.as_slice()),
        };
        let update = |(j, (w, vj)): (usize, (&mut f32, &mut f32))| {
            if let Some(m) = mask
                && !m[j]
            {
                *w = 0.0;
                *vj = 0.0;
                return;
            }
            let gj = g[j] + wd * *w;
            *vj = mu * *vj + gj;
            let d = if nesterov { gj + mu * *vj } else { *vj };
            *w -= lr * d;
        };
        if t.data.len() > 1 << 14 {
            t.data
                .par_iter_mut()
                .zip(v.par_iter_mut())
                .enumerate()
                .for_each(update);
        } else {
            t.data
                .iter_mut()
                .zip(v.iter_mut())
                .enumerate()
                .for_each(update);
        }
    }
}
