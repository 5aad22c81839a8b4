//! BatchNorm over pixel-major `[R, C]` activations (R = batch x spatial,
//! channels contiguous): train-mode forward with batch statistics, the
//! eval-mode affine map, and the backward pass.

use super::eltwise::{self, CHUNK};
use rayon::prelude::*;

/// Per-channel batch statistics of a train-mode forward.
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// `1 / sqrt(biased_var + eps)`, what backward needs.
    pub invstd: Vec<f32>,
    /// Unbiased variance, for the running estimate (as PyTorch).
    pub var_unbiased: Vec<f32>,
}

/// Rayon task size for `[rows, c]` matrices: whole spans of whole rows.
fn task_len(c: usize) -> usize {
    let w = eltwise::span(c);
    (CHUNK / w).max(1) * w
}

/// `y[r, c] = x[r, c] * scale[c] + shift[c]` in place.
fn affine_inplace(x: &mut [f32], scale: &[f32], shift: &[f32]) {
    let w = eltwise::span(scale.len());
    let (a, b) = (eltwise::tiled(scale, w), eltwise::tiled(shift, w));
    x.par_chunks_mut(task_len(scale.len())).for_each(|blk| {
        for span in blk.chunks_mut(w) {
            for ((v, &a), &b) in span.iter_mut().zip(&a).zip(&b) {
                *v = *v * a + b;
            }
        }
    });
}

/// `y[r, c] = x[r, c] * scale[c] + shift[c]` (one pass, no copy of `x`),
/// followed by `max(y, 0)` when `relu` (a fused ReLU).
fn affine_into(y: &mut [f32], x: &[f32], scale: &[f32], shift: &[f32], relu: bool) {
    let w = eltwise::span(scale.len());
    let (a, b) = (eltwise::tiled(scale, w), eltwise::tiled(shift, w));
    let t = task_len(scale.len());
    y.par_chunks_mut(t)
        .zip(x.par_chunks(t))
        .for_each(|(yb, xb)| {
            for (ys, xs) in yb.chunks_mut(w).zip(xb.chunks(w)) {
                let lanes = ys.iter_mut().zip(xs).zip(&a).zip(&b);
                if relu {
                    for (((v, &x), &a), &b) in lanes {
                        *v = (x * a + b).max(0.0);
                    }
                } else {
                    for (((v, &x), &a), &b) in lanes {
                        *v = x * a + b;
                    }
                }
            }
        });
}

/// Train-mode forward: normalises each channel of `x` (`[r, c]`) with its
/// batch mean and biased variance, then applies `gamma`/`beta` (and a
/// ReLU when `relu`: the executor fuses a following ReLU, which is
/// idempotent and whose backward only reads its own output).
pub fn train_forward(
    x: &[f32],
    c: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    relu: bool,
) -> (Vec<f32>, BatchStats) {
    let r = (x.len() / c.max(1)).max(1);
    // One pass: sums of `x - k` and `(x - k)^2` with `k` the first row, a
    // shift close to the mean that keeps the variance formula accurate.
    let k: Vec<f32> = (0..c).map(|ch| x.get(ch).copied().unwrap_or(0.0)).collect();
    let (s1, s2) = eltwise::col_sum_and_sq_shifted(x, c, &k);
    let rf = r as f64;
    let mean: Vec<f32> = (0..c)
        .map(|ch| (k[ch] as f64 + s1[ch] / rf) as f32)
        .collect();
    // Sum of squared deviations from the mean, per channel.
    let ss: Vec<f64> = (0..c)
        .map(|ch| (s2[ch] - s1[ch] * s1[ch] / rf).max(0.0))
        .collect();
    let invstd: Vec<f32> = ss
        .iter()
        .map(|s| 1.0 / ((s / rf) as f32 + eps).sqrt())
        .collect();
    let var_unbiased = ss
        .iter()
        .map(|s| {
            if r > 1 {
                (s / (r - 1) as f64) as f32
            } else {
                0.0
            }
        })
        .collect();
    let scale: Vec<f32> = (0..c)
        .map(|ch| gamma.map_or(1.0, |g| g[ch]) * invstd[ch])
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|ch| beta.map_or(0.0, |b| b[ch]) - mean[ch] * scale[ch])
        .collect();
    let mut y = vec![0.0f32; x.len()];
    affine_into(&mut y, x, &scale, &shift, relu);
    (
        y,
        BatchStats {
            mean,
            invstd,
            var_unbiased,
        },
    )
}

/// Eval-mode forward in place: `x = (x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn eval_inplace(
    x: &mut [f32],
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) {
    let scale = eval_scale(var, gamma, eps);
    let shift: Vec<f32> = (0..mean.len())
        .map(|ch| beta.map_or(0.0, |b| b[ch]) - mean[ch] * scale[ch])
        .collect();
    affine_inplace(x, &scale, &shift);
}

/// The per-channel scale `gamma / sqrt(var + eps)` of the eval-mode map.
pub fn eval_scale(var: &[f32], gamma: Option<&[f32]>, eps: f32) -> Vec<f32> {
    (0..var.len())
        .map(|ch| gamma.map_or(1.0, |g| g[ch]) / (var[ch] + eps).sqrt())
        .collect()
}

/// Eval-mode backward in place: with fixed statistics the map is affine
/// per channel, so `dx = dy * scale`.
pub fn eval_backward_inplace(dy: &mut [f32], scale: &[f32]) {
    let zero = vec![0.0f32; scale.len()];
    affine_inplace(dy, scale, &zero);
}

/// Backward in place (`dy` becomes dL/dx). Returns `(dgamma, dbeta)`:
/// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))`.
pub fn backward(
    dy: &mut [f32],
    x: &[f32],
    c: usize,
    stats: &BatchStats,
    gamma: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let r = (x.len() / c.max(1)).max(1) as f64;
    let (mean, invstd) = (&stats.mean, &stats.invstd);
    let (sdy, sdyx) = eltwise::col_sum_and_dot_dev(dy, x, c, mean);
    let sdyx: Vec<f64> = sdyx
        .iter()
        .zip(invstd)
        .map(|(s, &is)| s * is as f64)
        .collect();
    // dx = gs * dy - gs * a - (x - m) * gs * bcoef, per channel constants.
    let gs: Vec<f32> = (0..c)
        .map(|ch| gamma.map_or(1.0, |g| g[ch]) * invstd[ch])
        .collect();
    let off: Vec<f32> = (0..c).map(|ch| gs[ch] * (sdy[ch] / r) as f32).collect();
    let slope: Vec<f32> = (0..c)
        .map(|ch| gs[ch] * (sdyx[ch] / r) as f32 * invstd[ch])
        .collect();
    let w = eltwise::span(c);
    let (gs, off, slope, m) = (
        eltwise::tiled(&gs, w),
        eltwise::tiled(&off, w),
        eltwise::tiled(&slope, w),
        eltwise::tiled(mean, w),
    );
    dy.par_chunks_mut(task_len(c))
        .zip(x.par_chunks(task_len(c)))
        .for_each(|(d, xv)| {
            for (ds, xs) in d.chunks_mut(w).zip(xv.chunks(w)) {
                for j in 0..ds.len() {
                    ds[j] = gs[j] * ds[j] - off[j] - (xs[j] - m[j]) * slope[j];
                }
            }
        });
    (
        sdyx.iter().map(|&v| v as f32).collect(),
        sdy.iter().map(|&v| v as f32).collect(),
    )
}
