//! `cardc import`: an ONNX file as a card.

use crate::onnx::{ImportOptions, import_path};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The .onnx file to import.
    pub onnx: PathBuf,
    /// The .card to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Per-channel mean of the [0, 1]-scaled input, e.g. 0.4914,0.4822,0.4465
    /// (default: the file's cardc metadata, else CIFAR-10's).
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel standard deviation, e.g. 0.2470,0.2435,0.2616.
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Class names in logit order, comma-separated (default: the file's
    /// cardc metadata, else class_0, class_1, ...).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
}

pub fn run(a: ImportArgs, json: bool) -> anyhow::Result<()> {
    let opts = ImportOptions {
        mean: a.mean,
        std: a.std,
        classes: a.classes,
    };
    let imported = import_path(&a.onnx, &opts)?;
    let card = imported.card;
    // Saved before the notes are printed: a refused --out stays the only
    // line on stderr.
    card.save(&a.out)?;
    for note in &imported.notes {
        eprintln!("note: {note}");
    }
    let g = &card.model.graph;
    eprintln!(
        "{} -> {}: {} layers, {} parameters, {} classes, input {:?}",
        a.onnx.display(),
        a.out.display(),
        g.nodes.len(),
        card.model.param_count(),
        g.classes(),
        g.input_shape()
    );
    if json {
        super::print_json(&serde_json::json!({
            "onnx": a.onnx.display().to_string(),
            "out": a.out.display().to_string(),
            "layers": g.nodes.len(),
            "params": card.model.param_count(),
            "classes": card.class_names,
            "input": g.input_shape(),
            "normalization": card.normalization,
            "notes": imported.notes,
        }))?;
    }
    Ok(())
}
