//! AdvProp (Xie et al., "Adversarial Examples Improve Image Recognition",
//! CVPR 2020): adversarial examples are normalized by their own *auxiliary*
//! BatchNorm layers, so their statistics — far from the clean images' —
//! do not pollute the BatchNorm the deployed network uses.
//!
//! One step on a batch (x, y), the loss being L(x; main BN) + L(x_adv; aux BN):
//! 1. swap the auxiliary BatchNorm tensors into the model; craft x_adv
//!    against that network; train-mode gradients of x_adv (this updates the
//!    auxiliary running statistics);
//! 2. swap the main BatchNorm back; train-mode gradients of x;
//! 3. every non-BatchNorm tensor (convolutions, linear layers) steps on the
//!    sum of both gradients; the main BatchNorm on the clean gradient only;
//!    the auxiliary BatchNorm on the adversarial gradient only, with its own
//!    momentum buffers and the same optimizer settings.
//!
//! The card keeps only the main BatchNorm: the auxiliary one is a training
//! device, dropped at the end (it lives in the training checkpoint).

use crate::backend::{Backend, Batch, StepStats};
use crate::data::Normalization;
use crate::ir::Op;
use crate::model::{Model, ParamTensor};
use crate::rng::Rng;
use crate::robust::attack::{AttackSpec, attack_normalized};
use crate::tensor::Tensor;
use crate::train::optim::Sgd;
use serde::{Deserialize, Serialize};

/// The auxiliary BatchNorm of a model: a copy of every BatchNorm node's
/// tensors (γ, β, running mean and variance) with its own SGD velocity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuxBatchNorm {
    /// `(node index, that node's tensors in model order)`.
    nodes: Vec<(usize, Vec<ParamTensor>)>,
    /// Momentum buffers, `velocity[j][k]` for tensor k of `nodes[j]`.
    velocity: Vec<Vec<Vec<f32>>>,
}

impl AuxBatchNorm {
    /// Starts as a copy of the model's BatchNorm (AdvProp initializes both
    /// from the same values). Errors if the model has no BatchNorm.
    pub fn from_model(model: &Model) -> anyhow::Result<AuxBatchNorm> {
        let nodes: Vec<(usize, Vec<ParamTensor>)> = bn_nodes(model)
            .map(|i| (i, model.params[i].clone()))
            .collect();
        anyhow::ensure!(
            !nodes.is_empty(),
            "--advprop: the architecture has no BatchNorm layers to duplicate"
        );
        let velocity = nodes
            .iter()
            .map(|(_, ts)| ts.iter().map(|t| vec![0.0; t.data.len()]).collect())
            .collect();
        Ok(AuxBatchNorm { nodes, velocity })
    }

    /// Exchanges the model's BatchNorm tensors with the auxiliary ones.
    /// Calling it twice restores both.
    pub fn swap(&mut self, model: &mut Model) {
        for (i, ts) in &mut self.nodes {
            std::mem::swap(&mut model.params[*i], ts);
        }
    }

    /// The auxiliary tensors of BatchNorm node `node`, if it is one.
    pub fn tensors(&self, node: usize) -> Option<&[ParamTensor]> {
        self.nodes
            .iter()
            .find(|(i, _)| *i == node)
            .map(|(_, ts)| ts.as_slice())
    }

    /// One optimizer update of the auxiliary tensors from the gradients
    /// of a whole-model pass made with them swapped in.
    fn update(&mut self, sgd: &Sgd, grads: &[Vec<Vec<f32>>], lr: f32) {
        for ((i, ts), vs) in self.nodes.iter_mut().zip(&mut self.velocity) {
            for (k, (t, v)) in ts.iter_mut().zip(vs).enumerate() {
                sgd.update_tensor(t, &grads[*i][k], v, lr);
            }
        }
    }
}

/// Indices of the model's BatchNorm nodes.
fn bn_nodes(model: &Model) -> impl Iterator<Item = usize> + '_ {
    model
        .graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::BatchNorm(_)))
        .map(|(i, _)| i)
}

/// Everything one AdvProp step needs besides the model and optimizer.
pub struct AdvPropBatch<'a> {
    pub images: &'a Tensor,
    pub labels: &'a [u32],
    pub norm: &'a Normalization,
    pub attack: &'a AttackSpec,
    pub lr: f32,
}

/// One AdvProp step (see the module doc). The statistics are those of the
/// objective: the summed clean and adversarial losses, and the correct
/// predictions on the adversarial batch (as plain adversarial training
/// reports them).
pub fn step(
    backend: &mut dyn Backend,
    model: &mut Model,
    sgd: &mut Sgd,
    aux: &mut AuxBatchNorm,
    batch: &AdvPropBatch,
    rng: &mut Rng,
) -> anyhow::Result<StepStats> {
    aux.swap(model);
    let adv = attack_normalized(
        model,
        batch.norm,
        batch.images,
        batch.labels,
        batch.attack,
        rng,
    )
    .and_then(|x_adv| backend.gradients(model, &Batch::new(&x_adv, batch.labels)));
    // Swap back before any error leaves, so the model keeps its main BN.
    aux.swap(model);
    let adv = adv?;
    let clean = backend.gradients(model, &Batch::new(batch.images, batch.labels))?;

    let is_bn: Vec<bool> = model
        .graph
        .nodes
        .iter()
        .map(|n| matches!(n.op, Op::BatchNorm(_)))
        .collect();
    let mut summed = clean.grads;
    for (i, (gs, ga)) in summed.iter_mut().zip(&adv.grads).enumerate() {
        if is_bn[i] {
            continue;
        }
        for (g, a) in gs.iter_mut().zip(ga) {
            g.iter_mut().zip(a).for_each(|(g, a)| *g += a);
        }
    }
    sgd.step(model, &summed, batch.lr);
    aux.update(sgd, &adv.grads, batch.lr);
    Ok(StepStats {
        loss: clean.stats.loss + adv.stats.loss,
        correct: adv.stats.correct,
        images: adv.stats.images,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;
    use crate::data::{Augment, Split, loader::make_batch, synthetic};
    use crate::ir::ParamKind;
    use crate::ir::models::{BuildOptions, ModelDesc, build_from_desc};

    const TINY: &str =
        "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c8\", \"M\", \"c16\", \"M\"]\nfc = []\n";

    fn setup() -> (Model, Tensor, Vec<u32>, Normalization) {
        let desc: ModelDesc = toml::from_str(TINY).unwrap();
        let graph = build_from_desc(&desc, &BuildOptions::default()).unwrap();
        let model = Model::init(graph, 3).unwrap();
        let ds = synthetic::generate(16, Split::Train);
        let norm = Normalization::from_dataset(&ds);
        let idx: Vec<usize> = (0..16).collect();
        let (x, y) = make_batch(&ds, &idx, &norm, Augment::None, 1);
        (model, x, y, norm)
    }

    /// The first tensor of `kind` of the first BatchNorm / first conv node.
    fn first(model: &Model, bn: bool, kind: ParamKind) -> Vec<f32> {
        let i = model
            .graph
            .nodes
            .iter()
            .position(|n| {
                if bn {
                    matches!(n.op, Op::BatchNorm(_))
                } else {
                    matches!(n.op, Op::Conv2d(_))
                }
            })
            .unwrap();
        model.params[i]
            .iter()
            .find(|t| t.kind == kind)
            .unwrap()
            .data
            .clone()
    }

    fn advprop_once(attack: &str) -> (Model, AuxBatchNorm) {
        let (mut model, x, y, norm) = setup();
        let mut aux = AuxBatchNorm::from_model(&model).unwrap();
        let mut sgd = Sgd::new(0.9, false, 0.0);
        let attack = AttackSpec::parse(attack).unwrap();
        let batch = AdvPropBatch {
            images: &x,
            labels: &y,
            norm: &norm,
            attack: &attack,
            lr: 0.1,
        };
        let mut rng = Rng::new(5);
        step(
            &mut CpuBackend,
            &mut model,
            &mut sgd,
            &mut aux,
            &batch,
            &mut rng,
        )
        .unwrap();
        (model, aux)
    }

    fn plain_once(lr: f32) -> Model {
        let (mut model, x, y, _) = setup();
        let mut sgd = Sgd::new(0.9, false, 0.0);
        CpuBackend
            .train_step(&mut model, &mut sgd, &Batch::new(&x, &y), lr)
            .unwrap();
        model
    }

    #[test]
    fn main_batchnorm_sees_only_the_clean_batch() {
        // A real attack: the main BN's running statistics and affine update
        // are exactly those of a plain clean step, the auxiliary ones are not.
        let (model, aux) = advprop_once("fgsm:16/255");
        let plain = plain_once(0.1);
        for kind in [
            ParamKind::RunningMean,
            ParamKind::RunningVar,
            ParamKind::Gamma,
        ] {
            assert_eq!(
                first(&model, true, kind),
                first(&plain, true, kind),
                "{kind:?}"
            );
        }
        let bn = bn_nodes(&model).next().unwrap();
        let aux_mean = &aux.tensors(bn).unwrap()[2].data;
        assert_eq!(aux.tensors(bn).unwrap()[2].kind, ParamKind::RunningMean);
        assert_ne!(aux_mean, &first(&model, true, ParamKind::RunningMean));
        // The shared convolution weights took the adversarial gradient too.
        assert_ne!(
            first(&model, false, ParamKind::Weight),
            first(&plain, false, ParamKind::Weight)
        );
    }

    #[test]
    fn a_vanishing_attack_doubles_the_shared_gradient() {
        // With x_adv ≈ x and both BatchNorms equal, the adversarial gradient
        // equals the clean one: shared weights move as a plain step at twice
        // the learning rate, each BatchNorm as a plain step at the same one.
        let (model, aux) = advprop_once("fgsm:1e-12");
        let twice = plain_once(0.2);
        let once = plain_once(0.1);
        let close = |a: &[f32], b: &[f32], what: &str| {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                    "{what}: {x} vs {y}"
                );
            }
        };
        close(
            &first(&model, false, ParamKind::Weight),
            &first(&twice, false, ParamKind::Weight),
            "conv weight",
        );
        close(
            &first(&model, true, ParamKind::Gamma),
            &first(&once, true, ParamKind::Gamma),
            "main gamma",
        );
        let bn = bn_nodes(&model).next().unwrap();
        close(
            &aux.tensors(bn).unwrap()[0].data,
            &first(&once, true, ParamKind::Gamma),
            "aux gamma",
        );
    }

    #[test]
    fn a_model_without_batchnorm_is_refused() {
        let desc: ModelDesc = toml::from_str(&format!("{TINY}batchnorm = false\n")).unwrap();
        let graph = build_from_desc(&desc, &BuildOptions::default()).unwrap();
        let model = Model::init(graph, 0).unwrap();
        let e = AuxBatchNorm::from_model(&model).unwrap_err().to_string();
        assert!(e.contains("--advprop") && e.contains("BatchNorm"), "{e}");
    }
}
