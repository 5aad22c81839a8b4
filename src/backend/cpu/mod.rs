//! CPU reference backend: forward and backward of every IR operator.
//!
//! TO BE WRITTEN (helper): see the contract below.

use crate::model::Model;
use crate::tensor::Tensor;

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

/// Eval-mode forward (BatchNorm uses running statistics). `images` is
/// `[B, C, H, W]`; returns logits `[B, K]`.
pub fn infer(_model: &Model, _images: &Tensor) -> anyhow::Result<Tensor> {
    anyhow::bail!("cpu backend not written yet")
}

/// Train-mode forward (BatchNorm batch statistics; running statistics in
/// `model` updated with the op's momentum, unbiased variance as PyTorch),
/// softmax cross-entropy against `labels`, and backward.
pub fn forward_backward(
    _model: &mut Model,
    _images: &Tensor,
    _labels: &[u32],
    _want_input_grad: bool,
) -> anyhow::Result<TrainOutput> {
    anyhow::bail!("cpu backend not written yet")
}
