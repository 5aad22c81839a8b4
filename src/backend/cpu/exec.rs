//! The graph executor: runs the nodes in order on pixel-major `[B*S, C]`
//! activations (see [`super::layout`]), frees each activation as soon as neither a later forward
//! op nor the backward pass needs it, and walks the graph backwards
//! accumulating gradients of nodes read several times (residuals).

use super::conv::{self, ConvGeom};
use super::norm::{self, BatchStats};
use super::pool::{self, PoolGeom};
use super::{eltwise, layout, linear};
use crate::ir::op::{channels_spatial as cs, height_width as hw};
use crate::ir::{Op, ParamKind, Shape};
use crate::model::Model;
use anyhow::{Context, anyhow, bail};
use std::borrow::Cow;

/// A model ready to run on a batch: shapes inferred, effective weights
/// (mask/binarisation applied) materialised once.
pub struct Prepared<'m> {
    pub model: &'m Model,
    pub shapes: Vec<Shape>,
    pub batch: usize,
    eff: Vec<Vec<Cow<'m, [f32]>>>,
}

/// What a node's backward needs besides activations.
pub enum Saved {
    None,
    Bn(BatchStats),
    /// Eval-mode BatchNorm: the per-channel scale `gamma / sqrt(var + eps)`
    /// of its fixed affine map (all its input-gradient needs).
    BnEval(Vec<f32>),
    MaxIdx(Vec<u32>),
}

/// How [`Prepared::forward_mode`] runs the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Eval-mode forward only (BatchNorm running statistics, no tape).
    Infer,
    /// Train-mode forward (batch statistics) with a tape for backward.
    Train,
    /// Eval-mode forward with a tape, for gradients of the deployed
    /// network (adversarial attacks): BatchNorm is the fixed affine map of
    /// its running statistics, so its backward is a per-channel scale.
    EvalGrad,
}

/// Activations and side data kept by a training forward for backward.
pub struct Tape {
    values: Vec<Option<Vec<f32>>>,
    saved: Vec<Saved>,
}

/// Gradients in the structure of `Model::params`: `[node][tensor][value]`.
pub type ParamGrads = Vec<Vec<Vec<f32>>>;

/// Running-statistics update of one BatchNorm node: `(node, mean, unbiased var)`.
pub type BnUpdate = (usize, Vec<f32>, Vec<f32>);

impl Tape {
    /// The batch statistics of every BatchNorm node, for the running averages.
    pub fn bn_updates(&self) -> Vec<BnUpdate> {
        self.saved
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Saved::Bn(st) => Some((i, st.mean.clone(), st.var_unbiased.clone())),
                _ => None,
            })
            .collect()
    }
}

/// The activation of node `j`, which the executor keeps while it is needed.
fn get<'v>(values: &'v [Option<Vec<f32>>], j: usize, name: &str) -> anyhow::Result<&'v [f32]> {
    values[j]
        .as_deref()
        .ok_or_else(|| anyhow!("layer '{name}': input activation {j} missing"))
}

/// Whether `op` reads its input's values in backward (not just its shape);
/// an eval-mode BatchNorm does not (its backward is a fixed scale).
fn backward_reads_input(op: &Op, mode: Mode) -> bool {
    match op {
        // Sign's straight-through gradient passes where |x| ≤ 1.
        Op::Conv2d(_) | Op::Linear(_) | Op::Sign => true,
        Op::BatchNorm(_) => mode == Mode::Train,
        _ => false,
    }
}

/// Whether `op` reads its own output in backward.
fn backward_reads_output(op: &Op) -> bool {
    matches!(op, Op::Relu | Op::Relu6)
}

impl<'m> Prepared<'m> {
    pub fn new(model: &'m Model, batch: usize) -> anyhow::Result<Self> {
        model
            .validate()
            .map_err(|e| anyhow!("invalid model: {e}"))?;
        let shapes = model
            .graph
            .shapes()
            .map_err(|e| anyhow!("invalid graph: {e}"))?;
        let eff = model
            .params
            .iter()
            .map(|ts| ts.iter().map(|t| t.effective()).collect())
            .collect();
        Ok(Prepared {
            model,
            shapes,
            batch,
            eff,
        })
    }

    /// Effective values of a node's parameter tensor of `kind`, if it has one.
    fn param(&self, node: usize, kind: ParamKind) -> Option<&[f32]> {
        let k = self.model.params[node]
            .iter()
            .position(|t| t.kind == kind)?;
        Some(&self.eff[node][k])
    }

    fn name(&self, node: usize) -> &str {
        &self.model.graph.nodes[node].name
    }

    /// A parameter the operator definition guarantees (validated model).
    fn required(&self, node: usize, kind: ParamKind) -> anyhow::Result<&[f32]> {
        self.param(node, kind)
            .ok_or_else(|| anyhow!("layer '{}': missing {}", self.name(node), kind.suffix()))
    }

    /// Runs the graph on pixel-major input `x` (`[B, H, W, C]`). Returns
    /// logits `[B, K]` and, in training mode, the tape for [`Self::backward`].
    pub fn forward(&self, x: Vec<f32>, train: bool) -> anyhow::Result<(Vec<f32>, Tape)> {
        self.forward_mode(x, if train { Mode::Train } else { Mode::Infer })
    }

    /// [`Self::forward`] in any [`Mode`]; the tape is only usable by
    /// [`Self::backward`] in `Train` and `EvalGrad` modes.
    pub fn forward_mode(&self, x: Vec<f32>, mode: Mode) -> anyhow::Result<(Vec<f32>, Tape)> {
        let train = mode == Mode::Train;
        let tape = mode != Mode::Infer;
        let nodes = &self.model.graph.nodes;
        let n = nodes.len();
        let b = self.batch;
        let mut remaining = self.model.graph.consumers();
        let keep: Vec<bool> = (0..n)
            .map(|j| {
                tape && (backward_reads_output(&nodes[j].op)
                    || nodes
                        .iter()
                        .any(|c| c.inputs.contains(&j) && backward_reads_input(&c.op, mode)))
            })
            .collect();
        // A BatchNorm whose only reader is a ReLU applies the ReLU itself in
        // train mode (one pass fewer); the ReLU node then has nothing to do.
        let only_reader = |j: usize| {
            let mut readers = nodes
                .iter()
                .enumerate()
                .filter(|(_, c)| c.inputs.contains(&j));
            match (readers.next(), readers.next()) {
                (Some((r, c)), None) if c.inputs.len() == 1 => Some(r),
                _ => None,
            }
        };
        let fused_relu: Vec<bool> = (0..n)
            .map(|i| {
                train
                    && matches!(nodes[i].op, Op::Relu)
                    && nodes[i].inputs.len() == 1
                    && matches!(nodes[nodes[i].inputs[0]].op, Op::BatchNorm(_))
                    && only_reader(nodes[i].inputs[0]) == Some(i)
            })
            .collect();
        let bn_relu = |j: usize| (j + 1..n).any(|i| fused_relu[i] && nodes[i].inputs[0] == j);
        let mut values: Vec<Option<Vec<f32>>> = (0..n).map(|_| None).collect();
        let mut saved: Vec<Saved> = (0..n).map(|_| Saved::None).collect();
        let mut x = Some(x);
        for (i, node) in nodes.iter().enumerate() {
            let ins = &node.inputs;
            let name = &node.name;
            // Takes input `j` by value when this node is its last reader and
            // backward does not need it; copies it otherwise.
            let take = |j: usize, values: &mut Vec<Option<Vec<f32>>>| -> anyhow::Result<Vec<f32>> {
                let uses = ins.iter().filter(|&&k| k == j).count();
                if !keep[j] && remaining[j] == uses {
                    values[j].take()
                } else {
                    values[j].clone()
                }
                .ok_or_else(|| anyhow!("layer '{name}': input activation {j} missing"))
            };
            let out: Vec<f32> = match &node.op {
                Op::Input { .. } => {
                    if i != 0 {
                        bail!("layer '{name}': only node 0 may be an Input");
                    }
                    x.take().context("graph has several Input nodes")?
                }
                Op::Conv2d(c) => {
                    let (h, w) = hw(&self.shapes[ins[0]]);
                    let (oh, ow) = hw(&self.shapes[i]);
                    let g = ConvGeom::new(c, b, h, w, oh, ow);
                    let wt = self.required(i, ParamKind::Weight)?;
                    conv::forward(
                        &g,
                        get(&values, ins[0], name)?,
                        wt,
                        self.param(i, ParamKind::Bias),
                    )
                }
                Op::BatchNorm(bn) => {
                    let gamma = self.param(i, ParamKind::Gamma);
                    let beta = self.param(i, ParamKind::Beta);
                    if train {
                        let (_, s) = cs(&self.shapes[i]);
                        if b * s < 2 {
                            bail!(
                                "layer '{name}': BatchNorm in training needs more than one value per channel (batch {b})"
                            );
                        }
                        let (y, st) = norm::train_forward(
                            get(&values, ins[0], name)?,
                            bn.channels,
                            gamma,
                            beta,
                            bn.eps,
                            bn_relu(i),
                        );
                        saved[i] = Saved::Bn(st);
                        y
                    } else {
                        let mean = self.required(i, ParamKind::RunningMean)?;
                        let var = self.required(i, ParamKind::RunningVar)?;
                        let mut y = take(ins[0], &mut values)?;
                        norm::eval_inplace(&mut y, mean, var, gamma, beta, bn.eps);
                        if tape {
                            saved[i] = Saved::BnEval(norm::eval_scale(var, gamma, bn.eps));
                        }
                        y
                    }
                }
                Op::Relu => {
                    let mut y = take(ins[0], &mut values)?;
                    if !fused_relu[i] {
                        eltwise::relu_inplace(&mut y);
                    }
                    y
                }
                Op::Relu6 => {
                    let mut y = take(ins[0], &mut values)?;
                    eltwise::relu6_inplace(&mut y);
                    y
                }
                Op::Sign => {
                    let mut y = take(ins[0], &mut values)?;
                    eltwise::sign_inplace(&mut y);
                    y
                }
                Op::MaxPool(p) | Op::AvgPool(p) => {
                    let (c, _) = cs(&self.shapes[i]);
                    let g = PoolGeom::new(p, b, c, hw(&self.shapes[ins[0]]), hw(&self.shapes[i]));
                    let xin = get(&values, ins[0], name)?;
                    if matches!(node.op, Op::MaxPool(_)) {
                        let (y, idx) = pool::max_forward(&g, xin);
                        if tape {
                            saved[i] = Saved::MaxIdx(idx);
                        }
                        y
                    } else {
                        pool::avg_forward(&g, xin)
                    }
                }
                Op::GlobalAvgPool => {
                    let (c, s) = cs(&self.shapes[ins[0]]);
                    pool::gap_forward(get(&values, ins[0], name)?, s, c)
                }
                Op::Add => {
                    let (a, c) = (ins[0], ins[1]);
                    if a == c {
                        let mut y = take(a, &mut values)?;
                        y.iter_mut().for_each(|v| *v *= 2.0);
                        y
                    } else {
                        let mut y = take(a, &mut values)?;
                        eltwise::add_assign(&mut y, get(&values, c, name)?);
                        y
                    }
                }
                Op::Flatten => {
                    let (c, s) = cs(&self.shapes[ins[0]]);
                    layout::flatten_forward(take(ins[0], &mut values)?, b, s, c)
                }
                Op::Linear(l) => {
                    let wt = self.required(i, ParamKind::Weight)?;
                    linear::forward(
                        get(&values, ins[0], name)?,
                        wt,
                        self.param(i, ParamKind::Bias),
                        (l.in_features, l.out_features, b),
                    )
                }
            };
            let (c, s) = cs(&self.shapes[i]);
            if out.len() != c * s * b {
                bail!(
                    "layer '{name}': produced {} values, expected {}",
                    out.len(),
                    c * s * b
                );
            }
            values[i] = Some(out);
            for &j in ins {
                remaining[j] -= 1;
                if remaining[j] == 0 && !keep[j] {
                    values[j] = None;
                }
            }
        }
        // The output stays on the tape only if backward reads it (a final ReLU).
        let logits = if keep[n - 1] {
            values[n - 1].clone()
        } else {
            values[n - 1].take()
        }
        .context("graph has no output")?;
        Ok((logits, Tape { values, saved }))
    }

    /// Backward from dL/dlogits (`[B, K]`). Returns the gradient of every
    /// parameter tensor (structure of `model.params`) and, when asked, the
    /// pixel-major gradient of the input.
    pub fn backward(
        &self,
        mut tape: Tape,
        dlogits: Vec<f32>,
        want_input_grad: bool,
    ) -> anyhow::Result<(ParamGrads, Option<Vec<f32>>)> {
        let nodes = &self.model.graph.nodes;
        let n = nodes.len();
        let b = self.batch;
        let mut grads: Vec<Vec<Vec<f32>>> = self
            .model
            .params
            .iter()
            .map(|ts| ts.iter().map(|t| vec![0.0; t.data.len()]).collect())
            .collect();
        let mut g: Vec<Option<Vec<f32>>> = (0..n).map(|_| None).collect();
        g[n - 1] = Some(dlogits);
        let need = |j: usize| j != 0 || want_input_grad;
        let mut input_grad = None;
        for i in (0..n).rev() {
            let Some(mut dy) = g[i].take() else {
                tape.values[i] = None;
                continue;
            };
            let node = &nodes[i];
            let name = &node.name;
            let ins = &node.inputs;
            let value = |j: usize| -> anyhow::Result<&[f32]> {
                tape.values[j]
                    .as_deref()
                    .ok_or_else(|| anyhow!("layer '{name}': saved activation {j} missing"))
            };
            let mut into: Vec<(usize, Vec<f32>)> = Vec::new();
            match &node.op {
                Op::Input { .. } => input_grad = Some(dy),
                Op::Conv2d(c) => {
                    let j = ins[0];
                    let (h, w) = hw(&self.shapes[j]);
                    let (oh, ow) = hw(&self.shapes[i]);
                    let geo = ConvGeom::new(c, b, h, w, oh, ow);
                    let wt = self.required(i, ParamKind::Weight)?;
                    let r = conv::backward(&geo, value(j)?, wt, &dy, c.bias, need(j));
                    self.store(i, &mut grads[i], ParamKind::Weight, r.dw);
                    if let Some(db) = r.db {
                        self.store(i, &mut grads[i], ParamKind::Bias, db);
                    }
                    into.extend(r.dx.map(|dx| (j, dx)));
                }
                Op::BatchNorm(bn) => {
                    let j = ins[0];
                    match &tape.saved[i] {
                        Saved::Bn(st) => {
                            let gamma = self.param(i, ParamKind::Gamma);
                            let (dgamma, dbeta) =
                                norm::backward(&mut dy, value(j)?, bn.channels, st, gamma);
                            if bn.affine {
                                self.store(i, &mut grads[i], ParamKind::Gamma, dgamma);
                                self.store(i, &mut grads[i], ParamKind::Beta, dbeta);
                            }
                        }
                        // Eval mode serves input gradients only: gamma and
                        // beta keep zero gradients.
                        Saved::BnEval(scale) => norm::eval_backward_inplace(&mut dy, scale),
                        _ => bail!("layer '{name}': batch statistics missing"),
                    }
                    into.push((j, dy));
                }
                Op::Relu => {
                    eltwise::relu_backward(&mut dy, value(i)?);
                    into.push((ins[0], dy));
                }
                Op::Relu6 => {
                    eltwise::relu6_backward(&mut dy, value(i)?);
                    into.push((ins[0], dy));
                }
                Op::Sign => {
                    eltwise::sign_backward(&mut dy, value(ins[0])?);
                    into.push((ins[0], dy));
                }
                Op::MaxPool(p) | Op::AvgPool(p) => {
                    let j = ins[0];
                    let (c, _) = cs(&self.shapes[i]);
                    let geo = PoolGeom::new(p, b, c, hw(&self.shapes[j]), hw(&self.shapes[i]));
                    let dx = match (&node.op, &tape.saved[i]) {
                        (Op::MaxPool(_), Saved::MaxIdx(idx)) => pool::max_backward(&geo, &dy, idx),
                        (Op::MaxPool(_), _) => bail!("layer '{name}': max-pool indices missing"),
                        _ => pool::avg_backward(&geo, &dy),
                    };
                    into.push((j, dx));
                }
                Op::GlobalAvgPool => {
                    let (c, s) = cs(&self.shapes[ins[0]]);
                    into.push((ins[0], pool::gap_backward(&dy, s, c)));
                }
                Op::Add => {
                    // Moves `dy` to one input; the other gets a copy only
                    // when it has no gradient yet (else `dy` is added in).
                    let (a, c) = (ins[0], ins[1]);
                    if a != c && need(a) {
                        match g[a].as_mut() {
                            Some(acc) => eltwise::add_assign(acc, &dy),
                            None => g[a] = Some(dy.clone()),
                        }
                    } else if a == c {
                        into.push((a, dy.clone()));
                    }
                    into.push((c, dy));
                }
                Op::Flatten => {
                    let (c, s) = cs(&self.shapes[ins[0]]);
                    into.push((ins[0], layout::flatten_backward(dy, b, s, c)));
                }
                Op::Linear(l) => {
                    let j = ins[0];
                    let wt = self.required(i, ParamKind::Weight)?;
                    let r = linear::backward(
                        value(j)?,
                        wt,
                        &dy,
                        (l.in_features, l.out_features, b),
                        l.bias,
                        need(j),
                    );
                    self.store(i, &mut grads[i], ParamKind::Weight, r.dw);
                    if let Some(db) = r.db {
                        self.store(i, &mut grads[i], ParamKind::Bias, db);
                    }
                    into.extend(r.dx.map(|dx| (j, dx)));
                }
            }
            for (j, dx) in into {
                if !need(j) {
                    continue;
                }
                match g[j].as_mut() {
                    Some(acc) => eltwise::add_assign(acc, &dx),
                    None => g[j] = Some(dx),
                }
            }
            tape.values[i] = None;
            tape.saved[i] = Saved::None;
        }
        Ok((grads, input_grad))
    }

    /// Stores a computed gradient of node `node`; masked entries of a
    /// weight are zeroed (straight-through for binary weights).
    fn store(&self, node: usize, slot: &mut [Vec<f32>], kind: ParamKind, mut grad: Vec<f32>) {
        let ts = &self.model.params[node];
        let Some(k) = ts.iter().position(|t| t.kind == kind) else {
            return;
        };
        if let Some(mask) = ts[k].mask() {
            for (gv, &m) in grad.iter_mut().zip(mask) {
                if !m {
                    *gv = 0.0;
                }
            }
        }
        if grad.len() == slot[k].len() {
            slot[k] = grad;
        }
    }
}
