//! The 15 CIFAR-10-C corruptions at 5 severities (RESEARCH.md §2).
//!
//! Interface first: only `gaussian_noise` and `contrast` are implemented
//! here (simply); the faithful generator replaces them (issue: robustness
//! evaluation).

use crate::data::Dataset;
use crate::rng::Rng;
use anyhow::{Context, bail};
use rayon::prelude::*;

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

/// One image (CHW uint8, `c`×`h`×`w`) corrupted by `name` at `severity`
/// (1..=5), drawing randomness from `rng`.
pub fn corrupt_image(
    name: &str,
    severity: u8,
    image: &[u8],
    c: usize,
    h: usize,
    w: usize,
    rng: &mut Rng,
) -> anyhow::Result<Vec<u8>> {
    if !(1..=5).contains(&severity) {
        bail!("severity {severity} is out of range 1-5");
    }
    let s = (severity - 1) as usize;
    let x = image.iter().map(|&v| v as f32 / 255.0);
    let out: Vec<f32> = match name {
        "gaussian_noise" => {
            let sigma = [0.04, 0.06, 0.08, 0.09, 0.10][s];
            x.map(|v| v + sigma * rng.normal()).collect()
        }
        "contrast" => {
            let k = [0.75, 0.5, 0.4, 0.3, 0.15][s];
            let v: Vec<f32> = x.collect();
            let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
            v.iter().map(|&p| (p - mean) * k + mean).collect()
        }
        other => bail!("corruption {other:?} is not built yet"),
    };
    let _ = (c, h, w);
    // The reference stores uint8(x * 255) after clipping: it truncates.
    Ok(out
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0) as u8)
        .collect())
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
    let (c, h, w) = (data.channels, data.height, data.width);
    let images: Vec<Vec<u8>> = (0..data.len())
        .into_par_iter()
        .map(|i| {
            let mut rng = Rng::derive(seed, &format!("{name}/{severity}/{i}"));
            corrupt_image(name, severity, data.image(i), c, h, w, &mut rng)
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
