//! `cardc demo`: the walking skeleton of the whole pipeline on the built-in
//! synthetic dataset: data, training, evaluation, pruning, corruptions, a
//! spectrally gated deck, compilation for the host (and arm) and ONNX.

use crate::card::Card;
use crate::data::{self, DataSpec, Split};
use crate::train::trainer::{self, TrainConfig};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Finish in under a minute on 2 CPU cores (smaller data, fewer epochs).
    #[arg(long)]
    pub quick: bool,
    /// Directory for the demo's cards and reports.
    #[arg(long, default_value = "cardc-demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One row of the demo's summary table.
#[derive(Serialize)]
struct Stage {
    stage: &'static str,
    status: &'static str,
    result: String,
    seconds: f64,
}

pub fn run(a: DemoArgs, json: bool) -> anyhow::Result<()> {
    let t_all = Instant::now();
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("--out {}: cannot create directory: {e}", a.out.display()))?;
    // Half-width ResNet-20: ~40% after the quick run (~25 s on 2 cores),
    // ~85% after the full one (~3.5 min), measured on synthetic data.
    let (n, epochs, width) = if a.quick {
        (2000, 3, 0.5)
    } else {
        (5000, 10, 0.5)
    };
    let spec = DataSpec::Synthetic(n);
    let mut stages = Vec::new();

    // 1. Data.
    let t = Instant::now();
    let train_ds = data::load(&spec, Split::Train)?;
    let test_ds = data::load(&spec, Split::Test)?;
    stages.push(Stage {
        stage: "data",
        status: "ok",
        result: format!(
            "{spec}: {} train / {} test images, {} classes",
            train_ds.len(),
            test_ds.len(),
            train_ds.class_names.len()
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    // 2. Dense training.
    let t = Instant::now();
    let card_path = a.out.join("dense.card");
    let mut cfg = TrainConfig::new("resnet20", spec.clone(), card_path.clone());
    cfg.width_mult = width;
    cfg.epochs = epochs;
    cfg.batch = 64;
    cfg.lr = 0.1;
    cfg.schedule = crate::train::schedule::ScheduleKind::OneCycle;
    cfg.seed = a.seed;
    cfg.quiet = json;
    eprintln!("demo: training resnet20 (width x{width}) on {spec} for {epochs} epochs");
    let rep = trainer::run(&cfg)?;
    stages.push(Stage {
        stage: "train",
        status: "ok",
        result: format!(
            "resnet20 x{width}: test accuracy {:.1}%, {:.0} img/s, {}",
            100.0 * rep.accuracy,
            rep.images_per_second,
            rep.adapter
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    // 3. Evaluation of the saved card (reloaded from disk).
    let t = Instant::now();
    let card = Card::load(&card_path)?;
    let mut backend = crate::backend::select("auto")?;
    let r = crate::eval::evaluate(
        backend.as_mut(),
        &card.model,
        &test_ds,
        &card.normalization,
        256,
    )?;
    stages.push(Stage {
        stage: "eval",
        status: "ok",
        result: format!(
            "clean accuracy {:.1}%, ECE {:.3} on {} images",
            100.0 * r.accuracy,
            r.ece,
            r.images
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    let summary = crate::card::summary(&card);
    stages.push(Stage {
        stage: "info",
        status: "ok",
        result: format!(
            "{} params, {} bytes stored",
            summary["params"], summary["bytes"]
        ),
        seconds: 0.0,
    });

    // 4. Compression: learning-rate rewinding to 80% sparsity. Its
    // retraining adds Gaussian noise, so the deck below has a noise expert
    // (the Gaussian card) beside the clean-trained dense card.
    let t = Instant::now();
    let sparse_path = a.out.join("lrr80.card");
    let mut pcfg_train = cfg.clone();
    pcfg_train.out = sparse_path.clone();
    pcfg_train.augment = crate::data::Augment::Gaussian {
        sigma: crate::data::augment::DEFAULT_SIGMA,
        p: crate::data::augment::DEFAULT_P,
    };
    pcfg_train.augment_name = pcfg_train.augment.to_string();
    pcfg_train.epochs = if a.quick { 1 } else { 3 };
    pcfg_train.arch = String::new();
    let mut pcfg = crate::compress::prune::PruneConfig::new(
        crate::compress::prune::Method::Lrr,
        0.8,
        pcfg_train,
    );
    pcfg.from = Some(card_path.clone());
    pcfg.rounds = Some(1);
    eprintln!("demo: pruning to 80% sparsity with learning-rate rewinding");
    let prep = crate::compress::prune::run(&pcfg)?;
    stages.push(Stage {
        stage: "prune",
        status: "ok",
        result: format!(
            "lrr (gaussian noise): {:.1}% sparse, test accuracy {:.1}%",
            100.0 * prep.sparsity,
            100.0 * prep.accuracy
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    // 5. Robustness of the pruned card: all 15 corruptions at severity 3.
    let t = Instant::now();
    let sparse = Card::load(&sparse_path)?;
    let limit = if a.quick { 100 } else { 400 };
    let clean = test_ds.limit(limit);
    let suite = crate::robust::suite::SuiteConfig {
        corruptions: crate::corrupt::CORRUPTIONS.to_vec(),
        severities: vec![3],
        attacks: vec![(
            "fgsm:2/255".to_string(),
            crate::robust::attack::AttackSpec::parse("fgsm:2/255")?,
        )],
        limit: Some(limit),
        seed: a.seed,
        batch: 128,
        quiet: true,
    };
    let source = crate::robust::suite::CorruptionSource::Generated {
        clean: &clean,
        seed: a.seed,
    };
    let rr = crate::robust::suite::run(
        backend.as_mut(),
        &crate::robust::suite::Subject {
            name: "lrr80".into(),
            card: &sparse,
        },
        None,
        &spec.to_string(),
        Some(&clean),
        Some(&source),
        &suite,
    )?;
    crate::robust::report::write_run_dir(&a.out.join("report"), &rr)?;
    stages.push(Stage {
        stage: "corruptions",
        status: "ok",
        result: format!(
            "lrr80: clean {:.1}%, 15 corruptions at severity 3 {:.1}%, FGSM 2/255 {:.1}% (report in {})",
            100.0 * rr.accuracy.unwrap_or(0.0),
            100.0 * rr.mean_corruption_accuracy.unwrap_or(0.0),
            100.0 * rr.attacks.values().next().copied().unwrap_or(0.0),
            a.out.join("report").display()
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    // 6. A spectrally gated deck of the dense (flip-and-crop) card and the
    // Gaussian-trained sparse one, on five of the sparse card's cells (noise,
    // blur, weather, digital: enough to see the gate work, cheap to make).
    let t = Instant::now();
    let deck_path = a.out.join("deck.deck");
    let dcfg = crate::deck::BuildConfig {
        gate: crate::deck::GateSettings {
            kind: crate::deck::GateKind::Spectral,
            k: 1,
            metric: crate::deck::Metric::L1,
            scope: crate::deck::Scope::Input,
        },
        limit: if a.quick { 100 } else { 1000 },
        seed: a.seed,
        augment_of: Vec::new(),
        data_name: spec.to_string(),
    };
    let deck = crate::deck::build(
        vec![
            ("dense".into(), card.clone()),
            ("lrr80".into(), sparse.clone()),
        ],
        &train_ds,
        &dcfg,
    )?;
    deck.save(&deck_path)?;
    let deck = crate::deck::Deck::load(&deck_path)?;
    let deck_cells = [
        "gaussian_noise",
        "impulse_noise",
        "defocus_blur",
        "fog",
        "contrast",
    ];
    let dsuite = crate::robust::suite::SuiteConfig {
        corruptions: deck_cells.to_vec(),
        attacks: Vec::new(),
        ..suite.clone()
    };
    let sparse_same_cells = deck_cells
        .iter()
        .filter_map(|c| rr.corruption_means.get(*c))
        .sum::<f64>()
        / deck_cells.len() as f64;
    let dr = crate::robust::suite::run_classifier(
        backend.as_mut(),
        &crate::robust::suite::Evaluee {
            name: "deck".into(),
            model: crate::eval::Classifier::Deck(&deck),
        },
        None,
        &spec.to_string(),
        Some(&clean),
        Some(&source),
        &dsuite,
    )?;
    let noise_share = dr
        .gate_picks
        .as_ref()
        .and_then(|g| g.corruptions.get("gaussian_noise"))
        .and_then(|c| c.get("3"))
        .and_then(|m| m.get("lrr80"))
        .copied()
        .unwrap_or(0.0);
    stages.push(Stage {
        stage: "deck",
        status: "ok",
        result: format!(
            "dense + lrr80, spectral top-1: clean {:.1}%, 5 corruptions at severity 3 {:.1}% (lrr80 alone {:.1}%); gate sends {:.0}% of gaussian_noise images to lrr80",
            100.0 * dr.accuracy.unwrap_or(0.0),
            100.0 * dr.mean_corruption_accuracy.unwrap_or(0.0),
            100.0 * sparse_same_cells,
            100.0 * noise_share
        ),
        seconds: t.elapsed().as_secs_f64(),
    });
    // 7. Compile the pruned card for the host (and arm when the cross
    // compiler is there) and check the artifact against the reference.
    for target in ["host", "arm"] {
        let missing = crate::compile::target::find(target)?.0.missing_tools();
        if !missing.is_empty() {
            stages.push(Stage {
                stage: if target == "host" {
                    "compile+run host"
                } else {
                    "compile+run arm"
                },
                status: "skipped",
                result: format!("{} not installed", missing.join(", ")),
                seconds: 0.0,
            });
            continue;
        }
        let t = Instant::now();
        let dir = a.out.join(format!("lrr80-{target}"));
        let opts = crate::compile::Options {
            target: target.to_string(),
            format: crate::compile::lower::FormatChoice::Auto,
            max_flash: None,
            max_ram: None,
        };
        let rep = crate::compile::compile(&sparse, &opts, &dir)?;
        let run = crate::compile::artifact::evaluate(
            &dir,
            &test_ds.limit(if a.quick { 20 } else { 100 }),
        )?;
        stages.push(Stage {
            stage: if target == "host" { "compile+run host" } else { "compile+run arm" },
            status: "ok",
            result: format!(
                "{} B flash, {} B arena (bound {}), agreement {:.1}%, max logit error {:.1e}, {:.2} ms/image",
                rep.flash_bytes,
                rep.arena_bytes,
                rep.arena_lower_bound_bytes,
                100.0 * run.argmax_agreement,
                run.max_abs_logit_error,
                run.latency_ms
            ),
            seconds: t.elapsed().as_secs_f64(),
        });
    }
    // 8. ONNX out and back in: the re-imported card gives the same logits.
    let t = Instant::now();
    let onnx_path = a.out.join("lrr80.onnx");
    crate::onnx::export_file(&sparse, &onnx_path, &Default::default())?;
    let back = crate::onnx::import_file(&onnx_path, &Default::default())?;
    let probe = test_ds.limit(32);
    let (l1, l2) = (
        crate::compile::artifact::reference_logits(&sparse, &probe)?,
        crate::compile::artifact::reference_logits(&back, &probe)?,
    );
    let err = l1
        .iter()
        .zip(&l2)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    stages.push(Stage {
        stage: "export onnx",
        status: "ok",
        result: format!(
            "{} ({} bytes); re-imported max logit difference {err:.1e}",
            onnx_path.display(),
            std::fs::metadata(&onnx_path).map_or(0, |m| m.len())
        ),
        seconds: t.elapsed().as_secs_f64(),
    });

    let total = t_all.elapsed().as_secs_f64();
    eprintln!(
        "\n{:<18} {:<14} {:>8}  result",
        "stage", "status", "seconds"
    );
    for s in &stages {
        eprintln!(
            "{:<18} {:<14} {:>8.1}  {}",
            s.stage, s.status, s.seconds, s.result
        );
    }
    eprintln!(
        "demo finished in {total:.1} s; cards in {}",
        a.out.display()
    );
    if json {
        super::print_json(&serde_json::json!({
            "stages": stages,
            "accuracy": r.accuracy,
            "ece": r.ece,
            "seconds": total,
            "card": card_path.display().to_string(),
        }))?;
    }
    Ok(())
}
