//! Evaluation: accuracy, calibration, per-class accuracy.
