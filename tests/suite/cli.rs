//! The command line, end to end through the real binary: train → info →
//! eval on synthetic data, resume after a kill, commands not built yet, and
//! one-line errors for bad inputs.

use crate::common::{assert_clean_error, cardc, json};

use std::path::Path;
use std::process::Command;

/// A small, fast training run; `extra` flags override the defaults.
fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--arch",
        "conv4",
        "--width-mult",
        "0.25",
        "--data",
        "synthetic:300",
        "--epochs",
        "2",
        "--batch",
        "32",
        "--lr",
        "0.01",
        "--out",
        out,
        "--json",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn train_info_eval_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("m.card");
    let card_s = card.to_str().unwrap();
    let learn = [
        "--arch",
        "resnet20",
        "--data",
        "synthetic:1000",
        "--epochs",
        "5",
        "--lr",
        "0.05",
        "--schedule",
        "onecycle",
        "--val-split",
        "0.1",
    ];
    let rep = json(&cardc(&train_args(card_s, &learn)));
    assert!(card.exists());
    assert!(
        !dir.path().join("m.card.ckpt").exists(),
        "checkpoint left behind"
    );
    for k in [
        "accuracy",
        "epochs",
        "seconds",
        "images_per_second",
        "backend",
        "adapter",
        "sparsity",
    ] {
        assert!(rep.get(k).is_some(), "train --json lacks {k}: {rep}");
    }
    let acc = rep["accuracy"].as_f64().unwrap();
    // 10 balanced classes: a model that learned nothing sits near 0.1.
    assert!(acc > 0.18, "accuracy {acc} after 5 epochs");
    let hist = rep["history"].as_array().unwrap();
    assert_eq!(hist.len(), 5);
    let first = hist[0]["loss"].as_f64().unwrap();
    let last = hist[4]["loss"].as_f64().unwrap();
    assert!(last < first, "training loss went from {first} to {last}");
    assert!(hist[4]["val_accuracy"].as_f64().is_some());
    assert_eq!(rep["sparsity"].as_f64(), Some(0.0));

    let info = json(&cardc(&["info", card_s, "--json"]));
    for k in ["sparsity", "params", "bytes", "dense_f32_bytes", "layers"] {
        assert!(info.get(k).is_some(), "info --json lacks {k}");
    }
    let layer = &info["layers"][1];
    for k in ["name", "op", "sparsity", "bits", "bytes"] {
        assert!(layer.get(k).is_some(), "info layer lacks {k}: {layer}");
    }
    let text = cardc(&["info", card_s]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("conv1"));

    // Evaluating the saved card on the same test split reproduces the
    // accuracy the trainer measured.
    let ev = json(&cardc(&[
        "eval",
        "--model",
        card_s,
        "--data",
        "synthetic:1000",
        "--json",
    ]));
    let eacc = ev["accuracy"].as_f64().unwrap();
    assert!((eacc - acc).abs() < 1e-9, "eval {eacc} vs train {acc}");
    let ece = ev["ece"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ece));
    assert_eq!(ev["per_class"].as_array().unwrap().len(), 10);
}

fn weights(path: &Path) -> Vec<Vec<f32>> {
    let c = cardc::card::Card::load(path).expect("card loads");
    c.model
        .params
        .iter()
        .flatten()
        .map(|t| t.data.clone())
        .collect()
}

#[test]
fn resume_after_kill_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.card");
    let b = dir.path().join("b.card");
    let extra = ["--epochs", "3", "--seed", "5"];
    json(&cardc(&train_args(a.to_str().unwrap(), &extra)));

    // Start the same run, kill it once the first checkpoint exists.
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(train_args(b.to_str().unwrap(), &extra))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = dir.path().join("b.card.ckpt");
    let t = std::time::Instant::now();
    while !ckpt.exists() && t.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ckpt.exists() || b.exists(), "no checkpoint appeared");
    if !b.exists() {
        let mut resume = train_args(b.to_str().unwrap(), &extra);
        resume.push("--resume");
        json(&cardc(&resume));
    }
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.len(), wb.len());
    let differing = wa.iter().zip(&wb).filter(|(x, y)| x != y).count();
    assert_eq!(
        differing, 0,
        "{differing} parameter tensors differ after resume"
    );

    // A checkpoint of other settings is refused.
    let c = dir.path().join("c.card");
    std::fs::copy(dir.path().join("a.card"), dir.path().join("c.card.ckpt")).unwrap();
    let mut resume = train_args(c.to_str().unwrap(), &extra);
    resume.push("--resume");
    assert_clean_error(&cardc(&resume), "c.card.ckpt");
}

#[test]
fn commands_not_built_yet_say_so() {
    // One per line: each milestone removes its own as it lands.
    let pending: [&str; 0] = [];
    for cmd in pending {
        let o = cardc(&[cmd, "--whatever"]);
        assert_clean_error(&o, "not built yet");
    }
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    // Missing, empty and foreign cards.
    assert_clean_error(&cardc(&["info", &d("missing.card")]), "missing.card");
    std::fs::write(d("empty.card"), b"").unwrap();
    assert_clean_error(&cardc(&["info", &d("empty.card")]), "empty.card");
    std::fs::write(
        d("foreign.card"),
        b"\x89PNG\r\n\x1a\n0000000000000000000000",
    )
    .unwrap();
    assert_clean_error(&cardc(&["info", &d("foreign.card")]), "foreign.card");
    // Unknown architecture, bad data spec, bad flags.
    let out = d("x.card");
    let mut a = train_args(&out, &[]);
    a[2] = "resnet9000";
    assert_clean_error(&cardc(&a), "resnet9000");
    let mut a = train_args(&out, &[]);
    a[6] = "mnist:/nowhere";
    assert_clean_error(&cardc(&a), "mnist");
    let mut a = train_args(&out, &[]);
    a[6] = "cifar10:/nowhere/at/all";
    assert_clean_error(&cardc(&a), "/nowhere/at/all");
    assert_clean_error(
        &cardc(&train_args(&out, &["--val-split", "1.5"])),
        "--val-split",
    );
    assert_clean_error(
        &cardc(&train_args(&out, &["--schedule", "zigzag"])),
        "zigzag",
    );
    assert_clean_error(&cardc(&train_args(&out, &["--augment", "mixup"])), "mixup");
    assert_clean_error(&cardc(&train_args(&out, &["--backend", "tpu"])), "tpu");
    assert!(
        !dir.path().join("x.card").exists(),
        "failed run left an output"
    );
    // Unwritable output.
    let bad = "/proc/no/such/dir/x.card";
    assert_clean_error(&cardc(&train_args(bad, &["--epochs", "1"])), "x.card");
}
