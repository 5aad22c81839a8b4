//! Training: optimizer, learning-rate schedules, the training loop.

pub mod advprop;
pub mod optim;
pub mod schedule;
pub mod trainer;
