//! Spectral signatures: what a card's training augmentation does to the
//! log-amplitude spectrum of training images, and the clean reference
//! spectrum inputs are compared against.

use super::spectrum::SpectrumPlan;
use crate::data::augment::DEFAULT_PAD;
use crate::data::loader::image_rng;
use crate::data::{Augment, Dataset};
use crate::rng::Rng;
use rayon::prelude::*;

/// Images per work unit: each unit sums in order and the units are added
/// in order, so the result does not depend on the thread count.
const CHUNK: usize = 32;

/// `limit` indices of `0..n` (all when `n <= limit`), drawn without
/// replacement for `seed` and sorted, so a deck sees a spread of the data
/// rather than its first classes.
pub fn sample_indices(n: usize, limit: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if limit < n {
        Rng::derive(seed, "deck/images").shuffle(&mut idx);
        idx.truncate(limit);
        idx.sort_unstable();
    }
    idx
}

/// Sets the zero-frequency bin of every channel to 0: it only carries the
/// mean brightness, which says nothing about a distortion's frequency band.
pub fn zero_dc(plan: &SpectrumPlan, v: &mut [f32]) {
    let [_, h, w] = plan.shape();
    let dc = plan.dc_index();
    for plane in v.chunks_exact_mut((h * w).max(1)) {
        plane[dc] = 0.0;
    }
}

/// Mean over `idx` of `f(image index)` (each a spectrum of `plan.len()`).
fn mean_over<F>(plan: &SpectrumPlan, idx: &[usize], f: F) -> Vec<f32>
where
    F: Fn(usize, usize) -> Vec<f32> + Sync,
{
    let len = plan.len();
    let parts: Vec<Vec<f64>> = idx
        .par_chunks(CHUNK)
        .enumerate()
        .map(|(c, chunk)| {
            let mut acc = vec![0.0f64; len];
            for (j, &i) in chunk.iter().enumerate() {
                for (a, v) in acc.iter_mut().zip(f(c * CHUNK + j, i)) {
                    *a += v as f64;
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0.0f64; len];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let n = idx.len().max(1) as f64;
    total.into_iter().map(|v| (v / n) as f32).collect()
}

/// The clean reference: mean log-amplitude spectrum of the images at `idx`.
pub fn clean_reference(plan: &SpectrumPlan, ds: &Dataset, idx: &[usize]) -> Vec<f32> {
    mean_over(plan, idx, |_, i| plan.log_amplitude_u8(ds.image(i)))
}

/// The flip-and-crop every training augmentation starts with, which the
/// signature factors out (see [`signature`]); `None` for augmentations
/// whose signature is zero by construction.
fn split_base(aug: Augment) -> Option<(Augment, Augment)> {
    let base = Augment::FlipCrop { pad: DEFAULT_PAD };
    match aug {
        Augment::None | Augment::FlipCrop { .. } => None,
        Augment::AugMix => Some((base, Augment::AugMix)),
        // The signature describes the distortion when it is applied; how
        // often training applied it does not change which inputs the card
        // is the expert for.
        Augment::Gaussian { sigma, .. } => Some((base, Augment::Gaussian { sigma, p: 1.0 })),
    }
}

/// The spectral signature of `aug` on the images at `idx`: the mean over
/// images of `logamp(aug(x)) − logamp(flipcrop(x))`, where both sides use
/// the same random flip and crop (the generator is cloned), DC bins zeroed.
///
/// The pairing removes what every CIFAR augmentation shares (the crop's
/// zero border, which no test corruption has) and most of the image
/// content's variance, so the signature is the augmentation's own
/// distortion. `none` and `flipcrop` have a zero signature: such a card is
/// the gate's choice for inputs that look clean.
pub fn signature(
    plan: &SpectrumPlan,
    ds: &Dataset,
    idx: &[usize],
    aug: Augment,
    seed: u64,
) -> Vec<f32> {
    let Some((base, full)) = split_base(aug) else {
        return vec![0.0; plan.len()];
    };
    let stream = Rng::derive(seed, &format!("deck/signature/{aug}")).next_u64();
    let [c, h, w] = plan.shape();
    let mut sig = mean_over(plan, idx, |pos, i| {
        let rng = image_rng(stream, pos);
        let img = ds.image(i);
        let a = plan.log_amplitude_u8(&full.apply(img, c, h, w, &mut rng.clone()));
        let b = plan.log_amplitude_u8(&base.apply(img, c, h, w, &mut rng.clone()));
        a.iter().zip(&b).map(|(x, y)| x - y).collect()
    });
    zero_dc(plan, &mut sig);
    sig
}

/// Mean of `v` over the bins whose radius (see [`SpectrumPlan::radius`])
/// falls in `[lo, hi)`, all channels together: a one-number summary of a
/// signature in a frequency band.
pub fn band_mean(plan: &SpectrumPlan, v: &[f32], lo: f32, hi: f32) -> f32 {
    let r = plan.radius();
    let plane = r.len().max(1);
    let (mut s, mut n) = (0.0f64, 0usize);
    for (i, &x) in v.iter().enumerate() {
        let ri = r[i % plane];
        if ri > 0.0 && ri >= lo && ri < hi {
            s += x as f64;
            n += 1;
        }
    }
    if n == 0 { 0.0 } else { (s / n as f64) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Split, generate_synthetic};

    #[test]
    fn sampling_is_seeded_and_bounded() {
        let a = sample_indices(100, 10, 1);
        assert_eq!(a.len(), 10);
        assert_eq!(a, sample_indices(100, 10, 1));
        assert_ne!(a, sample_indices(100, 10, 2));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample_indices(5, 10, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn gaussian_signature_raises_high_frequencies_and_is_deterministic() {
        let ds = generate_synthetic(40, Split::Train);
        let plan = SpectrumPlan::new(ds.channels, ds.height, ds.width);
        let idx = sample_indices(ds.len(), 40, 0);
        let aug = Augment::Gaussian { sigma: 0.1, p: 0.5 };
        let s = signature(&plan, &ds, &idx, aug, 0);
        assert_eq!(s, signature(&plan, &ds, &idx, aug, 0));
        let high = band_mean(&plan, &s, 0.5, 1.01);
        let low = band_mean(&plan, &s, 0.0, 0.15);
        assert!(high > 0.3 && high > low, "high {high}, low {low}");
        assert!(s.iter().all(|v| v.is_finite()));
        let zero = signature(&plan, &ds, &idx, Augment::FlipCrop { pad: 4 }, 0);
        assert!(zero.iter().all(|&v| v == 0.0));
        let r = clean_reference(&plan, &ds, &idx);
        assert_eq!(r.len(), plan.len());
    }
}
