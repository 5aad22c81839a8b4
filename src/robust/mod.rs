//! Robustness evaluation: corruption tables, calibration per cell,
//! adversarial attacks and report pages (issue: robustness evaluation).
//! Not built yet.
