//! CARD-Decks: the gate's picks in a controlled setup (Gaussian-trained card
//! for noise, AugMix-trained card for blur and low contrast), the `.deck`
//! container's round trip and refusals, and the `deck`, `info` and `eval`
//! commands on decks.

use crate::common::{assert_clean_error, cardc, cardc_json};
use cardc::card::{Card, CardError, Provenance};
use cardc::corrupt::corrupt_dataset;
use cardc::data::{Dataset, Normalization, Split, generate_synthetic};
use cardc::deck::{self, BuildConfig, Deck, GateKind, GateSettings, Metric, Scope};
use cardc::ir::models::{BuildOptions, build};
use cardc::model::Model;
use std::path::Path;

/// A small untrained conv4 card whose provenance names `augment` (the gate
/// reads only the provenance and the data, not the weights).
fn card(augment: &str, seed: u64) -> Card {
    let opts = BuildOptions {
        width_mult: 0.125,
        ..Default::default()
    };
    let model = Model::init(build("conv4", &opts).unwrap(), seed).unwrap();
    let classes = model.graph.classes();
    let mut c = Card::new(
        model,
        Normalization::cifar10(),
        (0..classes).map(|i| format!("class{i}")).collect(),
    );
    c.provenance = Provenance {
        method: "dense".into(),
        augment: augment.into(),
        ..Provenance::default()
    };
    c
}

fn gate(kind: GateKind, k: usize, metric: Metric, scope: Scope) -> GateSettings {
    GateSettings {
        kind,
        k,
        metric,
        scope,
    }
}

/// A deck of [gaussian, augmix] built on synthetic training images.
fn gaussian_augmix_deck(metric: Metric, scope: Scope) -> Deck {
    let train = generate_synthetic(300, Split::Train);
    let cfg = BuildConfig {
        gate: gate(GateKind::Spectral, 1, metric, scope),
        limit: 300,
        seed: 3,
        augment_of: Vec::new(),
        data_name: "synthetic:300".into(),
    };
    let cards = vec![
        ("gauss".to_string(), card("gaussian:0.1:0.5", 1)),
        ("augmix".to_string(), card("augmix", 2)),
    ];
    deck::build(cards, &train, &cfg).unwrap()
}

/// Fraction of `ds`'s images for which the gate chose member `m` (alone).
fn share(deck: &Deck, ds: &Dataset, m: usize) -> f64 {
    let images: Vec<&[u8]> = (0..ds.len()).map(|i| ds.image(i)).collect();
    let chosen = deck.decide(&images);
    chosen.iter().filter(|c| c.as_slice() == [m]).count() as f64 / ds.len() as f64
}

#[test]
fn gate_picks_the_gaussian_card_for_noise_and_the_augmix_card_for_blur_and_contrast() {
    let test = generate_synthetic(300, Split::Test); // 60 test images
    let noisy = corrupt_dataset(&test, "gaussian_noise", 3, 1).unwrap();
    let blurred = corrupt_dataset(&test, "defocus_blur", 3, 1).unwrap();
    let low_contrast = corrupt_dataset(&test, "contrast", 3, 1).unwrap();
    for metric in [Metric::L1, Metric::Cosine] {
        let d = gaussian_augmix_deck(metric, Scope::Input);
        let (g, a) = (share(&d, &noisy, 0), share(&d, &blurred, 1));
        let c = share(&d, &low_contrast, 1);
        assert!(g >= 0.9, "{metric}: gaussian card on noise {g}");
        assert!(a >= 0.9, "{metric}: augmix card on blur {a}");
        assert!(c >= 0.9, "{metric}: augmix card on low contrast {c}");
        // One decision per batch: all or nothing, and the right one.
        let b = gaussian_augmix_deck(metric, Scope::Batch);
        assert_eq!(share(&b, &noisy, 0), 1.0, "{metric}");
        assert_eq!(share(&b, &blurred, 1), 1.0, "{metric}");
    }
}

#[test]
fn signatures_are_shared_by_equal_augmentations_and_top_k_takes_both() {
    let train = generate_synthetic(100, Split::Train);
    let cfg = BuildConfig {
        gate: gate(GateKind::Spectral, 2, Metric::L1, Scope::Input),
        limit: 100,
        seed: 0,
        augment_of: vec![None, None, Some(cardc::data::Augment::AugMix), None],
        data_name: "synthetic:100".into(),
    };
    let cards = vec![
        ("g".to_string(), card("gaussian:0.1", 1)),
        ("a".to_string(), card("augmix", 2)),
        // Provenance says flipcrop, the override says AugMix.
        ("a".to_string(), card("flipcrop", 3)),
        ("g2".to_string(), card("gaussian:0.1", 4)),
    ];
    let d = deck::build(cards, &train, &cfg).unwrap();
    assert_eq!(d.members[2].name, "a#2");
    assert_eq!(d.members[2].augment, "augmix");
    assert_eq!(d.members[1].signature, d.members[2].signature);
    assert_eq!(d.members[0].signature, d.members[3].signature);
    let noisy = corrupt_dataset(
        &generate_synthetic(100, Split::Test),
        "gaussian_noise",
        4,
        0,
    )
    .unwrap();
    let images: Vec<&[u8]> = (0..noisy.len()).map(|i| noisy.image(i)).collect();
    let chosen = d.decide(&images);
    let both = chosen.iter().filter(|c| c.as_slice() == [0, 3]).count();
    assert!(both * 10 >= noisy.len() * 9, "{chosen:?}");
}

#[test]
fn unknown_augmentations_are_refused_by_the_spectral_gate_only() {
    let train = generate_synthetic(50, Split::Train);
    let mut cfg = BuildConfig {
        gate: gate(GateKind::Spectral, 1, Metric::L1, Scope::Input),
        limit: 20,
        seed: 0,
        augment_of: Vec::new(),
        data_name: "synthetic:50".into(),
    };
    let cards = || {
        vec![
            ("known".to_string(), card("augmix", 1)),
            ("imported".to_string(), card("", 2)),
        ]
    };
    let e = deck::build(cards(), &train, &cfg).unwrap_err().to_string();
    assert!(
        e.contains("card 2 ('imported')") && e.contains("--augment-of 2="),
        "{e}"
    );
    cfg.gate = gate(GateKind::Average, 2, Metric::L1, Scope::Input);
    let d = deck::build(cards(), &train, &cfg).unwrap();
    assert_eq!(d.members[1].augment, "unknown");
    let images: Vec<&[u8]> = (0..3).map(|i| train.image(i)).collect();
    assert!(d.decide(&images).iter().all(|c| c == &[0, 1]));
}

#[test]
fn decks_round_trip_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = gaussian_augmix_deck(Metric::Cosine, Scope::Batch);
    // A pruned member keeps its packed encoding through the deck.
    let w = d.members[0].card.model.prunable()[0];
    let t = &mut d.members[0].card.model.params[w.0][w.1];
    let mask: Vec<bool> = (0..t.data.len()).map(|i| i % 3 == 0).collect();
    t.state = cardc::model::WeightState::Masked { mask };
    t.apply_mask();
    d.metrics.insert("accuracy".into(), 0.5);
    let p = dir.path().join("d.deck");
    d.save(&p).unwrap();
    let back = Deck::load(&p).unwrap();
    assert_eq!(back, d);

    let bytes = std::fs::read(&p).unwrap();
    let bad = dir.path().join("bad.deck");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    std::fs::write(&bad, &flipped).unwrap();
    assert!(matches!(Deck::load(&bad), Err(CardError::Checksum { .. })));
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(Deck::load(&bad), Err(CardError::Truncated { .. })));
    let c = dir.path().join("c.card");
    d.members[0].card.save(&c).unwrap();
    let e = Deck::load(&c).unwrap_err().to_string();
    assert!(e.contains("is a card, not a deck"), "{e}");
    assert!(
        Card::load(&p)
            .unwrap_err()
            .to_string()
            .contains("is a deck, not a card")
    );

    // An inconsistent deck is refused before anything is written.
    let mut wrong = d.clone();
    wrong.members[1].signature.pop();
    let out = dir.path().join("wrong.deck");
    assert!(matches!(wrong.save(&out), Err(CardError::Invalid { .. })));
    assert!(!out.exists());
}

fn save_cards(dir: &Path) -> (String, String, String) {
    let g = dir.join("gauss.card");
    let a = dir.join("augmix.card");
    let u = dir.join("unknown.card");
    card("gaussian:0.1:0.5", 1).save(&g).unwrap();
    card("augmix", 2).save(&a).unwrap();
    card("", 3).save(&u).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    (s(&g), s(&a), s(&u))
}

/// `cardc deck` of cards `g` and `a` (top-1 spectral gate) into
/// `dir/d.deck`: its path and the command's JSON.
fn top1_deck(dir: &Path, g: &str, a: &str) -> (String, serde_json::Value) {
    let out = dir.join("d.deck");
    let o = out.to_str().unwrap().to_string();
    let v = cardc_json(&[
        "deck",
        "--cards",
        g,
        a,
        "--data",
        "synthetic:100",
        "--out",
        &o,
        "--k",
        "1",
        "--limit",
        "60",
        "--json",
    ]);
    (o, v)
}

#[test]
fn deck_info_and_eval_commands() {
    let dir = tempfile::tempdir().unwrap();
    let (g, a, u) = save_cards(dir.path());
    let (o, v) = top1_deck(dir.path(), &g, &a);
    let o = o.as_str();
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["members"][0]["augment"], "gaussian:0.1:0.5");
    assert_eq!(v["gate"]["kind"], "spectral");
    assert!(
        v["members"][0]["signature"]["bands"]["high"]
            .as_f64()
            .unwrap()
            > 0.1
    );

    let info = cardc_json(&["info", o, "--json"]);
    assert_eq!(info["kind"], "deck");
    assert_eq!(info["members"][1]["name"], "augmix");
    assert_eq!(info["provenance"]["images"], 60);
    let text = cardc(&["info", o]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("top-1 by l1"));

    let e = cardc_json(&[
        "eval",
        "--model",
        o,
        "--data",
        "synthetic:100",
        "--limit",
        "12",
        "--corruptions",
        "gaussian_noise,contrast",
        "--severities",
        "3",
        "--json",
    ]);
    let gp = &e["gate_picks"];
    assert_eq!(gp["members"][0], "gauss");
    let cell = |c: &str, m: &str| gp["corruptions"][c]["3"][m].as_f64().unwrap();
    assert!(cell("gaussian_noise", "gauss") > 0.5, "{gp}");
    assert!(cell("contrast", "augmix") > 0.5, "{gp}");
    let clean: f64 = ["gauss", "augmix"]
        .iter()
        .map(|m| gp["clean"][m].as_f64().unwrap())
        .sum();
    assert!((clean - 1.0).abs() < 1e-9, "{gp}");
    assert!(e["mean_corruption_accuracy"].as_f64().is_some());

    // The ungated deck: every card answers every image.
    let avg = dir.path().join("avg.deck");
    let av = avg.to_str().unwrap();
    cardc_json(&[
        "deck",
        "--cards",
        &g,
        &a,
        &u,
        "--data",
        "synthetic:50",
        "--out",
        av,
        "--gate",
        "average",
        "--json",
    ]);
    let e = cardc_json(&[
        "eval",
        "--model",
        av,
        "--data",
        "synthetic:50",
        "--limit",
        "5",
        "--json",
    ]);
    for m in ["gauss", "augmix", "unknown"] {
        assert_eq!(e["gate_picks"]["clean"][m], 1.0);
    }

    // Refusals: one line, naming what is wrong.
    assert_clean_error(
        &cardc(&[
            "deck",
            "--cards",
            &g,
            &u,
            "--data",
            "synthetic:50",
            "--out",
            o,
        ]),
        "--augment-of 2=",
    );
    assert_clean_error(
        &cardc(&[
            "deck",
            "--cards",
            &g,
            &a,
            "--data",
            "synthetic:50",
            "--out",
            o,
            "--k",
            "3",
        ]),
        "--k 3",
    );
    assert_clean_error(
        &cardc(&[
            "deck",
            "--cards",
            &g,
            "--data",
            "synthetic:50",
            "--out",
            o,
            "--metric",
            "l2",
        ]),
        "--metric",
    );
    assert_clean_error(
        &cardc(&[
            "deck",
            "--cards",
            &g,
            "--data",
            "synthetic:50",
            "--out",
            o,
            "--augment-of",
            "2=augmix",
        ]),
        "card 2 does not exist",
    );
    assert_clean_error(
        &cardc(&[
            "eval",
            "--model",
            o,
            "--data",
            "synthetic:50",
            "--attack",
            "fgsm:2/255",
        ]),
        "not supported",
    );
}

#[test]
fn deck_output_is_the_mean_softmax_of_the_chosen_cards() {
    use cardc::backend::{Backend, CpuBackend};
    use cardc::data::{Augment, make_batch};
    let mut d = gaussian_augmix_deck(Metric::L1, Scope::Input);
    let test = generate_synthetic(100, Split::Test);
    let mixed = corrupt_dataset(&test, "gaussian_noise", 5, 0).unwrap();
    // Half noisy, half clean-ish (blurred) images: both cards get work.
    let blurred = corrupt_dataset(&test, "defocus_blur", 5, 0).unwrap();
    let mut ds = mixed.subset(&[0, 1, 2, 3]);
    ds.images
        .extend_from_slice(&blurred.subset(&[4, 5, 6, 7]).images);
    ds.labels.extend_from_slice(&blurred.labels[4..8]);
    let idx: Vec<usize> = (0..ds.len()).collect();
    let mut backend = CpuBackend;
    let probs = |b: &mut CpuBackend, m: usize, d: &Deck| {
        let c = &d.members[m].card;
        let (x, _) = make_batch(&ds, &idx, &c.normalization, Augment::None, 0);
        b.infer(&c.model, &x).unwrap().softmax_rows().data
    };
    let (p0, p1) = (probs(&mut backend, 0, &d), probs(&mut backend, 1, &d));
    let k = d.classes();
    let out = d.run_batch(&mut backend, &ds, &idx).unwrap();
    assert!(out.chosen.iter().any(|c| c == &[0]) && out.chosen.iter().any(|c| c == &[1]));
    for (r, chosen) in out.chosen.iter().enumerate() {
        let want = if chosen == &[0] { &p0 } else { &p1 };
        for j in 0..k {
            let (a, b) = (out.probabilities[r * k + j], want[r * k + j]);
            assert!((a - b).abs() < 1e-6, "image {r} class {j}: {a} vs {b}");
        }
    }
    d.gate = gate(GateKind::Average, 2, Metric::L1, Scope::Input);
    let out = d.run_batch(&mut backend, &ds, &idx).unwrap();
    for (i, v) in out.probabilities.iter().enumerate() {
        let want = 0.5 * (p0[i] + p1[i]);
        assert!((v - want).abs() < 1e-6, "{i}: {v} vs {want}");
    }
    let p = d.predict(&mut backend, &ds, 3).unwrap();
    assert_eq!(p.gate_picks, vec![ds.len(), ds.len()]);
    assert_eq!(p.predicted.len(), ds.len());
}

/// Builds the C gate of `deck` in `dir` (which holds the gate sources and
/// main.c), runs it on `images` and returns its choices.
fn run_c_gate(dir: &Path, deck: &Deck, images: &[u8]) -> Vec<Vec<usize>> {
    use std::io::Write;
    std::fs::write(
        dir.join("tables.c"),
        cardc::compile::gate::gate_tables_c(deck),
    )
    .unwrap();
    let exe = dir.join("gate");
    let cc = std::process::Command::new("cc")
        .current_dir(dir)
        .args([
            "-std=c99",
            "-O2",
            "-Wall",
            "-Werror",
            "main.c",
            "cardc_gate.c",
            "tables.c",
            "-lm",
            "-o",
        ])
        .arg(&exe)
        .output()
        .expect("runs cc");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let mut child = std::process::Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(images).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect())
        .collect()
}

#[test]
fn the_c_gate_chooses_the_same_cards_as_the_reference_gate() {
    use cardc::compile::gate::GATE_SOURCES;
    let dir = tempfile::tempdir().unwrap();
    let train = generate_synthetic(100, Split::Train);
    let test = generate_synthetic(100, Split::Test);
    // Clean, noisy and blurred inputs.
    let mut ds = test.subset(&[0, 1, 2, 3, 4, 5]);
    for (name, sev) in [("gaussian_noise", 2), ("defocus_blur", 3), ("contrast", 4)] {
        let c = corrupt_dataset(&test.subset(&[6, 7, 8, 9, 10, 11]), name, sev, 0).unwrap();
        ds.images.extend_from_slice(&c.images);
        ds.labels.extend_from_slice(&c.labels);
    }
    // Reads images of the gate's size from stdin, prints the chosen cards.
    let main = r#"
#include <stdio.h>
#include "cardc_gate.h"
extern const cardc_gate cardc_deck_gate_tables;
static uint8_t img[3 * 32 * 32];
static float work[3 * 3 * 32 * 32 + 2 * 32 + 8];
int main(void) {
  const cardc_gate *g = &cardc_deck_gate_tables;
  const size_t n = (size_t)(g->c * g->h * g->w);
  int32_t chosen[8];
  while (fread(img, 1, n, stdin) == n) {
    int32_t k = cardc_gate_select(g, img, work, chosen);
    for (int32_t i = 0; i < k; i++) printf("%d%s", (int)chosen[i], i + 1 < k ? " " : "\n");
  }
  return 0;
}
"#;
    for (name, text) in GATE_SOURCES {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("main.c"), main).unwrap();
    // Power-of-two sides take the real-input FFT, others the direct DFT:
    // 1x6x10 and 2x8x16 decks with made-up spectra check both away from
    // the square 32x32 case.
    for input in [[1, 6, 10], [2, 8, 16]] {
        let len: usize = input.iter().product();
        let mut odd = gaussian_augmix_deck(Metric::L1, Scope::Input);
        let opts = BuildOptions {
            width_mult: 0.125,
            ..Default::default()
        };
        let desc = cardc::ir::models::ModelDesc {
            input,
            fc: vec![],
            ..cardc::ir::models::load_desc("conv4").unwrap()
        };
        let mut rng = cardc::rng::Rng::new(5);
        let mut noise =
            |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| s * rng.normal()).collect() };
        for (i, m) in odd.members.iter_mut().enumerate() {
            let g = cardc::ir::models::build_from_desc(&desc, &opts).unwrap();
            m.card.model = Model::init(g, i as u64).unwrap();
            m.signature = noise(len, 1.0);
        }
        odd.reference = noise(len, 1.0).iter().map(|v| v - 3.0).collect();
        let odd_images: Vec<u8> = noise(len * 12, 100.0)
            .iter()
            .map(|v| (v + 128.0).clamp(0.0, 255.0) as u8)
            .collect();
        // Images 0 and 1 are the signatures of members 0 and 1: both are
        // chosen.
        let plan = cardc::deck::SpectrumPlan::new(input[0], input[1], input[2]);
        for m in 0..2 {
            let dev = odd.deviation(&plan, &odd_images[m * len..(m + 1) * len]);
            odd.members[m].signature = dev;
        }
        let want = odd.decide(&odd_images.chunks(len).collect::<Vec<_>>());
        assert_eq!(run_c_gate(dir.path(), &odd, &odd_images), want, "{input:?}");
        assert!(want.iter().any(|c| c != &want[0]), "{want:?}");
    }
    for metric in [Metric::L1, Metric::Cosine] {
        let cfg = BuildConfig {
            gate: gate(GateKind::Spectral, 2, metric, Scope::Input),
            limit: 100,
            seed: 1,
            augment_of: Vec::new(),
            data_name: "synthetic:100".into(),
        };
        let cards = vec![
            ("g".to_string(), card("gaussian:0.08", 1)),
            ("a".to_string(), card("augmix", 2)),
            ("clean".to_string(), card("flipcrop", 3)),
        ];
        let d = deck::build(cards, &train, &cfg).unwrap();
        let c_choice = run_c_gate(dir.path(), &d, &ds.images);
        let images: Vec<&[u8]> = (0..ds.len()).map(|i| ds.image(i)).collect();
        let rust_choice = d.decide(&images);
        assert_eq!(c_choice, rust_choice, "{metric}");
        // The inputs exercise more than one choice.
        assert!(
            rust_choice.iter().any(|c| c != &rust_choice[0]),
            "{rust_choice:?}"
        );
    }
}

/// Clean, noisy and blurred synthetic test images.
fn mixed_inputs(n: usize) -> Dataset {
    let test = generate_synthetic(15 * n, Split::Test);
    let idx = |a: usize| (a * n..(a + 1) * n).collect::<Vec<_>>();
    let mut ds = test.subset(&idx(0));
    for (a, (name, sev)) in [("gaussian_noise", 3), ("defocus_blur", 3)]
        .iter()
        .enumerate()
    {
        let c = corrupt_dataset(&test.subset(&idx(a + 1)), name, *sev, 0).unwrap();
        ds.images.extend_from_slice(&c.images);
        ds.labels.extend_from_slice(&c.labels);
    }
    ds
}

#[test]
fn compiled_decks_agree_with_the_reference_deck() {
    use cardc::compile::{FormatChoice, Options, artifact, deck::compile_deck};
    let ds = mixed_inputs(8);
    let opts = Options {
        target: "host".into(),
        format: FormatChoice::Auto,
        max_flash: None,
        max_ram: None,
    };
    let mut spectral = gaussian_augmix_deck(Metric::Cosine, Scope::Batch);
    let mut average = spectral.clone();
    average.gate = gate(GateKind::Average, 2, Metric::L1, Scope::Input);
    // A third member with its own (wider) architecture: the shared arena
    // and scratch buffers must fit the largest member.
    let wide = BuildOptions {
        width_mult: 0.25,
        ..Default::default()
    };
    let mut third = spectral.members[0].clone();
    third.name = "wide".into();
    third.card.model = Model::init(build("conv4", &wide).unwrap(), 9).unwrap();
    spectral.members.push(third);
    spectral.gate.k = 2;
    for (name, deck) in [("spectral", &spectral), ("average", &average)] {
        let dir = tempfile::tempdir().unwrap();
        let report = compile_deck(deck, &opts, dir.path()).unwrap();
        let d = report.deck.as_ref().unwrap();
        assert_eq!(d.members.len(), deck.members.len(), "{name}");
        let flash: u64 = d.members.iter().map(|m| m.flash_bytes).sum();
        assert_eq!(report.flash_bytes, flash + d.gate_flash_bytes, "{name}");
        let arena = d.members.iter().map(|m| m.arena_bytes).max().unwrap();
        assert_eq!(report.arena_bytes, arena, "{name}");
        let r = artifact::evaluate(dir.path(), &ds).unwrap();
        assert_eq!(r.argmax_agreement, 1.0, "{name}: {r:?}");
        assert!(r.max_abs_logit_error < 1e-5, "{name}: {r:?}");
        assert_eq!(r.gate_agreement, Some(1.0), "{name}: {r:?}");
        assert!(r.gate_latency_ms.is_some_and(|t| t >= 0.0), "{name}");
        assert!(r.member_latency_ms.is_some_and(|t| t > 0.0), "{name}");
        // The outputs are probabilities: each row sums to one.
        let out = artifact::execute(dir.path(), &ds.images).unwrap();
        for row in out.logits.chunks(report.classes) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
        }
        assert!(out.picks.iter().all(|p| p.len() == d.k), "{name}");
        if name == "spectral" {
            // The gate made more than one choice on these inputs.
            assert!(
                out.picks.iter().any(|p| p != &out.picks[0]),
                "{:?}",
                out.picks
            );
        }
    }
}

#[test]
fn compile_and_run_commands_take_decks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, _) = save_cards(dir.path());
    let (d, _) = top1_deck(dir.path(), &a, &b);
    let d = d.as_str();
    let art = dir.path().join("art");
    let art_s = art.to_str().unwrap();
    let r = cardc_json(&[
        "compile", "--model", d, "--target", "host", "--out", art_s, "--json",
    ]);
    assert_eq!(r["deck"]["members"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["deck"]["k"], 1, "{r}");
    assert!(art.join("model.deck").is_file() && !art.join("model.card").exists());
    let run = cardc_json(&["run", art_s, "--data", "synthetic:30", "--json"]);
    assert_eq!(run["argmax_agreement"], 1.0, "{run}");
    assert_eq!(run["gate_agreement"], 1.0, "{run}");
    // Recompiling a card into the same directory replaces the deck.
    let r = cardc_json(&[
        "compile", "--model", &a, "--target", "host", "--out", art_s, "--json",
    ]);
    assert!(r.get("deck").is_none(), "{r}");
    assert!(!art.join("model.deck").exists() && art.join("model.card").is_file());
    let run = cardc_json(&["run", art_s, "--data", "synthetic:10", "--json"]);
    assert!(run.get("gate_agreement").is_none(), "{run}");
    // A RAM budget the deck cannot meet is refused with the numbers.
    assert_clean_error(
        &cardc(&["compile", "--model", d, "--out", art_s, "--max-ram", "1000"]),
        "--max-ram 1000: the deck needs",
    );
}
