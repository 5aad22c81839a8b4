//! Edge-popup (Ramanujan et al.) and BiProp (Diffenderfer & Kailkhura):
//! the weights stay frozen at their random initialization; every weight has
//! a trained score and the network uses the weights with the top-|score|
//! (a mask). Straight-through: the mask's gradient is the effective
//! weight's gradient times the weight, `g ⊙ W`; masks rank |score| (as the
//! reference code does), so the score's gradient is `g ⊙ W ⊙ sign(s)`.
//!
//! For BiProp the effective weight is α·sign(W)⊙M with α = ‖W⊙M‖₁/nnz(M)
//! per layer. Its reference code passes `g · |W|` back through the
//! function that outputs α·M, and since the layer multiplies that by
//! sign(W), the score gradient in terms of the effective weight's gradient
//! is again `g ⊙ sign(W) ⊙ |W| = g ⊙ W`.

use super::select::{Scope, Target, top_k_masks, zeros_needed};
use crate::backend::{Backend, Batch, BatchGradients, StepStats};
use crate::ir::ParamKind;
use crate::model::{Model, WeightState};
use crate::rng::Rng;
use crate::train::optim::Sgd;
use crate::train::trainer::StepHook;
use serde::{Deserialize, Serialize};

/// Which score-training method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PopupKind {
    /// Masked random float weights.
    EdgePopup,
    /// Masked random weights binarized to ±α per layer.
    BiProp,
}

/// Scores of the pruned tensors and their momentum buffers (checkpointed).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub values: Vec<Vec<f32>>,
    pub velocity: Vec<Vec<f32>>,
}

/// Fan-in of the layer whose weight is `target`.
fn fan_in(model: &Model, (i, k): Target) -> usize {
    let shape = &model.params[i][k].shape;
    shape.iter().skip(1).product::<usize>().max(1)
}

/// Scores initialized like the reference code (Kaiming-uniform with
/// a = √5, i.e. U(−1/√fan_in, 1/√fan_in)).
pub fn init_scores(model: &Model, targets: &[Target], seed: u64) -> Scores {
    let mut rng = Rng::derive(seed, "popup-scores");
    let values: Vec<Vec<f32>> = targets
        .iter()
        .map(|&t| {
            let b = 1.0 / (fan_in(model, t) as f32).sqrt();
            (0..model.params[t.0][t.1].data.len())
                .map(|_| rng.range(-b, b))
                .collect()
        })
        .collect();
    let velocity = values.iter().map(|v| vec![0.0; v.len()]).collect();
    Scores { values, velocity }
}

/// Edge-popup's "scaled Kaiming" weights: the init's standard deviation
/// divided by √(kept fraction), so that the kept subnetwork has Kaiming's
/// variance.
pub fn scale_for_density(model: &mut Model, targets: &[Target], sparsity: f64) {
    let s = (1.0 / (1.0 - sparsity).max(1e-6)).sqrt() as f32;
    for &(i, k) in targets {
        for w in &mut model.params[i][k].data {
            *w *= s;
        }
    }
}

/// The gradients of a batch for a model whose masked/binary targets are
/// presented to the backend as plain dense tensors of their effective
/// values, so that every entry gets its gradient (a pruned weight's
/// gradient is what edge-popup and RigL's growth criterion need). Running
/// statistics computed on the batch are copied back into `model`.
pub fn dense_view_gradients(
    backend: &mut dyn Backend,
    model: &mut Model,
    targets: &[Target],
    batch: &Batch,
) -> anyhow::Result<BatchGradients> {
    let mut view = model.clone();
    for &(i, k) in targets {
        let t = &mut view.params[i][k];
        t.data = t.effective().into_owned();
        t.state = WeightState::Dense;
    }
    let g = backend.gradients(&mut view, batch)?;
    for (dst, src) in model.params.iter_mut().zip(&view.params) {
        for (d, s) in dst.iter_mut().zip(src) {
            if matches!(d.kind, ParamKind::RunningMean | ParamKind::RunningVar) {
                d.data.copy_from_slice(&s.data);
            }
        }
    }
    Ok(g)
}

/// The score-training step hook.
pub struct PopupHook {
    pub kind: PopupKind,
    pub targets: Vec<Target>,
    pub scope: Scope,
    pub scores: Scores,
    /// Final sparsity.
    pub sparsity: f64,
    /// Steps over which the sparsity ramps cubically from `ramp_from` to
    /// `sparsity` (0: no ramp).
    pub ramp_steps: usize,
    pub ramp_from: f64,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl PopupHook {
    /// Sparsity in force at `step`.
    pub fn sparsity_at(&self, step: usize) -> f64 {
        if step >= self.ramp_steps || self.ramp_from >= self.sparsity {
            return self.sparsity;
        }
        let p = step as f64 / self.ramp_steps as f64;
        self.sparsity + (self.ramp_from - self.sparsity) * (1.0 - p).powi(3)
    }

    /// Installs the masks of the top-|score| weights at `sparsity` (and
    /// BiProp's α per layer).
    pub fn apply_masks(&self, model: &mut Model, sparsity: f64) -> anyhow::Result<()> {
        let zeros = zeros_needed(model, &self.targets, sparsity)?;
        let abs: Vec<Vec<f32>> = self
            .scores
            .values
            .iter()
            .map(|v| v.iter().map(|s| s.abs()).collect())
            .collect();
        let masks = top_k_masks(&abs, zeros, self.scope);
        for (&(i, k), mask) in self.targets.iter().zip(masks) {
            let t = &mut model.params[i][k];
            t.state = match self.kind {
                PopupKind::EdgePopup => WeightState::Masked { mask },
                PopupKind::BiProp => {
                    let (sum, n) = t
                        .data
                        .iter()
                        .zip(&mask)
                        .filter(|(_, m)| **m)
                        .fold((0.0f64, 0usize), |(s, n), (w, _)| {
                            (s + w.abs() as f64, n + 1)
                        });
                    let alpha = if n == 0 { 0.0 } else { (sum / n as f64) as f32 };
                    WeightState::Binary { mask, alpha }
                }
            };
        }
        Ok(())
    }
}

impl StepHook for PopupHook {
    fn before_step(&mut self, model: &mut Model, step: usize, _total: usize) -> anyhow::Result<()> {
        self.apply_masks(model, self.sparsity_at(step))
    }

    fn step(
        &mut self,
        backend: &mut dyn Backend,
        model: &mut Model,
        _sgd: &mut Sgd,
        batch: &Batch,
        lr: f32,
        _step: usize,
    ) -> anyhow::Result<StepStats> {
        let g = dense_view_gradients(backend, model, &self.targets, batch)?;
        let (mu, wd, nesterov) = (self.momentum, self.weight_decay, self.nesterov);
        for (l, &(i, k)) in self.targets.iter().enumerate() {
            let w = &model.params[i][k].data;
            let grad = &g.grads[i][k];
            let s = &mut self.scores.values[l];
            let v = &mut self.scores.velocity[l];
            for j in 0..s.len() {
                // Ranking is by |s|, so the gradient passes through |·|.
                let gs = grad[j] * w[j] * s[j].signum() + wd * s[j];
                v[j] = mu * v[j] + gs;
                s[j] -= lr * if nesterov { gs + mu * v[j] } else { v[j] };
            }
        }
        Ok(g.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::compress::select;
    use crate::data::{Augment, Normalization, Split, make_batch, synthetic};
    use crate::ir::models::{BuildOptions, ModelDesc, build_from_desc};

    fn tiny(affine: bool) -> Model {
        let desc: ModelDesc = toml::from_str(
            "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c8\", \"M\", \"c16\", \"M\"]\n",
        )
        .unwrap();
        let g = build_from_desc(
            &desc,
            &BuildOptions {
                width_mult: 1.0,
                affine_bn: affine,
                classes: Some(10),
            },
        )
        .unwrap();
        Model::init(g, 3).unwrap()
    }

    /// Training the scores on one batch lowers that batch's loss: the
    /// straight-through score gradient points downhill.
    #[test]
    fn score_steps_lower_the_loss() {
        for kind in [PopupKind::EdgePopup, PopupKind::BiProp] {
            let mut model = tiny(false);
            let targets = select::targets(&model, false, false);
            let ds = synthetic::generate(64, Split::Train);
            let idx: Vec<usize> = (0..64).collect();
            let norm = Normalization::from_dataset(&ds);
            let (x, y) = make_batch(&ds, &idx, &norm, Augment::None, 0);
            let mut hook = PopupHook {
                kind,
                targets: targets.clone(),
                scope: Scope::Layerwise,
                scores: init_scores(&model, &targets, 1),
                sparsity: 0.5,
                ramp_steps: 0,
                ramp_from: 0.5,
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            };
            let mut backend = CpuBackend;
            let mut sgd = Sgd::new(0.9, false, 0.0);
            let mut losses = Vec::new();
            for step in 0..30 {
                hook.before_step(&mut model, step, 30).unwrap();
                let st = hook
                    .step(
                        &mut backend,
                        &mut model,
                        &mut sgd,
                        &crate::backend::Batch::new(&x, &y),
                        0.05,
                        step,
                    )
                    .unwrap();
                losses.push(st.loss);
            }
            let (first, last) = (losses[0], losses[29]);
            assert!(
                last < 0.8 * first,
                "{kind:?}: loss {first} -> {last}: {losses:?}"
            );
            assert!((model.sparsity() - 0.5).abs() < 1e-3);
        }
    }
}
