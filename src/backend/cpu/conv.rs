//! 2-D convolution on pixel-major `[B, H, W, C]` activations: im2row of a
//! chunk of images into `rows[pixels, K]` (K ordered kernel-row, kernel-col,
//! channel, so each tap copies one contiguous channel vector), then
//! `rows x W^T` gives the output chunk with channels contiguous. Chunks
//! run in parallel, each with a cache-sized row buffer and a single-threaded
//! GEMM; backward recomputes the rows instead of caching them.

use super::eltwise;
use super::gemm::{Mat, MatMut, sgemm, sgemm_serial};
use crate::ir::Conv2d;
use rayon::prelude::*;

/// Output pixels per chunk at least (GEMM efficiency wants tall products).
const MIN_ROWS: usize = 256;

/// Partial weight gradients per convolution backward pass (fixed so the
/// summation order, and thus the result, does not depend on thread count).
const DW_GROUPS: usize = 4;

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

    fn cig(&self) -> usize {
        self.cin / self.groups
    }

    fn cog(&self) -> usize {
        self.cout / self.groups
    }

    /// Reduction length of one group's GEMM: `Cin/groups * kh * kw`.
    fn kg(&self) -> usize {
        self.cig() * self.kh * self.kw
    }

    /// Row length of the im2row matrix (all groups).
    fn ktot(&self) -> usize {
        self.cin * self.kh * self.kw
    }

    fn ohw(&self) -> usize {
        self.oh * self.ow
    }

    /// 1x1, stride 1, no padding: the input already is the row matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }

    /// Images per chunk: enough output pixels for an efficient GEMM.
    fn images_per_chunk(&self) -> usize {
        MIN_ROWS
            .div_ceil(self.ohw().max(1))
            .clamp(1, self.batch.max(1))
    }

    /// Weights `[Cout, Cig, kh, kw]` to the row order `[Cout, kh, kw, Cig]`.
    fn permute(&self, w: &[f32]) -> Vec<f32> {
        let (cig, kk) = (self.cig(), self.kh * self.kw);
        let mut out = vec![0.0; w.len()];
        for (o, wo) in out.chunks_mut(self.kg()).zip(w.chunks(self.kg())) {
            for ci in 0..cig {
                for t in 0..kk {
                    o[t * cig + ci] = wo[ci * kk + t];
                }
            }
        }
        out
    }

    /// The convolution whose forward is this one's input gradient (stride
    /// 1, one group, `ph < kh`, `pw < kw`): `dy` in, `dx` out.
    fn transposed(&self) -> ConvGeom {
        ConvGeom {
            cin: self.cout,
            cout: self.cin,
            groups: 1,
            ph: self.kh - 1 - self.ph,
            pw: self.kw - 1 - self.pw,
            h: self.oh,
            w: self.ow,
            oh: self.h,
            ow: self.w,
            ..*self
        }
    }

    /// Weights `[Cout, Cin, kh, kw]` of an ungrouped convolution to those of
    /// [`Self::transposed`]: `[Cin, Cout, kh, kw]`, kernel flipped.
    fn flip(&self, w: &[f32]) -> Vec<f32> {
        let (kh, kw) = (self.kh, self.kw);
        let mut out = vec![0.0; w.len()];
        for co in 0..self.cout {
            for ci in 0..self.cin {
                let src = &w[(co * self.cin + ci) * kh * kw..][..kh * kw];
                let dst = &mut out[(ci * self.cout + co) * kh * kw..][..kh * kw];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
        out
    }

    /// Inverse of [`Self::permute`] (for the weight gradient).
    fn unpermute(&self, wt: &[f32]) -> Vec<f32> {
        let (cig, kk) = (self.cig(), self.kh * self.kw);
        let mut out = vec![0.0; wt.len()];
        for (o, wo) in out.chunks_mut(self.kg()).zip(wt.chunks(self.kg())) {
            for ci in 0..cig {
                for t in 0..kk {
                    o[ci * kk + t] = wo[t * cig + ci];
                }
            }
        }
        out
    }

    /// Input coordinate of output `o`, kernel tap `k`, if inside `[0, len)`.
    fn src(o: usize, s: usize, k: usize, p: usize, len: usize) -> Option<usize> {
        (o * s + k).checked_sub(p).filter(|&i| i < len)
    }

    /// The `[cog, kg]` block of permuted weights of group `gi`.
    fn wt_group<'a>(&self, wt: &'a [f32], gi: usize) -> Mat<'a> {
        let (cog, kg) = (self.cog(), self.kg());
        Mat::rm(&wt[gi * cog * kg..(gi + 1) * cog * kg], cog, kg)
    }
}

thread_local! {
    /// Per-thread im2row buffer, kept across calls so that every chunk of
    /// every step does not map (and page-fault) a fresh allocation.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` values (contents
/// unspecified: callers overwrite it).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (a nested rayon task on this thread): use a fresh one.
        Err(_) => f(&mut vec![0.0f32; len]),
    })
}

/// Fills `rows` (`[nb*OH*OW, Cin*kh*kw]`) from the `nb` images of `x`
/// (`[nb, H, W, Cin]`). Columns: group, kernel row, kernel col, channel.
fn im2row(g: &ConvGeom, x: &[f32], rows: &mut [f32]) {
    let (cin, cig, kg, ktot) = (g.cin, g.cig(), g.kg(), g.ktot());
    let in_img = g.h * g.w * cin;
    for (img, out) in x.chunks(in_img).zip(rows.chunks_mut(g.ohw() * ktot)) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let r = &mut out[(oy * g.ow + ox) * ktot..][..ktot];
                // Ungrouped, fully inside horizontally: each kernel row is one
                // contiguous run of kw pixels (one copy instead of kw).
                let inside = g.groups == 1 && ox * g.sw >= g.pw && ox * g.sw + g.kw <= g.w + g.pw;
                for ky in 0..g.kh {
                    let iy = ConvGeom::src(oy, g.sh, ky, g.ph, g.h);
                    if inside {
                        let run = g.kw * cin;
                        let dst = &mut r[ky * run..][..run];
                        match iy {
                            Some(iy) => {
                                let ix = ox * g.sw - g.pw;
                                dst.copy_from_slice(&img[(iy * g.w + ix) * cin..][..run]);
                            }
                            None => dst.fill(0.0),
                        }
                        continue;
                    }
                    for kx in 0..g.kw {
                        let ix = ConvGeom::src(ox, g.sw, kx, g.pw, g.w);
                        let t = ky * g.kw + kx;
                        match (iy, ix) {
                            (Some(iy), Some(ix)) => {
                                let src = &img[(iy * g.w + ix) * cin..][..cin];
                                for gi in 0..g.groups {
                                    r[gi * kg + t * cig..][..cig]
                                        .copy_from_slice(&src[gi * cig..][..cig]);
                                }
                            }
                            _ => {
                                for gi in 0..g.groups {
                                    r[gi * kg + t * cig..][..cig].fill(0.0);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Scatter-adds `rows` into `dx` (`[nb, H, W, Cin]`), the adjoint of [`im2row`].
fn row2im(g: &ConvGeom, rows: &[f32], dx: &mut [f32]) {
    let (cin, cig, kg, ktot) = (g.cin, g.cig(), g.kg(), g.ktot());
    let in_img = g.h * g.w * cin;
    for (img, src) in dx.chunks_mut(in_img).zip(rows.chunks(g.ohw() * ktot)) {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let r = &src[(oy * g.ow + ox) * ktot..][..ktot];
                for ky in 0..g.kh {
                    let Some(iy) = ConvGeom::src(oy, g.sh, ky, g.ph, g.h) else {
                        continue;
                    };
                    for kx in 0..g.kw {
                        let Some(ix) = ConvGeom::src(ox, g.sw, kx, g.pw, g.w) else {
                            continue;
                        };
                        let t = ky * g.kw + kx;
                        let d = &mut img[(iy * g.w + ix) * cin..][..cin];
                        for gi in 0..g.groups {
                            let s = &r[gi * kg + t * cig..][..cig];
                            for (a, &b) in d[gi * cig..][..cig].iter_mut().zip(s) {
                                *a += b;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[rows, cout] = rows[rows, ktot] x Wt^T`, group by group.
fn rows_times_wt(
    g: &ConvGeom,
    rows: &[f32],
    n: usize,
    ld: usize,
    wt: &[f32],
    dst: &mut [f32],
    serial: bool,
) {
    let (cog, kg) = (g.cog(), g.kg());
    for gi in 0..g.groups {
        let d = MatMut {
            data: &mut dst[gi * cog..],
            rows: n,
            cols: cog,
            rs: g.cout,
            cs: 1,
        };
        let l = Mat {
            data: &rows[gi * kg..],
            rows: n,
            cols: kg,
            rs: ld,
            cs: 1,
        };
        let r = g.wt_group(wt, gi).t();
        if serial {
            sgemm_serial(d, false, l, r, 1.0);
        } else {
            sgemm(d, false, l, r, 1.0);
        }
    }
}

/// Forward: `x` is `[B, H, W, Cin]`, `w` is `[Cout, Cin/groups, kh, kw]`;
/// returns `[B, OH, OW, Cout]`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let wt = g.permute(w);
    let n = g.batch * g.ohw();
    let mut y = vec![0.0f32; n * g.cout];
    if g.pointwise() {
        rows_times_wt(g, x, n, g.cin, &wt, &mut y, false);
    } else {
        let nb = g.images_per_chunk();
        let (out_img, in_img, ktot) = (g.ohw() * g.cout, g.h * g.w * g.cin, g.ktot());
        y.par_chunks_mut(nb * out_img)
            .zip(x.par_chunks(nb * in_img))
            .for_each(|(yc, xc)| {
                let rows = yc.len() / g.cout;
                with_scratch(rows * ktot, |buf| {
                    im2row(g, xc, buf);
                    rows_times_wt(g, buf, rows, ktot, &wt, yc, true);
                });
            });
    }
    if let Some(bias) = bias {
        y.par_chunks_mut((eltwise::CHUNK / g.cout).max(1) * g.cout)
            .for_each(|blk| {
                for row in blk.chunks_exact_mut(g.cout) {
                    row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b);
                }
            });
    }
    y
}

/// Gradients of one convolution.
pub struct ConvGrads {
    /// dL/dW, `[Cout, Cin/groups, kh, kw]`.
    pub dw: Vec<f32>,
    /// dL/db when the op has a bias.
    pub db: Option<Vec<f32>>,
    /// dL/dx `[B, H, W, Cin]` when asked for.
    pub dx: Option<Vec<f32>>,
}

/// One chunk of backward: adds this chunk's `dW` (row order) into `acc`
/// and, when `dxc` is given, writes the chunk's input gradient.
fn backward_chunk(
    g: &ConvGeom,
    xc: &[f32],
    dyc: &[f32],
    wt: &[f32],
    acc: &mut [f32],
    buf: &mut [f32],
    dxc: Option<&mut [f32]>,
) {
    let (cog, kg, ktot) = (g.cog(), g.kg(), g.ktot());
    let rows = dyc.len() / g.cout;
    let (src, ld): (&[f32], usize) = if g.pointwise() {
        (xc, g.cin)
    } else {
        im2row(g, xc, &mut buf[..rows * ktot]);
        (&buf[..rows * ktot], ktot)
    };
    for gi in 0..g.groups {
        // dW_g[cog, kg] += dY_g^T[cog, rows] x rows_g[rows, kg]
        let lhs = Mat {
            data: &dyc[gi * cog..],
            rows: cog,
            cols: rows,
            rs: 1,
            cs: g.cout,
        };
        let rhs = Mat {
            data: &src[gi * kg..],
            rows,
            cols: kg,
            rs: ld,
            cs: 1,
        };
        sgemm_serial(
            MatMut::rm(&mut acc[gi * cog * kg..(gi + 1) * cog * kg], cog, kg),
            true,
            lhs,
            rhs,
            1.0,
        );
    }
    let Some(dxc) = dxc else { return };
    if g.pointwise() {
        dy_times_wt(g, dyc, wt, dxc, g.cin);
    } else {
        let drows = &mut buf[..rows * ktot];
        dy_times_wt(g, dyc, wt, drows, ktot);
        row2im(g, drows, dxc);
    }
}

/// `dst[rows, kg] = dY_g[rows, cog] x Wt_g[cog, kg]` for every group, `dst`
/// with row stride `ld`.
fn dy_times_wt(g: &ConvGeom, dyc: &[f32], wt: &[f32], dst: &mut [f32], ld: usize) {
    let (cog, kg) = (g.cog(), g.kg());
    let rows = dyc.len() / g.cout;
    for gi in 0..g.groups {
        let d = MatMut {
            data: &mut dst[gi * kg..],
            rows,
            cols: kg,
            rs: ld,
            cs: 1,
        };
        let lhs = Mat {
            data: &dyc[gi * cog..],
            rows,
            cols: cog,
            rs: g.cout,
            cs: 1,
        };
        sgemm_serial(d, false, lhs, g.wt_group(wt, gi), 1.0);
    }
}

/// Backward: per chunk of images, `dW += dY^T x rows` (summed over chunks)
/// and `drows = dY x Wt` scattered back by [`row2im`].
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    has_bias: bool,
    want_dx: bool,
) -> ConvGrads {
    // Stride 1, ungrouped: dx is itself a convolution of dy (flipped,
    // transposed weights, complementary padding), a GEMM with a reduction of
    // Cout*kh*kw and no scatter-add, instead of dY x Wt (reduction Cout) and
    // row2im.
    let direct_dx = want_dx
        && g.groups == 1
        && !g.pointwise()
        && g.sh == 1
        && g.sw == 1
        && g.ph < g.kh
        && g.pw < g.kw;
    let dx_direct = direct_dx.then(|| forward(&g.transposed(), dy, &g.flip(w), None));
    let want_dx = want_dx && !direct_dx;
    let wt = g.permute(w);
    let nb = if g.pointwise() {
        // No row buffer: chunks only bound the partial dW count.
        g.batch
            .div_ceil(rayon::current_num_threads().max(1) * 4)
            .max(1)
    } else {
        g.images_per_chunk()
    };
    let (out_img, in_img) = (g.ohw() * g.cout, g.h * g.w * g.cin);
    let wlen = g.cout * g.kg();
    // Images are split into a fixed number of contiguous groups, each
    // accumulating its own partial dW; the partials are summed in group
    // order. Unlike a rayon fold/reduce, whose grouping follows work
    // stealing, this gives bit-identical gradients on every run.
    let chunks = g.batch.div_ceil(nb).max(1);
    let per_group = nb * chunks.div_ceil(chunks.min(DW_GROUPS));
    let group = |xg: &[f32], dyg: &[f32], dxg: Option<&mut [f32]>| {
        let mut acc = vec![0.0f32; wlen];
        let buf_len = if g.pointwise() {
            0
        } else {
            nb * g.ohw() * g.ktot()
        };
        with_scratch(buf_len, |buf| match dxg {
            Some(dxg) => {
                for ((dxc, xc), dyc) in dxg
                    .chunks_mut(nb * in_img)
                    .zip(xg.chunks(nb * in_img))
                    .zip(dyg.chunks(nb * out_img))
                {
                    backward_chunk(g, xc, dyc, &wt, &mut acc, buf, Some(dxc));
                }
            }
            None => {
                for (xc, dyc) in xg.chunks(nb * in_img).zip(dyg.chunks(nb * out_img)) {
                    backward_chunk(g, xc, dyc, &wt, &mut acc, buf, None);
                }
            }
        });
        acc
    };
    let sum_in_order = |parts: Vec<Vec<f32>>| {
        let mut it = parts.into_iter();
        let mut total = it.next().unwrap_or_else(|| vec![0.0f32; wlen]);
        for p in it {
            total.iter_mut().zip(p).for_each(|(a, b)| *a += b);
        }
        total
    };
    let (dwt, dx) = if want_dx {
        let mut dx = vec![0.0f32; g.batch * in_img];
        let parts: Vec<Vec<f32>> = dx
            .par_chunks_mut(per_group * in_img)
            .zip(x.par_chunks(per_group * in_img))
            .zip(dy.par_chunks(per_group * out_img))
            .map(|((dxg, xg), dyg)| group(xg, dyg, Some(dxg)))
            .collect();
        (sum_in_order(parts), Some(dx))
    } else {
        let parts: Vec<Vec<f32>> = x
            .par_chunks(per_group * in_img)
            .zip(dy.par_chunks(per_group * out_img))
            .map(|(xg, dyg)| group(xg, dyg, None))
            .collect();
        (sum_in_order(parts), None)
    };
    let db = has_bias.then(|| {
        eltwise::col_sum(dy, g.cout)
            .iter()
            .map(|&v| v as f32)
            .collect()
    });
    ConvGrads {
        dw: g.unpermute(&dwt),
        db,
        dx: dx.or(dx_direct),
    }
}
