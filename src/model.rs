//! A model: an IR graph plus its parameter tensors and their compression
//! state (dense, masked, binary).

use crate::ir::{Graph, Op, ParamKind};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// How a weight tensor is stored and applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WeightState {
    /// Plain f32 values.
    Dense,
    /// Unstructured sparsity: `mask[i] == false` means weight i is zero.
    Masked { mask: Vec<bool> },
    /// 1-bit weights: effective value α·sign(w) where the mask keeps it, else 0.
    Binary { mask: Vec<bool>, alpha: f32 },
}

/// The number format a tensor is stored in. `data` always holds the f32
/// values the network computes with; a quantized tensor's values are
/// exactly representable in its format (see `compress::quantize`), so a
/// card stores them losslessly in that format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum Precision {
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// Symmetric int8, one scale per output channel (first dimension):
    /// value = q · scales[channel], q in [-127, 127].
    Int8 { scales: Vec<f32> },
}

/// One parameter tensor of a node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamTensor {
    pub kind: ParamKind,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub state: WeightState,
    /// Storage format; binary weights ignore it (they are 1-bit anyway).
    pub precision: Precision,
}

impl ParamTensor {
    /// The mask, if the tensor has one.
    pub fn mask(&self) -> Option<&[bool]> {
        match &self.state {
            WeightState::Dense => None,
            WeightState::Masked { mask } | WeightState::Binary { mask, .. } => Some(mask),
        }
    }

    /// The values the network computes with (mask and binarization applied).
    pub fn effective(&self) -> std::borrow::Cow<'_, [f32]> {
        match &self.state {
            WeightState::Dense => std::borrow::Cow::Borrowed(&self.data),
            WeightState::Masked { mask } => std::borrow::Cow::Owned(
                self.data
                    .iter()
                    .zip(mask)
                    .map(|(&w, &m)| if m { w } else { 0.0 })
                    .collect(),
            ),
            WeightState::Binary { mask, alpha } => std::borrow::Cow::Owned(
                self.data
                    .iter()
                    .zip(mask)
                    .map(|(&w, &m)| {
                        if !m {
                            0.0
                        } else if w >= 0.0 {
                            *alpha
                        } else {
                            -*alpha
                        }
                    })
                    .collect(),
            ),
        }
    }

    /// Number of zero weights as the network sees them.
    pub fn zeros(&self) -> usize {
        self.effective().iter().filter(|&&v| v == 0.0).count()
    }

    /// Sets masked-out values to exactly zero (keeps stored data honest).
    pub fn apply_mask(&mut self) {
        if let Some(mask) = self.mask().map(|m| m.to_vec()) {
            for (w, m) in self.data.iter_mut().zip(mask) {
                if !m {
                    *w = 0.0;
                }
            }
        }
    }
}

/// A graph and its parameters: `params[node]` holds the node's tensors in
/// the order of [`Op::param_specs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub graph: Graph,
    pub params: Vec<Vec<ParamTensor>>,
}

impl Model {
    /// A freshly initialized model: Kaiming-normal (fan-in, ReLU gain) conv
    /// and linear weights, PyTorch-style uniform biases, BN γ=1 β=0,
    /// running mean 0 and variance 1.
    pub fn init(graph: Graph, seed: u64) -> Result<Model, String> {
        graph.shapes()?;
        let mut rng = Rng::derive(seed, "init");
        let mut params = Vec::with_capacity(graph.nodes.len());
        for node in &graph.nodes {
            let fan_in = match &node.op {
                Op::Conv2d(c) => (c.in_channels / c.groups.max(1)) * c.kernel.0 * c.kernel.1,
                Op::Linear(l) => l.in_features,
                _ => 1,
            };
            let mut ts = Vec::new();
            for spec in node.op.param_specs() {
                let n: usize = spec.shape.iter().product();
                let data = match spec.kind {
                    ParamKind::Weight => {
                        let std = (2.0 / fan_in as f32).sqrt();
                        (0..n).map(|_| rng.normal() * std).collect()
                    }
                    ParamKind::Bias => {
                        let b = 1.0 / (fan_in as f32).sqrt();
                        (0..n).map(|_| rng.range(-b, b)).collect()
                    }
                    ParamKind::Gamma | ParamKind::RunningVar => vec![1.0; n],
                    ParamKind::Beta | ParamKind::RunningMean => vec![0.0; n],
                };
                ts.push(ParamTensor {
                    kind: spec.kind,
                    shape: spec.shape,
                    data,
                    state: WeightState::Dense,
                    precision: Precision::F32,
                });
            }
            params.push(ts);
        }
        Ok(Model { graph, params })
    }

    /// Checks that parameters match the graph's operator definitions.
    pub fn validate(&self) -> Result<(), String> {
        self.graph.shapes()?;
        if self.params.len() != self.graph.nodes.len() {
            return Err(format!(
                "{} parameter groups for {} nodes",
                self.params.len(),
                self.graph.nodes.len()
            ));
        }
        for (node, ts) in self.graph.nodes.iter().zip(&self.params) {
            let specs = node.op.param_specs();
            if specs.len() != ts.len() {
                return Err(format!(
                    "layer '{}': expected {} parameter tensors, found {}",
                    node.name,
                    specs.len(),
                    ts.len()
                ));
            }
            for (s, t) in specs.iter().zip(ts) {
                let n: usize = s.shape.iter().product();
                if s.kind != t.kind || s.shape != t.shape || t.data.len() != n {
                    return Err(format!(
                        "layer '{}': parameter {} should be {:?} with {n} values",
                        node.name,
                        s.kind.suffix(),
                        s.shape
                    ));
                }
                if let Some(m) = t.mask()
                    && m.len() != n
                {
                    return Err(format!(
                        "layer '{}': mask of {} has {} entries, expected {n}",
                        node.name,
                        s.kind.suffix(),
                        m.len()
                    ));
                }
                if let Precision::Int8 { scales } = &t.precision
                    && (t.shape.first() != Some(&scales.len())
                        || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)))
                {
                    return Err(format!(
                        "layer '{}': parameter {} has {} int8 scales for {:?} (need one positive scale per output channel)",
                        node.name,
                        s.kind.suffix(),
                        scales.len(),
                        s.shape
                    ));
                }
                if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
                    return Err(format!(
                        "layer '{}': parameter {} holds a non-finite value at index {bad}",
                        node.name,
                        s.kind.suffix()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Total parameter count (trainable tensors; running statistics excluded).
    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .flatten()
            .filter(|t| t.kind.trainable())
            .map(|t| t.data.len())
            .sum()
    }

    /// Iterates `(node index, tensor index)` of prunable weights (conv/linear).
    pub fn prunable(&self) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (i, node) in self.graph.nodes.iter().enumerate() {
            if node.op.has_prunable_weight() {
                for (k, t) in self.params[i].iter().enumerate() {
                    if t.kind == ParamKind::Weight {
                        v.push((i, k));
                    }
                }
            }
        }
        v
    }

    /// Fraction of prunable weights that are zero.
    pub fn sparsity(&self) -> f64 {
        let (mut zeros, mut total) = (0usize, 0usize);
        for (i, k) in self.prunable() {
            let t = &self.params[i][k];
            zeros += t.zeros();
            total += t.data.len();
        }
        if total == 0 {
            0.0
        } else {
            zeros as f64 / total as f64
        }
    }
}
