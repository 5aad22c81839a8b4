//! Compression: pruning methods (FT, GMP, LTH, LRR, edge-popup, BiProp,
//! RigL) and post-training quantization.

pub mod quantize;
