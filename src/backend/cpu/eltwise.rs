//! Elementwise operators (ReLU, ReLU6, Add) and the vectorisable reductions
//! the other kernels share.

use rayon::prelude::*;

/// Elements per rayon task for elementwise loops: large enough that task
/// overhead vanishes, small enough to balance two to a few dozen threads.
pub const CHUNK: usize = 1 << 15;

/// In-place `max(x, 0)`.
pub fn relu_inplace(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)));
}

/// In-place `min(max(x, 0), 6)`.
pub fn relu6_inplace(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK)
        .for_each(|c| c.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)));
}

/// ReLU backward from the saved output: `dy *= (y > 0)`.
pub fn relu_backward(dy: &mut [f32], y: &[f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(d, y)| {
            // Branch-free select: the sign pattern is random, branches mispredict.
            for (d, &y) in d.iter_mut().zip(y) {
                *d = if y > 0.0 { *d } else { 0.0 };
            }
        });
}

/// ReLU6 backward from the saved output: gradient passes where `0 < y < 6`.
pub fn relu6_backward(dy: &mut [f32], y: &[f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(d, y)| {
            for (d, &y) in d.iter_mut().zip(y) {
                *d = if y > 0.0 && y < 6.0 { *d } else { 0.0 };
            }
        });
}

/// `acc += x` (gradient accumulation, residual sums).
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, &x)| *a += x));
}

/// Length of the flat spans the per-channel kernels work on: whole rows
/// of `c` channels, at least 64 values, so inner loops are long and
/// vectorise even when `c` is 3 or 16.
pub fn span(c: usize) -> usize {
    c.max(1) * (64 / c.max(1)).max(1)
}

/// `v` (one value per channel) repeated to fill a span of `w` values.
pub fn tiled(v: &[f32], w: usize) -> Vec<f32> {
    (0..w).map(|j| v[j % v.len().max(1)]).collect()
}

/// Per-channel reduction of a row-major `[rows, c]` matrix. `f(acc, off)`
/// folds the span of `acc.len()` values starting at `off` (whole rows) into
/// the f32 accumulator `acc`; blocks of about 256 rows are summed in f32,
/// their totals in f64.
fn col_reduce<F>(len: usize, c: usize, f: F) -> Vec<f64>
where
    F: Fn(&mut [f32], usize) + Sync,
{
    let c = c.max(1);
    let w = span(c);
    let block = w * (256 * c).div_ceil(w);
    let blocks = len.div_ceil(block);
    (0..blocks)
        .into_par_iter()
        .map(|bi| {
            let mut acc = vec![0.0f32; w];
            let (lo, hi) = (bi * block, ((bi + 1) * block).min(len));
            let mut off = lo;
            while off + w <= hi {
                f(&mut acc, off);
                off += w;
            }
            if off < hi {
                f(&mut acc[..hi - off], off);
            }
            let mut out = vec![0.0f64; c];
            for (j, &v) in acc.iter().enumerate() {
                out[j % c] += v as f64;
            }
            out
        })
        // Collected and summed in block order: a rayon `reduce` would group
        // partial sums by work stealing and lose run-to-run determinism.
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0f64; c], |mut a, b| {
            a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            a
        })
}

/// Column sums of a row-major `[rows, c]` matrix.
pub fn col_sum(x: &[f32], c: usize) -> Vec<f64> {
    col_reduce(x.len(), c, |acc, off| {
        for (a, &v) in acc.iter_mut().zip(&x[off..]) {
            *a += v;
        }
    })
}

/// Column sums of `x - shift[col]` and of `(x - shift[col])^2` in one pass
/// over the data (same blocking and summation order as [`col_reduce`]).
pub fn col_sum_and_sq_shifted(x: &[f32], c: usize, shift: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let c = c.max(1);
    let w = span(c);
    let k = tiled(shift, w);
    let len = x.len();
    let block = w * (256 * c).div_ceil(w);
    let blocks = len.div_ceil(block);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..blocks)
        .into_par_iter()
        .map(|bi| {
            let (mut s1, mut s2) = (vec![0.0f32; w], vec![0.0f32; w]);
            let (lo, hi) = (bi * block, ((bi + 1) * block).min(len));
            for xs in x[lo..hi].chunks(w) {
                for (((a, b), &v), &k) in s1.iter_mut().zip(s2.iter_mut()).zip(xs).zip(&k) {
                    let d = v - k;
                    *a += d;
                    *b += d * d;
                }
            }
            let (mut o1, mut o2) = (vec![0.0f64; c], vec![0.0f64; c]);
            for j in 0..w {
                o1[j % c] += s1[j] as f64;
                o2[j % c] += s2[j] as f64;
            }
            (o1, o2)
        })
        .collect();
    // Summed in block order (deterministic, unlike a rayon reduce).
    let (mut t1, mut t2) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (p1, p2) in parts {
        t1.iter_mut().zip(p1).for_each(|(a, b)| *a += b);
        t2.iter_mut().zip(p2).for_each(|(a, b)| *a += b);
    }
    (t1, t2)
}

/// Column sums of `dy` and of `dy * (x - mean[col])` in one pass over the
/// data (same blocking and summation order as [`col_reduce`]).
pub fn col_sum_and_dot_dev(dy: &[f32], x: &[f32], c: usize, mean: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let c = c.max(1);
    let w = span(c);
    let m = tiled(mean, w);
    let len = x.len();
    let block = w * (256 * c).div_ceil(w);
    let blocks = len.div_ceil(block);
    let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..blocks)
        .into_par_iter()
        .map(|bi| {
            let (mut s1, mut s2) = (vec![0.0f32; w], vec![0.0f32; w]);
            let (lo, hi) = (bi * block, ((bi + 1) * block).min(len));
            for (ds, xs) in dy[lo..hi].chunks(w).zip(x[lo..hi].chunks(w)) {
                for ((((a, b), &d), &v), &m) in
                    s1.iter_mut().zip(s2.iter_mut()).zip(ds).zip(xs).zip(&m)
                {
                    *a += d;
                    *b += d * (v - m);
                }
            }
            let (mut o1, mut o2) = (vec![0.0f64; c], vec![0.0f64; c]);
            for j in 0..w {
                o1[j % c] += s1[j] as f64;
                o2[j % c] += s2[j] as f64;
            }
            (o1, o2)
        })
        .collect();
    // Summed in block order (deterministic, unlike a rayon reduce).
    let (mut t1, mut t2) = (vec![0.0f64; c], vec![0.0f64; c]);
    for (p1, p2) in parts {
        t1.iter_mut().zip(p1).for_each(|(a, b)| *a += b);
        t2.iter_mut().zip(p2).for_each(|(a, b)| *a += b);
    }
    (t1, t2)
}
