//! ImageMagick's motion blur (`MagickMotionBlurImage`, ImageMagick 6), which
//! the reference calls through Wand for `motion_blur` and `snow`.
//!
//! ImageMagick's kernel is one-sided: `width = 2·ceil(radius) + 1` taps with
//! Gaussian weights `exp(−i²/2σ²)` (normalized), tap `i` reading the pixel
//! `(x + ceil(i·cos a − ½), y + ceil(i·sin a − ½))`; pixels outside the image
//! repeat the edge (its default virtual-pixel method). Results are rounded
//! to 16-bit quanta and then truncated to the 8-bit PNG the reference reads
//! back (measured against ImageMagick 6.9.11 Q16: identical bytes).

/// The taps `(dx, dy, weight)` for `radius`, `sigma` and `angle` (degrees).
pub fn kernel(radius: f64, sigma: f64, angle_deg: f64) -> Vec<(isize, isize, f64)> {
    let width = if radius > f64::EPSILON {
        (2.0 * radius.ceil() + 1.0) as usize
    } else {
        3
    };
    let sigma = if sigma.abs() < 1e-12 { 1e-12 } else { sigma };
    let mut weights: Vec<f64> = (0..width)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    weights.iter_mut().for_each(|v| *v /= sum);
    let a = angle_deg.to_radians();
    let (px, py) = (width as f64 * a.sin(), width as f64 * a.cos());
    let norm = px.hypot(py);
    weights
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let dx = ((i as f64 * py) / norm - 0.5).ceil() as isize;
            let dy = ((i as f64 * px) / norm - 0.5).ceil() as isize;
            (dx, dy, k)
        })
        .collect()
}

/// Motion-blurs `c` planes of 8-bit samples (`h × w` each).
pub fn motion_blur_u8(
    planes: &[u8],
    c: usize,
    h: usize,
    w: usize,
    radius: f64,
    sigma: f64,
    angle_deg: f64,
) -> Vec<u8> {
    let taps = kernel(radius, sigma, angle_deg);
    let mut out = vec![0u8; c * h * w];
    for ch in 0..c {
        let src = &planes[ch * h * w..(ch + 1) * h * w];
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for &(dx, dy, k) in &taps {
                    let yy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
                    let xx = (x as isize + dx).clamp(0, w as isize - 1) as usize;
                    acc += k * src[yy * w + xx] as f64;
                }
                let q16 = (acc * 257.0 + 0.5).floor().clamp(0.0, 65535.0);
                out[ch * h * w + y * w + x] = (q16 / 257.0) as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_is_one_sided_along_the_angle() {
        let k = kernel(6.0, 1.0, 0.0);
        assert_eq!(k.len(), 13);
        assert!(
            k.iter()
                .enumerate()
                .all(|(i, &(dx, dy, _))| dx == i as isize && dy == 0)
        );
        assert!((k.iter().map(|t| t.2).sum::<f64>() - 1.0).abs() < 1e-12);
        let k = kernel(8.0, 2.0, 90.0);
        assert_eq!(k.len(), 17);
        assert!(
            k.iter()
                .enumerate()
                .all(|(i, &(dx, dy, _))| dx == 0 && dy == i as isize)
        );
    }

    #[test]
    fn a_constant_image_stays_constant() {
        let img = vec![77u8; 3 * 8 * 9];
        assert_eq!(motion_blur_u8(&img, 3, 8, 9, 9.0, 2.5, 33.0), img);
    }
}
