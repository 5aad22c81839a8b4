//! Post-training quantization of a card's weights to f16 and int8
//! (per-output-channel symmetric). Not built yet.
