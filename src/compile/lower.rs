//! Lowering: from the IR graph of a card to a straight-line program of
//! kernel steps on channels-first (`[C][H][W]`, the IR's order) f32
//! activations.
//!
//! * Eval-mode BatchNorm right after a conv/linear that nothing else reads
//!   is folded into it: `w' = w · s`, `b' = (b − mean) · s + β` with
//!   `s = γ / sqrt(var + eps)`. Binary layers keep their structure: the
//!   folded row is `±α·s[o]`, so the multiplier becomes `α·s[o]`. An
//!   int8 card's scales fold the same way (`scale·|s[o]|`), keeping the
//!   folded weights on an int8 grid.
//! * A ReLU/ReLU6 that is the only reader of a conv/linear/BatchNorm/Add
//!   output is fused into that step.
//! * `Flatten` is a no-op alias (activations are already C-major).
//! * Linear layers are 1×1 convolutions on a 1×1 image.

use crate::card::Card;
use crate::compile::pack::{self, Format, PackedWeights};
use crate::ir::{Op, ParamKind};
use crate::model::{Precision, WeightState};
use anyhow::{Context, bail};

/// Activation fused into a step (the C constants `CARDC_ACT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None = 0,
    Relu = 1,
    Relu6 = 2,
    /// +1 where x ≥ 0, −1 elsewhere.
    Sign = 3,
}

/// Geometry of a matrix layer (linear: 1×1 image, 1×1 kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub ih: usize,
    pub iw: usize,
    pub ic: usize,
    pub oh: usize,
    pub ow: usize,
    pub oc: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl Geom {
    /// Patch length: `kh · kw · ic`.
    pub fn cols(&self) -> usize {
        self.kh * self.kw * self.ic
    }

    /// Multiply-accumulates per image.
    pub fn macs(&self) -> u64 {
        (self.oh * self.ow) as u64 * (self.oc * self.cols()) as u64
    }
}

/// A convolution or linear layer with BatchNorm folded in.
#[derive(Clone, Debug)]
pub struct MatLayer {
    /// Name of the IR node (conv/linear) it comes from.
    pub name: String,
    /// `Conv2d` or `Linear`.
    pub op: &'static str,
    pub geom: Geom,
    /// Folded weights, `[oc][kh][kw][ic]`.
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub act: Act,
    /// The card stores the weight binarized.
    pub card_binary: bool,
    /// The input is a Sign output (±1 only), which the `xnor` format needs.
    pub sign_input: bool,
    /// The card stores the weight as int8 (`cardc quantize`): its
    /// per-output-channel scales with BatchNorm folded in, the grid on
    /// which the int8 formats reproduce the card's values exactly.
    pub card_int8: Option<Vec<f32>>,
    /// Chosen packing.
    pub packed: PackedWeights,
}

impl MatLayer {
    /// Fraction of zero weights.
    pub fn zero_fraction(&self) -> f64 {
        let z = self.weight.iter().filter(|&&v| v == 0.0).count();
        z as f64 / self.weight.len().max(1) as f64
    }

    /// Whether `format` can hold this layer (binary needs binary rows;
    /// xnor binary rows on a Sign input).
    pub fn supports(&self, format: Format) -> bool {
        let binary = || pack::binary_magnitudes(&self.weight, self.geom.oc).is_some();
        match format {
            Format::Binary | Format::Rice => binary(),
            Format::Xnor => self.sign_input && super::xnor::supported(&self.geom) && binary(),
            _ => true,
        }
    }

    /// Packs the weights in `format` (int8 formats on the card's grid
    /// when it has one).
    pub fn pack(&self, format: Format) -> anyhow::Result<PackedWeights> {
        let g = &self.geom;
        let grid = self.card_int8.as_deref();
        pack::pack_on_grid(&self.weight, g.oc, g.cols(), g.ic, format, grid)
            .map_err(|e| anyhow::anyhow!("layer '{}' as {}: {e}", self.name, format.name()))
    }

    /// Flash bytes of the layer in its chosen format as emitted: weights
    /// with their offset tables, bias and multipliers.
    pub fn bytes(&self) -> usize {
        super::layout::emitted_weight_bytes(&self.packed.packed, &self.geom)
            + 4 * self.bias.len()
            + self.packed.mult.as_ref().map_or(0, |m| 4 * m.len())
    }
}

/// Pooling window geometry on `[c][h][w]` input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub ih: usize,
    pub iw: usize,
    pub c: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

/// One kernel call. Operands are value ids (see [`Program::values`]).
#[derive(Clone, Debug)]
pub enum Step {
    /// Raw CHW bytes → normalized CHW floats.
    Normalize { out: usize },
    Mat {
        layer: Box<MatLayer>,
        input: usize,
        out: usize,
    },
    Add {
        name: String,
        a: usize,
        b: usize,
        out: usize,
        act: Act,
    },
    /// A BatchNorm that could not be folded: per-channel `x·scale + shift`.
    Affine {
        name: String,
        input: usize,
        out: usize,
        scale: Vec<f32>,
        shift: Vec<f32>,
        act: Act,
    },
    Activation {
        name: String,
        input: usize,
        out: usize,
        act: Act,
    },
    MaxPool {
        name: String,
        input: usize,
        out: usize,
        geom: PoolGeom,
    },
    AvgPool {
        name: String,
        input: usize,
        out: usize,
        geom: PoolGeom,
    },
    GlobalAvgPool {
        name: String,
        input: usize,
        out: usize,
        pixels: usize,
        c: usize,
    },
}

impl Step {
    /// Value ids the step reads.
    pub fn inputs(&self) -> Vec<usize> {
        match self {
            Step::Normalize { .. } => vec![],
            Step::Add { a, b, .. } => vec![*a, *b],
            Step::Mat { input, .. }
            | Step::Affine { input, .. }
            | Step::Activation { input, .. }
            | Step::MaxPool { input, .. }
            | Step::AvgPool { input, .. }
            | Step::GlobalAvgPool { input, .. } => vec![*input],
        }
    }

    /// The value id the step writes.
    pub fn output(&self) -> usize {
        match self {
            Step::Normalize { out }
            | Step::Mat { out, .. }
            | Step::Add { out, .. }
            | Step::Affine { out, .. }
            | Step::Activation { out, .. }
            | Step::MaxPool { out, .. }
            | Step::AvgPool { out, .. }
            | Step::GlobalAvgPool { out, .. } => *out,
        }
    }
}

/// A lowered card: activations (`values`, f32 element counts), the steps
/// that compute them in order, and the input/output description.
#[derive(Clone, Debug)]
pub struct Program {
    pub name: String,
    /// Element count (f32) of each value.
    pub values: Vec<usize>,
    pub steps: Vec<Step>,
    /// The logits value.
    pub output: usize,
    /// `[C, H, W]` of the raw input image.
    pub input: [usize; 3],
    pub classes: usize,
    /// Normalization lookup: `lut[c][byte]`, exactly the reference's f32s.
    pub lut: Vec<[f32; 256]>,
    /// Multiply-accumulates per image (the IR's count).
    pub macs: u64,
}

impl Program {
    /// The matrix layers, in execution order.
    pub fn mat_layers(&self) -> impl Iterator<Item = &MatLayer> {
        self.steps.iter().filter_map(|s| match s {
            Step::Mat { layer, .. } => Some(layer.as_ref()),
            _ => None,
        })
    }

    /// For the memory plan: the step that defines each value, and every
    /// read as `(step, value)`.
    pub fn defs_and_reads(&self) -> (Vec<usize>, Vec<(usize, usize)>) {
        let mut defs = vec![0; self.values.len()];
        let mut reads = Vec::new();
        for (i, s) in self.steps.iter().enumerate() {
            defs[s.output()] = i;
            reads.extend(s.inputs().into_iter().map(|v| (i, v)));
        }
        (defs, reads)
    }

    /// Mutable matrix layers, in execution order.
    pub fn mat_layers_mut(&mut self) -> impl Iterator<Item = &mut MatLayer> {
        self.steps.iter_mut().filter_map(|s| match s {
            Step::Mat { layer, .. } => Some(layer.as_mut()),
            _ => None,
        })
    }
}

/// How the BN parameters of node `i` map to `(scale, shift)`.
fn bn_affine(card: &Card, i: usize) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
    let node = &card.model.graph.nodes[i];
    let Op::BatchNorm(bn) = &node.op else {
        bail!("layer '{}' is not a BatchNorm", node.name);
    };
    let get = |k: ParamKind| card.model.params[i].iter().find(|t| t.kind == k);
    let need = |k: ParamKind| {
        get(k).with_context(|| format!("layer '{}': missing {}", node.name, k.suffix()))
    };
    let mean = &need(ParamKind::RunningMean)?.data;
    let var = &need(ParamKind::RunningVar)?.data;
    let gamma = get(ParamKind::Gamma).map(|t| &t.data);
    let beta = get(ParamKind::Beta).map(|t| &t.data);
    // Same arithmetic as the reference's eval-mode BatchNorm.
    let scale: Vec<f32> = (0..bn.channels)
        .map(|c| gamma.map_or(1.0, |g| g[c]) / (var[c] + bn.eps).sqrt())
        .collect();
    let shift = (0..bn.channels)
        .map(|c| beta.map_or(0.0, |b| b[c]) - mean[c] * scale[c])
        .collect();
    Ok((scale, shift))
}

/// The activation of a Relu/Relu6 node.
fn act_of(op: &Op) -> Option<Act> {
    match op {
        Op::Relu => Some(Act::Relu),
        Op::Relu6 => Some(Act::Relu6),
        Op::Sign => Some(Act::Sign),
        _ => None,
    }
}

/// Lowers a card. Every matrix layer starts in `f32`; [`choose_formats`]
/// picks the final formats.
pub fn lower(card: &Card) -> anyhow::Result<Program> {
    let g = &card.model.graph;
    let shapes = g.shapes().map_err(|e| anyhow::anyhow!(e))?;
    let n = g.nodes.len();
    let consumers = g.consumers();
    // The single reader of each node (when it has exactly one).
    let mut reader: Vec<Option<usize>> = vec![None; n];
    for (j, node) in g.nodes.iter().enumerate() {
        for &i in &node.inputs {
            reader[i] = Some(j);
        }
    }
    let only_reader = |i: usize| (consumers[i] == 1).then_some(reader[i]).flatten();
    let mut value_of: Vec<Option<usize>> = vec![None; n];
    let mut fused = vec![false; n];
    let mut values: Vec<usize> = Vec::new();
    let mut steps = Vec::new();
    let new_value = |values: &mut Vec<usize>, len: usize| {
        values.push(len);
        values.len() - 1
    };
    let hw = |s: &[usize]| match s {
        [_, h, w] => (*h, *w),
        _ => (1, 1),
    };
    for (i, node) in g.nodes.iter().enumerate() {
        if fused[i] {
            continue;
        }
        let name = node.name.clone();
        let input = |k: usize| -> anyhow::Result<usize> {
            let j = node.inputs[k];
            value_of[j].with_context(|| format!("layer '{name}': input {j} has no value"))
        };
        let len: usize = shapes[i].iter().product();
        // Fuses a following activation into node `last`; returns the last
        // IR node the step covers and the activation.
        let fuse_act = |last: usize, fused: &mut Vec<bool>| -> (usize, Act) {
            if let Some(j) = only_reader(last)
                && let Some(a) = act_of(&g.nodes[j].op)
            {
                fused[j] = true;
                return (j, a);
            }
            (last, Act::None)
        };
        let (last, step) = match &node.op {
            Op::Input { .. } => {
                let out = new_value(&mut values, len);
                (i, Step::Normalize { out })
            }
            Op::Conv2d(_) | Op::Linear(_) => {
                let mut layer = mat_layer(card, i, &shapes)?;
                let mut last = i;
                if let Some(j) = only_reader(i)
                    && matches!(g.nodes[j].op, Op::BatchNorm(_))
                {
                    let (s, t) = bn_affine(card, j)?;
                    let cols = layer.geom.cols();
                    for (o, row) in layer.weight.chunks_mut(cols.max(1)).enumerate() {
                        row.iter_mut().for_each(|w| *w *= s[o]);
                        layer.bias[o] = layer.bias[o] * s[o] + t[o];
                    }
                    if let Some(grid) = &mut layer.card_int8 {
                        for (g, s) in grid.iter_mut().zip(&s) {
                            *g *= s.abs();
                            // γ = 0 zeroes the folded row: any positive step
                            // holds it exactly (the max-abs rule's 1).
                            if *g == 0.0 {
                                *g = 1.0;
                            }
                        }
                    }
                    fused[j] = true;
                    last = j;
                }
                let (last, act) = fuse_act(last, &mut fused);
                layer.act = act;
                let input = input(0)?;
                let out = new_value(&mut values, len);
                let step = Step::Mat {
                    layer: Box::new(layer),
                    input,
                    out,
                };
                (last, step)
            }
            Op::BatchNorm(_) => {
                let (scale, shift) = bn_affine(card, i)?;
                let (last, act) = fuse_act(i, &mut fused);
                let input = input(0)?;
                let out = new_value(&mut values, len);
                let step = Step::Affine {
                    name,
                    input,
                    out,
                    scale,
                    shift,
                    act,
                };
                (last, step)
            }
            Op::Relu | Op::Relu6 | Op::Sign => {
                let act = act_of(&node.op).unwrap_or(Act::None);
                let input = input(0)?;
                let out = new_value(&mut values, len);
                (
                    i,
                    Step::Activation {
                        name,
                        input,
                        out,
                        act,
                    },
                )
            }
            Op::Add => {
                let (last, act) = fuse_act(i, &mut fused);
                let (a, b) = (input(0)?, input(1)?);
                let out = new_value(&mut values, len);
                (
                    last,
                    Step::Add {
                        name,
                        a,
                        b,
                        out,
                        act,
                    },
                )
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                let src = &shapes[node.inputs[0]];
                let (ih, iw) = hw(src);
                let (oh, ow) = hw(&shapes[i]);
                let geom = PoolGeom {
                    ih,
                    iw,
                    c: src[0],
                    oh,
                    ow,
                    kh: p.kernel.0,
                    kw: p.kernel.1,
                    sh: p.stride.0,
                    sw: p.stride.1,
                    ph: p.padding.0,
                    pw: p.padding.1,
                };
                let input = input(0)?;
                let out = new_value(&mut values, len);
                let step = if matches!(node.op, Op::MaxPool(_)) {
                    Step::MaxPool {
                        name,
                        input,
                        out,
                        geom,
                    }
                } else {
                    Step::AvgPool {
                        name,
                        input,
                        out,
                        geom,
                    }
                };
                (i, step)
            }
            Op::GlobalAvgPool => {
                let src = &shapes[node.inputs[0]];
                let (h, w) = hw(src);
                let input = input(0)?;
                let out = new_value(&mut values, len);
                (
                    i,
                    Step::GlobalAvgPool {
                        name,
                        input,
                        out,
                        pixels: h * w,
                        c: src[0],
                    },
                )
            }
            Op::Flatten => {
                // Channels-first activations are already in Flatten's order.
                value_of[i] = Some(input(0)?);
                continue;
            }
        };
        let out = step.output();
        for v in value_of.iter_mut().take(last + 1).skip(i) {
            *v = Some(out);
        }
        steps.push(step);
    }
    let output = value_of[n - 1].context("the graph's output has no value")?;
    mark_sign_inputs(&mut steps);
    let lut = card.normalization.lookup_tables();
    Ok(Program {
        name: g.name.clone(),
        values,
        steps,
        output,
        input: g.input_shape(),
        classes: g.classes(),
        lut,
        macs: g.macs().map_err(|e| anyhow::anyhow!(e))?,
    })
}

/// Flags the matrix layers whose input is written by a step that ends in
/// Sign (so holds ±1 only).
fn mark_sign_inputs(steps: &mut [Step]) {
    let signed: Vec<usize> = steps
        .iter()
        .filter(|s| {
            let act = match s {
                Step::Mat { layer, .. } => layer.act,
                Step::Add { act, .. } | Step::Affine { act, .. } | Step::Activation { act, .. } => {
                    *act
                }
                _ => Act::None,
            };
            act == Act::Sign
        })
        .map(Step::output)
        .collect();
    for s in steps {
        if let Step::Mat { layer, input, .. } = s {
            layer.sign_input = signed.contains(input);
        }
    }
}

/// The matrix layer of conv/linear node `i` (f32, nothing folded yet).
fn mat_layer(card: &Card, i: usize, shapes: &[Vec<usize>]) -> anyhow::Result<MatLayer> {
    let node = &card.model.graph.nodes[i];
    let params = &card.model.params[i];
    let wt = params
        .iter()
        .find(|t| t.kind == ParamKind::Weight)
        .with_context(|| format!("layer '{}': missing weight", node.name))?;
    let eff = wt.effective();
    let card_binary = matches!(wt.state, WeightState::Binary { .. });
    // Binary weights ignore their precision tag (see `ParamTensor`).
    let card_int8 = match &wt.precision {
        Precision::Int8 { scales } if !card_binary => Some(scales.clone()),
        _ => None,
    };
    let (geom, weight, op) = match &node.op {
        Op::Conv2d(c) => {
            if c.groups != 1 {
                bail!(
                    "layer '{}': grouped convolution (groups {}) is not supported by the compiler yet",
                    node.name,
                    c.groups
                );
            }
            let src = &shapes[node.inputs[0]];
            let out = &shapes[i];
            let geom = Geom {
                ih: src[1],
                iw: src[2],
                ic: c.in_channels,
                oh: out[1],
                ow: out[2],
                oc: c.out_channels,
                kh: c.kernel.0,
                kw: c.kernel.1,
                sh: c.stride.0,
                sw: c.stride.1,
                ph: c.padding.0,
                pw: c.padding.1,
            };
            // [oc][ic][kh][kw] → [oc][kh][kw][ic]
            let (ic, kh, kw) = (geom.ic, geom.kh, geom.kw);
            let mut w = vec![0f32; eff.len()];
            for o in 0..geom.oc {
                for ci in 0..ic {
                    for y in 0..kh {
                        for x in 0..kw {
                            w[((o * kh + y) * kw + x) * ic + ci] =
                                eff[((o * ic + ci) * kh + y) * kw + x];
                        }
                    }
                }
            }
            (geom, w, "Conv2d")
        }
        Op::Linear(l) => {
            let geom = Geom {
                ih: 1,
                iw: 1,
                ic: l.in_features,
                oh: 1,
                ow: 1,
                oc: l.out_features,
                kh: 1,
                kw: 1,
                sh: 1,
                sw: 1,
                ph: 0,
                pw: 0,
            };
            (geom, eff.into_owned(), "Linear")
        }
        _ => bail!("layer '{}' is not a conv or linear layer", node.name),
    };
    let bias = params
        .iter()
        .find(|t| t.kind == ParamKind::Bias)
        .map_or_else(|| vec![0.0; geom.oc], |t| t.data.clone());
    let packed = PackedWeights {
        packed: pack::Packed::F32(weight.clone()),
        mult: None,
    };
    Ok(MatLayer {
        name: node.name.clone(),
        op,
        geom,
        weight,
        bias,
        act: Act::None,
        card_binary,
        sign_input: false,
        card_int8,
        packed,
    })
}

/// `--format`: one format for every layer or the cost model's choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatChoice {
    Auto,
    Force(Format),
}

/// Zero fraction from which sparse pays off (XNNPACK's threshold).
pub const SPARSE_MIN_ZEROS: f64 = 2.0 / 3.0;

/// The cost model's format for a layer: binary for binarized layers (xnor
/// on Sign inputs where `xnor` allows it), sparse from 2/3 zeros on
/// (sparse8 where the card is int8: its values exactly, in a quarter of the
/// value bytes), f32 otherwise.
pub fn auto_format(layer: &MatLayer, xnor: bool) -> Format {
    if xnor && layer.card_binary && layer.supports(Format::Xnor) {
        Format::Xnor
    } else if layer.card_binary && layer.supports(Format::Binary) {
        Format::Binary
    } else if layer.zero_fraction() >= SPARSE_MIN_ZEROS {
        if layer.card_int8.is_some() {
            Format::Sparse8
        } else {
            Format::Sparse
        }
    } else {
        Format::F32
    }
}

/// Whether the `--max-flash` loop may repack `layer` in `to`: Rice for
/// binary layers, sparse8 for sparse ones (their values quantized before
/// any dense layer's), int8 for any layer.
fn shrinks_to(layer: &MatLayer, to: Format) -> bool {
    let from = layer.packed.packed.format();
    from != to
        && layer.supports(to)
        && match to {
            Format::Rice => layer.card_binary,
            Format::Sparse8 => from == Format::Sparse,
            _ => true,
        }
}

/// Packs every matrix layer: forced formats (binary only where the layer
/// is binary; other layers then fall back to the auto choice, said on
/// stderr), or the cost model's choice (`xnor`: whether it may pick xnor).
/// With `max_flash` and `auto`, the layers are shrunk until the weights
/// fit (see [`shrinks_to`]).
pub fn choose_formats(
    program: &mut Program,
    choice: FormatChoice,
    max_flash: Option<u64>,
    fixed_bytes: u64,
    xnor: bool,
) -> anyhow::Result<()> {
    for layer in program.mat_layers_mut() {
        let f = match choice {
            FormatChoice::Force(f) if layer.supports(f) => f,
            FormatChoice::Force(f) => {
                let why = if f == Format::Xnor && layer.supports(Format::Binary) {
                    "input is not a Sign output"
                } else {
                    "not binary"
                };
                eprintln!(
                    "layer '{}': {why}, kept as {} (--format {})",
                    layer.name,
                    auto_format(layer, xnor).name(),
                    f.name()
                );
                auto_format(layer, xnor)
            }
            FormatChoice::Auto => auto_format(layer, xnor),
        };
        layer.packed = layer.pack(f)?;
    }
    let Some(budget) = max_flash else {
        return Ok(());
    };
    let total = |p: &Program| fixed_bytes + p.mat_layers().map(|l| l.bytes() as u64).sum::<u64>();
    if choice == FormatChoice::Auto {
        // Greedy, lossless first: Rice-code the binary layer that shrinks
        // most, then quantize the sparse layer sparse8 shrinks most, then
        // the layer int8 shrinks most, until it fits.
        'shrink: while total(program) > budget {
            for to in [Format::Rice, Format::Sparse8, Format::Int8] {
                let best = program
                    .mat_layers_mut()
                    .filter(|l| shrinks_to(l, to))
                    .filter_map(|l| {
                        let q = l.pack(to).ok()?;
                        let saved = l.packed.packed.bytes() as i64 - q.packed.bytes() as i64;
                        (saved > 0).then_some((saved, l, q))
                    })
                    .max_by_key(|(s, _, _)| *s);
                if let Some((_, l, q)) = best {
                    l.packed = q;
                    continue 'shrink;
                }
            }
            break;
        }
    }
    let t = total(program);
    if t > budget {
        bail!(
            "--max-flash {budget}: the model needs {t} bytes of flash even with {} formats",
            if choice == FormatChoice::Auto {
                "the smallest"
            } else {
                "the chosen"
            }
        );
    }
    Ok(())
}
