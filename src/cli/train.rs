//! `cardc train`.

use crate::data::{Augment, DataSpec};
use crate::train::schedule::ScheduleKind;
use crate::train::trainer::{self, TrainConfig};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Architecture: conv4, conv8, vgg16, resnet20, resnet18, wrn-18-2, or a model description file.
    #[arg(long)]
    pub arch: String,
    #[command(flatten)]
    pub opts: TrainOpts,
}

/// The training options `train` and `prune` share.
#[derive(clap::Args, Debug)]
pub struct TrainOpts {
    /// Dataset: cifar10:DIR, imagefolder:DIR, synthetic[:N].
    #[arg(long)]
    pub data: String,
    /// Output card.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub epochs: usize,
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Peak learning rate (default 0.1; `prune --method ft`: 0.01).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Weight decay (L2).
    #[arg(long, default_value_t = 5e-4)]
    pub wd: f32,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Plain momentum instead of Nesterov.
    #[arg(long)]
    pub no_nesterov: bool,
    /// cosine | onecycle | step | constant
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Linear warm-up epochs (cosine schedule).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f32,
    /// none | flipcrop | augmix | gaussian[:σ[:p]] (σ in [0,1] pixel units, p = probability; all on top of flip+crop but none).
    #[arg(long, default_value = "flipcrop")]
    pub augment: String,
    /// auto | cpu | wgpu
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// f32 | mixed
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Adversarial training: fgsm:EPS, pgd-linf:EPS:STEPS[:STEP] or pgd-l2:EPS:STEPS[:STEP]
    /// (EPS in [0,1] pixel units, e.g. 8/255); with --val-split, keeps the epoch with the best
    /// held-out robust accuracy.
    #[arg(long)]
    pub adversarial: Option<String>,
    /// AdvProp: the --adversarial batches go through auxiliary BatchNorm layers and every step
    /// also trains on the clean batch; the card keeps the clean BatchNorm.
    #[arg(long)]
    pub advprop: bool,
    /// AugMix's Jensen–Shannon consistency loss (needs --augment augmix): each image is seen
    /// clean and through two AugMix chains, ~3× the compute per step.
    #[arg(long)]
    pub jsd: bool,
    /// Weight λ of the consistency loss (AugMix's default 12).
    #[arg(long, default_value_t = 12.0)]
    pub jsd_lambda: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 1.0)]
    pub width_mult: f32,
    /// Fraction of the training set held out for validation.
    #[arg(long, default_value_t = 0.0)]
    pub val_split: f64,
    /// Continue from the checkpoint next to --out (OUT.ckpt).
    #[arg(long)]
    pub resume: bool,
    /// Use at most N training images.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Evaluate the final card on at most N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
}

impl TrainOpts {
    /// The training configuration for `arch` (`lr` when `--lr` is not given).
    pub fn config(&self, arch: &str, default_lr: f32) -> anyhow::Result<TrainConfig> {
        if self.precision != "f32" {
            anyhow::ensure!(
                self.precision == "mixed",
                "--precision '{}': expected f32 or mixed",
                self.precision
            );
            anyhow::bail!(
                "--precision mixed: not built yet (the wgpu backend trains in f32; f16 tensor-core GEMMs are still to come)"
            );
        }
        let adversarial = match &self.adversarial {
            Some(a) => Some(
                crate::robust::attack::AttackSpec::parse(a)
                    .map_err(|e| anyhow::anyhow!("--adversarial: {e:#}"))?,
            ),
            None => None,
        };
        let data = DataSpec::parse(&self.data)?;
        let mut c = TrainConfig::new(arch, data, self.out.clone());
        c.width_mult = self.width_mult;
        c.epochs = self.epochs;
        c.batch = self.batch;
        c.lr = self.lr.unwrap_or(default_lr);
        c.weight_decay = self.wd;
        c.momentum = self.momentum;
        c.nesterov = !self.no_nesterov;
        c.schedule = ScheduleKind::parse(&self.schedule)?;
        c.warmup_epochs = self.warmup;
        c.augment = Augment::parse(&self.augment)?;
        // The canonical form records defaults too (e.g. gaussian's p).
        c.augment_name = c.augment.to_string();
        c.backend = self.backend.clone();
        c.seed = self.seed;
        c.val_split = self.val_split;
        c.resume = self.resume;
        c.limit = self.limit;
        c.test_limit = self.test_limit;
        c.adversarial = adversarial;
        c.advprop = self.advprop;
        c.jsd = self.jsd.then_some(self.jsd_lambda);
        Ok(c)
    }
}

pub fn run(args: TrainArgs, json: bool) -> anyhow::Result<()> {
    let cfg = args.opts.config(&args.arch, 0.1)?;
    anyhow::ensure!(
        !(cfg.backend == "wgpu" && cfg.jsd.is_some()),
        "--backend wgpu: the AugMix consistency loss (--jsd) is not on the GPU yet; use --backend cpu or auto"
    );
    crate::backend::select(&cfg.backend)?;
    let report = trainer::run(&cfg)?;
    eprintln!(
        "wrote {}: test accuracy {:.2}%, ECE {:.4}, {} epochs in {:.0} s ({:.0} img/s)",
        report.out,
        100.0 * report.accuracy,
        report.ece,
        report.epochs,
        report.seconds,
        report.images_per_second
    );
    if json {
        super::print_json(&report)?;
    }
    Ok(())
}
