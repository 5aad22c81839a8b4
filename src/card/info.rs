//! The `cardc info` summary of a card: per-layer parameters, sparsity and
//! storage cost, totals, provenance and metrics, as JSON (for scripts) and
//! as a text table (for people).
//!
//! Storage numbers come from the same [`StoredModel`] encoding that
//! [`Card::save`](super::Card::save) writes, so they are the weight bytes of
//! the file (without the few bytes of serialization framing).

use super::Card;
use super::stored::{StoredModel, StoredParam};
use crate::ir::ParamKind;
use serde_json::{Value, json};
use std::fmt::Write;

/// One row of the summary.
struct LayerRow {
    name: String,
    op: &'static str,
    shape: Vec<usize>,
    params: usize,
    /// Zeros in the layer's weight tensor; 0 when it has none.
    zeros: usize,
    weights: usize,
    /// Storage format of the weight tensor (or of the first tensor).
    format: &'static str,
    /// Whether the weight tensor carries a mask (masked, binary, or a
    /// quantized format with a mask).
    masked: bool,
    /// Bits per element of the weight tensor (all tensors when there is no
    /// weight, e.g. BatchNorm); 0 for layers without parameters.
    bits: f64,
    bytes: u64,
    dense_bytes: u64,
    macs: u64,
}

impl LayerRow {
    fn sparsity(&self) -> f64 {
        if self.weights == 0 {
            0.0
        } else {
            self.zeros as f64 / self.weights as f64
        }
    }
}

fn bits_of(ps: &[&StoredParam]) -> (u64, usize) {
    ps.iter().fold((0, 0), |(b, n), p| {
        let k = p.elements().unwrap_or(0);
        (b + p.data.stored_bits(k), n + k)
    })
}

fn rows(card: &Card) -> Vec<LayerRow> {
    let m = &card.model;
    let stored = StoredModel::from_model(m);
    let shapes = m.graph.shapes().unwrap_or_default();
    let empty = Vec::new();
    m.graph
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let ts = m.params.get(i).unwrap_or(&empty);
            let ss: Vec<&StoredParam> = stored
                .params
                .get(i)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            let weight = ts.iter().position(|t| t.kind == ParamKind::Weight);
            let (bits, n) = match weight {
                Some(w) => bits_of(&ss[w..=w]),
                None => bits_of(&ss),
            };
            let elements: usize = ts.iter().map(|t| t.data.len()).sum();
            let bytes: u64 = ss
                .iter()
                .map(|p| p.data.stored_bytes(p.elements().unwrap_or(0)))
                .sum();
            let shape = shapes.get(i).cloned().unwrap_or_default();
            LayerRow {
                name: node.name.clone(),
                op: node.op.kind_name(),
                params: ts
                    .iter()
                    .filter(|t| t.kind.trainable())
                    .map(|t| t.data.len())
                    .sum(),
                zeros: weight.map_or(0, |w| ts[w].zeros()),
                weights: weight.map_or(0, |w| ts[w].data.len()),
                format: weight
                    .or(if ss.is_empty() { None } else { Some(0) })
                    .and_then(|w| ss.get(w))
                    .map_or("-", |p| p.data.format()),
                masked: weight.is_some_and(|w| ts[w].mask().is_some()),
                bits: if n == 0 { 0.0 } else { bits as f64 / n as f64 },
                bytes,
                dense_bytes: 4 * elements as u64,
                macs: node.op.macs(&shape),
                shape,
            }
        })
        .collect()
}

/// Stored and dense-f32 bytes of the convolution and linear layers alone
/// (weights and biases: what pruning and binarization compress), without
/// BatchNorm statistics and the other tensors.
fn conv_linear_bytes(rows: &[LayerRow]) -> (u64, u64) {
    rows.iter()
        .filter(|r| matches!(r.op, "Conv2d" | "Linear"))
        .fold((0, 0), |(b, d), r| (b + r.bytes, d + r.dense_bytes))
}

/// The JSON summary (`cardc info --json`). Fractions are in [0, 1];
/// `bytes` counts the stored weights (all tensors, BatchNorm statistics
/// included) and `dense_f32_bytes` the same tensors as plain f32;
/// `conv_linear_bytes` and `conv_linear_dense_f32_bytes` the same for the
/// convolution and linear layers alone. Per
/// layer, `bits` is the weight tensor's stored bits per element (values,
/// mask and sign bits, scales), `format` its encoding (`dense`, `masked`,
/// `binary`, `f16`, `int8`) and `masked` whether a mask is stored with it.
pub fn summary(card: &Card) -> Value {
    let m = &card.model;
    let rows = rows(card);
    let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let dense: u64 = rows.iter().map(|r| r.dense_bytes).sum();
    let (cl_bytes, cl_dense) = conv_linear_bytes(&rows);
    let layers: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "op": r.op,
                "shape": r.shape,
                "params": r.params,
                "sparsity": r.sparsity(),
                "format": r.format,
                "masked": r.masked,
                "bits": r.bits,
                "bytes": r.bytes,
                "dense_f32_bytes": r.dense_bytes,
                "macs": r.macs,
            })
        })
        .collect();
    json!({
        "arch": arch(card),
        "graph": m.graph.name,
        "input": m.graph.input_shape(),
        "classes": m.graph.classes(),
        "class_names": card.class_names,
        "params": m.param_count(),
        "sparsity": m.sparsity(),
        "bytes": bytes,
        "dense_f32_bytes": dense,
        "compression": if bytes == 0 { 1.0 } else { dense as f64 / bytes as f64 },
        "conv_linear_bytes": cl_bytes,
        "conv_linear_dense_f32_bytes": cl_dense,
        "macs": m.graph.macs().unwrap_or(0),
        "normalization": { "mean": card.normalization.mean, "std": card.normalization.std },
        "layers": layers,
        "provenance": serde_json::to_value(&card.provenance).unwrap_or(Value::Null),
        "metrics": card.metrics,
    })
}

fn arch(card: &Card) -> String {
    if card.provenance.arch.is_empty() {
        card.model.graph.name.clone()
    } else {
        card.provenance.arch.clone()
    }
}

/// Bytes in a short human unit.
fn human(b: u64) -> String {
    match b {
        b if b >= 1 << 20 => format!("{:.2} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The human-readable summary (`cardc info`): a per-layer table with
/// totals, stored vs dense size, provenance and metrics.
pub fn summary_text(card: &Card) -> String {
    let m = &card.model;
    let rows = rows(card);
    let mut s = String::new();
    let [c, h, w] = m.graph.input_shape();
    let _ = writeln!(
        s,
        "{}: {} classes, input {c}x{h}x{w}, {} parameters, {} MACs",
        arch(card),
        m.graph.classes(),
        m.param_count(),
        m.graph.macs().unwrap_or(0)
    );
    let name_w = rows.iter().map(|r| r.name.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(
        s,
        "{:<name_w$}  {:<13}  {:<14}  {:>9}  {:>8}  {:<6}  {:>6}  {:>10}",
        "layer", "op", "output", "params", "sparsity", "format", "bits/w", "bytes"
    );
    for r in &rows {
        let shape = r
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let (sp, bits) = if r.dense_bytes == 0 {
            (String::new(), String::new())
        } else {
            (
                format!("{:.1}%", 100.0 * r.sparsity()),
                format!("{:.2}", r.bits),
            )
        };
        let _ = writeln!(
            s,
            "{:<name_w$}  {:<13}  {:<14}  {:>9}  {:>8}  {:<6}  {:>6}  {:>10}",
            r.name,
            r.op,
            shape,
            r.params,
            sp,
            if r.dense_bytes == 0 {
                String::new()
            } else if r.masked && matches!(r.format, "f16" | "int8") {
                format!("{}+m", r.format)
            } else {
                r.format.to_string()
            },
            bits,
            r.bytes
        );
    }
    let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
    let dense: u64 = rows.iter().map(|r| r.dense_bytes).sum();
    let _ = writeln!(
        s,
        "{:<name_w$}  {:<13}  {:<14}  {:>9}  {:>8}  {:<6}  {:>6}  {:>10}",
        "total",
        "",
        "",
        m.param_count(),
        format!("{:.1}%", 100.0 * m.sparsity()),
        "",
        "",
        bytes
    );
    let ratio = if bytes == 0 {
        1.0
    } else {
        dense as f64 / bytes as f64
    };
    let _ = writeln!(
        s,
        "weights: {} stored vs {} as dense f32 ({ratio:.2}x smaller)",
        human(bytes),
        human(dense)
    );
    let (cl_bytes, cl_dense) = conv_linear_bytes(&rows);
    if cl_bytes > 0 && cl_bytes < bytes {
        let _ = writeln!(
            s,
            "  conv/linear layers: {} stored vs {} as dense f32 ({:.2}x smaller); the rest (BatchNorm statistics) {}",
            human(cl_bytes),
            human(cl_dense),
            cl_dense as f64 / cl_bytes as f64,
            human(bytes - cl_bytes)
        );
    }
    let n = &card.normalization;
    let _ = writeln!(s, "normalization: mean {:?} std {:?}", n.mean, n.std);
    let _ = writeln!(s, "classes: {}", card.class_names.join(", "));
    let p = &card.provenance;
    let _ = writeln!(s, "provenance:");
    let fields: [(&str, String); 13] = [
        ("method", p.method.clone()),
        ("arch", p.arch.clone()),
        ("width_mult", p.width_mult.to_string()),
        ("sparsity", p.sparsity.to_string()),
        ("augment", p.augment.clone()),
        ("seed", p.seed.to_string()),
        ("data", p.data.clone()),
        ("data_digest", p.data_digest.clone()),
        ("backend", p.backend.clone()),
        ("adapter", p.adapter.clone()),
        ("epochs", p.epochs.to_string()),
        ("cardc_version", p.cardc_version.clone()),
        ("created_unix", p.created_unix.to_string()),
    ];
    for (k, v) in fields.iter().filter(|(_, v)| !v.is_empty()) {
        let _ = writeln!(s, "  {k}: {v}");
    }
    for note in &p.notes {
        let _ = writeln!(s, "  note: {note}");
    }
    if card.metrics.is_empty() {
        let _ = writeln!(s, "metrics: none");
    } else {
        let _ = writeln!(s, "metrics:");
        for (k, v) in &card.metrics {
            let _ = writeln!(s, "  {k}: {v}");
        }
    }
    s
}
