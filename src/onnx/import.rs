//! ONNX → card: maps the supported operators onto the IR and refuses
//! anything else by op type and node name. Files come from other tools and
//! are untrusted: sizes are bounded, nothing panics, errors are one line.

use super::ImportOptions;
use super::meta;
use super::tensors::{Attrs, Const, read_tensor, size};
use crate::card::{Card, Provenance};
use crate::data::Normalization;
use crate::ir::{BatchNorm, Conv2d, Graph, Linear, Node, Op, ParamKind, Pool, Shape};
use crate::model::{Model, ParamTensor, WeightState};
use anyhow::{Context, anyhow, bail, ensure};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb;

/// Largest ONNX file read (protobuf's own limit is 2 GiB).
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// An imported card and the notes worth telling the user (defaults used).
#[derive(Debug)]
pub struct Imported {
    pub card: Card,
    pub notes: Vec<String>,
}

/// Reads and maps an ONNX file; errors name the file.
pub fn import_path(path: &Path, opts: &ImportOptions) -> anyhow::Result<Imported> {
    let file = path.display().to_string();
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {file}"))?
        .len();
    ensure!(
        len <= MAX_FILE_BYTES,
        "{file}: {len} bytes is larger than the {MAX_FILE_BYTES}-byte limit for ONNX files"
    );
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {file}"))?;
    let proto = pb::ModelProto::decode(bytes.as_slice())
        .map_err(|e| anyhow!("{file}: not an ONNX model (protobuf: {e})"))?;
    let fallback_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "imported".into());
    import_proto(&proto, opts, &fallback_name, &file).with_context(|| file.clone())
}

/// Maps a decoded model. `name` names the graph when the file does not;
/// `source` goes into the provenance notes.
pub fn import_proto(
    proto: &pb::ModelProto,
    opts: &ImportOptions,
    name: &str,
    source: &str,
) -> anyhow::Result<Imported> {
    let graph = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the model has no graph (empty or not an ONNX model)"))?;
    let opset = proto
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| anyhow!("no ai.onnx opset import (empty or not an ONNX model)"))?;
    ensure!(
        opset >= 7,
        "opset {opset} is too old (7 or newer supported)"
    );
    let mut m = Mapper::new(graph, opset)?;
    for node in &graph.node {
        m.node(node).with_context(|| {
            format!(
                "node '{}' ({})",
                if node.name.is_empty() {
                    node.output.first().map_or("", |s| s.as_str())
                } else {
                    node.name.as_str()
                },
                node.op_type
            )
        })?;
    }
    let gname = if graph.name.is_empty() || graph.name == "main_graph" || graph.name == "torch_jit"
    {
        name.to_string()
    } else {
        graph.name.clone()
    };
    let model = m.finish(graph, gname)?;

    let mut notes = Vec::new();
    let restored = meta::read(&proto.metadata_props);
    for p in &restored.problems {
        notes.push(format!("ignored unreadable metadata {p}"));
    }
    let [channels, _, _] = model.graph.input_shape();
    let classes = model.graph.classes();
    let normalization = match (&opts.mean, &opts.std) {
        (Some(mean), Some(std)) => Normalization {
            mean: mean.clone(),
            std: std.clone(),
        },
        (None, None) => match restored.normalization {
            Some(n) => n,
            None if channels == 3 => {
                notes.push(
                    "no normalization in the file or flags: using CIFAR-10's mean/std (set --mean/--std)"
                        .into(),
                );
                Normalization::cifar10()
            }
            None => {
                notes.push(format!(
                    "no normalization in the file or flags: using mean 0, std 1 for {channels} channels (set --mean/--std)"
                ));
                Normalization::identity(channels)
            }
        },
        _ => bail!("--mean and --std go together"),
    };
    ensure!(
        normalization.mean.len() == channels && normalization.std.len() == channels,
        "normalization has {} means and {} stds but the model takes {channels} input channels",
        normalization.mean.len(),
        normalization.std.len()
    );
    let class_names = match opts.classes.clone().or(restored.classes) {
        Some(c) => {
            ensure!(
                c.len() == classes,
                "{} class names given for a model with {classes} outputs",
                c.len()
            );
            c
        }
        None => (0..classes).map(|i| format!("class_{i}")).collect(),
    };
    let import_note = format!(
        "imported from {source} (producer '{} {}', opset {opset})",
        proto.producer_name, proto.producer_version
    );
    let provenance = match restored.provenance {
        Some(mut p) => {
            p.notes.push(import_note);
            p
        }
        None => {
            let mut p = Provenance {
                method: "import".into(),
                arch: model.graph.name.clone(),
                notes: vec![import_note],
                ..Provenance::default()
            };
            p.stamp();
            p
        }
    };
    let mut card = Card::new(model, normalization, class_names);
    card.provenance = provenance;
    card.validate()
        .map_err(|e| anyhow!("imported card is invalid: {e}"))?;
    Ok(Imported { card, notes })
}

/// An activation: an IR node and the per-sample ONNX shape it has there.
/// The data layout always agrees (row-major, C first); the ONNX shape may
/// keep unit dimensions the IR drops (`GlobalAveragePool`'s `[C, 1, 1]`).
#[derive(Clone, Debug)]
struct Act {
    node: usize,
    shape: Vec<usize>,
}

#[derive(Clone, Debug)]
enum Value {
    Const(Const),
    Act(Act),
}

/// The IR under construction.
struct Mapper<'a> {
    opset: i64,
    nodes: Vec<Node>,
    params: Vec<Vec<ParamTensor>>,
    shapes: Vec<Shape>,
    values: HashMap<String, Value>,
    /// How many node inputs / graph outputs read each tensor.
    readers: HashMap<String, usize>,
    /// Initializers, decoded on first use (unused ones cost nothing).
    initializers: HashMap<&'a str, &'a pb::TensorProto>,
    /// The ONNX tensor names that hold each IR node's output.
    aliases: HashMap<usize, Vec<String>>,
    used_names: std::collections::HashSet<String>,
}

fn dense(kind: ParamKind, shape: Vec<usize>, data: Vec<f32>) -> ParamTensor {
    ParamTensor {
        kind,
        shape,
        data,
        state: WeightState::Dense,
        precision: crate::model::Precision::F32,
    }
}

impl<'a> Mapper<'a> {
    fn new(graph: &'a pb::GraphProto, opset: i64) -> anyhow::Result<Mapper<'a>> {
        let initializers: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &graph.node {
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                *readers.entry(i.clone()).or_default() += 1;
            }
        }
        for o in &graph.output {
            *readers.entry(o.name.clone()).or_default() += 1;
        }
        let mut m = Mapper {
            opset,
            nodes: Vec::new(),
            params: Vec::new(),
            shapes: Vec::new(),
            values: HashMap::new(),
            readers,
            initializers,
            aliases: HashMap::new(),
            used_names: Default::default(),
        };
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !m.initializers.contains_key(i.name.as_str()))
            .collect();
        let input = match inputs.as_slice() {
            [one] => *one,
            [] => bail!("the graph has no input"),
            many => bail!(
                "the graph has {} inputs ({}); one image input is supported",
                many.len(),
                many.iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let [c, h, w] = input_dims(input)?;
        let op = Op::Input {
            channels: c,
            height: h,
            width: w,
        };
        let id = m.push(&input.name, op, vec![], vec![])?;
        m.bind(
            &input.name,
            Value::Act(Act {
                node: id,
                shape: vec![c, h, w],
            }),
        );
        Ok(m)
    }

    /// Adds an IR node (shape-checked) and returns its index.
    fn push(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<usize>,
        params: Vec<ParamTensor>,
    ) -> anyhow::Result<usize> {
        let ins: Vec<&Shape> = inputs.iter().map(|&i| &self.shapes[i]).collect();
        let shape = op.output_shape(&ins).map_err(|e| anyhow!("{e}"))?;
        let too_big = shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))
            .is_none_or(|n| n > crate::ir::graph::MAX_ELEMENTS);
        ensure!(!too_big, "output {shape:?} is too large");
        let base = if name.is_empty() { "node" } else { name };
        let mut unique = base.to_string();
        let mut k = 1;
        while !self.used_names.insert(unique.clone()) {
            unique = format!("{base}_{k}");
            k += 1;
        }
        self.nodes.push(Node {
            name: unique,
            op,
            inputs,
        });
        self.params.push(params);
        self.shapes.push(shape);
        Ok(self.nodes.len() - 1)
    }

    /// The value of a node input; `None` for an absent optional input.
    fn value(&mut self, name: &str) -> anyhow::Result<Option<Value>> {
        if name.is_empty() {
            return Ok(None);
        }
        if let Some(v) = self.values.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(t) = self.initializers.get(name) {
            let c = read_tensor(t).with_context(|| format!("initializer '{name}'"))?;
            self.values
                .insert(name.to_string(), Value::Const(c.clone()));
            return Ok(Some(Value::Const(c)));
        }
        bail!("reads '{name}', which no earlier node or initializer produces")
    }

    fn act(&mut self, node: &pb::NodeProto, k: usize) -> anyhow::Result<Act> {
        match self.value(node.input.get(k).map_or("", |s| s.as_str()))? {
            Some(Value::Act(a)) => Ok(a),
            Some(Value::Const(_)) => {
                bail!("input {k} is a constant; only activations are supported there")
            }
            None => bail!("input {k} is missing"),
        }
    }

    fn konst(&mut self, node: &pb::NodeProto, k: usize) -> anyhow::Result<Option<Const>> {
        match self.value(node.input.get(k).map_or("", |s| s.as_str()))? {
            Some(Value::Const(c)) => Ok(Some(c)),
            Some(Value::Act(_)) => {
                bail!(
                    "input {k} is computed at run time; only constant weights are supported there"
                )
            }
            None => Ok(None),
        }
    }

    fn need_konst(&mut self, node: &pb::NodeProto, k: usize, what: &str) -> anyhow::Result<Const> {
        self.konst(node, k)?
            .ok_or_else(|| anyhow!("input {k} ({what}) is missing"))
    }

    /// An activation in image layout `[C, H, W]` (IR and ONNX agree).
    fn image(&mut self, node: &pb::NodeProto) -> anyhow::Result<Act> {
        let a = self.act(node, 0)?;
        ensure!(
            a.shape.len() == 3 && self.shapes[a.node] == a.shape,
            "needs an image input [N, C, H, W], got per-sample shape {:?}",
            a.shape
        );
        Ok(a)
    }

    fn set_output(&mut self, node: &pb::NodeProto, v: Value) -> anyhow::Result<()> {
        let out = node
            .output
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| anyhow!("has no output"))?
            .clone();
        self.bind(&out, v);
        Ok(())
    }

    /// Names a value (and remembers which names hold each IR node).
    fn bind(&mut self, name: &str, v: Value) {
        if let Value::Act(a) = &v {
            self.aliases
                .entry(a.node)
                .or_default()
                .push(name.to_string());
        }
        self.values.insert(name.to_string(), v);
    }

    fn out_act(
        &mut self,
        node: &pb::NodeProto,
        id: usize,
        shape: Vec<usize>,
    ) -> anyhow::Result<()> {
        self.set_output(node, Value::Act(Act { node: id, shape }))
    }

    fn label(node: &pb::NodeProto) -> &str {
        if node.name.is_empty() {
            node.output.first().map_or("", |s| s.as_str())
        } else {
            &node.name
        }
    }

    /// Maps one ONNX node.
    fn node(&mut self, node: &pb::NodeProto) -> anyhow::Result<()> {
        ensure!(
            node.domain.is_empty() || node.domain == "ai.onnx",
            "operator domain '{}' is not supported",
            node.domain
        );
        let at = Attrs(&node.attribute);
        let name = Self::label(node).to_string();
        match node.op_type.as_str() {
            "Constant" => {
                let c = at.constant_value()?;
                self.set_output(node, Value::Const(c))
            }
            "Identity" | "Dropout" => {
                let v = self
                    .value(node.input.first().map_or("", |s| s.as_str()))?
                    .ok_or_else(|| anyhow!("input 0 is missing"))?;
                self.set_output(node, v)
            }
            "Conv" => self.conv(node, &at, &name),
            "BatchNormalization" => self.batchnorm(node, &at, &name),
            "Relu" => self.unary(node, Op::Relu, &name),
            // ONNX's Sign is 0 at exactly 0 where cardc's is +1; the two
            // agree everywhere else.
            "Sign" => self.unary(node, Op::Sign, &name),
            "Clip" => self.clip(node, &at, &name),
            "MaxPool" | "AveragePool" => self.pool(node, &at, &name),
            "GlobalAveragePool" => {
                let x = self.image(node)?;
                let c = x.shape[0];
                let id = self.push(&name, Op::GlobalAvgPool, vec![x.node], vec![])?;
                self.out_act(node, id, vec![c, 1, 1])
            }
            "Add" => self.add(node, &name),
            "Gemm" => self.gemm(node, &at, &name),
            "MatMul" => self.matmul(node, &name),
            "Flatten" => {
                let x = self.act(node, 0)?;
                let rank = x.shape.len() as i64 + 1;
                let axis = at.int("axis").unwrap_or(1);
                let axis = if axis < 0 { axis + rank } else { axis };
                ensure!(
                    axis == 1,
                    "Flatten axis {axis} is not supported (only 1: keep the batch)"
                );
                self.flatten(node, x, &name)
            }
            "Reshape" => {
                let x = self.act(node, 0)?;
                let target = self.need_konst(node, 1, "shape")?;
                let t = target.ints()?;
                let f: usize = x.shape.iter().product();
                let is_flatten = match t {
                    [b, rest] => {
                        (*b == 0 || *b == -1 || *b > 0)
                            && (*rest == f as i64 || (*rest == -1 && *b != -1))
                    }
                    _ => false,
                };
                ensure!(
                    is_flatten,
                    "Reshape to {t:?} is not a flatten to [N, {f}] (the only Reshape supported)"
                );
                self.flatten(node, x, &name)
            }
            other => bail!(
                "operator {other} is not supported (supported: Conv, BatchNormalization, Relu, Clip as ReLU6, Sign, MaxPool, AveragePool, GlobalAveragePool, Add, Gemm, MatMul, Flatten, Reshape as flatten, Identity, Dropout, Constant)"
            ),
        }
    }

    fn unary(&mut self, node: &pb::NodeProto, op: Op, name: &str) -> anyhow::Result<()> {
        let x = self.act(node, 0)?;
        let id = self.push(name, op, vec![x.node], vec![])?;
        self.out_act(node, id, x.shape)
    }

    fn flatten(&mut self, node: &pb::NodeProto, x: Act, name: &str) -> anyhow::Result<()> {
        let f: usize = x.shape.iter().product();
        if self.shapes[x.node].len() == 1 {
            // Already a vector in the IR (e.g. after GlobalAvgPool).
            return self.out_act(node, x.node, vec![f]);
        }
        let id = self.push(name, Op::Flatten, vec![x.node], vec![])?;
        self.out_act(node, id, vec![f])
    }

    /// Symmetric 2-D padding from `pads` / `auto_pad`.
    fn pads(
        at: &Attrs,
        kernel: (usize, usize),
        stride: (usize, usize),
    ) -> anyhow::Result<(usize, usize)> {
        let auto = at.string("auto_pad").unwrap_or_default();
        match auto.as_str() {
            "" | "NOTSET" => {}
            "VALID" => return Ok((0, 0)),
            "SAME_UPPER" | "SAME_LOWER" => {
                // Symmetric only for stride 1 and odd kernels.
                ensure!(
                    stride == (1, 1) && kernel.0 % 2 == 1 && kernel.1 % 2 == 1,
                    "auto_pad {auto} with kernel {kernel:?} stride {stride:?} pads unevenly (not supported)"
                );
                return Ok((kernel.0 / 2, kernel.1 / 2));
            }
            other => bail!("auto_pad '{other}' is not supported"),
        }
        match at.ints("pads") {
            None => Ok((0, 0)),
            Some([t, l, b, r]) => {
                ensure!(
                    t == b && l == r,
                    "asymmetric pads {:?} are not supported",
                    [t, l, b, r]
                );
                Ok((size(*t, "pad")?, size(*l, "pad")?))
            }
            Some(p) => bail!("pads {p:?}: expected 4 values for a 2-D op"),
        }
    }

    fn pair(at: &Attrs, name: &str, default: usize) -> anyhow::Result<(usize, usize)> {
        match at.ints(name) {
            None => Ok((default, default)),
            Some([a, b]) => Ok((size(*a, name)?, size(*b, name)?)),
            Some(v) => bail!("{name} {v:?}: expected 2 values for a 2-D op"),
        }
    }

    fn no_dilation(at: &Attrs) -> anyhow::Result<()> {
        if let Some(d) = at.ints("dilations") {
            ensure!(
                d.iter().all(|&v| v == 1),
                "dilations {d:?} are not supported (only 1)"
            );
        }
        Ok(())
    }

    fn conv(&mut self, node: &pb::NodeProto, at: &Attrs, name: &str) -> anyhow::Result<()> {
        let x = self.image(node)?;
        let w = self.need_konst(node, 1, "weight")?;
        let bias = self.konst(node, 2)?;
        let [o, ig, kh, kw] = w.dims[..] else {
            bail!(
                "weight has shape {:?}; a 2-D conv needs [O, I/groups, kH, kW]",
                w.dims
            );
        };
        Self::no_dilation(at)?;
        let groups = size(at.int("group").unwrap_or(1), "group")?;
        if let Some(k) = at.ints("kernel_shape") {
            ensure!(
                k == [kh as i64, kw as i64],
                "kernel_shape {k:?} disagrees with the weight's {:?}",
                [kh, kw]
            );
        }
        let stride = Self::pair(at, "strides", 1)?;
        let padding = Self::pads(at, (kh, kw), stride)?;
        ensure!(
            groups > 0 && ig.checked_mul(groups) == Some(x.shape[0]),
            "weight {:?} with {groups} group(s) does not fit {} input channels",
            w.dims,
            x.shape[0]
        );
        let mut params = vec![dense(ParamKind::Weight, w.dims.clone(), w.floats())];
        if let Some(b) = &bias {
            ensure!(
                b.len() == o,
                "bias has {} values for {o} output channels",
                b.len()
            );
            params.push(dense(ParamKind::Bias, vec![o], b.floats()));
        }
        let op = Op::Conv2d(Conv2d {
            in_channels: x.shape[0],
            out_channels: o,
            kernel: (kh, kw),
            stride,
            padding,
            groups,
            bias: bias.is_some(),
        });
        let id = self.push(name, op, vec![x.node], params)?;
        let shape = self.shapes[id].clone();
        self.out_act(node, id, shape)
    }

    fn batchnorm(&mut self, node: &pb::NodeProto, at: &Attrs, name: &str) -> anyhow::Result<()> {
        let x = self.act(node, 0)?;
        ensure!(
            at.int("training_mode").unwrap_or(0) == 0,
            "training_mode=1 is not supported (export the model in eval mode)"
        );
        ensure!(
            at.int("spatial").unwrap_or(1) == 1,
            "spatial=0 is not supported"
        );
        let c = *x
            .shape
            .first()
            .ok_or_else(|| anyhow!("input has no channel dimension"))?;
        let mut get = |k: usize, what: &str| -> anyhow::Result<Vec<f32>> {
            let t = self.need_konst(node, k, what)?;
            ensure!(
                t.len() == c,
                "{what} has {} values for {c} channels",
                t.len()
            );
            Ok(t.floats())
        };
        let gamma = get(1, "scale")?;
        let beta = get(2, "bias")?;
        let mean = get(3, "mean")?;
        let var = get(4, "var")?;
        let eps = at.float("epsilon").unwrap_or(1e-5);
        ensure!(
            eps.is_finite() && eps >= 0.0,
            "epsilon {eps} is not a finite non-negative number"
        );
        // ONNX's momentum weighs the old running value; the IR's the new
        // one. Rounded to 6 decimals so that 0.1 survives 1 - (1 - 0.1) in
        // f32 (it only matters for further training).
        let momentum = ((1.0 - at.float("momentum").unwrap_or(0.9) as f64) * 1e6).round() / 1e6;
        let momentum = momentum as f32;
        let op = Op::BatchNorm(BatchNorm {
            channels: c,
            affine: true,
            eps,
            momentum: if momentum.is_finite() {
                momentum.clamp(0.0, 1.0)
            } else {
                0.1
            },
        });
        let params = vec![
            dense(ParamKind::Gamma, vec![c], gamma),
            dense(ParamKind::Beta, vec![c], beta),
            dense(ParamKind::RunningMean, vec![c], mean),
            dense(ParamKind::RunningVar, vec![c], var),
        ];
        let id = self.push(name, op, vec![x.node], params)?;
        self.out_act(node, id, x.shape)
    }

    fn clip(&mut self, node: &pb::NodeProto, at: &Attrs, name: &str) -> anyhow::Result<()> {
        // Opset 11 moved min/max from attributes to inputs.
        let bound = |m: &mut Self, k: usize, attr: &str, default: f32| -> anyhow::Result<f32> {
            if m.opset < 11 {
                return Ok(at.float(attr).unwrap_or(default));
            }
            match m.konst(node, k)? {
                Some(c) => c.scalar().with_context(|| format!("Clip {attr}")),
                None => Ok(default),
            }
        };
        let lo = bound(self, 1, "min", f32::NEG_INFINITY)?;
        let hi = bound(self, 2, "max", f32::INFINITY)?;
        let op = if lo == 0.0 && hi == 6.0 {
            Op::Relu6
        } else if lo == 0.0 && hi == f32::INFINITY {
            Op::Relu
        } else {
            bail!(
                "Clip to [{lo}, {hi}] is not supported (only [0, 6] as ReLU6 and [0, inf) as ReLU)"
            )
        };
        self.unary(node, op, name)
    }

    fn pool(&mut self, node: &pb::NodeProto, at: &Attrs, name: &str) -> anyhow::Result<()> {
        let x = self.image(node)?;
        let max = node.op_type == "MaxPool";
        Self::no_dilation(at)?;
        let kernel = match at.ints("kernel_shape") {
            Some([a, b]) => (size(*a, "kernel")?, size(*b, "kernel")?),
            Some(k) => bail!("kernel_shape {k:?}: expected 2 values"),
            None => bail!("kernel_shape is missing"),
        };
        let stride = Self::pair(at, "strides", 1)?;
        let padding = Self::pads(at, kernel, stride)?;
        ensure!(
            node.output
                .iter()
                .skip(1)
                .all(|o| o.is_empty() || !self.readers.contains_key(o)),
            "the Indices output is not supported"
        );
        if !max && padding != (0, 0) {
            ensure!(
                at.int("count_include_pad").unwrap_or(0) == 1,
                "count_include_pad=0 with padding {padding:?} is not supported (the IR averages over the whole window)"
            );
        }
        let p = Pool {
            kernel,
            stride,
            padding,
        };
        let op = if max { Op::MaxPool(p) } else { Op::AvgPool(p) };
        let id = self.push(name, op, vec![x.node], vec![])?;
        let shape = self.shapes[id].clone();
        if at.int("ceil_mode").unwrap_or(0) == 1 {
            // Accept only when rounding up changes nothing.
            let (h, w) = (x.shape[1], x.shape[2]);
            let ceil = |l: usize, k: usize, s: usize, p: usize| {
                (l + 2 * p).saturating_sub(k).div_ceil(s.max(1)) + 1
            };
            ensure!(
                ceil(h, kernel.0, stride.0, padding.0) == shape[1]
                    && ceil(w, kernel.1, stride.1, padding.1) == shape[2],
                "ceil_mode=1 changes the output size here (not supported)"
            );
        }
        self.out_act(node, id, shape)
    }

    fn add(&mut self, node: &pb::NodeProto, name: &str) -> anyhow::Result<()> {
        let a = self.value(node.input.first().map_or("", |s| s.as_str()))?;
        let b = self.value(node.input.get(1).map_or("", |s| s.as_str()))?;
        match (a, b) {
            (Some(Value::Act(a)), Some(Value::Act(b))) => {
                ensure!(
                    a.shape == b.shape && self.shapes[a.node] == self.shapes[b.node],
                    "adds shapes {:?} and {:?}; only equal shapes are supported",
                    a.shape,
                    b.shape
                );
                let id = self.push(name, Op::Add, vec![a.node, b.node], vec![])?;
                self.out_act(node, id, a.shape)
            }
            (Some(Value::Act(x)), Some(Value::Const(c)))
            | (Some(Value::Const(c)), Some(Value::Act(x))) => {
                self.fuse_bias(&x, &c)?;
                self.set_output(node, Value::Act(x))
            }
            _ => bail!("adds constants only; constant folding is not supported"),
        }
    }

    /// Folds `x + c` into the bias of the conv/linear that produced `x`
    /// (a MatMul + Add pair, or a bias-less conv followed by an Add).
    fn fuse_bias(&mut self, x: &Act, c: &Const) -> anyhow::Result<()> {
        // Changing the bias is only sound when this Add is the one reader.
        let names = self.aliases.get(&x.node).cloned().unwrap_or_default();
        let readers: usize = names
            .iter()
            .map(|n| self.readers.get(n).copied().unwrap_or(0))
            .sum();
        ensure!(
            readers <= 1 && !self.nodes.iter().any(|n| n.inputs.contains(&x.node)),
            "adds a constant to '{}', which other nodes also read (only a bias after a MatMul/Gemm/Conv is supported)",
            names.first().map_or("", |s| s.as_str())
        );
        let out_ch = match &self.nodes[x.node].op {
            Op::Linear(l) => l.out_features,
            Op::Conv2d(cv) => cv.out_channels,
            _ => bail!(
                "adds a constant to a {} output (only a bias after a MatMul/Gemm/Conv is supported)",
                self.nodes[x.node].op.kind_name()
            ),
        };
        // The constant must broadcast per output channel: [K], [1, K],
        // [K, 1, 1], [1, K, 1, 1] or a scalar.
        let nontrivial: Vec<usize> = c.dims.iter().copied().filter(|&d| d != 1).collect();
        let vals = c.floats();
        let bias = match (nontrivial.as_slice(), &self.nodes[x.node].op) {
            ([], _) if vals.len() == 1 => vec![vals[0]; out_ch],
            ([k], Op::Linear(_)) if *k == out_ch && c.dims.last() == Some(k) => vals,
            ([k], Op::Conv2d(_))
                if *k == out_ch && c.dims.len() >= 3 && c.dims[c.dims.len() - 3] == *k =>
            {
                vals
            }
            _ => bail!(
                "adds a constant of shape {:?}, not a per-channel bias for {out_ch} channels",
                c.dims
            ),
        };
        let node = &mut self.nodes[x.node];
        let ps = &mut self.params[x.node];
        match ps.iter_mut().find(|t| t.kind == ParamKind::Bias) {
            Some(t) => t.data.iter_mut().zip(&bias).for_each(|(a, b)| *a += b),
            None => {
                ps.push(dense(ParamKind::Bias, vec![out_ch], bias));
                match &mut node.op {
                    Op::Linear(l) => l.bias = true,
                    Op::Conv2d(cv) => cv.bias = true,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// A vector activation `[F]` (rank 1 in both ONNX and the IR).
    fn vector(&mut self, node: &pb::NodeProto) -> anyhow::Result<Act> {
        let a = self.act(node, 0)?;
        ensure!(
            a.shape.len() == 1 && self.shapes[a.node].len() == 1,
            "needs a [N, F] input, got per-sample shape {:?} (flatten first)",
            a.shape
        );
        Ok(a)
    }

    fn linear(
        &mut self,
        node: &pb::NodeProto,
        name: &str,
        x: Act,
        w: Vec<f32>,
        (fin, fout): (usize, usize),
        bias: Option<Vec<f32>>,
    ) -> anyhow::Result<()> {
        ensure!(
            fin == x.shape[0],
            "weight takes {fin} features but the input has {}",
            x.shape[0]
        );
        let mut params = vec![dense(ParamKind::Weight, vec![fout, fin], w)];
        let has_bias = bias.is_some();
        if let Some(b) = bias {
            params.push(dense(ParamKind::Bias, vec![fout], b));
        }
        let op = Op::Linear(Linear {
            in_features: fin,
            out_features: fout,
            bias: has_bias,
        });
        let id = self.push(name, op, vec![x.node], params)?;
        self.out_act(node, id, vec![fout])
    }

    fn gemm(&mut self, node: &pb::NodeProto, at: &Attrs, name: &str) -> anyhow::Result<()> {
        let x = self.vector(node)?;
        ensure!(
            at.int("transA").unwrap_or(0) == 0,
            "transA=1 is not supported"
        );
        let b = self.need_konst(node, 1, "B")?;
        let c = self.konst(node, 2)?;
        let [r, k] = b.dims[..] else {
            bail!("B has shape {:?}, expected a matrix", b.dims);
        };
        let alpha = at.float("alpha").unwrap_or(1.0);
        let beta = at.float("beta").unwrap_or(1.0);
        let trans_b = at.int("transB").unwrap_or(0) != 0;
        let vals = b.floats();
        // IR weights are [out, in].
        let (fout, fin) = if trans_b { (r, k) } else { (k, r) };
        let w: Vec<f32> = if trans_b {
            vals.iter().map(|v| v * alpha).collect()
        } else {
            transpose(&vals, r, k)
                .into_iter()
                .map(|v| v * alpha)
                .collect()
        };
        let bias = match c {
            None => None,
            Some(c) => {
                let v = c.floats();
                let ok_shape = c.dims.iter().filter(|&&d| d != 1).count() <= 1;
                let full = match v.len() {
                    1 => vec![v[0] * beta; fout],
                    n if n == fout && ok_shape && c.dims.last() == Some(&fout) => {
                        v.iter().map(|x| x * beta).collect()
                    }
                    _ => bail!("C of shape {:?} is not a bias for {fout} outputs", c.dims),
                };
                Some(full)
            }
        };
        self.linear(node, name, x, w, (fin, fout), bias)
    }

    fn matmul(&mut self, node: &pb::NodeProto, name: &str) -> anyhow::Result<()> {
        let x = self.vector(node)?;
        let b = self.need_konst(node, 1, "B")?;
        let [fin, fout] = b.dims[..] else {
            bail!("B has shape {:?}, expected a matrix", b.dims);
        };
        let w = transpose(&b.floats(), fin, fout);
        self.linear(node, name, x, w, (fin, fout), None)
    }

    /// The model: the nodes the output depends on, in order, output last.
    fn finish(self, graph: &pb::GraphProto, name: String) -> anyhow::Result<Model> {
        let out = match graph.output.as_slice() {
            [one] => one,
            [] => bail!("the graph has no output"),
            many => bail!(
                "the graph has {} outputs; one (the logits) is supported",
                many.len()
            ),
        };
        let act = match self.values.get(&out.name) {
            Some(Value::Act(a)) => a.clone(),
            Some(Value::Const(_)) => bail!("output '{}' is a constant", out.name),
            None => bail!("output '{}' is produced by no node", out.name),
        };
        ensure!(
            act.shape.len() == 1,
            "output '{}' has per-sample shape {:?}; logits [N, K] are expected",
            out.name,
            act.shape
        );
        let mut keep = vec![false; self.nodes.len()];
        keep[act.node] = true;
        for i in (0..=act.node).rev() {
            if keep[i] {
                for &j in &self.nodes[i].inputs {
                    keep[j] = true;
                }
            }
        }
        ensure!(
            keep[0],
            "output '{}' does not depend on the input",
            out.name
        );
        let mut index = vec![usize::MAX; self.nodes.len()];
        let mut nodes = Vec::new();
        let mut params = Vec::new();
        for (i, (mut n, p)) in self
            .nodes
            .into_iter()
            .zip(self.params)
            .enumerate()
            .take(act.node + 1)
        {
            if !keep[i] {
                continue;
            }
            n.inputs = n.inputs.iter().map(|&j| index[j]).collect();
            index[i] = nodes.len();
            nodes.push(n);
            params.push(p);
        }
        let model = Model {
            graph: Graph { name, nodes },
            params,
        };
        model.validate().map_err(|e| anyhow!("{e}"))?;
        Ok(model)
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// `[C, H, W]` of the image input: 4 dimensions, any batch, fixed C/H/W.
fn input_dims(input: &pb::ValueInfoProto) -> anyhow::Result<[usize; 3]> {
    use pb::tensor_shape_proto::dimension::Value as D;
    let Some(pb::type_proto::Value::TensorType(t)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        bail!("input '{}' is not a tensor", input.name);
    };
    ensure!(
        t.elem_type == pb::tensor_proto::DataType::Float as i32,
        "input '{}' is not float32",
        input.name
    );
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    ensure!(
        dims.len() == 4,
        "input '{}' has {} dimensions; an image batch [N, C, H, W] is expected",
        input.name,
        dims.len()
    );
    let mut chw = [0usize; 3];
    for (k, d) in dims[1..].iter().enumerate() {
        chw[k] = match &d.value {
            Some(D::DimValue(v)) if *v > 0 => size(*v, "input dimension")?,
            Some(D::DimParam(p)) => bail!(
                "input '{}' dimension {} is symbolic ('{p}'); C, H and W must be fixed",
                input.name,
                k + 1
            ),
            _ => bail!(
                "input '{}' dimension {} is not a positive size; C, H and W must be fixed",
                input.name,
                k + 1
            ),
        };
    }
    Ok(chw)
}
