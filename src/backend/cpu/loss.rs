//! Mean softmax cross-entropy on feature-major logits `[K, B]`.

/// Returns the mean loss and dL/dlogits (`[K, B]`, already divided by B).
/// Labels must have been checked to be `< k`.
pub fn softmax_xent(logits: &[f32], k: usize, b: usize, labels: &[u32]) -> (f32, Vec<f32>) {
    let mut grad = vec![0.0f32; k * b];
    let mut total = 0.0f64;
    let inv_b = 1.0 / b.max(1) as f64;
    for (j, &label) in labels.iter().enumerate().take(b) {
        let at = |c: usize| logits[c * b + j] as f64;
        let m = (0..k).map(at).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = (0..k).map(|c| (at(c) - m).exp()).sum();
        let lse = m + z.ln();
        total += lse - at(label as usize);
        for c in 0..k {
            let p = (at(c) - lse).exp();
            let t = if c == label as usize { 1.0 } else { 0.0 };
            grad[c * b + j] = ((p - t) * inv_b) as f32;
        }
    }
    ((total * inv_b) as f32, grad)
}
