//! Mean softmax cross-entropy on row-major logits `[B, K]`.

/// Returns the mean loss and dL/dlogits (`[B, K]`, already divided by B).
/// Labels must have been checked to be `< k`.
pub fn softmax_xent(logits: &[f32], k: usize, labels: &[u32]) -> (f32, Vec<f32>) {
    let b = labels.len();
    let mut grad = vec![0.0f32; k * b];
    let mut total = 0.0f64;
    let inv_b = 1.0 / b.max(1) as f64;
    for ((row, g), &label) in logits
        .chunks(k.max(1))
        .zip(grad.chunks_mut(k.max(1)))
        .zip(labels)
    {
        let m = row
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let lse = m + z.ln();
        total += lse - row[label as usize] as f64;
        for (c, (gv, &v)) in g.iter_mut().zip(row).enumerate() {
            let t = if c == label as usize { 1.0 } else { 0.0 };
            *gv = (((v as f64 - lse).exp() - t) * inv_b) as f32;
        }
    }
    ((total * inv_b) as f32, grad)
}

/// AugMix's training objective (Hendrycks et al. 2020) on logits of three
/// stacked views of the same B images, rows `[clean; aug1; aug2]` (3B × K):
/// cross-entropy of the clean view plus `lambda` times the Jensen–Shannon
/// divergence between the three views' softmax distributions,
/// JS = ⅓ Σ_j KL(p_j ‖ M), M = ⅓ Σ_j p_j, averaged over the B images (as the
/// reference's `F.kl_div(log M, p_j, reduction='batchmean')`, M clamped to
/// [1e-7, 1] before the log).
///
/// Returns the loss and dL/dlogits (3B × K). Since Σ_j p_j / (3M) = 1, the
/// divergence's gradient with respect to p_j is (λ / 3B)·(log p_j − log M),
/// pushed through each view's softmax Jacobian.
pub fn augmix_jsd(logits: &[f32], k: usize, labels: &[u32], lambda: f32) -> (f32, Vec<f32>) {
    let b = labels.len();
    let k = k.max(1);
    let (clean, _) = logits.split_at(b * k);
    let (ce, mut grad) = softmax_xent(clean, k, labels);
    grad.resize(3 * b * k, 0.0);
    let softmax = |row: &[f32]| -> Vec<f64> {
        let m = row
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let z: f64 = e.iter().sum();
        e.into_iter().map(|v| v / z).collect()
    };
    let scale = lambda as f64 / (3.0 * b.max(1) as f64);
    let mut js = 0.0f64;
    for i in 0..b {
        let p: Vec<Vec<f64>> = (0..3)
            .map(|j| softmax(&logits[(j * b + i) * k..(j * b + i + 1) * k]))
            .collect();
        let log_m: Vec<f64> = (0..k)
            .map(|c| ((p[0][c] + p[1][c] + p[2][c]) / 3.0).clamp(1e-7, 1.0).ln())
            .collect();
        for (j, pj) in p.iter().enumerate() {
            // dL/dp_jc, then the softmax Jacobian: p_jc (g_jc − Σ_d p_jd g_jd).
            let log_p: Vec<f64> = pj.iter().map(|&v| v.max(1e-30).ln()).collect();
            let g: Vec<f64> = (0..k).map(|c| scale * (log_p[c] - log_m[c])).collect();
            js += (0..k).map(|c| pj[c] * (log_p[c] - log_m[c])).sum::<f64>();
            let dot: f64 = (0..k).map(|c| pj[c] * g[c]).sum();
            let row = &mut grad[(j * b + i) * k..(j * b + i + 1) * k];
            for c in 0..k {
                row[c] += (pj[c] * (g[c] - dot)) as f32;
            }
        }
    }
    let loss = ce as f64 + lambda as f64 * js / (3.0 * b.max(1) as f64);
    (loss as f32, grad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn jsd_gradient_matches_finite_differences() {
        let (b, k) = (3, 5);
        let mut rng = Rng::new(7);
        let logits: Vec<f32> = (0..3 * b * k).map(|_| 2.0 * rng.normal()).collect();
        let labels = [0u32, 3, 4];
        let (_, grad) = augmix_jsd(&logits, k, &labels, 12.0);
        for idx in 0..logits.len() {
            let h = 1e-2f32;
            let mut up = logits.clone();
            up[idx] += h;
            let mut down = logits.clone();
            down[idx] -= h;
            let fd = (augmix_jsd(&up, k, &labels, 12.0).0 - augmix_jsd(&down, k, &labels, 12.0).0)
                / (2.0 * h);
            assert!(
                (fd - grad[idx]).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "logit {idx}: analytic {} vs numeric {fd}",
                grad[idx]
            );
        }
    }

    #[test]
    fn identical_views_add_nothing_to_cross_entropy() {
        let k = 4;
        let view = [0.5f32, -1.0, 2.0, 0.0, 1.0, 1.0, -0.5, 0.25];
        let logits: Vec<f32> = view.iter().chain(&view).chain(&view).copied().collect();
        let labels = [2u32, 0];
        let (jsd, g) = augmix_jsd(&logits, k, &labels, 12.0);
        let (ce, gc) = softmax_xent(&view, k, &labels);
        assert!((jsd - ce).abs() < 1e-6, "{jsd} vs {ce}");
        assert!(g[..8].iter().zip(&gc).all(|(a, b)| (a - b).abs() < 1e-6));
        assert!(g[8..].iter().all(|v| v.abs() < 1e-6));
    }
}
