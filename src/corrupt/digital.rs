//! Digital corruptions: brightness, contrast, elastic transform, pixelate
//! and JPEG compression.

use super::filters::{self, Border};
use super::geometry::{affine_from_points, displace_linear, warp_affine};
use super::{Image, to_u8};
use crate::rng::Rng;
use anyhow::Context;

/// skimage `rgb2hsv` of one pixel.
fn rgb2hsv([r, g, b]: [f64; 3]) -> [f64; 3] {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return [0.0, 0.0, v];
    }
    let s = delta / v;
    // Later matches win, as in skimage's successive masked assignments.
    let h = if b == v {
        4.0 + (r - g) / delta
    } else if g == v {
        2.0 + (b - r) / delta
    } else {
        (g - b) / delta
    };
    [(h / 6.0).rem_euclid(1.0), s, v]
}

/// skimage `hsv2rgb` of one pixel.
fn hsv2rgb([h, s, v]: [f64; 3]) -> [f64; 3] {
    let hi6 = (h * 6.0).floor();
    let f = h * 6.0 - hi6;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    match (hi6 as i64).rem_euclid(6) {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// HSV value + c (clipped), c = .05 .1 .15 .2 .3; a gray image adds c.
pub fn brightness(img: &Image, s: usize) -> Vec<u8> {
    let c = [0.05, 0.1, 0.15, 0.2, 0.3][s];
    let hw = img.h * img.w;
    if img.c != 3 {
        return to_u8(
            &img.data
                .iter()
                .map(|&v| (v + c).min(1.0))
                .collect::<Vec<_>>(),
        );
    }
    let mut out = vec![0.0; 3 * hw];
    for i in 0..hw {
        let mut hsv = rgb2hsv([img.data[i], img.data[hw + i], img.data[2 * hw + i]]);
        hsv[2] = (hsv[2] + c).clamp(0.0, 1.0);
        let rgb = hsv2rgb(hsv);
        for ch in 0..3 {
            out[ch * hw + i] = rgb[ch];
        }
    }
    to_u8(&out)
}

/// `(x − mean)·c + mean` with per-channel means, c = .75 .5 .4 .3 .15.
pub fn contrast(img: &Image, s: usize) -> Vec<u8> {
    let c = [0.75, 0.5, 0.4, 0.3, 0.15][s];
    let hw = img.h * img.w;
    let out: Vec<f64> = (0..img.c)
        .flat_map(|ch| {
            let p = img.plane(ch);
            let mean = p.iter().sum::<f64>() / hw as f64;
            p.iter().map(move |&v| (v - mean) * c + mean)
        })
        .collect();
    to_u8(&out)
}

/// A random affine warp (corners of a centred square moved by up to
/// `affine` px) then a smoothed random displacement field of scale `α`;
/// (α, σ, affine) in units of the image side `n` (32 for CIFAR):
/// (0,0,.08n) (.05n,.2n,.07n) (.08n,.06n,.06n) (.1n,.04n,.05n) (.1n,.03n,.03n).
pub fn elastic_transform(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let n = img.h.min(img.w) as f64;
    let (alpha, sigma, affine) = [
        (0.0, 0.0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ][s];
    let (alpha, sigma, affine) = (alpha * n, sigma * n, affine * n);
    let (c, h, w) = (img.c, img.h, img.w);
    let hw = h * w;
    // The reference's points, built from (rows, cols) and used as (x, y).
    let centre = [(h / 2) as f64, (w / 2) as f64];
    let sq = (h.min(w) / 3) as f64;
    let src = [
        [centre[0] + sq, centre[1] + sq],
        [centre[0] + sq, centre[1] - sq],
        [centre[0] - sq, centre[1] - sq],
    ];
    let mut dst = src;
    for p in dst.iter_mut() {
        for v in p.iter_mut() {
            *v = (*v + (-affine + 2.0 * affine * rng.uniform_f64()) as f32 as f64) as f32 as f64;
        }
    }
    let x: Vec<f64> = img.data.iter().map(|&v| v as f32 as f64).collect();
    let warped: Vec<f64> = match affine_from_points(src, dst) {
        Some(m) => (0..c)
            .flat_map(|ch| warp_affine(&x[ch * hw..(ch + 1) * hw], h, w, m))
            .collect(),
        None => x,
    };
    let mut field = || -> Vec<f64> {
        let u: Vec<f64> = (0..hw).map(|_| -1.0 + 2.0 * rng.uniform_f64()).collect();
        filters::gaussian_filter(&u, h, w, sigma, 3.0, Border::Reflect)
            .iter()
            .map(|&v| (v * alpha) as f32 as f64)
            .collect()
    };
    let dx = field();
    let dy = field();
    let out: Vec<f64> = (0..c)
        .flat_map(|ch| displace_linear(&warped[ch * hw..(ch + 1) * hw], h, w, &dy, &dx))
        .map(|v| v as f32 as f64)
        .collect();
    to_u8(&out)
}

/// PIL `resize(BOX)` coefficients from `n` to `m` samples, in PIL's 22-bit
/// fixed point: (first input index, weights) per output sample.
fn box_coeffs(n: usize, m: usize) -> Vec<(usize, Vec<i64>)> {
    const BITS: u32 = 22;
    let scale = n as f64 / m as f64;
    let fscale = scale.max(1.0);
    let support = 0.5 * fscale;
    (0..m)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let xmin = ((centre - support + 0.5) as isize).max(0) as usize;
            let xmax = (((centre + support + 0.5) as isize).min(n as isize) as usize).max(xmin);
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = (x as f64 - centre + 0.5) / fscale;
                    if t > -0.5 && t <= 0.5 { 1.0 } else { 0.0 }
                })
                .collect();
            let sum: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if sum != 0.0 { v / sum } else { v };
                    (v * (1u64 << BITS) as f64 + 0.5) as i64
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// One PIL 8-bit resampling pass along rows (`horizontal`) or columns.
fn resample_pass(src: &[u8], h: usize, w: usize, m: usize, horizontal: bool) -> Vec<u8> {
    const BITS: u32 = 22;
    let coeffs = box_coeffs(if horizontal { w } else { h }, m);
    let (oh, ow) = if horizontal { (h, m) } else { (m, w) };
    let mut out = vec![0u8; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            let (start, k) = &coeffs[if horizontal { x } else { y }];
            let mut acc: i64 = 1 << (BITS - 1);
            for (j, &kv) in k.iter().enumerate() {
                let v = if horizontal {
                    src[y * w + start + j]
                } else {
                    src[(start + j) * w + x]
                };
                acc += v as i64 * kv;
            }
            out[y * ow + x] = (acc >> BITS).clamp(0, 255) as u8;
        }
    }
    out
}

/// PIL `resize((nw, nh), BOX)` of one 8-bit plane: horizontal pass first.
fn pil_box_resize(src: &[u8], h: usize, w: usize, nh: usize, nw: usize) -> Vec<u8> {
    let a = if nw != w {
        resample_pass(src, h, w, nw, true)
    } else {
        src.to_vec()
    };
    if nh != h {
        resample_pass(&a, h, nw, nh, false)
    } else {
        a
    }
}

/// Box-downscale to `int(side·f)` and box-upscale back, f = .95 .9 .85 .75 .65.
pub fn pixelate(img: &Image, s: usize) -> Vec<u8> {
    let f = [0.95, 0.9, 0.85, 0.75, 0.65][s];
    let (h, w) = (img.h, img.w);
    let (sh, sw) = (
        ((h as f64 * f) as usize).max(1),
        ((w as f64 * f) as usize).max(1),
    );
    (0..img.c)
        .flat_map(|ch| {
            let small = pil_box_resize(&img.bytes[ch * h * w..(ch + 1) * h * w], h, w, sh, sw);
            pil_box_resize(&small, sh, sw, h, w)
        })
        .collect()
}

/// JPEG round trip at quality 80 65 58 50 40 with 4:2:0 chroma (box-averaged
/// like libjpeg), as PIL saves RGB images; gray images stay one-channel.
pub fn jpeg_compression(img: &Image, s: usize) -> anyhow::Result<Vec<u8>> {
    let quality = [80u8, 65, 58, 50, 40][s];
    let (c, h, w) = (img.c, img.h, img.w);
    let hw = h * w;
    let (wu, hu) = (
        u16::try_from(w).context("jpeg: image too wide")?,
        u16::try_from(h).context("jpeg: image too tall")?,
    );
    let mut buf = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut buf, quality);
    enc.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    enc.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    let (pixels, ct) = if c == 3 {
        let mut hwc = vec![0u8; 3 * hw];
        for i in 0..hw {
            for ch in 0..3 {
                hwc[i * 3 + ch] = img.bytes[ch * hw + i];
            }
        }
        (hwc, jpeg_encoder::ColorType::Rgb)
    } else {
        (img.bytes[..hw].to_vec(), jpeg_encoder::ColorType::Luma)
    };
    enc.encode(&pixels, wu, hu, ct)
        .context("jpeg: encoding failed")?;
    let decoded = image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .context("jpeg: decoding failed")?;
    let mut out = vec![0u8; c * hw];
    if c == 3 {
        let rgb = decoded.to_rgb8();
        for (i, p) in rgb.pixels().enumerate() {
            for ch in 0..3 {
                out[ch * hw + i] = p[ch];
            }
        }
    } else {
        out.copy_from_slice(decoded.to_luma8().as_raw());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trip() {
        for rgb in [
            [0.2, 0.5, 0.9],
            [0.9, 0.1, 0.1],
            [0.3, 0.3, 0.3],
            [0.0, 1.0, 0.5],
            [0.6, 0.6, 0.1],
        ] {
            let back = hsv2rgb(rgb2hsv(rgb));
            for ch in 0..3 {
                assert!((back[ch] - rgb[ch]).abs() < 1e-12, "{rgb:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn box_resize_averages_blocks() {
        // 4 -> 2 averages pairs; 2 -> 4 repeats.
        let src = [10u8, 20, 30, 50];
        assert_eq!(pil_box_resize(&src, 1, 4, 1, 2), [15, 40]);
        assert_eq!(pil_box_resize(&[15, 40], 1, 2, 1, 4), [15, 15, 40, 40]);
    }
}
