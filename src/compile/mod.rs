//! The compiler: a card lowered to per-layer packed weight formats
//! ([`lower`], [`pack`]), a static memory plan ([`plan`]), C99 sources
//! ([`emit_c`]) for a target ([`target`]), and building and running the
//! artifact against the reference forward pass ([`artifact`]).
//!
//! Artifact directory layout: `model.h`, `model.c` (weights, arena,
//! `cardc_infer`), `cardc_kernels.{c,h}`, `main.c` (harness), `Makefile`,
//! `report.json`, and `model.card` (the card itself, so `cardc run` can
//! compare with the reference forward without other input).

pub mod artifact;
pub mod emit_c;
pub mod gate;
pub mod layout;
pub mod lower;
pub mod pack;
pub mod plan;
pub mod target;
pub mod tract_bench;

pub use lower::FormatChoice;
pub use pack::Format;

use crate::card::Card;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What `cardc compile` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub target: String,
    pub format: FormatChoice,
    pub max_flash: Option<u64>,
    pub max_ram: Option<u64>,
}

/// One matrix layer in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerReport {
    pub name: String,
    pub op: String,
    pub format: String,
    /// Weights, bias and multipliers in flash.
    pub bytes: u64,
    pub zero_fraction: f64,
    pub macs: u64,
    /// BatchNorm/activation fused into the layer.
    pub act: String,
}

/// `report.json`: sizes the artifact needs and how they were obtained.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub model: String,
    pub target: String,
    /// Constant data in flash: packed weights, biases, multipliers and the
    /// normalization tables (code not counted).
    pub flash_bytes: u64,
    /// The static activation arena.
    pub arena_bytes: u64,
    /// Max over schedule steps of the bytes live at that step.
    pub arena_lower_bound_bytes: u64,
    /// Padded-input buffers of the matrix layers, besides the arena.
    pub scratch_bytes: u64,
    /// arena + scratch.
    pub ram_bytes: u64,
    pub macs: u64,
    pub input_bytes: u64,
    pub classes: usize,
    /// What `cardc_infer` reads.
    pub input_format: String,
    pub format: String,
    pub layers: Vec<LayerReport>,
    /// Kernel steps in the schedule.
    pub steps: usize,
}

/// Lowers, packs, plans and emits `card` into `out` for `opts`.
pub fn compile(card: &Card, opts: &Options, out: &Path) -> anyhow::Result<Report> {
    let (target, extra_files) = target::find(&opts.target)?;
    let mut program = lower::lower(card)?;
    for l in program.mat_layers() {
        if l.weight.iter().chain(&l.bias).any(|v| !v.is_finite()) {
            bail!(
                "layer '{}': folding BatchNorm gives non-finite weights",
                l.name
            );
        }
    }
    let lut_bytes = 4 * 256 * program.lut.len() as u64;
    let affine_bytes: u64 = program
        .steps
        .iter()
        .map(|s| match s {
            lower::Step::Affine { scale, .. } => 8 * scale.len() as u64,
            _ => 0,
        })
        .sum();
    let max_flash = opts.max_flash.or(target.flash_bytes);
    lower::choose_formats(
        &mut program,
        opts.format,
        max_flash,
        lut_bytes + affine_bytes,
    )?;
    // Memory plan over the schedule.
    let nsteps = program.steps.len();
    let mut defs = vec![0; program.values.len()];
    let mut reads = Vec::new();
    for (i, s) in program.steps.iter().enumerate() {
        defs[s.output()] = i;
        reads.extend(s.inputs().into_iter().map(|v| (i, v)));
    }
    // Values handed off into the next layer's padded input take no arena.
    let mut bufs = layout::buffers(&program);
    let mut sizes: Vec<usize> = program.values.iter().map(|&n| 4 * n).collect();
    for (s, h) in program.steps.iter().zip(&bufs.handoff) {
        if h.is_some() {
            sizes[s.output()] = 0;
        }
    }
    let padded_values = target
        .scratch_in_arena
        .then(|| bufs.move_to_arena(&program, &mut sizes, &mut defs, &mut reads));
    let iv = plan::lifetimes(&sizes, &defs, &reads, program.output, nsteps);
    let mem = plan::plan(&iv);
    plan::verify(&iv, &mem).map_err(|e| anyhow::anyhow!("memory planner: {e}"))?;
    if let Some(holder) = &padded_values {
        bufs.place(holder, &mem.offsets);
    }
    let scratch_floats = bufs.floats[0] + bufs.floats[1];
    let ram = mem.arena_bytes as u64 + 4 * scratch_floats as u64;
    if let Some(budget) = opts.max_ram.or(target.ram_bytes)
        && ram > budget
    {
        bail!(
            "--max-ram {budget}: the model needs {ram} bytes of RAM ({} arena, lower bound {}, \
             plus {} scratch); weight formats do not change activation memory",
            mem.arena_bytes,
            mem.lower_bound_bytes,
            4 * scratch_floats
        );
    }
    let layers: Vec<LayerReport> = program
        .mat_layers()
        .map(|l| LayerReport {
            name: l.name.clone(),
            op: l.op.to_string(),
            format: l.packed.packed.format().name().to_string(),
            bytes: l.bytes() as u64,
            zero_fraction: l.zero_fraction(),
            macs: l.geom.macs(),
            act: format!("{:?}", l.act).to_lowercase(),
        })
        .collect();
    let flash = lut_bytes + affine_bytes + layers.iter().map(|l| l.bytes).sum::<u64>();
    let [c, h, w] = program.input;
    let report = Report {
        model: program.name.clone(),
        target: target.name.clone(),
        flash_bytes: flash,
        arena_bytes: mem.arena_bytes as u64,
        arena_lower_bound_bytes: mem.lower_bound_bytes as u64,
        scratch_bytes: 4 * scratch_floats as u64,
        ram_bytes: ram,
        macs: program.macs,
        input_bytes: (c * h * w) as u64,
        classes: program.classes,
        input_format: "uint8 CHW raw image; normalization inside the artifact".into(),
        format: match opts.format {
            FormatChoice::Auto => "auto".into(),
            FormatChoice::Force(f) => f.name().into(),
        },
        layers,
        steps: nsteps,
    };
    let src = emit_c::emit(&program, &mem, &target, &bufs);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    for (name, text) in target::COMMON.iter().chain(extra_files.iter()) {
        write(name, text)?;
    }
    write("main.c", target::harness_source(&target)?)?;
    write("model.h", &src.header)?;
    write("model.c", &src.model_c)?;
    write("Makefile", &src.makefile)?;
    write("report.json", &serde_json::to_string_pretty(&report)?)?;
    // A stale binary from an earlier compile must not be run.
    let _ = std::fs::remove_file(out.join("model"));
    let _ = std::fs::remove_file(out.join(artifact::BUILD_STAMP));
    let card_path = out.join("model.card");
    card.save(&card_path)
        .with_context(|| format!("cannot write {}", card_path.display()))?;
    Ok(report)
}
