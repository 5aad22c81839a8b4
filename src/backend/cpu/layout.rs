//! Layout changes. Internally every activation is pixel-major, channels
//! last: `[B, H, W, C]`, viewed as a `[B*S, C]` matrix (S = H*W, 1 for
//! feature vectors). A convolution is then `rows[pixels, K] x W^T[K, Cout]`
//! with the output channels contiguous, the shape the `gemm` crate runs
//! fastest for the few-channel layers of CIFAR networks (measured: 2-8x
//! faster than the channel-major `W x col` product), each image is one
//! contiguous block (batch-parallel kernels need no unsafe), and linear
//! layers read `[B, F]` rows directly. Transposes happen only at the input
//! and at `Flatten`.

use rayon::prelude::*;

/// Row-major `[rows, cols] -> [cols, rows]` into `dst`, in cache blocks.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 16;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    dst[c * rows + r] = src[r * cols + c];
                }
            }
        }
    }
}

/// Transposes each of the `batch` `[a, b]` blocks of `x` to `[b, a]`:
/// NCHW -> NHWC with `(a, b) = (C, HW)`, NHWC -> NCHW with `(HW, C)`.
pub fn transpose_each(x: &[f32], batch: usize, a: usize, b: usize) -> Vec<f32> {
    let per = a * b;
    if per == 0 || batch == 0 || a == 1 || b == 1 {
        return x.to_vec();
    }
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(out, inp)| transpose(inp, a, b, out));
    y
}

/// `Flatten` forward: `[B, S, C] -> [B, C*S]` (feature `c*S + s`, as
/// PyTorch's `flatten(1)` on NCHW).
pub fn flatten_forward(x: Vec<f32>, b: usize, s: usize, c: usize) -> Vec<f32> {
    if s == 1 || c == 1 {
        return x;
    }
    transpose_each(&x, b, s, c)
}

/// `Flatten` backward: `[B, C*S] -> [B, S, C]`.
pub fn flatten_backward(dy: Vec<f32>, b: usize, s: usize, c: usize) -> Vec<f32> {
    if s == 1 || c == 1 {
        return dy;
    }
    transpose_each(&dy, b, c, s)
}
