//! The operators of the model IR: one definition each (parameters, shape
//! rule, parameter tensors, cost). Every backend, the C emitter and ONNX
//! import/export implement these definitions; none redefines them.

use serde::{Deserialize, Serialize};

/// Per-sample activation shape (no batch dimension): `[C, H, W]` for images,
/// `[F]` after `Flatten`/`GlobalAvgPool`/`Linear`.
pub type Shape = Vec<usize>;

/// `(C, S)` of a per-sample shape: channels and spatial size (`S = 1` for
/// vectors), how the backends see activations (`[B*S, C]`).
pub fn channels_spatial(shape: &Shape) -> (usize, usize) {
    (
        shape.first().copied().unwrap_or(1),
        shape.iter().skip(1).product(),
    )
}

/// `(H, W)` of a `[C, H, W]` shape; `(1, 1)` for vectors.
pub fn height_width(shape: &Shape) -> (usize, usize) {
    match shape.as_slice() {
        [_, h, w] => (*h, *w),
        _ => (1, 1),
    }
}

/// 2-D convolution, NCHW semantics, symmetric zero padding, no dilation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2d {
    pub in_channels: usize,
    pub out_channels: usize,
    /// (kh, kw)
    pub kernel: (usize, usize),
    /// (sh, sw)
    pub stride: (usize, usize),
    /// (ph, pw), applied on both sides.
    pub padding: (usize, usize),
    pub groups: usize,
    pub bias: bool,
}

/// Batch normalization over channels (dim 1). Non-affine BN (edge-popup,
/// BiProp) has no gamma/beta. Running statistics are always kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm {
    pub channels: usize,
    pub affine: bool,
    pub eps: f32,
    /// Weight of the new batch statistic in the running average (PyTorch's 0.1).
    pub momentum: f32,
}

/// Max or average pooling window. Average pooling counts padded cells
/// (PyTorch's `count_include_pad=True`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

/// Fully connected layer: y = W x + b, W is [out, in].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Linear {
    pub in_features: usize,
    pub out_features: usize,
    pub bias: bool,
}

/// An IR operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// The graph input, per-sample shape `[C, H, W]`.
    Input {
        channels: usize,
        height: usize,
        width: usize,
    },
    Conv2d(Conv2d),
    BatchNorm(BatchNorm),
    Relu,
    /// min(max(x, 0), 6)
    Relu6,
    MaxPool(Pool),
    AvgPool(Pool),
    /// Mean over H and W: `[C, H, W]` -> `[C]`.
    GlobalAvgPool,
    /// Elementwise sum of two inputs of equal shape (residual).
    Add,
    /// `[C, H, W]` -> `[C*H*W]` (C-major, as PyTorch's `flatten(1)`).
    Flatten,
    Linear(Linear),
    // New variants go last: cards store operators by variant index.
    /// Binary activation: +1 where x ≥ 0, −1 elsewhere. Trained with the
    /// straight-through estimator (gradient passed where |x| ≤ 1, the
    /// derivative of hardtanh), as in XNOR-Net / Bi-Real Net. A
    /// convolution with binary weights reading it compiles to XOR/popcount.
    Sign,
}

/// What a parameter tensor of an operator holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParamKind {
    Weight,
    Bias,
    Gamma,
    Beta,
    RunningMean,
    RunningVar,
}

impl ParamKind {
    /// Name suffix used in parameter names (`conv1.weight`).
    pub fn suffix(self) -> &'static str {
        match self {
            ParamKind::Weight => "weight",
            ParamKind::Bias => "bias",
            ParamKind::Gamma => "gamma",
            ParamKind::Beta => "beta",
            ParamKind::RunningMean => "running_mean",
            ParamKind::RunningVar => "running_var",
        }
    }

    /// Whether the optimizer updates it (running statistics are buffers).
    pub fn trainable(self) -> bool {
        !matches!(self, ParamKind::RunningMean | ParamKind::RunningVar)
    }
}

/// One parameter tensor an operator needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub kind: ParamKind,
    pub shape: Vec<usize>,
}

/// Output length of a sliding window; `None` when it does not fit or the
/// sizes overflow (sizes may come from untrusted files).
fn pooled(len: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    let padded = p.checked_mul(2)?.checked_add(len)?;
    if s == 0 || k == 0 || padded < k {
        return None;
    }
    Some((padded - k) / s + 1)
}

impl Op {
    /// Short operator name (as shown by `cardc info`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm(_) => "BatchNorm",
            Op::Relu => "Relu",
            Op::Relu6 => "Relu6",
            Op::Sign => "Sign",
            Op::MaxPool(_) => "MaxPool",
            Op::AvgPool(_) => "AvgPool",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::Add => "Add",
            Op::Flatten => "Flatten",
            Op::Linear(_) => "Linear",
        }
    }

    /// Number of inputs the operator takes.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Add => 2,
            _ => 1,
        }
    }

    /// Shape rule: the output shape for the given input shapes, or a
    /// message saying why the inputs do not fit.
    pub fn output_shape(&self, inputs: &[&Shape]) -> Result<Shape, String> {
        if inputs.len() != self.arity() {
            return Err(format!(
                "{} takes {} input(s), got {}",
                self.kind_name(),
                self.arity(),
                inputs.len()
            ));
        }
        let chw = |s: &Shape| -> Result<(usize, usize, usize), String> {
            match s.as_slice() {
                [c, h, w] => Ok((*c, *h, *w)),
                _ => Err(format!(
                    "{} needs a [C,H,W] input, got {:?}",
                    self.kind_name(),
                    s
                )),
            }
        };
        match self {
            Op::Input {
                channels,
                height,
                width,
            } => Ok(vec![*channels, *height, *width]),
            Op::Conv2d(c) => {
                let (ci, h, w) = chw(inputs[0])?;
                if ci != c.in_channels {
                    return Err(format!(
                        "Conv2d expects {} input channels, got {ci}",
                        c.in_channels
                    ));
                }
                if c.groups == 0 || c.in_channels % c.groups != 0 || c.out_channels % c.groups != 0
                {
                    return Err(format!(
                        "Conv2d groups {} must divide in ({}) and out ({}) channels",
                        c.groups, c.in_channels, c.out_channels
                    ));
                }
                let oh = pooled(h, c.kernel.0, c.stride.0, c.padding.0);
                let ow = pooled(w, c.kernel.1, c.stride.1, c.padding.1);
                match (oh, ow) {
                    (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![c.out_channels, oh, ow]),
                    _ => Err(format!(
                        "Conv2d kernel {:?} stride {:?} padding {:?} does not fit a {h}x{w} input",
                        c.kernel, c.stride, c.padding
                    )),
                }
            }
            Op::BatchNorm(b) => {
                let s = inputs[0];
                if s.first() != Some(&b.channels) {
                    return Err(format!(
                        "BatchNorm expects {} channels, got shape {:?}",
                        b.channels, s
                    ));
                }
                Ok(s.clone())
            }
            Op::Relu | Op::Relu6 | Op::Sign => Ok(inputs[0].clone()),
            Op::MaxPool(p) | Op::AvgPool(p) => {
                let (c, h, w) = chw(inputs[0])?;
                if p.padding.0 * 2 > p.kernel.0 || p.padding.1 * 2 > p.kernel.1 {
                    return Err(format!(
                        "{} padding {:?} exceeds half the kernel {:?}",
                        self.kind_name(),
                        p.padding,
                        p.kernel
                    ));
                }
                let oh = pooled(h, p.kernel.0, p.stride.0, p.padding.0);
                let ow = pooled(w, p.kernel.1, p.stride.1, p.padding.1);
                match (oh, ow) {
                    (Some(oh), Some(ow)) if oh > 0 && ow > 0 => Ok(vec![c, oh, ow]),
                    _ => Err(format!(
                        "{} kernel {:?} stride {:?} does not fit a {h}x{w} input",
                        self.kind_name(),
                        p.kernel,
                        p.stride
                    )),
                }
            }
            Op::GlobalAvgPool => {
                let (c, _, _) = chw(inputs[0])?;
                Ok(vec![c])
            }
            Op::Add => {
                if inputs[0] != inputs[1] {
                    return Err(format!(
                        "Add needs equal shapes, got {:?} and {:?}",
                        inputs[0], inputs[1]
                    ));
                }
                Ok(inputs[0].clone())
            }
            Op::Flatten => Ok(vec![inputs[0].iter().product()]),
            Op::Linear(l) => {
                let f: usize = inputs[0].iter().product();
                if inputs[0].len() != 1 || f != l.in_features {
                    return Err(format!(
                        "Linear expects [{}] features, got {:?}",
                        l.in_features, inputs[0]
                    ));
                }
                Ok(vec![l.out_features])
            }
        }
    }

    /// Parameter tensors, in the fixed order every backend and the
    /// container use.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let spec = |kind, shape: Vec<usize>| ParamSpec { kind, shape };
        match self {
            Op::Conv2d(c) => {
                let mut v = vec![spec(
                    ParamKind::Weight,
                    vec![
                        c.out_channels,
                        c.in_channels / c.groups.max(1),
                        c.kernel.0,
                        c.kernel.1,
                    ],
                )];
                if c.bias {
                    v.push(spec(ParamKind::Bias, vec![c.out_channels]));
                }
                v
            }
            Op::BatchNorm(b) => {
                let mut v = Vec::new();
                if b.affine {
                    v.push(spec(ParamKind::Gamma, vec![b.channels]));
                    v.push(spec(ParamKind::Beta, vec![b.channels]));
                }
                v.push(spec(ParamKind::RunningMean, vec![b.channels]));
                v.push(spec(ParamKind::RunningVar, vec![b.channels]));
                v
            }
            Op::Linear(l) => {
                let mut v = vec![spec(ParamKind::Weight, vec![l.out_features, l.in_features])];
                if l.bias {
                    v.push(spec(ParamKind::Bias, vec![l.out_features]));
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Whether the operator's weight may be pruned or binarized.
    pub fn has_prunable_weight(&self) -> bool {
        matches!(self, Op::Conv2d(_) | Op::Linear(_))
    }

    /// Multiply-accumulates per sample, given the output shape (conv and
    /// linear only; the convention of parameter/MAC tables).
    pub fn macs(&self, output: &Shape) -> u64 {
        match self {
            Op::Conv2d(c) => {
                let spatial: usize = output.iter().skip(1).product();
                (c.out_channels * (c.in_channels / c.groups.max(1)) * c.kernel.0 * c.kernel.1)
                    as u64
                    * spatial as u64
            }
            Op::Linear(l) => (l.in_features * l.out_features) as u64,
            _ => 0,
        }
    }
}
