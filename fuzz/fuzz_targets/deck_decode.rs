//! Fuzz target: `cardc::fuzzing::deck` (see RELIABILITY.md). Any panic,
//! overflow or sanitizer report is a bug; errors are the expected outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cardc::fuzzing::deck(data);
});
