//! Noise corruptions: Gaussian, shot (Poisson) and impulse (salt and pepper).

use super::{Image, to_u8};
use crate::rng::Rng;

/// `x + N(0, σ²)` per element, σ = .04 .06 .08 .09 .10.
pub fn gaussian_noise(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let sigma = [0.04, 0.06, 0.08, 0.09, 0.10][s];
    let out: Vec<f64> = img
        .data
        .iter()
        .map(|&v| v + sigma * rng.normal() as f64)
        .collect();
    to_u8(&out)
}

/// `Poisson(x·c) / c` per element, c = 500 250 100 75 50.
pub fn shot_noise(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let c = [500.0, 250.0, 100.0, 75.0, 50.0][s];
    let out: Vec<f64> = img
        .data
        .iter()
        .map(|&v| poisson(v * c, rng) as f64 / c)
        .collect();
    to_u8(&out)
}

/// skimage's salt and pepper: each element flips with probability `amount`
/// (.01 .02 .03 .05 .07) to 1 or 0 with equal odds.
pub fn impulse_noise(img: &Image, s: usize, rng: &mut Rng) -> Vec<u8> {
    let amount = [0.01, 0.02, 0.03, 0.05, 0.07][s];
    let out: Vec<f64> = img
        .data
        .iter()
        .map(|&v| {
            let flip = rng.uniform_f64() < amount;
            let salt = rng.uniform_f64() < 0.5;
            match (flip, salt) {
                (true, true) => 1.0,
                (true, false) => 0.0,
                _ => v,
            }
        })
        .collect();
    to_u8(&out)
}

/// A Poisson draw with mean `lam` ≥ 0: multiplication for small means,
/// Hörmann's transformed rejection (PTRS, as numpy uses) above 10.
pub fn poisson(lam: f64, rng: &mut Rng) -> u64 {
    if lam <= 0.0 {
        return 0;
    }
    if lam < 10.0 {
        let limit = (-lam).exp();
        let mut k = 0;
        let mut p = rng.uniform_f64();
        while p > limit {
            k += 1;
            p *= rng.uniform_f64();
        }
        return k;
    }
    let slam = lam.sqrt();
    let loglam = lam.ln();
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let invalpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.uniform_f64() - 0.5;
        let v = rng.uniform_f64();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lam + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.max(1e-300).ln() + invalpha.ln() - (a / (us * us) + b).ln()
            <= -lam + k * loglam - ln_gamma(k + 1.0)
        {
            return k as u64;
        }
    }
}

/// ln Γ(x) for x ≥ 1 (Stirling series after shifting x above 10).
fn ln_gamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= x.ln();
        x += 1.0;
    }
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    shift + (x - 0.5) * x.ln() - x
        + 0.5 * (2.0 * std::f64::consts::PI).ln()
        + inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 / 1260.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_gamma_matches_factorials() {
        for (n, f) in [(1.0, 1.0f64), (5.0, 24.0), (11.0, 3_628_800.0)] {
            assert!((ln_gamma(n) - f.ln()).abs() < 1e-9, "{n}");
        }
    }

    #[test]
    fn poisson_mean_and_variance() {
        for lam in [0.7, 4.0, 37.5, 480.0] {
            let mut rng = Rng::new(9);
            let n = 20_000;
            let xs: Vec<f64> = (0..n).map(|_| poisson(lam, &mut rng) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let tol = 4.0 * (lam / n as f64).sqrt();
            assert!((mean - lam).abs() < tol, "lam {lam}: mean {mean}");
            assert!((var / lam - 1.0).abs() < 0.1, "lam {lam}: var {var}");
        }
    }
}
