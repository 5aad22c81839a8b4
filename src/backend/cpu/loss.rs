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
