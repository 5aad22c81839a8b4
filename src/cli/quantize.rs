//! `cardc quantize`: post-training quantization of a card's conv/linear
//! weights to f16 or int8, with test accuracy before and after.

use crate::card::Card;
use crate::compress::quantize::{self, Format, ScaleRule};
use crate::data::{self, Augment, DataSpec, Dataset, Split, make_batch};
use crate::rng::Rng;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct QuantizeArgs {
    /// The .card to quantize.
    #[arg(long)]
    pub model: PathBuf,
    /// f16 | int8 (per-output-channel symmetric).
    #[arg(long)]
    pub format: String,
    /// Dataset: training images calibrate int8 scales, test images measure accuracy.
    #[arg(long)]
    pub data: String,
    /// Output card.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images used to calibrate int8 scales and measure each
    /// layer's output error (0: no calibration, max-abs scales).
    #[arg(long, default_value_t = 256)]
    pub calib: usize,
    /// Evaluate on at most N test images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// int8 scale rule: calibrated (per-channel clipping minimizing the
    /// layer output error) | maxabs.
    #[arg(long, default_value = "calibrated")]
    pub scales: String,
    /// Seed for the choice of calibration images and patches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// auto | cpu | wgpu (evaluation only; calibration runs on the CPU).
    #[arg(long, default_value = "auto")]
    pub backend: String,
}

/// Checks that a dataset fits the card's input and classes.
fn check_fits(
    card: &Card,
    ds: &Dataset,
    spec: &DataSpec,
    model: &std::path::Path,
) -> anyhow::Result<()> {
    let [c, h, w] = card.model.graph.input_shape();
    anyhow::ensure!(
        [c, h, w] == [ds.channels, ds.height, ds.width],
        "{} takes {c}x{h}x{w} images but {spec} has {}x{}x{}",
        model.display(),
        ds.channels,
        ds.height,
        ds.width
    );
    let classes = card.model.graph.classes();
    if let Some(bad) = ds.labels.iter().find(|&&l| l as usize >= classes) {
        anyhow::bail!(
            "{spec} has label {bad} but {} has {classes} classes",
            model.display()
        );
    }
    Ok(())
}

pub fn run(a: QuantizeArgs, json: bool) -> anyhow::Result<()> {
    let format = Format::parse(&a.format)?;
    let rule = ScaleRule::parse(&a.scales)?;
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let mut card = Card::load(&a.model)?;
    let spec = DataSpec::parse(&a.data)?;
    let mut test = data::load(&spec, Split::Test)?;
    if let Some(n) = a.limit {
        test = test.limit(n);
    }
    check_fits(&card, &test, &spec, &a.model)?;
    let mut backend = crate::backend::select(&a.backend)?;
    let before = crate::eval::evaluate(
        backend.as_mut(),
        &card.model,
        &test,
        &card.normalization,
        a.batch,
    )?;
    let bytes_before = quantize::stored_bytes(&card.model);

    let calib = if format == Format::Int8 && a.calib > 0 {
        let train = data::load(&spec, Split::Train)?;
        check_fits(&card, &train, &spec, &a.model)?;
        anyhow::ensure!(
            !train.labels.is_empty(),
            "{spec} has no training images to calibrate on"
        );
        let mut order: Vec<usize> = (0..train.len()).collect();
        Rng::derive(a.seed, "calibration images").shuffle(&mut order);
        order.truncate(a.calib);
        Some(make_batch(&train, &order, &card.normalization, Augment::None, 0).0)
    } else {
        None
    };
    let t = std::time::Instant::now();
    let layers = quantize::quantize(&mut card.model, format, rule, calib.as_ref(), a.seed)
        .with_context(|| format!("{}: quantization", a.model.display()))?;
    let secs = t.elapsed().as_secs_f64();
    let after = crate::eval::evaluate(
        backend.as_mut(),
        &card.model,
        &test,
        &card.normalization,
        a.batch,
    )?;
    let bytes = quantize::stored_bytes(&card.model);

    let how = match (format, &calib) {
        (Format::F16, _) => "f16".to_string(),
        (Format::Int8, Some(_)) => format!(
            "int8 per-channel, {} scales, {} calibration images",
            rule.name(),
            a.calib
        ),
        (Format::Int8, None) => "int8 per-channel, maxabs scales".to_string(),
    };
    card.provenance.notes.push(format!("quantized: {how}"));
    card.metrics
        .insert("accuracy_before_quantization".into(), before.accuracy);
    card.metrics
        .insert("accuracy_after_quantization".into(), after.accuracy);
    card.metrics
        .insert("quantization_test_images".into(), after.images as f64);
    // The training run's test metrics describe the f32 weights: replace
    // them when the whole test split was measured, else drop them.
    if a.limit.is_none() {
        card.metrics.insert("test_accuracy".into(), after.accuracy);
        card.metrics.insert("test_ece".into(), after.ece);
    } else {
        card.metrics.remove("test_accuracy");
        card.metrics.remove("test_ece");
    }
    card.save(&a.out)?;
    eprintln!(
        "wrote {}: {how}; test accuracy {:.2}% -> {:.2}% ({} images), weights {} -> {} bytes ({:.1} s)",
        a.out.display(),
        100.0 * before.accuracy,
        100.0 * after.accuracy,
        after.images,
        bytes_before,
        bytes,
        secs
    );
    if json {
        super::print_json(&serde_json::json!({
            "out": a.out.display().to_string(),
            "format": format.name(),
            "scales": if format == Format::Int8 { Some(rule.name()) } else { None },
            "calibration_images": calib.as_ref().map_or(0, |c| c.shape[0]),
            "images": after.images,
            "accuracy_before": before.accuracy,
            "accuracy": after.accuracy,
            "ece": after.ece,
            "bytes_before": bytes_before,
            "bytes": bytes,
            "seconds": secs,
            "layers": layers,
        }))?;
    }
    Ok(())
}
