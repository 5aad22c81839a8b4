//! Procedurally generated 10-class 32x32 RGB images (`--data synthetic[:N]`).
//!
//! The point is a dataset that needs no download yet behaves like a real
//! one: a small CNN should learn it well (roughly 70-95% test accuracy after
//! a few epochs) without reaching 100% after one. So each class is a shape or
//! texture family drawn with random position, scale, rotation, colours,
//! background gradient and texture, distractor shapes and noise, and classes
//! are built to overlap at their edges:
//!
//! * three grating classes differ only by stripe angle (ranges of 30 degrees
//!   that meet, so near a boundary the label is a coin toss);
//! * disk and square are the same superellipse with exponent ranges that
//!   overlap (rounded squares look like fat disks), and a ring is a disk with
//!   a hole, a blob a disk with very soft edges;
//! * about a fifth of the images are "hard": low contrast, more noise, more
//!   distractors.
//!
//! Every image has its own generator seeded from the split and its index, so
//! the data is identical on any thread count and train and test differ.

use super::{Dataset, Split};
use crate::rng::Rng;
use rayon::prelude::*;
use std::f32::consts::PI;

/// Image side.
pub const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const TRAIN_SEED: u64 = 0x5EED_7A1A_0000_0001;
const TEST_SEED: u64 = 0x5EED_7E57_0000_0002;

/// Class names, indexed by label.
pub const CLASS_NAMES: [&str; 10] = [
    "stripes-upright",
    "stripes-diagonal",
    "stripes-flat",
    "disk",
    "square",
    "ring",
    "cross",
    "checker",
    "triangle",
    "blob",
];

/// `n` training images, or `n / 5` (at least 1) test images, labels cycling
/// through the ten classes so every class has the same count (up to one).
pub fn generate(n: usize, split: Split) -> Dataset {
    let (count, seed) = match split {
        Split::Train => (n, TRAIN_SEED),
        Split::Test => ((n / 5).max(1), TEST_SEED),
    };
    let labels: Vec<u32> = (0..count).map(|i| (i % CLASS_NAMES.len()) as u32).collect();
    let mut images = vec![0u8; count * 3 * PLANE];
    images
        .par_chunks_mut(3 * PLANE)
        .zip(labels.par_iter())
        .enumerate()
        .for_each(|(i, (out, &label))| {
            let mut rng = Rng::new(seed ^ (i as u64 + 1).wrapping_mul(GOLDEN));
            render(label as usize, &mut rng, out);
        });
    Dataset {
        images,
        labels,
        channels: 3,
        height: SIDE,
        width: SIDE,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        source: format!("synthetic:{n} ({split}, {count} images)"),
    }
}

/// Float RGB planes in [0, 1] (values may stray outside before quantizing).
struct Canvas {
    px: Vec<f32>,
}

impl Canvas {
    /// Blends `color` over the canvas with per-pixel coverage `alpha(x, y)`
    /// evaluated at pixel centres, restricted to the box `[x0, x1) x [y0, y1)`.
    fn blend(
        &mut self,
        color: [f32; 3],
        bbox: (f32, f32, f32, f32),
        alpha: impl Fn(f32, f32) -> f32,
    ) {
        let clampi = |v: f32| (v.max(0.0) as usize).min(SIDE);
        let (x0, x1) = (clampi(bbox.0.floor()), clampi(bbox.1.ceil()));
        let (y0, y1) = (clampi(bbox.2.floor()), clampi(bbox.3.ceil()));
        for y in y0..y1 {
            for x in x0..x1 {
                let a = alpha(x as f32 + 0.5, y as f32 + 0.5);
                if a <= 0.0 {
                    continue;
                }
                let p = y * SIDE + x;
                for (c, &col) in color.iter().enumerate() {
                    let v = &mut self.px[c * PLANE + p];
                    *v += (col - *v) * a;
                }
            }
        }
    }
}

/// Coverage of a pixel at signed distance `d` (pixels, negative inside):
/// a one-pixel ramp is cheap anti-aliasing.
fn edge(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

fn random_color(rng: &mut Rng) -> [f32; 3] {
    [rng.uniform(), rng.uniform(), rng.uniform()]
}

fn distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

/// A foreground colour far from `bg` (best of a few tries), or only 0.12 to
/// 0.25 away for hard images.
fn contrasting_color(rng: &mut Rng, bg: [f32; 3], hard: bool) -> [f32; 3] {
    if hard {
        let d = rng.range(0.12, 0.25);
        let dir = [rng.normal(), rng.normal(), rng.normal()];
        let norm = distance(dir, [0.0; 3]).max(1e-3);
        let mut c = [0.0; 3];
        for k in 0..3 {
            c[k] = (bg[k] + dir[k] / norm * d).clamp(0.0, 1.0);
        }
        return c;
    }
    let mut best = random_color(rng);
    for _ in 0..16 {
        if distance(best, bg) >= 0.45 {
            break;
        }
        let c = random_color(rng);
        if distance(c, bg) > distance(best, bg) {
            best = c;
        }
    }
    best
}

/// Noise from one u64: the sum of four 16-bit uniforms, scaled to unit
/// variance (close enough to Gaussian, far cheaper than Box-Muller).
fn cheap_normal(rng: &mut Rng) -> f32 {
    let r = rng.next_u64();
    let s: u32 = (0..4).map(|k| ((r >> (16 * k)) & 0xFFFF) as u32).sum();
    (s as f32 / 65535.0 - 2.0) * 3f32.sqrt()
}

/// A rotation about a centre: maps image coordinates to the shape's frame.
#[derive(Clone, Copy)]
struct Frame {
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
}

impl Frame {
    fn new(cx: f32, cy: f32, angle: f32) -> Self {
        Frame {
            cx,
            cy,
            cos: angle.cos(),
            sin: angle.sin(),
        }
    }
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = (x - self.cx, y - self.cy);
        (
            dx * self.cos + dy * self.sin,
            -dx * self.sin + dy * self.cos,
        )
    }
    fn bbox(&self, r: f32) -> (f32, f32, f32, f32) {
        (self.cx - r, self.cx + r, self.cy - r, self.cy + r)
    }
}

/// Approximate signed distance (pixels) to a superellipse with semi-axes
/// `a`, `b` and exponent `p`: 2 is an ellipse, large values a rectangle.
fn superellipse(u: f32, v: f32, a: f32, b: f32, p: f32) -> f32 {
    let rho = ((u / a).abs().powf(p) + (v / b).abs().powf(p)).powf(1.0 / p);
    (rho - 1.0) * a.min(b)
}

/// Draws one image of class `label` into `out` (CHW bytes).
fn render(label: usize, rng: &mut Rng, out: &mut [u8]) {
    let hard = rng.uniform() < 0.2;
    let bg = random_color(rng);
    let fg = contrasting_color(rng, bg, hard);

    // Background: colour plus a brightness gradient.
    let mut canvas = Canvas {
        px: vec![0.0; 3 * PLANE],
    };
    let (gamp, gdir) = (rng.range(0.0, 0.3), rng.range(0.0, 2.0 * PI));
    let (gc, gs) = (gdir.cos(), gdir.sin());
    for y in 0..SIDE {
        for x in 0..SIDE {
            let t = ((x as f32 - 15.5) * gc + (y as f32 - 15.5) * gs) / 16.0 * gamp;
            for (c, &b) in bg.iter().enumerate() {
                canvas.px[c * PLANE + y * SIDE + x] = b + t;
            }
        }
    }

    // Faint background texture in a third of the images (any angle), so a
    // grating alone does not give the class away.
    if rng.uniform() < 0.3 {
        let col = random_color(rng);
        let (amp, period) = (rng.range(0.08, 0.2), rng.range(3.0, 9.0));
        let frame = Frame::new(16.0, 16.0, rng.range(0.0, PI));
        let phase = rng.range(0.0, 2.0 * PI);
        canvas.blend(col, (0.0, 32.0, 0.0, 32.0), |x, y| {
            let (u, _) = frame.local(x, y);
            amp * (0.5 + 0.5 * (2.0 * PI * u / period + phase).sin())
        });
    }

    let distractors = if hard { 2 + rng.below(3) } else { rng.below(3) };
    let behind = rng.below(distractors + 1);
    for _ in 0..behind {
        draw_distractor(rng, &mut canvas);
    }

    draw_object(label, rng, &mut canvas, fg, hard);

    for _ in behind..distractors {
        draw_distractor(rng, &mut canvas);
    }

    let sigma = if hard {
        rng.range(0.06, 0.16)
    } else {
        rng.range(0.01, 0.07)
    };
    for (o, &v) in out.iter_mut().zip(&canvas.px) {
        let v = v + sigma * cheap_normal(rng);
        *o = (v.clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    }
}

/// A small rectangle or line segment in a random colour anywhere.
fn draw_distractor(rng: &mut Rng, canvas: &mut Canvas) {
    let col = random_color(rng);
    let frame = Frame::new(
        rng.range(0.0, 32.0),
        rng.range(0.0, 32.0),
        rng.range(0.0, PI),
    );
    let (hw, hh) = if rng.uniform() < 0.5 {
        (rng.range(1.0, 3.5), rng.range(1.0, 3.5))
    } else {
        (rng.range(3.0, 7.0), rng.range(0.4, 0.8))
    };
    canvas.blend(col, frame.bbox(hw.max(hh) + 1.5), |x, y| {
        let (u, v) = frame.local(x, y);
        edge((u.abs() - hw).max(v.abs() - hh))
    });
}

/// The class object, drawn in `fg` at a random place, size and angle.
fn draw_object(label: usize, rng: &mut Rng, canvas: &mut Canvas, fg: [f32; 3], hard: bool) {
    let cx = 16.0 + rng.range(-5.0, 5.0);
    let cy = 16.0 + rng.range(-5.0, 5.0);
    let r = if hard {
        rng.range(5.0, 12.0)
    } else {
        rng.range(6.5, 12.0)
    };
    let frame = Frame::new(cx, cy, rng.range(0.0, 2.0 * PI));
    let bbox = frame.bbox(r + 2.0);
    match label {
        // Gratings in a soft round aperture; the class is how far the
        // stripes lean from vertical, |angle| in [0, 30), [30, 60) or
        // [60, 90) degrees. Using |angle| keeps the label unchanged under
        // a horizontal flip (the `flipcrop` augmentation).
        0..=2 => {
            let sign = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
            let deg = sign * (30.0 * label as f32 + rng.range(0.0, 30.0));
            let grating = Frame::new(cx, cy, deg.to_radians());
            let period = rng.range(3.5, 8.0);
            let phase = rng.range(0.0, 2.0 * PI);
            let gain = rng.range(1.0, 4.0);
            let radius = r + 3.0;
            canvas.blend(fg, frame.bbox(radius + 1.0), |x, y| {
                let (u, v) = grating.local(x, y);
                let ap = edge((u * u + v * v).sqrt() - radius);
                let s = ((2.0 * PI * u / period + phase).sin() * gain * 0.5 + 0.5).clamp(0.0, 1.0);
                ap * s
            });
        }
        // Superellipses: exponents overlap on [2.8, 3.2].
        3 | 4 => {
            let p = if label == 3 {
                rng.range(1.7, 3.2)
            } else {
                rng.range(2.8, 12.0)
            };
            let b = r * rng.range(0.75, 1.0);
            canvas.blend(fg, bbox, |x, y| {
                let (u, v) = frame.local(x, y);
                edge(superellipse(u, v, r, b, p))
            });
        }
        // Ring: a disk with a hole of 45-78% of its radius.
        5 => {
            let p = rng.range(1.7, 3.0);
            let b = r * rng.range(0.8, 1.0);
            let k = rng.range(0.45, 0.78);
            canvas.blend(fg, bbox, |x, y| {
                let (u, v) = frame.local(x, y);
                let outer = superellipse(u, v, r, b, p);
                let inner = superellipse(u, v, r * k, b * k, p);
                edge(outer.max(-inner))
            });
        }
        // Cross (plus or x, any angle).
        6 => {
            let t = r * rng.range(0.16, 0.32);
            canvas.blend(fg, bbox, |x, y| {
                let (u, v) = frame.local(x, y);
                let arm1 = (u.abs() - r).max(v.abs() - t);
                let arm2 = (v.abs() - r).max(u.abs() - t);
                edge(arm1.min(arm2))
            });
        }
        // Checkerboard patch in a soft round aperture.
        7 => {
            let period = rng.range(6.0, 12.0);
            let gain = rng.range(2.0, 6.0);
            let radius = r + 2.0;
            canvas.blend(fg, frame.bbox(radius + 1.0), |x, y| {
                let (u, v) = frame.local(x, y);
                let ap = edge((u * u + v * v).sqrt() - radius);
                let s = (2.0 * PI * u / period).sin() * (2.0 * PI * v / period).sin();
                ap * (s * gain * 0.5 + 0.5).clamp(0.0, 1.0)
            });
        }
        // Triangle with jittered vertices (convex, so the distance is the
        // largest distance to an edge line).
        8 => {
            let mut verts = [(0.0f32, 0.0f32); 3];
            for (k, vtx) in verts.iter_mut().enumerate() {
                let a = 2.0 * PI * k as f32 / 3.0 + rng.range(-0.3, 0.3);
                let rad = r * rng.range(0.9, 1.15);
                *vtx = (rad * a.cos(), rad * a.sin());
            }
            let edges: Vec<(f32, f32, f32)> = (0..3)
                .map(|k| {
                    let (p, q) = (verts[k], verts[(k + 1) % 3]);
                    let (ex, ey) = (q.0 - p.0, q.1 - p.1);
                    let len = (ex * ex + ey * ey).sqrt().max(1e-3);
                    // Outward normal for counter-clockwise vertices.
                    let (nx, ny) = (ey / len, -ex / len);
                    (nx, ny, nx * p.0 + ny * p.1)
                })
                .collect();
            canvas.blend(fg, frame.bbox(r * 1.15 + 2.0), |x, y| {
                let (u, v) = frame.local(x, y);
                let d = edges
                    .iter()
                    .map(|&(nx, ny, c)| nx * u + ny * v - c)
                    .fold(f32::NEG_INFINITY, f32::max);
                edge(d)
            });
        }
        // Blob: a soft Gaussian spot.
        _ => {
            let sigma = r * rng.range(0.35, 0.55);
            let b = rng.range(0.7, 1.0);
            let peak = rng.range(0.75, 1.0);
            canvas.blend(fg, frame.bbox(3.0 * sigma), |x, y| {
                let (u, v) = frame.local(x, y);
                let v = v / b;
                peak * (-(u * u + v * v) / (2.0 * sigma * sigma)).exp()
            });
        }
    }
}
