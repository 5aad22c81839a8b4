//! AugMix (Hendrycks et al., ICLR 2020) on uint8 CHW images.
//!
//! Three chains of one to three randomly chosen operations each are applied
//! to the image; the chains are mixed with Dirichlet(1, 1, 1) weights and the
//! mixture is blended with the original by m ~ Beta(1, 1). The operations
//! are those of the reference code that do not overlap the CIFAR-10-C test
//! corruptions: autocontrast, equalize, posterize, rotate, solarize, shear
//! x/y and translate x/y, at severity 3. Each follows PIL's semantics on
//! 8-bit images (per-channel look-up tables, affine warps with bilinear
//! sampling and black fill), written here for any channel count and size.
//!
//! Mixing happens on the bytes (rounded back to uint8): normalization is
//! affine per channel and the weights sum to one, so mixing before or after
//! normalization gives the same image up to that rounding.

use crate::rng::Rng;

/// Number of augmentation chains mixed together.
pub const WIDTH: usize = 3;
/// Longest chain; each chain's depth is uniform in `1..=MAX_DEPTH`.
pub const MAX_DEPTH: usize = 3;
/// Strength of the operations (the reference's `aug_severity`, out of 10).
pub const SEVERITY: f32 = 3.0;

/// One AugMix operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Posterize,
    Rotate,
    Solarize,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
}

impl Op {
    /// Every operation, in the reference's order.
    pub const ALL: [Op; 9] = [
        Op::AutoContrast,
        Op::Equalize,
        Op::Posterize,
        Op::Rotate,
        Op::Solarize,
        Op::ShearX,
        Op::ShearY,
        Op::TranslateX,
        Op::TranslateY,
    ];

    /// Applies the operation at `severity` (out of 10), drawing its strength
    /// and direction from `rng` as the reference does: a level uniform in
    /// [0.1, severity), scaled to the operation's maximum.
    pub fn apply(
        self,
        img: &[u8],
        c: usize,
        h: usize,
        w: usize,
        severity: f32,
        rng: &mut Rng,
    ) -> Vec<u8> {
        let level = |rng: &mut Rng| rng.range(0.1, severity.max(0.1));
        // int(level * max / 10) and float(level) * max / 10 of the reference.
        let int_param = |l: f32, max: f32| (l * max / 10.0) as i64;
        let float_param = |l: f32, max: f32| l * max / 10.0;
        let sign = |rng: &mut Rng| if rng.uniform() > 0.5 { -1.0 } else { 1.0 };
        match self {
            Op::AutoContrast => autocontrast(img, c, h, w),
            Op::Equalize => equalize(img, c, h, w),
            Op::Posterize => {
                let l = level(rng);
                posterize(img, (4 - int_param(l, 4.0)).clamp(0, 8) as u32)
            }
            Op::Rotate => {
                let l = level(rng);
                let deg = int_param(l, 30.0) as f32;
                rotate(img, c, h, w, deg * sign(rng))
            }
            Op::Solarize => {
                let l = level(rng);
                solarize(img, (256 - int_param(l, 256.0)).clamp(0, 256) as u32)
            }
            Op::ShearX | Op::ShearY => {
                let l = level(rng);
                let s = float_param(l, 0.3) * sign(rng);
                if self == Op::ShearX {
                    affine(img, c, h, w, [1.0, s as f64, 0.0, 0.0, 1.0, 0.0])
                } else {
                    affine(img, c, h, w, [1.0, 0.0, 0.0, s as f64, 1.0, 0.0])
                }
            }
            Op::TranslateX => {
                let l = level(rng);
                let k = int_param(l, w as f32 / 3.0) as f32 * sign(rng);
                translate(img, c, h, w, k as i64, 0)
            }
            Op::TranslateY => {
                let l = level(rng);
                let k = int_param(l, h as f32 / 3.0) as f32 * sign(rng);
                translate(img, c, h, w, 0, k as i64)
            }
        }
    }
}

/// AugMix of `image` (CHW, `c` x `h` x `w`): [`WIDTH`] chains of depth
/// 1–[`MAX_DEPTH`] at [`SEVERITY`], mixed with Dirichlet(1) weights and
/// blended with the image by m ~ Beta(1, 1), rounded to uint8. The base
/// flip and crop are not included (see [`super::Augment::AugMix`]), so the
/// JSD loss can draw two views of the same cropped image.
///
/// Panics if `image.len() != c * h * w` (a caller bug).
pub fn augmix(image: &[u8], c: usize, h: usize, w: usize, rng: &mut Rng) -> Vec<u8> {
    assert_eq!(
        image.len(),
        c * h * w,
        "augmix: image size does not match {c}x{h}x{w}"
    );
    let ws = dirichlet(rng, &[1.0; WIDTH]);
    let m = beta(rng, 1.0, 1.0) as f32;
    let mut mix = vec![0f32; image.len()];
    for &wt in &ws {
        let depth = 1 + rng.below(MAX_DEPTH);
        let mut chain = image.to_vec();
        for _ in 0..depth {
            let op = Op::ALL[rng.below(Op::ALL.len())];
            chain = op.apply(&chain, c, h, w, SEVERITY, rng);
        }
        for (acc, &v) in mix.iter_mut().zip(&chain) {
            *acc += wt as f32 * v as f32;
        }
    }
    image
        .iter()
        .zip(&mix)
        .map(|(&x, &a)| ((1.0 - m) * x as f32 + m * a).round().clamp(0.0, 255.0) as u8)
        .collect()
}

// ------------------------------------------------------------ operations

/// Applies one 256-entry look-up table per channel.
fn map_planes(img: &[u8], h: usize, w: usize, lut_of: impl Fn(&[u8]) -> [u8; 256]) -> Vec<u8> {
    let plane = (h * w).max(1);
    let mut out = Vec::with_capacity(img.len());
    for p in img.chunks(plane) {
        let lut = lut_of(p);
        out.extend(p.iter().map(|&v| lut[v as usize]));
    }
    out
}

fn histogram(p: &[u8]) -> [usize; 256] {
    let mut hist = [0usize; 256];
    for &v in p {
        hist[v as usize] += 1;
    }
    hist
}

fn identity_lut() -> [u8; 256] {
    std::array::from_fn(|i| i as u8)
}

/// PIL's `ImageOps.autocontrast` (no cutoff): per channel, stretches the
/// darkest value to 0 and the brightest to 255 (truncating like PIL);
/// constant channels are unchanged.
pub fn autocontrast(img: &[u8], _c: usize, h: usize, w: usize) -> Vec<u8> {
    map_planes(img, h, w, |p| {
        let hist = histogram(p);
        let lo = hist.iter().position(|&n| n > 0).unwrap_or(0);
        let hi = hist.iter().rposition(|&n| n > 0).unwrap_or(0);
        if hi <= lo {
            return identity_lut();
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        std::array::from_fn(|i| (i as f64 * scale + offset).clamp(0.0, 255.0) as i64 as u8)
    })
}

/// PIL's `ImageOps.equalize` (Pillow 13): per channel, maps values through
/// the cumulative histogram so that they spread evenly over 0–255 (PIL's
/// exact integer rule, including the unchanged image when the histogram is
/// too small to spread).
pub fn equalize(img: &[u8], _c: usize, h: usize, w: usize) -> Vec<u8> {
    map_planes(img, h, w, |p| {
        let hist = histogram(p);
        let used: Vec<usize> = hist.iter().copied().filter(|&n| n > 0).collect();
        if used.len() <= 1 {
            return identity_lut();
        }
        let last = used[used.len() - 1];
        // Current Pillow divides by 255 (older releases, which the AugMix
        // authors ran, by 256; the difference is one level at most).
        let step = (used.iter().sum::<usize>() - last) / 255;
        if step == 0 {
            return identity_lut();
        }
        let mut n = step / 2;
        let mut lut = [0u8; 256];
        for (i, l) in lut.iter_mut().enumerate() {
            *l = (n / step).min(255) as u8;
            n += hist[i];
        }
        lut
    })
}

/// PIL's `ImageOps.posterize`: keeps the `bits` most significant bits.
pub fn posterize(img: &[u8], bits: u32) -> Vec<u8> {
    let mask = if bits >= 8 { 0xff } else { !(0xffu8 >> bits) };
    img.iter().map(|&v| v & mask).collect()
}

/// PIL's `ImageOps.solarize`: inverts every value at or above `threshold`.
pub fn solarize(img: &[u8], threshold: u32) -> Vec<u8> {
    img.iter()
        .map(|&v| if (v as u32) < threshold { v } else { 255 - v })
        .collect()
}

/// Shift by whole pixels: output (x, y) reads input (x + dx, y + dy), black
/// outside (PIL's affine translate with an integer offset).
pub fn translate(img: &[u8], c: usize, h: usize, w: usize, dx: i64, dy: i64) -> Vec<u8> {
    affine(img, c, h, w, [1.0, 0.0, dx as f64, 0.0, 1.0, dy as f64])
}

/// PIL's `Image.rotate(degrees, resample=BILINEAR)`: counter-clockwise
/// about the image centre, same size, black fill.
pub fn rotate(img: &[u8], c: usize, h: usize, w: usize, degrees: f32) -> Vec<u8> {
    let a = -(degrees as f64).to_radians();
    // PIL rounds to 15 decimals, which makes multiples of 90° exact.
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (cos, sin) = (round15(a.cos()), round15(a.sin()));
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    // PIL: matrix (cos, sin, 0, -sin, cos, 0) applied to (-cx, -cy), plus centre.
    let m = [
        cos,
        sin,
        cos * -cx + sin * -cy + cx,
        -sin,
        cos,
        -sin * -cx + cos * -cy + cy,
    ];
    affine(img, c, h, w, m)
}

/// PIL's `Image.transform(size, AFFINE, m, BILINEAR)` on each channel:
/// output pixel (x, y) samples the input at
/// `(m0·(x+½) + m1·(y+½) + m2, m3·(x+½) + m4·(y+½) + m5)` in continuous
/// coordinates; points outside the image are black (PIL's default fill),
/// neighbours past the edge repeat the edge pixel, and the interpolated
/// value is truncated. Checked pixel-exact against Pillow 13.
pub fn affine(img: &[u8], c: usize, h: usize, w: usize, m: [f64; 6]) -> Vec<u8> {
    let mut out = vec![0u8; img.len()];
    if h == 0 || w == 0 {
        return out;
    }
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let (xo, yo) = (x as f64 + 0.5, y as f64 + 0.5);
                let xin = m[0] * xo + m[1] * yo + m[2];
                let yin = m[3] * xo + m[4] * yo + m[5];
                if !(xin >= 0.0 && xin < w as f64 && yin >= 0.0 && yin < h as f64) {
                    continue;
                }
                let (xs, ys) = (xin - 0.5, yin - 0.5);
                let (x0, y0) = (xs.floor(), ys.floor());
                let (fx, fy) = (xs - x0, ys - y0);
                let clampx = |v: f64| v.clamp(0.0, (w - 1) as f64) as usize;
                let clampy = |v: f64| v.clamp(0.0, (h - 1) as f64) as usize;
                let (xa, xb) = (clampx(x0), clampx(x0 + 1.0));
                let (ya, yb) = (clampy(y0), clampy(y0 + 1.0));
                let px = |yy: usize, xx: usize| src[yy * w + xx] as f64;
                let top = px(ya, xa) + fx * (px(ya, xb) - px(ya, xa));
                let bot = px(yb, xa) + fx * (px(yb, xb) - px(yb, xa));
                let v = top + fy * (bot - top);
                // PIL truncates the interpolated value for 8-bit images.
                dst[y * w + x] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

// ------------------------------------------------------------ sampling

/// Gamma(shape, 1) by Marsaglia and Tsang's squeeze method; shapes below 1
/// use the boost Gamma(a) = Gamma(a + 1) · U^(1/a). `shape` must be positive.
pub fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    debug_assert!(shape > 0.0);
    if shape < 1.0 {
        let u = rng.uniform_f64().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal() as f64;
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = rng.uniform_f64();
        if u < 1.0 - 0.0331 * x.powi(4)
            || u.max(f64::MIN_POSITIVE).ln() < 0.5 * x * x + d * (1.0 - v + v.ln())
        {
            return d * v;
        }
    }
}

/// A draw from Dirichlet(alpha): normalized Gamma(alpha_i) draws (sums to 1).
pub fn dirichlet(rng: &mut Rng, alpha: &[f64]) -> Vec<f64> {
    let g: Vec<f64> = alpha.iter().map(|&a| gamma(rng, a)).collect();
    let s: f64 = g.iter().sum();
    if s > 0.0 {
        g.iter().map(|v| v / s).collect()
    } else {
        vec![1.0 / alpha.len().max(1) as f64; alpha.len()]
    }
}

/// A draw from Beta(a, b) as X / (X + Y) with X ~ Gamma(a), Y ~ Gamma(b).
pub fn beta(rng: &mut Rng, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y > 0.0 { x / (x + y) } else { 0.5 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moments(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        (mean, xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
    }

    #[test]
    fn gamma_has_mean_and_variance_equal_to_its_shape() {
        let mut rng = Rng::new(4);
        for shape in [0.5, 1.0, 3.0] {
            let xs: Vec<f64> = (0..50_000).map(|_| gamma(&mut rng, shape)).collect();
            let (m, v) = moments(&xs);
            assert!(xs.iter().all(|&x| x >= 0.0));
            assert!(
                (m - shape).abs() < 0.03 * shape.max(1.0),
                "shape {shape}: mean {m}"
            );
            assert!(
                (v - shape).abs() < 0.08 * shape.max(1.0),
                "shape {shape}: var {v}"
            );
        }
    }

    #[test]
    fn dirichlet_sums_to_one_with_uniform_marginals() {
        let mut rng = Rng::new(5);
        let draws: Vec<Vec<f64>> = (0..30_000)
            .map(|_| dirichlet(&mut rng, &[1.0; 3]))
            .collect();
        assert!(
            draws
                .iter()
                .all(|d| (d.iter().sum::<f64>() - 1.0).abs() < 1e-12)
        );
        // Dirichlet(1,1,1) marginals are Beta(1, 2): mean 1/3, variance 1/18.
        let first: Vec<f64> = draws.iter().map(|d| d[0]).collect();
        let (m, v) = moments(&first);
        assert!((m - 1.0 / 3.0).abs() < 0.01, "{m}");
        assert!((v - 1.0 / 18.0).abs() < 0.004, "{v}");
    }

    #[test]
    fn beta_one_one_is_uniform() {
        let mut rng = Rng::new(6);
        let xs: Vec<f64> = (0..30_000).map(|_| beta(&mut rng, 1.0, 1.0)).collect();
        let (m, v) = moments(&xs);
        assert!(
            (m - 0.5).abs() < 0.01 && (v - 1.0 / 12.0).abs() < 0.003,
            "{m} {v}"
        );
        let low = xs.iter().filter(|&&x| x < 0.25).count() as f64 / xs.len() as f64;
        assert!((low - 0.25).abs() < 0.015, "{low}");
    }
}
