//! BatchNorm over channel-major `[C, N]` activations (N = batch x spatial,
//! contiguous per channel): train-mode forward with batch statistics, the
//! eval-mode affine map, and the backward pass.

use super::eltwise;
use rayon::prelude::*;

/// Per-channel batch statistics of a train-mode forward.
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// `1 / sqrt(biased_var + eps)`, what backward needs.
    pub invstd: Vec<f32>,
    /// Unbiased variance, for the running estimate (as PyTorch).
    pub var_unbiased: Vec<f32>,
}

/// Train-mode forward: normalises each channel of `x` (`[c, n]`) with its
/// own batch mean and biased variance, then applies `gamma`/`beta`.
pub fn train_forward(
    x: &[f32],
    c: usize,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) -> (Vec<f32>, BatchStats) {
    let n = x.len() / c.max(1);
    let mut y = vec![0.0f32; x.len()];
    let stats: Vec<(f32, f32, f32)> = y
        .par_chunks_mut(n.max(1))
        .zip(x.par_chunks(n.max(1)))
        .enumerate()
        .map(|(ch, (yc, xc))| {
            let mean = (eltwise::sum(xc) / n as f64) as f32;
            let ss = eltwise::sum_sq_dev(xc, mean);
            let var = (ss / n as f64) as f32;
            let var_u = if n > 1 { (ss / (n - 1) as f64) as f32 } else { 0.0 };
            let invstd = 1.0 / (var + eps).sqrt();
            let scale = gamma.map_or(1.0, |g| g[ch]) * invstd;
            let shift = beta.map_or(0.0, |b| b[ch]) - mean * scale;
            for (o, &v) in yc.iter_mut().zip(xc) {
                *o = v * scale + shift;
            }
            (mean, invstd, var_u)
        })
        .collect();
    let stats = BatchStats {
        mean: stats.iter().map(|s| s.0).collect(),
        invstd: stats.iter().map(|s| s.1).collect(),
        var_unbiased: stats.iter().map(|s| s.2).collect(),
    };
    (y, stats)
}

/// Eval-mode forward in place: `x = (x - mean) / sqrt(var + eps) * gamma + beta`.
pub fn eval_inplace(
    x: &mut [f32],
    c: usize,
    mean: &[f32],
    var: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
) {
    let n = x.len() / c.max(1);
    x.par_chunks_mut(n.max(1)).enumerate().for_each(|(ch, xc)| {
        let scale = gamma.map_or(1.0, |g| g[ch]) / (var[ch] + eps).sqrt();
        let shift = beta.map_or(0.0, |b| b[ch]) - mean[ch] * scale;
        xc.iter_mut().for_each(|v| *v = *v * scale + shift);
    });
}

/// Backward in place (`dy` becomes dL/dx). Returns `(dgamma, dbeta)`:
/// `dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))`.
pub fn backward(
    dy: &mut [f32],
    x: &[f32],
    c: usize,
    stats_mean: &[f32],
    invstd: &[f32],
    gamma: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let n = x.len() / c.max(1);
    let sums: Vec<(f32, f32)> = dy
        .par_chunks_mut(n.max(1))
        .zip(x.par_chunks(n.max(1)))
        .enumerate()
        .map(|(ch, (dc, xc))| {
            let (m, is) = (stats_mean[ch], invstd[ch]);
            let sdy = eltwise::sum(dc);
            let sdyx = eltwise::dot_dev(dc, xc, m) * is as f64;
            let a = (sdy / n as f64) as f32;
            let bcoef = (sdyx / n as f64) as f32 * is;
            let gs = gamma.map_or(1.0, |g| g[ch]) * is;
            // dx = gs * (dy - a - (x - m) * is * sdyx/n)
            for (d, &v) in dc.iter_mut().zip(xc) {
                *d = gs * (*d - a - (v - m) * bcoef);
            }
            (sdyx as f32, sdy as f32)
        })
        .collect();
    (
        sums.iter().map(|s| s.0).collect(),
        sums.iter().map(|s| s.1).collect(),
    )
}
