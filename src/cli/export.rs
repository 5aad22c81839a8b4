//! `cardc export`: a card as an ONNX file.

use crate::card::Card;
use crate::onnx::{ExportOptions, export_file};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The .card to export.
    #[arg(long)]
    pub model: PathBuf,
    /// The .onnx file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// ONNX opset, 13 to 17.
    #[arg(long, default_value_t = 13)]
    pub opset: i64,
    /// Fold BatchNorm into the preceding conv/linear layers.
    #[arg(long)]
    pub fold_bn: bool,
}

pub fn run(a: ExportArgs, json: bool) -> anyhow::Result<()> {
    let card = Card::load(&a.model)?;
    let opts = ExportOptions {
        opset: a.opset,
        fold_bn: a.fold_bn,
    };
    let s = export_file(&card, &a.out, &opts)
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", a.out.display()))?;
    eprintln!(
        "{} -> {}: opset {}, {} ONNX nodes, {} BatchNorm folded, {} weights, {} bytes",
        a.model.display(),
        a.out.display(),
        s.opset,
        s.nodes,
        s.folded_bn,
        s.values,
        s.bytes
    );
    if json {
        super::print_json(&serde_json::json!({
            "model": a.model.display().to_string(),
            "out": a.out.display().to_string(),
            "opset": s.opset,
            "nodes": s.nodes,
            "folded_bn": s.folded_bn,
            "values": s.values,
            "bytes": s.bytes,
        }))?;
    }
    Ok(())
}
