//! Weather corruptions: snow, frost and fog.

use super::frost_texture::FrostTexture;
use super::geometry::clipped_zoom;
use super::plasma::plasma_fractal;
use super::{Image, motion, to_u8};
use crate::rng::Rng;

/// A snow layer (thresholded, zoomed Gaussian noise, motion-blurred by
/// ImageMagick) added twice (once rotated by 180°) to a brightened image.
pub fn snow(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let (loc, scale, zoom, thresh, radius, sigma, keep) = [
        (0.1, 0.2, 1.0, 0.6, 8.0, 3.0, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10.0, 4.0, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10.0, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12.0, 6.0, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14.0, 12.0, 0.8),
    ][s];
    let (c, h, w) = (img.c, img.h, img.w);
    let hw = h * w;
    let layer: Vec<f64> = (0..hw).map(|_| loc + scale * rng.normal() as f64).collect();
    let layer = clipped_zoom(&layer, h, w, zoom);
    let layer: Vec<u8> = layer
        .iter()
        .map(|&v| {
            if v < thresh {
                0
            } else {
                (v.clamp(0.0, 1.0) * 255.0) as u8
            }
        })
        .collect();
    let angle = -135.0 + 90.0 * rng.uniform_f64();
    let layer: Vec<f32> = motion::motion_blur_u8(&layer, 1, h, w, radius, sigma, angle)
        .iter()
        .map(|&v| v as f32 / 255.0)
        .collect();
    // The reference works in float32 here.
    let x: Vec<f32> = img.data.iter().map(|&v| v as f32).collect();
    let gray: Vec<f32> = if c == 3 {
        (0..hw)
            .map(|i| 0.299 * x[i] + 0.587 * x[hw + i] + 0.114 * x[2 * hw + i])
            .collect()
    } else {
        x[..hw].to_vec()
    };
    let keep = keep as f32;
    let mut out = vec![0.0f64; c * hw];
    for ch in 0..c {
        for i in 0..hw {
            let v = x[ch * hw + i];
            let bright = v.max(gray[i] * 1.5 + 0.5);
            let v = keep * v + (1.0 - keep) * bright;
            out[ch * hw + i] = (v + layer[i] + layer[hw - 1 - i]) as f64;
        }
    }
    to_u8(&out)
}

/// `a·x + b·frost` on the 0..255 scale, with a random crop of a random
/// texture; (a, b) = (1,.2) (1,.3) (.9,.4) (.85,.4) (.75,.45).
pub fn frost(
    img: &Image,
    s: usize,
    rng: &mut Rng,
    textures: &[FrostTexture],
) -> anyhow::Result<Vec<u8>> {
    let (a, b) = [
        (1.0, 0.2),
        (1.0, 0.3),
        (0.9, 0.4),
        (0.85, 0.4),
        (0.75, 0.45),
    ][s];
    let (c, h, w) = (img.c, img.h, img.w);
    if textures.is_empty() {
        anyhow::bail!("frost: no frost textures");
    }
    let t = &textures[rng.below(textures.len())];
    if t.h <= h || t.w <= w {
        anyhow::bail!(
            "frost: texture {} is {}x{}, smaller than the {}x{} images (it must be larger on both sides)",
            t.name,
            t.w,
            t.h,
            w,
            h
        );
    }
    // randint(0, n - size) excludes the last offset, as in the reference.
    let y0 = rng.below(t.h - h);
    let x0 = rng.below(t.w - w);
    let hw = h * w;
    let mut out = vec![0u8; c * hw];
    for y in 0..h {
        for x in 0..w {
            let p = t.pixel(y0 + y, x0 + x);
            let gray = 0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2];
            for ch in 0..c {
                let f = if c == 3 { p[ch] } else { gray };
                let v = a * img.bytes[ch * hw + y * w + x] as f64 + b * f;
                out[ch * hw + y * w + x] = v.clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(out)
}

/// Adds a plasma fractal, rescaled by the image maximum; (strength, decay)
/// = (.2,3) (.5,3) (.75,2.5) (1,2) (1.5,1.75). The fractal is the next
/// power of two at least as large as the image, cropped (32 for CIFAR).
pub fn fog(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let (strength, decay) = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][s];
    let (c, h, w) = (img.c, img.h, img.w);
    let size = h.max(w).next_power_of_two().max(2);
    let plasma = plasma_fractal(size, decay, rng);
    let max = img.data.iter().cloned().fold(0.0, f64::max);
    let mut out = vec![0.0; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let i = ch * h * w + y * w + x;
                let v = img.data[i] + strength * plasma[y * size + x];
                out[i] = v * max / (max + strength);
            }
        }
    }
    to_u8(&out)
}
