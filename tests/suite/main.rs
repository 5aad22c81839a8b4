//! The integration suite: one test binary (one link of the whole crate and
//! its dependencies instead of one per file), one module per area.

mod augment;
mod bad_inputs;
mod card;
mod cli;
mod common;
mod compile;
mod compile_measure;
mod corrupt;
mod cortexm;
mod cpu_gradcheck;
mod data;
mod deck;
mod demo;
mod fuzz_smoke;
mod gpu;
mod interrupt;
mod ir;
mod onnx;
mod prune;
mod quantize;
mod robust;
mod shader;
mod xnor;
