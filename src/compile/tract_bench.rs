//! Latency of tract's optimized plan of an ONNX model at batch 1: the
//! in-process yardstick `cardc bench infer` times next to compiled
//! artifacts and ONNX Runtime (scripts/bench/latency.py).

use anyhow::Context;
use std::path::Path;
use std::time::Instant;
use tract_onnx::prelude::*;

/// Loads `onnx`, fixes its input to `[1, c, h, w]` f32, optimizes it and
/// runs it `warmup + iters` times on a fixed pseudo-random image; returns
/// the `iters` single-image latencies in milliseconds.
pub fn latencies_ms(
    onnx: &Path,
    input: [usize; 3],
    warmup: usize,
    iters: usize,
) -> anyhow::Result<Vec<f64>> {
    let [c, h, w] = input;
    let plan = tract_onnx::onnx()
        .model_for_path(onnx)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, c, h, w]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        // `{:#}`: tract's whole cause chain on one line.
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(|| format!("{}: tract cannot load and optimize it", onnx.display()))?;
    let mut rng = crate::rng::Rng::new(1);
    let data: Vec<f32> = (0..c * h * w).map(|_| rng.normal()).collect();
    let image = Tensor::from_shape(&[1, c, h, w], &data).map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let mut times = Vec::with_capacity(iters);
    for i in 0..warmup + iters {
        let x = image.clone().into_tvalue();
        let t = Instant::now();
        let out = plan
            .run(tvec!(x))
            .map_err(|e| anyhow::anyhow!("tract run of {}: {e:#}", onnx.display()))?;
        let dt = t.elapsed().as_secs_f64() * 1e3;
        std::hint::black_box(out);
        if i >= warmup {
            times.push(dt);
        }
    }
    Ok(times)
}
