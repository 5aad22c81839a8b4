//! Datasets: readers (`cifar10:DIR`, `imagefolder:DIR`, `synthetic[:N]`),
//! held-out splits, augmentation and batching.
//!
//! Everything here is deterministic for a seed: the same `--data`, seed and
//! epoch give the same bytes, so a `.card`'s provenance (see
//! [`Dataset::digest`]) means something.
//!
//! Submodules each do one job: [`spec`] parses `--data`, [`dataset`] holds
//! the in-memory helpers, [`cifar10`], [`imagefolder`] and [`synthetic`] read
//! or make data, [`normalize`], [`augment`] and [`loader`] turn images into
//! batches.

pub mod augment;
pub mod augmix;
pub mod cifar10;
pub mod cifar10c;
pub mod dataset;
pub mod imagefolder;
pub mod loader;
pub mod normalize;
pub mod npy;
pub mod spec;
pub mod synthetic;

pub use cifar10::{load_cifar10, write_cifar10_bin, write_cifar10_dir};
pub use imagefolder::{load_imagefolder, write_imagefolder};
pub use loader::{BatchIter, RawBatch, epoch_order, make_batch, make_raw_batch};
pub use synthetic::generate as generate_synthetic;

use std::path::PathBuf;

/// A `--data` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    Cifar10(PathBuf),
    /// CIFAR-10-C `.npy` files (real, or written by `cardc corrupt`).
    Cifar10C(PathBuf),
    ImageFolder(PathBuf),
    /// Number of training images (test split has N/5).
    Synthetic(usize),
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// Lower-case name used in `source` strings and messages.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Images held as uint8, CHW per image, images back to back.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub class_names: Vec<String>,
    /// Where it came from, e.g. `cifar10:/data/cifar10 (train)`.
    pub source: String,
}

/// Per-channel normalization applied after scaling bytes to [0, 1].
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Training-time augmentation of the base pipeline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Augment {
    None,
    /// Random crop with zero padding `pad` and horizontal flip.
    FlipCrop {
        pad: usize,
    },
    /// Flip and crop (default padding), then AugMix (see [`augmix`]).
    AugMix,
    /// Flip and crop (default padding), then, with probability `p`,
    /// x + N(0, sigma²) per value in [0, 1] units, clipped to [0, 1].
    Gaussian {
        sigma: f32,
        p: f32,
    },
}

/// Loads one split of the dataset a `--data` argument names.
pub fn load(spec: &DataSpec, split: Split) -> anyhow::Result<Dataset> {
    match spec {
        DataSpec::Cifar10(dir) => load_cifar10(dir, split),
        DataSpec::ImageFolder(dir) => load_imagefolder(dir, split),
        // CIFAR-10-C has test images only: every split reads them all.
        DataSpec::Cifar10C(dir) => cifar10c::Cifar10C::open(dir)?.load_all(),
        DataSpec::Synthetic(n) => Ok(synthetic::generate(*n, split)),
    }
}
