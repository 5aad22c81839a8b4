//! The dense training loop behind `cardc train`: epochs of shuffled,
//! augmented batches, a learning-rate schedule, held-out validation, an
//! atomic checkpoint every epoch, `--resume`, and a final card.

use super::optim::Sgd;
use super::schedule::{Schedule, ScheduleKind};
use crate::backend;
use crate::card::{self, Card, Kind, Provenance};
use crate::data::{self, Augment, DataSpec, Dataset, Normalization, Split};
use crate::eval;
use crate::ir::models::{BuildOptions, build};
use crate::model::Model;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything `cardc train` needs.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub arch: String,
    pub width_mult: f32,
    pub data: DataSpec,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub schedule: ScheduleKind,
    /// Warm-up epochs for the cosine schedule.
    pub warmup_epochs: f32,
    pub augment: Augment,
    pub augment_name: String,
    pub seed: u64,
    /// Fraction of the training set held out for validation.
    pub val_split: f64,
    pub backend: String,
    pub out: PathBuf,
    pub resume: bool,
    /// Use at most this many training images.
    pub limit: Option<usize>,
    /// Evaluate the final card on at most this many test images.
    pub test_limit: Option<usize>,
    /// No progress output on stderr.
    pub quiet: bool,
}

impl TrainConfig {
    /// Defaults of `cardc train` (SGD 0.9 Nesterov, lr 0.1, wd 5e-4,
    /// cosine, flip+crop, batch 128).
    pub fn new(arch: &str, data: DataSpec, out: PathBuf) -> Self {
        TrainConfig {
            arch: arch.to_string(),
            width_mult: 1.0,
            data,
            epochs: 30,
            batch: 128,
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            schedule: ScheduleKind::Cosine,
            warmup_epochs: 0.0,
            augment: Augment::FlipCrop { pad: 4 },
            augment_name: "flipcrop".into(),
            seed: 0,
            val_split: 0.0,
            backend: "auto".into(),
            out,
            resume: false,
            limit: None,
            test_limit: None,
            quiet: false,
        }
    }

    /// The settings a checkpoint must share with a run that resumes it.
    fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}|{:?}",
            self.arch,
            self.width_mult,
            self.data,
            self.epochs,
            self.batch,
            self.lr,
            self.momentum,
            self.nesterov,
            self.weight_decay,
            self.schedule,
            self.warmup_epochs,
            self.augment_name,
            self.seed,
            self.val_split,
            self.limit
        )
    }

    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.epochs >= 1, "--epochs must be at least 1");
        anyhow::ensure!(
            self.batch >= 2,
            "--batch must be at least 2 (BatchNorm needs it)"
        );
        anyhow::ensure!(
            self.lr > 0.0 && self.lr.is_finite(),
            "--lr must be positive, got {}",
            self.lr
        );
        anyhow::ensure!(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            "--wd must be ≥ 0, got {}",
            self.weight_decay
        );
        anyhow::ensure!(
            (0.0..1.0).contains(&self.val_split),
            "--val-split must be in [0, 1), got {}",
            self.val_split
        );
        Ok(())
    }
}

/// Per-epoch record, kept in checkpoints and reported at the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Training state written atomically after every epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: String,
    pub epochs_done: usize,
    pub step: usize,
    pub model: Model,
    pub sgd: Sgd,
    pub history: Vec<EpochLog>,
}

/// What a finished training run reports (`--json`).
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Test accuracy of the final model (or held-out accuracy without a test split).
    pub accuracy: f64,
    pub val_accuracy: Option<f64>,
    pub ece: f64,
    pub epochs: usize,
    pub seconds: f64,
    pub images_per_second: f64,
    pub backend: String,
    pub adapter: String,
    pub sparsity: f64,
    pub params: usize,
    pub out: String,
    pub history: Vec<EpochLog>,
}

/// Path of the checkpoint that belongs to an output card.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(".ckpt");
    PathBuf::from(s)
}

/// Seed of the augmentation draws of one batch.
fn batch_seed(seed: u64, epoch: usize, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (epoch as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (step as u64).wrapping_mul(0x1656_67B1_9E37_79F9)
}

/// Training and evaluation data with the normalization to use.
pub struct Prepared {
    pub train: Dataset,
    pub val: Option<Dataset>,
    pub test: Option<Dataset>,
    pub norm: Normalization,
}

/// Loads the training split (with `limit`, `val_split`) and the test split.
pub fn prepare_data(
    spec: &DataSpec,
    limit: Option<usize>,
    val_split: f64,
    seed: u64,
) -> anyhow::Result<Prepared> {
    let mut train = data::load(spec, Split::Train)?;
    if let Some(n) = limit {
        train = train.limit(n);
    }
    let (train, val) = if val_split > 0.0 {
        let (t, v) = train.split_holdout(val_split, seed)?;
        (t, Some(v))
    } else {
        (train, None)
    };
    let test = data::load(spec, Split::Test).ok();
    let norm = match spec {
        DataSpec::Cifar10(_) => Normalization::cifar10(),
        _ => Normalization::from_dataset(&train),
    };
    Ok(Prepared {
        train,
        val,
        test,
        norm,
    })
}

fn progress_bar(len: u64, quiet: bool, prefix: String) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix);
    pb
}

/// Trains a dense model as configured and writes the card to `cfg.out`.
pub fn run(cfg: &TrainConfig) -> anyhow::Result<TrainReport> {
    cfg.check()?;
    let parent = match cfg.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    anyhow::ensure!(
        parent.is_dir(),
        "--out {}: directory {} does not exist",
        cfg.out.display(),
        parent.display()
    );
    let t0 = Instant::now();
    let data = prepare_data(&cfg.data, cfg.limit, cfg.val_split, cfg.seed)?;
    anyhow::ensure!(
        data.train.len() >= cfg.batch,
        "training set of {} images is smaller than --batch {}",
        data.train.len(),
        cfg.batch
    );
    let opts = BuildOptions {
        width_mult: cfg.width_mult,
        affine_bn: true,
        classes: Some(data.train.class_names.len()),
    };
    let graph = build(&cfg.arch, &opts)?;
    let [c, h, w] = graph.input_shape();
    anyhow::ensure!(
        [c, h, w] == [data.train.channels, data.train.height, data.train.width],
        "architecture '{}' takes {c}x{h}x{w} images but {} has {}x{}x{}",
        cfg.arch,
        cfg.data,
        data.train.channels,
        data.train.height,
        data.train.width
    );
    let mut backend = backend::select(&cfg.backend)?;
    let steps_per_epoch = data.train.len() / cfg.batch;
    let total_steps = steps_per_epoch * cfg.epochs;
    let schedule = Schedule {
        kind: cfg.schedule,
        lr: cfg.lr,
        total: total_steps,
        warmup: (cfg.warmup_epochs * steps_per_epoch as f32) as usize,
    };
    let ckpt_path = checkpoint_path(&cfg.out);
    let fingerprint = cfg.fingerprint();
    let mut ck = if cfg.resume && ckpt_path.exists() {
        let ck: Checkpoint = card::read(&ckpt_path, Kind::Checkpoint)?;
        anyhow::ensure!(
            ck.fingerprint == fingerprint,
            "{}: checkpoint was written with other training settings; rerun with the same flags or delete it",
            ckpt_path.display()
        );
        if !cfg.quiet {
            eprintln!(
                "resuming from {} after epoch {}",
                ckpt_path.display(),
                ck.epochs_done
            );
        }
        ck
    } else {
        Checkpoint {
            fingerprint,
            epochs_done: 0,
            step: 0,
            model: Model::init(graph, cfg.seed).map_err(|e| anyhow::anyhow!(e))?,
            sgd: Sgd::new(cfg.momentum, cfg.nesterov, cfg.weight_decay),
            history: Vec::new(),
        }
    };
    if !cfg.quiet {
        eprintln!(
            "training {} ({} params) on {} ({} images, {} held out) for {} epochs, batch {}, backend {}",
            cfg.arch,
            ck.model.param_count(),
            cfg.data,
            data.train.len(),
            data.val.as_ref().map_or(0, |v| v.len()),
            cfg.epochs,
            cfg.batch,
            backend.adapter()
        );
    }
    let mut train_images = 0usize;
    let mut train_seconds = 0.0f64;
    for epoch in ck.epochs_done..cfg.epochs {
        let te = Instant::now();
        let order = data::epoch_order(data.train.len(), cfg.seed, epoch);
        let pb = progress_bar(
            steps_per_epoch as u64,
            cfg.quiet,
            format!("epoch {}/{}", epoch + 1, cfg.epochs),
        );
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (s, idx) in order.chunks_exact(cfg.batch).enumerate() {
            let (x, y) = data::make_batch(
                &data.train,
                idx,
                &data.norm,
                cfg.augment,
                batch_seed(cfg.seed, epoch, s),
            );
            let lr = schedule.lr_at(ck.step);
            let st = backend.train_step(&mut ck.model, &mut ck.sgd, &x, &y, lr)?;
            anyhow::ensure!(
                st.loss.is_finite(),
                "training diverged at epoch {} step {s} (loss {}); lower --lr",
                epoch + 1,
                st.loss
            );
            ck.step += 1;
            loss_sum += st.loss as f64 * y.len() as f64;
            correct += st.correct;
            seen += y.len();
            pb.inc(1);
            if s % 4 == 0 || s + 1 == steps_per_epoch {
                pb.set_message(format!(
                    "loss {:.3} acc {:.1}% {:.0} img/s lr {:.4}",
                    loss_sum / seen as f64,
                    100.0 * correct as f64 / seen as f64,
                    seen as f64 / te.elapsed().as_secs_f64(),
                    lr
                ));
            }
        }
        pb.finish_and_clear();
        let secs = te.elapsed().as_secs_f64();
        train_images += seen;
        train_seconds += secs;
        let val_accuracy = match &data.val {
            Some(v) => {
                Some(eval::evaluate(backend.as_mut(), &ck.model, v, &data.norm, 256)?.accuracy)
            }
            None => None,
        };
        let log = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_accuracy,
            seconds: secs,
            images_per_second: seen as f64 / secs,
        };
        if !cfg.quiet {
            eprintln!(
                "epoch {}/{}: loss {:.4} train acc {:.2}%{} {:.0} img/s ({:.0} s)",
                log.epoch,
                cfg.epochs,
                log.loss,
                100.0 * log.train_accuracy,
                val_accuracy.map_or(String::new(), |v| format!(" val acc {:.2}%", 100.0 * v)),
                log.images_per_second,
                secs
            );
        }
        ck.history.push(log);
        ck.epochs_done = epoch + 1;
        card::write_atomic(&ckpt_path, Kind::Checkpoint, &ck)
            .with_context(|| format!("writing checkpoint after epoch {}", epoch + 1))?;
    }

    // Final evaluation: the test split if there is one, else the held-out set.
    let eval_set = match (&data.test, &data.val) {
        (Some(t), _) => Some(match cfg.test_limit {
            Some(n) => t.limit(n),
            None => t.clone(),
        }),
        (None, Some(v)) => Some(v.clone()),
        _ => None,
    };
    let final_eval = match &eval_set {
        Some(ds) => Some(eval::evaluate(
            backend.as_mut(),
            &ck.model,
            ds,
            &data.norm,
            256,
        )?),
        None => None,
    };
    let val_accuracy = ck.history.last().and_then(|l| l.val_accuracy);
    let mut metrics = std::collections::BTreeMap::new();
    if let Some(e) = &final_eval {
        metrics.insert("test_accuracy".to_string(), e.accuracy);
        metrics.insert("test_ece".to_string(), e.ece);
    }
    if let Some(v) = val_accuracy {
        metrics.insert("val_accuracy".to_string(), v);
    }
    if let Some(l) = ck.history.last() {
        metrics.insert("train_loss".to_string(), l.loss);
    }
    let sparsity = ck.model.sparsity();
    let card = Card {
        model: ck.model.clone(),
        normalization: data.norm.clone(),
        class_names: data.train.class_names.clone(),
        provenance: Provenance {
            method: "dense".into(),
            arch: cfg.arch.clone(),
            width_mult: cfg.width_mult,
            sparsity,
            augment: cfg.augment_name.clone(),
            seed: cfg.seed,
            data: cfg.data.to_string(),
            data_digest: data.train.digest(),
            backend: backend.name().to_string(),
            adapter: backend.adapter(),
            epochs: cfg.epochs,
            cardc_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            notes: vec![format!(
                "sgd lr {} momentum {} nesterov {} wd {} schedule {} batch {}",
                cfg.lr,
                cfg.momentum,
                cfg.nesterov,
                cfg.weight_decay,
                cfg.schedule.name(),
                cfg.batch
            )],
        },
        metrics,
    };
    card.save(&cfg.out)?;
    // The card now holds everything the checkpoint did.
    let _ = std::fs::remove_file(&ckpt_path);
    let params = card.model.param_count();
    Ok(TrainReport {
        accuracy: final_eval.as_ref().map_or(0.0, |e| e.accuracy),
        val_accuracy,
        ece: final_eval.as_ref().map_or(0.0, |e| e.ece),
        epochs: cfg.epochs,
        seconds: t0.elapsed().as_secs_f64(),
        images_per_second: if train_seconds > 0.0 {
            train_images as f64 / train_seconds
        } else {
            0.0
        },
        backend: backend.name().to_string(),
        adapter: backend.adapter(),
        sparsity,
        params,
        out: cfg.out.display().to_string(),
        history: ck.history,
    })
}
