//! Blur corruptions: defocus, glass, motion and zoom.

use super::filters::{self, Border};
use super::geometry::{clipped_zoom, numpy_arange};
use super::{Image, motion, to_u8};
use crate::rng::Rng;

/// The reference's anti-aliased disk: a 17×17 (radius ≤ 8) binary disk,
/// normalized, then OpenCV-Gaussian-blurred with a 3×3 kernel of σ =
/// `alias_blur`. Returns the kernel and its side.
pub fn disk(radius: f64, alias_blur: f64) -> (Vec<f64>, usize) {
    let (r, ksize) = if radius <= 8.0 {
        (8isize, 3)
    } else {
        (radius as isize, 5)
    };
    let side = (2 * r + 1) as usize;
    let mut d: Vec<f64> = (-r..=r)
        .flat_map(|y| {
            (-r..=r).map(move |x| {
                if ((x * x + y * y) as f64) <= radius * radius {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    let sum: f64 = d.iter().sum();
    d.iter_mut().for_each(|v| *v /= sum);
    // The reference builds the disk in float32.
    let d: Vec<f64> = d.iter().map(|&v| v as f32 as f64).collect();
    (
        filters::cv_gaussian_blur(&d, side, side, ksize, alias_blur),
        side,
    )
}

/// Each channel filtered with [`disk`]; (radius, alias σ) = (.3,.4)
/// (.4,.5) (.5,.6) (1,.2) (1.5,.1).
pub fn defocus_blur(img: &Image, s: usize) -> Vec<u8> {
    let (radius, alias) = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][s];
    let (k, side) = disk(radius, alias);
    let out: Vec<f64> = (0..img.c)
        .flat_map(|ch| filters::filter2d(img.plane(ch), img.h, img.w, &k, side, side))
        .collect();
    to_u8(&out)
}

/// Gaussian blur, truncate to uint8, local pixel "shuffles", blur again;
/// (σ, δ, iterations) = (.05,1,1) (.25,1,1) (.4,1,1) (.25,1,2) (.4,1,2).
///
/// The reference's swap `x[h,w], x[h',w'] = x[h',w'], x[h,w]` acts on numpy
/// views, so it copies the neighbour into `(h, w)` and leaves the neighbour
/// as it was; that is what this does too. Offsets come from
/// `randint(-δ, δ)`, i.e. −δ..δ−1.
pub fn glass_blur(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let (sigma, delta, iters) = [
        (0.05, 1, 1),
        (0.25, 1, 1),
        (0.4, 1, 1),
        (0.25, 1, 2),
        (0.4, 1, 2),
    ][s];
    let (c, h, w) = (img.c, img.h, img.w);
    let blur = |data: &[f64]| -> Vec<f64> {
        (0..c)
            .flat_map(|ch| {
                filters::gaussian_filter(
                    &data[ch * h * w..(ch + 1) * h * w],
                    h,
                    w,
                    sigma,
                    4.0,
                    Border::Nearest,
                )
            })
            .collect()
    };
    let mut x: Vec<u8> = blur(&img.data)
        .iter()
        .map(|&v| (v * 255.0).clamp(0.0, 255.0) as u8)
        .collect();
    let d = delta as isize;
    for _ in 0..iters {
        for y in ((d + 1)..=(h as isize - d)).rev() {
            for xx in ((d + 1)..=(w as isize - d)).rev() {
                let dx = rng.below(2 * delta) as isize - d;
                let dy = rng.below(2 * delta) as isize - d;
                let (sy, sx) = ((y + dy) as usize, (xx + dx) as usize);
                // Rows up to h - d may equal h when δ = 0 never; guard anyway.
                if (y as usize) < h && (xx as usize) < w && sy < h && sx < w {
                    for ch in 0..c {
                        x[ch * h * w + y as usize * w + xx as usize] = x[ch * h * w + sy * w + sx];
                    }
                }
            }
        }
    }
    let xf: Vec<f64> = x.iter().map(|&v| v as f64 / 255.0).collect();
    to_u8(&blur(&xf))
}

/// ImageMagick motion blur, (radius, σ) = (6,1) (6,1.5) (6,2) (8,2)
/// (9,2.5), angle U(−45°, 45°).
pub fn motion_blur(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let (radius, sigma) = [(6.0, 1.0), (6.0, 1.5), (6.0, 2.0), (8.0, 2.0), (9.0, 2.5)][s];
    let angle = -45.0 + 90.0 * rng.uniform_f64();
    motion::motion_blur_u8(&img.bytes, img.c, img.h, img.w, radius, sigma, angle)
}

/// Mean of the image and its centre zooms by 1, 1.01, … (numpy's
/// `arange(1, 1.06 … 1.26, .01)`), in float32 as the reference.
pub fn zoom_blur(img: &Image, s: usize) -> Vec<u8> {
    let stop = [1.06, 1.11, 1.16, 1.21, 1.26][s];
    let zooms = numpy_arange(1.0, stop, 0.01);
    let (h, w) = (img.h, img.w);
    let x: Vec<f64> = img.data.iter().map(|&v| v as f32 as f64).collect();
    let mut acc = vec![0.0f32; x.len()];
    for &z in &zooms {
        for ch in 0..img.c {
            let zoomed = clipped_zoom(&x[ch * h * w..(ch + 1) * h * w], h, w, z);
            for (a, v) in acc[ch * h * w..(ch + 1) * h * w].iter_mut().zip(&zoomed) {
                *a += *v as f32;
            }
        }
    }
    let n = (zooms.len() + 1) as f32;
    let out: Vec<f64> = x
        .iter()
        .zip(&acc)
        .map(|(&v, &a)| ((v as f32 + a) / n) as f64)
        .collect();
    to_u8(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_kernels_sum_to_one() {
        for (r, a) in [(0.3, 0.4), (1.5, 0.1), (3.0, 0.5)] {
            let (k, side) = disk(r, a);
            assert_eq!(k.len(), side * side);
            assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        }
    }
}
