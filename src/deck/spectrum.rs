//! Centered 2-D Fourier amplitude spectra of images, per channel.
//!
//! A `[C, H, W]` image in [0, 1] pixel units is transformed channel by
//! channel with a row–column FFT (`rustfft`: H row transforms of length W,
//! then W column transforms of length H), scaled by `1/sqrt(H·W)` so that
//! white noise of standard deviation σ has an expected amplitude of about σ
//! in every bin whatever the image size, and shifted so that the zero
//! frequency sits at `(H/2, W/2)` (numpy's `fftshift`).
//!
//! The deck gate works on the *log* amplitude `ln(|X| + EPS)` (see the
//! [`crate::deck`] module doc for why).

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};
use std::sync::Arc;

/// Floor added to amplitudes before the logarithm: about the 8-bit
/// quantization noise of a pixel (1/255/√12 ≈ 0.0011 in [0, 1] units), so
/// bins below what a stored image can even represent do not dominate.
pub const EPS: f32 = 1e-3;

/// Precomputed FFT plans for one image size; cheap to share between threads.
#[derive(Clone)]
pub struct SpectrumPlan {
    channels: usize,
    height: usize,
    width: usize,
    rows: Arc<dyn Fft<f32>>,
    cols: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for SpectrumPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SpectrumPlan({}x{}x{})",
            self.channels, self.height, self.width
        )
    }
}

impl SpectrumPlan {
    /// Plans for `[channels, height, width]` images (all dimensions ≥ 1).
    pub fn new(channels: usize, height: usize, width: usize) -> SpectrumPlan {
        let mut planner = FftPlanner::<f32>::new();
        SpectrumPlan {
            channels,
            height,
            width,
            rows: planner.plan_fft_forward(width.max(1)),
            cols: planner.plan_fft_forward(height.max(1)),
        }
    }

    /// Values per spectrum (`C·H·W`).
    pub fn len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Whether the planned size has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of the spectra.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The centered amplitude spectrum of `pixels` (`[C, H, W]`, [0, 1]
    /// units) into `out` (same layout). Panics if a length differs from the
    /// plan (a caller bug: the deck checks shapes before it gets here).
    pub fn amplitude_into(&self, pixels: &[f32], out: &mut [f32]) {
        let (c, h, w) = (self.channels, self.height, self.width);
        assert_eq!(pixels.len(), c * h * w, "spectrum: image size");
        assert_eq!(out.len(), c * h * w, "spectrum: output size");
        let scale = 1.0 / ((h * w) as f32).sqrt();
        let mut buf = vec![Complex32::new(0.0, 0.0); h * w];
        let mut tr = vec![Complex32::new(0.0, 0.0); h * w];
        let scratch_len = self
            .rows
            .get_inplace_scratch_len()
            .max(self.cols.get_inplace_scratch_len());
        let mut scratch = vec![Complex32::new(0.0, 0.0); scratch_len];
        for ch in 0..c {
            let plane = &pixels[ch * h * w..(ch + 1) * h * w];
            for (b, &p) in buf.iter_mut().zip(plane) {
                *b = Complex32::new(p, 0.0);
            }
            // Rows: the buffer holds H rows of W, each transformed in place.
            self.rows.process_with_scratch(&mut buf, &mut scratch);
            // Columns: transpose so each column is contiguous, transform.
            for y in 0..h {
                for x in 0..w {
                    tr[x * h + y] = buf[y * w + x];
                }
            }
            self.cols.process_with_scratch(&mut tr, &mut scratch);
            let dst = &mut out[ch * h * w..(ch + 1) * h * w];
            for kx in 0..w {
                for ky in 0..h {
                    let (sy, sx) = ((ky + h / 2) % h, (kx + w / 2) % w);
                    dst[sy * w + sx] = tr[kx * h + ky].norm() * scale;
                }
            }
        }
    }

    /// The centered log-amplitude spectrum `ln(|X| + EPS)` into `out`.
    pub fn log_amplitude_into(&self, pixels: &[f32], out: &mut [f32]) {
        self.amplitude_into(pixels, out);
        for v in out.iter_mut() {
            *v = (*v + EPS).ln();
        }
    }

    /// The centered log-amplitude spectrum of an 8-bit `[C, H, W]` image.
    pub fn log_amplitude_u8(&self, image: &[u8]) -> Vec<f32> {
        let px: Vec<f32> = image.iter().map(|&b| b as f32 / 255.0).collect();
        let mut out = vec![0.0; px.len()];
        self.log_amplitude_into(&px, &mut out);
        out
    }

    /// Index of the zero-frequency bin within one channel's centered plane.
    pub fn dc_index(&self) -> usize {
        (self.height / 2) * self.width + self.width / 2
    }

    /// Radial frequency of each bin of one centered plane, as a fraction of
    /// the largest radius (0 at DC, 1 at the corners).
    pub fn radius(&self) -> Vec<f32> {
        let (h, w) = (self.height as f32, self.width as f32);
        let (cy, cx) = ((self.height / 2) as f32, (self.width / 2) as f32);
        let max = ((cy * cy) / (h * h) + (cx * cx) / (w * w)).sqrt().max(1e-6);
        (0..self.height * self.width)
            .map(|i| {
                let fy = ((i / self.width) as f32 - cy) / h;
                let fx = ((i % self.width) as f32 - cx) / w;
                (fy * fy + fx * fx).sqrt() / max
            })
            .collect()
    }
}

/// The same centered amplitude spectrum by the O(N²) definition, for tests.
pub fn direct_dft_amplitude(pixels: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; c * h * w];
    let scale = 1.0 / ((h * w) as f64).sqrt();
    for ch in 0..c {
        let plane = &pixels[ch * h * w..(ch + 1) * h * w];
        for ky in 0..h {
            for kx in 0..w {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for y in 0..h {
                    for x in 0..w {
                        let a = -2.0
                            * std::f64::consts::PI
                            * ((ky * y) as f64 / h as f64 + (kx * x) as f64 / w as f64);
                        let v = plane[y * w + x] as f64;
                        re += v * a.cos();
                        im += v * a.sin();
                    }
                }
                let (sy, sx) = ((ky + h / 2) % h, (kx + w / 2) % w);
                out[ch * h * w + sy * w + sx] = ((re * re + im * im).sqrt() * scale) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fft_spectrum_matches_a_direct_dft() {
        // Odd and even sizes, non-square, several channels.
        for &(c, h, w) in &[(3, 8, 8), (1, 5, 7), (2, 6, 4), (3, 32, 32)] {
            let mut rng = Rng::new((c * 100 + h * 10 + w) as u64);
            let px: Vec<f32> = (0..c * h * w).map(|_| rng.uniform()).collect();
            let plan = SpectrumPlan::new(c, h, w);
            let mut fast = vec![0.0; c * h * w];
            plan.amplitude_into(&px, &mut fast);
            let slow = direct_dft_amplitude(&px, c, h, w);
            for (i, (a, b)) in fast.iter().zip(&slow).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "{c}x{h}x{w} bin {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn constant_image_has_only_a_centered_dc_bin() {
        let (c, h, w) = (2, 6, 8);
        let plan = SpectrumPlan::new(c, h, w);
        let px = vec![0.5f32; c * h * w];
        let mut out = vec![0.0; c * h * w];
        plan.amplitude_into(&px, &mut out);
        let dc = plan.dc_index();
        for ch in 0..c {
            for i in 0..h * w {
                let v = out[ch * h * w + i];
                if i == dc {
                    // 0.5 · H·W / sqrt(H·W)
                    assert!((v - 0.5 * ((h * w) as f32).sqrt()).abs() < 1e-4, "{v}");
                } else {
                    assert!(v.abs() < 1e-5, "bin {i}: {v}");
                }
            }
        }
        let r = plan.radius();
        assert_eq!(r[dc], 0.0);
        assert!(r.iter().all(|&v| (0.0..=1.0 + 1e-6).contains(&v)));
    }

    #[test]
    fn white_noise_amplitude_is_about_sigma() {
        let (h, w) = (32, 32);
        let mut rng = Rng::new(1);
        let sigma = 0.1f32;
        let px: Vec<f32> = (0..h * w).map(|_| sigma * rng.normal()).collect();
        let plan = SpectrumPlan::new(1, h, w);
        let mut out = vec![0.0; h * w];
        plan.amplitude_into(&px, &mut out);
        let rms = (out.iter().map(|v| v * v).sum::<f32>() / (h * w) as f32).sqrt();
        assert!((rms - sigma).abs() < 0.01, "{rms}");
    }
}
