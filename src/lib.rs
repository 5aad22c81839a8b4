//! cardc: train, compress, evaluate, ensemble and compile compact robust
//! image classifiers (CARDs).
//!
//! The pipeline's stages each live in their own module: [`data`] (datasets
//! and augmentation), [`ir`] (operators and graphs), [`model`] (weights and
//! compression state), [`backend`] (CPU reference, later wgpu), [`train`]
//! (optimizer, schedules, training loop), [`eval`] (accuracy, calibration),
//! [`card`] (the `.card` container) and [`cli`] (the command line).

pub mod backend;
pub mod card;
pub mod cli;
pub mod compile;
pub mod compress;
pub mod corrupt;
pub mod data;
pub mod deck;
pub mod eval;
pub mod fuzzing;
pub mod interrupt;
pub mod ir;
pub mod model;
pub mod onnx;
pub mod rice;
pub mod rng;
pub mod robust;
pub mod tensor;
pub mod train;
