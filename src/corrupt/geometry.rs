//! Resampling with the semantics of the reference's library calls: scipy's
//! linear `zoom` (the reference's `clipped_zoom`), OpenCV's bilinear
//! `warpAffine` (1/32-pixel fixed-point positions, reflect-101 border) and
//! scipy's linear `map_coordinates` (`reflect` border).

use super::filters::Border;

/// `numpy.arange(start, stop, step)`: length `ceil((stop - start) / step)`,
/// values `start + i·step` (so `arange(1, 1.06, .01)` has 7 values).
pub fn numpy_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let n = ((stop - start) / step).ceil().max(0.0) as usize;
    (0..n).map(|i| start + i as f64 * step).collect()
}

/// Python's `round` (half to even) of a non-negative size.
fn round_half_even(v: f64) -> usize {
    v.round_ties_even().max(0.0) as usize
}

/// scipy `zoom(order=1)` of one `h × w` plane to `oh × ow`: output index
/// `o` reads input position `o·(in−1)/(out−1)` (scipy ≥ 1.6, no grid mode).
fn zoom_linear(plane: &[f64], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
    let scale = |i: usize, o: usize| {
        if o > 1 {
            (i as f64 - 1.0) / (o as f64 - 1.0)
        } else {
            0.0
        }
    };
    let (sy, sx) = (scale(h, oh), scale(w, ow));
    let taps = |pos: f64, n: usize| {
        let i0 = pos.floor() as isize;
        let f = pos - i0 as f64;
        let a = i0.clamp(0, n as isize - 1) as usize;
        let b = (i0 + 1).clamp(0, n as isize - 1) as usize;
        (a, b, f)
    };
    let xs: Vec<(usize, usize, f64)> = (0..ow).map(|x| taps(x as f64 * sx, w)).collect();
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        let (y0, y1, fy) = taps(y as f64 * sy, h);
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let top = plane[y0 * w + x0] * (1.0 - fx) + plane[y0 * w + x1] * fx;
            let bot = plane[y1 * w + x0] * (1.0 - fx) + plane[y1 * w + x1] * fx;
            out[y * ow + x] = top * (1.0 - fy) + bot * fy;
        }
    }
    out
}

/// The reference's `clipped_zoom`: crop the centre `ceil(n / z)` pixels,
/// zoom them linearly by `z`, and trim back to `h × w` around the centre.
/// The reference crops a square by the height; here each axis uses its own
/// size, which is the same for square images.
pub fn clipped_zoom(plane: &[f64], h: usize, w: usize, z: f64) -> Vec<f64> {
    let ch = ((h as f64 / z).ceil() as usize).clamp(1, h);
    let cw = ((w as f64 / z).ceil() as usize).clamp(1, w);
    let (top, left) = ((h - ch) / 2, (w - cw) / 2);
    let crop: Vec<f64> = (0..ch)
        .flat_map(|y| {
            plane[(top + y) * w + left..(top + y) * w + left + cw]
                .iter()
                .copied()
        })
        .collect();
    let (oh, ow) = (
        round_half_even(ch as f64 * z).max(1),
        round_half_even(cw as f64 * z).max(1),
    );
    let zoomed = zoom_linear(&crop, ch, cw, oh, ow);
    let (ty, tx) = (oh.saturating_sub(h) / 2, ow.saturating_sub(w) / 2);
    let mut out = vec![0.0; h * w];
    for y in 0..h.min(oh) {
        for x in 0..w.min(ow) {
            out[y * w + x] = zoomed[(ty + y) * ow + tx + x];
        }
    }
    out
}

/// OpenCV `getAffineTransform`: the 2×3 matrix taking the three `src`
/// points onto the three `dst` points, or `None` when `src` is degenerate.
pub fn affine_from_points(src: [[f64; 2]; 3], dst: [[f64; 2]; 3]) -> Option<[f64; 6]> {
    // Solve [x y 1]·m = u for each output coordinate (Cramer's rule).
    let det = src[0][0] * (src[1][1] - src[2][1]) - src[0][1] * (src[1][0] - src[2][0])
        + (src[1][0] * src[2][1] - src[2][0] * src[1][1]);
    if det.abs() < 1e-12 {
        return None;
    }
    let solve = |u: [f64; 3]| {
        let a = (u[0] * (src[1][1] - src[2][1]) - src[0][1] * (u[1] - u[2])
            + (u[1] * src[2][1] - u[2] * src[1][1]))
            / det;
        let b = (src[0][0] * (u[1] - u[2]) - u[0] * (src[1][0] - src[2][0])
            + (src[1][0] * u[2] - src[2][0] * u[1]))
            / det;
        let c = (src[0][0] * (src[1][1] * u[2] - src[2][1] * u[1])
            - src[0][1] * (src[1][0] * u[2] - src[2][0] * u[1])
            + u[0] * (src[1][0] * src[2][1] - src[2][0] * src[1][1]))
            / det;
        [a, b, c]
    };
    let r0 = solve([dst[0][0], dst[1][0], dst[2][0]]);
    let r1 = solve([dst[0][1], dst[1][1], dst[2][1]]);
    Some([r0[0], r0[1], r0[2], r1[0], r1[1], r1[2]])
}

/// The inverse of a 2×3 affine map, or `None` when it is singular.
pub fn invert_affine(m: [f64; 6]) -> Option<[f64; 6]> {
    let d = m[0] * m[4] - m[1] * m[3];
    if d.abs() < 1e-15 {
        return None;
    }
    let d = 1.0 / d;
    let (a11, a22, a12, a21) = (m[4] * d, m[0] * d, -m[1] * d, -m[3] * d);
    Some([
        a11,
        a12,
        -a11 * m[2] - a12 * m[5],
        a21,
        a22,
        -a21 * m[2] - a22 * m[5],
    ])
}

/// OpenCV `warpAffine(plane, m, (w, h), INTER_LINEAR, BORDER_REFLECT_101)`:
/// each output pixel reads the input at `m⁻¹·(x, y)`, positions rounded to
/// 1/32 pixel as OpenCV's fixed-point path does.
pub fn warp_affine(plane: &[f64], h: usize, w: usize, m: [f64; 6]) -> Vec<f64> {
    let Some(inv) = invert_affine(m) else {
        return vec![0.0; h * w];
    };
    const AB: f64 = 1024.0; // OpenCV's AB_SCALE (10 bits), then 5 interpolation bits.
    let round = |v: f64| v.round_ties_even() as i64;
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        let x0 = round((inv[1] * y as f64 + inv[2]) * AB) + 16;
        let y0 = round((inv[4] * y as f64 + inv[5]) * AB) + 16;
        for x in 0..w {
            let xx = (x0 + round(inv[0] * x as f64 * AB)) >> 5;
            let yy = (y0 + round(inv[3] * x as f64 * AB)) >> 5;
            let (ix, fx) = ((xx >> 5) as isize, (xx & 31) as f64 / 32.0);
            let (iy, fy) = ((yy >> 5) as isize, (yy & 31) as f64 / 32.0);
            let at = |yi: isize, xi: isize| {
                plane[Border::Reflect101.index(yi, h) * w + Border::Reflect101.index(xi, w)]
            };
            let top = at(iy, ix) * (1.0 - fx) + at(iy, ix + 1) * fx;
            let bot = at(iy + 1, ix) * (1.0 - fx) + at(iy + 1, ix + 1) * fx;
            out[y * w + x] = top * (1.0 - fy) + bot * fy;
        }
    }
    out
}

/// scipy `map_coordinates(order=1, mode='reflect')` of one plane at
/// `(row + dy, col + dx)` for every pixel.
pub fn displace_linear(plane: &[f64], h: usize, w: usize, dy: &[f64], dx: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        for x in 0..w {
            let (py, px) = (y as f64 + dy[y * w + x], x as f64 + dx[y * w + x]);
            let (iy, ix) = (py.floor() as isize, px.floor() as isize);
            let (fy, fx) = (py - iy as f64, px - ix as f64);
            let at = |yi: isize, xi: isize| {
                plane[Border::Reflect.index(yi, h) * w + Border::Reflect.index(xi, w)]
            };
            let top = at(iy, ix) * (1.0 - fx) + at(iy, ix + 1) * fx;
            let bot = at(iy + 1, ix) * (1.0 - fx) + at(iy + 1, ix + 1) * fx;
            out[y * w + x] = top * (1.0 - fy) + bot * fy;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_has_numpys_length() {
        let lens: Vec<usize> = [1.06, 1.11, 1.16, 1.21, 1.26]
            .iter()
            .map(|&stop| numpy_arange(1.0, stop, 0.01).len())
            .collect();
        // Measured with numpy 2.4: floating-point rounding adds one value
        // to some of the reference's zoom lists.
        assert_eq!(lens, [7, 12, 16, 21, 26]);
    }

    #[test]
    fn zoom_by_one_is_the_identity_and_keeps_constants() {
        let p: Vec<f64> = (0..35).map(|v| v as f64).collect();
        assert_eq!(clipped_zoom(&p, 5, 7, 1.0), p);
        let c = vec![0.25; 32 * 32];
        assert!(
            clipped_zoom(&c, 32, 32, 1.25)
                .iter()
                .all(|v| (v - 0.25).abs() < 1e-12)
        );
    }

    #[test]
    fn affine_round_trip() {
        let src = [[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]];
        let dst = [[27.0, 25.5], [25.0, 7.0], [6.5, 5.0]];
        let m = affine_from_points(src, dst).unwrap();
        for (s, d) in src.iter().zip(&dst) {
            let u = m[0] * s[0] + m[1] * s[1] + m[2];
            let v = m[3] * s[0] + m[4] * s[1] + m[5];
            assert!((u - d[0]).abs() < 1e-9 && (v - d[1]).abs() < 1e-9);
        }
        // The identity warp leaves the plane unchanged.
        let p: Vec<f64> = (0..20).map(|v| v as f64).collect();
        assert_eq!(warp_affine(&p, 4, 5, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]), p);
        let zero = vec![0.0; 20];
        assert_eq!(displace_linear(&p, 4, 5, &zero, &zero), p);
    }
}
