//! Compute backends. The CPU backend is the reference every other backend
//! (wgpu, the compiled C) is tested against.

pub mod cpu;
pub mod gpu;

use crate::data::RawBatch;
use crate::model::Model;
use crate::tensor::Tensor;
use crate::train::optim::Sgd;

/// What training steps report: the statistics of `images` images, the
/// step's own batch or, from a backend that reads them back every few
/// steps, those of every step since its last report (`images` 0: nothing
/// to report yet).
#[derive(Clone, Copy, Debug, Default)]
pub struct StepStats {
    /// Mean cross-entropy over the images.
    pub loss: f32,
    /// Correct top-1 predictions among them.
    pub correct: usize,
    /// Images the statistics cover.
    pub images: usize,
}

/// The training objective of a batch, defined once here; each backend
/// implements it (the CPU reference in `cpu::loss`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Loss {
    /// Mean softmax cross-entropy, one label per image.
    CrossEntropy,
    /// AugMix with its consistency loss: the images are three stacked views
    /// `[clean; aug1; aug2]` of B images with B labels; cross-entropy of the
    /// clean view plus `lambda` × the Jensen–Shannon divergence of the three.
    AugMixJsd { lambda: f32 },
}

impl Loss {
    /// Images per label: how many stacked views of each image a batch holds.
    pub fn views(self) -> usize {
        match self {
            Loss::CrossEntropy => 1,
            Loss::AugMixJsd { .. } => 3,
        }
    }
}

/// A batch's images.
#[derive(Clone, Copy)]
pub enum Images<'a> {
    /// Normalized on the host: `[V·B, C, H, W]` f32.
    Normalized(&'a Tensor),
    /// Bytes that the backend crops, flips and normalizes itself (the wgpu
    /// backend on the device; the CPU backend through
    /// [`RawBatch::to_tensor`], the reference). One view.
    Raw(&'a RawBatch),
}

/// One training batch: its images (V views of B, V = `loss.views()`), B
/// labels, and the objective.
#[derive(Clone, Copy)]
pub struct Batch<'a> {
    pub images: Images<'a>,
    pub labels: &'a [u32],
    pub loss: Loss,
}

impl<'a> Batch<'a> {
    /// A cross-entropy batch of normalized images.
    pub fn new(images: &'a Tensor, labels: &'a [u32]) -> Self {
        Batch {
            images: Images::Normalized(images),
            labels,
            loss: Loss::CrossEntropy,
        }
    }

    /// A cross-entropy batch of images the backend augments and normalizes.
    pub fn raw(images: &'a RawBatch, labels: &'a [u32]) -> Self {
        Batch {
            images: Images::Raw(images),
            labels,
            loss: Loss::CrossEntropy,
        }
    }
}

/// Gradients of one train-mode batch.
pub struct BatchGradients {
    pub stats: StepStats,
    /// Same structure as `model.params`; for masked or binary weights the
    /// straight-through gradient (with respect to the effective weight,
    /// zero where masked).
    pub grads: Vec<Vec<Vec<f32>>>,
}

/// A training/inference engine.
pub trait Backend {
    /// Human-readable description of the device (recorded in provenance).
    fn adapter(&self) -> String;
    /// Short backend name (`cpu`, `wgpu`).
    fn name(&self) -> &'static str;
    /// Eval-mode forward: `images` is `[B, C, H, W]` normalized; returns logits `[B, K]`.
    fn infer(&mut self, model: &Model, images: &Tensor) -> anyhow::Result<Tensor>;
    /// Train-mode forward (BatchNorm batch statistics, running statistics
    /// updated), the batch's loss and backward, without an update: methods
    /// that train something other than the weights (edge-popup scores,
    /// RigL's growth criterion) start here. The statistics count correct
    /// predictions on the first (clean) view.
    fn gradients(&mut self, model: &mut Model, batch: &Batch) -> anyhow::Result<BatchGradients>;
    /// One SGD step on a batch: [`Backend::gradients`], then the optimizer
    /// update with masks honoured.
    fn train_step(
        &mut self,
        model: &mut Model,
        sgd: &mut Sgd,
        batch: &Batch,
        lr: f32,
    ) -> anyhow::Result<StepStats> {
        let g = self.gradients(model, batch)?;
        sgd.step(model, &g.grads, lr);
        Ok(g.stats)
    }
    /// The statistics of the training steps not reported yet (a backend
    /// that reads them back every few steps; the CPU backend reports each
    /// step's own). Call at the end of an epoch or phase.
    fn flush_stats(&mut self) -> anyhow::Result<StepStats> {
        Ok(StepStats::default())
    }
    /// Brings `model` and `sgd` up to date with the backend. A GPU backend
    /// keeps weights, momentum and BatchNorm running statistics on the
    /// device across [`Backend::train_step`] calls; call this before the
    /// host reads or changes the model (evaluation, checkpoints, pruning).
    /// The CPU backend updates the model in place, so this does nothing.
    fn sync(&mut self, _model: &mut Model, _sgd: &mut Sgd) -> anyhow::Result<()> {
        Ok(())
    }
    /// The wgpu backend behind this one, if it is one (benchmarks drive it
    /// without per-step readback).
    fn as_gpu(&mut self) -> Option<&mut gpu::WgpuBackend> {
        None
    }
}

/// The CPU reference backend (multi-threaded through rayon).
#[derive(Default)]
pub struct CpuBackend;

impl Backend for CpuBackend {
    fn adapter(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }
    fn name(&self) -> &'static str {
        "cpu"
    }
    fn infer(&mut self, model: &Model, images: &Tensor) -> anyhow::Result<Tensor> {
        cpu::infer(model, images)
    }
    fn gradients(&mut self, model: &mut Model, batch: &Batch) -> anyhow::Result<BatchGradients> {
        let out = cpu::forward_backward_loss(model, batch, false)?;
        let correct = out
            .logits
            .argmax_rows()
            .iter()
            .zip(batch.labels)
            .filter(|(p, l)| **p == **l as usize)
            .count();
        Ok(BatchGradients {
            stats: StepStats {
                loss: out.loss,
                correct,
                images: batch.labels.len(),
            },
            grads: out.grads,
        })
    }
}

/// Picks a backend for `--backend auto|cpu|wgpu`: `auto` takes a real GPU
/// when wgpu finds one and the CPU backend otherwise; `wgpu` takes the best
/// Vulkan adapter, lavapipe included (slow, but correct).
pub fn select(name: &str) -> anyhow::Result<Box<dyn Backend>> {
    match name {
        "cpu" => Ok(Box::new(CpuBackend)),
        "auto" if !gpu::device_nodes_present() => Ok(Box::new(CpuBackend)),
        "auto" => match gpu::WgpuBackend::new(true) {
            Ok(g) => Ok(Box::new(g)),
            Err(_) => Ok(Box::new(CpuBackend)),
        },
        "wgpu" => Ok(Box::new(
            gpu::WgpuBackend::new(false).map_err(|e| anyhow::anyhow!("--backend wgpu: {e:#}"))?,
        )),
        other => anyhow::bail!("--backend '{other}': expected auto, wgpu or cpu"),
    }
}
