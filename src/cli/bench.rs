//! `cardc bench`: throughput figures for BENCHMARKS.md, with the machine's
//! GEMM rate measured in the same run as the yardstick (`train`), and
//! tract's single-image latency on an ONNX model (`infer`), the in-process
//! yardstick of scripts/bench/latency.py for compiled artifacts.

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// train | infer
    pub what: String,
    #[arg(long, default_value = "resnet20")]
    pub arch: String,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// auto | cpu | wgpu
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Timed training steps per repeat.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Repeats (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[arg(long, default_value_t = 1.0)]
    pub width_mult: f32,
    /// Square GEMM size for the peak measurement (0 skips it).
    #[arg(long, default_value_t = 1024)]
    pub gemm: usize,
    /// infer: the ONNX model tract runs (batch 1, one thread).
    #[arg(long)]
    pub onnx: Option<std::path::PathBuf>,
    /// infer: input shape CxHxW.
    #[arg(long, default_value = "3x32x32")]
    pub input: String,
    /// infer: timed runs (after 10% warm-up runs).
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
}

/// `cardc bench infer`: tract's latency on `--onnx`.
fn infer(a: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let onnx = a
        .onnx
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("cardc bench infer needs --onnx MODEL.onnx"))?;
    let dims: Vec<usize> = a
        .input
        .split('x')
        .map(|d| d.parse::<usize>())
        .collect::<Result<_, _>>()
        .ok()
        .filter(|d: &Vec<usize>| d.len() == 3 && d.iter().all(|&v| v > 0))
        .ok_or_else(|| anyhow::anyhow!("--input {}: expected CxHxW, e.g. 3x32x32", a.input))?;
    anyhow::ensure!(a.iters >= 1, "--iters must be at least 1");
    let times = crate::compile::tract_bench::latencies_ms(
        onnx,
        [dims[0], dims[1], dims[2]],
        a.iters.div_ceil(10),
        a.iters,
    )?;
    let s = stats(times);
    eprintln!(
        "tract {}: batch 1 latency median {:.3} ms (min {:.3}, max {:.3}, {} runs)",
        onnx.display(),
        s["median"].as_f64().unwrap_or(0.0),
        s["min"].as_f64().unwrap_or(0.0),
        s["max"].as_f64().unwrap_or(0.0),
        a.iters
    );
    if json {
        super::print_json(&serde_json::json!({
            "bench": "infer",
            "runtime": "tract",
            "onnx": onnx.display().to_string(),
            "batch": 1,
            "latency_ms": s,
        }))?;
    }
    Ok(())
}

fn stats(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    let median = v[v.len() / 2];
    serde_json::json!({"median": median, "min": v[0], "max": v[v.len() - 1], "runs": v})
}

pub fn run(a: BenchArgs, json: bool) -> anyhow::Result<()> {
    match a.what.as_str() {
        "train" => {}
        "infer" => return infer(&a, json),
        w => anyhow::bail!("cardc bench '{w}': expected train or infer"),
    }
    anyhow::ensure!(
        a.steps >= 1 && a.repeats >= 1,
        "--steps and --repeats must be at least 1"
    );
    let mut backend = crate::backend::select(&a.backend)?;
    let opts = crate::ir::models::BuildOptions {
        width_mult: a.width_mult,
        ..Default::default()
    };
    let macs = crate::ir::models::build(&a.arch, &opts)?
        .macs()
        .map_err(|e| anyhow::anyhow!(e))?;
    eprintln!(
        "bench train: {} (x{}) batch {} on {}, {} steps x {} repeats",
        a.arch,
        a.width_mult,
        a.batch,
        backend.adapter(),
        a.steps,
        a.repeats
    );
    let mut ips = Vec::new();
    for r in 0..a.repeats {
        let v = match backend.as_gpu() {
            Some(g) => {
                crate::backend::gpu::bench_train_step(g, &a.arch, a.width_mult, a.batch, a.steps)?
            }
            None => crate::backend::cpu::bench_train_step(&a.arch, a.width_mult, a.batch, a.steps)?,
        };
        eprintln!("  repeat {}: {:.1} images/s", r + 1, v);
        ips.push(v);
    }
    let imgs = stats(ips.clone());
    let median = imgs["median"].as_f64().unwrap_or(0.0);
    // Training costs about 3x the forward MACs, 2 FLOPs per MAC.
    let gflops = median * macs as f64 * 6.0 / 1e9;
    let gemm = if a.gemm > 0 {
        let g = crate::backend::cpu::gemm_gflops(a.gemm, 3);
        eprintln!("  sgemm {0}x{0}x{0}: {1:.1} GFLOP/s", a.gemm, g);
        Some(g)
    } else {
        None
    };
    eprintln!(
        "{}: {:.1} images/s (median), {:.1} GFLOP/s{}",
        a.arch,
        median,
        gflops,
        gemm.map_or(String::new(), |g| format!(
            " = {:.2} of the GEMM rate",
            gflops / g
        ))
    );
    if json {
        super::print_json(&serde_json::json!({
            "bench": "train",
            "arch": a.arch,
            "width_mult": a.width_mult,
            "batch": a.batch,
            "backend": backend.name(),
            "adapter": backend.adapter(),
            "forward_macs": macs,
            "images_per_second": imgs,
            "train_gflops": gflops,
            "gemm_gflops": gemm,
            "gemm_fraction": gemm.map(|g| gflops / g),
        }))?;
    }
    Ok(())
}
