//! `cardc eval`: clean accuracy and calibration, the corruption table,
//! adversarial accuracy, a comparison with a baseline, and a report
//! directory (the work lives in [`crate::robust`]).

use crate::card::{Card, Kind};
use crate::corrupt;
use crate::data::cifar10c::Cifar10C;
use crate::data::{self, DataSpec, Dataset, Split};
use crate::deck::Deck;
use crate::eval::Classifier;
use crate::robust::AttackSpec;
use crate::robust::report::write_run_dir;
use crate::robust::suite::{self, CorruptionSource, Evaluee, SuiteConfig};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A .card, .deck or .onnx model.
    #[arg(long)]
    pub model: PathBuf,
    /// Dataset: cifar10:DIR, imagefolder:DIR, synthetic[:N], or cifar10c:DIR
    /// (CIFAR-10-C .npy files; corrupted images only, see --clean-data).
    #[arg(long)]
    pub data: String,
    /// train | test
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Clean test set to go with cifar10c:DIR data (for clean accuracy and attacks).
    #[arg(long)]
    pub clean_data: Option<String>,
    /// Evaluate at most N images (clean set and each corrupted cell).
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// auto | cpu | wgpu
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// Corruption table: all, or a comma-separated list of corruption names.
    #[arg(long)]
    pub corruptions: Option<String>,
    /// Severities of the table: 1-5 (default), 3, or a list like 1,3,5.
    #[arg(long)]
    pub severities: Option<String>,
    /// Adversarial attack, repeatable: fgsm:EPS, pgd-linf:EPS:STEPS[:STEP],
    /// pgd-l2:EPS:STEPS[:STEP]; EPS in [0,1] pixel units (8/255 allowed).
    #[arg(long)]
    pub attack: Vec<String>,
    /// Baseline card for corruption errors (CE, mCE), evaluated on the same cells.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Write eval.json, figures and report.html/report.md into this directory.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Seed of generated corruptions and attack random starts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Loads a `.card` or imports an `.onnx`.
pub fn load_model(path: &Path) -> anyhow::Result<Card> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "onnx" => crate::onnx::import_file(path, &crate::onnx::ImportOptions::default()),
        _ => Ok(Card::load(path)?),
    }
}

/// What `--model`/`--baseline` name: a card (or ONNX model) or a deck.
pub enum Loaded {
    Card(Box<Card>),
    Deck(Box<Deck>),
}

impl Loaded {
    /// The evaluation view of it.
    pub fn classifier(&self) -> Classifier<'_> {
        match self {
            Loaded::Card(c) => Classifier::Card(c),
            Loaded::Deck(d) => Classifier::Deck(d),
        }
    }
}

/// Loads a deck (`.deck`, or any cardc file whose header says deck), a
/// card, or imports an `.onnx`.
pub fn load_any(path: &Path) -> anyhow::Result<Loaded> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let is_deck = ext.eq_ignore_ascii_case("deck")
        || crate::card::read_header(path).is_ok_and(|h| h.kind == Kind::Deck);
    if is_deck {
        Ok(Loaded::Deck(Box::new(Deck::load(path)?)))
    } else {
        Ok(Loaded::Card(Box::new(load_model(path)?)))
    }
}

fn load_split(spec: &str, split: Split, limit: Option<usize>) -> anyhow::Result<Dataset> {
    let spec = DataSpec::parse(spec)?;
    let ds = data::load(&spec, split)?;
    Ok(match limit {
        Some(n) => ds.limit(n),
        None => ds,
    })
}

/// The checks of the evaluation that need no inference, made before the
/// "evaluating …" line so that a refusal is the only line on stderr: every
/// model against the clean images, and for a CIFAR-10-C directory the
/// requested corruptions and severities and its first cell (its image size
/// and labels stand for the others: one labels file serves every cell).
fn preflight(
    evaluees: &[&Evaluee],
    clean: Option<&Dataset>,
    c10c: Option<&Cifar10C>,
    cfg: &SuiteConfig,
) -> anyhow::Result<()> {
    if let Some(ds) = clean {
        for e in evaluees {
            suite::check_fits(&e.model, &e.name, ds)?;
        }
    }
    let Some(c) = c10c else {
        return Ok(());
    };
    let present = c.corruptions();
    for name in &cfg.corruptions {
        anyhow::ensure!(
            present.iter().any(|p| p == name),
            "cifar10c:{}: no {name}.npy there",
            c.dir.display()
        );
    }
    for s in &cfg.severities {
        anyhow::ensure!(
            c.severities().contains(s),
            "cifar10c:{}: severity {s} is not in this directory (it has {:?})",
            c.dir.display(),
            c.severities()
        );
    }
    if let (Some(name), Some(&severity)) = (cfg.corruptions.first(), cfg.severities.first()) {
        let cell = c.cell(name, severity)?;
        for e in evaluees {
            suite::check_fits(&e.model, &e.name, &cell)?;
        }
    }
    Ok(())
}

pub fn run(a: EvalArgs, json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(a.batch >= 1, "--batch must be at least 1");
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "test" => Split::Test,
        s => anyhow::bail!("--split '{s}': expected train or test"),
    };
    // Flags first: a typo should not cost a model load.
    let attacks = a
        .attack
        .iter()
        .map(|s| Ok((s.trim().to_string(), AttackSpec::parse(s)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let severities = match &a.severities {
        Some(s) => corrupt::parse_severities(s)?,
        None => vec![1, 2, 3, 4, 5],
    };
    // Table rows in the reference order, each once, however the flag lists them.
    let requested = a
        .corruptions
        .as_deref()
        .map(corrupt::parse_list)
        .transpose()?
        .map(|list| {
            corrupt::CORRUPTIONS
                .iter()
                .copied()
                .filter(|c| list.contains(c))
                .collect::<Vec<_>>()
        });
    if a.severities.is_some() && requested.is_none() && !a.data.starts_with("cifar10c:") {
        anyhow::bail!("--severities needs --corruptions (all or a list)");
    }
    if let Some(n) = a.limit {
        anyhow::ensure!(n >= 1, "--limit must be at least 1");
    }

    let loaded = load_any(&a.model)?;
    if !attacks.is_empty() && matches!(loaded, Loaded::Deck(_)) {
        anyhow::bail!(
            "{}: --attack on a deck is not supported (the gate's top-k choice has no useful input gradient); attack its cards one by one",
            a.model.display()
        );
    }
    let baseline = a.baseline.as_deref().map(load_any).transpose()?;

    // The clean images and where the corrupted cells come from.
    let c10c = match a.data.strip_prefix("cifar10c:") {
        Some(dir) => {
            anyhow::ensure!(!dir.is_empty(), "--data cifar10c: needs a directory");
            Some(Cifar10C::open(Path::new(dir))?)
        }
        None => None,
    };
    let clean = match (&c10c, &a.clean_data) {
        (Some(_), Some(c)) => Some(load_split(c, split, a.limit)?),
        (Some(_), None) => None,
        (None, Some(_)) => anyhow::bail!("--clean-data goes with --data cifar10c:DIR only"),
        (None, None) => Some(load_split(&a.data, split, a.limit)?),
    };
    let corruptions: Vec<&'static str> = match (&c10c, requested) {
        (_, Some(list)) => list,
        // A CIFAR-10-C directory means its table: every corruption present.
        (Some(c), None) => {
            let present = c.corruptions();
            corrupt::CORRUPTIONS
                .iter()
                .copied()
                .filter(|n| present.iter().any(|p| p == n))
                .collect()
        }
        (None, None) => Vec::new(),
    };
    let source = match (&c10c, &clean) {
        (Some(c), _) => Some(CorruptionSource::Cifar10C(c)),
        (None, Some(ds)) => Some(CorruptionSource::Generated {
            clean: ds,
            seed: a.seed,
        }),
        (None, None) => None,
    };
    if clean.is_none() && !attacks.is_empty() {
        anyhow::bail!("--attack needs clean images: add --clean-data cifar10:DIR to cifar10c data");
    }

    let model = loaded.classifier();
    let subject = Evaluee {
        name: a.model.display().to_string(),
        model,
    };
    let base_subject = match (&a.baseline, &baseline) {
        (Some(p), Some(b)) => Some(Evaluee {
            name: p.display().to_string(),
            model: b.classifier(),
        }),
        _ => None,
    };
    let cfg = SuiteConfig {
        corruptions,
        severities,
        attacks,
        limit: a.limit,
        seed: a.seed,
        batch: a.batch,
        quiet: false,
    };
    let mut backend = crate::backend::select(&a.backend)?;
    let mut evaluees = vec![&subject];
    evaluees.extend(base_subject.as_ref());
    preflight(&evaluees, clean.as_ref(), c10c.as_ref(), &cfg)?;
    eprintln!(
        "evaluating {} on {} ({} clean images, {} corruption cells, {} attacks)",
        a.model.display(),
        a.data,
        clean.as_ref().map_or(0, |d| d.len()),
        cfg.corruptions.len() * cfg.severities.len(),
        cfg.attacks.len()
    );
    let r = suite::run_classifier(
        backend.as_mut(),
        &subject,
        base_subject.as_ref(),
        &a.data,
        clean.as_ref(),
        source.as_ref(),
        &cfg,
    )?;

    if let Some(acc) = r.accuracy {
        eprintln!(
            "{} on {} ({} images): accuracy {:.2}%, ECE {:.4}",
            a.model.display(),
            a.data,
            r.images,
            100.0 * acc,
            r.ece.unwrap_or(0.0)
        );
        for (i, pc) in r.per_class.iter().enumerate() {
            let name = model.class_names().get(i).unwrap_or(&pc.class);
            eprintln!(
                "  {:<12} {:>6.2}%  ({} images)",
                name,
                100.0 * pc.accuracy,
                pc.images
            );
        }
    }
    if !r.corruption_table.is_empty() {
        eprintln!("\n{}", r.corruption_table.markdown());
        eprintln!(
            "mean corruption accuracy {:.2}%, pooled corrupted ECE {:.4}",
            100.0 * r.mean_corruption_accuracy.unwrap_or(0.0),
            r.corrupted_ece.unwrap_or(0.0)
        );
    }
    if let Some(g) = &r.gate_picks {
        eprintln!("\ngate: {}", g.gate);
        let clean: Vec<f64> = g
            .members
            .iter()
            .map(|m| g.clean.get(m).copied().unwrap_or(0.0))
            .collect();
        if r.accuracy.is_some() {
            eprintln!(
                "clean images answered by: {}",
                crate::robust::table::describe_picks(&g.members, &clean)
            );
        }
        let picks = r.corruption_table.gate_picks_markdown();
        if !picks.is_empty() {
            eprintln!("cards the gate chose per cell (share of images):\n{picks}");
        }
        eprintln!(
            "gate {:.1} µs/image, chosen cards {:.1} µs/image",
            g.gate_us_per_image, g.cards_us_per_image
        );
    }
    if let Some(b) = &r.baseline
        && let Some(mce) = b.mce
    {
        eprintln!(
            "mCE vs {}: {:.4} (relative mCE {})",
            b.model,
            mce,
            b.relative_mce.map_or("–".into(), |v| format!("{v:.4}"))
        );
    }
    for d in &r.attack_details {
        eprintln!("{}: accuracy {:.2}%", d.canonical, 100.0 * d.accuracy);
    }
    eprintln!("({:.1} s)", r.seconds);
    if let Some(dir) = &a.report {
        let files = write_run_dir(dir, &r)?;
        eprintln!(
            "report: {} ({} files)",
            dir.join("report.html").display(),
            files.len()
        );
    }
    if json {
        super::print_json(&r)?;
    }
    Ok(())
}
