//! Fully connected layer on row-major `[B, F]` activations:
//! `Y = X x W^T + b` with `W` `[out, in]`; the transposes are free views.

use super::eltwise;
use super::gemm::{Mat, MatMut, sgemm};
use rayon::prelude::*;

/// `(in_features, out_features, batch)`.
pub type Dims = (usize, usize, usize);

/// Forward: `x` is `[b, fin]`, `w` is `[fout, fin]`; returns `[b, fout]`.
pub fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, (fin, fout, b): Dims) -> Vec<f32> {
    let mut y = vec![0.0f32; b * fout];
    sgemm(
        MatMut::rm(&mut y, b, fout),
        false,
        Mat::rm(x, b, fin),
        Mat::rm(w, fout, fin).t(),
        1.0,
    );
    if let Some(bias) = bias {
        y.par_chunks_mut(fout.max(1))
            .for_each(|row| row.iter_mut().zip(bias).for_each(|(v, &bv)| *v += bv));
    }
    y
}

/// Gradients of one linear layer.
pub struct LinearGrads {
    pub dw: Vec<f32>,
    pub db: Option<Vec<f32>>,
    pub dx: Option<Vec<f32>>,
}

/// Backward: `dW = dY^T x X`, `db = column sums of dY`, `dX = dY x W`.
pub fn backward(
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    (fin, fout, b): Dims,
    has_bias: bool,
    want_dx: bool,
) -> LinearGrads {
    let mut dw = vec![0.0f32; fout * fin];
    let dym = Mat::rm(dy, b, fout);
    sgemm(
        MatMut::rm(&mut dw, fout, fin),
        false,
        dym.t(),
        Mat::rm(x, b, fin),
        1.0,
    );
    let db = has_bias.then(|| {
        eltwise::col_sum(dy, fout)
            .iter()
            .map(|&v| v as f32)
            .collect()
    });
    let dx = want_dx.then(|| {
        let mut dx = vec![0.0f32; b * fin];
        sgemm(
            MatMut::rm(&mut dx, b, fin),
            false,
            dym,
            Mat::rm(w, fout, fin),
            1.0,
        );
        dx
    });
    LinearGrads { dw, db, dx }
}
