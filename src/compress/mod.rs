//! Compression: pruning methods (FT, GMP, LTH, LRR, edge-popup, BiProp,
//! RigL) and post-training quantization.
//!
//! [`select`] does exact top-k masking, [`gmp`] the gradual schedule,
//! [`popup`] edge-popup and BiProp (trained scores on frozen weights),
//! [`rigl`] dynamic sparse training, [`prune`] drives `cardc prune`.

pub mod gmp;
pub mod popup;
pub mod prune;
pub mod quantize;
pub mod rigl;
pub mod select;
