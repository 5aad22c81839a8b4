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
pub mod deck;
pub mod emit_c;
pub mod gate;
pub mod layout;
pub mod lower;
pub mod object_cache;
pub mod pack;
pub mod plan;
/// Rice coding of binary layers lives beside the card, which stores
/// sparse binary tensors with it too.
pub use crate::rice;
pub mod shader;
pub mod target;
pub mod tract_bench;
pub mod xnor;

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
    /// The packed weights alone (without bias and multipliers).
    #[serde(default)]
    pub weight_bytes: u64,
    /// Binary layers: the information bound of their kept/sign pattern,
    /// `(log2 C(n, k) + k) / 8` bytes for `n` weights with `k` kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound_bytes: Option<f64>,
    pub macs: u64,
    /// BatchNorm/activation fused into the layer.
    pub act: String,
}

impl LayerReport {
    /// The report of `l`, which occupies `bytes` of flash (`weight_bytes`
    /// of them packed weights) in the artifact's layout.
    pub fn of(l: &lower::MatLayer, bytes: u64, weight_bytes: u64) -> LayerReport {
        LayerReport {
            name: l.name.clone(),
            op: l.op.to_string(),
            format: l.packed.packed.format().name().to_string(),
            bytes,
            zero_fraction: l.zero_fraction(),
            weight_bytes,
            bound_bytes: l.supports(Format::Binary).then(|| {
                let n = l.weight.len() as u64;
                let kept = l.weight.iter().filter(|v| **v != 0.0).count() as u64;
                rice::information_bound_bits(n, kept) / 8.0
            }),
            macs: l.geom.macs(),
            act: format!("{:?}", l.act).to_lowercase(),
        }
    }
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
    /// Padded-input buffers of the matrix layers (and the decode buffers
    /// of Rice-coded ones), besides the arena.
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
    /// C files linked besides the common ones (a deck's members and gate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// What a deck artifact holds (None for a card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deck: Option<deck::DeckReport>,
}

/// A card lowered, packed and planned: what [`emit_c`] turns into C.
pub struct Planned {
    pub program: lower::Program,
    pub plan: plan::Plan,
    pub bufs: layout::Buffers,
    pub report: Report,
}

/// Lowers `card` and packs its layers (see [`lower::choose_formats`]);
/// also returns the flash bytes of the normalization tables and of the
/// unfolded BatchNorms, which count against `max_flash`. `auto_xnor`:
/// whether `--format auto` may pick xnor ([`target::Target::auto_xnor`]).
pub fn lower_with_formats(
    card: &Card,
    format: FormatChoice,
    max_flash: Option<u64>,
    auto_xnor: bool,
) -> anyhow::Result<(lower::Program, u64, u64)> {
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
    lower::choose_formats(
        &mut program,
        format,
        max_flash,
        lut_bytes + affine_bytes,
        auto_xnor,
    )?;
    Ok((program, lut_bytes, affine_bytes))
}

/// Lowers `card`, picks its weight formats within `max_flash` and plans
/// its memory for `target`. RAM budgets are the caller's to check (a deck's
/// members share one arena).
pub fn plan_card(
    card: &Card,
    format: FormatChoice,
    max_flash: Option<u64>,
    target: &target::Target,
) -> anyhow::Result<Planned> {
    let (program, lut_bytes, affine_bytes) =
        lower_with_formats(card, format, max_flash, target.auto_xnor())?;
    // Memory plan over the schedule.
    let nsteps = program.steps.len();
    let (mut defs, mut reads) = program.defs_and_reads();
    // Values handed off into the next layer's padded input take no arena;
    // bordered values take their planes. Targets that plan padded inputs
    // into the arena (small RAM) keep plain values: a bordered value is
    // larger and lives as long as its chain.
    let mut bufs = layout::buffers(&program, !target.scratch_in_arena);
    let mut sizes: Vec<usize> = program.values.iter().map(|&n| 4 * n).collect();
    for (s, h) in program.steps.iter().zip(&bufs.handoff) {
        if h.is_some() {
            sizes[s.output()] = 0;
        }
    }
    for (size, b) in sizes.iter_mut().zip(&bufs.bordered) {
        if let Some(b) = b {
            *size = 4 * b.floats;
        }
    }
    // A layer that does the next step's residual Add writes the sum at its
    // own step; its own output is never stored.
    for (i, r) in bufs.residual.iter().enumerate() {
        if r.is_some() {
            sizes[program.steps[i].output()] = 0;
            defs[program.steps[i + 1].output()] = i;
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
    // Padded inputs, plus what Rice-coded layers decode into and xnor
    // layers pack their inputs into.
    let (rice_counts, rice_off) = layout::rice_buffers(&program);
    let scratch_floats = bufs.floats[0]
        + bufs.floats[1]
        + rice_counts
        + rice_off
        + layout::xnor_buffer_words(&program);
    let ram = mem.arena_bytes as u64 + 4 * scratch_floats as u64;
    let layers: Vec<LayerReport> = program
        .mat_layers()
        .map(|l| {
            LayerReport::of(
                l,
                l.bytes() as u64,
                layout::emitted_weight_bytes(&l.packed.packed, &l.geom) as u64,
            )
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
        format: match format {
            FormatChoice::Auto => "auto".into(),
            FormatChoice::Force(f) => f.name().into(),
        },
        layers,
        steps: nsteps,
        sources: Vec::new(),
        deck: None,
    };
    Ok(Planned {
        program,
        plan: mem,
        bufs,
        report,
    })
}

/// The error of a RAM budget (`--max-ram`, else the target's RAM) the
/// artifact does not fit.
fn check_ram(
    max_ram: Option<u64>,
    target: &target::Target,
    r: &Report,
    what: &str,
) -> anyhow::Result<()> {
    let (budget, source) = match (max_ram, target.ram_bytes) {
        (Some(b), _) => (b, format!("--max-ram {b}")),
        (None, Some(b)) => (b, format!("target {} has {b} bytes of RAM", target.name)),
        (None, None) => return Ok(()),
    };
    if r.ram_bytes > budget {
        bail!(
            "{source}: {what} needs {} bytes of RAM ({} arena, lower bound {}, \
             plus {} scratch); weight formats do not change activation memory",
            r.ram_bytes,
            r.arena_bytes,
            r.arena_lower_bound_bytes,
            r.ram_bytes - r.arena_bytes
        );
    }
    Ok(())
}

/// Writes `(name, text)` files into `out` (created), then the runtime
/// sources of `target`, and removes a stale build.
fn write_artifact(
    out: &Path,
    target: &target::Target,
    extra_files: target::Files,
    files: &[(String, String)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, text: &str| {
        let p = out.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))
    };
    for (name, text) in target::COMMON.iter().chain(extra_files.iter()) {
        write(name, text)?;
    }
    write("main.c", target::harness_source(target)?)?;
    for (name, text) in files {
        write(name, text)?;
    }
    remove_stale_outputs(out);
    Ok(())
}

/// Removes what an earlier compile into `out` may have left that the new
/// artifact does not rewrite: a built binary (it must not be run), the
/// shader files of another shader target.
pub(crate) fn remove_stale_outputs(out: &Path) {
    let _ = std::fs::remove_file(out.join("model"));
    let _ = std::fs::remove_file(out.join(artifact::BUILD_STAMP));
    for name in [
        "model.spv",
        "model.metal",
        shader::SCHEDULE_FILE,
        shader::WEIGHTS_FILE,
    ] {
        let _ = std::fs::remove_file(out.join(name));
    }
    for e in shader::ENTRY_POINTS {
        let _ = std::fs::remove_file(out.join(shader::translate::glsl_file(e)));
    }
}

/// Lowers, packs, plans and emits `card` into `out` for `opts`.
pub fn compile(card: &Card, opts: &Options, out: &Path) -> anyhow::Result<Report> {
    let (target, extra_files) = target::find(&opts.target)?;
    if target.is_shader() {
        return shader::compile(card, opts, &target, out);
    }
    let max_flash = opts.max_flash.or(target.flash_bytes);
    let p = plan_card(card, opts.format, max_flash, &target)?;
    check_ram(opts.max_ram, &target, &p.report, "the model")?;
    let src = emit_c::emit(&p.program, &p.plan, &target, &p.bufs);
    let report = p.report;
    let files = [
        ("model.h".to_string(), src.header),
        ("model.c".to_string(), src.model_c),
        (
            "Makefile".to_string(),
            emit_c::makefile(&target, &report.sources),
        ),
        (
            "report.json".to_string(),
            serde_json::to_string_pretty(&report)?,
        ),
    ];
    write_artifact(out, &target, extra_files, &files)?;
    let _ = std::fs::remove_file(out.join(deck::DECK_FILE));
    let card_path = out.join("model.card");
    card.save(&card_path)
        .with_context(|| format!("cannot write {}", card_path.display()))?;
    Ok(report)
}
