//! Training-time augmentation on uint8 CHW images: random crop with zero
//! padding and horizontal flip (the standard CIFAR recipe), optionally
//! followed by AugMix ([`super::augmix`]) or Gaussian noise.

use super::Augment;
use super::augmix::augmix;
use crate::rng::Rng;
use anyhow::bail;
use std::fmt;

/// Padding of `flipcrop` (pixels each side), as in the usual CIFAR recipe.
pub const DEFAULT_PAD: usize = 4;
/// Noise level of `gaussian` without σ, in [0, 1] pixel units.
pub const DEFAULT_SIGMA: f32 = 0.1;
/// Probability of noising an image for `gaussian` without p: half the
/// images stay clean, as in Rusak et al.'s Gaussian noise training (the
/// CARD code's own choice could not be verified).
pub const DEFAULT_P: f32 = 0.5;

impl Augment {
    /// Parses `none`, `flipcrop` (padding [`DEFAULT_PAD`]), `augmix`, or
    /// `gaussian[:σ[:p]]` (defaults [`DEFAULT_SIGMA`], [`DEFAULT_P`]).
    pub fn parse(s: &str) -> anyhow::Result<Augment> {
        const ACCEPTED: &str = "accepted: none, flipcrop, augmix, gaussian[:σ[:p]]";
        match s {
            "none" => Ok(Augment::None),
            "flipcrop" => Ok(Augment::FlipCrop { pad: DEFAULT_PAD }),
            "augmix" => Ok(Augment::AugMix),
            _ if s == "gaussian" || s.starts_with("gaussian:") => {
                let mut parts = s.split(':').skip(1);
                let num = |v: Option<&str>, what: &str, default: f32| -> anyhow::Result<f32> {
                    match v {
                        None => Ok(default),
                        Some(t) => t.parse::<f32>().map_err(|_| {
                            anyhow::anyhow!("--augment {s:?}: {what} {t:?} is not a number")
                        }),
                    }
                };
                let sigma = num(parts.next(), "σ", DEFAULT_SIGMA)?;
                let p = num(parts.next(), "probability", DEFAULT_P)?;
                if parts.next().is_some() {
                    bail!("--augment {s:?}: expected gaussian[:σ[:p]]");
                }
                if !(sigma.is_finite() && sigma >= 0.0) {
                    bail!("--augment {s:?}: σ must be a finite number >= 0");
                }
                if !(0.0..=1.0).contains(&p) {
                    bail!("--augment {s:?}: probability must be in [0, 1]");
                }
                Ok(Augment::Gaussian { sigma, p })
            }
            _ => bail!("--augment {s:?}: unknown augmentation ({ACCEPTED})"),
        }
    }

    /// Writes the augmented `image` (CHW, `c` x `h` x `w`) into `out`.
    ///
    /// `FlipCrop` draws exactly two numbers from `rng` (offset, flip) and
    /// `None` none, so the stream position is predictable; `AugMix` and
    /// `Gaussian` make the same two draws for their flip and crop first,
    /// then draw what they need. The crop shifts the image by `dx, dy` in
    /// `[-pad, pad]`; pixels shifted in from outside are 0 (the padding is
    /// applied to the bytes, before normalization, like torchvision's
    /// `RandomCrop(padding=pad)`).
    pub fn apply_into(
        &self,
        image: &[u8],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut Rng,
        out: &mut [u8],
    ) {
        assert_eq!(
            image.len(),
            c * h * w,
            "augment: image size does not match {c}x{h}x{w}"
        );
        assert_eq!(
            out.len(),
            image.len(),
            "augment: output size differs from input"
        );
        match *self {
            Augment::None => out.copy_from_slice(image),
            Augment::FlipCrop { pad } => flip_crop(pad, image, c, h, w, rng, out),
            Augment::AugMix => {
                flip_crop(DEFAULT_PAD, image, c, h, w, rng, out);
                let mixed = augmix(out, c, h, w, rng);
                out.copy_from_slice(&mixed);
            }
            Augment::Gaussian { sigma, p } => {
                flip_crop(DEFAULT_PAD, image, c, h, w, rng, out);
                if rng.uniform() < p {
                    add_gaussian_noise(out, sigma, rng);
                }
            }
        }
    }

    /// AugMix's three views for its consistency loss: the flipped and
    /// cropped image, and two independent AugMix chains of it, written to
    /// `out` (three image-sized slices).
    pub fn augmix_views_into(
        image: &[u8],
        c: usize,
        h: usize,
        w: usize,
        rng: &mut Rng,
        out: [&mut [u8]; 3],
    ) {
        let [clean, aug1, aug2] = out;
        flip_crop(DEFAULT_PAD, image, c, h, w, rng, clean);
        aug1.copy_from_slice(&augmix(clean, c, h, w, rng));
        aug2.copy_from_slice(&augmix(clean, c, h, w, rng));
    }

    /// The augmented copy of `image`; see [`Augment::apply_into`].
    pub fn apply(&self, image: &[u8], c: usize, h: usize, w: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = vec![0; image.len()];
        self.apply_into(image, c, h, w, rng, &mut out);
        out
    }
}

impl fmt::Display for Augment {
    /// `none`, `flipcrop` (default padding), `flipcrop(pad=N)`, `augmix` or
    /// `gaussian:σ:p` (what [`Augment::parse`] reads back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Augment::None => f.write_str("none"),
            Augment::FlipCrop { pad: DEFAULT_PAD } => f.write_str("flipcrop"),
            Augment::FlipCrop { pad } => write!(f, "flipcrop(pad={pad})"),
            Augment::AugMix => f.write_str("augmix"),
            Augment::Gaussian { sigma, p } => write!(f, "gaussian:{sigma}:{p}"),
        }
    }
}

/// Random crop with zero padding `pad` and horizontal flip of `image` into
/// `out`; draws exactly two numbers from `rng` (offset, then flip).
fn flip_crop(
    pad: usize,
    image: &[u8],
    c: usize,
    h: usize,
    w: usize,
    rng: &mut Rng,
    out: &mut [u8],
) {
    let shift = FlipCrop::draw(pad, rng);
    shift.apply(image, c, h, w, out);
}

/// One image's crop and flip: `out[y][x] = image[y + dy][x' + dx]` with
/// `x' = w − 1 − x` when flipped, zero outside the image. The wgpu
/// backend applies the same transform on the device
/// (`shaders/augment.wgsl`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlipCrop {
    pub dy: i32,
    pub dx: i32,
    pub flip: bool,
}

impl FlipCrop {
    /// The crop and flip of `--augment flipcrop` with padding `pad`:
    /// draws exactly two numbers from `rng` (offset, then flip).
    pub fn draw(pad: usize, rng: &mut Rng) -> FlipCrop {
        let span = 2 * pad + 1;
        let pos = rng.below(span * span);
        FlipCrop {
            dy: (pos / span) as i32 - pad as i32,
            dx: (pos % span) as i32 - pad as i32,
            flip: rng.next_u64() >> 63 == 1,
        }
    }

    /// Applies the transform to the CHW image `image` into `out`.
    pub fn apply(self, image: &[u8], c: usize, h: usize, w: usize, out: &mut [u8]) {
        let (dy, dx, flip) = (self.dy as isize, self.dx as isize, self.flip);
        for ch in 0..c {
            let src = &image[ch * h * w..(ch + 1) * h * w];
            let dst = &mut out[ch * h * w..(ch + 1) * h * w];
            for y in 0..h {
                let sy = y as isize + dy;
                let row = &mut dst[y * w..(y + 1) * w];
                if sy < 0 || sy >= h as isize {
                    row.fill(0);
                    continue;
                }
                let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                for (x, d) in row.iter_mut().enumerate() {
                    let ox = if flip { w - 1 - x } else { x };
                    let sx = ox as isize + dx;
                    *d = if sx < 0 || sx >= w as isize {
                        0
                    } else {
                        srow[sx as usize]
                    };
                }
            }
        }
    }
}

/// Adds N(0, sigma²) noise to every byte read as a value in [0, 1],
/// clipping to [0, 1] and rounding back to the nearest byte.
pub fn add_gaussian_noise(img: &mut [u8], sigma: f32, rng: &mut Rng) {
    for v in img.iter_mut() {
        let x = *v as f32 / 255.0 + sigma * rng.normal();
        *v = (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
}
