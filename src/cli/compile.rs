//! `cardc compile`: a card or deck to a C artifact for a target.

use crate::compile::{self, Format, FormatChoice};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    /// The .card or .deck to compile.
    #[arg(long)]
    pub model: PathBuf,
    /// host | arm | cortex-m4 | cortex-m33 (C) or spirv | msl | glsl | wgsl (GPU inference shaders).
    #[arg(long, default_value = "host")]
    pub target: String,
    /// Output directory (sources, Makefile, report.json).
    #[arg(long)]
    pub out: PathBuf,
    /// auto | f32 | f16 | int8 | sparse | sparse8 | binary | rice | xnor (sparse8: sparse with
    /// int8 values, auto's choice for sparse layers of an int8 card; binary, rice and xnor apply
    /// to binary layers only; rice is the smallest: Rice-coded gaps, decoded into RAM at run
    /// time; xnor is binary weights on a Sign output (binary activations): XOR and popcount).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Flash budget in bytes: auto Rice-codes binary layers, then quantizes sparse layers
    /// (sparse8), then the layers int8 shrinks most, until the weights fit.
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
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            anyhow::anyhow!("--format {s}: expected auto or one of {}", names.join(", "))
        })?),
    };
    let opts = compile::Options {
        target: a.target.clone(),
        format,
        max_flash: a.max_flash,
        max_ram: a.max_ram,
    };
    let r = match super::eval::load_any(&a.model)? {
        super::eval::Loaded::Card(card) => compile::compile(&card, &opts, &a.out),
        super::eval::Loaded::Deck(deck) => compile::deck::compile_deck(&deck, &opts, &a.out),
    }
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
    let bounded: Vec<_> = r
        .layers
        .iter()
        .filter(|l| l.bound_bytes.is_some())
        .collect();
    if !bounded.is_empty() {
        let bytes: u64 = bounded.iter().map(|l| l.weight_bytes).sum();
        let bound: f64 = bounded.iter().filter_map(|l| l.bound_bytes).sum();
        eprintln!(
            "  {} binary layers: {bytes} B of packed weights, {:.2}x their information bound ({bound:.0} B)",
            bounded.len(),
            bytes as f64 / bound.max(1.0)
        );
    }
    if let Some(d) = &r.deck {
        eprintln!(
            "  deck: {} gate ({}), {} of {} cards per image; gate tables {} B, gate RAM {} B",
            d.gate,
            d.metric,
            d.k,
            d.members.len(),
            d.gate_flash_bytes,
            d.gate_ram_bytes
        );
    }
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
