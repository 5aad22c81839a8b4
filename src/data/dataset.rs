//! In-memory dataset helpers: indexing, subsets, held-out splits, digests.

use super::Dataset;
use crate::rng::Rng;
use anyhow::bail;

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of classes (the length of `class_names`).
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The CHW bytes of image `i`; panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// Images per class, indexed by label.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// The images at `indices`, in that order (repeats allowed); panics on
    /// an index out of range, which is a caller bug, not bad data.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let n = self.image_len();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            class_names: self.class_names.clone(),
            source: self.source.clone(),
        }
    }

    /// The first `n` images (all of them if there are fewer), for `--limit`.
    ///
    /// A prefix rather than a random sample keeps `--limit` runs comparable
    /// with full runs on the same files.
    pub fn limit(&self, n: usize) -> Dataset {
        if n >= self.len() {
            return self.clone();
        }
        let idx: Vec<usize> = (0..n).collect();
        let mut ds = self.subset(&idx);
        ds.source = format!("{} limit {n}", self.source);
        ds
    }

    /// Splits off a held-out part for `--val-split`: returns `(rest, holdout)`.
    ///
    /// Stratified so that each class keeps its share: every class gives
    /// `floor(fraction * count)` images and the remainder up to
    /// `round(fraction * len)` goes to the classes with the largest
    /// fractional parts. Which images go is a shuffle seeded by `seed`; both
    /// parts keep the original order, so the split is reproducible and does
    /// not depend on thread count.
    pub fn split_holdout(&self, fraction: f64, seed: u64) -> anyhow::Result<(Dataset, Dataset)> {
        if !(0.0..1.0).contains(&fraction) {
            bail!("validation fraction {fraction} is not in [0, 1)");
        }
        let k = self.num_classes().max(
            self.labels
                .iter()
                .map(|&l| l as usize + 1)
                .max()
                .unwrap_or(0),
        );
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        let target = (fraction * self.len() as f64).round() as usize;
        let mut take: Vec<usize> = by_class
            .iter()
            .map(|c| (fraction * c.len() as f64).floor() as usize)
            .collect();
        let mut rest: usize = target.saturating_sub(take.iter().sum());
        let mut order: Vec<usize> = (0..k).collect();
        // Largest fractional remainder first; ties by class index (stable sort).
        order.sort_by(|&a, &b| {
            let fa = fraction * by_class[a].len() as f64 - take[a] as f64;
            let fb = fraction * by_class[b].len() as f64 - take[b] as f64;
            fb.total_cmp(&fa)
        });
        for &c in &order {
            if rest == 0 {
                break;
            }
            if take[c] < by_class[c].len() {
                take[c] += 1;
                rest -= 1;
            }
        }
        let mut held = vec![false; self.len()];
        let mut rng = Rng::derive(seed, "split_holdout");
        for (c, members) in by_class.iter_mut().enumerate() {
            rng.shuffle(members);
            for &i in &members[..take[c]] {
                held[i] = true;
            }
        }
        let (hold_idx, keep_idx): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|&i| held[i]);
        if hold_idx.is_empty() || keep_idx.is_empty() {
            bail!(
                "validation fraction {fraction} of {} images ({}) leaves an empty part ({} held out, {} kept)",
                self.len(),
                self.source,
                hold_idx.len(),
                keep_idx.len()
            );
        }
        let mut keep = self.subset(&keep_idx);
        keep.source = format!("{} minus {fraction} holdout (seed {seed})", self.source);
        let mut hold = self.subset(&hold_idx);
        hold.source = format!("{} {fraction} holdout (seed {seed})", self.source);
        Ok((keep, hold))
    }

    /// Hex CRC-32 over the shape, labels and pixels, for provenance: two
    /// datasets with the same digest gave the model the same examples.
    pub fn digest(&self) -> String {
        let mut h = crc32fast::Hasher::new();
        h.update(b"cardc-dataset-v1");
        for d in [self.channels, self.height, self.width, self.len()] {
            h.update(&(d as u64).to_le_bytes());
        }
        for &l in &self.labels {
            h.update(&l.to_le_bytes());
        }
        h.update(&self.images);
        format!("{:08x}", h.finalize())
    }
}
