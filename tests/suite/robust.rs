//! Robustness evaluation: the eval-mode input gradient against finite
//! differences, attacks on a briefly trained net, the corruption table
//! against a direct computation, report directories, and `cardc eval` /
//! `cardc report` end to end with their one-line errors.

use crate::common::{assert_clean_error, cardc, json, stderr};

use cardc::backend::CpuBackend;
use cardc::backend::cpu::{infer, input_gradient};
use cardc::card::Card;
use cardc::corrupt::corrupt_dataset;
use cardc::data::{Dataset, Normalization, Split, generate_synthetic};
use cardc::eval;
use cardc::ir::{BatchNorm, Conv2d, Graph, Linear, Node, Op, ParamKind, Pool};
use cardc::model::{Model, WeightState};
use cardc::rng::Rng;
use cardc::robust::suite::{self, CorruptionSource, Subject, SuiteConfig};
use cardc::robust::{AttackSpec, attack_batch, report};
use cardc::tensor::Tensor;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TRAIN_DATA: &str = "synthetic:1000";

/// A small conv4 briefly trained on synthetic data, shared by the tests
/// of this file (trained once through the real binary).
fn trained_card() -> &'static Path {
    static CARD: OnceLock<PathBuf> = OnceLock::new();
    CARD.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("net.card");
        let o = cardc(&[
            "train",
            "--arch",
            "conv4",
            "--width-mult",
            "0.25",
            "--data",
            TRAIN_DATA,
            "--epochs",
            "4",
            "--batch",
            "32",
            "--lr",
            "0.01",
            "--schedule",
            "onecycle",
            "--augment",
            "none",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "training failed: {}", stderr(&o));
        out
    })
}

fn test_set(n: usize) -> Dataset {
    generate_synthetic(5 * n, Split::Test)
}

// ---------------------------------------------------------------- gradient

fn node(name: &str, op: Op, inputs: &[usize]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.to_vec(),
    }
}

fn conv(cin: usize, cout: usize) -> Op {
    Op::Conv2d(Conv2d {
        in_channels: cin,
        out_channels: cout,
        kernel: (3, 3),
        stride: (1, 1),
        padding: (1, 1),
        groups: 1,
        bias: false,
    })
}

fn bn(c: usize, affine: bool) -> Op {
    Op::BatchNorm(BatchNorm {
        channels: c,
        affine,
        eps: 1e-5,
        momentum: 0.1,
    })
}

/// conv (masked) → BN → ReLU → max-pool → conv (binary) → BN (non-affine)
/// → ReLU → global pool → linear, with non-trivial running statistics.
fn eval_net() -> Model {
    let g = Graph {
        name: "t".into(),
        nodes: vec![
            node(
                "input",
                Op::Input {
                    channels: 2,
                    height: 6,
                    width: 6,
                },
                &[],
            ),
            node("conv1", conv(2, 4), &[0]),
            node("bn1", bn(4, true), &[1]),
            node("relu1", Op::Relu, &[2]),
            node(
                "pool",
                Op::MaxPool(Pool {
                    kernel: (2, 2),
                    stride: (2, 2),
                    padding: (0, 0),
                }),
                &[3],
            ),
            node("conv2", conv(4, 3), &[4]),
            node("bn2", bn(3, false), &[5]),
            node("relu2", Op::Relu, &[6]),
            node("gap", Op::GlobalAvgPool, &[7]),
            node(
                "fc",
                Op::Linear(Linear {
                    in_features: 3,
                    out_features: 4,
                    bias: true,
                }),
                &[8],
            ),
        ],
    };
    let mut m = Model::init(g, 7).unwrap();
    let mut rng = Rng::new(99);
    for ts in &mut m.params {
        for t in ts.iter_mut() {
            match t.kind {
                ParamKind::RunningMean | ParamKind::Beta => {
                    t.data.iter_mut().for_each(|v| *v = rng.range(-0.5, 0.5))
                }
                ParamKind::RunningVar | ParamKind::Gamma => {
                    t.data.iter_mut().for_each(|v| *v = rng.range(0.3, 2.0))
                }
                _ => {}
            }
        }
    }
    let n1 = m.params[1][0].data.len();
    m.params[1][0].state = WeightState::Masked {
        mask: (0..n1).map(|i| i % 3 != 0).collect(),
    };
    m.params[1][0].apply_mask();
    let n2 = m.params[5][0].data.len();
    m.params[5][0].state = WeightState::Binary {
        mask: (0..n2).map(|i| i % 4 != 1).collect(),
        alpha: 0.4,
    };
    m
}

/// Mean cross-entropy of the eval-mode network, in f64.
fn eval_loss(m: &Model, x: &Tensor, y: &[u32]) -> f64 {
    let logits = infer(m, x).unwrap();
    let k = logits.shape[1];
    logits
        .data
        .chunks(k)
        .zip(y)
        .map(|(row, &l)| {
            let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let z: f64 = row.iter().map(|&v| (v as f64 - mx).exp()).sum();
            mx + z.ln() - row[l as usize] as f64
        })
        .sum::<f64>()
        / y.len() as f64
}

#[test]
fn eval_mode_input_gradient_matches_finite_differences() {
    let m = eval_net();
    let mut rng = Rng::new(5);
    let x = Tensor::from_vec(&[3, 2, 6, 6], (0..216).map(|_| rng.normal()).collect());
    let y = [0u32, 3, 1];
    let before = m.clone();
    let out = input_gradient(&m, &x, &y).unwrap();
    assert_eq!(m, before, "the eval-mode pass must not touch the model");
    assert_eq!(out.input_grad.shape, x.shape);
    assert!((out.loss as f64 - eval_loss(&m, &x, &y)).abs() < 1e-4);
    assert_eq!(out.logits, infer(&m, &x).unwrap());
    let mut skipped = 0;
    let (mut diff, mut scale) = (0.0f64, 0.0f64);
    for e in 0..x.len() {
        let f = |d: f32| {
            let mut xp = x.clone();
            xp.data[e] += d;
            eval_loss(&m, &xp, &y)
        };
        let a = (f(2e-3) - f(-2e-3)) / 4e-3;
        let b = (f(1e-3) - f(-1e-3)) / 2e-3;
        // A ReLU or max-pool kink inside the step: skip the coordinate.
        if (a - b).abs() > 1e-2 * a.abs().max(b.abs()) + 1e-3 {
            skipped += 1;
            continue;
        }
        diff += (a - out.input_grad.data[e] as f64).powi(2);
        scale += a * a;
    }
    assert!(skipped * 4 <= x.len(), "{skipped} kinks");
    let rel = diff.sqrt() / scale.sqrt().max(1e-2);
    assert!(rel < 2e-2, "relative error {rel:.3e}");
    assert!(scale > 1e-6, "gradient vanished");
}

// ---------------------------------------------------------------- attacks

fn pixels(ds: &Dataset) -> Vec<f32> {
    ds.images.iter().map(|&b| b as f32 / 255.0).collect()
}

fn accuracy_on(card: &Card, px: &[f32], labels: &[u32]) -> f64 {
    let [c, h, w] = card.model.graph.input_shape();
    let n = &card.normalization;
    let x: Vec<f32> = px
        .chunks(h * w)
        .enumerate()
        .flat_map(|(i, ch)| {
            let k = i % c;
            ch.iter().map(move |&v| (v - n.mean[k]) / n.std[k])
        })
        .collect();
    let logits = infer(&card.model, &Tensor::from_vec(&[labels.len(), c, h, w], x)).unwrap();
    let hits = logits
        .argmax_rows()
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p == **l as usize)
        .count();
    hits as f64 / labels.len() as f64
}

#[test]
fn attacks_stay_in_their_ball_and_pgd_beats_fgsm() {
    let card = Card::load(trained_card()).unwrap();
    let ds = test_set(100);
    let px = pixels(&ds);
    let clean = accuracy_on(&card, &px, &ds.labels);
    assert!(
        clean > 0.25,
        "the briefly trained net learned nothing: {clean}"
    );
    let eps = 4.0 / 255.0;
    let mut acc = Vec::new();
    for spec in [
        format!("fgsm:{eps}"),
        format!("pgd-linf:{eps}:5"),
        "pgd-l2:0.5:5".to_string(),
    ] {
        let spec = AttackSpec::parse(&spec).unwrap();
        let mut rng = Rng::new(3);
        let adv = attack_batch(
            &card.model,
            &card.normalization,
            &px,
            &ds.labels,
            &spec,
            &mut rng,
        )
        .unwrap();
        assert_eq!(adv.len(), px.len());
        assert!(
            adv.iter().all(|v| (0.0..=1.0).contains(v)),
            "{spec}: out of [0,1]"
        );
        match spec {
            AttackSpec::PgdL2 { eps, .. } => {
                for (a, x) in adv.chunks(ds.image_len()).zip(px.chunks(ds.image_len())) {
                    let n: f32 = a.iter().zip(x).map(|(p, q)| (p - q).powi(2)).sum::<f32>();
                    assert!(n.sqrt() <= eps * 1.001, "{spec}: ℓ2 norm {}", n.sqrt());
                }
            }
            _ => {
                let worst = adv
                    .iter()
                    .zip(&px)
                    .map(|(a, x)| (a - x).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst <= eps + 1e-6, "{spec}: ℓ∞ {worst}");
                assert!(worst > eps * 0.9, "{spec}: did not move ({worst})");
            }
        }
        acc.push(accuracy_on(&card, &adv, &ds.labels));
    }
    let (fgsm, pgd, l2) = (acc[0], acc[1], acc[2]);
    assert!(
        pgd <= fgsm && fgsm < clean,
        "clean {clean}, fgsm {fgsm}, pgd {pgd}"
    );
    assert!(l2 < clean, "clean {clean}, pgd-l2 {l2}");
    // Same seed, same adversarial images.
    let spec = AttackSpec::parse("pgd-linf:4/255:2").unwrap();
    let run = |seed| {
        attack_batch(
            &card.model,
            &card.normalization,
            &px[..ds.image_len() * 4],
            &ds.labels[..4],
            &spec,
            &mut Rng::new(seed),
        )
        .unwrap()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

// ---------------------------------------------------------------- table

#[test]
fn corruption_table_matches_a_direct_computation() {
    let card = Card::load(trained_card()).unwrap();
    let mut other = card.clone();
    other.model = Model::init(card.model.graph.clone(), 11).unwrap();
    let ds = test_set(60);
    let names = ["gaussian_noise", "contrast"];
    let sevs = [1u8, 3, 5];
    let cfg = SuiteConfig {
        corruptions: names.to_vec(),
        severities: sevs.to_vec(),
        attacks: Vec::new(),
        limit: Some(50),
        seed: 4,
        batch: 32,
        quiet: true,
    };
    let (s, b) = (
        Subject {
            name: "net".into(),
            card: &card,
        },
        Subject {
            name: "random".into(),
            card: &other,
        },
    );
    let src = CorruptionSource::Generated {
        clean: &ds,
        seed: 4,
    };
    let mut be = CpuBackend;
    let r = suite::run(
        &mut be,
        &s,
        Some(&b),
        "synthetic",
        Some(&ds),
        Some(&src),
        &cfg,
    )
    .unwrap();
    let t = &r.corruption_table;
    assert_eq!((t.accuracy.len(), t.accuracy[0].len()), (2, 3));
    let direct = |card: &Card, c: &str, sev: u8| {
        let cell = corrupt_dataset(&ds, c, sev, 4).unwrap().limit(50);
        let p =
            eval::predict(&mut CpuBackend, &card.model, &cell, &card.normalization, 32).unwrap();
        let sm = eval::summarize(&p, &cell.class_names);
        (sm.accuracy, sm.ece, sm.images)
    };
    let (mut all, mut err, mut err_b) = (0.0, [0.0; 2], [0.0; 2]);
    for (i, c) in names.iter().enumerate() {
        for (j, &sev) in sevs.iter().enumerate() {
            let (acc, ece, n) = direct(&card, c, sev);
            assert_eq!(t.images[i][j], n);
            assert_eq!(n, 50);
            assert!((t.accuracy[i][j] - acc).abs() < 1e-12, "{c} {sev}");
            assert!((t.ece[i][j] - ece).abs() < 1e-9, "{c} {sev} ece");
            assert!((r.corruptions[*c][&sev.to_string()] - acc).abs() < 1e-12);
            assert!((r.corruption_ece[*c][&sev.to_string()] - ece).abs() < 1e-9);
            all += acc;
            err[i] += 1.0 - acc;
            err_b[i] += 1.0 - direct(&other, c, sev).0;
        }
        let row_mean = t.accuracy[i].iter().sum::<f64>() / 3.0;
        assert!((r.corruption_means[*c] - row_mean).abs() < 1e-12);
    }
    let sev3 = (t.accuracy[0][1] + t.accuracy[1][1]) / 2.0;
    assert!((r.severity_means["3"] - sev3).abs() < 1e-12);
    assert!((r.mean_corruption_accuracy.unwrap() - all / 6.0).abs() < 1e-12);
    let base = r.baseline.as_ref().expect("baseline comparison");
    for (i, c) in names.iter().enumerate() {
        let ce = base.corruption_error[*c].expect("baseline errs");
        assert!((ce - err[i] / err_b[i]).abs() < 1e-9, "{c}: {ce}");
    }
    assert!(base.mce.is_some() && base.relative_mce.is_some());
    // Clean numbers agree with the plain evaluation.
    let clean = eval::evaluate(&mut be, &card.model, &ds, &card.normalization, 64).unwrap();
    assert_eq!(r.accuracy, Some(clean.accuracy));
    assert_eq!(r.ece, Some(clean.ece));
    assert_eq!(
        r.corrupted_reliability.iter().map(|d| d.2).sum::<usize>(),
        300
    );

    // The report directory: JSON, decodable figures, pages; read back.
    let dir = tempfile::tempdir().unwrap();
    let files = report::write_run_dir(dir.path(), &r).unwrap();
    assert!(files.len() >= 7, "{files:?}");
    let png = image::open(dir.path().join("heatmap.png")).unwrap();
    assert_eq!((png.width(), png.height()), (3 * 16, 2 * 16));
    let rel = image::open(dir.path().join("reliability.png")).unwrap();
    assert_eq!(rel.width(), 240);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("gaussian_noise"));
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
    let back = report::load_run_dir(dir.path()).unwrap();
    assert_eq!(back.len(), 1);
    let (t0, t1) = (&back[0].1.corruption_table, &r.corruption_table);
    assert_eq!(
        (&t0.corruptions, &t0.severities, &t0.images),
        (&t1.corruptions, &t1.severities, &t1.images)
    );
    let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
        a.iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| (x - y).abs() < 1e-12)
    };
    assert!(close(&t0.accuracy, &t1.accuracy) && close(&t0.ece, &t1.ece));
}

// ---------------------------------------------------------------- CLI

#[test]
fn eval_cli_writes_json_and_report_and_report_regenerates() {
    let card = trained_card().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_a = dir.path().join("a");
    let v = json(&cardc(&[
        "eval",
        "--model",
        card,
        "--data",
        TRAIN_DATA,
        "--limit",
        "40",
        "--corruptions",
        "contrast,gaussian_noise",
        "--severities",
        "2-3",
        "--attack",
        "fgsm:8/255",
        "--attack",
        "pgd-linf:8/255:3:2/255",
        "--baseline",
        card,
        "--report",
        run_a.to_str().unwrap(),
        "--json",
    ]));
    for k in [
        "accuracy",
        "ece",
        "corruptions",
        "corruption_ece",
        "mean_corruption_accuracy",
        "attacks",
        "baseline",
        "reliability",
        "per_class",
    ] {
        assert!(v.get(k).is_some(), "eval --json lacks {k}: {v}");
    }
    assert_eq!(v["images"], 40);
    let c = v["corruptions"].as_object().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c["contrast"].as_object().unwrap().len(), 2);
    assert!(c["gaussian_noise"]["3"].as_f64().is_some());
    // Rows in the reference order, whatever order the flag gave.
    assert_eq!(v["corruption_table"]["corruptions"][0], "gaussian_noise");
    let a = v["attacks"].as_object().unwrap();
    let fgsm = a["fgsm:8/255"].as_f64().unwrap();
    let pgd = a["pgd-linf:8/255:3:2/255"].as_f64().unwrap();
    assert!(pgd <= fgsm && fgsm <= v["accuracy"].as_f64().unwrap());
    // The card is its own baseline: every corruption error is 1.
    for (_, ce) in v["baseline"]["corruption_error"].as_object().unwrap() {
        if let Some(ce) = ce.as_f64() {
            assert!((ce - 1.0).abs() < 1e-12);
        }
    }
    for f in [
        "eval.json",
        "heatmap.svg",
        "heatmap.png",
        "reliability.svg",
        "reliability.png",
        "report.md",
        "report.html",
    ] {
        assert!(run_a.join(f).is_file(), "missing {f}");
    }
    // A second card's run beside it; `cardc report` puts both on one page.
    let run_b = dir.path().join("b");
    std::fs::create_dir(&run_b).unwrap();
    let mut other: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_a.join("eval.json")).unwrap()).unwrap();
    other["model"] = "second-card".into();
    std::fs::write(run_b.join("eval.json"), other.to_string()).unwrap();
    let r = json(&cardc(&["report", dir.path().to_str().unwrap(), "--json"]));
    assert_eq!(r["evaluations"], 2);
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("second-card") && html.contains(card));
    assert_eq!(html.matches("<svg").count(), 4, "two figures per card");
    let md = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(md.contains("| contrast |"), "{md}");
    // An empty directory or a foreign eval.json is refused in one line.
    let empty = tempfile::tempdir().unwrap();
    assert_clean_error(
        &cardc(&["report", empty.path().to_str().unwrap()]),
        "no eval.json",
    );
    std::fs::write(empty.path().join("eval.json"), b"{\"x\": 1}").unwrap();
    assert_clean_error(
        &cardc(&["report", empty.path().to_str().unwrap()]),
        "eval.json",
    );
}

#[test]
fn bad_eval_flags_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("missing.card");
    let m = m.to_str().unwrap();
    let ev = |extra: &[&str]| {
        let mut a = vec!["eval", "--model", m, "--data", "synthetic:50"];
        a.extend_from_slice(extra);
        cardc(&a)
    };
    assert_clean_error(&ev(&["--attack", "fgsm:abc"]), "fgsm:abc");
    assert_clean_error(&ev(&["--attack", "pgd-linf:8/255"]), "EPS:STEPS");
    assert_clean_error(&ev(&["--attack", "deepfool:1"]), "unknown attack");
    assert_clean_error(&ev(&["--corruptions", "fog2"]), "fog2");
    assert_clean_error(
        &ev(&["--corruptions", "all", "--severities", "0"]),
        "--severities",
    );
    assert_clean_error(
        &ev(&["--corruptions", "all", "--severities", "6"]),
        "--severities",
    );
    assert_clean_error(&ev(&[]), "missing.card");
    let deck = dir.path().join("d.deck");
    std::fs::write(&deck, b"x").unwrap();
    assert_clean_error(
        &cardc(&[
            "eval",
            "--model",
            deck.to_str().unwrap(),
            "--data",
            "synthetic:50",
        ]),
        "deck",
    );
}

#[test]
fn normalization_is_applied_inside_the_attack() {
    // The same net behind two normalizations that map pixels identically
    // (weights of the first layer rescaled) sees the same attack.
    let card = Card::load(trained_card()).unwrap();
    let ds = test_set(20);
    let px = pixels(&ds);
    let mut scaled = card.clone();
    let s = 2.0f32;
    scaled.normalization = Normalization {
        mean: card.normalization.mean.clone(),
        std: card.normalization.std.iter().map(|v| v * s).collect(),
    };
    let first = scaled
        .model
        .graph
        .nodes
        .iter()
        .position(|n| matches!(n.op, Op::Conv2d(_)))
        .unwrap();
    scaled.model.params[first][0]
        .data
        .iter_mut()
        .for_each(|w| *w *= s);
    let spec = AttackSpec::parse("fgsm:4/255").unwrap();
    let a = attack_batch(
        &card.model,
        &card.normalization,
        &px,
        &ds.labels,
        &spec,
        &mut Rng::new(0),
    )
    .unwrap();
    let b = attack_batch(
        &scaled.model,
        &scaled.normalization,
        &px,
        &ds.labels,
        &spec,
        &mut Rng::new(0),
    )
    .unwrap();
    let same = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (*x - *y).abs() < 1e-6)
        .count();
    assert!(same * 100 >= a.len() * 99, "{same} of {}", a.len());
}
