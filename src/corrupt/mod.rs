//! The 15 CIFAR-10-C corruptions at 5 severities (RESEARCH.md §2), faithful
//! to the reference generator (`make_cifar_c.py` of hendrycks/robustness):
//! the same parameters, operations and library semantics (border modes,
//! ImageMagick's motion blur, PIL's box resize, 4:2:0 JPEG, truncation to
//! uint8), with cardc's own seeded randomness.
//!
//! Families live in their own files: [`noise`], [`blur`], [`weather`],
//! [`digital`]; shared machinery in [`filters`], [`geometry`], [`motion`],
//! [`plasma`] and [`frost_texture`].
//!
//! Any image size works (the reference's 32-pixel constants scale with the
//! image where they are sizes: elastic transform, fog's fractal, frost
//! crops); images have 1 (gray) or 3 (RGB) channels.

pub mod blur;
pub mod digital;
pub mod filters;
pub mod frost_texture;
pub mod geometry;
pub mod motion;
pub mod noise;
pub mod plasma;
pub mod weather;
pub mod write;

use crate::data::Dataset;
use crate::rng::Rng;
use anyhow::{Context, bail};
use frost_texture::FrostTexture;
use rayon::prelude::*;
use std::sync::Arc;

/// The corruptions, in the reference generator's order.
pub const CORRUPTIONS: [&str; 15] = [
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
];

/// Parses `all` or a comma-separated list of corruption names.
pub fn parse_list(s: &str) -> anyhow::Result<Vec<&'static str>> {
    if s == "all" {
        return Ok(CORRUPTIONS.to_vec());
    }
    s.split(',')
        .map(|name| {
            CORRUPTIONS
                .iter()
                .find(|c| **c == name.trim())
                .copied()
                .with_context(|| {
                    format!(
                        "--corruptions: unknown corruption {name:?} (accepted: all, {})",
                        CORRUPTIONS.join(", ")
                    )
                })
        })
        .collect()
}

/// Parses severities: `1-5`, `3`, or a list such as `1,3,5`.
pub fn parse_severities(s: &str) -> anyhow::Result<Vec<u8>> {
    let bad = || anyhow::anyhow!("--severities {s:?}: expected e.g. 1-5, 3 or 1,3,5 (1 to 5)");
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (
                a.parse::<u8>().map_err(|_| bad())?,
                b.parse::<u8>().map_err(|_| bad())?,
            ),
            None => {
                let v = part.parse::<u8>().map_err(|_| bad())?;
                (v, v)
            }
        };
        if lo < 1 || hi > 5 || lo > hi {
            return Err(bad());
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Settings beyond (corruption, severity, seed).
#[derive(Clone, Debug, Default)]
pub struct CorruptOptions {
    /// Frost textures to crop from (`--frost-dir`); `None` uses cardc's
    /// procedural ones.
    pub frost_textures: Option<Arc<Vec<FrostTexture>>>,
}

impl CorruptOptions {
    /// Options that crop frost from the user's photos in `dir`.
    pub fn with_frost_dir(dir: &std::path::Path) -> anyhow::Result<CorruptOptions> {
        Ok(CorruptOptions {
            frost_textures: Some(Arc::new(frost_texture::load_dir(dir)?)),
        })
    }
}

/// One image being corrupted: its bytes (CHW) and the same scaled to [0, 1].
pub struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub bytes: Vec<u8>,
    pub data: Vec<f64>,
}

impl Image {
    /// Channel `ch` of the [0, 1] samples.
    pub fn plane(&self, ch: usize) -> &[f64] {
        &self.data[ch * self.h * self.w..(ch + 1) * self.h * self.w]
    }
}

/// [0, 1] samples to bytes the way the reference stores them:
/// `uint8(clip(x, 0, 1) * 255)`, which truncates.
pub fn to_u8(x: &[f64]) -> Vec<u8> {
    x.iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8)
        .collect()
}

/// One image (CHW uint8, `c`×`h`×`w`) corrupted by `name` at `severity`
/// (1..=5), drawing randomness from `rng`. Frost uses the procedural
/// textures; see [`corrupt_image_with`].
pub fn corrupt_image(
    name: &str,
    severity: u8,
    image: &[u8],
    c: usize,
    h: usize,
    w: usize,
    rng: &mut Rng,
) -> anyhow::Result<Vec<u8>> {
    corrupt_image_with(
        name,
        severity,
        image,
        c,
        h,
        w,
        rng,
        &CorruptOptions::default(),
    )
}

/// [`corrupt_image`] with options (frost textures).
#[allow(clippy::too_many_arguments)]
pub fn corrupt_image_with(
    name: &str,
    severity: u8,
    image: &[u8],
    c: usize,
    h: usize,
    w: usize,
    rng: &mut Rng,
    opts: &CorruptOptions,
) -> anyhow::Result<Vec<u8>> {
    if !(1..=5).contains(&severity) {
        bail!("severity {severity} is out of range 1-5");
    }
    if c != 1 && c != 3 {
        bail!("{name}: images with {c} channels are not supported (1 or 3)");
    }
    if h < 4 || w < 4 {
        bail!("{name}: images of {w}x{h} pixels are too small to corrupt (at least 4x4)");
    }
    if image.len() != c * h * w {
        bail!(
            "{name}: image holds {} bytes, expected {c}x{h}x{w}",
            image.len()
        );
    }
    let s = (severity - 1) as usize;
    let img = Image {
        c,
        h,
        w,
        bytes: image.to_vec(),
        data: image.iter().map(|&v| v as f64 / 255.0).collect(),
    };
    Ok(match name {
        "gaussian_noise" => noise::gaussian_noise(&img, s, rng),
        "shot_noise" => noise::shot_noise(&img, s, rng),
        "impulse_noise" => noise::impulse_noise(&img, s, rng),
        "defocus_blur" => blur::defocus_blur(&img, s),
        "glass_blur" => blur::glass_blur(&img, s, rng),
        "motion_blur" => blur::motion_blur(&img, s, rng),
        "zoom_blur" => blur::zoom_blur(&img, s),
        "snow" => weather::snow(&img, s, rng),
        "frost" => match &opts.frost_textures {
            Some(t) => weather::frost(&img, s, rng, t)?,
            None => weather::frost(&img, s, rng, &frost_texture::procedural(h.max(w)))?,
        },
        "fog" => weather::fog(&img, s, rng),
        "brightness" => digital::brightness(&img, s),
        "contrast" => digital::contrast(&img, s),
        "elastic_transform" => digital::elastic_transform(&img, s, rng),
        "pixelate" => digital::pixelate(&img, s),
        "jpeg_compression" => digital::jpeg_compression(&img, s)?,
        other => bail!(
            "unknown corruption {other:?} (accepted: {})",
            CORRUPTIONS.join(", ")
        ),
    })
}

/// Every image of `data` corrupted by `name` at `severity`, in parallel;
/// image i draws from `Rng::derive(seed, "<name>/<severity>/<i>")`, so the
/// result does not depend on the thread count.
pub fn corrupt_dataset(
    data: &Dataset,
    name: &str,
    severity: u8,
    seed: u64,
) -> anyhow::Result<Dataset> {
    corrupt_dataset_with(data, name, severity, seed, &CorruptOptions::default())
}

/// [`corrupt_dataset`] with options (frost textures).
pub fn corrupt_dataset_with(
    data: &Dataset,
    name: &str,
    severity: u8,
    seed: u64,
    opts: &CorruptOptions,
) -> anyhow::Result<Dataset> {
    let (c, h, w) = (data.channels, data.height, data.width);
    let images: Vec<Vec<u8>> = (0..data.len())
        .into_par_iter()
        .map(|i| {
            let mut rng = Rng::derive(seed, &format!("{name}/{severity}/{i}"));
            corrupt_image_with(name, severity, data.image(i), c, h, w, &mut rng, opts)
                .with_context(|| format!("{}: image {i}", data.source))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Dataset {
        images: images.concat(),
        labels: data.labels.clone(),
        channels: c,
        height: h,
        width: w,
        class_names: data.class_names.clone(),
        source: format!("{} + {name}:{severity}", data.source),
    })
}
