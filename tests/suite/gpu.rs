//! The wgpu backend against the CPU reference, on whatever Vulkan adapter
//! the machine has (lavapipe in CI): every operator's forward and
//! gradients on random inputs at small shapes, masks and binary weights,
//! and three whole ResNet-20 training steps.

use crate::common::{bn, cardc, conv, input, json, linear, node, pool, stderr};
use cardc::backend::gpu::WgpuBackend;
use cardc::backend::{Backend, Batch, CpuBackend};
use cardc::ir::{Graph, Node, Op, ParamKind};
use cardc::model::{Model, WeightState};
use cardc::rng::Rng;
use cardc::tensor::Tensor;
use cardc::train::optim::Sgd;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// One device for the whole suite (each compiles its kernels once).
fn gpu() -> MutexGuard<'static, WgpuBackend> {
    static GPU: OnceLock<Mutex<WgpuBackend>> = OnceLock::new();
    GPU.get_or_init(|| Mutex::new(open()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn open() -> WgpuBackend {
    WgpuBackend::new(false)
        .expect("a Vulkan adapter (lavapipe: Debian mesa-vulkan-drivers; test.sh installs it)")
}

fn model(name: &str, nodes: Vec<Node>, seed: u64) -> Model {
    let g = Graph {
        name: name.into(),
        nodes,
    };
    let mut m = Model::init(g, seed).expect("valid test graph");
    // Non-default BN parameters and running statistics exercise every term.
    let mut rng = Rng::new(seed ^ 0x5eed);
    for ts in &mut m.params {
        for t in ts.iter_mut() {
            match t.kind {
                ParamKind::Gamma | ParamKind::Beta | ParamKind::Bias | ParamKind::RunningMean => {
                    t.data.iter_mut().for_each(|v| *v = rng.range(-1.5, 1.5))
                }
                ParamKind::RunningVar => t.data.iter_mut().for_each(|v| *v = rng.range(0.5, 2.0)),
                ParamKind::Weight => {}
            }
        }
    }
    m
}

fn images(m: &Model, b: usize, seed: u64) -> Tensor {
    let [c, h, w] = m.graph.input_shape();
    let mut rng = Rng::new(seed);
    Tensor::from_vec(
        &[b, c, h, w],
        (0..b * c * h * w).map(|_| rng.normal()).collect(),
    )
}

fn labels(m: &Model, b: usize) -> Vec<u32> {
    let k = m.graph.classes() as u32;
    (0..b as u32).map(|i| (i * 7 + 1) % k).collect()
}

/// Relative L2 error of `got` against the reference `want`.
fn rel_err(want: &[f32], got: &[f32]) -> f64 {
    assert_eq!(want.len(), got.len());
    let d: f64 = want
        .iter()
        .zip(got)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let s: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    d / s.max(1e-6)
}

/// `got` within `tol` of `want` relative to its L2 norm, with an absolute
/// slack of 1e-6 for tensors that are zero up to rounding (a bias before a
/// BatchNorm has an exactly-zero gradient, computed as ~1e-9 noise).
fn assert_close(what: &str, want: &[f32], got: &[f32], tol: f64) {
    let norm: f64 = want.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let e = rel_err(want, got);
    assert!(
        e * norm.max(1e-6) <= tol * norm + 1e-6,
        "{what}: relative error {e:.3e} > {tol:.0e}\n cpu  {:?}\n wgpu {:?}",
        &want[..want.len().min(8)],
        &got[..got.len().min(8)]
    );
}

/// Eval forward, train-mode gradients and running statistics of `m` on
/// both backends.
fn check_model(what: &str, m: &Model, b: usize) {
    check_model_on(&mut gpu(), what, m, b)
}

fn check_model_on(g: &mut WgpuBackend, what: &str, m: &Model, b: usize) {
    let x = images(m, b, 7);
    let y = labels(m, b);
    let want = CpuBackend.infer(m, &x).expect("cpu infer");
    let got = g
        .infer(m, &x)
        .unwrap_or_else(|e| panic!("{what}: wgpu infer: {e:#}"));
    assert_eq!(want.shape, got.shape, "{what}: logits shape");
    assert_close(&format!("{what}: eval logits"), &want.data, &got.data, 1e-4);

    let (mut mc, mut mg) = (m.clone(), m.clone());
    let batch = Batch::new(&x, &y);
    let gc = CpuBackend
        .gradients(&mut mc, &batch)
        .expect("cpu gradients");
    let gg = g
        .gradients(&mut mg, &batch)
        .unwrap_or_else(|e| panic!("{what}: wgpu gradients: {e:#}"));
    assert!(
        (gc.stats.loss - gg.stats.loss).abs() <= 1e-4 * gc.stats.loss.abs().max(1.0),
        "{what}: loss {} vs {}",
        gc.stats.loss,
        gg.stats.loss
    );
    assert_eq!(gc.stats.correct, gg.stats.correct, "{what}: correct");
    for (i, (ts_c, ts_g)) in gc.grads.iter().zip(&gg.grads).enumerate() {
        for (k, (a, bb)) in ts_c.iter().zip(ts_g).enumerate() {
            let t = &m.params[i][k];
            let name = format!("{what}: grad {}.{}", m.graph.nodes[i].name, t.kind.suffix());
            assert_close(&name, a, bb, 1e-4);
        }
    }
    // Running statistics updated identically.
    for (i, (ts_c, ts_g)) in mc.params.iter().zip(&mg.params).enumerate() {
        for (a, bb) in ts_c.iter().zip(ts_g) {
            let name = format!("{what}: {}.{}", m.graph.nodes[i].name, a.kind.suffix());
            assert_close(&name, &a.data, &bb.data, 1e-5);
        }
    }
}

#[test]
fn shaders_validate_with_naga() {
    cardc::backend::gpu::validate_shaders().expect("every WGSL file validates");
}

#[test]
fn conv_variants_match_the_cpu_backend() {
    let cases: Vec<(&str, Vec<Node>)> = vec![
        (
            "conv3x3 s1 p1 + bias",
            vec![
                input(3, 9, 7),
                node("c", conv(3, 5, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
                node("f", Op::Flatten, &[1]),
                node("fc", linear(5 * 9 * 7, 4, true), &[2]),
            ],
        ),
        (
            "conv stride 2, no pad, 2 groups",
            vec![
                input(4, 11, 10),
                node("c", conv(4, 6, (3, 3), (2, 2), (0, 0), 2, false), &[0]),
                node("gap", Op::GlobalAvgPool, &[1]),
                node("fc", linear(6, 3, false), &[2]),
            ],
        ),
        (
            "1x1 stride-2 projection, 70 channels (several tiles)",
            vec![
                input(70, 6, 6),
                node("c", conv(70, 67, (1, 1), (2, 2), (0, 0), 1, false), &[0]),
                node("gap", Op::GlobalAvgPool, &[1]),
                node("fc", linear(67, 10, true), &[2]),
            ],
        ),
        (
            "5x5 pad 2 depthwise",
            vec![
                input(3, 8, 8),
                node("c", conv(3, 3, (5, 5), (1, 1), (2, 2), 3, true), &[0]),
                node("gap", Op::GlobalAvgPool, &[1]),
                node("fc", linear(3, 2, true), &[2]),
            ],
        ),
    ];
    for (i, (what, nodes)) in cases.into_iter().enumerate() {
        check_model(what, &model(what, nodes, 11 + i as u64), 3);
    }
}

#[test]
fn norm_pool_and_elementwise_ops_match_the_cpu_backend() {
    let cases: Vec<(&str, Vec<Node>)> = vec![
        (
            "affine BN + ReLU + max-pool 3/2 pad 1",
            vec![
                input(3, 8, 8),
                node("c", conv(3, 8, (3, 3), (1, 1), (1, 1), 1, false), &[0]),
                node("bn", bn(8, true), &[1]),
                node("r", Op::Relu, &[2]),
                node("mp", Op::MaxPool(pool(3, 2, 1)), &[3]),
                node("f", Op::Flatten, &[4]),
                node("fc", linear(8 * 16, 5, true), &[5]),
            ],
        ),
        (
            "non-affine BN + ReLU6 + avg-pool 2/2",
            vec![
                input(2, 6, 6),
                node("c", conv(2, 4, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
                node("bn", bn(4, false), &[1]),
                node("r6", Op::Relu6, &[2]),
                node("ap", Op::AvgPool(pool(2, 2, 0)), &[3]),
                node("gap", Op::GlobalAvgPool, &[4]),
                node("fc", linear(4, 3, false), &[5]),
            ],
        ),
        (
            "BN + Sign (straight-through) into a conv, Sign into pooling",
            vec![
                input(3, 6, 6),
                node("c1", conv(3, 8, (3, 3), (1, 1), (1, 1), 1, false), &[0]),
                node("bn", bn(8, true), &[1]),
                node("s1", Op::Sign, &[2]),
                node("c2", conv(8, 4, (3, 3), (1, 1), (1, 1), 1, true), &[3]),
                node("s2", Op::Sign, &[4]),
                node("gap", Op::GlobalAvgPool, &[5]),
                node("fc", linear(4, 3, true), &[6]),
            ],
        ),
        (
            "residual: add of two branches, x + x, BN on vectors",
            vec![
                input(3, 5, 5),
                node("c1", conv(3, 4, (3, 3), (1, 1), (1, 1), 1, false), &[0]),
                node("c2", conv(3, 4, (1, 1), (1, 1), (0, 0), 1, false), &[0]),
                node("add", Op::Add, &[1, 2]),
                node("r", Op::Relu, &[3]),
                node("dbl", Op::Add, &[4, 4]),
                node("gap", Op::GlobalAvgPool, &[5]),
                node("bnv", bn(4, true), &[6]),
                node("fc1", linear(4, 6, true), &[7]),
                node("r2", Op::Relu, &[8]),
                node("fc2", linear(6, 3, true), &[9]),
            ],
        ),
    ];
    for (i, (what, nodes)) in cases.into_iter().enumerate() {
        check_model(what, &model(what, nodes, 21 + i as u64), 4);
    }
}

/// A model with one masked and one binary layer.
fn compressed_model() -> Model {
    let nodes = vec![
        input(3, 6, 6),
        node("c1", conv(3, 8, (3, 3), (1, 1), (1, 1), 1, false), &[0]),
        node("bn1", bn(8, true), &[1]),
        node("r1", Op::Relu, &[2]),
        node("c2", conv(8, 8, (3, 3), (2, 2), (1, 1), 1, false), &[3]),
        node("bn2", bn(8, false), &[4]),
        node("r2", Op::Relu, &[5]),
        node("gap", Op::GlobalAvgPool, &[6]),
        node("fc", linear(8, 4, true), &[7]),
    ];
    let mut m = model("compressed", nodes, 5);
    let mut rng = Rng::new(9);
    let w1 = &mut m.params[1][0];
    w1.state = WeightState::Masked {
        mask: (0..w1.data.len()).map(|_| rng.uniform() < 0.5).collect(),
    };
    w1.apply_mask();
    let w2 = &mut m.params[4][0];
    w2.state = WeightState::Binary {
        mask: (0..w2.data.len()).map(|_| rng.uniform() < 0.7).collect(),
        alpha: 0.2,
    };
    m
}

#[test]
fn large_gemm_tiles_match_the_cpu_backend() {
    // 128-wide register tiles (8 x 8 and 8 x 4 per thread) on shapes that
    // leave partial tiles in every mode: conv forward/input grad M = 2*9*9
    // pixels, N = 130 / 129 channels; weight grads M = 130, N = 9 * 129.
    let mut g = open();
    g.prefer_large_tiles();
    let nodes = vec![
        input(3, 9, 9),
        node("c1", conv(3, 130, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
        node("r", Op::Relu, &[1]),
        node("c2", conv(130, 129, (3, 3), (1, 1), (1, 1), 1, false), &[2]),
        node("bn", bn(129, true), &[3]),
        node("gap", Op::GlobalAvgPool, &[4]),
        node("fc1", linear(129, 140, true), &[5]),
        node("fc2", linear(140, 10, true), &[6]),
    ];
    check_model_on(&mut g, "large tiles", &model("large", nodes, 31), 2);
}

#[test]
fn masked_and_binary_weights_match_the_cpu_backend() {
    check_model("masked + binary", &compressed_model(), 4);
}

/// `steps` SGD steps (Nesterov, weight decay) on both backends; returns
/// the two models after the GPU one is synced back.
fn train_both(m: &Model, b: usize, steps: usize) -> (Model, Model, Sgd, Sgd) {
    let (mut mc, mut mg) = (m.clone(), m.clone());
    let (mut sc, mut sg) = (Sgd::new(0.9, true, 5e-4), Sgd::new(0.9, true, 5e-4));
    let mut g = gpu();
    // Every step's own loss, to compare step by step.
    g.set_stats_every(1);
    for s in 0..steps {
        let x = images(m, b, 100 + s as u64);
        let y = labels(m, b);
        let batch = Batch::new(&x, &y);
        let lr = 0.05 / (s + 1) as f32;
        let a = CpuBackend
            .train_step(&mut mc, &mut sc, &batch, lr)
            .expect("cpu step");
        let c = g
            .train_step(&mut mg, &mut sg, &batch, lr)
            .expect("wgpu step");
        assert!(
            (a.loss - c.loss).abs() <= 1e-3 * a.loss.abs().max(1.0),
            "step {s}: loss {} vs {}",
            a.loss,
            c.loss
        );
    }
    g.sync(&mut mg, &mut sg).expect("sync");
    (mc, mg, sc, sg)
}

#[test]
fn masks_survive_gpu_training() {
    let m = compressed_model();
    let (mc, mg, sc, sg) = train_both(&m, 4, 3);
    for (i, (a, b)) in mc.params.iter().zip(&mg.params).enumerate() {
        for (k, (ta, tb)) in a.iter().zip(b).enumerate() {
            let what = format!("{}.{}", m.graph.nodes[i].name, ta.kind.suffix());
            assert_close(&what, &ta.data, &tb.data, 1e-4);
            assert_close(
                &format!("{what} momentum"),
                &sc.velocity[i][k],
                &sg.velocity[i][k],
                1e-3,
            );
            if let Some(mask) = tb.mask() {
                for (j, (&keep, &w)) in mask.iter().zip(&tb.data).enumerate() {
                    if !keep {
                        assert_eq!(w, 0.0, "{what}[{j}] is masked but {w}");
                        assert_eq!(sg.velocity[i][k][j], 0.0, "{what}[{j}] masked velocity");
                    }
                }
            }
        }
    }
}

#[test]
fn resnet20_three_steps_match_the_cpu_backend() {
    let graph = cardc::ir::models::build("resnet20", &Default::default()).expect("resnet20");
    let m = Model::init(graph, 3).expect("init");
    let (mc, mg, _, _) = train_both(&m, 8, 3);
    let mut worst = (0.0f64, String::new());
    for (i, (a, b)) in mc.params.iter().zip(&mg.params).enumerate() {
        for (ta, tb) in a.iter().zip(b) {
            let e = rel_err(&ta.data, &tb.data);
            if e > worst.0 {
                worst = (e, format!("{}.{}", m.graph.nodes[i].name, ta.kind.suffix()));
            }
        }
    }
    assert!(
        worst.0 <= 1e-4,
        "worst tensor {} relative error {:.3e}",
        worst.1,
        worst.0
    );
    // The weights moved: the comparison is not between two initial models.
    assert!(rel_err(&m.params[1][0].data, &mg.params[1][0].data) > 1e-3);
}

#[test]
fn gpu_errors_name_the_problem() {
    let m = compressed_model();
    let mut g = gpu();
    let x = images(&m, 2, 1);
    let bad = Tensor::from_vec(&[2, 3, 5, 6], vec![0.0; 180]);
    let e = g.infer(&m, &bad).expect_err("wrong image shape");
    assert!(
        format!("{e:#}").contains("expected images [B>0, 3, 6, 6]"),
        "{e:#}"
    );
    let mut mm = m.clone();
    let Err(e) = g.gradients(&mut mm, &Batch::new(&x, &[0, 9])) else {
        panic!("label out of range accepted");
    };
    assert!(
        format!("{e:#}").contains("label 9 of sample 1 is out of range for 4 classes"),
        "{e:#}"
    );
    // A batch of one cannot train BatchNorm: the same message as the CPU.
    let x1 = images(&m, 1, 1);
    let e = g
        .gradients(&mut mm, &Batch::new(&x1, &[0]))
        .err()
        .map(|e| format!("{e:#}"));
    let cpu = CpuBackend
        .gradients(&mut m.clone(), &Batch::new(&x1, &[0]))
        .err()
        .map(|e| format!("{e:#}"));
    // bn2 sees 3x3 pixels per image, so only bn on vectors would fail;
    // both backends must agree on whether this batch trains.
    assert_eq!(e.is_some(), cpu.is_some(), "wgpu {e:?} vs cpu {cpu:?}");
}

#[test]
fn jsd_on_wgpu_is_refused_up_front() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("j.card");
    let o = cardc(&[
        "train",
        "--arch",
        "conv4",
        "--data",
        "synthetic:32",
        "--epochs",
        "1",
        "--batch",
        "8",
        "--augment",
        "augmix",
        "--jsd",
        "--backend",
        "wgpu",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    crate::common::assert_clean_error(&o, "--jsd) is not on the GPU yet");
    assert!(!out.exists());
}

#[test]
fn bench_train_runs_on_wgpu() {
    let o = cardc(&[
        "bench",
        "train",
        "--arch",
        "conv4",
        "--batch",
        "4",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--backend",
        "wgpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let ips = v["images_per_second"]["median"].as_f64().unwrap_or(0.0);
    assert!(ips > 0.0, "{v}");
    assert!(
        stderr(&o).contains("wgpu/Vulkan"),
        "adapter printed: {}",
        stderr(&o)
    );
}

#[test]
fn cli_training_on_wgpu_matches_cpu_training() {
    // The trainer's GPU path end to end: weights resident on the device
    // for each epoch, batches made one ahead on another thread, sync before
    // the epoch's evaluation and the checkpoint. Same seed and data: the
    // two cards hold the same weights up to float rounding.
    let dir = tempfile::tempdir().expect("tempdir");
    let desc = dir.path().join("tiny.toml");
    std::fs::write(
        &desc,
        "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c4\", \"M\", \"c6\", \"M\"]\nfc = [12]\n",
    )
    .expect("write model description");
    let train = |backend: &str| {
        let out = dir.path().join(format!("{backend}.card"));
        let o = cardc(&[
            "train",
            "--json",
            "--arch",
            desc.to_str().expect("utf-8 path"),
            "--data",
            "synthetic:96",
            "--epochs",
            "2",
            "--batch",
            "16",
            "--lr",
            "0.05",
            "--backend",
            backend,
            "--out",
            out.to_str().expect("utf-8 path"),
        ]);
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        (cardc::card::Card::load(&out).expect("card"), json(&o))
    };
    let ((c, cj), (g, gj)) = (train("cpu"), train("wgpu"));
    // The epochs' loss and accuracy, read back from the device at the
    // epoch's end (6 steps, fewer than a read's 16), are the CPU's.
    for e in 0..2 {
        let (a, b) = (&cj["history"][e], &gj["history"][e]);
        let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(
            (la - lb).abs() <= 1e-3 * la.max(1.0),
            "epoch {e}: loss {la} vs {lb}"
        );
        let (aa, ab) = (
            a["train_accuracy"].as_f64().unwrap(),
            b["train_accuracy"].as_f64().unwrap(),
        );
        assert!(
            (aa - ab).abs() <= 1.5 / 96.0,
            "epoch {e}: accuracy {aa} vs {ab}"
        );
    }
    assert_eq!(g.provenance.backend, "wgpu");
    assert!(
        g.provenance.adapter.starts_with("wgpu/Vulkan"),
        "{}",
        g.provenance.adapter
    );
    for (i, (a, b)) in c.model.params.iter().zip(&g.model.params).enumerate() {
        for (ta, tb) in a.iter().zip(b) {
            let what = format!("{}.{}", c.model.graph.nodes[i].name, ta.kind.suffix());
            assert_close(&what, &ta.data, &tb.data, 1e-3);
        }
    }
    // The model moved away from its initialization during training.
    let init = Model::init(c.model.graph.clone(), 0).expect("init");
    assert!(rel_err(&init.params[1][0].data, &g.model.params[1][0].data) > 1e-2);
}

/// Raw batches (bytes, crops, flips) are cropped, flipped and normalized
/// on the device into exactly the floats the host makes: the device's
/// gradients from raw bytes equal its gradients from the host's tensor
/// bit for bit, and the CPU backend's within the usual tolerance.
#[test]
fn raw_batches_are_augmented_on_the_device_as_on_the_host() {
    use cardc::data::{Augment, Dataset, Normalization, make_batch, make_raw_batch};
    // 3 x 7 x 9 images: 189 bytes each, so an odd batch is not whole words.
    let (c, h, w) = (3, 7, 9);
    let n = 11;
    let mut rng = Rng::new(5);
    let ds = Dataset {
        images: (0..n * c * h * w).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n as u32).map(|i| i % 3).collect(),
        channels: c,
        height: h,
        width: w,
        class_names: vec![],
        source: "random bytes".into(),
    };
    let norm = Normalization {
        mean: vec![0.49, 0.48, 0.45],
        std: vec![0.25, 0.24, 0.26],
    };
    let m = model(
        "raw input",
        vec![
            input(c, h, w),
            node("c", conv(c, 4, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
            node("r", Op::Relu, &[1]),
            node("gap", Op::GlobalAvgPool, &[2]),
            node("fc", linear(4, 3, true), &[3]),
        ],
        31,
    );
    let idx = [3, 0, 7, 10, 5];
    let mut g = gpu();
    for (augment, seed) in [
        (Augment::FlipCrop { pad: 2 }, 9),
        (Augment::FlipCrop { pad: 4 }, 10),
        (Augment::None, 11),
    ] {
        let what = format!("{augment:?}");
        let (raw, y) =
            make_raw_batch(&ds, &idx, &norm, augment, seed).expect("a device augmentation");
        let (x, y2) = make_batch(&ds, &idx, &norm, augment, seed);
        assert_eq!(y, y2);
        let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&raw.to_tensor().data),
            bits(&x.data),
            "{what}: host reference"
        );
        if matches!(augment, Augment::FlipCrop { .. }) {
            assert!(raw.shifts.iter().any(|s| s.flip) && raw.shifts.iter().any(|s| !s.flip));
            assert!(raw.shifts.iter().any(|s| s.dx != 0 || s.dy != 0));
        }
        let from_raw = g
            .gradients(&mut m.clone(), &Batch::raw(&raw, &y))
            .unwrap_or_else(|e| panic!("{what}: wgpu gradients of raw bytes: {e:#}"));
        let from_host = g
            .gradients(&mut m.clone(), &Batch::new(&x, &y))
            .expect("wgpu gradients");
        assert_eq!(
            from_raw.stats.loss.to_bits(),
            from_host.stats.loss.to_bits(),
            "{what}"
        );
        for (a, b) in from_raw
            .grads
            .iter()
            .flatten()
            .zip(from_host.grads.iter().flatten())
        {
            assert_eq!(bits(a), bits(b), "{what}: gradients");
        }
        let cpu = CpuBackend
            .gradients(&mut m.clone(), &Batch::raw(&raw, &y))
            .expect("cpu gradients of raw bytes");
        for (a, b) in cpu
            .grads
            .iter()
            .flatten()
            .zip(from_raw.grads.iter().flatten())
        {
            assert_close(&format!("{what}: cpu vs wgpu"), a, b, 1e-4);
        }
    }
    // Host-only augmentations have no raw form.
    assert!(make_raw_batch(&ds, &idx, &norm, Augment::AugMix, 1).is_none());
    // A raw batch that does not fit the model is refused with the shapes.
    let (mut raw, y) = make_raw_batch(&ds, &idx, &norm, Augment::None, 1).expect("raw");
    raw.shifts.pop();
    let Err(e) = g.gradients(&mut m.clone(), &Batch::raw(&raw, &y)) else {
        panic!("a raw batch with a crop missing was accepted");
    };
    assert!(format!("{e:#}").contains("4 crops"), "{e:#}");
}

/// The training statistics are read back every few steps, not after each
/// one: the steps in between report nothing, the read reports the mean
/// loss and the correct count of every step since the last, and
/// `flush_stats` the rest.
#[test]
fn training_statistics_are_read_back_every_few_steps() {
    let m = model(
        "stats",
        vec![
            input(3, 6, 6),
            node("c", conv(3, 4, (3, 3), (1, 1), (1, 1), 1, true), &[0]),
            node("r", Op::Relu, &[1]),
            node("gap", Op::GlobalAvgPool, &[2]),
            node("fc", linear(4, 3, true), &[3]),
        ],
        41,
    );
    let b = 5;
    let mut g = gpu();
    let mut run = |every: usize| {
        g.set_stats_every(every);
        let (mut mm, mut sgd) = (m.clone(), Sgd::new(0.9, true, 5e-4));
        let mut out = Vec::new();
        for s in 0..6 {
            let x = images(&m, b, 300 + s);
            let y = labels(&m, b);
            out.push(
                g.train_step(&mut mm, &mut sgd, &Batch::new(&x, &y), 0.05)
                    .expect("step"),
            );
        }
        out.push(g.flush_stats().expect("flush"));
        g.sync(&mut mm, &mut sgd).expect("sync");
        out
    };
    let each = run(1);
    let every4 = run(4);
    g.set_stats_every(16);
    drop(g);
    let images: Vec<usize> = each.iter().map(|s| s.images).collect();
    assert_eq!(images, [b, b, b, b, b, b, 0]);
    let images: Vec<usize> = every4.iter().map(|s| s.images).collect();
    assert_eq!(images, [0, 0, 0, 4 * b, 0, 0, 2 * b]);
    for (got, steps) in [(every4[3], &each[0..4]), (every4[6], &each[4..6])] {
        let mean = steps.iter().map(|s| s.loss).sum::<f32>() / steps.len() as f32;
        assert!(
            (got.loss - mean).abs() <= 1e-5 * mean.abs().max(1.0),
            "loss {} vs the steps' mean {mean}",
            got.loss
        );
        assert_eq!(got.correct, steps.iter().map(|s| s.correct).sum::<usize>());
    }
    assert!(
        each.iter()
            .take(6)
            .all(|s| s.loss.is_finite() && s.loss > 0.0)
    );
}
