//! The `cardc info` summary of a deck: members (with their own card
//! summaries), augmentations, signature band means, gate settings, totals.

use super::signature::band_mean;
use super::{Deck, SpectrumPlan};
use crate::card::summary as card_summary;
use serde_json::{Value, json};
use std::fmt::Write;

/// Frequency bands of the signature summary, as fractions of the largest
/// radius: low, mid, high.
pub const BANDS: [(&str, f32, f32); 3] =
    [("low", 0.0, 0.25), ("mid", 0.25, 0.6), ("high", 0.6, 1.01)];

/// Mean signature value per band (log-amplitude units).
fn bands(plan: &SpectrumPlan, sig: &[f32]) -> Value {
    let mut o = serde_json::Map::new();
    for (name, lo, hi) in BANDS {
        o.insert(name.into(), json!(band_mean(plan, sig, lo, hi)));
    }
    Value::Object(o)
}

/// The JSON summary: `kind: "deck"`, `members[]` (name, augment, method,
/// sparsity, params, bytes, signature band means and L1 norm), `gate`,
/// totals `params`, `bytes`, `dense_f32_bytes`, `sparsity` (over all
/// members' prunable weights), provenance and metrics.
pub fn summary(deck: &Deck) -> Value {
    let [c, h, w] = deck.input_shape();
    let plan = SpectrumPlan::new(c, h, w);
    let mut members = Vec::new();
    let (mut params, mut bytes, mut dense, mut zeros, mut prunable) =
        (0u64, 0u64, 0u64, 0.0f64, 0.0f64);
    for m in &deck.members {
        let s = card_summary(&m.card);
        params += s["params"].as_u64().unwrap_or(0);
        bytes += s["bytes"].as_u64().unwrap_or(0);
        dense += s["dense_f32_bytes"].as_u64().unwrap_or(0);
        let n: usize = m
            .card
            .model
            .prunable()
            .iter()
            .map(|&(i, k)| m.card.model.params[i][k].data.len())
            .sum();
        zeros += m.card.model.sparsity() * n as f64;
        prunable += n as f64;
        let l1 = m.signature.iter().map(|v| v.abs() as f64).sum::<f64>()
            / m.signature.len().max(1) as f64;
        members.push(json!({
            "name": m.name,
            "augment": m.augment,
            "method": m.card.provenance.method,
            "arch": m.card.provenance.arch,
            "sparsity": s["sparsity"],
            "params": s["params"],
            "bytes": s["bytes"],
            "signature": { "bands": bands(&plan, &m.signature), "mean_abs": l1 },
            "metrics": m.card.metrics,
        }));
    }
    json!({
        "kind": "deck",
        "members": members,
        "gate": {
            "kind": deck.gate.kind.to_string(),
            "k": deck.gate.k,
            "metric": deck.gate.metric.to_string(),
            "scope": deck.gate.scope.to_string(),
        },
        "input": [c, h, w],
        "classes": deck.class_names(),
        "params": params,
        "bytes": bytes,
        "dense_f32_bytes": dense,
        "sparsity": if prunable > 0.0 { zeros / prunable } else { 0.0 },
        "provenance": deck.provenance,
        "metrics": deck.metrics,
    })
}

/// The text summary for people.
pub fn summary_text(deck: &Deck) -> String {
    let v = summary(deck);
    let [c, h, w] = deck.input_shape();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "deck of {} cards, {c}x{h}x{w} inputs, {} classes",
        deck.members.len(),
        deck.classes()
    );
    let _ = writeln!(s, "gate: {}", deck.gate);
    let _ = writeln!(
        s,
        "signatures and clean reference from {} ({} images, seed {})",
        deck.provenance.data, deck.provenance.images, deck.provenance.seed
    );
    let _ = writeln!(
        s,
        "\n{:<20} {:<16} {:<8} {:>8} {:>10} {:>10}  signature low/mid/high",
        "card", "augment", "method", "sparsity", "params", "bytes"
    );
    for m in v["members"].as_array().into_iter().flatten() {
        let b = &m["signature"]["bands"];
        let _ = writeln!(
            s,
            "{:<20} {:<16} {:<8} {:>7.1}% {:>10} {:>10}  {:+.3} / {:+.3} / {:+.3}",
            m["name"].as_str().unwrap_or(""),
            m["augment"].as_str().unwrap_or(""),
            m["method"].as_str().unwrap_or(""),
            100.0 * m["sparsity"].as_f64().unwrap_or(0.0),
            m["params"].as_u64().unwrap_or(0),
            m["bytes"].as_u64().unwrap_or(0),
            b["low"].as_f64().unwrap_or(0.0),
            b["mid"].as_f64().unwrap_or(0.0),
            b["high"].as_f64().unwrap_or(0.0),
        );
    }
    let _ = writeln!(
        s,
        "\ntotal: {} params, {} bytes stored ({} dense f32), {:.1}% sparse",
        v["params"],
        v["bytes"],
        v["dense_f32_bytes"],
        100.0 * v["sparsity"].as_f64().unwrap_or(0.0)
    );
    for (k, val) in &deck.metrics {
        let _ = writeln!(s, "{k}: {val:.4}");
    }
    s
}
