//! White-box adversarial attacks in pixel space: FGSM, PGD-ℓ∞ and PGD-ℓ2
//! (Madry et al.: random start, fixed step, projection onto the ε-ball and
//! onto [0, 1] after every step; the last iterate is the result).
//!
//! Perturbations live on [0, 1] pixels; the model's normalization is
//! applied inside, so the gradient reaching the pixels is the network's
//! input gradient divided by the channel's std (chain rule). Gradients
//! come from the eval-mode network ([`crate::backend::cpu::input_gradient`]:
//! BatchNorm running statistics, masked and binary weights as deployed).

use crate::backend::cpu;
use crate::data::Normalization;
use crate::model::Model;
use crate::rng::Rng;
use crate::tensor::Tensor;
use anyhow::{Context, bail, ensure};
use std::fmt;

/// One attack, as `--attack` names it.
#[derive(Clone, Debug, PartialEq)]
pub enum AttackSpec {
    /// One signed-gradient step of size `eps` (no random start).
    Fgsm { eps: f32 },
    /// `steps` signed-gradient steps of size `step` from a uniform random
    /// start in the ℓ∞ ball of radius `eps`.
    PgdLinf { eps: f32, steps: usize, step: f32 },
    /// `steps` normalized-gradient steps of ℓ2 length `step` from a random
    /// start in the ℓ2 ball of radius `eps` (per image).
    PgdL2 { eps: f32, steps: usize, step: f32 },
}

const FORMS: &str = "fgsm:EPS, pgd-linf:EPS:STEPS[:STEP] or pgd-l2:EPS:STEPS[:STEP], \
                     EPS and STEP in [0,1] pixel units such as 8/255 or 0.03";

/// Parses a number or a fraction such as `8/255`.
fn parse_amount(spec: &str, what: &str, s: &str) -> anyhow::Result<f32> {
    let bad = || format!("--attack {spec:?}: {what} {s:?} is not a number or fraction ({FORMS})");
    let v = match s.split_once('/') {
        Some((n, d)) => {
            let n: f64 = n.trim().parse().ok().with_context(bad)?;
            let d: f64 = d.trim().parse().ok().with_context(bad)?;
            ensure!(d != 0.0, "{}", bad());
            n / d
        }
        None => s.trim().parse::<f64>().ok().with_context(bad)?,
    };
    ensure!(
        v.is_finite() && v > 0.0,
        "--attack {spec:?}: {what} must be positive ({FORMS})"
    );
    Ok(v as f32)
}

/// Prints an amount as `k/255` when it is a whole number of grey levels.
fn fmt_amount(v: f32) -> String {
    let k = v as f64 * 255.0;
    if (k - k.round()).abs() < 1e-3 && k.round() >= 1.0 {
        format!("{}/255", k.round() as i64)
    } else {
        format!("{v}")
    }
}

impl AttackSpec {
    /// Parses `fgsm:EPS`, `pgd-linf:EPS:STEPS[:STEP]`, `pgd-l2:EPS:STEPS[:STEP]`.
    /// Without STEP, PGD uses `2.5 · EPS / STEPS` (Madry et al.).
    pub fn parse(spec: &str) -> anyhow::Result<AttackSpec> {
        let parts: Vec<&str> = spec.trim().split(':').collect();
        let steps = |s: &str| -> anyhow::Result<usize> {
            let n: usize = s.trim().parse().ok().with_context(|| {
                format!("--attack {spec:?}: STEPS {s:?} is not a whole number ({FORMS})")
            })?;
            ensure!(
                (1..=10_000).contains(&n),
                "--attack {spec:?}: STEPS must be 1 to 10000"
            );
            Ok(n)
        };
        let linf_eps = |s: &str| -> anyhow::Result<f32> {
            let e = parse_amount(spec, "EPS", s)?;
            ensure!(
                e <= 1.0,
                "--attack {spec:?}: EPS {e} is beyond the [0,1] pixel range ({FORMS})"
            );
            Ok(e)
        };
        let pgd = |linf: bool| -> anyhow::Result<(f32, usize, f32)> {
            ensure!(
                parts.len() == 3 || parts.len() == 4,
                "--attack {spec:?}: expected {}:EPS:STEPS[:STEP] ({FORMS})",
                parts[0]
            );
            let eps = if linf {
                linf_eps(parts[1])?
            } else {
                parse_amount(spec, "EPS", parts[1])?
            };
            let n = steps(parts[2])?;
            let step = match parts.get(3) {
                Some(s) => parse_amount(spec, "STEP", s)?,
                None => 2.5 * eps / n as f32,
            };
            Ok((eps, n, step))
        };
        match parts[0] {
            "fgsm" => {
                ensure!(
                    parts.len() == 2,
                    "--attack {spec:?}: expected fgsm:EPS ({FORMS})"
                );
                Ok(AttackSpec::Fgsm {
                    eps: linf_eps(parts[1])?,
                })
            }
            "pgd-linf" | "pgd" => {
                let (eps, steps, step) = pgd(true)?;
                Ok(AttackSpec::PgdLinf { eps, steps, step })
            }
            "pgd-l2" => {
                let (eps, steps, step) = pgd(false)?;
                Ok(AttackSpec::PgdL2 { eps, steps, step })
            }
            other => bail!("--attack {spec:?}: unknown attack {other:?} (accepted: {FORMS})"),
        }
    }

    /// The radius of the threat model.
    pub fn eps(&self) -> f32 {
        match self {
            AttackSpec::Fgsm { eps }
            | AttackSpec::PgdLinf { eps, .. }
            | AttackSpec::PgdL2 { eps, .. } => *eps,
        }
    }

    /// Gradient passes per image.
    pub fn gradient_steps(&self) -> usize {
        match self {
            AttackSpec::Fgsm { .. } => 1,
            AttackSpec::PgdLinf { steps, .. } | AttackSpec::PgdL2 { steps, .. } => *steps,
        }
    }
}

impl fmt::Display for AttackSpec {
    /// The form [`AttackSpec::parse`] reads back (PGD with its step).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackSpec::Fgsm { eps } => write!(f, "fgsm:{}", fmt_amount(*eps)),
            AttackSpec::PgdLinf { eps, steps, step } => write!(
                f,
                "pgd-linf:{}:{steps}:{}",
                fmt_amount(*eps),
                fmt_amount(*step)
            ),
            AttackSpec::PgdL2 { eps, steps, step } => write!(
                f,
                "pgd-l2:{}:{steps}:{}",
                fmt_amount(*eps),
                fmt_amount(*step)
            ),
        }
    }
}

impl std::str::FromStr for AttackSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        AttackSpec::parse(s)
    }
}

/// Loss gradient with respect to the [0, 1] pixels `[B, C, H, W]`, and the
/// logits at those pixels.
pub fn pixel_gradient(
    model: &Model,
    norm: &Normalization,
    pixels: &[f32],
    labels: &[u32],
) -> anyhow::Result<(Tensor, Vec<f32>)> {
    let [c, h, w] = model.graph.input_shape();
    let plane = h * w;
    let b = labels.len();
    ensure!(
        pixels.len() == b * c * plane && b > 0,
        "attack: {} pixel values for {b} images of {c}x{h}x{w}",
        pixels.len()
    );
    ensure!(
        norm.channels() == c,
        "attack: normalization has {} channels, the model takes {c}",
        norm.channels()
    );
    let mut x = pixels.to_vec();
    norm.normalize_pixels(&mut x, plane);
    let out = cpu::input_gradient(model, &Tensor::from_vec(&[b, c, h, w], x), labels)?;
    let mut g = out.input_grad.data;
    for img in g.chunks_exact_mut(c * plane) {
        for (ch, s) in img.chunks_exact_mut(plane).zip(&norm.std) {
            ch.iter_mut().for_each(|v| *v /= s);
        }
    }
    Ok((out.logits, g))
}

fn sign(v: f32) -> f32 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Projects `adv` onto the ℓ∞ ball of radius `eps` around `clean` and onto [0, 1].
fn project_linf(adv: &mut [f32], clean: &[f32], eps: f32) {
    for (a, &x) in adv.iter_mut().zip(clean) {
        *a = a.clamp(x - eps, x + eps).clamp(0.0, 1.0);
    }
}

/// Projects each image of `adv` onto the ℓ2 ball of radius `eps` around
/// `clean`, then clips to [0, 1] (which can only shrink the perturbation).
fn project_l2(adv: &mut [f32], clean: &[f32], eps: f32, image_len: usize) {
    for (a, x) in adv
        .chunks_exact_mut(image_len)
        .zip(clean.chunks_exact(image_len))
    {
        let norm = a
            .iter()
            .zip(x)
            .map(|(&p, &q)| ((p - q) as f64).powi(2))
            .sum::<f64>()
            .sqrt() as f32;
        let k = if norm > eps { eps / norm } else { 1.0 };
        for (p, &q) in a.iter_mut().zip(x) {
            *p = (q + (*p - q) * k).clamp(0.0, 1.0);
        }
    }
}

/// Adversarial versions of `pixels` (`[B, C, H, W]` in [0, 1]) against
/// `model` for `labels`: the attack maximizes the cross-entropy of the
/// eval-mode network within the threat model of `spec`. Random starts draw
/// from `rng`. Returns pixels of the same shape, in [0, 1].
pub fn attack_batch(
    model: &Model,
    norm: &Normalization,
    pixels: &[f32],
    labels: &[u32],
    spec: &AttackSpec,
    rng: &mut Rng,
) -> anyhow::Result<Vec<f32>> {
    let [c, h, w] = model.graph.input_shape();
    let image_len = c * h * w;
    ensure!(
        pixels.len() == labels.len() * image_len && !labels.is_empty(),
        "attack: {} pixel values for {} images of {c}x{h}x{w}",
        pixels.len(),
        labels.len()
    );
    let clean = pixels;
    match *spec {
        AttackSpec::Fgsm { eps } => {
            let (_, g) = pixel_gradient(model, norm, clean, labels)?;
            let mut adv: Vec<f32> = clean
                .iter()
                .zip(&g)
                .map(|(&x, &d)| x + eps * sign(d))
                .collect();
            project_linf(&mut adv, clean, eps);
            Ok(adv)
        }
        AttackSpec::PgdLinf { eps, steps, step } => {
            let mut adv: Vec<f32> = clean.iter().map(|&x| x + rng.range(-eps, eps)).collect();
            project_linf(&mut adv, clean, eps);
            for _ in 0..steps {
                let (_, g) = pixel_gradient(model, norm, &adv, labels)?;
                for (a, &d) in adv.iter_mut().zip(&g) {
                    *a += step * sign(d);
                }
                project_linf(&mut adv, clean, eps);
            }
            Ok(adv)
        }
        AttackSpec::PgdL2 { eps, steps, step } => {
            // Random start: a Gaussian direction scaled to a radius uniform in [0, eps].
            let mut adv = clean.to_vec();
            for a in adv.chunks_exact_mut(image_len) {
                let dir: Vec<f32> = (0..image_len).map(|_| rng.normal()).collect();
                let n = dir.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
                let r = eps * rng.uniform();
                if n > 0.0 {
                    a.iter_mut().zip(&dir).for_each(|(p, &d)| *p += r * d / n);
                }
            }
            project_l2(&mut adv, clean, eps, image_len);
            for _ in 0..steps {
                let (_, g) = pixel_gradient(model, norm, &adv, labels)?;
                for (a, gi) in adv
                    .chunks_exact_mut(image_len)
                    .zip(g.chunks_exact(image_len))
                {
                    let n = gi.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
                    if n > 0.0 {
                        a.iter_mut().zip(gi).for_each(|(p, &d)| *p += step * d / n);
                    }
                }
                project_l2(&mut adv, clean, eps, image_len);
            }
            Ok(adv)
        }
    }
}

/// [`attack_batch`] on a normalized batch (`[B, C, H, W]`, as the loader
/// makes them): denormalizes to pixels, attacks, normalizes back. Used by
/// adversarial training.
pub fn attack_normalized(
    model: &Model,
    norm: &Normalization,
    images: &crate::tensor::Tensor,
    labels: &[u32],
    spec: &AttackSpec,
    rng: &mut Rng,
) -> anyhow::Result<crate::tensor::Tensor> {
    let shape = images.shape.clone();
    let plane = shape.iter().skip(2).product::<usize>().max(1);
    let mut px = images.data.clone();
    norm.denormalize_pixels(&mut px, plane);
    let mut adv = attack_batch(model, norm, &px, labels, spec, rng)?;
    norm.normalize_pixels(&mut adv, plane);
    Ok(crate::tensor::Tensor::from_vec(&shape, adv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let a = AttackSpec::parse("pgd-linf:8/255:10:2/255").unwrap();
        assert_eq!(
            a,
            AttackSpec::PgdLinf {
                eps: 8.0 / 255.0,
                steps: 10,
                step: 2.0 / 255.0
            }
        );
        assert_eq!(a.to_string(), "pgd-linf:8/255:10:2/255");
        assert_eq!(AttackSpec::parse(&a.to_string()).unwrap(), a);
        let f = AttackSpec::parse("fgsm:0.03").unwrap();
        assert_eq!(f, AttackSpec::Fgsm { eps: 0.03 });
        assert_eq!(f.to_string(), "fgsm:0.03");
        // Default PGD step 2.5·eps/steps.
        let Ok(AttackSpec::PgdL2 { eps, steps, step }) = AttackSpec::parse("pgd-l2:0.5:5") else {
            panic!("pgd-l2 parses");
        };
        assert_eq!((eps, steps), (0.5, 5));
        assert!((step - 0.25).abs() < 1e-7);
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (s, needle) in [
            ("fgsm", "fgsm:EPS"),
            ("fgsm:abc", "\"abc\""),
            ("fgsm:2", "beyond"),
            ("fgsm:-0.1", "positive"),
            ("fgsm:1/0", "not a number"),
            ("pgd-linf:8/255", "EPS:STEPS"),
            ("pgd-linf:8/255:0", "STEPS"),
            ("pgd-linf:8/255:x", "STEPS"),
            ("cw:1", "unknown attack"),
        ] {
            let e = AttackSpec::parse(s).unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn projections_respect_the_ball_and_the_pixel_range() {
        let clean = vec![0.0, 0.5, 1.0, 0.2];
        let mut adv = vec![-0.3, 0.9, 1.2, 0.21];
        project_linf(&mut adv, &clean, 0.1);
        assert_eq!(adv, vec![0.0, 0.6, 1.0, 0.21]);
        let clean = vec![0.5; 4];
        let mut adv = vec![1.0, 0.5, 0.5, 0.5];
        project_l2(&mut adv, &clean, 0.25, 4);
        assert!((adv[0] - 0.75).abs() < 1e-6, "{adv:?}");
    }
}
