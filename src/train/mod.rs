//! Training: optimizer, learning-rate schedules, the training loop.

pub mod optim;
