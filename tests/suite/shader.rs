//! Shader targets: cards compiled to inference kernels in WGSL, SPIR-V,
//! GLSL and MSL, run through wgpu on the machine's Vulkan adapter
//! (lavapipe in CI) and compared with the reference forward pass.

use super::common::{assert_clean_error, cardc, json};
use super::compile::{
    card_of, every_op_graph, int8_of, model_for, odd_graph, random_images, resnet_card, tolerance,
};
use cardc::card::Card;
use cardc::compile::{self, Format, FormatChoice, artifact, shader};
use cardc::data::Dataset;
use std::path::Path;

fn opts(target: &str, format: FormatChoice) -> compile::Options {
    compile::Options {
        target: target.into(),
        format,
        max_flash: None,
        max_ram: None,
    }
}

/// Compiles `card` for `target` into `dir` and runs it on `ds`: the
/// logits, their max error relative to the largest reference logit, and
/// the argmax agreement.
fn run(card: &Card, dir: &Path, o: &compile::Options, ds: &Dataset) -> (Vec<f32>, f64, f64) {
    let report = compile::compile(card, o, dir).unwrap();
    assert!(report.arena_bytes >= report.arena_lower_bound_bytes);
    let out = artifact::execute(dir, &ds.images).unwrap();
    assert!(out.median_ms.is_finite() && out.median_ms > 0.0);
    let reference = artifact::reference_logits(card, ds).unwrap();
    assert_eq!(out.logits.len(), reference.len());
    let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
    let err = out
        .logits
        .iter()
        .zip(&reference)
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    let k = report.classes;
    let argmax = |r: &[f32]| {
        (0..r.len())
            .max_by(|&a, &b| r[a].total_cmp(&r[b]))
            .unwrap_or(0)
    };
    let agree = out
        .logits
        .chunks(k)
        .zip(reference.chunks(k))
        .filter(|(a, b)| argmax(a) == argmax(b))
        .count();
    (
        out.logits,
        (err / scale) as f64,
        agree as f64 / ds.len() as f64,
    )
}

/// Every operator in every GPU weight format (binary weights, masks, rows
/// fully masked or kept, 40 channels: not a multiple of 32), on the WGSL
/// kernels.
#[test]
fn every_format_and_operator_matches_the_reference_on_wgsl() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, seed) in [("dense", 1), ("masked", 2), ("binary", 3)] {
        let card = card_of(model_for(every_op_graph(), state, seed));
        let ds = random_images(&card, 3, seed);
        for f in [
            Format::F32,
            Format::F16,
            Format::Int8,
            Format::Sparse,
            Format::Sparse8,
            Format::Binary,
        ] {
            let dir = tmp.path().join(format!("{state}-{}", f.name()));
            let (_, err, _) = run(&card, &dir, &opts("wgsl", FormatChoice::Force(f)), &ds);
            let tol = if f == Format::Binary && state != "binary" {
                tolerance(Format::F32)
            } else {
                tolerance(f)
            };
            assert!(err <= tol, "{state} as {}: relative error {err}", f.name());
            let r: compile::Report =
                serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap())
                    .unwrap();
            if f != Format::Binary || state == "binary" {
                assert!(r.layers.iter().all(|l| l.format == f.name()), "{state}");
            }
            // Flash is the weight blob, which holds every layer.
            let blob = std::fs::metadata(dir.join("weights.bin")).unwrap().len();
            assert_eq!(r.flash_bytes, blob);
            assert!(r.layers.iter().map(|l| l.bytes).sum::<u64>() < blob);
        }
    }
}

/// Odd geometries (2x2 and 1x3 kernels, stride 3, 33 channels) in the
/// exact formats (sparse8 on an int8 card, whose values it holds
/// exactly), and a residual net whose arena reaches the bound.
#[test]
fn odd_shapes_and_a_residual_net_agree_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, f) in [
        ("dense", Format::F32),
        ("masked", Format::Sparse),
        ("masked", Format::Sparse8),
        ("binary", Format::Binary),
    ] {
        let mut m = model_for(odd_graph(), state, 31);
        if f == Format::Sparse8 {
            m = int8_of(m, 2.0);
        }
        let card = card_of(m);
        let ds = random_images(&card, 3, 31);
        let dir = tmp.path().join(format!("{state}-{}", f.name()));
        let (_, err, agree) = run(&card, &dir, &opts("wgsl", FormatChoice::Force(f)), &ds);
        assert!(err <= 1e-4, "{state} as {}: relative error {err}", f.name());
        assert_eq!(agree, 1.0);
    }
    let card = resnet_card("binary");
    let ds = random_images(&card, 4, 5);
    let dir = tmp.path().join("resnet");
    let (_, err, agree) = run(&card, &dir, &opts("wgsl", FormatChoice::Auto), &ds);
    assert!(err <= 1e-4, "relative error {err}");
    assert_eq!(agree, 1.0);
    let r: compile::Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r.arena_bytes, r.arena_lower_bound_bytes);
    assert!(r.layers.iter().all(|l| l.format == "binary"));
}

/// The translated SPIR-V and GLSL are what runs (not the WGSL they came
/// from), and they compute what the WGSL computes, in every GPU format.
#[test]
fn spirv_and_glsl_artifacts_run_their_own_shaders() {
    let tmp = tempfile::tempdir().unwrap();
    for (state, f) in [
        ("binary", Format::Binary),
        ("masked", Format::Sparse),
        ("masked", Format::Sparse8),
        ("dense", Format::F16),
        ("dense", Format::Int8),
        ("dense", Format::F32),
    ] {
        let card = card_of(model_for(every_op_graph(), state, 9));
        let ds = random_images(&card, 3, 9);
        let o = |t| opts(t, FormatChoice::Force(f));
        let case = format!("{state}-{}", f.name());
        let (wgsl, _, _) = run(
            &card,
            &tmp.path().join(format!("wgsl-{case}")),
            &o("wgsl"),
            &ds,
        );
        for target in ["spirv", "glsl"] {
            let dir = tmp.path().join(format!("{target}-{case}"));
            let (logits, err, _) = run(&card, &dir, &o(target), &ds);
            assert!(err <= tolerance(f), "{target} {case}: relative error {err}");
            let scale = wgsl.iter().fold(0f32, |a, v| a.max(v.abs()));
            let diff = logits
                .iter()
                .zip(&wgsl)
                .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{target} {case} vs wgsl: {diff}"
            );
        }
    }
    let card = card_of(model_for(every_op_graph(), "binary", 9));
    let ds = random_images(&card, 3, 9);
    let o = |t| opts(t, FormatChoice::Auto);
    for t in ["spirv", "glsl"] {
        compile::compile(&card, &o(t), &tmp.path().join(t)).unwrap();
    }
    let spv = std::fs::read(tmp.path().join("spirv/model.spv")).unwrap();
    assert_eq!(&spv[..4], &0x0723_0203u32.to_le_bytes(), "SPIR-V magic");
    for e in shader::ENTRY_POINTS {
        let text =
            std::fs::read_to_string(tmp.path().join(format!("glsl/model.{e}.comp"))).unwrap();
        assert!(text.starts_with("#version 450"), "{e}");
        assert!(text.contains("void main()"), "{e}");
    }
    // A damaged SPIR-V file is refused by the driver path, not run.
    let dir = tmp.path().join("spirv");
    std::fs::write(dir.join("model.spv"), &spv[..spv.len() / 2]).unwrap();
    assert!(artifact::execute(&dir, &ds.images).is_err());
    // Recompiling another shader target into a directory replaces its files.
    compile::compile(&card, &o("spirv"), &tmp.path().join("glsl")).unwrap();
    assert!(!tmp.path().join("glsl/model.matrix_f32.comp").exists());
    assert!(tmp.path().join("glsl/model.spv").exists());
}

/// MSL is written and validated here but only runs on Apple GPUs: its
/// entry points are listed with their Metal names and `run` says why it
/// cannot execute them.
#[test]
fn msl_is_written_with_its_entry_points_and_run_explains() {
    let tmp = tempfile::tempdir().unwrap();
    let card = card_of(model_for(every_op_graph(), "masked", 12));
    compile::compile(&card, &opts("msl", FormatChoice::Auto), tmp.path()).unwrap();
    let metal = std::fs::read_to_string(tmp.path().join("model.metal")).unwrap();
    let s: shader::Schedule =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("schedule.json")).unwrap())
            .unwrap();
    assert_eq!(s.language, "msl");
    assert_eq!(s.entry_points.len(), shader::ENTRY_POINTS.len());
    for name in s.entry_points.values() {
        assert!(
            metal.contains(&format!("kernel void {name}(")),
            "{name} not in model.metal"
        );
    }
    let ds = random_images(&card, 1, 1);
    let e = format!(
        "{:#}",
        artifact::execute(tmp.path(), &ds.images).unwrap_err()
    );
    assert!(e.contains("Apple") && e.contains("--target spirv"), "{e}");
}

/// The command line: compile and run with JSON, and the refusals.
#[test]
fn compile_and_run_commands_on_shader_targets() {
    let tmp = tempfile::tempdir().unwrap();
    let g = cardc::ir::models::build(
        "conv4",
        &cardc::ir::models::BuildOptions {
            width_mult: 0.125,
            ..Default::default()
        },
    )
    .unwrap();
    let card_path = tmp.path().join("m.card");
    card_of(model_for(g, "binary", 13))
        .save(&card_path)
        .unwrap();
    let card = card_path.to_str().unwrap();
    let dir = tmp.path().join("spv");
    let out = cardc(&[
        "compile",
        "--model",
        card,
        "--target",
        "spirv",
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", super::common::stderr(&out));
    let r = json(&out);
    assert_eq!(r["target"], "spirv");
    assert!(r["arena_bytes"].as_u64().unwrap() > 0);
    let out = cardc(&[
        "run",
        dir.to_str().unwrap(),
        "--data",
        "synthetic:50",
        "--limit",
        "5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", super::common::stderr(&out));
    let r = json(&out);
    assert_eq!(r["target"], "spirv");
    assert_eq!(r["images"], 5);
    assert_eq!(r["argmax_agreement"], 1.0);
    assert!(r["max_abs_logit_error"].as_f64().unwrap() < 1e-3);
    // Rice coding has no GPU kernel.
    let out = cardc(&[
        "compile",
        "--model",
        card,
        "--target",
        "wgsl",
        "--format",
        "rice",
        "--out",
        tmp.path().join("rice").to_str().unwrap(),
    ]);
    assert_clean_error(&out, "rice format has no GPU kernel");
}

/// `struct Params` of the shader has the fields the compiler fills, in
/// the same order, and every entry point exists.
#[test]
fn parameter_block_and_entry_points_match_the_shader() {
    let (module, _) = shader::translate::wgsl_module().unwrap();
    let params = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("Params"))
        .map(|(_, t)| t.inner.clone())
        .unwrap();
    let naga::TypeInner::Struct { members, span } = params else {
        panic!("Params is not a struct");
    };
    let names: Vec<String> = members.iter().map(|m| m.name.clone().unwrap()).collect();
    assert_eq!(names, shader::PARAM_FIELDS);
    assert_eq!(span as usize, 4 * shader::PARAM_FIELDS.len());
    let entries: Vec<&str> = module
        .entry_points
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(entries, shader::ENTRY_POINTS);
}
