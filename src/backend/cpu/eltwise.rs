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
            for (d, &y) in d.iter_mut().zip(y) {
                if y <= 0.0 {
                    *d = 0.0;
                }
            }
        });
}

/// ReLU6 backward from the saved output: gradient passes where `0 < y < 6`.
pub fn relu6_backward(dy: &mut [f32], y: &[f32]) {
    dy.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(d, y)| {
            for (d, &y) in d.iter_mut().zip(y) {
                if y <= 0.0 || y >= 6.0 {
                    *d = 0.0;
                }
            }
        });
}

/// `acc += x` (gradient accumulation, residual sums).
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(a, x)| a.iter_mut().zip(x).for_each(|(a, &x)| *a += x));
}

/// Sum in f32 lanes (vectorised) with an f64 total, accurate for the
/// hundred-thousand-element channel reductions of BatchNorm.
pub fn sum(x: &[f32]) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(4096) {
        let mut acc = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for c in &mut it {
            for i in 0..8 {
                acc[i] += c[i];
            }
        }
        let tail: f32 = it.remainder().iter().sum();
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}

/// `sum((x - c)^2)` with the same accuracy scheme as [`sum`].
pub fn sum_sq_dev(x: &[f32], c: f32) -> f64 {
    let mut total = 0.0f64;
    for block in x.chunks(4096) {
        let mut acc = [0.0f32; 8];
        let mut it = block.chunks_exact(8);
        for ch in &mut it {
            for i in 0..8 {
                let d = ch[i] - c;
                acc[i] += d * d;
            }
        }
        let tail: f32 = it.remainder().iter().map(|&v| (v - c) * (v - c)).sum();
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}

/// `sum(a * (b - c))`, same accuracy scheme as [`sum`].
pub fn dot_dev(a: &[f32], b: &[f32], c: f32) -> f64 {
    let mut total = 0.0f64;
    for (ab, bb) in a.chunks(4096).zip(b.chunks(4096)) {
        let mut acc = [0.0f32; 8];
        let mut ia = ab.chunks_exact(8);
        let mut ib = bb.chunks_exact(8);
        for (x, y) in (&mut ia).zip(&mut ib) {
            for i in 0..8 {
                acc[i] += x[i] * (y[i] - c);
            }
        }
        let tail: f32 = ia
            .remainder()
            .iter()
            .zip(ib.remainder())
            .map(|(&x, &y)| x * (y - c))
            .sum();
        total += (acc.iter().sum::<f32>() + tail) as f64;
    }
    total
}
