//! `cardc prune`: FT, GMP, LTH, LRR, edge-popup, BiProp and RigL.

use super::train::TrainOpts;
use crate::compress::prune::{self, Method, PruneConfig};
use crate::compress::select::Scope;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// ft | gmp | lth | lrr | ep | biprop | rigl
    #[arg(long)]
    pub method: String,
    /// Fraction of conv/linear weights that end up zero, in [0, 1).
    #[arg(long, allow_hyphen_values = true)]
    pub sparsity: f64,
    /// Trained card to prune (ft, gmp, lth, lrr).
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Architecture to start from at random (ep, biprop, rigl; lth, lrr and gmp from scratch).
    #[arg(long)]
    pub arch: Option<String>,
    /// global | layerwise (default: layerwise for ep, as edge-popup's per-layer k; global otherwise).
    #[arg(long)]
    pub scope: Option<String>,
    /// Leave the first conv dense.
    #[arg(long)]
    pub keep_first_dense: bool,
    /// Leave the last (classifier) layer dense.
    #[arg(long)]
    pub keep_last_dense: bool,
    /// LTH/LRR pruning rounds (default: 20% of the remaining weights per round).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// LTH: rewind surviving weights to their values at this iteration (default: one epoch, at most a quarter of a round).
    #[arg(long)]
    pub rewind_iter: Option<usize>,
    /// GMP: sparsity at the first pruning step.
    #[arg(long, default_value_t = 0.0)]
    pub gmp_initial: f64,
    /// GMP: first pruning step, as a fraction of training.
    #[arg(long, default_value_t = 0.0)]
    pub gmp_start: f64,
    /// GMP: last pruning step (target reached), as a fraction of training.
    #[arg(long, default_value_t = 0.75)]
    pub gmp_end: f64,
    /// GMP: steps between pruning steps (0: about 32 pruning steps).
    #[arg(long, default_value_t = 0)]
    pub gmp_interval: usize,
    /// BiProp: epochs over which sparsity ramps from 50% to the target (default min(10, epochs/2)).
    #[arg(long)]
    pub ramp_epochs: Option<f32>,
    /// RigL: initial drop fraction α.
    #[arg(long, default_value_t = 0.3)]
    pub rigl_alpha: f64,
    /// RigL: steps between connectivity updates (ΔT).
    #[arg(long, default_value_t = 100)]
    pub rigl_interval: usize,
    /// RigL: no updates after this fraction of training.
    #[arg(long, default_value_t = 0.75)]
    pub rigl_end: f64,
    #[command(flatten)]
    pub opts: TrainOpts,
}

impl PruneArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<PruneConfig> {
        let method = Method::parse(&self.method)?;
        let train = self
            .opts
            .config(self.arch.as_deref().unwrap_or(""), method.default_lr())?;
        let mut c = PruneConfig::new(method, self.sparsity, train);
        c.scope = match &self.scope {
            Some(s) => Scope::parse(s)?,
            None => method.default_scope(),
        };
        c.keep_first_dense = self.keep_first_dense;
        c.keep_last_dense = self.keep_last_dense;
        c.rounds = self.rounds;
        c.rewind_iter = self.rewind_iter;
        c.from = self.from.clone();
        c.gmp_initial = self.gmp_initial;
        c.gmp_start = self.gmp_start;
        c.gmp_end = self.gmp_end;
        c.gmp_interval = self.gmp_interval;
        c.ramp_epochs = self.ramp_epochs;
        c.rigl_alpha = self.rigl_alpha;
        c.rigl_interval = self.rigl_interval;
        c.rigl_end = self.rigl_end;
        Ok(c)
    }
}

pub fn run(args: PruneArgs, json: bool) -> anyhow::Result<()> {
    let cfg = args.config()?;
    let report = prune::run(&cfg)?;
    eprintln!(
        "wrote {}: {} at {:.2}% sparsity, test accuracy {:.2}%, ECE {:.4}, {} epochs in {:.0} s",
        report.out,
        cfg.method.name(),
        100.0 * report.sparsity,
        100.0 * report.accuracy,
        report.ece,
        report.epochs,
        report.seconds
    );
    if json {
        super::print_json(&report)?;
    }
    Ok(())
}
