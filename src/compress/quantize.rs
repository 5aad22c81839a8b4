//! Post-training quantization of the conv and linear weights of a model to
//! f16 or to symmetric int8 with one scale per output channel.
//!
//! The quantized values replace the f32 data (so the in-memory model
//! computes exactly what the stored card will) and each tensor is tagged
//! with its [`Precision`], which makes the card store it as f16 or int8.
//! Masks are kept: a pruned int8 layer stores its mask bits and the kept
//! values only. Binary weights are already 1-bit and stay binary; biases
//! and BatchNorm tensors stay f32.
//!
//! Int8 scales come from one of two rules ([`ScaleRule`]):
//! * `MaxAbs`: scale = max |w| / 127 over the channel's kept weights;
//! * `Calibrated`: per output channel, the clipping scale among
//!   `CANDIDATES` fractions of the max-abs scale that minimizes the
//!   layer's output error on a batch of training images. The error of
//!   channel c is eᵀ Σ e, where e = w − q(w) and Σ the second-moment matrix
//!   of the layer's input patches (full up to `MAX_FULL_K` patch features,
//!   its diagonal beyond). Layers are done in graph order and Σ is measured
//!   on the partly quantized network, so later layers see the errors of
//!   earlier ones. Max-abs is among the candidates, so the calibrated
//!   output error on that batch is never larger.

use crate::backend::cpu;
use crate::card::stored::{StoredModel, quantize_i8};
use crate::ir::{Graph, Node, Op};
use crate::model::{Model, Precision, WeightState};
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{Context, bail};
use rayon::prelude::*;
use serde::Serialize;

/// Fractions of the max-abs scale tried per channel (1.0 down to 0.5).
pub const CANDIDATES: usize = 26;
/// Largest patch length for which the full second-moment matrix is used.
pub const MAX_FULL_K: usize = 1024;
/// Patch positions sampled per layer to estimate Σ.
pub const PATCH_SAMPLES: usize = 4096;
/// Images per forward pass while collecting layer inputs.
const CHUNK: usize = 64;

/// Target number format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    F16,
    Int8,
}

impl Format {
    /// Parses `f16` or `int8`.
    pub fn parse(s: &str) -> anyhow::Result<Format> {
        match s {
            "f16" => Ok(Format::F16),
            "int8" => Ok(Format::Int8),
            _ => bail!("--format {s:?}: expected f16 or int8"),
        }
    }

    /// `f16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Format::F16 => "f16",
            Format::Int8 => "int8",
        }
    }
}

/// How int8 scales are chosen (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleRule {
    MaxAbs,
    Calibrated,
}

impl ScaleRule {
    /// Parses `maxabs` or `calibrated`.
    pub fn parse(s: &str) -> anyhow::Result<ScaleRule> {
        match s {
            "maxabs" => Ok(ScaleRule::MaxAbs),
            "calibrated" => Ok(ScaleRule::Calibrated),
            _ => bail!("--scales {s:?}: expected maxabs or calibrated"),
        }
    }

    /// `maxabs` or `calibrated`.
    pub fn name(self) -> &'static str {
        match self {
            ScaleRule::MaxAbs => "maxabs",
            ScaleRule::Calibrated => "calibrated",
        }
    }
}

/// What happened to one weight tensor.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    pub name: String,
    /// `f16`, `int8` or `binary` (left as is).
    pub format: &'static str,
    /// Relative output error ‖(W − Q(W))x‖² / ‖Wx‖² on the calibration
    /// batch with max-abs scales and with the chosen scales (int8 with
    /// calibration data only).
    pub output_error_maxabs: Option<f64>,
    pub output_error: Option<f64>,
}

/// Quantizes every conv/linear weight of `model` in place.
///
/// `calib` (normalized images `[N, C, H, W]`) is needed for
/// [`ScaleRule::Calibrated`]; without it the rule falls back to max-abs.
/// With calibration images, int8 layers also report their output errors.
/// `seed` picks the sampled patch positions.
pub fn quantize(
    model: &mut Model,
    format: Format,
    rule: ScaleRule,
    calib: Option<&Tensor>,
    seed: u64,
) -> anyhow::Result<Vec<LayerReport>> {
    let mut reports = Vec::new();
    let mut rng = Rng::derive(seed, "quantize");
    for (i, k) in model.prunable() {
        let name = model.graph.nodes[i].name.clone();
        if matches!(model.params[i][k].state, WeightState::Binary { .. }) {
            reports.push(LayerReport {
                name,
                format: "binary",
                output_error_maxabs: None,
                output_error: None,
            });
            continue;
        }
        match format {
            Format::F16 => {
                to_f16(model, i, k);
                reports.push(LayerReport {
                    name,
                    format: "f16",
                    output_error_maxabs: None,
                    output_error: None,
                });
            }
            Format::Int8 => {
                let t = &model.params[i][k];
                let w = t.effective().into_owned();
                let oc = t.shape.first().copied().unwrap_or(1).max(1);
                let maxabs = maxabs_scales(&w, oc);
                let (scales, errs) = match calib {
                    Some(images) => {
                        let sigma = input_moments(model, i, images, &mut rng)
                            .with_context(|| format!("layer '{name}': calibration"))?;
                        let chosen = match rule {
                            ScaleRule::Calibrated => best_scales(&w, &maxabs, &sigma),
                            ScaleRule::MaxAbs => maxabs.clone(),
                        };
                        let e0 = sigma.relative_error(&w, &maxabs);
                        let e1 = sigma.relative_error(&w, &chosen);
                        (chosen, Some((e0, e1)))
                    }
                    None => (maxabs, None),
                };
                set_int8(model, i, k, scales);
                reports.push(LayerReport {
                    name,
                    format: "int8",
                    output_error_maxabs: errs.map(|e| e.0),
                    output_error: errs.map(|e| e.1),
                });
            }
        }
    }
    Ok(reports)
}

/// Rounds a tensor to f16 (masked entries become exactly 0).
fn to_f16(model: &mut Model, i: usize, k: usize) {
    let t = &mut model.params[i][k];
    let eff = t.effective().into_owned();
    t.data = eff
        .iter()
        .map(|&v| half::f16::from_f32(v).to_f32())
        .collect();
    t.precision = Precision::F16;
}

/// Replaces a tensor's values by their int8 grid points for `scales`.
fn set_int8(model: &mut Model, i: usize, k: usize, scales: Vec<f32>) {
    let t = &mut model.params[i][k];
    let eff = t.effective().into_owned();
    let per = (eff.len() / scales.len().max(1)).max(1);
    t.data = eff
        .iter()
        .enumerate()
        .map(|(j, &v)| quantize_i8(v, scales[j / per]) as f32 * scales[j / per])
        .collect();
    t.precision = Precision::Int8 { scales };
}

/// max |w| / 127 per output channel (1 for an all-zero channel, so the
/// scale stays positive and decoding finite).
pub fn maxabs_scales(w: &[f32], out_channels: usize) -> Vec<f32> {
    let per = (w.len() / out_channels.max(1)).max(1);
    w.chunks(per)
        .map(|ch| {
            let m = ch.iter().fold(0f32, |a, v| a.max(v.abs()));
            if m > 0.0 { m / 127.0 } else { 1.0 }
        })
        .collect()
}

/// Quantization error w − q(w) of one channel for `scale`.
fn error_of(w: &[f32], scale: f32) -> Vec<f64> {
    w.iter()
        .map(|&v| (v - quantize_i8(v, scale) as f32 * scale) as f64)
        .collect()
}

/// Per channel, the candidate scale with the smallest output error.
fn best_scales(w: &[f32], maxabs: &[f32], sigma: &Moments) -> Vec<f32> {
    let per = (w.len() / maxabs.len().max(1)).max(1);
    w.par_chunks(per)
        .zip(maxabs.par_iter())
        .enumerate()
        .map(|(c, (ch, &s0))| {
            let mut best = (f64::INFINITY, s0);
            for j in 0..CANDIDATES {
                let frac = 1.0 - 0.5 * j as f32 / (CANDIDATES - 1) as f32;
                let s = s0 * frac;
                let err = sigma.quadratic(c, &error_of(ch, s));
                // Strict: ties keep the larger (max-abs) scale.
                if err < best.0 {
                    best = (err, s);
                }
            }
            best.1
        })
        .collect()
}

/// Second moments of a layer's input patches, per group of output
/// channels: `full[g]` is K×K row-major, or only the diagonal.
struct Moments {
    k: usize,
    full: bool,
    per_group: Vec<Vec<f64>>,
    /// Output channels per group.
    oc_per_group: usize,
}

impl Moments {
    /// eᵀ Σ e for output channel `c`.
    fn quadratic(&self, c: usize, e: &[f64]) -> f64 {
        let g = &self.per_group[(c / self.oc_per_group.max(1)).min(self.per_group.len() - 1)];
        if self.full {
            let k = self.k;
            let mut s = 0.0;
            for (a, &ea) in e.iter().enumerate() {
                if ea == 0.0 {
                    continue;
                }
                let row = &g[a * k..(a + 1) * k];
                s += ea * row.iter().zip(e).map(|(r, eb)| r * eb).sum::<f64>();
            }
            s
        } else {
            e.iter().zip(g).map(|(x, d)| x * x * d).sum()
        }
    }

    /// Σ_c e_cᵀ Σ e_c / Σ_c w_cᵀ Σ w_c for the given scales.
    fn relative_error(&self, w: &[f32], scales: &[f32]) -> f64 {
        let per = (w.len() / scales.len().max(1)).max(1);
        let (mut num, mut den) = (0.0, 0.0);
        for (c, (ch, &s)) in w.chunks(per).zip(scales).enumerate() {
            num += self.quadratic(c, &error_of(ch, s));
            let wf: Vec<f64> = ch.iter().map(|&v| v as f64).collect();
            den += self.quadratic(c, &wf);
        }
        if den > 0.0 { num / den } else { 0.0 }
    }
}

/// The input of node `node` for `images`, per image in CHW order (or as
/// a vector), computed by running the graph cut after that input.
fn layer_input(model: &Model, node: usize, images: &Tensor) -> anyhow::Result<Vec<f32>> {
    let j = *model.graph.nodes[node]
        .inputs
        .first()
        .context("layer has no input")?;
    if j == 0 {
        return Ok(images.data.clone());
    }
    let shapes = model.graph.shapes().map_err(anyhow::Error::msg)?;
    let mut graph = Graph {
        name: format!("{} (cut at node {j})", model.graph.name),
        nodes: model.graph.nodes[..=j].to_vec(),
    };
    let mut params = model.params[..=j].to_vec();
    if shapes[j].len() != 1 {
        graph.nodes.push(Node {
            name: "calibration_flatten".into(),
            op: Op::Flatten,
            inputs: vec![j],
        });
        params.push(Vec::new());
    }
    Ok(cpu::infer(&Model { graph, params }, images)?.data)
}

/// Estimates the second moments of node `node`'s input patches on `images`.
fn input_moments(
    model: &Model,
    node: usize,
    images: &Tensor,
    rng: &mut Rng,
) -> anyhow::Result<Moments> {
    let shapes = model.graph.shapes().map_err(anyhow::Error::msg)?;
    let j = model.graph.nodes[node].inputs[0];
    let in_shape = shapes[j].clone();
    let n = images.shape.first().copied().unwrap_or(0);
    anyhow::ensure!(n > 0, "no calibration images");
    let per_image: usize = images.data.len() / n;
    match &model.graph.nodes[node].op {
        Op::Linear(l) => {
            let k = l.in_features;
            let full = k <= MAX_FULL_K;
            let mut m = vec![0f64; if full { k * k } else { k }];
            for start in (0..n).step_by(CHUNK) {
                let x = chunk_input(model, node, images, start, per_image)?;
                for row in x.chunks(k) {
                    accumulate(&mut m, row.iter().map(|&v| v as f64).collect(), full);
                }
            }
            Ok(Moments {
                k,
                full,
                per_group: vec![m],
                oc_per_group: l.out_features,
            })
        }
        Op::Conv2d(c) => {
            let [cin, h, w] = match in_shape.as_slice() {
                [a, b, d] => [*a, *b, *d],
                s => bail!("convolution input has shape {s:?}"),
            };
            let groups = c.groups.max(1);
            let cin_g = cin / groups;
            let (kh, kw) = c.kernel;
            let k = cin_g * kh * kw;
            let full = k <= MAX_FULL_K;
            let out = &shapes[node];
            let (oh, ow) = (out[1], out[2]);
            let mut ms = vec![vec![0f64; if full { k * k } else { k }]; groups];
            let chunks = n.div_ceil(CHUNK);
            let per_chunk = PATCH_SAMPLES.div_ceil(chunks);
            for start in (0..n).step_by(CHUNK) {
                let x = chunk_input(model, node, images, start, per_image)?;
                let b = x.len() / (cin * h * w);
                let positions: Vec<(usize, usize, usize)> = (0..per_chunk.min(b * oh * ow))
                    .map(|_| {
                        let p = rng.below(b * oh * ow);
                        (p / (oh * ow), (p / ow) % oh, p % ow)
                    })
                    .collect();
                for (g, m) in ms.iter_mut().enumerate() {
                    for &(bi, oy, ox) in &positions {
                        let mut p = vec![0f64; k];
                        for ci in 0..cin_g {
                            let plane = &x[(bi * cin + g * cin_g + ci) * h * w..][..h * w];
                            for ky in 0..kh {
                                let iy = (oy * c.stride.0 + ky) as isize - c.padding.0 as isize;
                                if iy < 0 || iy >= h as isize {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * c.stride.1 + kx) as isize - c.padding.1 as isize;
                                    if ix >= 0 && ix < w as isize {
                                        p[(ci * kh + ky) * kw + kx] =
                                            plane[iy as usize * w + ix as usize] as f64;
                                    }
                                }
                            }
                        }
                        accumulate(m, p, full);
                    }
                }
            }
            Ok(Moments {
                k,
                full,
                per_group: ms,
                oc_per_group: c.out_channels / groups,
            })
        }
        op => bail!("{} has no quantizable weight", op.kind_name()),
    }
}

/// The layer input for images `start..start + CHUNK`.
fn chunk_input(
    model: &Model,
    node: usize,
    images: &Tensor,
    start: usize,
    per_image: usize,
) -> anyhow::Result<Vec<f32>> {
    let n = images.shape[0];
    let end = (start + CHUNK).min(n);
    let mut shape = images.shape.clone();
    shape[0] = end - start;
    let part = Tensor::from_vec(
        &shape,
        images.data[start * per_image..end * per_image].to_vec(),
    );
    layer_input(model, node, &part)
}

/// Adds p pᵀ (or p², diagonal only) to `m`.
fn accumulate(m: &mut [f64], p: Vec<f64>, full: bool) {
    let k = p.len();
    if full {
        m.par_chunks_mut(k).zip(p.par_iter()).for_each(|(row, &a)| {
            if a != 0.0 {
                for (r, &b) in row.iter_mut().zip(&p) {
                    *r += a * b;
                }
            }
        });
    } else {
        for (d, &a) in m.iter_mut().zip(&p) {
            *d += a * a;
        }
    }
}

/// Bytes of a model's weights in stored form (all tensors, as a card
/// holds them; what `cardc info` reports as `bytes`).
pub fn stored_bytes(model: &Model) -> u64 {
    StoredModel::from_model(model)
        .params
        .iter()
        .flatten()
        .map(|p| p.data.stored_bytes(p.elements().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maxabs_scales_are_per_channel_and_positive() {
        let w = [0.5, -1.27, 0.0, 0.0, 2.54, 1.0];
        let s = maxabs_scales(&w, 3);
        assert_eq!(s, vec![0.01, 1.0, 0.02]);
    }

    #[test]
    fn calibrated_scales_never_raise_the_output_error() {
        // One channel with an outlier: clipping it trades one large error
        // for finer steps on the rest; Σ = I makes the error plain MSE.
        let mut rng = Rng::new(3);
        let mut w: Vec<f32> = (0..64).map(|_| rng.normal() * 0.1).collect();
        w[0] = 1.5;
        let sigma = Moments {
            k: 64,
            full: true,
            per_group: vec![
                (0..64 * 64)
                    .map(|i| if i % 65 == 0 { 1.0 } else { 0.0 })
                    .collect(),
            ],
            oc_per_group: 1,
        };
        let m = maxabs_scales(&w, 1);
        let b = best_scales(&w, &m, &sigma);
        assert!(b[0] <= m[0] && b[0] >= 0.5 * m[0] * 0.999);
        assert!(sigma.relative_error(&w, &b) <= sigma.relative_error(&w, &m));
    }
}
