//! The dense training loop behind `cardc train`: epochs of shuffled,
//! augmented batches, a learning-rate schedule, held-out validation, an
//! atomic checkpoint every epoch, `--resume`, and a final card.

use super::advprop::{self, AuxBatchNorm};
use super::optim::Sgd;
use super::schedule::{Schedule, ScheduleKind};
use crate::backend;
use crate::card::{self, Card, Kind, Provenance};
use crate::data::{self, Augment, DataSpec, Dataset, Normalization, Split};
use crate::eval;
use crate::ir::models::{BuildOptions, build};
use crate::model::Model;
use crate::robust::attack::{AttackSpec, attack_normalized};
use crate::robust::suite::attack_accuracy;
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
    /// Adversarial training: every batch is replaced by its adversarial
    /// version under this attack (Madry et al.); with a held-out split the
    /// run keeps the epoch with the best held-out robust accuracy (early
    /// stopping against robust overfitting).
    pub adversarial: Option<AttackSpec>,
    /// AdvProp: adversarial examples go through auxiliary BatchNorm layers
    /// and each step trains on the clean and the adversarial batch (see
    /// [`super::advprop`]). Needs `adversarial`.
    pub advprop: bool,
    /// AugMix's Jensen–Shannon consistency loss with this weight λ: every
    /// image is seen clean and through two AugMix chains (`--jsd`; needs
    /// `--augment augmix`).
    pub jsd: Option<f32>,
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
            adversarial: None,
            advprop: false,
            jsd: None,
        }
    }

    /// The settings a checkpoint must share with a run that resumes it.
    pub fn fingerprint(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}|{:?}|{}|{}|{:?}",
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
            self.limit,
            self.adversarial
                .as_ref()
                .map_or(String::new(), |a| a.to_string()),
            if self.advprop { "advprop" } else { "" },
            self.jsd
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
        anyhow::ensure!(
            !self.advprop || self.adversarial.is_some(),
            "--advprop needs --adversarial (the attack that makes its adversarial batches)"
        );
        if let Some(lambda) = self.jsd {
            anyhow::ensure!(
                matches!(self.augment, Augment::AugMix),
                "--jsd is AugMix's consistency loss: it needs --augment augmix, got {}",
                self.augment_name
            );
            anyhow::ensure!(
                self.adversarial.is_none(),
                "--jsd and --adversarial cannot be combined"
            );
            anyhow::ensure!(
                lambda >= 0.0 && lambda.is_finite(),
                "--jsd-lambda must be ≥ 0, got {lambda}"
            );
        }
        Ok(())
    }
}

/// Per-epoch record, kept in checkpoints and reported at the end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochLog {
    /// Which phase (`train`, `round 3/5`, ...) the epoch belongs to.
    pub phase: String,
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub val_accuracy: Option<f64>,
    /// Held-out accuracy under the `--adversarial` attack.
    pub val_robust_accuracy: Option<f64>,
    /// Sparsity of the prunable weights at the end of the epoch.
    pub sparsity: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// Model, optimizer and progress of one phase: what a checkpoint holds
/// besides the method's own state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    pub model: Model,
    pub sgd: Sgd,
    /// Epochs finished in the current phase.
    pub epochs_done: usize,
    /// Steps taken in the current phase (indexes the LR schedule).
    pub step: usize,
    /// Every epoch of every phase so far.
    pub history: Vec<EpochLog>,
    /// Adversarial training with a held-out split: the epoch of this phase
    /// with the best held-out robust accuracy, and its model.
    pub best: Option<(f64, usize, Model)>,
    /// AdvProp's auxiliary BatchNorm (`--advprop`), made from the model at
    /// the start of the phase.
    pub aux_bn: Option<AuxBatchNorm>,
    /// Set when the checkpoint was written mid-epoch (a run stopped on
    /// Ctrl-C): how far the epoch after `epochs_done` got.
    pub partial: Option<PartialEpoch>,
}

/// The progress of an epoch stopped part-way, so that a resumed run skips
/// the batches already taken and reports the same epoch totals.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Batches of the epoch already taken.
    pub steps: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    pub seconds: f64,
}

impl RunState {
    /// A fresh state for `model` with a new optimizer from `cfg`.
    pub fn new(model: Model, cfg: &TrainConfig) -> RunState {
        RunState {
            model,
            sgd: Sgd::new(cfg.momentum, cfg.nesterov, cfg.weight_decay),
            epochs_done: 0,
            step: 0,
            history: Vec::new(),
            best: None,
            aux_bn: None,
            partial: None,
        }
    }

    /// The model to keep: the best robust epoch when early stopping
    /// recorded one (at the same sparsity as the final model), else the
    /// final one.
    pub fn into_final_model(self, quiet: bool) -> Model {
        match self.best {
            Some((acc, epoch, m)) if (m.sparsity() - self.model.sparsity()).abs() < 1e-12 => {
                if !quiet {
                    eprintln!(
                        "early stopping: keeping epoch {epoch} (held-out robust accuracy {:.2}%)",
                        100.0 * acc
                    );
                }
                m
            }
            _ => self.model,
        }
    }

    /// Starts the next phase: epoch and step counters and momentum reset.
    pub fn next_phase(&mut self) {
        self.epochs_done = 0;
        self.step = 0;
        self.sgd.velocity.clear();
        self.best = None;
        self.partial = None;
    }
}

/// Training state written atomically after every epoch (and, for pruning,
/// every round). `method` is the pruning method's own state (`()` for dense
/// training).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint<M> {
    pub fingerprint: String,
    /// Pruning round (0 for dense training and one-phase methods).
    pub round: usize,
    pub state: RunState,
    pub method: M,
}

impl<M: Serialize + serde::de::DeserializeOwned> Checkpoint<M> {
    /// Reads the checkpoint at `path` if `resume` and it exists, checking
    /// that it was written with the same settings.
    pub fn resume_from(
        path: &Path,
        resume: bool,
        fingerprint: &str,
        quiet: bool,
    ) -> anyhow::Result<Option<Checkpoint<M>>> {
        if !resume || !path.exists() {
            return Ok(None);
        }
        let ck: Checkpoint<M> = card::read(path, Kind::Checkpoint)?;
        anyhow::ensure!(
            ck.fingerprint == fingerprint,
            "{}: checkpoint was written with other settings; rerun with the same flags or delete it",
            path.display()
        );
        if !quiet {
            eprintln!(
                "resuming from {} (round {}, epoch {} of the phase)",
                path.display(),
                ck.round,
                ck.state.epochs_done
            );
        }
        Ok(Some(ck))
    }

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        card::write_atomic(path, Kind::Checkpoint, self)
            .with_context(|| format!("writing checkpoint {}", path.display()))
    }
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
        DataSpec::Cifar10(_) | DataSpec::Cifar10C(_) => Normalization::cifar10(),
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

/// What every training command shares: the configuration, the loaded data
/// and the backend.
pub struct Env {
    pub cfg: TrainConfig,
    pub data: Prepared,
    pub backend: Box<dyn backend::Backend>,
    /// When the command started.
    pub started: Instant,
    /// Training images and seconds so far (for images/s).
    pub images_seen: usize,
    pub train_seconds: f64,
}

impl Env {
    /// Checks the configuration and the output directory, loads the data
    /// and picks the backend.
    pub fn new(cfg: &TrainConfig) -> anyhow::Result<Env> {
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
        let started = Instant::now();
        let data = prepare_data(&cfg.data, cfg.limit, cfg.val_split, cfg.seed)?;
        anyhow::ensure!(
            data.train.len() >= cfg.batch,
            "training set of {} images is smaller than --batch {}",
            data.train.len(),
            cfg.batch
        );
        // `auto` means "the fastest backend that can run this job": the
        // AugMix consistency loss is CPU-only for now.
        let name = match (cfg.backend.as_str(), cfg.jsd) {
            ("auto", Some(_)) => "cpu",
            (name, _) => name,
        };
        let backend = backend::select(name)?;
        Ok(Env {
            cfg: cfg.clone(),
            data,
            backend,
            started,
            images_seen: 0,
            train_seconds: 0.0,
        })
    }

    /// The configured architecture for this dataset's classes and image size.
    pub fn build_graph(&self, affine_bn: bool) -> anyhow::Result<crate::ir::Graph> {
        let cfg = &self.cfg;
        let opts = BuildOptions {
            width_mult: cfg.width_mult,
            affine_bn,
            classes: Some(self.data.train.class_names.len()),
        };
        let graph = build(&cfg.arch, &opts)?;
        let [c, h, w] = graph.input_shape();
        let t = &self.data.train;
        anyhow::ensure!(
            [c, h, w] == [t.channels, t.height, t.width],
            "architecture '{}' takes {c}x{h}x{w} images but {} has {}x{}x{}",
            cfg.arch,
            cfg.data,
            t.channels,
            t.height,
            t.width
        );
        Ok(graph)
    }

    /// Optimizer steps in one epoch (the last partial batch is dropped).
    pub fn steps_per_epoch(&self) -> usize {
        self.data.train.len() / self.cfg.batch
    }
}

/// One stretch of training under one learning-rate schedule.
#[derive(Clone, Debug)]
pub struct Phase {
    /// Shown in progress and recorded in the history (`train`, `round 2/4`).
    pub label: String,
    pub epochs: usize,
    pub lr: f32,
    pub schedule: ScheduleKind,
    pub warmup_epochs: f32,
    /// Seed of the data order and augmentation of this phase.
    pub seed: u64,
    /// End the phase after this many steps (LTH's replay to the rewind
    /// iteration); no epoch record or checkpoint is written then.
    pub stop_after: Option<usize>,
}

impl Phase {
    /// The phase a plain `train` run does.
    pub fn from_config(cfg: &TrainConfig, label: &str) -> Phase {
        Phase {
            label: label.to_string(),
            epochs: cfg.epochs,
            lr: cfg.lr,
            schedule: cfg.schedule,
            warmup_epochs: cfg.warmup_epochs,
            seed: cfg.seed,
            stop_after: None,
        }
    }
}

/// What a method does around each optimizer step. The default is plain SGD
/// on every trainable tensor (masks honoured).
pub trait StepHook {
    /// Whether the hook reads or changes the model on the host around a
    /// step (masks, snapshots, its own gradients): the trainer then brings
    /// the host model up to date ([`backend::Backend::sync`]) before every
    /// step. Plain SGD does not, so a GPU backend keeps the weights on the
    /// device for a whole epoch.
    fn touches_model(&self) -> bool {
        true
    }
    /// Before the batch of phase step `step` (of `total`): pruning methods
    /// change masks here.
    fn before_step(
        &mut self,
        _model: &mut Model,
        _step: usize,
        _total: usize,
    ) -> anyhow::Result<()> {
        Ok(())
    }
    /// Forward, backward and update for one batch.
    fn step(
        &mut self,
        backend: &mut dyn backend::Backend,
        model: &mut Model,
        sgd: &mut Sgd,
        batch: &backend::Batch,
        lr: f32,
        _step: usize,
    ) -> anyhow::Result<backend::StepStats> {
        backend.train_step(model, sgd, batch, lr)
    }
}

/// Plain SGD: dense training and masked fine-tuning.
pub struct PlainSgd;
impl StepHook for PlainSgd {
    fn touches_model(&self) -> bool {
        false
    }
}

/// Runs the remaining epochs of `phase` on `state`, calling `hook` around
/// each step and `checkpoint` after each epoch.
pub fn run_phase<H: StepHook>(
    env: &mut Env,
    phase: &Phase,
    state: &mut RunState,
    hook: &mut H,
    checkpoint: &mut dyn FnMut(&RunState, &H) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let batch = env.cfg.batch;
    let steps_per_epoch = env.steps_per_epoch();
    let total_steps = steps_per_epoch * phase.epochs;
    let schedule = Schedule {
        kind: phase.schedule,
        lr: phase.lr,
        total: total_steps,
        warmup: (phase.warmup_epochs * steps_per_epoch as f32) as usize,
    };
    let quiet = env.cfg.quiet;
    if env.cfg.advprop && state.aux_bn.is_none() {
        state.aux_bn = Some(AuxBatchNorm::from_model(&state.model)?);
    }
    for epoch in state.epochs_done..phase.epochs {
        let te = Instant::now();
        let resumed = state.partial.take();
        let order = data::epoch_order(env.data.train.len(), phase.seed, epoch);
        let pb = progress_bar(
            steps_per_epoch as u64,
            quiet,
            format!("{} epoch {}/{}", phase.label, epoch + 1, phase.epochs),
        );
        // Loss sum, correct and images of the statistics reported so far
        // (a GPU backend reports them every few steps), and images trained.
        let mut totals = resumed.as_ref().map_or((0.0f64, 0usize, 0usize), |p| {
            (p.loss_sum, p.correct, p.seen)
        });
        let mut processed = totals.2;
        let account = |totals: &mut (f64, usize, usize),
                       st: backend::StepStats,
                       s: usize|
         -> anyhow::Result<()> {
            anyhow::ensure!(
                st.images == 0 || st.loss.is_finite(),
                "training diverged in {} at epoch {} by step {s} (loss {}); lower --lr",
                phase.label,
                epoch + 1,
                st.loss
            );
            totals.0 += st.loss as f64 * st.images as f64;
            totals.1 += st.correct;
            totals.2 += st.images;
            Ok(())
        };
        let (skip, earlier_secs) = resumed.as_ref().map_or((0, 0.0), |p| (p.steps, p.seconds));
        pb.inc(skip as u64);
        // The batch of step `s`, the same on every backend. A GPU backend
        // trains while the next batch is made on another thread, and crops,
        // flips and normalizes plain batches itself (unless an attack
        // needs the images on the host first).
        let device_augment = env.backend.name() == "wgpu" && env.cfg.adversarial.is_none();
        let make = |s: usize, idx: &[usize]| match env.cfg.jsd {
            Some(lambda) => {
                let seed = batch_seed(phase.seed, epoch, s);
                let (x, y) = data::loader::make_augmix_views_batch(
                    &env.data.train,
                    idx,
                    &env.data.norm,
                    seed,
                );
                (Made::Host(x), y, backend::Loss::AugMixJsd { lambda })
            }
            None => {
                let seed = batch_seed(phase.seed, epoch, s);
                let (d, norm, aug) = (&env.data.train, &env.data.norm, env.cfg.augment);
                let raw = device_augment
                    .then(|| data::make_raw_batch(d, idx, norm, aug, seed))
                    .flatten();
                let (x, y) = match raw {
                    Some((r, y)) => (Made::Raw(r), y),
                    None => {
                        let (x, y) = data::make_batch(d, idx, norm, aug, seed);
                        (Made::Host(x), y)
                    }
                };
                (x, y, backend::Loss::CrossEntropy)
            }
        };
        let prefetch = env.backend.name() == "wgpu";
        let mut ready = None;
        let batch_size = batch;
        for (s, idx) in order.chunks_exact(batch).enumerate().skip(skip) {
            if phase.stop_after.is_some_and(|n| state.step >= n) {
                pb.finish_and_clear();
                // Nothing of this replay is reported; the totals are cleared.
                env.backend.flush_stats()?;
                env.backend.sync(&mut state.model, &mut state.sgd)?;
                return Ok(());
            }
            let seed = batch_seed(phase.seed, epoch, s);
            let (x, y, loss) = match ready.take() {
                Some((at, b)) if at == s => b,
                _ => make(s, idx),
            };
            let lr = schedule.lr_at(state.step);
            if hook.touches_model() || env.cfg.adversarial.is_some() {
                env.backend.sync(&mut state.model, &mut state.sgd)?;
            }
            hook.before_step(&mut state.model, state.step, total_steps)?;
            let mut rng = crate::rng::Rng::derive(seed, "adversarial");
            let st = match (&env.cfg.adversarial, state.aux_bn.as_mut()) {
                (Some(attack), Some(aux)) => {
                    let x = x.into_host();
                    let batch = advprop::AdvPropBatch {
                        images: &x,
                        labels: &y,
                        norm: &env.data.norm,
                        attack,
                        lr,
                    };
                    advprop::step(
                        env.backend.as_mut(),
                        &mut state.model,
                        &mut state.sgd,
                        aux,
                        &batch,
                        &mut rng,
                    )?
                }
                (adversarial, _) => {
                    let x = match adversarial {
                        Some(spec) => Made::Host(attack_normalized(
                            &state.model,
                            &env.data.norm,
                            &x.into_host(),
                            &y,
                            spec,
                            &mut rng,
                        )?),
                        None => x,
                    };
                    let batch = backend::Batch {
                        images: x.images(),
                        labels: &y,
                        loss,
                    };
                    let next = match prefetch {
                        true => order.chunks_exact(batch_size).nth(s + 1),
                        false => None,
                    };
                    let make = &make;
                    let (st, fetched) = std::thread::scope(|sc| {
                        let h = next.map(|ni| sc.spawn(move || make(s + 1, ni)));
                        let st = hook.step(
                            env.backend.as_mut(),
                            &mut state.model,
                            &mut state.sgd,
                            &batch,
                            lr,
                            state.step,
                        );
                        (st, h.map(|h| h.join()))
                    });
                    if let Some(Ok(b)) = fetched {
                        ready = Some((s + 1, b));
                    }
                    st?
                }
            };
            state.step += 1;
            processed += y.len();
            account(&mut totals, st, s)?;
            pb.inc(1);
            // Ctrl-C: checkpoint the exact state and stop (not in LTH's
            // rewind replay, which writes no checkpoints; it is short).
            if phase.stop_after.is_none() && crate::interrupt::requested() {
                pb.finish_and_clear();
                account(&mut totals, env.backend.flush_stats()?, s)?;
                env.backend.sync(&mut state.model, &mut state.sgd)?;
                state.partial = Some(PartialEpoch {
                    steps: s + 1,
                    loss_sum: totals.0,
                    correct: totals.1,
                    seen: totals.2,
                    seconds: earlier_secs + te.elapsed().as_secs_f64(),
                });
                checkpoint(state, hook)?;
                return Err(crate::interrupt::Interrupted {
                    checkpoint: checkpoint_path(&env.cfg.out),
                }
                .into());
            }
            if s % 4 == 0 || s + 1 == steps_per_epoch {
                let (loss_sum, correct, seen) = totals;
                pb.set_message(format!(
                    "loss {:.3} acc {:.1}% {:.0} img/s lr {:.4}",
                    loss_sum / seen.max(1) as f64,
                    100.0 * correct as f64 / seen.max(1) as f64,
                    processed as f64 / (earlier_secs + te.elapsed().as_secs_f64()),
                    lr
                ));
            }
        }
        pb.finish_and_clear();
        account(&mut totals, env.backend.flush_stats()?, steps_per_epoch)?;
        let (loss_sum, correct, seen) = totals;
        env.backend.sync(&mut state.model, &mut state.sgd)?;
        let secs = earlier_secs + te.elapsed().as_secs_f64();
        env.images_seen += processed;
        env.train_seconds += secs;
        let val_accuracy = match &env.data.val {
            Some(v) => Some(
                eval::evaluate(env.backend.as_mut(), &state.model, v, &env.data.norm, 256)?
                    .accuracy,
            ),
            None => None,
        };
        // Early stopping on held-out robust accuracy (at most 500 images).
        let val_robust_accuracy = match (&env.cfg.adversarial, &env.data.val) {
            (Some(spec), Some(v)) => {
                let v = v.limit(500);
                let acc = attack_accuracy(
                    env.backend.as_mut(),
                    &state.model,
                    &env.data.norm,
                    &v,
                    spec,
                    phase.seed,
                    128,
                )?;
                if state.best.as_ref().is_none_or(|b| acc > b.0) {
                    state.best = Some((acc, epoch + 1, state.model.clone()));
                }
                Some(acc)
            }
            _ => None,
        };
        let log = EpochLog {
            phase: phase.label.clone(),
            epoch: epoch + 1,
            loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_accuracy,
            val_robust_accuracy,
            sparsity: state.model.sparsity(),
            seconds: secs,
            images_per_second: processed as f64 / secs,
        };
        if !quiet {
            eprintln!(
                "{} epoch {}/{}: loss {:.4} train acc {:.2}%{} sparsity {:.1}% {:.0} img/s ({:.0} s)",
                phase.label,
                log.epoch,
                phase.epochs,
                log.loss,
                100.0 * log.train_accuracy,
                val_accuracy.map_or(String::new(), |v| format!(" val acc {:.2}%", 100.0 * v))
                    + &val_robust_accuracy.map_or(String::new(), |v| format!(
                        " val robust acc {:.2}%",
                        100.0 * v
                    )),
                100.0 * log.sparsity,
                log.images_per_second,
                secs
            );
        }
        state.history.push(log);
        state.epochs_done = epoch + 1;
        checkpoint(state, hook)?;
    }
    Ok(())
}

/// The final evaluation of a trained model and the card that holds it.
pub struct Finished {
    pub card: Card,
    pub accuracy: f64,
    pub val_accuracy: Option<f64>,
    pub ece: f64,
}

/// Evaluates `model` (test split, else held-out set) and wraps it in a card
/// with provenance `method`, target sparsity `target_sparsity` and `notes`.
pub fn finish(
    env: &mut Env,
    model: Model,
    history: &[EpochLog],
    method: &str,
    target_sparsity: f64,
    mut notes: Vec<String>,
) -> anyhow::Result<Finished> {
    let cfg = &env.cfg;
    let eval_set = match (&env.data.test, &env.data.val) {
        (Some(t), _) => Some(match cfg.test_limit {
            Some(n) => t.limit(n),
            None => t.clone(),
        }),
        (None, Some(v)) => Some(v.clone()),
        _ => None,
    };
    let final_eval = match &eval_set {
        Some(ds) => Some(eval::evaluate(
            env.backend.as_mut(),
            &model,
            ds,
            &env.data.norm,
            256,
        )?),
        None => None,
    };
    let val_accuracy = history.last().and_then(|l| l.val_accuracy);
    let mut metrics = std::collections::BTreeMap::new();
    if let Some(e) = &final_eval {
        metrics.insert("test_accuracy".to_string(), e.accuracy);
        metrics.insert("test_ece".to_string(), e.ece);
    }
    if let Some(v) = val_accuracy {
        metrics.insert("val_accuracy".to_string(), v);
    }
    if let Some(l) = history.last() {
        metrics.insert("train_loss".to_string(), l.loss);
    }
    notes.insert(
        0,
        format!(
            "sgd lr {} momentum {} nesterov {} wd {} schedule {} batch {}",
            cfg.lr,
            cfg.momentum,
            cfg.nesterov,
            cfg.weight_decay,
            cfg.schedule.name(),
            cfg.batch
        ),
    );
    let mut provenance = Provenance {
        method: method.to_string(),
        arch: cfg.arch.clone(),
        width_mult: cfg.width_mult,
        sparsity: target_sparsity,
        augment: cfg.augment_name.clone(),
        seed: cfg.seed,
        data: cfg.data.to_string(),
        data_digest: env.data.train.digest(),
        backend: env.backend.name().to_string(),
        adapter: env.backend.adapter(),
        epochs: history.len(),
        notes,
        ..Provenance::default()
    };
    provenance.stamp();
    let card = Card {
        model,
        normalization: env.data.norm.clone(),
        class_names: env.data.train.class_names.clone(),
        provenance,
        metrics,
    };
    Ok(Finished {
        accuracy: final_eval.as_ref().map_or(0.0, |e| e.accuracy),
        val_accuracy,
        ece: final_eval.as_ref().map_or(0.0, |e| e.ece),
        card,
    })
}

impl Env {
    /// The `--json` report of a finished run whose card was written.
    pub fn report(&self, f: &Finished, history: Vec<EpochLog>) -> TrainReport {
        TrainReport {
            accuracy: f.accuracy,
            val_accuracy: f.val_accuracy,
            ece: f.ece,
            epochs: history.len(),
            seconds: self.started.elapsed().as_secs_f64(),
            images_per_second: if self.train_seconds > 0.0 {
                self.images_seen as f64 / self.train_seconds
            } else {
                0.0
            },
            backend: self.backend.name().to_string(),
            adapter: self.backend.adapter(),
            sparsity: f.card.model.sparsity(),
            params: f.card.model.param_count(),
            out: self.cfg.out.display().to_string(),
            history,
        }
    }
}

/// Trains a dense model as configured and writes the card to `cfg.out`.
pub fn run(cfg: &TrainConfig) -> anyhow::Result<TrainReport> {
    let mut env = Env::new(cfg)?;
    let graph = env.build_graph(true)?;
    let ckpt_path = checkpoint_path(&cfg.out);
    let fingerprint = cfg.fingerprint();
    let mut state =
        match Checkpoint::<()>::resume_from(&ckpt_path, cfg.resume, &fingerprint, cfg.quiet)? {
            Some(ck) => ck.state,
            None => RunState::new(
                Model::init(graph, cfg.seed).map_err(|e| anyhow::anyhow!(e))?,
                cfg,
            ),
        };
    if !cfg.quiet {
        eprintln!(
            "training {} ({} params) on {} ({} images, {} held out) for {} epochs, batch {}, backend {}",
            cfg.arch,
            state.model.param_count(),
            cfg.data,
            env.data.train.len(),
            env.data.val.as_ref().map_or(0, |v| v.len()),
            cfg.epochs,
            cfg.batch,
            env.backend.adapter()
        );
    }
    let phase = Phase::from_config(cfg, "train");
    let mut save = |s: &RunState, _: &PlainSgd| {
        Checkpoint {
            fingerprint: fingerprint.clone(),
            round: 0,
            state: s.clone(),
            method: (),
        }
        .save(&ckpt_path)
    };
    run_phase(&mut env, &phase, &mut state, &mut PlainSgd, &mut save)?;
    let history = state.history.clone();
    let notes = training_notes(cfg);
    let model = state.into_final_model(cfg.quiet);
    let finished = finish(&mut env, model, &history, "dense", 0.0, notes)?;
    finished.card.save(&cfg.out)?;
    // The card now holds everything the checkpoint did.
    let _ = std::fs::remove_file(&ckpt_path);
    Ok(env.report(&finished, history))
}

/// Provenance notes for how the model was trained beyond the recorded
/// fields (adversarial training, AdvProp).
pub fn training_notes(cfg: &TrainConfig) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(a) = &cfg.adversarial {
        notes.push(format!("adversarial training: {a}"));
    }
    if let Some(lambda) = cfg.jsd {
        notes.push(format!("augmix consistency loss: jsd λ={lambda}"));
    }
    if cfg.advprop {
        notes.push("advprop: auxiliary BatchNorm for the adversarial batches".into());
    }
    notes
}

/// A training batch's images as made on the host: normalized, or raw
/// bytes for a backend that augments on the device.
enum Made {
    Host(crate::tensor::Tensor),
    Raw(data::RawBatch),
}

impl Made {
    fn images(&self) -> backend::Images<'_> {
        match self {
            Made::Host(t) => backend::Images::Normalized(t),
            Made::Raw(r) => backend::Images::Raw(r),
        }
    }

    /// The normalized images (augmented on the host if raw).
    fn into_host(self) -> crate::tensor::Tensor {
        match self {
            Made::Host(t) => t,
            Made::Raw(r) => r.to_tensor(),
        }
    }
}
