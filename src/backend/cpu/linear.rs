//! Fully connected layer on feature-major activations: `Y[out, B] =
//! W[out, in] x X[in, B] + b`, so forward and both backward products are
//! plain GEMMs with no transposed copies.

use super::eltwise;
use super::gemm::{Mat, MatMut, sgemm};
use rayon::prelude::*;

/// Forward: `x` is `[fin, b]`, `w` is `[fout, fin]`; returns `[fout, b]`.
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, fin: usize, fout: usize, b: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; fout * b];
    sgemm(
        MatMut::rm(&mut y, fout, b),
        false,
        Mat::rm(w, fout, fin),
        Mat::rm(x, fin, b),
        1.0,
    );
    if let Some(bias) = bias {
        y.par_chunks_mut(b.max(1))
            .zip(bias)
            .for_each(|(row, &bv)| row.iter_mut().for_each(|v| *v += bv));
    }
    y
}

/// Gradients of one linear layer.
pub struct LinearGrads {
    pub dw: Vec<f32>,
    pub db: Option<Vec<f32>>,
    pub dx: Option<Vec<f32>>,
}

/// Backward: `dW = dY x X^T`, `db = rowsum(dY)`, `dX = W^T x dY`.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dims: (usize, usize, usize),
    has_bias: bool,
    want_dx: bool,
) -> LinearGrads {
    let (fin, fout, b) = dims;
    let mut dw = vec![0.0f32; fout * fin];
    let dym = Mat::rm(dy, fout, b);
    sgemm(
        MatMut::rm(&mut dw, fout, fin),
        false,
        dym,
        Mat::rm(x, fin, b).t(),
        1.0,
    );
    let db = has_bias.then(|| {
        dy.chunks(b.max(1))
            .map(|r| eltwise::sum(r) as f32)
            .collect()
    });
    let dx = want_dx.then(|| {
        let mut dx = vec![0.0f32; fin * b];
        sgemm(
            MatMut::rm(&mut dx, fin, b),
            false,
            Mat::rm(w, fout, fin).t(),
            dym,
            1.0,
        );
        dx
    });
    LinearGrads { dw, db, dx }
}
