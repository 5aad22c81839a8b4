//! Learning-rate schedules, as a function of the step index.

use serde::{Deserialize, Serialize};
use std::f32::consts::PI;

/// A `--schedule` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleKind {
    /// Linear warm-up (over `warmup` steps) then cosine decay to 0.
    Cosine,
    /// One-cycle (Smith): cosine ramp from lr/25 to lr over the first 30%
    /// of steps, then cosine decay to lr/25e4 (PyTorch's `OneCycleLR`).
    OneCycle,
    /// Constant lr divided by 10 at 50% and 75% of training.
    Step,
    /// Constant lr.
    Constant,
}

impl ScheduleKind {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        match s {
            "cosine" => Ok(ScheduleKind::Cosine),
            "onecycle" | "one-cycle" => Ok(ScheduleKind::OneCycle),
            "step" => Ok(ScheduleKind::Step),
            "constant" => Ok(ScheduleKind::Constant),
            _ => anyhow::bail!("--schedule '{s}': expected cosine, onecycle, step or constant"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::OneCycle => "onecycle",
            ScheduleKind::Step => "step",
            ScheduleKind::Constant => "constant",
        }
    }
}

/// A schedule over `total` steps with peak learning rate `lr`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f32,
    pub total: usize,
    /// Warm-up steps (cosine only).
    pub warmup: usize,
}

impl Schedule {
    /// Learning rate for step `t` (0-based).
    pub fn lr_at(&self, t: usize) -> f32 {
        let total = self.total.max(1);
        let t = t.min(total - 1);
        let frac = t as f32 / total as f32;
        match self.kind {
            ScheduleKind::Constant => self.lr,
            ScheduleKind::Step => {
                if frac < 0.5 {
                    self.lr
                } else if frac < 0.75 {
                    self.lr * 0.1
                } else {
                    self.lr * 0.01
                }
            }
            ScheduleKind::Cosine => {
                if t < self.warmup {
                    self.lr * (t + 1) as f32 / self.warmup as f32
                } else {
                    let span = (total - self.warmup).max(1) as f32;
                    let p = (t - self.warmup) as f32 / span;
                    0.5 * self.lr * (1.0 + (PI * p).cos())
                }
            }
            ScheduleKind::OneCycle => {
                let up = ((0.3 * total as f32) as usize).max(1);
                let (lo, end) = (self.lr / 25.0, self.lr / 25.0 / 1e4);
                let cos = |a: f32, b: f32, p: f32| b + (a - b) * 0.5 * (1.0 + (PI * p).cos());
                if t < up {
                    cos(lo, self.lr, t as f32 / up as f32)
                } else {
                    let down = (total - up).max(1) as f32;
                    cos(self.lr, end, (t - up) as f32 / down)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_have_their_shapes() {
        let s = |kind| Schedule {
            kind,
            lr: 0.1,
            total: 1000,
            warmup: 0,
        };
        let c = s(ScheduleKind::Cosine);
        assert!((c.lr_at(0) - 0.1).abs() < 1e-6);
        assert!((c.lr_at(500) - 0.05).abs() < 1e-3);
        assert!(c.lr_at(999) < 1e-5);
        let o = s(ScheduleKind::OneCycle);
        assert!((o.lr_at(0) - 0.004).abs() < 1e-6);
        assert!((o.lr_at(300) - 0.1).abs() < 1e-6);
        assert!(o.lr_at(999) < 1e-5);
        assert!(o.lr_at(150) > o.lr_at(0) && o.lr_at(150) < o.lr_at(300));
        let st = s(ScheduleKind::Step);
        assert_eq!(st.lr_at(499), 0.1);
        assert!((st.lr_at(500) - 0.01).abs() < 1e-9);
        assert!((st.lr_at(750) - 0.001).abs() < 1e-9);
        let w = Schedule { warmup: 100, ..c };
        assert!((w.lr_at(0) - 0.001).abs() < 1e-6);
        assert!((w.lr_at(99) - 0.1).abs() < 1e-6);
        assert!((w.lr_at(100) - 0.1).abs() < 1e-6);
    }
}
