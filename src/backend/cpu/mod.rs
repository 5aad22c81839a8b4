//! CPU reference backend: forward and backward of every IR operator.
//!
//! Activations are kept pixel-major (`[B, H, W, C]`, vectors `[B, F]`)
//! between operators so that convolutions are `rows x W^T` GEMMs with the
//! channels contiguous, batch chunks are contiguous for parallel kernels,
//! and linear layers read rows directly (see [`layout`]). Images arrive and
//! input gradients leave in the public NCHW layout.

mod bench;
mod conv;
mod eltwise;
mod exec;
mod gemm;
mod layout;
mod linear;
mod loss;
mod norm;
mod pool;

pub use bench::{bench_setup, bench_train_step, gemm_gflops};

use super::{Batch, Images, Loss};
use crate::data::RawBatch;
use crate::model::Model;
use crate::tensor::Tensor;
use anyhow::{anyhow, bail};
use exec::Prepared;

/// Result of a training forward/backward pass.
pub struct TrainOutput {
    /// Mean softmax cross-entropy over the batch.
    pub loss: f32,
    /// Logits `[B, K]` of the train-mode forward.
    pub logits: Tensor,
    /// Gradient of the loss for every parameter tensor, same structure as
    /// `model.params` (`grads[node][k]` has `model.params[node][k].data.len()`
    /// values). Running-statistics entries are zero-filled. For masked or
    /// binary weights this is the straight-through gradient: the gradient
    /// with respect to the effective weight, multiplied by the mask.
    pub grads: Vec<Vec<Vec<f32>>>,
    /// Gradient of the loss with respect to the input images `[B, C, H, W]`
    /// when requested.
    pub input_grad: Option<Tensor>,
}

/// Checks `images` against the graph input and returns the batch size
/// (every backend's input check).
pub(crate) fn check_images(model: &Model, images: &Tensor) -> anyhow::Result<usize> {
    check_image_shape(model, &images.shape, images.data.len())
}

/// [`check_images`] for images of `shape` holding `values` values.
pub(crate) fn check_image_shape(
    model: &Model,
    shape: &[usize],
    values: usize,
) -> anyhow::Result<usize> {
    let [c, h, w] = model.graph.input_shape();
    let input = model
        .graph
        .nodes
        .first()
        .map_or("input", |n| n.name.as_str());
    match shape {
        [b, ci, hi, wi] if (*ci, *hi, *wi) == (c, h, w) && *b > 0 => {
            if values != b * c * h * w {
                bail!("layer '{input}': image tensor has {values} values for shape {shape:?}");
            }
            Ok(*b)
        }
        _ => bail!("layer '{input}': expected images [B>0, {c}, {h}, {w}], got {shape:?}"),
    }
}

/// Checks a batch's images, normalized or raw, against the model;
/// returns their count.
pub(crate) fn check_batch_images(model: &Model, images: Images) -> anyhow::Result<usize> {
    match images {
        Images::Normalized(t) => check_images(model, t),
        Images::Raw(r) => check_raw_images(model, r),
    }
}

/// Checks a raw batch's images against the model (one crop and flip and
/// one normalization table per image and channel); returns B.
fn check_raw_images(model: &Model, raw: &RawBatch) -> anyhow::Result<usize> {
    let b = check_image_shape(model, &raw.shape, raw.bytes.len())?;
    if raw.shifts.len() != b || raw.luts.len() != raw.shape[1] {
        bail!(
            "a raw batch of {b} images has {} crops and {} normalization tables for {} channels",
            raw.shifts.len(),
            raw.luts.len(),
            raw.shape[1]
        );
    }
    Ok(b)
}

/// Checks one label per image, each below the class count `k` (every
/// backend's label check).
pub(crate) fn check_labels(labels: &[u32], b: usize, k: usize) -> anyhow::Result<()> {
    if labels.len() != b {
        bail!("{} labels for a batch of {b} images", labels.len());
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= k) {
        bail!("label {l} of sample {i} is out of range for {k} classes");
    }
    Ok(())
}

/// The class count of a prepared graph (its output width).
fn classes(p: &Prepared) -> usize {
    p.shapes
        .last()
        .and_then(|s| s.first().copied())
        .unwrap_or(0)
}

/// Eval-mode forward (BatchNorm uses running statistics). `images` is
/// `[B, C, H, W]`; returns logits `[B, K]`.
pub fn infer(model: &Model, images: &Tensor) -> anyhow::Result<Tensor> {
    let b = check_images(model, images)?;
    let p = Prepared::new(model, b)?;
    let [c, h, w] = model.graph.input_shape();
    let x = layout::transpose_each(&images.data, b, c, h * w);
    let (logits, _) = p.forward(x, false)?;
    Ok(Tensor::from_vec(&[b, logits.len() / b], logits))
}

/// Train-mode forward (BatchNorm batch statistics; running statistics in
/// `model` updated with the op's momentum, unbiased variance as PyTorch),
/// softmax cross-entropy against `labels`, and backward.
pub fn forward_backward(
    model: &mut Model,
    images: &Tensor,
    labels: &[u32],
    want_input_grad: bool,
) -> anyhow::Result<TrainOutput> {
    forward_backward_loss(model, &Batch::new(images, labels), want_input_grad)
}

/// [`forward_backward`] with the batch's own objective (e.g. AugMix's
/// consistency loss over stacked views, which share the BatchNorm batch
/// statistics as in the reference implementation).
pub fn forward_backward_loss(
    model: &mut Model,
    batch: &Batch,
    want_input_grad: bool,
) -> anyhow::Result<TrainOutput> {
    let b = check_batch_images(model, batch.images)?;
    let host;
    let images = match batch.images {
        Images::Normalized(t) => t,
        Images::Raw(raw) => {
            host = raw.to_tensor();
            &host
        }
    };
    let labels = batch.labels;
    let views = batch.loss.views();
    if b % views != 0 {
        bail!("a batch of {b} images is not {views} stacked views");
    }
    let [c, h, w] = model.graph.input_shape();
    let (loss, logits, grads, input_grad, updates) = {
        let p = Prepared::new(model, b)?;
        let k = classes(&p);
        check_labels(labels, b / views, k)?;
        let x = layout::transpose_each(&images.data, b, c, h * w);
        let (logits, tape) = p.forward(x, true)?;
        let updates = tape.bn_updates();
        let (loss, dlogits) = match batch.loss {
            Loss::CrossEntropy => loss::softmax_xent(&logits, k, labels),
            Loss::AugMixJsd { lambda } => loss::augmix_jsd(&logits, k, labels, lambda),
        };
        let (grads, dx) = p.backward(tape, dlogits, want_input_grad)?;
        let input_grad = match (want_input_grad, dx) {
            (true, Some(dx)) => Some(Tensor::from_vec(
                &[b, c, h, w],
                layout::transpose_each(&dx, b, h * w, c),
            )),
            (true, None) => Some(Tensor::zeros(&[b, c, h, w])),
            (false, _) => None,
        };
        (
            loss,
            Tensor::from_vec(&[b, k], logits),
            grads,
            input_grad,
            updates,
        )
    };
    update_running_stats(model, updates)?;
    Ok(TrainOutput {
        loss,
        logits,
        grads,
        input_grad,
    })
}

/// Result of an eval-mode input-gradient pass ([`input_gradient`]).
pub struct InputGradient {
    /// Mean softmax cross-entropy over the batch.
    pub loss: f32,
    /// Logits `[B, K]` of the eval-mode forward.
    pub logits: Tensor,
    /// dL/d(images) `[B, C, H, W]` of the mean loss (so each image's
    /// gradient carries a factor 1/B).
    pub input_grad: Tensor,
}

/// Eval-mode forward (BatchNorm running statistics, masked and binary
/// weights as the network computes with them), softmax cross-entropy
/// against `labels`, and the gradient with respect to the input images.
/// The model is not changed: this is the deployed network's gradient, what
/// adversarial attacks follow.
pub fn input_gradient(
    model: &Model,
    images: &Tensor,
    labels: &[u32],
) -> anyhow::Result<InputGradient> {
    let b = check_images(model, images)?;
    let [c, h, w] = model.graph.input_shape();
    let p = Prepared::new(model, b)?;
    let k = classes(&p);
    check_labels(labels, b, k)?;
    let x = layout::transpose_each(&images.data, b, c, h * w);
    let (logits, tape) = p.forward_mode(x, exec::Mode::EvalGrad)?;
    let (loss, dlogits) = loss::softmax_xent(&logits, k, labels);
    let (_, dx) = p.backward(tape, dlogits, true)?;
    let input_grad = match dx {
        Some(dx) => Tensor::from_vec(&[b, c, h, w], layout::transpose_each(&dx, b, h * w, c)),
        None => Tensor::zeros(&[b, c, h, w]),
    };
    Ok(InputGradient {
        loss,
        logits: Tensor::from_vec(&[b, k], logits),
        input_grad,
    })
}

/// `running = (1 - momentum) * running + momentum * batch_stat`.
fn update_running_stats(model: &mut Model, updates: Vec<exec::BnUpdate>) -> anyhow::Result<()> {
    use crate::ir::{Op, ParamKind};
    for (i, mean, var) in updates {
        let node = &model.graph.nodes[i];
        let Op::BatchNorm(bn) = &node.op else {
            bail!("layer '{}': not a BatchNorm", node.name);
        };
        let (m, name) = (bn.momentum, node.name.clone());
        for (kind, stat) in [
            (ParamKind::RunningMean, &mean),
            (ParamKind::RunningVar, &var),
        ] {
            let t = model.params[i]
                .iter_mut()
                .find(|t| t.kind == kind)
                .ok_or_else(|| anyhow!("layer '{name}': missing {}", kind.suffix()))?;
            for (r, &s) in t.data.iter_mut().zip(stat) {
                *r = (1.0 - m) * *r + m * s;
            }
        }
    }
    Ok(())
}
