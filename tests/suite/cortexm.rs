//! The Cortex-M targets end to end through the real binary: small random
//! nets compiled for cortex-m4 (mps2-an386) and cortex-m33 (mps2-an505),
//! built with arm-none-eabi-gcc, run under qemu-system-arm with
//! semihosting by `cardc run`, and compared with the reference forward
//! pass; a model over the targets' 256 KB of RAM is refused at compile;
//! and ResNet-20's arena, padded inputs included, is planned down to its
//! lower bound (no tools needed).

use crate::common::{assert_clean_error, cardc, cardc_json};
use cardc::card::Card;
use cardc::compile::{FormatChoice, target};
use cardc::ir::models::{BuildOptions, build};
use std::path::Path;

/// Whether `name`'s compiler and QEMU are here; prints why not.
fn tools_present(name: &str) -> bool {
    let (t, _) = target::find(name).unwrap();
    // The runner is `sh -c "exec qemu-system-arm ..."`: `tools` names QEMU.
    assert!(t.tools.iter().any(|x| x == "qemu-system-arm"));
    let missing = t.missing_tools();
    if !missing.is_empty() {
        eprintln!("SKIPPED {name} under QEMU: missing {missing:?} (test.sh installs them)");
    }
    missing.is_empty()
}

/// A card of `arch` at `width` with random weights and BatchNorm
/// statistics in `state` (see `compile::model_for`; `masked-int8`: masked,
/// then quantized to int8 as `cardc quantize` stores it).
fn card(arch: &str, width: f32, state: &str, seed: u64) -> Card {
    let g = build(
        arch,
        &BuildOptions {
            width_mult: width,
            ..Default::default()
        },
    )
    .unwrap();
    let m = match state {
        "masked-int8" => crate::compile::int8_of(crate::compile::model_for(g, "masked", seed), 1.0),
        _ => crate::compile::model_for(g, state, seed),
    };
    crate::compile::card_of(m)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn small_nets_agree_with_the_reference_under_qemu() {
    let tmp = tempfile::tempdir().unwrap();
    // (target, card, --format, a format the report must show): the int8
    // card goes through save/load and auto's choice.
    for (target, state, format, want) in [
        ("cortex-m4", "dense", "f32", "f32"),
        ("cortex-m4", "masked", "sparse", "sparse"),
        ("cortex-m4", "masked-int8", "auto", "sparse8"),
        ("cortex-m4", "binary", "binary", "binary"),
        ("cortex-m33", "masked", "f32", "f32"),
    ] {
        if !tools_present(target) {
            continue;
        }
        let card_path = tmp.path().join(format!("{target}-{state}.card"));
        card("conv4", 0.125, state, 3).save(&card_path).unwrap();
        let out = tmp.path().join(format!("{target}-{state}"));
        let report = cardc_json(&[
            "compile",
            "--model",
            path(&card_path),
            "--target",
            target,
            "--format",
            format,
            "--out",
            path(&out),
            "--json",
        ]);
        assert_eq!(report["target"], target);
        assert!(report["ram_bytes"].as_u64().unwrap() <= 256 * 1024);
        assert!(
            report["layers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["format"] == want),
            "{target} {state}: {report}"
        );
        for f in ["startup_cortexm.c", "main.c", "Makefile"] {
            assert!(out.join(f).is_file(), "{f}");
        }
        let run = cardc_json(&[
            "run",
            path(&out),
            "--data",
            "synthetic:50",
            "--limit",
            "5",
            "--json",
        ]);
        assert_eq!(run["target"], target);
        assert_eq!(run["images"], 5);
        assert_eq!(run["argmax_agreement"], 1.0, "{target} {state}: {run}");
        let err = run["max_abs_logit_error"].as_f64().unwrap();
        assert!(err < 1e-3, "{target} {state}: max logit error {err}");
        assert!(run["latency_ms"].as_f64().unwrap() > 0.0, "{run}");
        if state == "dense" {
            harness_rejects_bad_input(target, &out);
        }
    }
}

/// The semihosting harness ends QEMU with status 2 and a message on
/// stderr for an input that is not whole images, or a missing file.
fn harness_rejects_bad_input(target: &str, dir: &Path) {
    let (t, _) = target::find(target).unwrap();
    std::fs::write(dir.join("bad.bin"), [7u8; 3 * 32 * 32 + 1]).unwrap();
    for file in ["bad.bin", "missing.bin"] {
        let o = std::process::Command::new(&t.runner[0])
            .args(&t.runner[1..])
            .args(["./model", file])
            .current_dir(dir)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{file}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(file), "{file}: {e}");
        assert!(o.stdout.is_empty(), "{file}");
    }
}

#[test]
fn model_over_the_ram_budget_is_refused_with_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let card_path = tmp.path().join("r20.card");
    // ResNet-20 at twice the width on 32x32 images: three 32x32x32 f32
    // tensors live in a residual block, 384 KB (the full width fits).
    card("resnet20", 2.0, "binary", 5).save(&card_path).unwrap();
    let o = cardc(&[
        "compile",
        "--model",
        path(&card_path),
        "--target",
        "cortex-m4",
        "--out",
        path(&tmp.path().join("art")),
    ]);
    assert_clean_error(&o, "262144");
    let e = crate::common::stderr(&o);
    assert!(e.contains("bytes of RAM") && e.contains("arena"), "{e}");
    assert!(!tmp.path().join("art").join("model.c").exists());
}

#[test]
fn resnet20_arena_equals_the_lower_bound_with_padded_inputs_in_it() {
    // Planning only (no C compiler or QEMU): the arena depends on shapes,
    // so a random card stands for a trained one.
    let c = card("resnet20", 1.0, "dense", 5);
    for name in ["cortex-m4", "host"] {
        let (t, _) = target::find(name).unwrap();
        let p = cardc::compile::plan_card(&c, FormatChoice::Auto, None, &t).unwrap();
        let r = &p.report;
        assert_eq!(r.arena_bytes, r.arena_lower_bound_bytes, "{name}");
        // On cortex-m4 every matrix layer's padded input is an arena value.
        let in_arena = p.bufs.arena.iter().flatten().count();
        assert_eq!(in_arena > 0, t.scratch_in_arena, "{name}");
        assert_eq!(r.scratch_bytes == 0, t.scratch_in_arena, "{name}");
    }
}
