//! Gradual magnitude pruning (Zhu & Gupta, 2017): the sparsity follows
//! s_t = s_f + (s_i − s_f)(1 − (t − t0)/(n·Δt))³, with a magnitude prune
//! every Δt steps between t0 and t0 + n·Δt, then training goes on at s_f.

use super::select::{Scope, Target, magnitude_prune, zeros_needed};
use crate::model::Model;
use crate::train::trainer::StepHook;

/// The schedule, in optimizer steps of the phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GmpSchedule {
    /// s_i: sparsity at the first pruning step.
    pub initial: f64,
    /// s_f: the target.
    pub target: f64,
    /// t0.
    pub start: usize,
    /// t0 + n·Δt: the last pruning step (sparsity reaches s_f here).
    pub end: usize,
    /// Δt.
    pub interval: usize,
}

impl GmpSchedule {
    /// A schedule over a phase of `total` steps: pruning from fraction
    /// `start` to fraction `end` of it, every `interval` steps (0 = about
    /// 32 pruning events).
    pub fn over(
        total: usize,
        initial: f64,
        target: f64,
        start: f64,
        end: f64,
        interval: usize,
    ) -> GmpSchedule {
        let last = total.saturating_sub(1);
        let t0 = ((start * total as f64) as usize).min(last);
        let t1 = ((end * total as f64) as usize).clamp(t0, last);
        let interval = if interval == 0 {
            ((t1 - t0) / 32).max(1)
        } else {
            interval
        };
        // The last pruning step is t0 + nΔt ≤ t1.
        let n = (t1 - t0) / interval;
        GmpSchedule {
            initial,
            target,
            start: t0,
            end: t0 + n * interval,
            interval,
        }
    }

    /// Sparsity the schedule asks for at step `t`.
    pub fn sparsity_at(&self, t: usize) -> f64 {
        if t >= self.end {
            return self.target;
        }
        if t <= self.start {
            return self.initial;
        }
        let p = (t - self.start) as f64 / (self.end - self.start) as f64;
        self.target + (self.initial - self.target) * (1.0 - p).powi(3)
    }

    /// Whether the mask is updated before step `t`.
    pub fn prunes_at(&self, t: usize) -> bool {
        t >= self.start && t <= self.end && (t - self.start).is_multiple_of(self.interval)
    }
}

/// The GMP step hook: magnitude pruning at the scheduled steps, plain SGD
/// otherwise (pruned weights stay zero).
pub struct GmpHook {
    pub schedule: GmpSchedule,
    pub targets: Vec<Target>,
    pub scope: Scope,
}

impl StepHook for GmpHook {
    fn before_step(&mut self, model: &mut Model, step: usize, _total: usize) -> anyhow::Result<()> {
        if self.schedule.prunes_at(step) {
            let zeros = zeros_needed(model, &self.targets, self.schedule.sparsity_at(step))?;
            magnitude_prune(model, &self.targets, zeros, self.scope);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_cubic_monotone_and_ends_at_target() {
        let s = GmpSchedule::over(1000, 0.0, 0.9, 0.1, 0.75, 50);
        assert_eq!(s.start, 100);
        assert_eq!(s.end, 750);
        assert_eq!(s.sparsity_at(0), 0.0);
        assert_eq!(s.sparsity_at(750), 0.9);
        assert_eq!(s.sparsity_at(999), 0.9);
        let mut last = -1.0;
        for t in (100..=750).step_by(50) {
            assert!(s.prunes_at(t));
            let v = s.sparsity_at(t);
            assert!(v > last);
            last = v;
        }
        assert!(!s.prunes_at(125) && !s.prunes_at(800));
        // Halfway, the cubic has covered 7/8 of the way.
        assert!((s.sparsity_at(425) - 0.9 * 0.875).abs() < 1e-9);
    }
}
