//! Exact top-k mask selection over prunable weights, shared by every
//! pruning method.
//!
//! Sparsity means what `cardc info` reports: the fraction of *all* conv and
//! linear weights that are zero. Layers kept dense (`--keep-first-dense`,
//! `--keep-last-dense`) still count in that fraction, so the pruned layers
//! take up their share. Selection is exact: the requested number of weights
//! is removed, ties broken by position, so results are deterministic.

use crate::model::{Model, WeightState};
use anyhow::bail;

/// Which weights are ranked together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// All pruned layers ranked together.
    Global,
    /// The same fraction removed from every pruned layer.
    Layerwise,
}

impl Scope {
    /// Parses `global` or `layerwise`.
    pub fn parse(s: &str) -> anyhow::Result<Scope> {
        match s {
            "global" => Ok(Scope::Global),
            "layerwise" | "layer" => Ok(Scope::Layerwise),
            _ => bail!("--scope '{s}': expected global or layerwise"),
        }
    }

    /// `global` or `layerwise`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Layerwise => "layerwise",
        }
    }
}

/// A prunable weight tensor: node index and index among the node's tensors.
pub type Target = (usize, usize);

/// The conv/linear weights a method prunes, in graph order, leaving out the
/// first and/or last when they are kept dense.
pub fn targets(model: &Model, keep_first: bool, keep_last: bool) -> Vec<Target> {
    let mut all = model.prunable();
    if keep_last && !all.is_empty() {
        all.pop();
    }
    if keep_first && !all.is_empty() {
        all.remove(0);
    }
    all
}

/// How many weights of `targets` must be zero so that `sparsity` of all
/// prunable weights are zero (rounded to the nearest weight).
pub fn zeros_needed(model: &Model, targets: &[Target], sparsity: f64) -> anyhow::Result<usize> {
    if !(0.0..1.0).contains(&sparsity) {
        bail!("--sparsity must be in [0, 1), got {sparsity}");
    }
    let all: usize = model
        .prunable()
        .iter()
        .map(|&(i, k)| model.params[i][k].data.len())
        .sum();
    let pruned: usize = targets
        .iter()
        .map(|&(i, k)| model.params[i][k].data.len())
        .sum();
    let zeros = (sparsity * all as f64).round() as usize;
    if zeros > pruned {
        bail!(
            "--sparsity {sparsity}: {zeros} of {all} weights must be zero but only {pruned} are in pruned layers (drop --keep-first-dense/--keep-last-dense or lower the sparsity)"
        );
    }
    Ok(zeros)
}

/// Per-layer removal counts for `zeros` weights spread over layers of
/// `sizes` in proportion (largest remainder, so the total is exact and each
/// layer is within one weight of its share).
pub fn layerwise_counts(sizes: &[usize], zeros: usize) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    if total == 0 {
        return vec![0; sizes.len()];
    }
    let ideal: Vec<f64> = sizes
        .iter()
        .map(|&n| zeros as f64 * n as f64 / total as f64)
        .collect();
    let mut counts: Vec<usize> = ideal
        .iter()
        .zip(sizes)
        .map(|(&x, &n)| (x.floor() as usize).min(n))
        .collect();
    let mut left = zeros.saturating_sub(counts.iter().sum());
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        let fa = ideal[a] - ideal[a].floor();
        let fb = ideal[b] - ideal[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    while left > 0 {
        let mut progressed = false;
        for &l in &order {
            if left == 0 {
                break;
            }
            if counts[l] < sizes[l] {
                counts[l] += 1;
                left -= 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    counts
}

/// Indices of the `k` smallest scores (ties: lower index first).
fn smallest(scores: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    if k == 0 {
        return Vec::new();
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| {
            scores[a as usize]
                .total_cmp(&scores[b as usize])
                .then(a.cmp(&b))
        });
        idx.truncate(k);
    }
    idx.into_iter().map(|i| i as usize).collect()
}

/// Keep-masks (true = kept) removing exactly `zeros` entries with the
/// smallest scores, ranked over all layers (`Global`) or per layer in
/// proportion to size (`Layerwise`). `scores[l]` belongs to target `l`.
pub fn top_k_masks(scores: &[Vec<f32>], zeros: usize, scope: Scope) -> Vec<Vec<bool>> {
    let mut masks: Vec<Vec<bool>> = scores.iter().map(|s| vec![true; s.len()]).collect();
    match scope {
        Scope::Layerwise => {
            let sizes: Vec<usize> = scores.iter().map(Vec::len).collect();
            for (l, k) in layerwise_counts(&sizes, zeros).into_iter().enumerate() {
                for j in smallest(&scores[l], k) {
                    masks[l][j] = false;
                }
            }
        }
        Scope::Global => {
            let offsets: Vec<usize> = scores
                .iter()
                .scan(0, |acc, s| {
                    let o = *acc;
                    *acc += s.len();
                    Some(o)
                })
                .collect();
            let flat: Vec<f32> = scores.iter().flatten().copied().collect();
            for g in smallest(&flat, zeros.min(flat.len())) {
                let l = offsets.partition_point(|&o| o <= g) - 1;
                masks[l][g - offsets[l]] = false;
            }
        }
    }
    masks
}

/// |w| of each target, with weights already masked out ranked first (so a
/// pruned weight is never revived by magnitude pruning).
pub fn magnitude_scores(model: &Model, targets: &[Target]) -> Vec<Vec<f32>> {
    targets
        .iter()
        .map(|&(i, k)| {
            let t = &model.params[i][k];
            match t.mask() {
                Some(m) => t
                    .data
                    .iter()
                    .zip(m)
                    .map(|(w, &keep)| if keep { w.abs() } else { f32::NEG_INFINITY })
                    .collect(),
                None => t.data.iter().map(|w| w.abs()).collect(),
            }
        })
        .collect()
}

/// Installs keep-masks on the targets (as `Masked`, values zeroed where
/// removed).
pub fn set_masks(model: &mut Model, targets: &[Target], masks: Vec<Vec<bool>>) {
    for (&(i, k), mask) in targets.iter().zip(masks) {
        let t = &mut model.params[i][k];
        t.state = WeightState::Masked { mask };
        t.apply_mask();
    }
}

/// Magnitude pruning: removes the smallest |w| so that `zeros` weights of
/// the targets are zero (previously pruned weights stay pruned).
pub fn magnitude_prune(model: &mut Model, targets: &[Target], zeros: usize, scope: Scope) {
    let scores = magnitude_scores(model, targets);
    let masks = top_k_masks(&scores, zeros, scope);
    set_masks(model, targets, masks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layerwise_counts_are_exact_and_proportional() {
        let sizes = [3, 10, 7, 1000];
        for zeros in [0, 1, 5, 333, 1019, 1020] {
            let c = layerwise_counts(&sizes, zeros);
            assert_eq!(c.iter().sum::<usize>(), zeros, "{zeros}: {c:?}");
            for (&n, &z) in sizes.iter().zip(&c) {
                let ideal = zeros as f64 * n as f64 / 1020.0;
                assert!((z as f64 - ideal).abs() < 1.0 + 1e-9, "{z} vs {ideal}");
            }
        }
    }

    #[test]
    fn global_top_k_removes_exactly_the_smallest() {
        let scores = vec![vec![0.5, 0.1, 0.9], vec![0.2, 0.2, 0.8, 0.05]];
        let m = top_k_masks(&scores, 3, Scope::Global);
        assert_eq!(m[0], vec![true, false, true]);
        // Tie at 0.2: only one more is needed after 0.05 and 0.1; the lower index goes.
        assert_eq!(m[1], vec![false, true, true, false]);
        let m = top_k_masks(&scores, 7, Scope::Global);
        assert!(m.iter().flatten().all(|&k| !k));
    }

    #[test]
    fn layerwise_top_k_prunes_each_layer() {
        let scores = vec![vec![4.0, 3.0, 2.0, 1.0], vec![1.0, 2.0, 3.0, 4.0]];
        let m = top_k_masks(&scores, 4, Scope::Layerwise);
        assert_eq!(m[0], vec![true, true, false, false]);
        assert_eq!(m[1], vec![false, false, true, true]);
    }
}
