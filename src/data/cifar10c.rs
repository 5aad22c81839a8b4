//! The `cifar10c:DIR` reader: CIFAR-10-C `.npy` files (one per corruption,
//! uint8 `[5·N, 32, 32, 3]`, severity 1 first) plus `labels.npy`. Not built
//! yet: this is its interface.

use super::Dataset;
use std::path::{Path, PathBuf};

/// An opened CIFAR-10-C directory.
#[derive(Clone, Debug)]
pub struct Cifar10C {
    /// The directory.
    pub dir: PathBuf,
}

impl Cifar10C {
    /// Opens `dir` and checks `labels.npy`.
    pub fn open(dir: &Path) -> anyhow::Result<Cifar10C> {
        anyhow::bail!(
            "cifar10c:{}: the CIFAR-10-C reader is not built yet",
            dir.display()
        )
    }

    /// Names of the corruptions whose files are present, in the reference order.
    pub fn corruptions(&self) -> Vec<String> {
        Vec::new()
    }

    /// The images of one (corruption, severity ∈ 1..=5) cell, with labels.
    pub fn cell(&self, corruption: &str, severity: u8) -> anyhow::Result<Dataset> {
        anyhow::bail!(
            "cifar10c:{}: cannot read {corruption} severity {severity}: the reader is not built yet",
            self.dir.display()
        )
    }
}
