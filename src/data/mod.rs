//! Datasets: readers (`cifar10:DIR`, `imagefolder:DIR`, `synthetic[:N]`),
//! held-out splits, augmentation and batching.
//!
//! TO BE WRITTEN (helper): implement the API below; submodules
//! `cifar10`, `imagefolder`, `synthetic`, `augment`.

use crate::tensor::Tensor;
use std::path::PathBuf;

/// A `--data` argument.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    Cifar10(PathBuf),
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
    FlipCrop { pad: usize },
}
