//! Throughput benchmarks of the CPU backend (used by `cardc bench`).

use super::gemm::{Mat, MatMut, sgemm};
use crate::ir::models::{BuildOptions, build};
use crate::model::Model;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::optim::Sgd;
use std::time::Instant;

/// A freshly initialized `arch` and one batch of random images and labels:
/// what the training benchmarks of every backend run on.
pub fn bench_setup(
    arch: &str,
    width_mult: f32,
    batch: usize,
) -> anyhow::Result<(Model, Tensor, Vec<u32>)> {
    let opts = BuildOptions {
        width_mult,
        ..Default::default()
    };
    let graph = build(arch, &opts)?;
    let classes = graph.classes();
    let [c, h, w] = graph.input_shape();
    let model = Model::init(graph, 0).map_err(|e| anyhow::anyhow!(e))?;
    let mut rng = Rng::derive(0, "bench");
    let images = Tensor::from_vec(
        &[batch, c, h, w],
        (0..batch * c * h * w).map(|_| rng.normal()).collect(),
    );
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(classes) as u32).collect();
    Ok((model, images, labels))
}

/// Trains `arch` on random data for `steps` SGD steps of `batch` images,
/// after one untimed warm-up step, and returns images per second.
pub fn bench_train_step(
    arch: &str,
    width_mult: f32,
    batch: usize,
    steps: usize,
) -> anyhow::Result<f64> {
    anyhow::ensure!(batch > 0 && steps > 0, "batch and steps must be positive");
    let (mut model, images, labels) = bench_setup(arch, width_mult, batch)?;
    let mut sgd = Sgd::new(0.9, false, 5e-4);
    let mut step = |model: &mut Model| -> anyhow::Result<()> {
        let out = super::forward_backward(model, &images, &labels, false)?;
        sgd.step(model, &out.grads, 0.01);
        Ok(())
    };
    step(&mut model)?;
    let t = Instant::now();
    for _ in 0..steps {
        step(&mut model)?;
    }
    Ok((batch * steps) as f64 / t.elapsed().as_secs_f64())
}

/// The machine's single-precision GEMM rate in GFLOP/s on `n x n x n`
/// products (best of `reps`), the yardstick for the training throughput.
pub fn gemm_gflops(n: usize, reps: usize) -> f64 {
    let n = n.max(1);
    let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; n * n];
    let run = |c: &mut [f32]| {
        sgemm(
            MatMut::rm(c, n, n),
            false,
            Mat::rm(&a, n, n),
            Mat::rm(&b, n, n),
            1.0,
        );
    };
    run(&mut c);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        run(&mut c);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}
