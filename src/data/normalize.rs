//! Per-channel normalization: `(byte / 255 - mean[c]) / std[c]`.

use super::{Dataset, Normalization};
use rayon::prelude::*;

impl Normalization {
    /// The usual CIFAR-10 training-set statistics, so models trained here
    /// match the common recipe.
    pub fn cifar10() -> Self {
        Normalization {
            mean: vec![0.4914, 0.4822, 0.4465],
            std: vec![0.2470, 0.2435, 0.2616],
        }
    }

    /// Mean 0, std 1: bytes only scaled to [0, 1].
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Per-channel mean and (population) standard deviation of the images,
    /// in [0, 1] units. Counts byte values exactly (a 256-bin histogram per
    /// channel), so the result does not depend on thread count. A constant
    /// channel gets std 1 rather than 0 to avoid dividing by zero.
    pub fn from_dataset(ds: &Dataset) -> Self {
        let c = ds.channels;
        let plane = ds.height * ds.width;
        let hist = (0..ds.len())
            .into_par_iter()
            .fold(
                || vec![[0u64; 256]; c],
                |mut h, i| {
                    for (ch, px) in ds.image(i).chunks_exact(plane.max(1)).enumerate() {
                        for &b in px {
                            h[ch][b as usize] += 1;
                        }
                    }
                    h
                },
            )
            .reduce(
                || vec![[0u64; 256]; c],
                |mut a, b| {
                    for (x, y) in a.iter_mut().zip(&b) {
                        for (p, q) in x.iter_mut().zip(y) {
                            *p += q;
                        }
                    }
                    a
                },
            );
        let mut mean = Vec::with_capacity(c);
        let mut std = Vec::with_capacity(c);
        for h in &hist {
            let n: u64 = h.iter().sum();
            if n == 0 {
                mean.push(0.0);
                std.push(1.0);
                continue;
            }
            let (mut s, mut s2) = (0f64, 0f64);
            for (v, &k) in h.iter().enumerate() {
                let x = v as f64 / 255.0;
                s += x * k as f64;
                s2 += x * x * k as f64;
            }
            let m = s / n as f64;
            let var = (s2 / n as f64 - m * m).max(0.0);
            let sd = var.sqrt();
            mean.push(m as f32);
            std.push(if sd < 1e-6 { 1.0 } else { sd as f32 });
        }
        Normalization { mean, std }
    }

    /// Number of channels described.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// A 256-entry table per channel: the normalized value of each byte.
    /// Batching uses it so every path computes exactly the same f32s.
    pub fn lookup_tables(&self) -> Vec<[f32; 256]> {
        self.mean
            .iter()
            .zip(&self.std)
            .map(|(&m, &s)| std::array::from_fn(|b| (b as f32 / 255.0 - m) / s))
            .collect()
    }

    /// Normalizes one CHW image into `out` (same length). Panics if the
    /// lengths differ or the image's size is not a multiple of the channel
    /// count (caller bugs).
    pub fn apply_into(&self, image: &[u8], out: &mut [f32]) {
        assert_eq!(
            image.len(),
            out.len(),
            "normalize: image and output lengths differ"
        );
        let c = self.channels();
        assert!(
            c > 0 && image.len().is_multiple_of(c),
            "normalize: {} bytes for {c} channels",
            image.len()
        );
        let plane = image.len() / c;
        for ((src, dst), lut) in image
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .zip(self.lookup_tables())
        {
            for (d, &b) in dst.iter_mut().zip(src) {
                *d = lut[b as usize];
            }
        }
    }

    /// Normalizes [0, 1] pixels in place: `x` holds CHW images back to
    /// back with `plane` = H·W values per channel.
    pub fn normalize_pixels(&self, x: &mut [f32], plane: usize) {
        let c = self.channels();
        for img in x.chunks_exact_mut(c * plane) {
            for ((ch, m), s) in img.chunks_exact_mut(plane).zip(&self.mean).zip(&self.std) {
                ch.iter_mut().for_each(|v| *v = (*v - m) / s);
            }
        }
    }

    /// The inverse of [`Normalization::normalize_pixels`], clipped to [0, 1].
    pub fn denormalize_pixels(&self, x: &mut [f32], plane: usize) {
        let c = self.channels();
        for img in x.chunks_exact_mut(c * plane) {
            for ((ch, m), s) in img.chunks_exact_mut(plane).zip(&self.mean).zip(&self.std) {
                ch.iter_mut()
                    .for_each(|v| *v = (*v * s + m).clamp(0.0, 1.0));
            }
        }
    }

    /// Normalizes one CHW image.
    pub fn apply(&self, image: &[u8]) -> Vec<f32> {
        let mut out = vec![0.0; image.len()];
        self.apply_into(image, &mut out);
        out
    }
}
