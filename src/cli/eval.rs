//! `cardc eval`.

use crate::card::Card;
use crate::data::{self, DataSpec, Split};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A .card (.deck and .onnx arrive with later milestones).
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset: cifar10:DIR, imagefolder:DIR, synthetic[:N].
    #[arg(long)]
    pub data: String,
    /// train | test
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate at most N images.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// auto | cpu | wgpu
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Corruption table (robustness milestone).
    #[arg(long)]
    pub corruptions: Option<String>,
    #[arg(long)]
    pub severities: Option<String>,
    /// Adversarial attack (robustness milestone).
    #[arg(long)]
    pub attack: Vec<String>,
}

pub fn run(a: EvalArgs, json: bool) -> anyhow::Result<()> {
    if a.corruptions.is_some() || a.severities.is_some() {
        anyhow::bail!(
            "--corruptions/--severities: not built yet (arrives with the robustness milestone)"
        );
    }
    if let Some(at) = a.attack.first() {
        anyhow::bail!("--attack {at}: not built yet (arrives with the robustness milestone)");
    }
    let ext = a.model.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext {
        "deck" => anyhow::bail!(
            "{}: decks are not built yet (CARD-Deck milestone)",
            a.model.display()
        ),
        "onnx" => anyhow::bail!(
            "{}: ONNX evaluation is not built yet (ONNX milestone)",
            a.model.display()
        ),
        _ => {}
    }
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("--split '{s}': expected train or test"),
    };
    let card = Card::load(&a.model)?;
    let spec = DataSpec::parse(&a.data)?;
    let mut ds = data::load(&spec, split)?;
    if let Some(n) = a.limit {
        ds = ds.limit(n);
    }
    let [c, h, w] = card.model.graph.input_shape();
    anyhow::ensure!(
        [c, h, w] == [ds.channels, ds.height, ds.width],
        "{} takes {c}x{h}x{w} images but {} has {}x{}x{}",
        a.model.display(),
        spec,
        ds.channels,
        ds.height,
        ds.width
    );
    let classes = card.model.graph.classes();
    if let Some(bad) = ds.labels.iter().find(|&&l| l as usize >= classes) {
        anyhow::bail!(
            "{} has label {bad} but {} has {classes} classes",
            spec,
            a.model.display()
        );
    }
    let mut backend = crate::backend::select(&a.backend)?;
    let t = std::time::Instant::now();
    let r = crate::eval::evaluate(
        backend.as_mut(),
        &card.model,
        &ds,
        &card.normalization,
        a.batch,
    )?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} on {} ({} images): accuracy {:.2}%, ECE {:.4} ({:.1} s)",
        a.model.display(),
        spec,
        r.images,
        100.0 * r.accuracy,
        r.ece,
        secs
    );
    for (i, pc) in r.per_class.iter().enumerate() {
        let name = card.class_names.get(i).unwrap_or(&pc.class);
        eprintln!(
            "  {:<12} {:>6.2}%  ({} images)",
            name,
            100.0 * pc.accuracy,
            pc.images
        );
    }
    if json {
        super::print_json(&serde_json::json!({
            "model": a.model.display().to_string(),
            "data": spec.to_string(),
            "images": r.images,
            "accuracy": r.accuracy,
            "ece": r.ece,
            "per_class": r.per_class,
            "reliability": r.reliability,
            "seconds": secs,
            "backend": backend.name(),
        }))?;
    }
    Ok(())
}
