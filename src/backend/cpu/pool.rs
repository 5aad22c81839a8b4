//! Max, average and global average pooling on pixel-major `[B, H, W, C]`
//! activations: every window reduces whole channel vectors, and images
//! are independent (one rayon task per image).

use crate::ir::Pool;
use rayon::prelude::*;

/// Geometry of one pooling call.
#[derive(Clone, Copy, Debug)]
pub struct PoolGeom {
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl PoolGeom {
    /// Geometry of `p` on `[c, h, w]` inputs giving `[c, oh, ow]`.
    pub fn new(
        p: &Pool,
        batch: usize,
        c: usize,
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
    ) -> Self {
        PoolGeom {
            batch,
            c,
            h,
            w,
            oh,
            ow,
            kh: p.kernel.0,
            kw: p.kernel.1,
            sh: p.stride.0,
            sw: p.stride.1,
            ph: p.padding.0,
            pw: p.padding.1,
        }
    }

    /// Input range `[lo, hi)` covered by output index `o` along one axis.
    fn window(o: usize, s: usize, k: usize, p: usize, len: usize) -> (usize, usize) {
        let start = o * s;
        (
            start.saturating_sub(p),
            (start + k).saturating_sub(p).min(len),
        )
    }

    fn in_img(&self) -> usize {
        self.h * self.w * self.c
    }

    fn out_img(&self) -> usize {
        self.oh * self.ow * self.c
    }

    /// Calls `f(output pixel, input pixel)` for every window cell.
    fn for_each_cell(&self, mut f: impl FnMut(usize, usize)) {
        for oy in 0..self.oh {
            let (y0, y1) = Self::window(oy, self.sh, self.kh, self.ph, self.h);
            for ox in 0..self.ow {
                let (x0, x1) = Self::window(ox, self.sw, self.kw, self.pw, self.w);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        f(oy * self.ow + ox, iy * self.w + ix);
                    }
                }
            }
        }
    }
}

/// Max pooling forward. Returns the output and, per output value, the
/// input pixel (within its image) that won; padding counts as -inf and the
/// first maximum in scan order wins.
pub fn max_forward(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let c = g.c;
    let mut y = vec![f32::NEG_INFINITY; g.batch * g.out_img()];
    let mut idx = vec![0u32; g.batch * g.out_img()];
    y.par_chunks_mut(g.out_img())
        .zip(idx.par_chunks_mut(g.out_img()))
        .zip(x.par_chunks(g.in_img()))
        .for_each(|((yi, ii), xi)| {
            g.for_each_cell(|p, q| {
                let (yr, ir) = (&mut yi[p * c..][..c], &mut ii[p * c..][..c]);
                for ((yv, iv), &v) in yr.iter_mut().zip(ir.iter_mut()).zip(&xi[q * c..][..c]) {
                    if v > *yv {
                        *yv = v;
                        *iv = q as u32;
                    }
                }
            });
        });
    (y, idx)
}

/// Max pooling backward: routes each output gradient to its winner.
pub fn max_backward(g: &PoolGeom, dy: &[f32], idx: &[u32]) -> Vec<f32> {
    let c = g.c;
    let mut dx = vec![0.0f32; g.batch * g.in_img()];
    dx.par_chunks_mut(g.in_img())
        .zip(dy.par_chunks(g.out_img()))
        .zip(idx.par_chunks(g.out_img()))
        .for_each(|((dxi, dyi), ii)| {
            for (drow, irow) in dyi.chunks_exact(c).zip(ii.chunks_exact(c)) {
                for (ch, (&d, &q)) in drow.iter().zip(irow).enumerate() {
                    dxi[q as usize * c + ch] += d;
                }
            }
        });
    dx
}

/// Average pooling forward; padded cells count as zeros in the divisor
/// (`count_include_pad = true`), so every window divides by `kh * kw`.
pub fn avg_forward(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let c = g.c;
    let inv = 1.0 / (g.kh * g.kw) as f32;
    let mut y = vec![0.0f32; g.batch * g.out_img()];
    y.par_chunks_mut(g.out_img())
        .zip(x.par_chunks(g.in_img()))
        .for_each(|(yi, xi)| {
            g.for_each_cell(|p, q| {
                for (a, &v) in yi[p * c..][..c].iter_mut().zip(&xi[q * c..][..c]) {
                    *a += v;
                }
            });
            yi.iter_mut().for_each(|v| *v *= inv);
        });
    y
}

/// Average pooling backward (adjoint of [`avg_forward`]).
pub fn avg_backward(g: &PoolGeom, dy: &[f32]) -> Vec<f32> {
    let c = g.c;
    let inv = 1.0 / (g.kh * g.kw) as f32;
    let mut dx = vec![0.0f32; g.batch * g.in_img()];
    dx.par_chunks_mut(g.in_img())
        .zip(dy.par_chunks(g.out_img()))
        .for_each(|(dxi, dyi)| {
            g.for_each_cell(|p, q| {
                for (a, &d) in dxi[q * c..][..c].iter_mut().zip(&dyi[p * c..][..c]) {
                    *a += d * inv;
                }
            });
        });
    dx
}

/// Global average pooling: `[B, S, C] -> [B, C]`.
pub fn gap_forward(x: &[f32], s: usize, c: usize) -> Vec<f32> {
    let inv = 1.0 / s.max(1) as f32;
    let mut y = vec![0.0f32; x.len() / s.max(1)];
    y.par_chunks_mut(c.max(1))
        .zip(x.par_chunks((s * c).max(1)))
        .for_each(|(yi, xi)| {
            for row in xi.chunks_exact(c.max(1)) {
                yi.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            yi.iter_mut().for_each(|v| *v *= inv);
        });
    y
}

/// Global average pooling backward: spreads each gradient evenly.
pub fn gap_backward(dy: &[f32], s: usize, c: usize) -> Vec<f32> {
    let inv = 1.0 / s.max(1) as f32;
    let mut dx = vec![0.0f32; dy.len() * s];
    dx.par_chunks_mut((s * c).max(1))
        .zip(dy.par_chunks(c.max(1)))
        .for_each(|(dxi, dyi)| {
            for row in dxi.chunks_exact_mut(c.max(1)) {
                row.iter_mut().zip(dyi).for_each(|(a, &d)| *a = d * inv);
            }
        });
    dx
}
