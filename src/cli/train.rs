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
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f32,
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
    /// none | flipcrop | augmix | gaussian[:σ[:p]] (σ in [0,1] pixel units, p = probability).
    #[arg(long, default_value = "flipcrop")]
    pub augment: String,
    /// auto | cpu | wgpu
    #[arg(long, default_value = "auto")]
    pub backend: String,
    /// f32 | mixed
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Adversarial training spec (robustness milestone).
    #[arg(long)]
    pub adversarial: Option<String>,
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

/// Parses `--augment` (see [`Augment::parse`]).
pub fn parse_augment(s: &str) -> anyhow::Result<Augment> {
    Augment::parse(s)
}

impl TrainArgs {
    pub fn config(&self) -> anyhow::Result<TrainConfig> {
        if self.precision != "f32" {
            anyhow::ensure!(
                self.precision == "mixed",
                "--precision '{}': expected f32 or mixed",
                self.precision
            );
            anyhow::bail!("--precision mixed: not built yet (arrives with the GPU backend)");
        }
        if let Some(a) = &self.adversarial {
            anyhow::bail!(
                "--adversarial {a}: not built yet (arrives with the robustness milestone)"
            );
        }
        let data = DataSpec::parse(&self.data)?;
        let mut c = TrainConfig::new(&self.arch, data, self.out.clone());
        c.width_mult = self.width_mult;
        c.epochs = self.epochs;
        c.batch = self.batch;
        c.lr = self.lr;
        c.weight_decay = self.wd;
        c.momentum = self.momentum;
        c.nesterov = !self.no_nesterov;
        c.schedule = ScheduleKind::parse(&self.schedule)?;
        c.warmup_epochs = self.warmup;
        c.augment = parse_augment(&self.augment)?;
        c.augment_name = self.augment.clone();
        c.backend = self.backend.clone();
        c.seed = self.seed;
        c.val_split = self.val_split;
        c.resume = self.resume;
        c.limit = self.limit;
        c.test_limit = self.test_limit;
        Ok(c)
    }
}

pub fn run(args: TrainArgs, json: bool) -> anyhow::Result<()> {
    let cfg = args.config()?;
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
