//! The gate: which cards of a deck answer for an input.
//!
//! `spectral`: the input's deviation from the clean reference spectrum is
//! compared with each card's signature (L1 or cosine distance) and the `k`
//! nearest cards are averaged; ties go to the earlier card. `average`: every
//! card answers (the ungated ensemble RobustBench ships).

use serde::{Deserialize, Serialize};
use std::fmt;

/// How members are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateKind {
    /// The `k` cards whose signatures are nearest the input's deviation.
    Spectral,
    /// All cards (no gate).
    Average,
}

/// Distance between an input's deviation and a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Mean absolute difference per bin.
    L1,
    /// `1 − cos(angle)`; a zero vector is orthogonal to everything (1).
    Cosine,
}

/// What one gate decision covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// One decision per image.
    Input,
    /// One decision per evaluation batch, from the batch's mean deviation
    /// (for inputs that arrive in batches from one source).
    Batch,
}

/// The gate settings stored in a deck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSettings {
    pub kind: GateKind,
    /// Cards averaged per decision (all of them for `average`).
    pub k: usize,
    pub metric: Metric,
    pub scope: Scope,
}

impl GateKind {
    /// Parses `spectral` or `average`.
    pub fn parse(s: &str) -> anyhow::Result<GateKind> {
        match s {
            "spectral" => Ok(GateKind::Spectral),
            "average" => Ok(GateKind::Average),
            _ => anyhow::bail!("--gate {s:?}: expected spectral or average"),
        }
    }
}

impl Metric {
    /// Parses `l1` or `cosine`.
    pub fn parse(s: &str) -> anyhow::Result<Metric> {
        match s {
            "l1" => Ok(Metric::L1),
            "cosine" => Ok(Metric::Cosine),
            _ => anyhow::bail!("--metric {s:?}: expected l1 or cosine"),
        }
    }

    /// The distance between `a` and `b` (same length).
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L1 => {
                let s: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
                s / a.len().max(1) as f32
            }
            Metric::Cosine => {
                let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
                for (&x, &y) in a.iter().zip(b) {
                    ab += x as f64 * y as f64;
                    aa += x as f64 * x as f64;
                    bb += y as f64 * y as f64;
                }
                if aa == 0.0 || bb == 0.0 {
                    1.0
                } else {
                    (1.0 - ab / (aa.sqrt() * bb.sqrt())) as f32
                }
            }
        }
    }
}

impl Scope {
    /// Parses `input` or `batch`.
    pub fn parse(s: &str) -> anyhow::Result<Scope> {
        match s {
            "input" => Ok(Scope::Input),
            "batch" => Ok(Scope::Batch),
            _ => anyhow::bail!("--scope {s:?}: expected input or batch"),
        }
    }
}

impl fmt::Display for GateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GateKind::Spectral => "spectral",
            GateKind::Average => "average",
        })
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::L1 => "l1",
            Metric::Cosine => "cosine",
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Input => "input",
            Scope::Batch => "batch",
        })
    }
}

impl fmt::Display for GateSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            GateKind::Average => write!(f, "average of all {} cards", self.k),
            GateKind::Spectral => write!(
                f,
                "spectral, top-{} by {} distance, one decision per {}",
                self.k, self.metric, self.scope
            ),
        }
    }
}

impl GateSettings {
    /// Checks the settings against a deck of `members` cards.
    pub fn validate(&self, members: usize) -> Result<(), String> {
        if members == 0 {
            return Err("a deck needs at least one card".into());
        }
        if self.k == 0 || self.k > members {
            return Err(format!(
                "k = {} must be between 1 and the number of cards ({members})",
                self.k
            ));
        }
        if self.kind == GateKind::Average && self.k != members {
            return Err(format!(
                "the average gate uses all {members} cards, not k = {}",
                self.k
            ));
        }
        Ok(())
    }

    /// The members chosen for a deviation `dev` (input minus clean
    /// reference log spectrum), in ascending member order.
    pub fn select(&self, dev: &[f32], signatures: &[Vec<f32>]) -> Vec<usize> {
        match self.kind {
            GateKind::Average => (0..signatures.len()).collect(),
            GateKind::Spectral => {
                let d: Vec<f32> = signatures
                    .iter()
                    .map(|s| self.metric.distance(dev, s))
                    .collect();
                nearest(&d, self.k)
            }
        }
    }
}

/// Indices of the `k` smallest distances (ties to the lower index; NaN
/// counts as farthest), returned in ascending index order.
pub fn nearest(distances: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..distances.len()).collect();
    let key = |i: usize| {
        let d = distances[i];
        if d.is_nan() { f32::INFINITY } else { d }
    };
    idx.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_unstable();
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_takes_the_k_smallest_with_stable_ties() {
        assert_eq!(nearest(&[0.5, 0.1, 0.3, 0.1], 2), vec![1, 3]);
        assert_eq!(nearest(&[0.5, 0.1, 0.3, 0.1], 3), vec![1, 2, 3]);
        assert_eq!(nearest(&[0.2, 0.2, 0.2], 1), vec![0]);
        assert_eq!(nearest(&[f32::NAN, 1.0], 1), vec![1]);
    }

    #[test]
    fn distances() {
        let a = [1.0, 0.0, -1.0, 2.0];
        let b = [0.0, 0.0, 1.0, 2.0];
        assert!((Metric::L1.distance(&a, &b) - 0.75).abs() < 1e-6);
        assert!(Metric::Cosine.distance(&a, &a).abs() < 1e-6);
        let neg: Vec<f32> = a.iter().map(|v| -v).collect();
        assert!((Metric::Cosine.distance(&a, &neg) - 2.0).abs() < 1e-6);
        assert_eq!(Metric::Cosine.distance(&a, &[0.0; 4]), 1.0);
    }

    #[test]
    fn settings_validate_and_select() {
        let g = GateSettings {
            kind: GateKind::Spectral,
            k: 1,
            metric: Metric::L1,
            scope: Scope::Input,
        };
        assert!(g.validate(2).is_ok());
        assert!(GateSettings { k: 3, ..g }.validate(2).is_err());
        assert!(GateSettings { k: 0, ..g }.validate(2).is_err());
        let avg = GateSettings {
            kind: GateKind::Average,
            k: 2,
            ..g
        };
        assert!(avg.validate(2).is_ok());
        assert!(avg.validate(3).is_err());
        let sigs = vec![vec![1.0, 1.0], vec![-1.0, -1.0]];
        assert_eq!(g.select(&[0.8, 0.9], &sigs), vec![0]);
        assert_eq!(g.select(&[-0.8, -0.2], &sigs), vec![1]);
        assert_eq!(avg.select(&[-0.8, -0.2], &sigs), vec![0, 1]);
        assert!(GateKind::parse("spectral").is_ok() && GateKind::parse("x").is_err());
        assert!(Metric::parse("cosine").is_ok() && Metric::parse("l2").is_err());
        assert!(Scope::parse("batch").is_ok() && Scope::parse("all").is_err());
    }
}
