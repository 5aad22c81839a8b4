//! Post-training quantization: int8 error bounds and masks, calibrated
//! scales, f16/int8 cards that survive save → load → save bit-identically
//! at about 1/2 and 1/4 of the f32 bytes, old format versions refused, the
//! `info` numbers of quantized, masked and binary layers, and the
//! `cardc quantize` command end to end on a briefly trained net.

use crate::common::cardc_json;

use cardc::card::{Card, summary};
use cardc::compress::quantize::{Format, ScaleRule, quantize, stored_bytes};
use cardc::data::{Augment, DataSpec, Normalization, Split, load, make_batch};
use cardc::ir::models::{BuildOptions, build};
use cardc::model::{Model, Precision, WeightState};
use cardc::rng::Rng;

fn small(arch: &str, seed: u64) -> Model {
    let opts = BuildOptions {
        width_mult: 0.25,
        ..Default::default()
    };
    Model::init(build(arch, &opts).unwrap(), seed).unwrap()
}

fn card_of(model: Model) -> Card {
    let classes = model.graph.classes();
    Card::new(
        model,
        Normalization {
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
        },
        (0..classes).map(|i| format!("c{i}")).collect(),
    )
}

/// Masks every prunable weight, keeping about `keep` of them.
fn mask_all(m: &mut Model, keep: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    for (i, k) in m.prunable() {
        let t = &mut m.params[i][k];
        let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < keep).collect();
        t.state = WeightState::Masked { mask };
        t.apply_mask();
    }
}

fn calibration_batch(n: usize) -> cardc::tensor::Tensor {
    let ds = load(&DataSpec::Synthetic(n), Split::Train).unwrap();
    let idx: Vec<usize> = (0..n).collect();
    make_batch(
        &ds,
        &idx,
        &Normalization::from_dataset(&ds),
        Augment::None,
        0,
    )
    .0
}

#[test]
fn int8_values_are_within_half_a_step_and_masks_survive() {
    let mut m = small("conv4", 1);
    mask_all(&mut m, 0.3, 2);
    let before = m.clone();
    quantize(&mut m, Format::Int8, ScaleRule::MaxAbs, None, 0).unwrap();
    for (i, k) in m.prunable() {
        let (a, b) = (&before.params[i][k], &m.params[i][k]);
        assert_eq!(a.mask(), b.mask(), "layer {i}: mask changed");
        let Precision::Int8 { scales } = &b.precision else {
            panic!("layer {i} not tagged int8: {:?}", b.precision)
        };
        assert_eq!(scales.len(), b.shape[0]);
        let per = b.data.len() / scales.len();
        let eff = a.effective();
        for (j, (&q, &w)) in b.data.iter().zip(eff.iter()).enumerate() {
            let s = scales[j / per];
            assert!(
                (q - w).abs() <= s / 2.0 * 1.0001,
                "layer {i} [{j}]: {w} -> {q}"
            );
            let steps = q / s;
            assert!((steps - steps.round()).abs() < 1e-3, "not on the grid");
            if a.mask().is_some_and(|mk| !mk[j]) {
                assert_eq!(q, 0.0);
            }
        }
    }
    // Biases and BatchNorm stay f32.
    for (node, ts) in m.params.iter().enumerate() {
        for (k, t) in ts.iter().enumerate() {
            if !m.prunable().contains(&(node, k)) {
                assert_eq!(t.precision, Precision::F32);
                assert_eq!(t.data, before.params[node][k].data);
            }
        }
    }
}

#[test]
fn quantized_cards_round_trip_bit_identically_at_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    for masked in [false, true] {
        let mut base = small("conv4", 3);
        if masked {
            mask_all(&mut base, 0.5, 4);
        }
        let f32_bytes = stored_bytes(&base);
        let weight_elems: usize = base
            .prunable()
            .iter()
            .map(|&(i, k)| base.params[i][k].data.len())
            .sum();
        let channels: usize = base
            .prunable()
            .iter()
            .map(|&(i, k)| base.params[i][k].shape[0])
            .sum();
        for format in [Format::F16, Format::Int8] {
            let mut m = base.clone();
            quantize(&mut m, format, ScaleRule::MaxAbs, None, 0).unwrap();
            let card = card_of(m);
            let a = dir
                .path()
                .join(format!("a-{masked}-{}.card", format.name()));
            let b = dir
                .path()
                .join(format!("b-{masked}-{}.card", format.name()));
            card.save(&a).unwrap();
            let back = Card::load(&a).unwrap();
            assert_eq!(
                back.model, card.model,
                "{masked} {format:?}: decoded model differs"
            );
            back.save(&b).unwrap();
            assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
            let (i, k) = back.model.prunable()[0];
            assert_eq!(back.model.params[i][k].mask().is_some(), masked);

            // Weight bytes: f32 → 16 or 8 bits per kept value (+ int8 scales);
            // the mask bits and the f32 biases/BatchNorm stay as they were.
            let kept: usize = base
                .prunable()
                .iter()
                .map(|&(i, k)| {
                    base.params[i][k]
                        .mask()
                        .map_or(base.params[i][k].data.len(), |mk| {
                            mk.iter().filter(|&&b| b).count()
                        })
                })
                .sum();
            let q = stored_bytes(&card.model) as i64;
            let saved = match format {
                Format::F16 => 2 * kept as i64,
                Format::Int8 => 3 * kept as i64 - 4 * channels as i64,
            };
            let want = f32_bytes as i64 - saved;
            // Bytes are rounded up per tensor.
            assert!(
                (q - want).abs() <= base.prunable().len() as i64,
                "{masked} {format:?}: {q} vs {want}"
            );
            if !masked {
                let ratio = q as f64 / f32_bytes as f64;
                let (lo, hi) = match format {
                    Format::F16 => (0.5, 0.52),
                    Format::Int8 => (0.25, 0.28),
                };
                assert!(
                    (lo..hi).contains(&ratio),
                    "{format:?}: ratio {ratio} ({weight_elems} weights)"
                );
            }
        }
    }
}

#[test]
fn calibrated_scales_lower_the_layer_output_error() {
    let mut m = small("conv4", 5);
    let calib = calibration_batch(24);
    let reports = quantize(&mut m, Format::Int8, ScaleRule::Calibrated, Some(&calib), 1).unwrap();
    assert_eq!(reports.len(), m.prunable().len());
    let mut better = 0;
    for r in &reports {
        let (e0, e1) = (r.output_error_maxabs.unwrap(), r.output_error.unwrap());
        assert!(e1 <= e0 * (1.0 + 1e-9), "{}: {e1} > {e0}", r.name);
        assert!(e1 < 1e-2, "{}: relative output error {e1}", r.name);
        better += (e1 < e0) as usize;
    }
    assert!(better > 0, "calibration never changed a scale: {reports:?}");
    assert!(m.validate().is_ok());
}

#[test]
fn binary_weights_stay_binary_and_bad_scales_are_refused() {
    let mut m = small("conv4", 6);
    let (i, k) = m.prunable()[0];
    let n = m.params[i][k].data.len();
    m.params[i][k].state = WeightState::Binary {
        mask: vec![true; n],
        alpha: 0.1,
    };
    let before = m.params[i][k].clone();
    quantize(&mut m, Format::Int8, ScaleRule::MaxAbs, None, 0).unwrap();
    assert_eq!(m.params[i][k], before);
    let s = summary(&card_of(m.clone()));
    assert_eq!(s["layers"][i]["format"], "binary");
    // ~1 sign bit + 1 mask bit per weight, plus α.
    let bits = s["layers"][i]["bits"].as_f64().unwrap();
    assert!((bits - (2.0 + 32.0 / n as f64)).abs() < 1e-9, "{bits}");

    let (i2, k2) = m.prunable()[1];
    m.params[i2][k2].precision = Precision::Int8 {
        scales: vec![1.0; 3],
    };
    let e = m.validate().unwrap_err();
    assert!(e.contains("int8 scales"), "{e}");
}

#[test]
fn info_reports_int8_bits_with_masks() {
    let mut m = small("conv4", 7);
    mask_all(&mut m, 0.25, 8);
    quantize(&mut m, Format::Int8, ScaleRule::MaxAbs, None, 0).unwrap();
    let (i, k) = m.prunable()[1];
    let t = &m.params[i][k];
    let n = t.data.len();
    let kept = t.mask().unwrap().iter().filter(|&&b| b).count();
    let oc = t.shape[0];
    let s = summary(&card_of(m.clone()));
    let l = &s["layers"][i];
    assert_eq!(l["format"], "int8");
    let want = (n + 8 * kept + 32 * oc) as f64 / n as f64;
    assert!((l["bits"].as_f64().unwrap() - want).abs() < 1e-9, "{l}");
    assert_eq!(
        l["bytes"].as_u64().unwrap(),
        ((n + 8 * kept + 32 * oc) as u64).div_ceil(8)
    );
    let sp = l["sparsity"].as_f64().unwrap();
    assert!(sp >= 1.0 - kept as f64 / n as f64 - 1e-12);
    for key in ["sparsity", "params", "bytes", "dense_f32_bytes", "layers"] {
        assert!(s.get(key).is_some(), "{key}");
    }
    assert!(s["bytes"].as_u64() < s["dense_f32_bytes"].as_u64());
    let text = cardc::card::summary_text(&card_of(m));
    assert!(text.contains("int8"), "{text}");
}

#[test]
fn version_1_cards_still_load_but_version_1_checkpoints_are_refused() {
    use cardc::card::{Kind, read, write_atomic};
    let dir = tempfile::tempdir().unwrap();
    // A version-1 card: the card payload did not change in version 2.
    let p = dir.path().join("old.card");
    let card = card_of(small("conv4", 9));
    card.save(&p).unwrap();
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(Card::load(&p).unwrap(), card);
    // A version-1 checkpoint held models without precision tags.
    let c = dir.path().join("old.ckpt");
    write_atomic(&c, Kind::Checkpoint, &card.model).unwrap();
    let mut bytes = std::fs::read(&c).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&c, &bytes).unwrap();
    let e = read::<Model>(&c, Kind::Checkpoint).unwrap_err().to_string();
    assert!(
        e.contains("old.ckpt") && e.contains("format version 1 is older"),
        "{e}"
    );
}

#[test]
fn quantize_command_keeps_accuracy_and_shrinks_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let (dense, q8, q16) = (p("m.card"), p("q8.card"), p("q16.card"));
    let data = "synthetic:600";
    cardc_json(&[
        "train",
        "--arch",
        "resnet20",
        "--width-mult",
        "0.5",
        "--data",
        data,
        "--epochs",
        "4",
        "--batch",
        "32",
        "--lr",
        "0.05",
        "--schedule",
        "onecycle",
        "--out",
        &dense,
        "--json",
    ]);
    let r8 = cardc_json(&[
        "quantize", "--model", &dense, "--format", "int8", "--data", data, "--calib", "32",
        "--out", &q8, "--json",
    ]);
    let (a0, a1) = (
        r8["accuracy_before"].as_f64().unwrap(),
        r8["accuracy"].as_f64().unwrap(),
    );
    assert!(a0 > 0.2, "the net did not learn: {a0}");
    assert!(a1 >= a0 - 0.03, "int8 lost too much: {a0} -> {a1}");
    let ratio = r8["bytes"].as_f64().unwrap() / r8["bytes_before"].as_f64().unwrap();
    assert!((0.25..0.3).contains(&ratio), "int8 bytes ratio {ratio}");
    let r16 = cardc_json(&[
        "quantize", "--model", &dense, "--format", "f16", "--data", data, "--out", &q16, "--json",
    ]);
    assert!(
        (r16["accuracy"].as_f64().unwrap() - a0).abs() <= 0.01,
        "{r16}"
    );
    let info = cardc_json(&["info", &q8, "--json"]);
    assert_eq!(
        info["metrics"]["accuracy_after_quantization"].as_f64(),
        Some(a1)
    );
    assert_eq!(info["metrics"]["test_accuracy"].as_f64(), Some(a1));
    assert_eq!(
        info["metrics"]["accuracy_before_quantization"].as_f64(),
        Some(a0)
    );
    assert_eq!(info["layers"][1]["format"], "int8");
    let ev = cardc_json(&["eval", "--model", &q8, "--data", data, "--json"]);
    assert_eq!(
        ev["accuracy"].as_f64(),
        Some(a1),
        "eval sees the stored int8 weights"
    );
}
