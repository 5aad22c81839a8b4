//! The robustness evaluation behind `cardc eval`: clean accuracy and
//! calibration, the corruption table (generated on the fly or read from a
//! CIFAR-10-C directory), corruption errors against a baseline card, and
//! adversarial accuracy under each requested attack.

use super::attack::{AttackSpec, attack_batch};
use super::table::{CorruptionTable, mean_defined};
use crate::backend::Backend;
use crate::card::Card;
use crate::corrupt::corrupt_dataset;
use crate::data::cifar10c::Cifar10C;
use crate::data::{Dataset, Normalization};
use crate::eval::{self, ClassAccuracy, Classifier, ECE_BINS, Predictions};
use crate::rng::Rng;
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Where the corrupted cells come from.
pub enum CorruptionSource<'a> {
    /// Generated from clean images with [`corrupt_dataset`] (image i of
    /// cell (c, s) seeded by `seed`, c, s, i).
    Generated { clean: &'a Dataset, seed: u64 },
    /// Read from a CIFAR-10-C-layout directory.
    Cifar10C(&'a Cifar10C),
}

impl CorruptionSource<'_> {
    /// The images of one cell, at most `limit` of them.
    pub fn cell(&self, name: &str, severity: u8, limit: Option<usize>) -> anyhow::Result<Dataset> {
        let ds = match self {
            CorruptionSource::Generated { clean, seed } => {
                corrupt_dataset(clean, name, severity, *seed)?
            }
            CorruptionSource::Cifar10C(c) => c.cell(name, severity)?,
        };
        Ok(match limit {
            Some(n) => ds.limit(n),
            None => ds,
        })
    }
}

/// What to evaluate besides clean accuracy.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// Corruption names (rows of the table), empty for none.
    pub corruptions: Vec<&'static str>,
    /// Severities (columns), 1..=5.
    pub severities: Vec<u8>,
    /// Attacks as the user spelled them (the `attacks` JSON keys) and parsed.
    pub attacks: Vec<(String, AttackSpec)>,
    /// At most this many images per cell (the clean set is limited by the caller).
    pub limit: Option<usize>,
    /// Seed of attack random starts.
    pub seed: u64,
    /// Images per forward pass.
    pub batch: usize,
    /// No progress lines on stderr.
    pub quiet: bool,
}

/// A card to evaluate and the name reports give it.
pub struct Subject<'a> {
    pub name: String,
    pub card: &'a Card,
}

/// A card or a deck to evaluate and the name reports give it.
pub struct Evaluee<'a> {
    pub name: String,
    pub model: Classifier<'a>,
}

impl<'a> From<&Subject<'a>> for Evaluee<'a> {
    fn from(s: &Subject<'a>) -> Evaluee<'a> {
        Evaluee {
            name: s.name.clone(),
            model: Classifier::Card(s.card),
        }
    }
}

/// What a deck's gate chose (the `gate_picks` of `eval --json`): per
/// member, the fraction of images it answered for, on the clean set and
/// per corruption cell, and what the gate cost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GatePicks {
    /// Member names in deck order.
    pub members: Vec<String>,
    /// The gate settings in words.
    pub gate: String,
    /// `{member: fraction}` on the clean images.
    pub clean: BTreeMap<String, f64>,
    /// `{corruption: {severity: {member: fraction}}}`.
    pub corruptions: BTreeMap<String, BTreeMap<String, BTreeMap<String, f64>>>,
    /// Mean gate time per image (spectrum, distances, selection), µs.
    pub gate_us_per_image: f64,
    /// Mean time per image of the chosen cards' forward passes, µs.
    pub cards_us_per_image: f64,
}

/// Accuracy under one attack.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackResult {
    /// As given to `--attack`.
    pub spec: String,
    /// With every parameter spelled out (PGD step included).
    pub canonical: String,
    pub accuracy: f64,
    pub images: usize,
    pub seconds: f64,
}

/// The comparison with a baseline card on the same cells.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineComparison {
    pub model: String,
    pub accuracy: Option<f64>,
    pub mean_corruption_accuracy: Option<f64>,
    /// Per corruption `Σ_s err / Σ_s err_baseline` (null where the baseline makes no error).
    pub corruption_error: BTreeMap<String, Option<f64>>,
    /// Mean of the defined corruption errors (mCE; 1 = as good as the baseline).
    pub mce: Option<f64>,
    /// Per corruption `Σ_s (err − err_clean) / Σ_s (err_b − err_b_clean)`.
    pub relative_corruption_error: BTreeMap<String, Option<f64>>,
    pub relative_mce: Option<f64>,
    /// The baseline's own table.
    pub table: CorruptionTable,
}

/// Everything `cardc eval` measures; written as `eval.json` and read back
/// by `cardc report`. Fractions in [0, 1].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RobustReport {
    pub model: String,
    pub data: String,
    /// Clean images evaluated (0 without a clean set).
    pub images: usize,
    /// Clean accuracy (null when only corrupted cells were given).
    pub accuracy: Option<f64>,
    /// Clean expected calibration error (15 bins).
    pub ece: Option<f64>,
    pub per_class: Vec<ClassAccuracy>,
    /// Clean reliability diagram: per bin (mean confidence, accuracy, count).
    pub reliability: Vec<(f64, f64, usize)>,
    /// `{corruption: {severity: accuracy}}`.
    pub corruptions: BTreeMap<String, BTreeMap<String, f64>>,
    /// `{corruption: {severity: ece}}`.
    pub corruption_ece: BTreeMap<String, BTreeMap<String, f64>>,
    /// Mean over all cells (RobustBench robust accuracy for the full 15×5).
    pub mean_corruption_accuracy: Option<f64>,
    /// Mean accuracy per corruption over its severities.
    pub corruption_means: BTreeMap<String, f64>,
    /// Mean accuracy per severity over the corruptions.
    pub severity_means: BTreeMap<String, f64>,
    /// ECE of all corrupted predictions pooled, and its reliability diagram.
    pub corrupted_ece: Option<f64>,
    pub corrupted_reliability: Vec<(f64, f64, usize)>,
    /// The ordered table (rows in reference order) the maps come from.
    pub corruption_table: CorruptionTable,
    pub baseline: Option<BaselineComparison>,
    /// Decks only: which cards the gate chose, clean and per cell.
    #[serde(default)]
    pub gate_picks: Option<GatePicks>,
    /// `{spec: accuracy}` under each attack.
    pub attacks: BTreeMap<String, f64>,
    pub attack_details: Vec<AttackResult>,
    pub seed: u64,
    pub backend: String,
    pub seconds: f64,
}

/// Checks that `ds` fits `card` (image shape, labels within its classes).
pub fn check_compatible(card: &Card, name: &str, ds: &Dataset) -> anyhow::Result<()> {
    check_fits(&Classifier::Card(card), name, ds)
}

/// Checks that `ds` fits a card or deck (image shape, labels within its classes).
pub fn check_fits(model: &Classifier, name: &str, ds: &Dataset) -> anyhow::Result<()> {
    let [c, h, w] = model.input_shape();
    anyhow::ensure!(
        [c, h, w] == [ds.channels, ds.height, ds.width],
        "{name} takes {c}x{h}x{w} images but {} has {}x{}x{}",
        ds.source,
        ds.channels,
        ds.height,
        ds.width
    );
    let classes = model.classes();
    if let Some(bad) = ds.labels.iter().find(|&&l| l as usize >= classes) {
        anyhow::bail!(
            "{} has label {bad} but {name} has {classes} classes",
            ds.source
        );
    }
    Ok(())
}

/// Appends `more` predictions to `all`.
fn extend(all: &mut Predictions, more: Predictions) {
    all.predicted.extend(more.predicted);
    all.confidence.extend(more.confidence);
    all.labels.extend(more.labels);
}

fn accuracy_of(p: &Predictions) -> f64 {
    let n = p.labels.len();
    let hits = p
        .predicted
        .iter()
        .zip(&p.labels)
        .filter(|(a, b)| **a == **b as usize)
        .count();
    if n == 0 { 0.0 } else { hits as f64 / n as f64 }
}

/// The images of `ds` at `idx` as [0, 1] pixels `[B, C, H, W]`.
fn pixels(ds: &Dataset, idx: std::ops::Range<usize>) -> Vec<f32> {
    idx.flat_map(|i| ds.image(i).iter().map(|&b| b as f32 / 255.0))
        .collect()
}

/// Accuracy of `card` on `clean` under `spec`, batch by batch; random
/// starts draw from one generator per batch derived from `seed`, the spec
/// and the batch index (reproducible, independent of thread count).
pub fn attack_accuracy(
    backend: &mut dyn Backend,
    model: &crate::model::Model,
    normalization: &Normalization,
    clean: &Dataset,
    spec: &AttackSpec,
    seed: u64,
    batch: usize,
) -> anyhow::Result<f64> {
    let (c, plane) = (clean.channels, clean.height * clean.width);
    let mut hits = 0usize;
    let batch = batch.max(1);
    for (k, start) in (0..clean.len()).step_by(batch).enumerate() {
        let end = (start + batch).min(clean.len());
        let labels = &clean.labels[start..end];
        let x = pixels(clean, start..end);
        let mut rng = Rng::derive(seed, &format!("attack/{spec}/{k}"));
        let mut adv = attack_batch(model, normalization, &x, labels, spec, &mut rng)?;
        normalization.normalize_pixels(&mut adv, plane);
        let t = Tensor::from_vec(&[end - start, c, clean.height, clean.width], adv);
        let logits = backend.infer(model, &t)?;
        hits += logits
            .argmax_rows()
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p == **l as usize)
            .count();
    }
    Ok(if clean.is_empty() {
        0.0
    } else {
        hits as f64 / clean.len() as f64
    })
}

/// Per member, the fraction of `p`'s images the gate chose it for.
fn pick_fractions(p: &Predictions) -> Vec<f64> {
    let n = p.labels.len().max(1) as f64;
    p.gate_picks.iter().map(|&k| k as f64 / n).collect()
}

/// Runs the evaluation of a card (see [`run_classifier`]).
pub fn run(
    backend: &mut dyn Backend,
    subject: &Subject,
    baseline: Option<&Subject>,
    data_name: &str,
    clean: Option<&Dataset>,
    source: Option<&CorruptionSource>,
    cfg: &SuiteConfig,
) -> anyhow::Result<RobustReport> {
    let base = baseline.map(Evaluee::from);
    run_classifier(
        backend,
        &Evaluee::from(subject),
        base.as_ref(),
        data_name,
        clean,
        source,
        cfg,
    )
}

/// Runs the evaluation of a card or deck. `clean` is the clean test set
/// (needed for clean accuracy and attacks); `source` provides the corrupted
/// cells (needed when `cfg.corruptions` is not empty). The baseline is
/// evaluated on the same clean images and cells. Decks also report which
/// cards their gate chose; attacks on a deck are refused (its top-k gate has
/// no useful input gradient, so a white-box number would overstate it).
pub fn run_classifier(
    backend: &mut dyn Backend,
    subject: &Evaluee,
    baseline: Option<&Evaluee>,
    data_name: &str,
    clean: Option<&Dataset>,
    source: Option<&CorruptionSource>,
    cfg: &SuiteConfig,
) -> anyhow::Result<RobustReport> {
    let t0 = Instant::now();
    let say = |s: String| {
        if !cfg.quiet {
            eprintln!("{s}");
        }
    };
    let batch = cfg.batch.max(1);
    let model = &subject.model;
    let mut subjects = vec![subject];
    subjects.extend(baseline);
    // Attacks run on the subject only (not the baseline).
    if !cfg.attacks.is_empty() && model.deck().is_some() {
        anyhow::bail!(
            "{}: attacks on decks are not supported (the gate's top-k choice has no useful input gradient); attack its cards one by one",
            subject.name
        );
    }
    let (mut gate_s, mut cards_s, mut gated) = (0.0f64, 0.0f64, 0usize);
    let mut clean_picks = Vec::new();

    // Clean accuracy and calibration.
    let (mut clean_acc, mut base_clean_acc) = (None, None);
    let mut report_clean = None;
    if let Some(ds) = clean {
        for s in &subjects {
            check_fits(&s.model, &s.name, ds)?;
        }
        let p = model.predict(backend, ds, batch)?;
        clean_picks = pick_fractions(&p);
        gate_s += p.gate_seconds;
        cards_s += p.model_seconds;
        gated += p.labels.len();
        let r = eval::summarize(&p, &ds.class_names);
        say(format!(
            "clean: accuracy {:.2}%, ECE {:.4} ({} images)",
            100.0 * r.accuracy,
            r.ece,
            r.images
        ));
        clean_acc = Some(r.accuracy);
        if let Some(b) = baseline {
            let rb = eval::summarize(&b.model.predict(backend, ds, batch)?, &ds.class_names);
            say(format!(
                "baseline clean: accuracy {:.2}%",
                100.0 * rb.accuracy
            ));
            base_clean_acc = Some(rb.accuracy);
        }
        report_clean = Some(r);
    }

    // The corruption table (and the baseline's on the same cells).
    let mut table = CorruptionTable::new(&cfg.corruptions, &cfg.severities);
    let mut base_table = table.clone();
    let members: Vec<String> = model
        .deck()
        .map(|d| d.members.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    if !members.is_empty() {
        table = table.with_gate_members(&members);
    }
    let mut pooled = Predictions::default();
    if !table.is_empty() {
        let source = source.ok_or_else(|| {
            anyhow::anyhow!("--corruptions: no corrupted or clean images to evaluate")
        })?;
        for (r, name) in cfg.corruptions.iter().enumerate() {
            let tc = Instant::now();
            for (col, &sev) in cfg.severities.iter().enumerate() {
                let ds = source.cell(name, sev, cfg.limit)?;
                for s in &subjects {
                    check_fits(&s.model, &s.name, &ds)?;
                }
                let p = model.predict(backend, &ds, batch)?;
                if !members.is_empty() {
                    table.gate_picks[r][col] = pick_fractions(&p);
                }
                gate_s += p.gate_seconds;
                cards_s += p.model_seconds;
                gated += p.labels.len();
                table.accuracy[r][col] = accuracy_of(&p);
                table.ece[r][col] = eval::calibration(&p, ECE_BINS).0;
                table.images[r][col] = p.labels.len();
                extend(&mut pooled, p);
                if let Some(b) = baseline {
                    let pb = b.model.predict(backend, &ds, batch)?;
                    base_table.accuracy[r][col] = accuracy_of(&pb);
                    base_table.ece[r][col] = eval::calibration(&pb, ECE_BINS).0;
                    base_table.images[r][col] = pb.labels.len();
                }
            }
            let row: Vec<String> = table.accuracy[r]
                .iter()
                .map(|a| format!("{:.1}", 100.0 * a))
                .collect();
            say(format!(
                "{:>2}/{} {name:<18} {} % ({:.1} s)",
                r + 1,
                cfg.corruptions.len(),
                row.join(" "),
                tc.elapsed().as_secs_f64()
            ));
        }
    }
    let (corrupted_ece, corrupted_reliability) = if pooled.labels.is_empty() {
        (None, Vec::new())
    } else {
        let (e, d) = eval::calibration(&pooled, ECE_BINS);
        (Some(e), d)
    };

    let baseline_cmp = match baseline {
        Some(b) if !table.is_empty() => {
            let ce = table.corruption_errors(&base_table);
            let rce = match (clean_acc, base_clean_acc) {
                (Some(a), Some(ab)) => table.relative_corruption_errors(a, &base_table, ab),
                _ => vec![None; table.corruptions.len()],
            };
            let named = |v: &[Option<f64>]| -> BTreeMap<String, Option<f64>> {
                table
                    .corruptions
                    .iter()
                    .cloned()
                    .zip(v.iter().copied())
                    .collect()
            };
            Some(BaselineComparison {
                model: b.name.clone(),
                accuracy: base_clean_acc,
                mean_corruption_accuracy: base_table.mean_accuracy(),
                corruption_error: named(&ce),
                mce: mean_defined(&ce),
                relative_corruption_error: named(&rce),
                relative_mce: mean_defined(&rce),
                table: base_table,
            })
        }
        Some(b) => Some(BaselineComparison {
            model: b.name.clone(),
            accuracy: base_clean_acc,
            mean_corruption_accuracy: None,
            corruption_error: BTreeMap::new(),
            mce: None,
            relative_corruption_error: BTreeMap::new(),
            relative_mce: None,
            table: base_table,
        }),
        None => None,
    };

    // Attacks on the clean images.
    let mut attacks = BTreeMap::new();
    let mut details = Vec::new();
    if !cfg.attacks.is_empty() {
        let ds = clean.ok_or_else(|| {
            anyhow::anyhow!("--attack needs clean test images; cifar10c data holds corrupted ones only (add --clean-data)")
        })?;
        for (text, spec) in &cfg.attacks {
            let ta = Instant::now();
            let Classifier::Card(card) = model else {
                anyhow::bail!("{}: attacks on decks are not supported", subject.name);
            };
            let acc = attack_accuracy(
                backend,
                &card.model,
                &card.normalization,
                ds,
                spec,
                cfg.seed,
                batch,
            )?;
            let secs = ta.elapsed().as_secs_f64();
            say(format!(
                "attack {spec}: accuracy {:.2}% ({} images, {secs:.1} s)",
                100.0 * acc,
                ds.len()
            ));
            attacks.insert(text.clone(), acc);
            details.push(AttackResult {
                spec: text.clone(),
                canonical: spec.to_string(),
                accuracy: acc,
                images: ds.len(),
                seconds: secs,
            });
        }
    }

    let names = &table.corruptions;
    let per_image = |s: f64| 1e6 * s / gated.max(1) as f64;
    let gate_picks = model.deck().map(|d| GatePicks {
        members: members.clone(),
        gate: d.gate.to_string(),
        clean: members
            .iter()
            .cloned()
            .zip(clean_picks.iter().copied())
            .collect(),
        corruptions: table.gate_picks_map(),
        gate_us_per_image: per_image(gate_s),
        cards_us_per_image: per_image(cards_s),
    });
    Ok(RobustReport {
        model: subject.name.clone(),
        data: data_name.to_string(),
        images: report_clean.as_ref().map_or(0, |r| r.images),
        accuracy: clean_acc,
        ece: report_clean.as_ref().map(|r| r.ece),
        per_class: report_clean
            .as_ref()
            .map_or_else(Vec::new, |r| r.per_class.clone()),
        reliability: report_clean
            .as_ref()
            .map_or_else(Vec::new, |r| r.reliability.clone()),
        corruptions: table.accuracy_map(),
        corruption_ece: table.ece_map(),
        mean_corruption_accuracy: table.mean_accuracy(),
        corruption_means: names
            .iter()
            .cloned()
            .zip(table.corruption_means())
            .collect(),
        severity_means: table
            .severities
            .iter()
            .map(|s| s.to_string())
            .zip(table.severity_means())
            .collect(),
        corrupted_ece,
        corrupted_reliability,
        corruption_table: table,
        baseline: baseline_cmp,
        gate_picks,
        attacks,
        attack_details: details,
        seed: cfg.seed,
        backend: backend.name().to_string(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}
