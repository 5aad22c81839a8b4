//! The `cifar10c:DIR` reader: CIFAR-10-C `.npy` files (one per corruption,
//! uint8 `[R, H, W, C]`, severity 1 first) plus `labels.npy` (R labels,
//! any integer type; the real files use uint8).
//!
//! The real CIFAR-10-C holds all five severities (R = 5·10,000). A directory
//! written by `cardc corrupt` may hold fewer; its manifest
//! [`MANIFEST`] lists them (and the class names), otherwise severities
//! 1..=5 are assumed and R must be divisible by 5.

use super::Dataset;
use super::cifar10::DEFAULT_CLASS_NAMES;
use super::npy;
use crate::corrupt::CORRUPTIONS;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// Manifest file that `cardc corrupt` writes beside the arrays.
pub const MANIFEST: &str = "cardc-corrupt.json";

/// What `cardc corrupt` records about a directory it wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Severities present in every corruption file, in file order.
    pub severities: Vec<u8>,
    /// Images per severity.
    pub images: usize,
    pub class_names: Vec<String>,
    pub seed: u64,
    /// The clean dataset the corruptions were applied to.
    pub source: String,
    pub corruptions: Vec<String>,
}

/// An opened CIFAR-10-C directory.
#[derive(Clone, Debug)]
pub struct Cifar10C {
    /// The directory.
    pub dir: PathBuf,
    /// Labels of every row of a corruption file.
    labels: Vec<u32>,
    /// Severities in file order.
    severities: Vec<u8>,
    class_names: Vec<String>,
}

impl Cifar10C {
    /// Opens `dir` and checks `labels.npy` (and the manifest, if any).
    pub fn open(dir: &Path) -> anyhow::Result<Cifar10C> {
        let lpath = dir.join("labels.npy");
        if !lpath.is_file() {
            bail!("cifar10c:{}: no labels.npy there", dir.display());
        }
        let raw = npy::read_ints(&lpath).with_context(|| format!("cifar10c:{}", dir.display()))?;
        let mpath = dir.join(MANIFEST);
        let (severities, class_names) = if mpath.is_file() {
            let text = std::fs::read_to_string(&mpath)
                .with_context(|| format!("cannot read {}", mpath.display()))?;
            let m: Manifest = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid cardc manifest", mpath.display()))?;
            if m.severities.is_empty() || m.severities.iter().any(|s| !(1..=5).contains(s)) {
                bail!(
                    "{}: severities {:?} must be within 1-5",
                    mpath.display(),
                    m.severities
                );
            }
            if m.severities.len().checked_mul(m.images) != Some(raw.len()) {
                bail!(
                    "{}: labels count mismatch: {} severities x {} images, but labels.npy has {} labels",
                    mpath.display(),
                    m.severities.len(),
                    m.images,
                    raw.len()
                );
            }
            (m.severities, m.class_names)
        } else {
            if raw.is_empty() || raw.len() % 5 != 0 {
                bail!(
                    "{}: {} labels is not 5 severities of equal size (and there is no {MANIFEST})",
                    lpath.display(),
                    raw.len()
                );
            }
            (
                vec![1, 2, 3, 4, 5],
                DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
            )
        };
        let classes_from = if mpath.is_file() {
            format!("the class names of {MANIFEST}")
        } else {
            "the 10 CIFAR-10 classes".to_string()
        };
        let labels = raw
            .iter()
            .map(|&l| {
                if l < 0 || l as usize >= class_names.len() {
                    bail!(
                        "{}: label {l} is outside 0..{} ({classes_from})",
                        lpath.display(),
                        class_names.len()
                    );
                }
                Ok(l as u32)
            })
            .collect::<anyhow::Result<_>>()?;
        let c = Cifar10C {
            dir: dir.to_path_buf(),
            labels,
            severities,
            class_names,
        };
        // Every corruption file's header is checked now, so that a damaged
        // one stops a command before any work rather than mid-table.
        for name in c.corruptions() {
            c.open_array(&dir.join(format!("{name}.npy")))?;
        }
        Ok(c)
    }

    /// Opens one corruption array and checks it against the labels:
    /// uint8, `[R, H, W, C]` (C = 1 or 3) or `[R, H, W]`, R = the number of
    /// labels, a non-empty image. Returns the file, header and (H, W, C).
    fn open_array(&self, path: &Path) -> anyhow::Result<(std::fs::File, npy::Header, [usize; 3])> {
        let (f, h) = npy::read_header(path)?;
        if h.dtype != npy::Dtype::U8 {
            bail!(
                "{}: wrong dtype {} (expected uint8)",
                path.display(),
                h.dtype.name()
            );
        }
        let (rows, height, width, c) = match h.shape[..] {
            [r, hh, ww, c] if c == 1 || c == 3 => (r, hh, ww, c),
            [r, hh, ww] => (r, hh, ww, 1),
            _ => bail!(
                "{}: wrong shape {:?} (expected [N, H, W, 3] or [N, H, W, 1])",
                path.display(),
                h.shape
            ),
        };
        if rows != self.labels.len() {
            bail!(
                "{}: labels count mismatch: {rows} images but labels.npy has {} labels",
                path.display(),
                self.labels.len()
            );
        }
        // The header check bounds the product only when rows > 0.
        if height
            .checked_mul(width)
            .and_then(|p| p.checked_mul(c))
            .is_none_or(|p| p == 0)
        {
            bail!("{}: bad image size {height}x{width}x{c}", path.display());
        }
        Ok((f, h, [height, width, c]))
    }

    /// Names of the corruptions whose files are present, in the reference order.
    pub fn corruptions(&self) -> Vec<String> {
        CORRUPTIONS
            .iter()
            .filter(|c| self.dir.join(format!("{c}.npy")).is_file())
            .map(|c| c.to_string())
            .collect()
    }

    /// Severities present, in file order.
    pub fn severities(&self) -> &[u8] {
        &self.severities
    }

    /// Images per severity.
    pub fn images_per_severity(&self) -> usize {
        self.labels.len() / self.severities.len()
    }

    /// The images of one (corruption, severity ∈ 1..=5) cell, with labels.
    pub fn cell(&self, corruption: &str, severity: u8) -> anyhow::Result<Dataset> {
        let path = self.dir.join(format!("{corruption}.npy"));
        let k = self
            .severities
            .iter()
            .position(|&s| s == severity)
            .with_context(|| {
                format!(
                    "cifar10c:{}: severity {severity} is not in this directory (it has {:?})",
                    self.dir.display(),
                    self.severities
                )
            })?;
        if !path.is_file() {
            bail!("cifar10c:{}: no {corruption}.npy there", self.dir.display());
        }
        let (mut f, h, [height, width, c]) = self.open_array(&path)?;
        let n = self.images_per_severity();
        let img = height * width * c;
        let raw = npy::read_bytes(&mut f, &h, (k * n * img) as u64, n * img, &path)?;
        // HWC rows to the CHW images of `Dataset`.
        let hw = height * width;
        let mut images = vec![0u8; n * img];
        for (src, dst) in raw.chunks_exact(img).zip(images.chunks_exact_mut(img)) {
            for p in 0..hw {
                for ch in 0..c {
                    dst[ch * hw + p] = src[p * c + ch];
                }
            }
        }
        Ok(Dataset {
            images,
            labels: self.labels[k * n..(k + 1) * n].to_vec(),
            channels: c,
            height,
            width,
            class_names: self.class_names.clone(),
            source: format!(
                "cifar10c:{} ({corruption} severity {severity})",
                self.dir.display()
            ),
        })
    }

    /// Every present cell, corruption by corruption, severity by severity.
    pub fn load_all(&self) -> anyhow::Result<Dataset> {
        let corruptions = self.corruptions();
        if corruptions.is_empty() {
            bail!(
                "cifar10c:{}: no corruption files (<name>.npy) there",
                self.dir.display()
            );
        }
        let mut all: Option<Dataset> = None;
        for c in &corruptions {
            for &s in &self.severities {
                let cell = self.cell(c, s)?;
                match all.as_mut() {
                    None => all = Some(cell),
                    Some(a) => {
                        if (a.channels, a.height, a.width)
                            != (cell.channels, cell.height, cell.width)
                        {
                            bail!(
                                "cifar10c:{}: {c}.npy has a different image size",
                                self.dir.display()
                            );
                        }
                        a.images.extend_from_slice(&cell.images);
                        a.labels.extend_from_slice(&cell.labels);
                    }
                }
            }
        }
        let mut ds = all.context("no cells")?;
        ds.source = format!(
            "cifar10c:{} ({} corruptions x severities {:?})",
            self.dir.display(),
            corruptions.len(),
            self.severities
        );
        Ok(ds)
    }
}
