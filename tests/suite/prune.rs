//! `cardc prune`, end to end through the real binary on synthetic data:
//! every method reaches its target sparsity exactly and learns, BiProp
//! stores two values per layer, masks stay put, a killed LTH run resumes to
//! the same card, and bad flags fail with one line.

use crate::common::{cardc, json};

use cardc::card::{Card, StoredModel, StoredTensor};
use cardc::model::WeightState;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A small plain net that learns the synthetic task in a few epochs.
const TINY: &str = "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c16\", \"c16\", \"M\", \"c32\", \"M\", \"c32\", \"M\"]\nfc = [64]\n";

struct Fixture {
    dir: tempfile::TempDir,
    arch: String,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let arch = dir.path().join("tiny.toml");
        std::fs::write(&arch, TINY).unwrap();
        Fixture {
            arch: arch.to_str().unwrap().to_string(),
            dir,
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const COMMON: [&str; 8] = [
    "--data",
    "synthetic:1000",
    "--batch",
    "32",
    "--schedule",
    "onecycle",
    "--json",
    "--seed=3",
];

fn prune(args: &[&str]) -> Output {
    let mut v = vec!["prune"];
    v.extend_from_slice(args);
    v.extend_from_slice(&COMMON);
    cardc(&v)
}

/// Zeros among all conv/linear weights, and their count.
fn zeros(card: &Card) -> (usize, usize) {
    let m = &card.model;
    m.prunable().iter().fold((0, 0), |(z, n), &(i, k)| {
        let t = &m.params[i][k];
        (z + t.zeros(), n + t.data.len())
    })
}

fn assert_exact(card: &Card, sparsity: f64, layers: usize) {
    let (z, n) = zeros(card);
    let want = (sparsity * n as f64).round() as usize;
    assert!(
        z >= want && z - want <= layers,
        "{} zeros of {n}, wanted {want}",
        z
    );
    // Every pruned tensor carries its mask, and masked values are zero.
    for (i, k) in card.model.prunable() {
        let t = &card.model.params[i][k];
        if let Some(m) = t.mask() {
            let eff = t.effective();
            assert!(m.iter().zip(eff.iter()).all(|(&keep, &v)| keep || v == 0.0));
        }
    }
}

fn train_dense(f: &Fixture) -> PathBuf {
    let out = f.path("dense.card");
    let mut v = vec![
        "train",
        "--arch",
        &f.arch,
        "--epochs",
        "5",
        "--lr",
        "0.02",
        "--out",
        out.to_str().unwrap(),
    ];
    v.extend_from_slice(&COMMON);
    json(&cardc(&v));
    out
}

#[test]
fn methods_from_a_trained_card_hit_the_target_and_learn() {
    let f = Fixture::new();
    let dense = train_dense(&f);
    let dense_s = dense.to_str().unwrap();
    for (method, scope, extra) in [
        ("ft", "global", vec!["--epochs", "2"]),
        ("gmp", "layerwise", vec!["--epochs", "3"]),
        (
            "lth",
            "global",
            vec!["--epochs", "2", "--rounds", "2", "--rewind-iter", "10"],
        ),
        ("lrr", "global", vec!["--epochs", "2", "--rounds", "2"]),
    ] {
        let out = f.path(&format!("{method}.card"));
        let mut args = vec![
            "--method",
            method,
            "--from",
            dense_s,
            "--sparsity",
            "0.9",
            "--scope",
            scope,
            "--lr",
            "0.02",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(&extra);
        let rep = json(&prune(&args));
        let card = Card::load(&out).unwrap();
        assert_exact(&card, 0.9, 6);
        let acc = rep["accuracy"].as_f64().unwrap();
        assert!(acc > 0.2, "{method}: accuracy {acc}");
        assert_eq!(card.provenance.method, method);
        if scope == "layerwise" {
            for (i, k) in card.model.prunable() {
                let t = &card.model.params[i][k];
                let s = t.zeros() as f64 / t.data.len() as f64;
                assert!(
                    (s - 0.9).abs() <= 1.0 / t.data.len() as f64 + 1e-9,
                    "{method} layer sparsity {s}"
                );
            }
        }
    }
}

#[test]
fn methods_from_scratch_hit_the_target_and_learn() {
    let f = Fixture::new();
    // Edge-popup on frozen random weights works best near half sparsity
    // (its paper's finding) and learns slowly on a net this small.
    for (method, sparsity, epochs, floor) in [
        ("ep", "0.5", "6", 0.15),
        ("biprop", "0.8", "5", 0.15),
        ("rigl", "0.8", "4", 0.2),
    ] {
        let out = f.path(&format!("{method}.card"));
        let rep = json(&prune(&[
            "--method",
            method,
            "--arch",
            &f.arch,
            "--sparsity",
            sparsity,
            "--epochs",
            epochs,
            "--rigl-interval",
            "20",
            "--out",
            out.to_str().unwrap(),
        ]));
        let card = Card::load(&out).unwrap();
        assert_exact(&card, sparsity.parse().unwrap(), 6);
        let acc = rep["accuracy"].as_f64().unwrap();
        assert!(acc > floor, "{method}: accuracy {acc}");
        if method == "biprop" {
            // Effective weights are exactly {−α, 0, +α} per layer and the
            // card stores signs + mask + α, not floats.
            let stored = StoredModel::from_model(&card.model);
            for (i, k) in card.model.prunable() {
                let t = &card.model.params[i][k];
                let WeightState::Binary { alpha, .. } = t.state else {
                    panic!("biprop layer {i} is not binary");
                };
                assert!(alpha > 0.0);
                let eff = t.effective();
                assert!(eff.iter().all(|&v| v == 0.0 || v == alpha || v == -alpha));
                assert!(eff.contains(&alpha) && eff.contains(&-alpha));
                assert!(matches!(
                    stored.params[i][k].data,
                    StoredTensor::Binary { .. } | StoredTensor::BinaryRice { .. }
                ));
            }
        } else {
            // EP keeps the random weights it started with: non-affine BN.
            let bn_has_gamma = card
                .model
                .graph
                .nodes
                .iter()
                .any(|n| matches!(&n.op, cardc::ir::Op::BatchNorm(b) if b.affine));
            assert_eq!(bn_has_gamma, method == "rigl", "{method}: affine BN");
        }
    }
}

fn weights(path: &Path) -> Vec<Vec<f32>> {
    let c = Card::load(path).expect("card loads");
    c.model
        .params
        .iter()
        .flatten()
        .map(|t| t.effective().into_owned())
        .collect()
}

#[test]
fn killed_lth_run_resumes_to_the_same_card() {
    let f = Fixture::new();
    let args = |out: &Path| -> Vec<String> {
        [
            "prune",
            "--method",
            "lth",
            "--arch",
            &f.arch,
            "--sparsity",
            "0.7",
            "--rounds",
            "2",
            "--epochs",
            "1",
            "--rewind-iter",
            "5",
            "--data",
            "synthetic:400",
            "--batch",
            "32",
            "--seed",
            "9",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let a = f.path("a.card");
    let o = Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(args(&a))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = f.path("b.card");
    let ckpt = f.path("b.card.ckpt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(args(&b))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !ckpt.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    if !b.exists() {
        let mut resume = args(&b);
        resume.push("--resume".into());
        let o = Command::new(env!("CARGO_BIN_EXE_cardc"))
            .args(&resume)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(weights(&a), weights(&b), "resumed LTH card differs");
}

#[test]
fn bad_prune_flags_fail_with_one_line() {
    let f = Fixture::new();
    let out = f.path("x.card");
    let out_s = out.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--method", "magic", "--arch", &f.arch, "--sparsity", "0.5"],
            "magic",
        ),
        (
            vec!["--method", "ep", "--arch", &f.arch, "--sparsity", "1.0"],
            "--sparsity",
        ),
        (
            vec!["--method", "ep", "--arch", &f.arch, "--sparsity", "-0.1"],
            "--sparsity",
        ),
        (
            vec!["--method", "ft", "--arch", &f.arch, "--sparsity", "0.5"],
            "--from",
        ),
        (vec!["--method", "ep", "--sparsity", "0.5"], "--arch"),
        (
            vec![
                "--method",
                "lth",
                "--from",
                "/nowhere/m.card",
                "--sparsity",
                "0.5",
            ],
            "/nowhere/m.card",
        ),
        (
            vec![
                "--method",
                "ep",
                "--arch",
                &f.arch,
                "--sparsity",
                "0.5",
                "--scope",
                "diagonal",
            ],
            "diagonal",
        ),
        (
            vec![
                "--method",
                "lrr",
                "--arch",
                &f.arch,
                "--sparsity",
                "0.5",
                "--rounds",
                "0",
            ],
            "--rounds",
        ),
    ] {
        let mut v = args.clone();
        v.extend_from_slice(&["--out", out_s, "--epochs", "1"]);
        let o = prune(&v);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        let lines: Vec<&str> = e.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {e}");
        assert!(e.contains(needle), "{args:?}: expected {needle} in {e}");
        assert!(!out.exists());
    }
}

#[test]
fn adversarial_training_records_held_out_robust_accuracy() {
    let f = Fixture::new();
    let out = f.path("adv.card");
    let rep = json(&cardc(&[
        "train",
        "--arch",
        &f.arch,
        "--data",
        "synthetic:300",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--lr",
        "0.02",
        "--val-split",
        "0.2",
        "--adversarial",
        "pgd-linf:4/255:2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    let hist = rep["history"].as_array().unwrap();
    for h in hist {
        let r = h["val_robust_accuracy"]
            .as_f64()
            .expect("robust accuracy per epoch");
        let v = h["val_accuracy"].as_f64().unwrap();
        assert!((0.0..=v + 1e-9).contains(&r), "robust {r} > clean {v}");
    }
    let card = Card::load(&out).unwrap();
    assert!(
        card.provenance
            .notes
            .iter()
            .any(|n| n.contains("adversarial training: pgd-linf")),
        "{:?}",
        card.provenance.notes
    );
    let o = cardc(&[
        "train",
        "--arch",
        &f.arch,
        "--data",
        "synthetic:300",
        "--adversarial",
        "pgd:oops",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--adversarial"));
}

#[test]
fn advprop_trains_with_auxiliary_batchnorm_and_refuses_bad_combinations() {
    let f = Fixture::new();
    let out = f.path("advprop.card");
    let base = [
        "--arch",
        f.arch.as_str(),
        "--data",
        "synthetic:200",
        "--epochs",
        "1",
        "--batch",
        "32",
        "--lr",
        "0.02",
    ];
    let mut args = vec!["train"];
    args.extend(base);
    args.extend([
        "--adversarial",
        "fgsm:4/255",
        "--advprop",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    let rep = json(&cardc(&args));
    assert!(rep["history"][0]["loss"].as_f64().unwrap().is_finite());
    let card = Card::load(&out).unwrap();
    assert!(
        card.provenance.notes.iter().any(|n| n.contains("advprop")),
        "{:?}",
        card.provenance.notes
    );
    // The checkpoint (with the auxiliary BatchNorm) is gone once the card exists.
    assert!(!f.path("advprop.card.ckpt").exists());

    let bad = f.path("bad.card");
    let mut args = vec!["train"];
    args.extend(base);
    args.extend(["--advprop", "--out", bad.to_str().unwrap()]);
    crate::common::assert_clean_error(&cardc(&args), "--advprop needs --adversarial");
    let o = cardc(&[
        "prune",
        "--method",
        "ep",
        "--arch",
        &f.arch,
        "--data",
        "synthetic:200",
        "--sparsity",
        "0.5",
        "--adversarial",
        "fgsm:4/255",
        "--advprop",
        "--out",
        bad.to_str().unwrap(),
    ]);
    crate::common::assert_clean_error(&o, "--advprop works with ft, gmp, lth and lrr");
    assert!(!bad.exists());
}
