//! `cardc compile`: a card to a C artifact for a target.

use crate::card::Card;
use crate::compile::{self, Format, FormatChoice};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The .card to compile.
    #[arg(long)]
    pub model: PathBuf,
    /// host | arm (cortex-m4 cortex-m33 spirv msl glsl wgsl: not built yet).
    #[arg(long, default_value = "host")]
    pub target: String,
    /// Output directory (sources, Makefile, report.json).
    #[arg(long)]
    pub out: PathBuf,
    /// auto | f32 | f16 | int8 | sparse | binary (binary applies to binary layers only).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Flash budget in bytes: auto quantizes the largest layers until the weights fit.
    #[arg(long)]
    pub max_flash: Option<u64>,
    /// RAM budget in bytes (arena + scratch).
    #[arg(long)]
    pub max_ram: Option<u64>,
}

pub fn run(a: CompileArgs, json: bool) -> anyhow::Result<()> {
    let format = match a.format.as_str() {
        "auto" => FormatChoice::Auto,
        s => FormatChoice::Force(Format::parse(s).ok_or_else(|| {
            anyhow::anyhow!("--format {s}: expected auto, f32, f16, int8, sparse or binary")
        })?),
    };
    if a.model.extension().is_some_and(|e| e == "deck") {
        anyhow::bail!(
            "{}: compiling decks is not built yet (cards only)",
            a.model.display()
        );
    }
    let card = Card::load(&a.model)?;
    let opts = compile::Options {
        target: a.target.clone(),
        format,
        max_flash: a.max_flash,
        max_ram: a.max_ram,
    };
    let r = compile::compile(&card, &opts, &a.out)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", a.model.display()))?;
    eprintln!(
        "{} -> {} ({}): flash {} B, arena {} B (lower bound {} B), scratch {} B, {} MACs",
        a.model.display(),
        a.out.display(),
        r.target,
        r.flash_bytes,
        r.arena_bytes,
        r.arena_lower_bound_bytes,
        r.scratch_bytes,
        r.macs
    );
    for l in &r.layers {
        eprintln!(
            "  {:<24} {:<7} {:<7} {:>9} B  zeros {:>5.1}%",
            l.name,
            l.op,
            l.format,
            l.bytes,
            100.0 * l.zero_fraction
        );
    }
    if json {
        super::print_json(&r)?;
    }
    Ok(())
}
