//! Training-time augmentation on uint8 CHW images: random crop with zero
//! padding and horizontal flip (the standard CIFAR recipe).

use super::Augment;
use crate::rng::Rng;
use anyhow::bail;
use std::fmt;

/// Padding of `flipcrop` (pixels each side), as in the usual CIFAR recipe.
pub const DEFAULT_PAD: usize = 4;

impl Augment {
    /// Parses `none` or `flipcrop` (padding [`DEFAULT_PAD`]).
    pub fn parse(s: &str) -> anyhow::Result<Augment> {
        match s {
            "none" => Ok(Augment::None),
            "flipcrop" => Ok(Augment::FlipCrop { pad: DEFAULT_PAD }),
            _ => bail!("--augment {s:?}: unknown augmentation (accepted: none, flipcrop)"),
        }
    }

    /// Writes the augmented `image` (CHW, `c` x `h` x `w`) into `out`.
    ///
    /// Draws exactly two numbers from `rng` for `FlipCrop` (offset, flip) and
    /// none for `None`, so the stream position is predictable. The crop
    /// shifts the image by `dx, dy` in `[-pad, pad]`; pixels shifted in from
    /// outside are 0 (the padding is applied to the bytes, before
    /// normalization, like torchvision's `RandomCrop(padding=pad)`).
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
        let pad = match *self {
            Augment::None => {
                out.copy_from_slice(image);
                return;
            }
            Augment::FlipCrop { pad } => pad,
        };
        let span = 2 * pad + 1;
        let pos = rng.below(span * span);
        let dy = (pos / span) as isize - pad as isize;
        let dx = (pos % span) as isize - pad as isize;
        let flip = rng.next_u64() >> 63 == 1;
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

    /// The augmented copy of `image`; see [`Augment::apply_into`].
    pub fn apply(&self, image: &[u8], c: usize, h: usize, w: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = vec![0; image.len()];
        self.apply_into(image, c, h, w, rng, &mut out);
        out
    }
}

impl fmt::Display for Augment {
    /// `none`, `flipcrop` (default padding) or `flipcrop(pad=N)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Augment::None => f.write_str("none"),
            Augment::FlipCrop { pad: DEFAULT_PAD } => f.write_str("flipcrop"),
            Augment::FlipCrop { pad } => write!(f, "flipcrop(pad={pad})"),
        }
    }
}
