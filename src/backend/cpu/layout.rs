//! Layout changes. Internally every activation is channel-major
//! `[C, B, S]` (S = H*W, 1 for feature vectors): convolutions become one
//! GEMM whose output is already in that layout, BatchNorm reduces over a
//! contiguous run per channel, and linear layers are `W[out,in] x X[in,B]`.
//! Transposes happen only at the input, at `Flatten` and at the logits.

use rayon::prelude::*;

/// `[d0, d1, s] -> [d1, d0, s]`: NCHW <-> CNHW for the input image and its
/// gradient.
pub fn swap01(x: &[f32], d0: usize, d1: usize, s: usize) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    if s == 0 {
        return y;
    }
    y.par_chunks_mut(d0 * s).enumerate().for_each(|(j, out)| {
        for i in 0..d0 {
            out[i * s..(i + 1) * s].copy_from_slice(&x[(i * d1 + j) * s..(i * d1 + j + 1) * s]);
        }
    });
    y
}

/// Row-major `[rows, cols] -> [cols, rows]` into `dst`.
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

/// `Flatten` forward: `[C, B, S] -> [C*S, B]` (feature `c*S + s`, as
/// PyTorch's `flatten(1)`).
pub fn flatten_forward(x: Vec<f32>, b: usize, s: usize) -> Vec<f32> {
    if s == 1 || x.is_empty() {
        return x;
    }
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(b * s)
        .zip(x.par_chunks(b * s))
        .for_each(|(out, inp)| transpose(inp, b, s, out));
    y
}

/// `Flatten` backward: `[C*S, B] -> [C, B, S]`.
pub fn flatten_backward(dy: Vec<f32>, b: usize, s: usize) -> Vec<f32> {
    if s == 1 || dy.is_empty() {
        return dy;
    }
    let mut dx = vec![0.0; dy.len()];
    dx.par_chunks_mut(b * s)
        .zip(dy.par_chunks(b * s))
        .for_each(|(out, inp)| transpose(inp, s, b, out));
    dx
}
