//! Folders of PNG/JPEG images, one subfolder per class.
//!
//! Layouts: `DIR/train/<class>/*` and `DIR/test/<class>/*` when `train/` or
//! `test/` exists, else `DIR/<class>/*` serving both splits.

use super::{Dataset, Split};
use anyhow::{Context, bail, ensure};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions read, compared case-insensitively.
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Loads one split of an image folder (see the module docs for layouts).
///
/// Classes are the sorted subfolder names (of `train/` in the split layout,
/// so labels agree between splits). Every image is converted to RGB and must
/// have the size of the first one: resizing silently would change what the
/// model sees, so a mismatch is an error naming the file.
pub fn load_imagefolder(dir: &Path, split: Split) -> anyhow::Result<Dataset> {
    ensure!(
        dir.is_dir(),
        "imagefolder: directory {} does not exist (or is not a directory)",
        dir.display()
    );
    let (train_root, test_root) = (dir.join("train"), dir.join("test"));
    let split_layout = train_root.is_dir() || test_root.is_dir();
    let (root, note) = if split_layout {
        ensure!(
            train_root.is_dir(),
            "imagefolder: {} has test/ but no train/ folder (class names come from train/)",
            dir.display()
        );
        let root = match split {
            Split::Train => train_root.clone(),
            Split::Test => test_root,
        };
        ensure!(
            root.is_dir(),
            "imagefolder: {} has train/ but no {split}/ folder",
            dir.display()
        );
        (root, "")
    } else {
        (
            dir.to_path_buf(),
            ", no train/test subfolders: test uses the training images",
        )
    };
    let class_dir = if split_layout { &train_root } else { &root };
    let class_names = class_folders(class_dir)?;
    let items = list_images(&root, &class_names, class_dir == &root)?;

    let decoded: Vec<anyhow::Result<(u32, u32, Vec<u8>)>> = items
        .par_iter()
        .map(|(path, _)| decode_rgb_chw(path))
        .collect();
    let mut images = Vec::new();
    let mut size = None;
    for ((path, _), d) in items.iter().zip(decoded) {
        let (w, h, chw) = d?;
        match size {
            None => {
                size = Some((w, h, path.clone()));
                images.reserve(items.len() * chw.len());
            }
            Some((w0, h0, ref first)) if (w0, h0) != (w, h) => bail!(
                "imagefolder: {} is {w}x{h}, but {} (the first image) is {w0}x{h0}; all images must have the same size",
                path.display(),
                first.display()
            ),
            Some(_) => {}
        }
        images.extend_from_slice(&chw);
    }
    let (w, h, _) = size.context("imagefolder: no images")?;
    Ok(Dataset {
        images,
        labels: items.iter().map(|&(_, l)| l).collect(),
        channels: 3,
        height: h as usize,
        width: w as usize,
        class_names,
        source: format!("imagefolder:{} ({split}{note})", dir.display()),
    })
}

/// Sorted names of the subfolders of `dir` (hidden ones skipped).
fn class_folders(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in read_dir(dir)? {
        if entry.is_dir()
            && let Some(name) = entry.file_name().and_then(|n| n.to_str())
            && !name.starts_with('.')
        {
            names.push(name.to_string());
        }
    }
    ensure!(
        !names.is_empty(),
        "imagefolder: {} has no class folders (expected {}/<class>/*.png|jpg|jpeg)",
        dir.display(),
        dir.display()
    );
    names.sort();
    Ok(names)
}

/// All image files under `root/<class>`, sorted within each class, with
/// their labels. When `root` is not where classes were read from (the test
/// split), a class folder may be absent, but an unknown one is an error.
fn list_images(
    root: &Path,
    classes: &[String],
    classes_from_root: bool,
) -> anyhow::Result<Vec<(PathBuf, u32)>> {
    if !classes_from_root {
        for extra in class_folders(root)? {
            ensure!(
                classes.contains(&extra),
                "imagefolder: class folder {} is not among the training classes {classes:?}",
                root.join(&extra).display()
            );
        }
    }
    let mut items = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let folder = root.join(class);
        if !folder.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = read_dir(&folder)?
            .into_iter()
            .filter(|p| p.is_file() && has_image_extension(p))
            .collect();
        ensure!(
            !files.is_empty(),
            "imagefolder: class folder {} has no .png/.jpg/.jpeg images",
            folder.display()
        );
        files.sort();
        items.extend(files.into_iter().map(|p| (p, label as u32)));
    }
    Ok(items)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn read_dir(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("imagefolder: cannot list {}", dir.display()))?;
    entries
        .map(|e| {
            e.map(|e| e.path())
                .with_context(|| format!("imagefolder: cannot list {}", dir.display()))
        })
        .collect()
}

/// Decodes a file to RGB and returns (width, height, CHW bytes).
fn decode_rgb_chw(path: &Path) -> anyhow::Result<(u32, u32, Vec<u8>)> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("imagefolder: cannot open {}", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("imagefolder: cannot read {}", path.display()))?
        .decode()
        .with_context(|| format!("imagefolder: cannot decode image {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut chw = vec![0u8; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = px.0[c];
        }
    }
    Ok((w, h, chw))
}

/// Writes `ds` as `dir/<class>/<index>.png` (every class gets a folder, even
/// one without images), creating folders as needed. Grayscale (1-channel)
/// and RGB (3-channel) datasets are supported.
pub fn write_imagefolder(dir: &Path, ds: &Dataset) -> anyhow::Result<()> {
    let color = match ds.channels {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        c => bail!(
            "cannot write {} as an image folder: {c} channels (need 1 or 3)",
            dir.display()
        ),
    };
    for name in &ds.class_names {
        ensure!(
            !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..",
            "cannot write {}: class name {name:?} is not a folder name",
            dir.display()
        );
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    let plane = ds.height * ds.width;
    (0..ds.len()).into_par_iter().try_for_each(|i| {
        let label = ds.labels[i] as usize;
        let class = ds.class_names.get(label).with_context(|| {
            format!(
                "cannot write {}: image {i} has label {label} without a class name",
                dir.display()
            )
        })?;
        let chw = ds.image(i);
        let mut hwc = vec![0u8; chw.len()];
        for c in 0..ds.channels {
            for p in 0..plane {
                hwc[p * ds.channels + c] = chw[c * plane + p];
            }
        }
        let path = dir.join(class).join(format!("{i:06}.png"));
        image::save_buffer(&path, &hwc, ds.width as u32, ds.height as u32, color)
            .with_context(|| format!("cannot write {}", path.display()))
    })
}
