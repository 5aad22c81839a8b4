//! The compiler end to end: small random nets in every weight format,
//! built with the host C compiler under AddressSanitizer and UBSan, run,
//! and compared with the reference forward pass; the memory planner's
//! bound on a residual net; budgets; the arm target under QEMU; and the
//! `compile`/`run` commands through the real binary.

use crate::common::object_cache;
use cardc::card::Card;
use cardc::compile::{self, Format, FormatChoice, artifact};
use cardc::data::{Dataset, Normalization};
use cardc::ir::{BatchNorm, Conv2d, Graph, Linear, Node, Op, ParamKind, Pool};
use cardc::model::{Model, Precision, WeightState};
use cardc::rng::Rng;
use std::path::Path;
use std::process::Command;

pub const SANITIZE: &[&str] = &[
    "-O1",
    "-g",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
];

pub fn node(name: &str, op: Op, inputs: &[usize]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.to_vec(),
    }
}

pub fn conv(ic: usize, oc: usize, k: usize, s: usize, p: usize, bias: bool) -> Op {
    Op::Conv2d(Conv2d {
        in_channels: ic,
        out_channels: oc,
        kernel: (k, k),
        stride: (s, s),
        padding: (p, p),
        groups: 1,
        bias,
    })
}

/// A biased convolution with a rectangular kernel and padding.
pub fn conv_rect(ic: usize, oc: usize, k: (usize, usize), s: usize, p: (usize, usize)) -> Op {
    Op::Conv2d(Conv2d {
        in_channels: ic,
        out_channels: oc,
        kernel: k,
        stride: (s, s),
        padding: p,
        groups: 1,
        bias: true,
    })
}

/// The graph `name` of `nodes`, its shapes checked.
pub fn graph_of(name: &str, nodes: Vec<Node>) -> Graph {
    let g = Graph {
        name: name.into(),
        nodes,
    };
    g.shapes().expect("valid test graph");
    g
}

pub fn bn(c: usize, affine: bool) -> Op {
    Op::BatchNorm(BatchNorm {
        channels: c,
        affine,
        eps: 1e-5,
        momentum: 0.1,
    })
}

/// Every operator: conv (padded, strided, 1×1 shortcut, with and without
/// bias), folded and standalone BatchNorm (affine and not), ReLU/ReLU6
/// fused and standalone, residual Add, max/avg pooling with padding,
/// Flatten, Linear. 40 channels: not a multiple of 32.
pub fn every_op_graph() -> Graph {
    let nodes = vec![
        node(
            "input",
            Op::Input {
                channels: 3,
                height: 9,
                width: 9,
            },
            &[],
        ),
        node("conv1", conv(3, 40, 3, 1, 1, true), &[0]),
        node("bn1", bn(40, true), &[1]),
        node("relu1", Op::Relu6, &[2]),
        node("conv2", conv(40, 40, 3, 2, 1, false), &[3]),
        node("bn2", bn(40, false), &[4]),
        node("short", conv(40, 40, 1, 2, 0, false), &[3]),
        node("add", Op::Add, &[5, 6]),
        node("relu2", Op::Relu, &[7]),
        node(
            "maxpool",
            Op::MaxPool(Pool {
                kernel: (3, 3),
                stride: (2, 2),
                padding: (1, 1),
            }),
            &[8],
        ),
        node("bn3", bn(40, true), &[9]),
        node("relu3", Op::Relu, &[9]),
        node("add2", Op::Add, &[10, 11]),
        node(
            "avgpool",
            Op::AvgPool(Pool {
                kernel: (3, 3),
                stride: (1, 1),
                padding: (1, 1),
            }),
            &[12],
        ),
        node("flatten", Op::Flatten, &[13]),
        node(
            "fc1",
            Op::Linear(Linear {
                in_features: 40 * 9,
                out_features: 33,
                bias: true,
            }),
            &[14],
        ),
        node("fc1_relu", Op::Relu, &[15]),
        node(
            "classifier",
            Op::Linear(Linear {
                in_features: 33,
                out_features: 5,
                bias: true,
            }),
            &[16],
        ),
    ];
    graph_of("every-op", nodes)
}

/// A model with random BN statistics and weights in `state`: "dense",
/// "masked" (≈75% zeros, one row fully masked, one row fully kept) or
/// "binary" (≈70% kept, one row fully masked).
pub fn model_for(graph: Graph, state: &str, seed: u64) -> Model {
    let mut m = Model::init(graph, seed).unwrap();
    let mut r = Rng::new(seed + 1);
    for ts in &mut m.params {
        for t in ts.iter_mut() {
            match t.kind {
                ParamKind::RunningMean | ParamKind::Beta => {
                    t.data.iter_mut().for_each(|v| *v = r.range(-0.5, 0.5))
                }
                ParamKind::RunningVar | ParamKind::Gamma => {
                    t.data.iter_mut().for_each(|v| *v = r.range(0.5, 1.5))
                }
                _ => {}
            }
        }
    }
    for (i, k) in m.prunable() {
        let t = &mut m.params[i][k];
        let rows = t.shape[0];
        let cols = t.data.len() / rows;
        let keep_p = if state == "binary" { 0.7 } else { 0.2 };
        let mask: Vec<bool> = (0..t.data.len())
            .map(|j| match j / cols {
                0 => false,
                1 => true,
                _ => r.uniform() < keep_p,
            })
            .collect();
        t.state = match state {
            "masked" => WeightState::Masked { mask },
            "binary" => WeightState::Binary {
                mask,
                alpha: r.range(0.05, 0.3),
            },
            _ => WeightState::Dense,
        };
        t.apply_mask();
    }
    m
}

/// `model` as a card quantized to int8 stores it: every conv/linear
/// weight on a symmetric per-output-channel grid of step
/// `coarsen · max |w| / 127` (with `coarsen` > 1, |q| stays below 127, so
/// a compiler re-deriving max-abs scales would change the values).
pub fn int8_of(mut m: Model, coarsen: f32) -> Model {
    for (i, k) in m.prunable() {
        let t = &mut m.params[i][k];
        let rows = t.shape[0];
        let cols = t.data.len() / rows;
        let scales: Vec<f32> = t
            .data
            .chunks(cols)
            .map(|row| {
                let max = row.iter().fold(0f32, |a, v| a.max(v.abs()));
                if max > 0.0 {
                    coarsen * max / 127.0
                } else {
                    1.0
                }
            })
            .collect();
        for (j, v) in t.data.iter_mut().enumerate() {
            let s = scales[j / cols];
            *v = (*v / s).round().clamp(-127.0, 127.0) * s;
        }
        t.precision = Precision::Int8 { scales };
    }
    m.validate().unwrap();
    m
}

pub fn card_of(model: Model) -> Card {
    let [c, _, _] = model.graph.input_shape();
    let classes = model.graph.classes();
    let norm = Normalization {
        mean: (0..c).map(|i| 0.4 + 0.05 * i as f32).collect(),
        std: (0..c).map(|i| 0.2 + 0.03 * i as f32).collect(),
    };
    Card::new(model, norm, (0..classes).map(|i| format!("c{i}")).collect())
}

pub fn random_images(card: &Card, n: usize, seed: u64) -> Dataset {
    let [c, h, w] = card.model.graph.input_shape();
    let mut r = Rng::new(seed);
    let classes = card.model.graph.classes();
    Dataset {
        images: (0..n * c * h * w).map(|_| r.below(256) as u8).collect(),
        labels: (0..n).map(|_| r.below(classes) as u32).collect(),
        channels: c,
        height: h,
        width: w,
        class_names: card.class_names.clone(),
        source: "random test images".into(),
    }
}

pub fn opts(target: &str, format: FormatChoice) -> compile::Options {
    compile::Options {
        target: target.into(),
        format,
        max_flash: None,
        max_ram: None,
    }
}

/// Compiles, builds with `cflags`, runs on `ds`; returns (max abs error
/// relative to the largest reference logit, argmax agreement).
pub fn compare(
    card: &Card,
    dir: &Path,
    o: &compile::Options,
    ds: &Dataset,
    cflags: &[&str],
) -> (f64, f64) {
    let report = compile::compile(card, o, dir).unwrap();
    assert!(report.arena_bytes >= report.arena_lower_bound_bytes);
    let flags: Vec<String> = cflags.iter().map(|s| s.to_string()).collect();
    artifact::build_with(dir, &flags, Some(&object_cache())).unwrap();
    let logits = artifact::execute(dir, &ds.images).unwrap().logits;
    let reference = artifact::reference_logits(card, ds).unwrap();
    assert_eq!(logits.len(), reference.len());
    let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
    let err = logits
        .iter()
        .zip(&reference)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    let k = report.classes;
    let argmax = |r: &[f32]| {
        (0..r.len())
            .max_by(|&a, &b| r[a].total_cmp(&r[b]))
            .unwrap_or(0)
    };
    let agree = logits
        .chunks(k)
        .zip(reference.chunks(k))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    ((err / scale) as f64, agree as f64 / ds.len() as f64)
}

/// Bound on the relative logit error of each format.
pub fn tolerance(f: Format) -> f64 {
    match f {
        Format::F16 => 2e-2,
        Format::Int8 | Format::Sparse8 => 6e-2,
        _ => 1e-4,
    }
}

#[test]
fn every_format_and_operator_matches_the_reference_under_sanitizers() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, seed) in [("dense", 1), ("masked", 2), ("binary", 3)] {
        let card = card_of(model_for(every_op_graph(), state, seed));
        let ds = random_images(&card, 3, seed);
        for f in Format::ALL {
            // Binary packing needs binary weights; other layers fall back.
            let dir = tmp.path().join(format!("{state}-{}", f.name()));
            let (err, _) = compare(
                &card,
                &dir,
                &opts("host", FormatChoice::Force(f)),
                &ds,
                SANITIZE,
            );
            // No Sign in this graph: xnor falls back on every layer
            // (tests/suite/xnor.rs runs it).
            let binary_only = matches!(f, Format::Binary | Format::Rice | Format::Xnor);
            let tol = if binary_only && state != "binary" {
                tolerance(Format::F32)
            } else {
                tolerance(f)
            };
            assert!(err <= tol, "{state} as {}: relative error {err}", f.name());
            let report: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                    .unwrap();
            let formats: Vec<&str> = report["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["format"].as_str().unwrap())
                .collect();
            if f != Format::Xnor && (!binary_only || state == "binary") {
                assert!(formats.iter().all(|&x| x == f.name()), "{formats:?}");
            }
        }
    }
}

/// The plain-C99 fallback of the kernels (no vector extension) computes
/// the same as the vectorized path, for every format, under sanitizers.
#[test]
fn portable_kernels_match_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let flags: Vec<&str> = SANITIZE
        .iter()
        .copied()
        .chain(["-DCARDC_PORTABLE"])
        .collect();
    for (state, f) in [
        ("dense", Format::F32),
        ("dense", Format::Int8),
        ("masked", Format::Sparse),
        ("masked", Format::Sparse8),
        ("binary", Format::Binary),
        ("binary", Format::Rice),
    ] {
        let card = card_of(model_for(every_op_graph(), state, 21));
        let ds = random_images(&card, 2, 21);
        let dir = tmp.path().join(format!("{state}-{}", f.name()));
        let (err, _) = compare(
            &card,
            &dir,
            &opts("host", FormatChoice::Force(f)),
            &ds,
            &flags,
        );
        assert!(
            err <= tolerance(f),
            "{state} as {}: relative error {err}",
            f.name()
        );
    }
}

/// Odd geometries: output widths that are not a multiple of the 8-pixel
/// vector (7, 4, 3, 1), channel counts that are not a multiple of the
/// dense block (3, 5, 6, 7, 9) or of the 32-bit binary word (33), 2x2 and
/// 1x3-padded kernels, stride 3; rows fully masked or fully kept; outputs
/// handed off into the next layer's padded input.
pub fn odd_graph() -> Graph {
    let c = conv_rect;
    let nodes = vec![
        node(
            "input",
            Op::Input {
                channels: 1,
                height: 7,
                width: 7,
            },
            &[],
        ),
        node("c1", c(1, 33, (3, 3), 1, (1, 1)), &[0]),
        node("r1", Op::Relu, &[1]),
        node("c2", c(33, 7, (2, 2), 2, (0, 0)), &[2]),
        node("c3", c(7, 9, (1, 3), 1, (0, 1)), &[3]),
        node("r3", Op::Relu, &[4]),
        node("c4", c(9, 6, (3, 3), 3, (1, 1)), &[5]),
        node("flatten", Op::Flatten, &[6]),
        node(
            "fc",
            Op::Linear(Linear {
                in_features: 6,
                out_features: 3,
                bias: true,
            }),
            &[7],
        ),
    ];
    graph_of("odd", nodes)
}

#[test]
fn odd_shapes_match_the_reference_in_every_exact_format() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, f) in [
        ("dense", Format::F32),
        ("masked", Format::Sparse),
        ("masked", Format::F32),
        ("binary", Format::Binary),
        ("binary", Format::Rice),
    ] {
        let card = card_of(model_for(odd_graph(), state, 31));
        let ds = random_images(&card, 3, 31);
        let dir = tmp.path().join(format!("{state}-{}", f.name()));
        let (err, agree) = compare(
            &card,
            &dir,
            &opts("host", FormatChoice::Force(f)),
            &ds,
            SANITIZE,
        );
        assert!(err <= 1e-4, "{state} as {}: relative error {err}", f.name());
        assert_eq!(agree, 1.0);
        // c2 -> c3 and c4 -> fc hand their outputs off in padded form.
        let model_c = std::fs::read_to_string(dir.join("model.c")).unwrap();
        assert_eq!(model_c.matches(".in_padded = 1").count(), 2, "{state}");
    }
}

/// Residual chains as the compiler stores them zero-bordered
/// (`layout::bordered_values`), on an 11x11 input (rows of a full and a
/// partial 8-pixel vector): `c0`'s output, `c2` + it, `c3` + that, all read
/// in place by `c1` (3x3, pad 1) but copied by the 5x5 `c3` (pad 2) and by
/// the stride-2 `c4` and `short`; the second chain (6x6) is read in place
/// by a (3, 1) kernel padded (1, 0) (borders above and below only) and
/// averaged by the global pool.
pub fn bordered_graph() -> Graph {
    let c = conv_rect;
    let nodes = vec![
        node(
            "input",
            Op::Input {
                channels: 3,
                height: 11,
                width: 11,
            },
            &[],
        ),
        node("c0", c(3, 12, (3, 3), 1, (1, 1)), &[0]),
        node("r0", Op::Relu, &[1]),
        node("c1", c(12, 12, (3, 3), 1, (1, 1)), &[2]),
        node("r1", Op::Relu, &[3]),
        node("c2", c(12, 12, (3, 3), 1, (1, 1)), &[4]),
        node("add1", Op::Add, &[5, 2]),
        node("r2", Op::Relu, &[6]),
        node("c3", c(12, 12, (5, 5), 1, (2, 2)), &[7]),
        node("add2", Op::Add, &[8, 7]),
        node("c4", c(12, 16, (3, 3), 2, (1, 1)), &[9]),
        node("r4", Op::Relu, &[10]),
        node("short", c(12, 16, (1, 1), 2, (0, 0)), &[9]),
        node("add3", Op::Add, &[11, 12]),
        node("c5", c(16, 16, (3, 1), 1, (1, 0)), &[13]),
        node("add4", Op::Add, &[14, 13]),
        node("r5", Op::Relu, &[15]),
        node("gap", Op::GlobalAvgPool, &[16]),
        node(
            "fc",
            Op::Linear(Linear {
                in_features: 16,
                out_features: 5,
                bias: true,
            }),
            &[17],
        ),
    ];
    graph_of("bordered", nodes)
}

/// Zero-bordered residual chains compute what the reference does, in every
/// exact format, vectorized and portable, under sanitizers (reads past a
/// border or an unzeroed border would show), and are emitted as planned:
/// three layers read their input in place (`c1`, `c5`, and `c2` from
/// `c1`'s hand-off), three copy it from a bordered value (`c3`, `c4`,
/// `short`), and the pool sums 8x6 planes of 6x6 images.
#[test]
fn bordered_residual_chains_match_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let portable: Vec<&str> = SANITIZE
        .iter()
        .copied()
        .chain(["-DCARDC_PORTABLE"])
        .collect();
    for (state, f, flags) in [
        ("dense", Format::F32, SANITIZE),
        ("masked", Format::Sparse, SANITIZE),
        ("binary", Format::Binary, SANITIZE),
        ("binary", Format::Rice, SANITIZE),
        ("dense", Format::F32, portable.as_slice()),
        ("binary", Format::Binary, portable.as_slice()),
    ] {
        let card = card_of(model_for(bordered_graph(), state, 51));
        let ds = random_images(&card, 3, 51);
        let dir = tmp
            .path()
            .join(format!("{state}-{}-{}", f.name(), flags.len()));
        let (err, agree) = compare(
            &card,
            &dir,
            &opts("host", FormatChoice::Force(f)),
            &ds,
            flags,
        );
        assert!(err <= 1e-4, "{state} as {}: relative error {err}", f.name());
        assert_eq!(agree, 1.0);
        let model_c = std::fs::read_to_string(dir.join("model.c")).unwrap();
        assert_eq!(model_c.matches(".in_padded = 1").count(), 3, "{state}");
        assert_eq!(model_c.matches(".in_plane = ").count(), 3, "{state}");
        assert!(model_c.contains(", 48, 36, 16); /* gap */"), "{state}");
    }
}

/// A card quantized to int8 (on coarse grids, |q| ≤ 64) compiles to its
/// own values: sparse8 and int8 agree with the reference as closely as
/// f32 does, on every operator and the odd geometries (rows fully masked
/// and fully kept, channels not a multiple of 32), and auto picks sparse8
/// for exactly the layers with 2/3 zeros or more (a γ = 0 BatchNorm
/// channel included).
#[test]
fn int8_cards_compile_to_their_own_values() {
    let tmp = tempfile::tempdir().unwrap();
    for (graph, seed) in [(every_op_graph(), 41), (odd_graph(), 42)] {
        let name = graph.name.clone();
        let mut m = int8_of(model_for(graph, "masked", seed), 2.0);
        // A BatchNorm channel with γ = 0 folds its row to zeros (a zero
        // step on the card's grid, which the compiler must not refuse).
        if let Some(bn1) = m.graph.nodes.iter().position(|n| n.name == "bn1") {
            let gamma = m.params[bn1]
                .iter_mut()
                .find(|t| t.kind == ParamKind::Gamma);
            gamma.unwrap().data[0] = 0.0;
        }
        let card = card_of(m);
        let ds = random_images(&card, 3, seed);
        for f in [
            FormatChoice::Auto,
            FormatChoice::Force(Format::Sparse8),
            FormatChoice::Force(Format::Int8),
        ] {
            let dir = tmp.path().join(format!("{name}-{f:?}"));
            let (err, agree) = compare(&card, &dir, &opts("host", f), &ds, SANITIZE);
            assert!(err <= 1e-4, "{name} {f:?}: relative error {err}");
            assert_eq!(agree, 1.0, "{name} {f:?}");
            if f == FormatChoice::Auto {
                let r: compile::Report = serde_json::from_str(
                    &std::fs::read_to_string(dir.join("report.json")).unwrap(),
                )
                .unwrap();
                assert!(r.layers.iter().any(|l| l.format == "sparse8"), "{name}");
                for l in &r.layers {
                    let sparse = l.zero_fraction >= compile::lower::SPARSE_MIN_ZEROS;
                    let want = if sparse { "sparse8" } else { "f32" };
                    assert_eq!(l.format, want, "{name} {}", l.name);
                }
            }
        }
    }
}

#[test]
fn auto_picks_binary_and_sparse_from_the_weights() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, want) in [("dense", "f32"), ("masked", "sparse"), ("binary", "binary")] {
        let card = card_of(model_for(every_op_graph(), state, 7));
        let r = compile::compile(&card, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
        assert!(
            r.layers.iter().all(|l| l.format == want),
            "{state}: {:?}",
            r.layers
        );
    }
}

pub fn resnet_card(state: &str) -> Card {
    let g = cardc::ir::models::build(
        "resnet20",
        &cardc::ir::models::BuildOptions {
            width_mult: 0.25,
            ..Default::default()
        },
    )
    .unwrap();
    card_of(model_for(g, state, 11))
}

#[test]
fn residual_net_plan_reaches_the_bound_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let card = resnet_card("binary");
    let ds = random_images(&card, 2, 5);
    let (err, agree) = compare(
        &card,
        tmp.path(),
        &opts("host", FormatChoice::Auto),
        &ds,
        SANITIZE,
    );
    assert!(err <= 1e-4, "relative error {err}");
    assert_eq!(agree, 1.0);
    let r: compile::Report =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("report.json")).unwrap())
            .unwrap();
    // A residual block keeps its input live across two convolutions; the
    // first hands its output to the second in scratch, and the second
    // writes the block's sum (the Add fused into it). Values are stored
    // zero-bordered (read in place by the next block's 3x3 convolution).
    // The peak is the first stride-2 block's shortcut: it reads the
    // stage-1 value (4 channels of 34x34 floats) and conv2's output (8 of
    // 18x18) and writes their sum (8 of 18x18). The planner reaches it.
    assert_eq!(r.arena_bytes, r.arena_lower_bound_bytes);
    let (stage1, stage2) = (4 * 4 * 34 * 34, 4 * 8 * 18 * 18);
    assert_eq!(r.arena_lower_bound_bytes, stage1 + 2 * stage2);
    assert!(r.layers.iter().all(|l| l.format == "binary"));
    // Every block's Add is done by the layer before it, and no stage-1
    // layer copies its input.
    let model_c = std::fs::read_to_string(tmp.path().join("model.c")).unwrap();
    assert_eq!(model_c.matches("cardc_mat_residual(&L").count(), 9);
    assert!(!model_c.contains("cardc_add("));
}

/// Artifacts built through an object cache compile the kernels once per
/// compiler, flag set and kernel text, link them from there, and compute
/// exactly what the one-command build (the Makefile's) computes.
#[test]
fn object_cache_compiles_the_kernels_once_per_flag_set() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let objects = || {
        let mut v: Vec<String> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".o"))
            .collect();
        v.sort();
        v
    };
    let stamp = |d: &Path| std::fs::read_to_string(d.join(artifact::BUILD_STAMP)).unwrap();
    let mut cached_dirs = vec![];
    for (state, seed) in [("dense", 1), ("masked", 2)] {
        let card = card_of(model_for(every_op_graph(), state, seed));
        let ds = random_images(&card, 3, seed);
        let plain = tmp.path().join(format!("{state}-plain"));
        let cached = tmp.path().join(format!("{state}-cached"));
        for d in [&plain, &cached] {
            compile::compile(&card, &opts("host", FormatChoice::Auto), d).unwrap();
        }
        artifact::build_with(&plain, &[], None).unwrap();
        artifact::build_with(&cached, &[], Some(&cache)).unwrap();
        assert!(stamp(&plain).contains(" cardc_kernels.c"));
        assert!(
            !stamp(&cached).contains(" cardc_kernels.c"),
            "{}",
            stamp(&cached)
        );
        assert!(stamp(&cached).contains(&format!("{}/cardc_kernels-", cache.display())));
        let a = artifact::execute(&plain, &ds.images).unwrap().logits;
        let b = artifact::execute(&cached, &ds.images).unwrap().logits;
        assert_eq!(a.len(), 3 * card.model.graph.classes());
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{state}"
        );
        cached_dirs.push(cached);
    }
    // Two models, one flag set: one object.
    assert_eq!(objects().len(), 1, "{:?}", objects());
    // Another flag set, then other kernel text: one more object each.
    let portable = vec!["-DCARDC_PORTABLE".to_string()];
    artifact::build_with(&cached_dirs[0], &portable, Some(&cache)).unwrap();
    assert_eq!(objects().len(), 2, "{:?}", objects());
    let kernels = cached_dirs[1].join("cardc_kernels.c");
    let mut text = std::fs::read_to_string(&kernels).unwrap();
    text.push_str("\n/* edited */\n");
    std::fs::write(&kernels, text).unwrap();
    artifact::build_with(&cached_dirs[1], &[], Some(&cache)).unwrap();
    assert_eq!(objects().len(), 3, "{:?}", objects());
    // A kernel source that does not compile names the file and the command.
    std::fs::write(&kernels, "this is not C").unwrap();
    let e = artifact::build_with(&cached_dirs[1], &[], Some(&cache)).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("compiling cardc_kernels.c of"), "{msg}");
    assert_eq!(objects().len(), 3, "{:?}", objects());
}

#[test]
fn harness_rejects_wrong_sized_input() {
    let tmp = tempfile::tempdir().unwrap();
    let card = card_of(model_for(every_op_graph(), "dense", 4));
    compile::compile(&card, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
    artifact::build_with(tmp.path(), &[], Some(&object_cache())).unwrap();
    let bad = tmp.path().join("bad.bin");
    std::fs::write(&bad, vec![0u8; 3 * 9 * 9 + 1]).unwrap();
    let o = Command::new(tmp.path().join("model"))
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a multiple"));
    std::fs::write(&bad, b"").unwrap();
    let o = Command::new(tmp.path().join("model"))
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn flash_budget_quantizes_or_fails_with_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let card = card_of(model_for(every_op_graph(), "dense", 6));
    let full = compile::compile(&card, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
    let mut o = opts("host", FormatChoice::Auto);
    o.max_flash = Some(full.flash_bytes / 2);
    let r = compile::compile(&card, &o, tmp.path()).unwrap();
    assert!(r.flash_bytes <= full.flash_bytes / 2);
    assert!(r.layers.iter().any(|l| l.format == "int8"));
    o.max_flash = Some(100);
    let e = compile::compile(&card, &o, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-flash 100") && e.contains("bytes"), "{e}");
    let mut o = opts("host", FormatChoice::Auto);
    o.max_ram = Some(1000);
    let e = compile::compile(&card, &o, tmp.path())
        .unwrap_err()
        .to_string();
    assert!(e.contains("--max-ram 1000"), "{e}");
}

/// Under `--max-flash`, sparse layers are quantized to sparse8 before any
/// dense layer goes to int8: a card with one large dense layer (fc1) and
/// sparse others, one byte over budget, gets sparse8 layers and no int8.
#[test]
fn flash_budget_quantizes_sparse_layers_before_dense_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = model_for(every_op_graph(), "masked", 13);
    let fc1 = m.graph.nodes.iter().position(|n| n.name == "fc1").unwrap();
    let mut r = Rng::new(13);
    for t in &mut m.params[fc1] {
        if t.kind == ParamKind::Weight {
            t.state = WeightState::Dense;
            t.data.iter_mut().for_each(|v| *v = r.normal());
        }
    }
    let card = card_of(m);
    let full = compile::compile(&card, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
    let format_of = |r: &compile::Report, name: &str| {
        r.layers
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.format.clone())
            .unwrap()
    };
    assert_eq!(format_of(&full, "fc1"), "f32");
    assert!(full.layers.iter().any(|l| l.format == "sparse"));
    let mut o = opts("host", FormatChoice::Auto);
    o.max_flash = Some(full.flash_bytes - 1);
    let r = compile::compile(&card, &o, tmp.path()).unwrap();
    assert!(r.flash_bytes < full.flash_bytes);
    assert!(
        r.layers.iter().any(|l| l.format == "sparse8"),
        "{:?}",
        r.layers
    );
    assert!(
        r.layers.iter().all(|l| l.format != "int8"),
        "{:?}",
        r.layers
    );
    // Tighter: once a layer is int8, no layer is left f32-sparse.
    for frac in [0.7, 0.5] {
        o.max_flash = Some((full.flash_bytes as f64 * frac) as u64);
        let r = compile::compile(&card, &o, tmp.path()).unwrap();
        assert!(r.flash_bytes <= o.max_flash.unwrap());
        if r.layers.iter().any(|l| l.format == "int8") {
            assert!(r.layers.iter().all(|l| l.format != "sparse"), "{frac}");
        }
    }
}

#[test]
fn arm_target_agrees_under_qemu() {
    let (t, _) = compile::target::find("arm").unwrap();
    let missing = t.missing_tools();
    if !missing.is_empty() {
        eprintln!("SKIPPED arm under QEMU: missing {missing:?} (test.sh installs them)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (state, f) in [
        ("dense", Format::F32),
        ("masked", Format::Sparse),
        ("masked", Format::Sparse8),
        ("binary", Format::Binary),
        ("binary", Format::Rice),
    ] {
        // Sparse8 on an int8 card: its own values, so as exact as f32.
        let mut m = model_for(every_op_graph(), state, 8);
        if f == Format::Sparse8 {
            m = int8_of(m, 1.0);
        }
        let card = card_of(m);
        let ds = random_images(&card, 3, 8);
        let dir = tmp.path().join(format!("{state}-{}", f.name()));
        let (err, agree) = compare(&card, &dir, &opts("arm", FormatChoice::Force(f)), &ds, &[]);
        assert!(err <= 1e-4, "{state} as {}: relative error {err}", f.name());
        assert_eq!(agree, 1.0);
    }
    // Zero-bordered residual chains (NEON stride-2 copies, border stores).
    for (state, f) in [("dense", Format::F32), ("binary", Format::Binary)] {
        let card = card_of(model_for(bordered_graph(), state, 52));
        let ds = random_images(&card, 3, 52);
        let dir = tmp.path().join(format!("bordered-{state}"));
        let (err, agree) = compare(&card, &dir, &opts("arm", FormatChoice::Force(f)), &ds, &[]);
        assert!(err <= 1e-4, "bordered {state}: relative error {err}");
        assert_eq!(agree, 1.0);
    }
}

#[test]
fn compile_and_run_commands_report_json() {
    let tmp = tempfile::tempdir().unwrap();
    let g = cardc::ir::models::build(
        "conv4",
        &cardc::ir::models::BuildOptions {
            width_mult: 0.125,
            ..Default::default()
        },
    )
    .unwrap();
    let card = card_of(model_for(g, "masked", 12));
    let card_path = tmp.path().join("m.card");
    card.save(&card_path).unwrap();
    let out = tmp.path().join("art");
    let bin = env!("CARGO_BIN_EXE_cardc");
    let o = Command::new(bin)
        .args([
            "compile",
            "--model",
            card_path.to_str().unwrap(),
            "--target",
            "host",
        ])
        .args(["--out", out.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in [
        "flash_bytes",
        "arena_bytes",
        "arena_lower_bound_bytes",
        "macs",
    ] {
        assert!(v[k].as_u64().unwrap() > 0, "{k}");
    }
    assert_eq!(v["layers"][0]["format"], "sparse");
    let o = Command::new(bin)
        .args([
            "run",
            out.to_str().unwrap(),
            "--data",
            "synthetic:50",
            "--limit",
            "6",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["argmax_agreement"], 1.0);
    assert!(v["max_abs_logit_error"].as_f64().unwrap() < 1e-3);
    assert!(v["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["target"], "host");
    assert!(v["accuracy"].as_f64().unwrap() <= 1.0);
    // Bad inputs: one-line errors.
    let o = Command::new(bin)
        .args([
            "run",
            tmp.path().to_str().unwrap(),
            "--data",
            "synthetic:50",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a compiled artifact"));
    let o = Command::new(bin)
        .args([
            "compile",
            "--model",
            card_path.to_str().unwrap(),
            "--target",
            "riscv",
        ])
        .args(["--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown target"));
}

/// `cardc bench infer` times tract on an exported card and reports the
/// latency statistics; a missing or bad `--onnx`/`--input` is a one-line
/// error.
#[test]
fn bench_infer_times_tract_on_an_exported_card() {
    use crate::common::{assert_clean_error, cardc, cardc_json};
    let tmp = tempfile::tempdir().unwrap();
    let card = resnet_card("dense");
    let card_path = tmp.path().join("m.card");
    card.save(&card_path).unwrap();
    let onnx = tmp.path().join("m.onnx");
    let (c, o) = (card_path.to_str().unwrap(), onnx.to_str().unwrap());
    assert!(
        cardc(&["export", "--model", c, "--out", o])
            .status
            .success()
    );
    let v = cardc_json(&[
        "bench", "infer", "--onnx", o, "--input", "3x32x32", "--iters", "5", "--json",
    ]);
    assert_eq!(v["runtime"], "tract");
    let l = &v["latency_ms"];
    let (min, med, max) = (
        l["min"].as_f64().unwrap(),
        l["median"].as_f64().unwrap(),
        l["max"].as_f64().unwrap(),
    );
    assert!(0.0 < min && min <= med && med <= max, "{l}");
    assert_eq!(l["runs"].as_array().unwrap().len(), 5);
    assert_clean_error(&cardc(&["bench", "infer"]), "--onnx");
    assert_clean_error(
        &cardc(&["bench", "infer", "--onnx", o, "--input", "3x32"]),
        "--input 3x32",
    );
    assert_clean_error(
        &cardc(&["bench", "infer", "--onnx", c]),
        "tract cannot load",
    );
}
