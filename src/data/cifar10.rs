//! The CIFAR-10 binary format: records of one label byte followed by the
//! 1024 red, 1024 green and 1024 blue bytes of a 32x32 image, row-major.

use super::{Dataset, Split};
use anyhow::{Context, bail, ensure};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Image side of the format.
pub const SIDE: usize = 32;
/// Bytes of one image (3 channels of 32x32).
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Bytes of one record: label byte plus image.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// Class names used when the directory has no `batches.meta.txt`.
pub const DEFAULT_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Loads `data_batch_*.bin` (train) or `test_batch.bin` (test) from `dir`.
pub fn load_cifar10(dir: &Path, split: Split) -> anyhow::Result<Dataset> {
    ensure!(
        dir.is_dir(),
        "cifar10: directory {} does not exist (or is not a directory)",
        dir.display()
    );
    let class_names = read_class_names(dir)?;
    let files = split_files(dir, split)?;
    // Files are parsed in parallel; results are joined in file order.
    let parts = files
        .par_iter()
        .map(|f| read_batch(f, class_names.len()))
        .collect::<Vec<_>>();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for part in parts {
        let (imgs, labs) = part?;
        images.extend_from_slice(&imgs);
        labels.extend_from_slice(&labs);
    }
    Ok(Dataset {
        images,
        labels,
        channels: 3,
        height: SIDE,
        width: SIDE,
        class_names,
        source: format!("cifar10:{} ({split})", dir.display()),
    })
}

/// The files of a split, in order: train batches sorted by their number.
fn split_files(dir: &Path, split: Split) -> anyhow::Result<Vec<PathBuf>> {
    match split {
        Split::Test => {
            let f = dir.join("test_batch.bin");
            ensure!(f.is_file(), "cifar10: {} does not exist", f.display());
            Ok(vec![f])
        }
        Split::Train => {
            let mut found: Vec<(u64, String)> = Vec::new();
            let entries = std::fs::read_dir(dir)
                .with_context(|| format!("cifar10: cannot list {}", dir.display()))?;
            for entry in entries {
                let entry =
                    entry.with_context(|| format!("cifar10: cannot list {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(mid) = name
                    .strip_prefix("data_batch_")
                    .and_then(|s| s.strip_suffix(".bin"))
                {
                    // Numeric order so data_batch_10 follows data_batch_9.
                    found.push((mid.parse().unwrap_or(u64::MAX), name));
                }
            }
            if found.is_empty() {
                bail!(
                    "cifar10: no data_batch_*.bin files in {} (expected data_batch_1.bin ... data_batch_5.bin)",
                    dir.display()
                );
            }
            found.sort();
            Ok(found.into_iter().map(|(_, n)| dir.join(n)).collect())
        }
    }
}

/// Class names from `batches.meta.txt` (one per line, blank lines ignored),
/// or the standard ten when the file is absent.
fn read_class_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let meta = dir.join("batches.meta.txt");
    if !meta.exists() {
        return Ok(DEFAULT_CLASS_NAMES.iter().map(|s| s.to_string()).collect());
    }
    let text = std::fs::read_to_string(&meta)
        .with_context(|| format!("cifar10: cannot read {}", meta.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    ensure!(
        !names.is_empty(),
        "cifar10: {} lists no class names",
        meta.display()
    );
    ensure!(
        names.len() <= 256,
        "cifar10: {} lists {} class names, but a label byte holds at most 256",
        meta.display(),
        names.len()
    );
    Ok(names)
}

/// Parses one batch file into (CHW images, labels).
fn read_batch(path: &Path, num_classes: usize) -> anyhow::Result<(Vec<u8>, Vec<u32>)> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cifar10: cannot read {}", path.display()))?;
    ensure!(
        !bytes.is_empty(),
        "cifar10: {} is an empty file",
        path.display()
    );
    ensure!(
        bytes.len().is_multiple_of(RECORD_BYTES),
        "cifar10: {} has {} bytes, not a multiple of the {RECORD_BYTES}-byte record (truncated or not CIFAR-10 binary?)",
        path.display(),
        bytes.len()
    );
    let n = bytes.len() / RECORD_BYTES;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = rec[0] as usize;
        ensure!(
            label < num_classes,
            "cifar10: {} record {i} has label {label}, but there are only {num_classes} classes",
            path.display()
        );
        labels.push(label as u32);
        images.extend_from_slice(&rec[1..]);
    }
    Ok((images, labels))
}

/// Writes `ds` as one CIFAR-10 binary batch file. The dataset must hold
/// 3x32x32 images with labels below 256, as the format requires.
pub fn write_cifar10_bin(path: &Path, ds: &Dataset) -> anyhow::Result<()> {
    ensure!(
        (ds.channels, ds.height, ds.width) == (3, SIDE, SIDE),
        "cannot write {} as CIFAR-10: images are {}x{}x{}, the format holds 3x32x32",
        path.display(),
        ds.channels,
        ds.height,
        ds.width
    );
    let mut out = Vec::with_capacity(ds.len() * RECORD_BYTES);
    for i in 0..ds.len() {
        let label = u8::try_from(ds.labels[i]).with_context(|| {
            format!(
                "cannot write {} as CIFAR-10: label {} of image {i} does not fit a byte",
                path.display(),
                ds.labels[i]
            )
        })?;
        out.push(label);
        out.extend_from_slice(ds.image(i));
    }
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a CIFAR-10 directory: `data_batch_1.bin` from `train`,
/// `test_batch.bin` from `test` and `batches.meta.txt` from the train
/// class names. Creates `dir` if needed.
pub fn write_cifar10_dir(dir: &Path, train: &Dataset, test: &Dataset) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_cifar10_bin(&dir.join("data_batch_1.bin"), train)?;
    write_cifar10_bin(&dir.join("test_batch.bin"), test)?;
    let meta = dir.join("batches.meta.txt");
    let mut text = train.class_names.join("\n");
    text.push('\n');
    std::fs::write(&meta, text).with_context(|| format!("cannot write {}", meta.display()))
}
