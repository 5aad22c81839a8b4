//! Frost textures. The reference crops random patches of six frost photos
//! that cardc cannot ship; cardc draws its own (deterministic, procedural:
//! branching ice needles over a plasma haze, bluish white) or reads the
//! user's photos from `--frost-dir`, scaled by 0.2 like the reference does.

use super::filters::{self, Border};
use super::plasma::plasma_fractal;
use crate::rng::Rng;
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

/// How many procedural textures there are (the reference draws from five).
pub const PROCEDURAL_COUNT: usize = 5;
/// Side of the procedural textures for images up to `BASE_SIDE - 1` pixels.
const BASE_SIDE: usize = 224;

/// An RGB texture, row-major HWC samples on the 0..255 scale.
#[derive(Clone, Debug)]
pub struct FrostTexture {
    /// File name or `procedural-K`, for messages.
    pub name: String,
    pub h: usize,
    pub w: usize,
    pub rgb: Vec<f64>,
}

impl FrostTexture {
    /// The RGB sample at (`y`, `x`).
    pub fn pixel(&self, y: usize, x: usize) -> [f64; 3] {
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
}

/// The procedural textures, at least `min_side + 1` pixels on each side
/// (made once per size and kept).
pub fn procedural(min_side: usize) -> Arc<Vec<FrostTexture>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Vec<FrostTexture>>>>> = OnceLock::new();
    let side = BASE_SIDE.max((min_side + 32).next_multiple_of(32));
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(side)
        .or_insert_with(|| Arc::new((0..PROCEDURAL_COUNT).map(|k| generate(k, side)).collect()))
        .clone()
}

/// Procedural texture `k` (side × side): ice needles that branch at about
/// ±60°, thinning with each generation, over a soft haze.
fn generate(k: usize, side: usize) -> FrostTexture {
    let mut rng = Rng::derive(0xF2057 + k as u64, "frost-texture");
    let n = side * side;
    let plasma_side = side.next_power_of_two();
    let plasma = plasma_fractal(plasma_side, 2.2, &mut rng);
    let haze: Vec<f64> = (0..n)
        .map(|i| 0.22 + 0.25 * plasma[(i / side) * plasma_side + i % side])
        .collect();
    let mut needles = vec![0.0f64; n];
    let seeds = 10 + side * side / 4000;
    for _ in 0..seeds {
        let y = rng.uniform_f64() * side as f64;
        let x = rng.uniform_f64() * side as f64;
        let angle = rng.uniform_f64() * std::f64::consts::TAU;
        let len = 25.0 + 70.0 * rng.uniform_f64();
        grow(&mut needles, side, (y, x), angle, len, 0, &mut rng);
    }
    let needles = filters::gaussian_filter(&needles, side, side, 0.7, 4.0, Border::Reflect);
    let mut rgb = Vec::with_capacity(n * 3);
    for i in 0..n {
        let grain = 0.06 * (rng.uniform_f64() - 0.5);
        let v = (haze[i] + 1.4 * needles[i] + grain).clamp(0.0, 1.0);
        for tint in [0.84, 0.92, 1.0] {
            rgb.push((255.0 * (v * tint + 0.04 * (1.0 - v))).clamp(0.0, 255.0));
        }
    }
    FrostTexture {
        name: format!("procedural-{}", k + 1),
        h: side,
        w: side,
        rgb,
    }
}

/// Draws one needle from `pos` along `angle` for `len` pixels, spawning
/// shorter side branches.
fn grow(
    map: &mut [f64],
    side: usize,
    pos: (f64, f64),
    angle: f64,
    len: f64,
    depth: u32,
    rng: &mut Rng,
) {
    let (mut y, mut x) = pos;
    let mut a = angle;
    let strength = 0.55 * 0.7f64.powi(depth as i32);
    let mut next_branch = 4.0 + 8.0 * rng.uniform_f64();
    let mut t = 0.0;
    while t < len {
        if y >= 0.0 && x >= 0.0 && (y as usize) < side && (x as usize) < side {
            map[y as usize * side + x as usize] += strength;
        }
        a += 0.06 * rng.normal() as f64;
        y += a.sin();
        x += a.cos();
        t += 1.0;
        if depth < 3 && t >= next_branch {
            let turn = if rng.uniform() < 0.5 { -1.0 } else { 1.0 }
                * (std::f64::consts::FRAC_PI_3 + 0.2 * rng.normal() as f64);
            grow(
                map,
                side,
                (y, x),
                a + turn,
                (len - t) * (0.3 + 0.4 * rng.uniform_f64()),
                depth + 1,
                rng,
            );
            next_branch = t + 4.0 + 8.0 * rng.uniform_f64();
        }
    }
}

/// The user's frost photos in `dir` (PNG/JPEG, by name), each scaled by 0.2
/// with OpenCV's bilinear rule as the reference does.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<FrostTexture>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("--frost-dir {}: cannot read the directory", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("--frost-dir {}: no PNG or JPEG images there", dir.display());
    }
    files
        .iter()
        .map(|p| {
            let img = image::open(p)
                .with_context(|| format!("--frost-dir: cannot decode {}", p.display()))?
                .to_rgb8();
            let (w, h) = (img.width() as usize, img.height() as usize);
            let src: Vec<f64> = img.as_raw().iter().map(|&v| v as f64).collect();
            let (oh, ow) = (
                ((h as f64) * 0.2).round() as usize,
                ((w as f64) * 0.2).round() as usize,
            );
            Ok(FrostTexture {
                name: p.display().to_string(),
                h: oh,
                w: ow,
                rgb: resize_linear(&src, h, w, oh, ow, 0.2),
            })
        })
        .collect()
}

/// OpenCV `resize(fx=fy=scale, INTER_LINEAR)` of an RGB image (HWC):
/// output pixel `o` reads input `(o + ½)/scale − ½`, clamped to the image.
fn resize_linear(src: &[f64], h: usize, w: usize, oh: usize, ow: usize, scale: f64) -> Vec<f64> {
    let taps = |o: usize, n: usize| {
        let p = ((o as f64 + 0.5) / scale - 0.5).max(0.0);
        let i = (p.floor() as usize).min(n - 1);
        let f = if i + 1 < n { p - i as f64 } else { 0.0 };
        (i, (i + 1).min(n - 1), f)
    };
    let mut out = Vec::with_capacity(oh * ow * 3);
    for y in 0..oh {
        let (y0, y1, fy) = taps(y, h);
        for x in 0..ow {
            let (x0, x1, fx) = taps(x, w);
            for ch in 0..3 {
                let at = |yy: usize, xx: usize| src[(yy * w + xx) * 3 + ch];
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bot * fy);
            }
        }
    }
    out
}

/// Writes the procedural textures as `frost1.png` … into `dir` (at their
/// final scale), e.g. to run the reference generator with the same frost.
pub fn write_procedural(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    procedural(0)
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let path = dir.join(format!("frost{}.png", k + 1));
            let bytes: Vec<u8> = t
                .rgb
                .iter()
                .map(|&v| v.round().clamp(0.0, 255.0) as u8)
                .collect();
            image::save_buffer(
                &path,
                &bytes,
                t.w as u32,
                t.h as u32,
                image::ExtendedColorType::Rgb8,
            )
            .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procedural_textures_are_deterministic_frost_like_and_large_enough() {
        let a = procedural(32);
        assert_eq!(a.len(), PROCEDURAL_COUNT);
        let b = generate(0, BASE_SIDE);
        assert_eq!(a[0].rgb, b.rgb);
        for t in a.iter() {
            let mean = t.rgb.iter().sum::<f64>() / t.rgb.len() as f64;
            assert!((60.0..200.0).contains(&mean), "{}: mean {mean}", t.name);
            // Blue-ish: the blue channel is the brightest on average.
            let m = |ch: usize| t.rgb.iter().skip(ch).step_by(3).sum::<f64>();
            assert!(m(2) > m(0));
        }
        assert!(procedural(300)[0].h > 300);
    }

    #[test]
    fn resize_keeps_a_constant_image() {
        let src = vec![90.0; 20 * 15 * 3];
        let out = resize_linear(&src, 20, 15, 4, 3, 0.2);
        assert_eq!(out.len(), 4 * 3 * 3);
        assert!(out.iter().all(|&v| (v - 90.0).abs() < 1e-9));
    }
}
