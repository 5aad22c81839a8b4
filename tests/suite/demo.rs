//! `cardc demo --quick`, the README's first command, runs end to end.

use std::process::Command;

#[test]
fn quick_demo_runs_every_built_stage() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = Command::new(env!("CARGO_BIN_EXE_cardc"))
        .args(["demo", "--quick", "--json", "--out", out.to_str().unwrap()])
        .env(
            cardc::compile::object_cache::ENV,
            crate::common::object_cache(),
        )
        .output()
        .expect("runs cardc");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "demo failed: {err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON summary");
    let stages = v["stages"].as_array().unwrap();
    let status = |name: &str| {
        stages
            .iter()
            .find(|s| s["stage"] == name)
            .map(|s| s["status"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    for s in [
        "data",
        "train",
        "eval",
        "info",
        "prune",
        "corruptions",
        "deck",
        "compile+run host",
        "export onnx",
    ] {
        assert_eq!(status(s), "ok", "stage {s}: {v}");
    }
    // 10 classes: chance is 0.1; the quick demo's net clearly learns.
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(acc > 0.2, "demo accuracy {acc}");
    assert!(out.join("dense.card").exists());
    let sparse = cardc::card::Card::load(&out.join("lrr80.card")).expect("pruned card");
    assert!((sparse.model.sparsity() - 0.8).abs() < 1e-4);
    assert!(sparse.provenance.augment.starts_with("gaussian"));
    let deck = cardc::deck::Deck::load(&out.join("deck.deck")).expect("deck");
    assert_eq!(deck.members.len(), 2);
}
