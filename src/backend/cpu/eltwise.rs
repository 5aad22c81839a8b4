//! Elementwise operators (ReLU, ReLU6, Sign, Add) and the vectorisable reductions
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

/// In-place binary activation: `+1` where `x ≥ 0`, `−1` elsewhere (NaN
/// gives −1, as `x ≥ 0` is false; every backend and the compiled kernels
/// use the same comparison).
pub fn sign_inplace(x: &mut [f32]) {
    x.par_chunks_mut(CHUNK).for_each(|c| {
        c.iter_mut()
            .for_each(|v| *v = if *v >= 0.0 { 1.0 } else { -1.0 })
    });
}

/// Sign backward (straight-through estimator) from the saved input: the
/// gradient passes where `|x| ≤ 1`, the derivative of hardtanh.
pub fn sign_backward(dy: &mut [f32], x: &[f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(d, x)| {
            for (d, &x) in d.iter_mut().zip(x) {
                *d = if x.abs() <= 1.0 { *d } else { 0.0 };
            }
        });
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

/// Per-channel reductions of row-major `[rows, c]` data, `N` sums at once.
/// `f(acc, range)` folds the elements `range` (at most one span of whole
/// rows, starting at a row) into the `N` f32 lane accumulators; blocks of
/// about 256 rows are summed in f32, their totals in f64.
fn col_reduce<const N: usize, F>(len: usize, c: usize, f: F) -> [Vec<f64>; N]
where
    F: Fn(&mut [Vec<f32>; N], std::ops::Range<usize>) + Sync,
{
    let c = c.max(1);
    let w = span(c);
    let block = w * (256 * c).div_ceil(w);
    let blocks = len.div_ceil(block);
    let parts: Vec<[Vec<f64>; N]> = (0..blocks)
        .into_par_iter()
        .map(|bi| {
            let mut acc: [Vec<f32>; N] = std::array::from_fn(|_| vec![0.0f32; w]);
            let (lo, hi) = (bi * block, ((bi + 1) * block).min(len));
            let mut off = lo;
            while off < hi {
                let end = (off + w).min(hi);
                f(&mut acc, off..end);
                off = end;
            }
            acc.map(|lanes| {
                let mut out = vec![0.0f64; c];
                for (j, &v) in lanes.iter().enumerate() {
                    out[j % c] += v as f64;
                }
                out
            })
        })
        .collect();
    // Summed in block order: a rayon `reduce` would group partial sums by
    // work stealing and lose run-to-run determinism.
    let mut total: [Vec<f64>; N] = std::array::from_fn(|_| vec![0.0f64; c]);
    for part in parts {
        for (t, p) in total.iter_mut().zip(part) {
            t.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
    }
    total
}

/// Column sums of a row-major `[rows, c]` matrix.
pub fn col_sum(x: &[f32], c: usize) -> Vec<f64> {
    let [sum] = col_reduce(x.len(), c, |[acc], r| {
        for (a, &v) in acc.iter_mut().zip(&x[r]) {
            *a += v;
        }
    });
    sum
}

/// Column sums of `x - shift[col]` and of `(x - shift[col])^2` in one pass
/// over the data.
pub fn col_sum_and_sq_shifted(x: &[f32], c: usize, shift: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let k = tiled(shift, span(c.max(1)));
    let [s1, s2] = col_reduce(x.len(), c, |[s1, s2], r| {
        for (((a, b), &v), &k) in s1.iter_mut().zip(s2.iter_mut()).zip(&x[r]).zip(&k) {
            let d = v - k;
            *a += d;
            *b += d * d;
        }
    });
    (s1, s2)
}

/// Column sums of `dy` and of `dy * (x - mean[col])` in one pass over the
/// data.
pub fn col_sum_and_dot_dev(dy: &[f32], x: &[f32], c: usize, mean: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let m = tiled(mean, span(c.max(1)));
    let [s1, s2] = col_reduce(x.len(), c, |[s1, s2], r| {
        for ((((a, b), &d), &v), &m) in s1
            .iter_mut()
            .zip(s2.iter_mut())
            .zip(&dy[r.clone()])
            .zip(&x[r])
            .zip(&m)
        {
            *a += d;
            *b += d * (v - m);
        }
    });
    (s1, s2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_is_plus_one_from_zero_and_passes_gradients_within_one() {
        let x = [-2.0, -1.0, -0.5, -0.0, 0.0, 0.25, 1.0, 1.5, f32::NAN];
        let mut y = x;
        sign_inplace(&mut y);
        assert_eq!(y, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0]);
        let mut dy = [3.0f32; 9];
        sign_backward(&mut dy, &x);
        assert_eq!(dy, [0.0, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 0.0]);
    }
}
