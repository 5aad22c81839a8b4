//! Card → ONNX: the dense-equivalent graph (masks applied, binary weights
//! as ±α floats), BatchNorm kept or folded into the preceding conv/linear,
//! input `input` `[N, C, H, W]` with a symbolic batch, output `logits`
//! `[N, K]`, and the card's preprocessing and provenance in
//! `metadata_props` (see [`super::meta`]).

use super::meta;
use crate::card::Card;
use crate::ir::{Op, ParamKind};
use crate::model::ParamTensor;
use anyhow::{Context, bail};
use prost::Message;
use std::path::Path;
use tract_onnx::pb;

/// Opset versions the exporter writes.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=17;

/// Name of the graph input.
pub const INPUT_NAME: &str = "input";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "logits";

/// How to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// ONNX opset (13–17).
    pub opset: i64,
    /// Fold every BatchNorm that directly follows a conv/linear (read by
    /// nothing else) into that layer's weight and bias.
    pub fold_bn: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            opset: 13,
            fold_bn: false,
        }
    }
}

/// What an export wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ExportSummary {
    pub opset: i64,
    /// ONNX nodes in the graph.
    pub nodes: usize,
    /// BatchNorms folded into convs/linears.
    pub folded_bn: usize,
    /// Weight values written (all initializers).
    pub values: usize,
    pub bytes: usize,
}

/// The ONNX IR version that goes with an opset (ONNX's versioning table).
fn ir_version(opset: i64) -> i64 {
    if opset <= 14 { 7 } else { 8 }
}

/// Builds the ONNX model of a card.
pub fn export_model(card: &Card, opts: &ExportOptions) -> anyhow::Result<(pb::ModelProto, usize)> {
    if !OPSETS.contains(&opts.opset) {
        bail!(
            "--opset {}: supported opsets are {}–{}",
            opts.opset,
            OPSETS.start(),
            OPSETS.end()
        );
    }
    card.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let model = &card.model;
    let graph = &model.graph;
    let shapes = graph.shapes().map_err(|e| anyhow::anyhow!("{e}"))?;
    let consumers = graph.consumers();
    let last = graph.nodes.len() - 1;

    // BN node -> the conv/linear it folds into.
    let mut folded_into = vec![None; graph.nodes.len()];
    let mut fold_target = vec![None; graph.nodes.len()];
    if opts.fold_bn {
        for (i, node) in graph.nodes.iter().enumerate() {
            if let (Op::BatchNorm(_), [j]) = (&node.op, node.inputs.as_slice())
                && graph.nodes[*j].op.has_prunable_weight()
                && consumers[*j] == 1
            {
                folded_into[i] = Some(*j);
                fold_target[*j] = Some(i);
            }
        }
    }
    // Node names as in the card (made unique); value names the same
    // except the graph's own `input` and `logits`.
    let names = unique_names(graph.nodes.iter().map(|n| n.name.as_str()));
    let mut value: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| match i {
            0 => INPUT_NAME.to_string(),
            i if i == last => OUTPUT_NAME.to_string(),
            _ if n == INPUT_NAME || n == OUTPUT_NAME => format!("{n}.value"),
            _ => n.clone(),
        })
        .collect();
    // A conv/linear that absorbs a BN writes the BN's output directly.
    for (j, t) in fold_target.iter().enumerate() {
        if let Some(i) = t {
            value[j] = value[*i].clone();
        }
    }

    // The BN op and parameters of node `t`.
    let bn_of = |t: usize| match &graph.nodes[t].op {
        Op::BatchNorm(op) => Some((op.eps, model.params[t].as_slice())),
        _ => None,
    };
    let mut b = GraphBuilder::default();
    let mut folded = 0;
    for (i, node) in graph.nodes.iter().enumerate() {
        if folded_into[i].is_some() {
            folded += 1;
            continue;
        }
        let input = |k: usize| value[node.inputs[k]].clone();
        let out = value[i].clone();
        let params = &model.params[i];
        let name = &names[i];
        match &node.op {
            Op::Input { .. } => {}
            Op::Conv2d(c) => {
                let (w, bias) = folded_weights(params, fold_target[i].map(bn_of));
                let mut ins = vec![
                    input(0),
                    b.init(&format!("{name}.weight"), weight_dims(params), w),
                ];
                if let Some(bias) = bias {
                    ins.push(b.init(&format!("{name}.bias"), vec![c.out_channels as i64], bias));
                }
                b.node(
                    "Conv",
                    name,
                    ins,
                    &out,
                    vec![
                        ints("kernel_shape", &[c.kernel.0, c.kernel.1]),
                        ints("strides", &[c.stride.0, c.stride.1]),
                        ints(
                            "pads",
                            &[c.padding.0, c.padding.1, c.padding.0, c.padding.1],
                        ),
                        ints("dilations", &[1, 1]),
                        int("group", c.groups as i64),
                    ],
                );
            }
            Op::Linear(l) => {
                let (w, bias) = folded_weights(params, fold_target[i].map(bn_of));
                let mut ins = vec![
                    input(0),
                    b.init(&format!("{name}.weight"), weight_dims(params), w),
                ];
                if let Some(bias) = bias {
                    ins.push(b.init(&format!("{name}.bias"), vec![l.out_features as i64], bias));
                }
                b.node("Gemm", name, ins, &out, vec![int("transB", 1)]);
            }
            Op::BatchNorm(bn) => {
                let (gamma, beta, mean, var) = bn_params(params);
                let c = vec![bn.channels as i64];
                let ins = vec![
                    input(0),
                    b.init(&format!("{name}.gamma"), c.clone(), gamma),
                    b.init(&format!("{name}.beta"), c.clone(), beta),
                    b.init(&format!("{name}.running_mean"), c.clone(), mean),
                    b.init(&format!("{name}.running_var"), c, var),
                ];
                // ONNX's momentum weighs the old running value (1 - PyTorch's).
                b.node(
                    "BatchNormalization",
                    name,
                    ins,
                    &out,
                    vec![
                        float("epsilon", bn.eps),
                        float("momentum", 1.0 - bn.momentum),
                    ],
                );
            }
            Op::Relu => b.node("Relu", name, vec![input(0)], &out, vec![]),
            // ONNX's Sign gives 0 at exactly 0 (cardc: +1); nothing else
            // differs, and a BatchNorm output is exactly 0 with probability 0.
            Op::Sign => b.node("Sign", name, vec![input(0)], &out, vec![]),
            Op::Relu6 => {
                let lo = b.scalar("relu6.min", 0.0);
                let hi = b.scalar("relu6.max", 6.0);
                b.node("Clip", name, vec![input(0), lo, hi], &out, vec![]);
            }
            Op::MaxPool(p) | Op::AvgPool(p) => {
                let mut attrs = vec![
                    ints("kernel_shape", &[p.kernel.0, p.kernel.1]),
                    ints("strides", &[p.stride.0, p.stride.1]),
                    ints(
                        "pads",
                        &[p.padding.0, p.padding.1, p.padding.0, p.padding.1],
                    ),
                ];
                let op = if matches!(node.op, Op::MaxPool(_)) {
                    "MaxPool"
                } else {
                    // The IR's average divides by the whole window (padding included).
                    attrs.push(int("count_include_pad", 1));
                    "AveragePool"
                };
                b.node(op, name, vec![input(0)], &out, attrs);
            }
            Op::GlobalAvgPool => {
                // ONNX keeps [N, C, 1, 1]; the IR's output is [N, C].
                let pooled = format!("{name}.pooled");
                b.node("GlobalAveragePool", name, vec![input(0)], &pooled, vec![]);
                b.node(
                    "Flatten",
                    &format!("{name}.flatten"),
                    vec![pooled],
                    &out,
                    vec![int("axis", 1)],
                );
            }
            Op::Add => b.node("Add", name, vec![input(0), input(1)], &out, vec![]),
            Op::Flatten => b.node("Flatten", name, vec![input(0)], &out, vec![int("axis", 1)]),
        }
    }

    let [c, h, w] = graph.input_shape();
    let classes = shapes[last][0];
    let graph_proto = pb::GraphProto {
        node: b.nodes,
        name: graph.name.clone(),
        initializer: b.initializers,
        input: vec![value_info(
            INPUT_NAME,
            &[Dim::Batch, Dim::Fixed(c), Dim::Fixed(h), Dim::Fixed(w)],
        )],
        output: vec![value_info(OUTPUT_NAME, &[Dim::Batch, Dim::Fixed(classes)])],
        doc_string: format!("exported by cardc {}", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    let proto = pb::ModelProto {
        ir_version: ir_version(opts.opset),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "cardc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph_proto),
        metadata_props: meta::write(card)?,
        ..Default::default()
    };
    Ok((proto, folded))
}

/// Exports `card` to `path` (written whole, then renamed into place).
pub fn export_file(
    card: &Card,
    path: &Path,
    opts: &ExportOptions,
) -> anyhow::Result<ExportSummary> {
    let (proto, folded_bn) = export_model(card, opts)?;
    let g = proto.graph.as_ref();
    let nodes = g.map_or(0, |g| g.node.len());
    let values = g.map_or(0, |g| {
        g.initializer.iter().map(|t| t.float_data.len()).sum()
    });
    let bytes = proto.encode_to_vec();
    let tmp = path.with_extension("onnx.partial");
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(ExportSummary {
        opset: opts.opset,
        nodes,
        folded_bn,
        values,
        bytes: bytes.len(),
    })
}

/// Node names made unique (`x`, `x_1`, ...) in order.
fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .map(|n| {
            let base = if n.is_empty() { "node" } else { n };
            let mut cand = base.to_string();
            let mut k = 1;
            while !seen.insert(cand.clone()) {
                cand = format!("{base}_{k}");
                k += 1;
            }
            cand
        })
        .collect()
}

fn weight_dims(params: &[ParamTensor]) -> Vec<i64> {
    params
        .iter()
        .find(|t| t.kind == ParamKind::Weight)
        .map(|t| t.shape.iter().map(|&d| d as i64).collect())
        .unwrap_or_default()
}

/// BN parameters with non-affine BN as gamma 1, beta 0.
fn bn_params(params: &[ParamTensor]) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let get = |k: ParamKind| params.iter().find(|t| t.kind == k).map(|t| t.data.clone());
    let mean = get(ParamKind::RunningMean).unwrap_or_default();
    let var = get(ParamKind::RunningVar).unwrap_or_default();
    let c = mean.len();
    (
        get(ParamKind::Gamma).unwrap_or_else(|| vec![1.0; c]),
        get(ParamKind::Beta).unwrap_or_else(|| vec![0.0; c]),
        mean,
        var,
    )
}

/// The effective weight and bias of a conv/linear, with the following
/// BatchNorm (if any) folded in: `w' = w·s`, `b' = (b - μ)·s + β` where
/// `s = γ / sqrt(σ² + ε)` per output channel.
fn folded_weights(
    params: &[ParamTensor],
    bn: Option<Option<(f32, &[ParamTensor])>>,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut w = params
        .iter()
        .find(|t| t.kind == ParamKind::Weight)
        .map(|t| t.effective().into_owned())
        .unwrap_or_default();
    let mut bias = params
        .iter()
        .find(|t| t.kind == ParamKind::Bias)
        .map(|t| t.effective().into_owned());
    let Some(Some((eps, bn))) = bn else {
        return (w, bias);
    };
    let (gamma, beta, mean, var) = bn_params(bn);
    let c = mean.len();
    let per = w.len() / c.max(1);
    let mut b = bias.take().unwrap_or_else(|| vec![0.0; c]);
    for ch in 0..c {
        // f64 keeps the fold as close as possible to the unfolded graph.
        let s = gamma[ch] as f64 / (var[ch] as f64 + eps as f64).sqrt();
        for v in &mut w[ch * per..(ch + 1) * per] {
            *v = (*v as f64 * s) as f32;
        }
        b[ch] = ((b[ch] as f64 - mean[ch] as f64) * s + beta[ch] as f64) as f32;
    }
    (w, Some(b))
}

/// A tensor dimension of a graph input/output.
enum Dim {
    /// The symbolic batch dimension `N`.
    Batch,
    Fixed(usize),
}

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => Value::DimParam("N".into()),
                Dim::Fixed(n) => Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn ints(name: &str, v: &[usize]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Float as i32,
        f: v,
        ..Default::default()
    }
}

/// Accumulates nodes and initializers.
#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    /// Adds a float initializer and returns its name.
    fn init(&mut self, name: &str, dims: Vec<i64>, data: Vec<f32>) -> String {
        self.initializers.push(pb::TensorProto {
            dims,
            data_type: pb::tensor_proto::DataType::Float as i32,
            float_data: data,
            name: name.into(),
            ..Default::default()
        });
        name.to_string()
    }

    /// A shared scalar initializer (added once).
    fn scalar(&mut self, name: &str, v: f32) -> String {
        if !self.initializers.iter().any(|t| t.name == name) {
            self.init(name, vec![], vec![v]);
        }
        name.to_string()
    }

    fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) {
        self.nodes.push(pb::NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: name.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
    }
}
