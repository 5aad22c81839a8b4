//! The corruption table: accuracy and calibration per (corruption,
//! severity) cell, its means, and corruption errors relative to a baseline
//! (Hendrycks & Dietterich's CE and relative CE).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Results per cell, rows in the reference corruption order, columns in
/// ascending severity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CorruptionTable {
    pub corruptions: Vec<String>,
    pub severities: Vec<u8>,
    /// `accuracy[corruption][severity]`, fractions in [0, 1].
    pub accuracy: Vec<Vec<f64>>,
    /// Expected calibration error (15 bins) per cell.
    pub ece: Vec<Vec<f64>>,
    /// Images per cell.
    pub images: Vec<Vec<usize>>,
    /// Decks only: the member cards, in deck order (empty for a card).
    #[serde(default)]
    pub gate_members: Vec<String>,
    /// Decks only: `gate_picks[corruption][severity][member]`, the fraction
    /// of the cell's images for which the gate chose that member.
    #[serde(default)]
    pub gate_picks: Vec<Vec<Vec<f64>>>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

impl CorruptionTable {
    /// An empty table for these rows and columns.
    pub fn new(corruptions: &[&str], severities: &[u8]) -> CorruptionTable {
        let (r, c) = (corruptions.len(), severities.len());
        CorruptionTable {
            corruptions: corruptions.iter().map(|s| s.to_string()).collect(),
            severities: severities.to_vec(),
            accuracy: vec![vec![0.0; c]; r],
            ece: vec![vec![0.0; c]; r],
            images: vec![vec![0; c]; r],
            gate_members: Vec::new(),
            gate_picks: Vec::new(),
        }
    }

    /// Makes room for a deck's gate picks (all zero) per cell.
    pub fn with_gate_members(mut self, members: &[String]) -> CorruptionTable {
        let (r, c) = (self.corruptions.len(), self.severities.len());
        self.gate_members = members.to_vec();
        self.gate_picks = vec![vec![vec![0.0; members.len()]; c]; r];
        self
    }

    /// `{corruption: {severity: {member: fraction}}}` of the gate picks
    /// (empty for a card).
    pub fn gate_picks_map(&self) -> BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>> {
        self.corruptions
            .iter()
            .zip(&self.gate_picks)
            .map(|(c, row)| {
                let cells = self
                    .severities
                    .iter()
                    .zip(row)
                    .map(|(s, picks)| {
                        let named = self.gate_members.iter().cloned().zip(picks.iter().copied());
                        (s.to_string(), named.collect())
                    })
                    .collect();
                (c.clone(), cells)
            })
            .collect()
    }

    /// The gate picks as Markdown: per cell, each member the gate chose
    /// with the percentage of images it answered for (`name 97%`), most
    /// picked first. Empty for a card.
    pub fn gate_picks_markdown(&self) -> String {
        if self.gate_members.is_empty() || self.gate_picks.is_empty() {
            return String::new();
        }
        let mut s = String::from("| corruption |");
        for sev in &self.severities {
            s += &format!(" s{sev} |");
        }
        s += "\n|---|";
        s += &"---|".repeat(self.severities.len());
        s.push('\n');
        for (c, row) in self.corruptions.iter().zip(&self.gate_picks) {
            s += &format!("| {c} |");
            for picks in row {
                s += &format!(" {} |", describe_picks(&self.gate_members, picks));
            }
            s.push('\n');
        }
        s
    }

    /// Whether the table has no cell.
    pub fn is_empty(&self) -> bool {
        self.corruptions.is_empty() || self.severities.is_empty()
    }

    /// Mean accuracy of each corruption over its severities.
    pub fn corruption_means(&self) -> Vec<f64> {
        self.accuracy
            .iter()
            .map(|row| mean(row.iter().copied()).unwrap_or(0.0))
            .collect()
    }

    /// Mean accuracy of each severity over the corruptions.
    pub fn severity_means(&self) -> Vec<f64> {
        (0..self.severities.len())
            .map(|s| mean(self.accuracy.iter().map(|row| row[s])).unwrap_or(0.0))
            .collect()
    }

    /// Plain mean over all cells (RobustBench's robust accuracy when the
    /// table is 15×5); `None` for an empty table.
    pub fn mean_accuracy(&self) -> Option<f64> {
        mean(self.accuracy.iter().flatten().copied())
    }

    /// Mean ECE over all cells.
    pub fn mean_ece(&self) -> Option<f64> {
        mean(self.ece.iter().flatten().copied())
    }

    /// `{corruption: {severity: value}}` of a per-cell matrix.
    fn map_of(&self, m: &[Vec<f64>]) -> BTreeMap<String, BTreeMap<String, f64>> {
        self.corruptions
            .iter()
            .zip(m)
            .map(|(c, row)| {
                let cells = self
                    .severities
                    .iter()
                    .zip(row)
                    .map(|(s, &v)| (s.to_string(), v))
                    .collect();
                (c.clone(), cells)
            })
            .collect()
    }

    /// `{corruption: {severity: accuracy}}`, the `--json` form.
    pub fn accuracy_map(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        self.map_of(&self.accuracy)
    }

    /// `{corruption: {severity: ece}}`.
    pub fn ece_map(&self) -> BTreeMap<String, BTreeMap<String, f64>> {
        self.map_of(&self.ece)
    }

    /// Corruption error per corruption against `baseline` (evaluated on
    /// the same cells): `Σ_s err / Σ_s err_baseline`. `None` where the
    /// baseline makes no error (the ratio is undefined).
    pub fn corruption_errors(&self, baseline: &CorruptionTable) -> Vec<Option<f64>> {
        self.accuracy
            .iter()
            .zip(&baseline.accuracy)
            .map(|(a, b)| {
                let e: f64 = a.iter().map(|v| 1.0 - v).sum();
                let eb: f64 = b.iter().map(|v| 1.0 - v).sum();
                (eb > 0.0).then(|| e / eb)
            })
            .collect()
    }

    /// Relative corruption error per corruption: the error *added* by the
    /// corruption relative to the baseline's,
    /// `Σ_s (err − err_clean) / Σ_s (err_baseline − err_baseline_clean)`.
    /// `None` where the baseline loses nothing to the corruption.
    pub fn relative_corruption_errors(
        &self,
        clean_accuracy: f64,
        baseline: &CorruptionTable,
        baseline_clean_accuracy: f64,
    ) -> Vec<Option<f64>> {
        self.accuracy
            .iter()
            .zip(&baseline.accuracy)
            .map(|(a, b)| {
                let e: f64 = a.iter().map(|v| clean_accuracy - v).sum();
                let eb: f64 = b.iter().map(|v| baseline_clean_accuracy - v).sum();
                (eb > 0.0).then(|| e / eb)
            })
            .collect()
    }

    /// The table as Markdown: accuracy (%) per cell, the per-corruption
    /// mean in the last column and the per-severity means in the last row.
    pub fn markdown(&self) -> String {
        let mut s = String::from("| corruption |");
        for sev in &self.severities {
            s += &format!(" s{sev} |");
        }
        s += " mean |\n|---|";
        s += &"---:|".repeat(self.severities.len() + 1);
        s.push('\n');
        for ((c, row), m) in self
            .corruptions
            .iter()
            .zip(&self.accuracy)
            .zip(self.corruption_means())
        {
            s += &format!("| {c} |");
            for v in row {
                s += &format!(" {:.2} |", 100.0 * v);
            }
            s += &format!(" {:.2} |\n", 100.0 * m);
        }
        s += "| **mean** |";
        for m in self.severity_means() {
            s += &format!(" {:.2} |", 100.0 * m);
        }
        s += &format!(
            " **{:.2}** |\n",
            100.0 * self.mean_accuracy().unwrap_or(0.0)
        );
        s
    }
}

/// `a 97% · b 3%`: the members with a nonzero share, largest first (ties
/// in member order); `–` when none was picked.
pub fn describe_picks(members: &[String], picks: &[f64]) -> String {
    let mut order: Vec<usize> = (0..picks.len().min(members.len()))
        .filter(|&i| picks[i] > 0.0)
        .collect();
    order.sort_by(|&a, &b| picks[b].total_cmp(&picks[a]).then(a.cmp(&b)));
    if order.is_empty() {
        return "–".into();
    }
    order
        .iter()
        .map(|&i| format!("{} {:.0}%", members[i], 100.0 * picks[i]))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// Mean of the defined values, `None` if there are none.
pub fn mean_defined(v: &[Option<f64>]) -> Option<f64> {
    mean(v.iter().flatten().copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CorruptionTable {
        let mut t = CorruptionTable::new(&["a", "b"], &[1, 2, 3]);
        t.accuracy = vec![vec![0.9, 0.8, 0.7], vec![0.6, 0.5, 0.1]];
        t
    }

    #[test]
    fn means_and_maps() {
        let t = table();
        let cm = t.corruption_means();
        assert!((cm[0] - 0.8).abs() < 1e-12 && (cm[1] - 0.4).abs() < 1e-12);
        let sm = t.severity_means();
        assert!((sm[0] - 0.75).abs() < 1e-12 && (sm[2] - 0.4).abs() < 1e-12);
        assert!((t.mean_accuracy().unwrap() - 3.6 / 6.0).abs() < 1e-12);
        assert_eq!(t.accuracy_map()["b"]["3"], 0.1);
        let md = t.markdown();
        assert_eq!(md.lines().count(), 5, "{md}");
        assert!(md.contains("| a | 90.00 | 80.00 | 70.00 | 80.00 |"), "{md}");
        assert!(CorruptionTable::new(&[], &[1]).mean_accuracy().is_none());
    }

    #[test]
    fn corruption_errors_against_a_baseline() {
        let t = table();
        let mut base = CorruptionTable::new(&["a", "b"], &[1, 2, 3]);
        base.accuracy = vec![vec![0.8, 0.6, 0.4], vec![1.0, 1.0, 1.0]];
        let ce = t.corruption_errors(&base);
        // a: (0.1+0.2+0.3)/(0.2+0.4+0.6) = 0.5; b: baseline error 0 → undefined.
        assert!((ce[0].unwrap() - 0.5).abs() < 1e-12);
        assert!(ce[1].is_none());
        assert!(t.gate_picks_markdown().is_empty());
        assert!((mean_defined(&ce).unwrap() - 0.5).abs() < 1e-12);
        let rce = t.relative_corruption_errors(0.95, &base, 0.9);
        // a: (0.05+0.15+0.25)/(0.1+0.3+0.5) = 0.5
        assert!((rce[0].unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn gate_picks_per_cell() {
        let mut t = table().with_gate_members(&["g".into(), "a".into()]);
        t.gate_picks[0][0] = vec![0.25, 0.75];
        t.gate_picks[1][2] = vec![1.0, 0.0];
        assert_eq!(t.gate_picks_map()["a"]["1"]["a"], 0.75);
        let md = t.gate_picks_markdown();
        assert!(md.contains("| a | a 75% · g 25% | – | – |"), "{md}");
        assert!(md.contains("| b | – | – | g 100% |"), "{md}");
        assert_eq!(describe_picks(&["x".into()], &[0.0]), "–");
    }
}
