//! Turning a dataset into batches: epoch shuffles and NCHW f32 tensors.

use super::augment::FlipCrop;
use super::{Augment, Dataset, Normalization};
use crate::rng::Rng;
use crate::tensor::Tensor;
use rayon::prelude::*;

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// A deterministic permutation of `0..n` for a seed and epoch: each epoch
/// gets its own shuffle, and rerunning with the same seed repeats them.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::derive(
        seed ^ (epoch as u64 + 1).wrapping_mul(GOLDEN),
        "epoch_order",
    );
    rng.shuffle(&mut order);
    order
}

/// The generator for the image at `position` in a batch seeded `rng_seed`:
/// one per image, so the parallel loop gives the same result on any number
/// of threads.
pub fn image_rng(rng_seed: u64, position: usize) -> Rng {
    Rng::new(rng_seed ^ (position as u64).wrapping_mul(GOLDEN))
}

/// Writes one uint8 CHW image into `out` as normalized f32, through the
/// per-channel lookup tables of [`Normalization::lookup_tables`].
fn normalize_into(out: &mut [f32], image: &[u8], luts: &[[f32; 256]], plane: usize) {
    for ((dst, src), lut) in out
        .chunks_exact_mut(plane)
        .zip(image.chunks_exact(plane))
        .zip(luts)
    {
        for (d, &b) in dst.iter_mut().zip(src) {
            *d = lut[b as usize];
        }
    }
}

/// Builds a `[B, C, H, W]` f32 batch of the images at `indices` (augmented,
/// then normalized) and their labels.
///
/// Panics if an index is out of range or `norm` has the wrong number of
/// channels: both are caller bugs, not bad input.
pub fn make_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    augment: Augment,
    rng_seed: u64,
) -> (Tensor, Vec<u32>) {
    assert_eq!(
        norm.channels(),
        ds.channels,
        "normalization has {} channels, dataset {} has {}",
        norm.channels(),
        ds.source,
        ds.channels
    );
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let n = ds.image_len();
    let plane = h * w;
    let luts = norm.lookup_tables();
    let mut data = vec![0f32; indices.len() * n];
    if n > 0 {
        data.par_chunks_mut(n)
            .zip(indices.par_iter())
            .enumerate()
            .for_each_init(
                || vec![0u8; n],
                |buf, (pos, (out, &i))| {
                    let mut rng = image_rng(rng_seed, pos);
                    augment.apply_into(ds.image(i), c, h, w, &mut rng, buf);
                    normalize_into(out, buf, &luts, plane);
                },
            );
    }
    let labels = indices.iter().map(|&i| ds.labels[i]).collect();
    (Tensor::from_vec(&[indices.len(), c, h, w], data), labels)
}

/// A batch before augmentation and normalization, for a backend that does
/// both on the device (the wgpu backend uploads bytes, a quarter of the
/// floats): the images' bytes, each image's crop and flip drawn exactly as
/// [`make_batch`] draws them, and the normalization as per-channel tables.
/// [`RawBatch::to_tensor`] is what [`make_batch`] returns for the same
/// arguments.
#[derive(Clone, Debug)]
pub struct RawBatch {
    /// `[B, C, H, W]` bytes, not augmented.
    pub bytes: Vec<u8>,
    /// `[B, C, H, W]`.
    pub shape: [usize; 4],
    /// Each image's crop and flip.
    pub shifts: Vec<FlipCrop>,
    /// `[C][256]`: each byte's normalized value, per channel
    /// ([`Normalization::lookup_tables`]).
    pub luts: Vec<[f32; 256]>,
}

impl RawBatch {
    /// The batch augmented and normalized on the host: the reference for
    /// the device's version, equal to [`make_batch`]'s.
    pub fn to_tensor(&self) -> Tensor {
        let [b, c, h, w] = self.shape;
        let n = c * h * w;
        let mut data = vec![0f32; b * n];
        if n > 0 {
            data.par_chunks_mut(n)
                .zip(self.bytes.par_chunks(n))
                .zip(self.shifts.par_iter())
                .for_each_init(
                    || vec![0u8; n],
                    |buf, ((out, image), shift)| {
                        shift.apply(image, c, h, w, buf);
                        normalize_into(out, buf, &self.luts, h * w);
                    },
                );
        }
        Tensor::from_vec(&self.shape, data)
    }
}

/// [`make_batch`] left for the device to augment and normalize: the same
/// images, crops and flips, as a [`RawBatch`]. `None` for augmentations
/// the device does not do (AugMix, Gaussian noise: they stay on the host).
pub fn make_raw_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    augment: Augment,
    rng_seed: u64,
) -> Option<(RawBatch, Vec<u32>)> {
    let pad = match augment {
        Augment::None => None,
        Augment::FlipCrop { pad } => Some(pad),
        Augment::AugMix | Augment::Gaussian { .. } => return None,
    };
    assert_eq!(norm.channels(), ds.channels, "normalization channels");
    let mut bytes = Vec::with_capacity(indices.len() * ds.image_len());
    for &i in indices {
        bytes.extend_from_slice(ds.image(i));
    }
    let shifts = (0..indices.len())
        .map(|pos| {
            pad.map_or(FlipCrop::default(), |p| {
                FlipCrop::draw(p, &mut image_rng(rng_seed, pos))
            })
        })
        .collect();
    let raw = RawBatch {
        bytes,
        shape: [indices.len(), ds.channels, ds.height, ds.width],
        shifts,
        luts: norm.lookup_tables(),
    };
    Some((raw, indices.iter().map(|&i| ds.labels[i]).collect()))
}

/// AugMix's consistency-loss batch: `[3B, C, H, W]` holding, in this order,
/// the B flipped/cropped images, then one AugMix view of each, then a
/// second (see `backend::Loss::AugMixJsd`), and the B labels.
pub fn make_augmix_views_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    rng_seed: u64,
) -> (Tensor, Vec<u32>) {
    assert_eq!(norm.channels(), ds.channels, "normalization channels");
    let (c, h, w) = (ds.channels, ds.height, ds.width);
    let (n, b, plane) = (ds.image_len(), indices.len(), h * w);
    let luts = norm.lookup_tables();
    let per_image: Vec<[Vec<f32>; 3]> = indices
        .par_iter()
        .enumerate()
        .map(|(pos, &i)| {
            let mut rng = image_rng(rng_seed, pos);
            let mut bufs = [vec![0u8; n], vec![0u8; n], vec![0u8; n]];
            let [a, b1, b2] = &mut bufs;
            Augment::augmix_views_into(ds.image(i), c, h, w, &mut rng, [a, b1, b2]);
            bufs.map(|buf| {
                let mut out = vec![0f32; n];
                normalize_into(&mut out, &buf, &luts, plane.max(1));
                out
            })
        })
        .collect();
    let mut data = Vec::with_capacity(3 * b * n);
    for view in 0..3 {
        for img in &per_image {
            data.extend_from_slice(&img[view]);
        }
    }
    let labels = indices.iter().map(|&i| ds.labels[i]).collect();
    (Tensor::from_vec(&[3 * b, c, h, w], data), labels)
}

/// Yields the batches of one pass over `order`.
///
/// Batch `k` is built with seed `seed ^ rotl((k + 1) * golden, 29)`: the
/// rotation keeps batch seeds apart from the per-position mixing in
/// [`image_rng`], so augmentation differs between batches yet repeats for the
/// same seed.
pub struct BatchIter<'a> {
    ds: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    norm: Normalization,
    augment: Augment,
    seed: u64,
    drop_last: bool,
    next: usize,
}

impl<'a> BatchIter<'a> {
    /// Batches of `batch_size` (at least 1) over `order`, without
    /// augmentation, keeping the last partial batch.
    pub fn new(
        ds: &'a Dataset,
        order: Vec<usize>,
        batch_size: usize,
        norm: &Normalization,
    ) -> Self {
        BatchIter {
            ds,
            order,
            batch_size: batch_size.max(1),
            norm: norm.clone(),
            augment: Augment::None,
            seed: 0,
            drop_last: false,
            next: 0,
        }
    }

    /// Augments with `augment`, seeded by `seed`.
    pub fn with_augment(mut self, augment: Augment, seed: u64) -> Self {
        self.augment = augment;
        self.seed = seed;
        self
    }

    /// Whether a last batch smaller than `batch_size` is skipped.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Number of batches this iterator yields in total.
    pub fn num_batches(&self) -> usize {
        let n = self.order.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }
}

impl Iterator for BatchIter<'_> {
    type Item = (Tensor, Vec<u32>);

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.next;
        if k >= self.num_batches() {
            return None;
        }
        self.next += 1;
        let start = k * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let seed = self.seed ^ (k as u64 + 1).wrapping_mul(GOLDEN).rotate_left(29);
        Some(make_batch(
            self.ds,
            &self.order[start..end],
            &self.norm,
            self.augment,
            seed,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.num_batches() - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for BatchIter<'_> {}
