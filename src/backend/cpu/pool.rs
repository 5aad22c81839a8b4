//! Max, average and global average pooling over channel-major activations:
//! each `[H, W]` plane (one channel of one image) is independent.

use crate::ir::Pool;
use rayon::prelude::*;

/// Planes per rayon task.
const PLANES: usize = 64;

/// Geometry of one pooling call on `planes` planes of `h x w`.
#[derive(Clone, Copy, Debug)]
pub struct PoolGeom {
    pub planes: usize,
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
    pub fn new(p: &Pool, planes: usize, h: usize, w: usize, oh: usize, ow: usize) -> Self {
        PoolGeom {
            planes,
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
        let start = (o * s) as isize - p as isize;
        let lo = start.max(0) as usize;
        let hi = ((start + k as isize).max(0) as usize).min(len);
        (lo, hi)
    }
}

/// Max pooling forward. Returns the output and, per output, the index of
/// the winning input inside its plane (first maximum wins, padding is -inf).
pub fn max_forward(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut y = vec![0.0f32; g.planes * ohw];
    let mut idx = vec![0u32; g.planes * ohw];
    y.par_chunks_mut(ohw * PLANES)
        .zip(idx.par_chunks_mut(ohw * PLANES))
        .zip(x.par_chunks(hw * PLANES))
        .for_each(|((yc, ic), xc)| {
            for ((yp, ip), xp) in yc.chunks_mut(ohw).zip(ic.chunks_mut(ohw)).zip(xc.chunks(hw)) {
                for oy in 0..g.oh {
                    let (y0, y1) = PoolGeom::window(oy, g.sh, g.kh, g.ph, g.h);
                    for ox in 0..g.ow {
                        let (x0, x1) = PoolGeom::window(ox, g.sw, g.kw, g.pw, g.w);
                        let mut best = f32::NEG_INFINITY;
                        let mut at = y0 * g.w + x0;
                        for iy in y0..y1 {
                            for ix in x0..x1 {
                                let v = xp[iy * g.w + ix];
                                if v > best {
                                    best = v;
                                    at = iy * g.w + ix;
                                }
                            }
                        }
                        yp[oy * g.ow + ox] = best;
                        ip[oy * g.ow + ox] = at as u32;
                    }
                }
            }
        });
    (y, idx)
}

/// Max pooling backward: routes each output gradient to its winner.
pub fn max_backward(g: &PoolGeom, dy: &[f32], idx: &[u32]) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let mut dx = vec![0.0f32; g.planes * hw];
    dx.par_chunks_mut(hw * PLANES)
        .zip(dy.par_chunks(ohw * PLANES))
        .zip(idx.par_chunks(ohw * PLANES))
        .for_each(|((dxc, dyc), ic)| {
            for ((dxp, dyp), ip) in dxc.chunks_mut(hw).zip(dyc.chunks(ohw)).zip(ic.chunks(ohw)) {
                for (&d, &i) in dyp.iter().zip(ip) {
                    dxp[i as usize] += d;
                }
            }
        });
    dx
}

/// Average pooling forward; padded cells count as zeros in the divisor
/// (`count_include_pad = true`), so every window divides by `kh * kw`.
pub fn avg_forward(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let inv = 1.0 / (g.kh * g.kw) as f32;
    let mut y = vec![0.0f32; g.planes * ohw];
    y.par_chunks_mut(ohw * PLANES)
        .zip(x.par_chunks(hw * PLANES))
        .for_each(|(yc, xc)| {
            for (yp, xp) in yc.chunks_mut(ohw).zip(xc.chunks(hw)) {
                for oy in 0..g.oh {
                    let (y0, y1) = PoolGeom::window(oy, g.sh, g.kh, g.ph, g.h);
                    for ox in 0..g.ow {
                        let (x0, x1) = PoolGeom::window(ox, g.sw, g.kw, g.pw, g.w);
                        let mut s = 0.0;
                        for iy in y0..y1 {
                            s += xp[iy * g.w + x0..iy * g.w + x1].iter().sum::<f32>();
                        }
                        yp[oy * g.ow + ox] = s * inv;
                    }
                }
            }
        });
    y
}

/// Average pooling backward (adjoint of [`avg_forward`]).
pub fn avg_backward(g: &PoolGeom, dy: &[f32]) -> Vec<f32> {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let inv = 1.0 / (g.kh * g.kw) as f32;
    let mut dx = vec![0.0f32; g.planes * hw];
    dx.par_chunks_mut(hw * PLANES)
        .zip(dy.par_chunks(ohw * PLANES))
        .for_each(|(dxc, dyc)| {
            for (dxp, dyp) in dxc.chunks_mut(hw).zip(dyc.chunks(ohw)) {
                for oy in 0..g.oh {
                    let (y0, y1) = PoolGeom::window(oy, g.sh, g.kh, g.ph, g.h);
                    for ox in 0..g.ow {
                        let (x0, x1) = PoolGeom::window(ox, g.sw, g.kw, g.pw, g.w);
                        let d = dyp[oy * g.ow + ox] * inv;
                        for iy in y0..y1 {
                            dxp[iy * g.w + x0..iy * g.w + x1]
                                .iter_mut()
                                .for_each(|v| *v += d);
                        }
                    }
                }
            }
        });
    dx
}

/// Global average pooling: `[C, B, S] -> [C, B]` (already the feature-major
/// layout linear layers read).
pub fn gap_forward(x: &[f32], s: usize) -> Vec<f32> {
    let inv = 1.0 / s.max(1) as f32;
    x.par_chunks(s.max(1))
        .map(|p| p.iter().sum::<f32>() * inv)
        .collect()
}

/// Global average pooling backward: spreads each gradient evenly.
pub fn gap_backward(dy: &[f32], s: usize) -> Vec<f32> {
    let inv = 1.0 / s.max(1) as f32;
    let mut dx = vec![0.0f32; dy.len() * s];
    dx.par_chunks_mut(s.max(1))
        .zip(dy)
        .for_each(|(p, &d)| p.fill(d * inv));
    dx
}
