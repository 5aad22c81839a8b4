//! 2-D convolution as im2col + GEMM over the whole batch, in the
//! channel-major `[C, B, H, W]` layout: `W[Cout, K] x col[K, B*OH*OW]` is
//! already the `[Cout, B, OH, OW]` output. The batch is processed in chunks
//! so the column buffer stays cache-sized; backward recomputes the columns
//! instead of caching them.

use super::gemm::{Mat, MatMut, sgemm};
use crate::ir::Conv2d;
use rayon::prelude::*;

/// Column-buffer budget per chunk, in f32 values.
const COL_BUDGET: usize = 1 << 20;

/// Everything the kernels need to know about one convolution call.
#[derive(Clone, Copy, Debug)]
pub struct ConvGeom {
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub batch: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl ConvGeom {
    /// Geometry of `op` on a `[cin, h, w]` input (the shape rule has already
    /// accepted it, so `oh`, `ow` are positive).
    pub fn new(op: &Conv2d, batch: usize, h: usize, w: usize, oh: usize, ow: usize) -> Self {
        ConvGeom {
            cin: op.in_channels,
            cout: op.out_channels,
            groups: op.groups.max(1),
            kh: op.kernel.0,
            kw: op.kernel.1,
            sh: op.stride.0,
            sw: op.stride.1,
            ph: op.padding.0,
            pw: op.padding.1,
            batch,
            h,
            w,
            oh,
            ow,
        }
    }

    /// Reduction length of one group's GEMM: `Cin/groups * kh * kw`.
    fn k(&self) -> usize {
        self.cin / self.groups * self.kh * self.kw
    }

    fn cog(&self) -> usize {
        self.cout / self.groups
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// 1x1, stride 1, no padding: the input already is the column matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Images per chunk so that the column buffer fits [`COL_BUDGET`].
    fn chunk(&self) -> usize {
        let per_image = (self.cin * self.kh * self.kw * self.ohw()).max(1);
        (COL_BUDGET / per_image).clamp(1, self.batch.max(1))
    }

    /// Output columns `[lo, hi)` whose input column `o*s + k - p` is inside
    /// `[0, len)`.
    fn valid(o_len: usize, len: usize, s: usize, k: usize, p: usize) -> (usize, usize) {
        let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
        let hi = if len + p > k {
            ((len + p - k - 1) / s + 1).min(o_len)
        } else {
            0
        };
        (lo.min(hi), hi)
    }
}

/// Fills `col` (`[Cin*kh*kw, nb*OH*OW]`) for images `b0..b0+nb` of `x`.
fn im2col(g: &ConvGeom, x: &[f32], b0: usize, nb: usize, col: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.ohw());
    let nc = nb * ohw;
    col.par_chunks_mut(nc).enumerate().for_each(|(r, row)| {
        let ci = r / (g.kh * g.kw);
        let ky = (r / g.kw) % g.kh;
        let kx = r % g.kw;
        let (xlo, xhi) = ConvGeom::valid(g.ow, g.w, g.sw, kx, g.pw);
        let (ylo, yhi) = ConvGeom::valid(g.oh, g.h, g.sh, ky, g.ph);
        for bi in 0..nb {
            let plane = &x[(ci * g.batch + b0 + bi) * hw..][..hw];
            let out = &mut row[bi * ohw..][..ohw];
            out[..ylo * g.ow].fill(0.0);
            out[yhi * g.ow..].fill(0.0);
            for oy in ylo..yhi {
                let iy = oy * g.sh + ky - g.ph;
                let irow = &plane[iy * g.w..][..g.w];
                let orow = &mut out[oy * g.ow..][..g.ow];
                orow[..xlo].fill(0.0);
                orow[xhi..].fill(0.0);
                if g.sw == 1 {
                    let off = xlo + kx - g.pw;
                    orow[xlo..xhi].copy_from_slice(&irow[off..off + (xhi - xlo)]);
                } else {
                    for (ox, o) in orow[xlo..xhi].iter_mut().enumerate() {
                        *o = irow[(ox + xlo) * g.sw + kx - g.pw];
                    }
                }
            }
        }
    });
}

/// Scatter-adds `col` (`[Cin*kh*kw, nb*OH*OW]`) into `dx` for images
/// `b0..b0+nb` (the adjoint of [`im2col`]).
fn col2im(g: &ConvGeom, col: &[f32], b0: usize, nb: usize, dx: &mut [f32]) {
    let (hw, ohw) = (g.h * g.w, g.ohw());
    let nc = nb * ohw;
    let kk = g.kh * g.kw;
    dx.par_chunks_mut(g.batch * hw)
        .enumerate()
        .for_each(|(ci, dxc)| {
            for ky in 0..g.kh {
                let (ylo, yhi) = ConvGeom::valid(g.oh, g.h, g.sh, ky, g.ph);
                for kx in 0..g.kw {
                    let (xlo, xhi) = ConvGeom::valid(g.ow, g.w, g.sw, kx, g.pw);
                    let row = &col[(ci * kk + ky * g.kw + kx) * nc..][..nc];
                    for bi in 0..nb {
                        let plane = &mut dxc[(b0 + bi) * hw..][..hw];
                        let src = &row[bi * ohw..][..ohw];
                        for oy in ylo..yhi {
                            let iy = oy * g.sh + ky - g.ph;
                            let drow = &mut plane[iy * g.w..][..g.w];
                            let srow = &src[oy * g.ow..][..g.ow];
                            if g.sw == 1 {
                                let off = xlo + kx - g.pw;
                                for (d, &s) in drow[off..off + (xhi - xlo)]
                                    .iter_mut()
                                    .zip(&srow[xlo..xhi])
                                {
                                    *d += s;
                                }
                            } else {
                                for ox in xlo..xhi {
                                    drow[ox * g.sw + kx - g.pw] += srow[ox];
                                }
                            }
                        }
                    }
                }
            }
        });
}

/// Forward: `x` is `[Cin, B, H, W]`, `w` is `[Cout, Cin/groups, kh, kw]`;
/// returns `[Cout, B, OH, OW]`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let n = g.batch * g.ohw();
    let (k, cog) = (g.k(), g.cog());
    let mut y = vec![0.0f32; g.cout * n];
    if g.pointwise() {
        for gi in 0..g.groups {
            sgemm(
                MatMut::rm(&mut y[gi * cog * n..(gi + 1) * cog * n], cog, n),
                false,
                Mat::rm(&w[gi * cog * k..(gi + 1) * cog * k], cog, k),
                Mat::rm(&x[gi * k * n..(gi + 1) * k * n], k, n),
                1.0,
            );
        }
    } else {
        let chunk = g.chunk();
        let mut col = vec![0.0f32; g.cin * g.kh * g.kw * chunk * g.ohw()];
        for b0 in (0..g.batch).step_by(chunk) {
            let nb = chunk.min(g.batch - b0);
            let nc = nb * g.ohw();
            let col = &mut col[..g.groups * k * nc];
            im2col(g, x, b0, nb, col);
            for gi in 0..g.groups {
                let off = gi * cog * n + b0 * g.ohw();
                let dst = MatMut {
                    data: &mut y[off..],
                    rows: cog,
                    cols: nc,
                    rs: n,
                    cs: 1,
                };
                sgemm(
                    dst,
                    false,
                    Mat::rm(&w[gi * cog * k..(gi + 1) * cog * k], cog, k),
                    Mat::rm(&col[gi * k * nc..(gi + 1) * k * nc], k, nc),
                    1.0,
                );
            }
        }
    }
    if let Some(bias) = bias {
        y.par_chunks_mut(n.max(1))
            .zip(bias)
            .for_each(|(yc, &b)| yc.iter_mut().for_each(|v| *v += b));
    }
    y
}

/// Gradients of one convolution.
pub struct ConvGrads {
    /// dL/dW, `[Cout, Cin/groups, kh, kw]`.
    pub dw: Vec<f32>,
    /// dL/db when the op has a bias.
    pub db: Option<Vec<f32>>,
    /// dL/dx `[Cin, B, H, W]` when asked for.
    pub dx: Option<Vec<f32>>,
}

/// Backward: `dw = dy x col^T`, `dcol = W^T x dy` scattered back by
/// [`col2im`]. Columns are recomputed chunk by chunk.
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    has_bias: bool,
    want_dx: bool,
) -> ConvGrads {
    let n = g.batch * g.ohw();
    let (k, cog) = (g.k(), g.cog());
    let mut dw = vec![0.0f32; g.cout * k];
    let mut dx = want_dx.then(|| vec![0.0f32; g.cin * g.batch * g.h * g.w]);
    if g.pointwise() {
        for gi in 0..g.groups {
            let dyg = Mat::rm(&dy[gi * cog * n..(gi + 1) * cog * n], cog, n);
            let wg = Mat::rm(&w[gi * cog * k..(gi + 1) * cog * k], cog, k);
            let xg = Mat::rm(&x[gi * k * n..(gi + 1) * k * n], k, n);
            sgemm(
                MatMut::rm(&mut dw[gi * cog * k..(gi + 1) * cog * k], cog, k),
                false,
                dyg,
                xg.t(),
                1.0,
            );
            if let Some(dx) = dx.as_mut() {
                sgemm(
                    MatMut::rm(&mut dx[gi * k * n..(gi + 1) * k * n], k, n),
                    false,
                    wg.t(),
                    dyg,
                    1.0,
                );
            }
        }
    } else {
        let chunk = g.chunk();
        let mut col = vec![0.0f32; g.cin * g.kh * g.kw * chunk * g.ohw()];
        for (ci, b0) in (0..g.batch).step_by(chunk).enumerate() {
            let nb = chunk.min(g.batch - b0);
            let nc = nb * g.ohw();
            let col = &mut col[..g.groups * k * nc];
            im2col(g, x, b0, nb, col);
            for gi in 0..g.groups {
                let dyg = Mat {
                    data: &dy[gi * cog * n + b0 * g.ohw()..],
                    rows: cog,
                    cols: nc,
                    rs: n,
                    cs: 1,
                };
                sgemm(
                    MatMut::rm(&mut dw[gi * cog * k..(gi + 1) * cog * k], cog, k),
                    ci > 0,
                    dyg,
                    Mat::rm(&col[gi * k * nc..(gi + 1) * k * nc], k, nc).t(),
                    1.0,
                );
            }
            if let Some(dx) = dx.as_mut() {
                // The columns are consumed: reuse the buffer for dcol.
                for gi in 0..g.groups {
                    let dyg = Mat {
                        data: &dy[gi * cog * n + b0 * g.ohw()..],
                        rows: cog,
                        cols: nc,
                        rs: n,
                        cs: 1,
                    };
                    sgemm(
                        MatMut::rm(&mut col[gi * k * nc..(gi + 1) * k * nc], k, nc),
                        false,
                        Mat::rm(&w[gi * cog * k..(gi + 1) * cog * k], cog, k).t(),
                        dyg,
                        1.0,
                    );
                }
                col2im(g, col, b0, nb, dx);
            }
        }
    }
    let db = has_bias.then(|| {
        dy.par_chunks(n.max(1))
            .map(|c| super::eltwise::sum(c) as f32)
            .collect()
    });
    ConvGrads { dw, db, dx }
}
