//! A small, deterministic mutation fuzzer over the [`super::TARGETS`]
//! entry points, for the always-on smoke run in the test suite (stable
//! Rust, no instrumentation, no coverage feedback).
//!
//! libFuzzer finds more, but its cold cost (cargo-fuzz, an instrumented
//! release build with tract) is over CI's budget, so CI runs this instead:
//! each input is one committed seed with 1–4 stacked structural mutations
//! in the style of libFuzzer's (bit flips, random bytes, byte insertion
//! and deletion, truncation, copied chunks, splicing with another seed,
//! "interesting" integers and small increments at the offsets where
//! headers keep their lengths and counts). Everything is drawn from one
//! [`Rng`], so a seed gives the same inputs on every machine, and a panic
//! is reported with the input in hex, ready to become a regression file.

use crate::rng::Rng;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// Values that often sit on a boundary of a length, count or index check.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0xffff,
    1 << 31,
    u32::MAX as u64,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

/// Bytes at the front of every format here that hold magic, versions,
/// kinds, lengths, shapes and counts (container header 28 bytes, `.npy`
/// header dict, bincode's leading varints).
const HEADER_SPAN: usize = 64;

/// Inputs grow by insertion and splicing; past this they are cut back so
/// that a long run does not drift into ever larger inputs.
const MAX_LEN: usize = 1 << 17;

/// Draws mutated inputs from a fixed set of seed inputs.
pub struct Mutator {
    rng: Rng,
    seeds: Vec<Vec<u8>>,
}

impl Mutator {
    /// A mutator over `seeds` (at least one), drawing from `Rng::new(seed)`.
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>) -> Mutator {
        assert!(
            !seeds.is_empty(),
            "the mutator needs at least one seed input"
        );
        Mutator {
            rng: Rng::new(seed),
            seeds,
        }
    }

    /// The next input: a seed with 1–4 mutations stacked on it.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut b = self.seeds[self.rng.below(self.seeds.len())].clone();
        for _ in 0..1 + self.rng.below(4) {
            self.mutate(&mut b);
        }
        b.truncate(MAX_LEN);
        b
    }

    /// An offset in `0..len` (`len` > 0), in the header span half the time.
    fn offset(&mut self, len: usize) -> usize {
        if self.rng.below(2) == 0 {
            self.rng.below(len.min(HEADER_SPAN))
        } else {
            self.rng.below(len)
        }
    }

    /// Applies one mutation to `b`. Where it left the bytes as they were
    /// (a value written over itself, a splice that rebuilt the input, an
    /// input too short for the kind drawn), a bit is flipped or a byte
    /// added instead, so every call changes the input.
    pub fn mutate(&mut self, b: &mut Vec<u8>) {
        let before = b.clone();
        self.mutate_once(b);
        if *b == before {
            if b.is_empty() {
                b.push(self.rng.below(256) as u8);
            } else {
                let i = self.rng.below(b.len());
                b[i] ^= 1 << self.rng.below(8);
            }
        }
    }

    fn mutate_once(&mut self, b: &mut Vec<u8>) {
        let n = b.len();
        match self.rng.below(10) {
            // One bit flipped.
            0 if n > 0 => {
                let i = self.offset(n);
                b[i] ^= 1 << self.rng.below(8);
            }
            // One byte replaced.
            1 if n > 0 => {
                let i = self.offset(n);
                b[i] = self.rng.below(256) as u8;
            }
            // Random bytes inserted.
            2 => {
                let at = self.rng.below(n + 1);
                let k = 1 + self.rng.below(16);
                let bytes: Vec<u8> = (0..k).map(|_| self.rng.below(256) as u8).collect();
                b.splice(at..at, bytes);
            }
            // A range deleted.
            3 if n > 1 => {
                let at = self.rng.below(n);
                let k = 1 + self.rng.below((n - at).min(64));
                b.drain(at..at + k);
            }
            // Cut short.
            4 if n > 0 => b.truncate(self.rng.below(n)),
            // A chunk of the input copied over another place or inserted.
            5 if n > 1 => {
                let from = self.rng.below(n);
                let len = 1 + self.rng.below((n - from).min(64));
                let chunk = b[from..from + len].to_vec();
                let at = self.rng.below(n);
                if self.rng.below(2) == 0 {
                    b.splice(at..at, chunk);
                } else {
                    let end = (at + len).min(n);
                    b[at..end].copy_from_slice(&chunk[..end - at]);
                }
            }
            // Spliced with another seed: a prefix of this input, then the
            // rest of the other from some point on.
            6 => {
                let other = &self.seeds[self.rng.below(self.seeds.len())];
                let cut = self.rng.below(n + 1);
                let from = self.rng.below(other.len() + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[from..]);
            }
            // A small increment or decrement of an integer (off-by-one
            // lengths, counts, shapes).
            7 if n > 0 => {
                let w = self.width(n);
                let at = self.offset(n - w + 1);
                let delta = 1 + self.rng.below(16) as u64;
                let v = read_le(&b[at..at + w]);
                let v = if self.rng.below(2) == 0 {
                    v.wrapping_add(delta)
                } else {
                    v.wrapping_sub(delta)
                };
                write_le(&mut b[at..at + w], v);
            }
            // An interesting integer, little- or big-endian.
            _ if n > 0 => {
                let w = self.width(n);
                let at = self.offset(n - w + 1);
                let v = INTERESTING[self.rng.below(INTERESTING.len())];
                write_le(&mut b[at..at + w], v);
                if self.rng.below(4) == 0 {
                    b[at..at + w].reverse();
                }
            }
            // Nothing to mutate in an empty input: grow it.
            _ => b.push(self.rng.below(256) as u8),
        }
    }

    /// An integer width (1, 2, 4 or 8 bytes) that fits in `n` > 0 bytes.
    fn width(&mut self, n: usize) -> usize {
        let w = [1, 2, 4, 8][self.rng.below(4)];
        if w <= n { w } else { 1 }
    }
}

fn read_le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |v, &x| (v << 8) | x as u64)
}

fn write_le(b: &mut [u8], v: u64) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = (v >> (8 * i)) as u8;
    }
}

/// What a bounded run did.
#[derive(Clone, Debug)]
pub struct Stats {
    pub inputs: usize,
    /// Inputs the entry point accepted (the rest were refused with an error).
    pub accepted: usize,
    pub elapsed: Duration,
    /// The slowest single input (a hang shows up here first).
    pub slowest: Duration,
}

/// A panic found by [`run`].
#[derive(Clone, Debug)]
pub struct Crash {
    /// The input's number in the run (1-based).
    pub index: usize,
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.input.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "panic on input {} ({} bytes): {}\ninput (hex, `xxd -r -p` gives the file): {hex}",
            self.index,
            self.input.len(),
            self.message
        )
    }
}

/// Runs `entry` on `iterations` mutated inputs of `seeds` drawn from
/// `seed`; stops at the first panic. An `Err` from `entry` is the expected
/// answer to a damaged input, not a failure.
pub fn run<T>(
    entry: impl Fn(&[u8]) -> anyhow::Result<T>,
    seeds: Vec<Vec<u8>>,
    iterations: usize,
    seed: u64,
) -> Result<Stats, Crash> {
    let mut m = Mutator::new(seed, seeds);
    let t0 = Instant::now();
    let (mut accepted, mut slowest) = (0, Duration::ZERO);
    for i in 0..iterations {
        let input = m.next_input();
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| entry(&input))) {
            Ok(r) => accepted += usize::from(r.is_ok()),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "(non-text panic)".into());
                return Err(Crash {
                    index: i + 1,
                    input,
                    message,
                });
            }
        }
        slowest = slowest.max(t.elapsed());
    }
    Ok(Stats {
        inputs: iterations,
        accepted,
        elapsed: t0.elapsed(),
        slowest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        vec![
            (0..200u8).collect(),
            b"CARDC\0\x1a\nheader and a payload".to_vec(),
        ]
    }

    #[test]
    fn the_same_seed_gives_the_same_inputs_and_another_seed_others() {
        let draw = |seed| {
            let mut m = Mutator::new(seed, seeds());
            (0..500).map(|_| m.next_input()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn every_mutation_changes_the_bytes() {
        let mut m = Mutator::new(1, seeds());
        let mut kinds_of_length_change = [0usize; 3];
        for i in 0..5000 {
            let mut b = seeds()[i % 2].clone();
            let before = b.clone();
            m.mutate(&mut b);
            assert_ne!(b, before, "mutation {i} left the input unchanged");
            kinds_of_length_change[(b.len().cmp(&before.len()) as i8 + 1) as usize] += 1;
        }
        // Shorter, same length and longer inputs all occur.
        assert!(
            kinds_of_length_change.iter().all(|&k| k > 100),
            "{kinds_of_length_change:?}"
        );
    }

    #[test]
    fn mutations_reach_the_header_and_the_tail() {
        let mut m = Mutator::new(2, vec![vec![0u8; 4096]]);
        let (mut head, mut tail) = (0, 0);
        for _ in 0..2000 {
            let mut b = vec![0u8; 4096];
            m.mutate_once(&mut b);
            if let Some(i) = b.iter().position(|&x| x != 0) {
                if i < HEADER_SPAN {
                    head += 1;
                } else if i > 2048 {
                    tail += 1;
                }
            }
        }
        assert!(head > 300 && tail > 100, "head {head}, tail {tail}");
    }

    #[test]
    fn the_empty_input_still_mutates() {
        let mut m = Mutator::new(3, vec![Vec::new()]);
        for _ in 0..100 {
            let mut b = Vec::new();
            m.mutate(&mut b);
            assert!(!b.is_empty());
        }
    }

    #[test]
    fn a_panic_is_caught_and_reported_with_the_input_in_hex() {
        // Panics on any input whose first byte was changed from 0.
        let entry = |b: &[u8]| -> anyhow::Result<()> {
            if b.first().is_some_and(|&x| x != 0) {
                panic!("first byte {}", b[0]);
            }
            anyhow::ensure!(b.len() == 8, "length");
            Ok(())
        };
        let crash = run(entry, vec![vec![0u8; 8]], 10_000, 4).unwrap_err();
        assert!(crash.message.starts_with("first byte"), "{crash}");
        assert_ne!(crash.input[0], 0);
        let text = crash.to_string();
        let hex: String = crash.input.iter().map(|b| format!("{b:02x}")).collect();
        assert!(text.contains(&hex), "{text}");
        // An entry that never panics runs to the end, errors included.
        let entry = |b: &[u8]| -> anyhow::Result<()> {
            anyhow::ensure!(b.len() == 8, "length");
            Ok(())
        };
        let stats = run(entry, vec![vec![0u8; 8]], 300, 4).unwrap();
        assert_eq!(stats.inputs, 300);
        assert!(stats.accepted > 0 && stats.accepted < 300, "{stats:?}");
    }
}
