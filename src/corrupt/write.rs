//! Writing a corrupted dataset in the CIFAR-10-C layout: `<corruption>.npy`
//! (uint8 `[S·N, H, W, C]`, the chosen severities in ascending order, N
//! images each), `labels.npy` (uint8 `[S·N]`, as the real CIFAR-10-C) and
//! the manifest `cardc-corrupt.json` that [`crate::data::cifar10c`] reads.
//!
//! Each file is written to a temporary name and renamed when complete, so a
//! failure leaves no partial file behind.

use super::{CorruptOptions, corrupt_dataset_with};
use crate::data::Dataset;
use crate::data::cifar10c::{MANIFEST, Manifest};
use crate::data::npy::{NpyWriter, write_u8};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// What [`write_corrupted`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    pub dir: PathBuf,
    /// Images per severity.
    pub images: usize,
    pub corruptions: Vec<String>,
    pub severities: Vec<u8>,
    pub seed: u64,
    pub files: Vec<PathBuf>,
    pub seconds: f64,
    /// Corrupted images produced per second.
    pub images_per_second: f64,
}

/// Corrupts `data` with each of `corruptions` at each of `severities` and
/// writes the files into `out`; `progress(done_cells)` runs after each cell.
pub fn write_corrupted(
    data: &Dataset,
    out: &Path,
    corruptions: &[&str],
    severities: &[u8],
    seed: u64,
    opts: &CorruptOptions,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<Written> {
    if data.is_empty() {
        bail!("{}: no images to corrupt", data.source);
    }
    if data.labels.iter().any(|&l| l > 255) {
        bail!(
            "{}: labels above 255 do not fit CIFAR-10-C's uint8 labels.npy",
            data.source
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out {}: cannot create the directory", out.display()))?;
    let start = std::time::Instant::now();
    let (c, h, w) = (data.channels, data.height, data.width);
    let n = data.len();
    let rows = n * severities.len();
    let mut files = Vec::new();
    let mut done = 0;
    for &name in corruptions {
        let path = out.join(format!("{name}.npy"));
        let mut file = NpyWriter::create(&path, &[rows, h, w, c])?;
        for &s in severities {
            let cell = corrupt_dataset_with(data, name, s, seed, opts)?;
            file.write(&to_hwc(&cell.images, c, h, w))?;
            done += 1;
            progress(done);
        }
        file.finish()?;
        files.push(path);
    }
    let labels: Vec<u8> = (0..severities.len())
        .flat_map(|_| data.labels.iter().map(|&l| l as u8))
        .collect();
    let lpath = out.join("labels.npy");
    write_u8(&lpath, &[rows], &labels)?;
    files.push(lpath);
    let manifest = Manifest {
        severities: severities.to_vec(),
        images: n,
        class_names: data.class_names.clone(),
        seed,
        source: data.source.clone(),
        corruptions: corruptions.iter().map(|s| s.to_string()).collect(),
    };
    let mpath = out.join(MANIFEST);
    let tmp = out.join(format!(".{MANIFEST}.partial"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &mpath).with_context(|| format!("cannot write {}", mpath.display()))?;
    files.push(mpath);
    let seconds = start.elapsed().as_secs_f64();
    Ok(Written {
        dir: out.to_path_buf(),
        images: n,
        corruptions: manifest.corruptions,
        severities: severities.to_vec(),
        seed,
        files,
        seconds,
        images_per_second: (rows * corruptions.len()) as f64 / seconds.max(1e-9),
    })
}

/// CHW images back to back, to HWC rows.
fn to_hwc(images: &[u8], c: usize, h: usize, w: usize) -> Vec<u8> {
    let (hw, len) = (h * w, c * h * w);
    let mut out = vec![0u8; images.len()];
    for (src, dst) in images.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        for p in 0..hw {
            for ch in 0..c {
                dst[p * c + ch] = src[ch * hw + p];
            }
        }
    }
    out
}
