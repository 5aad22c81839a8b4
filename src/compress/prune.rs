//! `cardc prune`: runs one compression method end to end and writes the
//! card. Every method reaches the target sparsity exactly (see
//! [`super::select`]), checkpoints after every epoch and every pruning
//! round, and resumes with `--resume` to the same result.

use super::gmp::{GmpHook, GmpSchedule};
use super::popup::{PopupHook, PopupKind, Scores, init_scores, scale_for_density};
use super::rigl::RiglHook;
use super::select::{self, Scope, Target};
use crate::card::Card;
use crate::model::Model;
use crate::train::trainer::{
    Checkpoint, Env, Phase, PlainSgd, RunState, StepHook, TrainConfig, TrainReport,
    checkpoint_path, finish, run_phase,
};
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A compression method (RESEARCH.md §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One-shot magnitude pruning of a trained net, then fine-tuning.
    Ft,
    /// Gradual magnitude pruning during training.
    Gmp,
    /// Iterative magnitude pruning with weight rewinding.
    Lth,
    /// Iterative magnitude pruning with learning-rate rewinding.
    Lrr,
    /// Edge-popup: trained scores on frozen random weights.
    Ep,
    /// Edge-popup on binarized weights.
    Biprop,
    /// Dynamic sparse training from scratch.
    Rigl,
}

impl Method {
    /// Parses a `--method` name.
    pub fn parse(s: &str) -> anyhow::Result<Method> {
        Ok(match s {
            "ft" => Method::Ft,
            "gmp" => Method::Gmp,
            "lth" => Method::Lth,
            "lrr" => Method::Lrr,
            "ep" | "edge-popup" => Method::Ep,
            "biprop" => Method::Biprop,
            "rigl" => Method::Rigl,
            _ => bail!("--method '{s}': expected ft, gmp, lth, lrr, ep, biprop or rigl"),
        })
    }

    /// The `--method` name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ft => "ft",
            Method::Gmp => "gmp",
            Method::Lth => "lth",
            Method::Lrr => "lrr",
            Method::Ep => "ep",
            Method::Biprop => "biprop",
            Method::Rigl => "rigl",
        }
    }

    /// Default peak learning rate: FT fine-tunes with a tenth of the usual.
    pub fn default_lr(self) -> f32 {
        match self {
            Method::Ft => 0.01,
            _ => 0.1,
        }
    }

    /// Default `--scope`: edge-popup keeps the same fraction in every
    /// layer (its paper's k per layer); the others rank globally (BiProp's
    /// global variant, IMP's global magnitude pruning).
    pub fn default_scope(self) -> Scope {
        match self {
            Method::Ep => Scope::Layerwise,
            _ => Scope::Global,
        }
    }

    /// Whether the method needs a trained card (`--from`) or starts from a
    /// random network (`--arch`); LTH, LRR and GMP take either.
    fn accepts_from(self) -> bool {
        matches!(self, Method::Ft | Method::Gmp | Method::Lth | Method::Lrr)
    }
    fn accepts_arch(self) -> bool {
        !matches!(self, Method::Ft)
    }
}

/// Everything `cardc prune` needs.
#[derive(Clone, Debug)]
pub struct PruneConfig {
    pub method: Method,
    /// Fraction of all conv/linear weights that end up zero.
    pub sparsity: f64,
    pub scope: Scope,
    pub keep_first_dense: bool,
    pub keep_last_dense: bool,
    /// LTH/LRR pruning rounds (default: 20% of the remaining weights per round).
    pub rounds: Option<usize>,
    /// LTH rewind iteration (default: one epoch of steps, at most a quarter of a round).
    pub rewind_iter: Option<usize>,
    /// Trained card to start from.
    pub from: Option<PathBuf>,
    /// GMP: initial sparsity, start and end (fractions of the steps), interval (0 = auto).
    pub gmp_initial: f64,
    pub gmp_start: f64,
    pub gmp_end: f64,
    pub gmp_interval: usize,
    /// BiProp: epochs over which sparsity ramps from 50% to the target
    /// (default min(10, epochs/2)); edge-popup does not ramp.
    pub ramp_epochs: Option<f32>,
    /// RigL: α, ΔT and T_end (fraction of the steps).
    pub rigl_alpha: f64,
    pub rigl_interval: usize,
    pub rigl_end: f64,
    /// Training settings; `train.arch` is the architecture for `--arch`.
    pub train: TrainConfig,
}

impl PruneConfig {
    /// Defaults of `cardc prune` for `method` on top of a training config.
    pub fn new(method: Method, sparsity: f64, train: TrainConfig) -> PruneConfig {
        PruneConfig {
            method,
            sparsity,
            scope: Scope::Global,
            keep_first_dense: false,
            keep_last_dense: false,
            rounds: None,
            rewind_iter: None,
            from: None,
            gmp_initial: 0.0,
            gmp_start: 0.0,
            gmp_end: 0.75,
            gmp_interval: 0,
            ramp_epochs: None,
            rigl_alpha: 0.3,
            rigl_interval: 100,
            rigl_end: 0.75,
            train,
        }
    }

    fn fingerprint(&self) -> String {
        format!(
            "prune {}|{}|{}|{}|{}|{:?}|{:?}|{:?}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}",
            self.method.name(),
            self.sparsity,
            self.scope.name(),
            self.keep_first_dense,
            self.keep_last_dense,
            self.rounds,
            self.rewind_iter,
            self.from,
            self.gmp_initial,
            self.gmp_start,
            self.gmp_end,
            self.gmp_interval,
            self.ramp_epochs,
            self.rigl_alpha,
            self.rigl_interval,
            self.rigl_end,
            self.train.fingerprint()
        )
    }

    fn check(&self) -> anyhow::Result<()> {
        if !(0.0..1.0).contains(&self.sparsity) || !self.sparsity.is_finite() {
            bail!("--sparsity must be in [0, 1), got {}", self.sparsity);
        }
        let m = self.method.name();
        match (&self.from, self.train.arch.is_empty()) {
            (Some(_), false) => bail!("--from and --arch: give one of them"),
            (None, true) => bail!(
                "--method {m}: give {}",
                if self.method.accepts_from() {
                    "--from TRAINED.card"
                } else {
                    "--arch ARCH"
                }
            ),
            (Some(f), true) if !self.method.accepts_from() => bail!(
                "--from {}: {m} trains from a random network; give --arch instead",
                f.display()
            ),
            (None, false) if !self.method.accepts_arch() => {
                bail!("--method {m} fine-tunes a trained card: give --from TRAINED.card")
            }
            _ => {}
        }
        if self.rounds == Some(0) {
            bail!("--rounds must be at least 1");
        }
        // AdvProp replaces the optimizer step; the score-training and
        // dynamic-sparse methods have their own steps.
        if self.train.advprop && matches!(self.method, Method::Ep | Method::Biprop | Method::Rigl) {
            bail!("--advprop works with ft, gmp, lth and lrr, not with --method {m}");
        }
        for (v, name) in [
            (self.gmp_initial, "--gmp-initial"),
            (self.gmp_start, "--gmp-start"),
            (self.gmp_end, "--gmp-end"),
            (self.rigl_end, "--rigl-end"),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be in [0, 1], got {v}");
            }
        }
        if self.gmp_start > self.gmp_end {
            bail!(
                "--gmp-start {} is after --gmp-end {}",
                self.gmp_start,
                self.gmp_end
            );
        }
        if !(0.0..1.0).contains(&self.rigl_alpha) {
            bail!("--rigl-alpha must be in [0, 1), got {}", self.rigl_alpha);
        }
        if self.rigl_interval == 0 {
            bail!("--rigl-interval must be at least 1");
        }
        Ok(())
    }

    /// LTH/LRR rounds: given, or enough 20% steps to reach the target.
    pub fn rounds(&self) -> usize {
        self.rounds.unwrap_or_else(|| {
            if self.sparsity <= 0.0 {
                1
            } else {
                ((1.0 - self.sparsity).ln() / 0.8f64.ln()).ceil().max(1.0) as usize
            }
        })
    }

    /// Sparsity after round `r` of `k`: the same fraction of the remaining
    /// weights each round, the last exactly on target.
    pub fn round_sparsity(&self, r: usize, k: usize) -> f64 {
        if r >= k {
            self.sparsity
        } else {
            1.0 - (1.0 - self.sparsity).powf(r as f64 / k as f64)
        }
    }
}

/// The method state a prune checkpoint holds besides the model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PruneState {
    /// LTH: every parameter tensor's values at the rewind iteration.
    pub rewind: Option<Vec<Vec<Vec<f32>>>>,
    /// EP/BiProp: the scores.
    pub scores: Option<Scores>,
}

/// Takes a copy of every parameter at step `at` (LTH's rewind point).
struct SnapshotHook {
    at: usize,
    snap: Option<Vec<Vec<Vec<f32>>>>,
}

impl SnapshotHook {
    fn take(model: &Model) -> Vec<Vec<Vec<f32>>> {
        model
            .params
            .iter()
            .map(|ts| ts.iter().map(|t| t.data.clone()).collect())
            .collect()
    }
}

impl StepHook for SnapshotHook {
    fn before_step(&mut self, model: &mut Model, step: usize, _total: usize) -> anyhow::Result<()> {
        if step == self.at && self.snap.is_none() {
            self.snap = Some(Self::take(model));
        }
        Ok(())
    }
}

/// Resets surviving weights (and every other tensor) to the snapshot;
/// masks are kept and masked values stay zero.
fn rewind(model: &mut Model, snap: &[Vec<Vec<f32>>]) {
    for (ts, ss) in model.params.iter_mut().zip(snap) {
        for (t, s) in ts.iter_mut().zip(ss) {
            t.data.copy_from_slice(s);
            t.apply_mask();
        }
    }
}

/// Runs `cfg` and writes the card; returns the report.
pub fn run(cfg: &PruneConfig) -> anyhow::Result<TrainReport> {
    cfg.check()?;
    let mut tcfg = cfg.train.clone();
    let source = match &cfg.from {
        Some(path) => {
            let card = Card::load(path)?;
            tcfg.arch = card.provenance.arch.clone();
            tcfg.width_mult = card.provenance.width_mult;
            Some((path.clone(), card))
        }
        None => None,
    };
    let mut env = Env::new(&tcfg)?;
    let quiet = tcfg.quiet;
    let start_model = match &source {
        Some((path, card)) => {
            let [c, h, w] = card.model.graph.input_shape();
            let t = &env.data.train;
            anyhow::ensure!(
                [c, h, w] == [t.channels, t.height, t.width]
                    && card.model.graph.classes() == t.class_names.len(),
                "--from {}: the card takes {c}x{h}x{w} images in {} classes but {} has {}x{}x{} in {}",
                path.display(),
                card.model.graph.classes(),
                tcfg.data,
                t.channels,
                t.height,
                t.width,
                t.class_names.len()
            );
            // Keep the normalization the card was trained with.
            env.data.norm = card.normalization.clone();
            card.model.clone()
        }
        None => {
            let affine = !matches!(cfg.method, Method::Ep | Method::Biprop);
            let graph = env.build_graph(affine)?;
            Model::init(graph, tcfg.seed).map_err(|e| anyhow::anyhow!(e))?
        }
    };
    let targets = select::targets(&start_model, cfg.keep_first_dense, cfg.keep_last_dense);
    anyhow::ensure!(
        !targets.is_empty() || cfg.sparsity == 0.0,
        "nothing to prune: the model has no conv/linear weights outside the layers kept dense"
    );
    // Fails early on an unreachable target.
    select::zeros_needed(&start_model, &targets, cfg.sparsity)?;
    let ckpt_path = checkpoint_path(&tcfg.out);
    let fingerprint = cfg.fingerprint();
    let resumed =
        Checkpoint::<PruneState>::resume_from(&ckpt_path, tcfg.resume, &fingerprint, quiet)?;
    let save = |round: usize, state: &RunState, method: PruneState| -> anyhow::Result<()> {
        Checkpoint {
            fingerprint: fingerprint.clone(),
            round,
            state: state.clone(),
            method,
        }
        .save(&ckpt_path)
    };
    if !quiet {
        eprintln!(
            "{}: {} to {:.2}% sparsity ({} scope, {} pruned tensors), {} epochs per phase, backend {}",
            cfg.method.name(),
            match &source {
                Some((p, _)) => format!("from {}", p.display()),
                None => format!("from a random {}", tcfg.arch),
            },
            100.0 * cfg.sparsity,
            cfg.scope.name(),
            targets.len(),
            tcfg.epochs,
            env.backend.adapter()
        );
    }
    let phase = |label: String, seed_tag: u64| Phase {
        seed: tcfg.seed ^ seed_tag.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ..Phase::from_config(&tcfg, &label)
    };
    let mut notes = vec![format!(
        "{} scope, keep first dense {}, keep last dense {}",
        cfg.scope.name(),
        cfg.keep_first_dense,
        cfg.keep_last_dense
    )];
    let model = match cfg.method {
        Method::Ft => {
            let mut state = match resumed {
                Some(ck) => ck.state,
                None => {
                    let mut m = start_model;
                    let zeros = select::zeros_needed(&m, &targets, cfg.sparsity)?;
                    select::magnitude_prune(&mut m, &targets, zeros, cfg.scope);
                    RunState::new(m, &tcfg)
                }
            };
            let mut ck = |s: &RunState, _: &PlainSgd| save(0, s, PruneState::default());
            run_phase(
                &mut env,
                &phase("finetune".into(), 0),
                &mut state,
                &mut PlainSgd,
                &mut ck,
            )?;
            state
        }
        Method::Gmp => {
            let mut state = match resumed {
                Some(ck) => ck.state,
                None => RunState::new(start_model, &tcfg),
            };
            let total = env.steps_per_epoch() * tcfg.epochs;
            let schedule = GmpSchedule::over(
                total,
                cfg.gmp_initial.min(cfg.sparsity),
                cfg.sparsity,
                cfg.gmp_start,
                cfg.gmp_end,
                cfg.gmp_interval,
            );
            notes.push(format!(
                "gmp from {} at step {} to {} at step {}, every {} steps",
                schedule.initial, schedule.start, schedule.target, schedule.end, schedule.interval
            ));
            let mut hook = GmpHook {
                schedule,
                targets: targets.clone(),
                scope: cfg.scope,
            };
            let mut ck = |s: &RunState, _: &GmpHook| save(0, s, PruneState::default());
            run_phase(
                &mut env,
                &phase("gmp".into(), 0),
                &mut state,
                &mut hook,
                &mut ck,
            )?;
            let zeros = select::zeros_needed(&state.model, &targets, cfg.sparsity)?;
            select::magnitude_prune(&mut state.model, &targets, zeros, cfg.scope);
            state
        }
        Method::Lth | Method::Lrr => {
            let lth = cfg.method == Method::Lth;
            let k = cfg.rounds();
            let spe = env.steps_per_epoch();
            // Default: one epoch in, but no later than a quarter of a round.
            let rewind_at = cfg.rewind_iter.unwrap_or(spe.min(spe * tcfg.epochs / 4));
            anyhow::ensure!(
                !lth || rewind_at < spe * tcfg.epochs,
                "--rewind-iter {rewind_at} is not inside the {} steps of a training round",
                spe * tcfg.epochs
            );
            if lth {
                notes.push(format!("{k} rounds, rewind to iteration {rewind_at}"));
            } else {
                notes.push(format!("{k} rounds, learning-rate rewinding"));
            }
            let prune_round = |m: &mut Model, r: usize, pst: &PruneState| -> anyhow::Result<()> {
                let zeros = select::zeros_needed(m, &targets, cfg.round_sparsity(r, k))?;
                select::magnitude_prune(m, &targets, zeros, cfg.scope);
                if lth {
                    let snap = pst
                        .rewind
                        .as_ref()
                        .context("LTH has no rewind weights (internal)")?;
                    rewind(m, snap);
                }
                Ok(())
            };
            let (mut round, mut state, mut pst) = match resumed {
                Some(ck) => (ck.round, ck.state, ck.method),
                None => match &source {
                    // Round 0 (dense training) is the card; the rewind
                    // weights are replayed from the card's initialization.
                    Some((_, card)) => {
                        let mut pst = PruneState::default();
                        if lth {
                            let init = Model::init(card.model.graph.clone(), card.provenance.seed)
                                .map_err(|e| anyhow::anyhow!(e))?;
                            let mut st = RunState::new(init, &tcfg);
                            let mut hook = SnapshotHook {
                                at: rewind_at,
                                snap: None,
                            };
                            let replay = Phase {
                                stop_after: Some(rewind_at),
                                ..Phase::from_config(&tcfg, "rewind replay")
                            };
                            if !quiet {
                                eprintln!(
                                    "replaying {rewind_at} steps from the card's initialization for the rewind weights"
                                );
                            }
                            run_phase(&mut env, &replay, &mut st, &mut hook, &mut |_, _| Ok(()))?;
                            let snap = match hook.snap {
                                Some(s) => s,
                                None => SnapshotHook::take(&st.model),
                            };
                            pst.rewind = Some(snap);
                        }
                        let mut m = start_model;
                        prune_round(&mut m, 1, &pst)?;
                        let state = RunState::new(m, &tcfg);
                        save(1, &state, pst.clone())?;
                        (1, state, pst)
                    }
                    None => (0, RunState::new(start_model, &tcfg), PruneState::default()),
                },
            };
            loop {
                if round == 0 {
                    let mut hook = SnapshotHook {
                        at: if lth { rewind_at } else { usize::MAX },
                        snap: pst.rewind.take(),
                    };
                    let mut ck = |s: &RunState, h: &SnapshotHook| {
                        save(
                            0,
                            s,
                            PruneState {
                                rewind: h.snap.clone(),
                                scores: None,
                            },
                        )
                    };
                    run_phase(
                        &mut env,
                        &phase("dense".into(), 0),
                        &mut state,
                        &mut hook,
                        &mut ck,
                    )?;
                    pst.rewind = hook.snap;
                } else {
                    let mut ck = |s: &RunState, _: &PlainSgd| save(round, s, pst.clone());
                    let label = format!("round {round}/{k}");
                    run_phase(
                        &mut env,
                        &phase(label, round as u64),
                        &mut state,
                        &mut PlainSgd,
                        &mut ck,
                    )?;
                }
                if round == k {
                    break;
                }
                round += 1;
                prune_round(&mut state.model, round, &pst)?;
                state.next_phase();
                save(round, &state, pst.clone())?;
                if !quiet {
                    eprintln!(
                        "round {round}/{k}: pruned to {:.2}% sparsity{}",
                        100.0 * state.model.sparsity(),
                        if lth { ", rewound" } else { "" }
                    );
                }
            }
            state
        }
        Method::Ep | Method::Biprop => {
            let kind = if cfg.method == Method::Ep {
                PopupKind::EdgePopup
            } else {
                PopupKind::BiProp
            };
            let spe = env.steps_per_epoch();
            let ramp_epochs = match kind {
                PopupKind::EdgePopup => 0.0,
                PopupKind::BiProp => cfg
                    .ramp_epochs
                    .unwrap_or((tcfg.epochs as f32 / 2.0).min(10.0)),
            };
            let (mut state, scores) = match resumed {
                Some(ck) => {
                    let scores = ck.method.scores.context("checkpoint holds no scores")?;
                    (ck.state, scores)
                }
                None => {
                    let mut m = start_model;
                    if kind == PopupKind::EdgePopup {
                        scale_for_density(&mut m, &targets, cfg.sparsity);
                    }
                    let scores = init_scores(&m, &targets, tcfg.seed);
                    (RunState::new(m, &tcfg), scores)
                }
            };
            let mut hook = PopupHook {
                kind,
                targets: targets.clone(),
                scope: cfg.scope,
                scores,
                sparsity: cfg.sparsity,
                ramp_steps: (ramp_epochs * spe as f32) as usize,
                ramp_from: 0.5,
                momentum: tcfg.momentum,
                nesterov: tcfg.nesterov,
                weight_decay: tcfg.weight_decay,
            };
            if ramp_epochs > 0.0 {
                notes.push(format!(
                    "sparsity ramped from 50% over {ramp_epochs} epochs"
                ));
            }
            let mut ck = |s: &RunState, h: &PopupHook| {
                save(
                    0,
                    s,
                    PruneState {
                        rewind: None,
                        scores: Some(h.scores.clone()),
                    },
                )
            };
            run_phase(
                &mut env,
                &phase(cfg.method.name().into(), 0),
                &mut state,
                &mut hook,
                &mut ck,
            )?;
            hook.apply_masks(&mut state.model, cfg.sparsity)?;
            state
        }
        Method::Rigl => {
            let spe = env.steps_per_epoch();
            let total = spe * tcfg.epochs;
            let mut state = match resumed {
                Some(ck) => ck.state,
                None => {
                    let mut m = start_model;
                    let zeros = select::zeros_needed(&m, &targets, cfg.sparsity)?;
                    // Random initial connectivity at the target sparsity.
                    let mut rng = crate::rng::Rng::derive(tcfg.seed, "rigl-mask");
                    let scores: Vec<Vec<f32>> = targets
                        .iter()
                        .map(|&(i, k)| {
                            (0..m.params[i][k].data.len())
                                .map(|_| rng.uniform())
                                .collect()
                        })
                        .collect();
                    let masks = select::top_k_masks(&scores, zeros, cfg.scope);
                    select::set_masks(&mut m, &targets, masks);
                    RunState::new(m, &tcfg)
                }
            };
            let mut hook = RiglHook {
                targets: targets.clone(),
                alpha: cfg.rigl_alpha,
                interval: cfg.rigl_interval,
                end: (cfg.rigl_end * total as f64) as usize,
            };
            notes.push(format!(
                "rigl alpha {} every {} steps until step {}",
                hook.alpha, hook.interval, hook.end
            ));
            let mut ck = |s: &RunState, _: &RiglHook| save(0, s, PruneState::default());
            run_phase(
                &mut env,
                &phase("rigl".into(), 0),
                &mut state,
                &mut hook,
                &mut ck,
            )?;
            state
        }
    };
    notes.extend(crate::train::trainer::training_notes(&tcfg));
    let history = model.history.clone();
    let model = model.into_final_model(quiet);
    check_exact(&model, &targets, cfg)?;
    let mut finished = finish(
        &mut env,
        model,
        &history,
        cfg.method.name(),
        cfg.sparsity,
        notes,
    )?;
    if let Some((p, _)) = &source {
        finished
            .card
            .provenance
            .notes
            .push(format!("from {}", p.display()));
    }
    finished.card.save(&tcfg.out)?;
    let _ = std::fs::remove_file(&ckpt_path);
    Ok(env.report(&finished, history))
}

/// The final sparsity must be the target to within one weight per pruned
/// layer (it is exact by construction; this guards the invariant).
fn check_exact(model: &Model, targets: &[Target], cfg: &PruneConfig) -> anyhow::Result<()> {
    let total: usize = model
        .prunable()
        .iter()
        .map(|&(i, k)| model.params[i][k].data.len())
        .sum();
    let zeros = (model.sparsity() * total as f64).round() as i64;
    let want = (cfg.sparsity * total as f64).round() as i64;
    // Weights that are exactly zero without being masked count as zeros too
    // and can only add to the count.
    anyhow::ensure!(
        zeros >= want && (zeros - want) as usize <= targets.len().max(1) + (total / 10_000),
        "internal: {} ended at {zeros} zeros of {total}, target {want}",
        cfg.method.name()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DataSpec;

    /// LTH's snapshot is the weights at iteration k (a separate run stopped
    /// at k reproduces it) and rewinding resets exactly the survivors of
    /// magnitude pruning of the *trained* weights to it.
    #[test]
    fn lth_rewinds_survivors_to_iteration_k() {
        let dir = tempfile::tempdir().unwrap();
        let arch = dir.path().join("tiny.toml");
        std::fs::write(
            &arch,
            "name = \"tiny\"\nfamily = \"plain\"\nlayers = [\"c8\", \"M\", \"c8\", \"M\"]\n",
        )
        .unwrap();
        let mut cfg = TrainConfig::new(
            arch.to_str().unwrap(),
            DataSpec::Synthetic(200),
            dir.path().join("x.card"),
        );
        cfg.epochs = 1;
        cfg.batch = 32;
        cfg.quiet = true;
        let mut env = Env::new(&cfg).unwrap();
        let graph = env.build_graph(true).unwrap();
        let phase = Phase::from_config(&cfg, "dense");
        let mut state = RunState::new(Model::init(graph.clone(), 0).unwrap(), &cfg);
        let mut hook = SnapshotHook { at: 3, snap: None };
        run_phase(&mut env, &phase, &mut state, &mut hook, &mut |_, _| Ok(())).unwrap();
        let snap = hook.snap.expect("snapshot taken");

        let mut replay = RunState::new(Model::init(graph, 0).unwrap(), &cfg);
        let stop = Phase {
            stop_after: Some(3),
            ..phase.clone()
        };
        run_phase(&mut env, &stop, &mut replay, &mut PlainSgd, &mut |_, _| {
            Ok(())
        })
        .unwrap();
        assert_eq!(SnapshotHook::take(&replay.model), snap);
        assert_ne!(
            SnapshotHook::take(&state.model),
            snap,
            "training moved nothing"
        );

        let targets = select::targets(&state.model, false, false);
        let trained = state.model.clone();
        let zeros = select::zeros_needed(&state.model, &targets, 0.5).unwrap();
        select::magnitude_prune(&mut state.model, &targets, zeros, Scope::Global);
        rewind(&mut state.model, &snap);
        let mut kept_min = f32::INFINITY;
        let mut pruned_max = 0.0f32;
        for &(i, k) in &targets {
            let t = &state.model.params[i][k];
            let mask = t.mask().unwrap();
            for j in 0..t.data.len() {
                let trained_mag = trained.params[i][k].data[j].abs();
                if mask[j] {
                    assert_eq!(t.data[j], snap[i][k][j]);
                    kept_min = kept_min.min(trained_mag);
                } else {
                    assert_eq!(t.data[j], 0.0);
                    pruned_max = pruned_max.max(trained_mag);
                }
            }
        }
        assert!(pruned_max <= kept_min, "mask is not by trained magnitude");
    }

    /// Checks before every step that the masks are unchanged and masked
    /// weights are exactly zero.
    struct MaskWatch {
        targets: Vec<Target>,
        masks: Vec<Vec<bool>>,
        checked: usize,
    }

    impl MaskWatch {
        fn check(&mut self, model: &Model) {
            for (&(i, k), m) in self.targets.iter().zip(&self.masks) {
                let t = &model.params[i][k];
                assert_eq!(t.mask().unwrap(), &m[..]);
                for (j, &keep) in m.iter().enumerate() {
                    assert!(keep || t.data[j] == 0.0, "masked weight {j} moved");
                }
            }
            self.checked += 1;
        }
    }

    impl StepHook for MaskWatch {
        fn before_step(&mut self, model: &mut Model, _: usize, _: usize) -> anyhow::Result<()> {
            self.check(model);
            Ok(())
        }
    }

    #[test]
    fn masked_weights_stay_zero_through_training() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = TrainConfig::new("conv4", DataSpec::Synthetic(96), dir.path().join("x.card"));
        cfg.width_mult = 0.25;
        cfg.epochs = 2;
        cfg.batch = 32;
        cfg.quiet = true;
        let mut env = Env::new(&cfg).unwrap();
        let mut model = Model::init(env.build_graph(true).unwrap(), 1).unwrap();
        let targets = select::targets(&model, false, false);
        let zeros = select::zeros_needed(&model, &targets, 0.7).unwrap();
        select::magnitude_prune(&mut model, &targets, zeros, Scope::Layerwise);
        let masks = targets
            .iter()
            .map(|&(i, k)| model.params[i][k].mask().unwrap().to_vec())
            .collect();
        let mut watch = MaskWatch {
            targets,
            masks,
            checked: 0,
        };
        let mut state = RunState::new(model, &cfg);
        let phase = Phase::from_config(&cfg, "finetune");
        run_phase(&mut env, &phase, &mut state, &mut watch, &mut |_, _| Ok(())).unwrap();
        watch.check(&state.model);
        assert_eq!(watch.checked, 7);
        assert!((state.model.sparsity() - 0.7).abs() < 1e-3);
    }
}
