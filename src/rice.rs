//! Rice coding of sparse binary weights: the smallest weight format of
//! `cardc compile` (`--format rice`, for flash-bound targets), and how a
//! card stores a binary tensor when that is smaller than a mask bit per
//! weight ([`crate::card::stored::StoredTensor::BinaryRice`]).
//!
//! A sparse binary layer is fully described by which weights are kept and
//! their signs (the magnitude is the row's multiplier). Where the kept
//! weights of a row are few and scattered, the gaps between consecutive
//! kept patch indices are close to geometrically distributed, and
//! Golomb–Rice codes are within a few percent of the entropy of such gaps,
//! i.e. of the information bound `log2 C(n, k) + k` bits for `n` weights
//! with `k` kept (signs included).
//!
//! # Stream
//! Bits are written least significant first into 32-bit words. For each
//! output channel in order, for each kept weight in increasing patch index
//! `p` (patch order `[kh][kw][ic]`, as [`crate::compile::pack`]): the gap
//! `g = p − prev − 1` (`prev` = the previous kept index, −1 at the row
//! start) as a Rice code with parameter `k` — `g >> k` one bits, a zero
//! bit, then the low `k` bits of `g` — and then the sign bit (1 = −1). A
//! row ends with the gap that reaches `p = cols` (no sign bit). `k` is
//! chosen per layer to minimize the stream.
//!
//! The C kernel decodes a layer's stream once per call into offset lists
//! in RAM and then runs like the binary-list kernel.

/// A Rice-coded binary layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiceStream {
    /// The Rice parameter.
    pub k: u8,
    pub words: Vec<u32>,
    /// Bits used in `words`.
    pub bits: u64,
}

/// Writes bits least significant first.
#[derive(Default)]
struct BitWriter {
    words: Vec<u32>,
    bits: u64,
}

impl BitWriter {
    fn push(&mut self, value: u32, n: u32) {
        for i in 0..n {
            if self.bits.is_multiple_of(32) {
                self.words.push(0);
            }
            if (value >> i) & 1 == 1
                && let Some(w) = self.words.last_mut()
            {
                *w |= 1 << (self.bits % 32);
            }
            self.bits += 1;
        }
    }

    fn push_rice(&mut self, g: u64, k: u8) {
        for _ in 0..(g >> k) {
            self.push(1, 1);
        }
        self.push(0, 1);
        self.push((g & ((1u64 << k) - 1)) as u32, k as u32);
    }
}

/// Bits of `g` as a Rice code with parameter `k`.
fn rice_len(g: u64, k: u8) -> u64 {
    (g >> k) + 1 + k as u64
}

/// The gaps of each row (`rows` × `cols`, nonzero = kept), with the
/// terminating gap last, and the signs of the kept weights.
fn row_gaps(w: &[f32], cols: usize) -> Vec<(Vec<u64>, Vec<bool>)> {
    w.chunks(cols.max(1))
        .map(|row| {
            let (mut gaps, mut neg) = (Vec::new(), Vec::new());
            let mut next = 0usize;
            for (p, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    gaps.push((p - next) as u64);
                    neg.push(v < 0.0);
                    next = p + 1;
                }
            }
            gaps.push((cols - next) as u64);
            (gaps, neg)
        })
        .collect()
}

/// Encodes the kept/sign pattern of `w` (`rows` × `cols`, row-major) with
/// the Rice parameter that gives the shortest stream.
pub fn encode(w: &[f32], cols: usize) -> RiceStream {
    let rows = row_gaps(w, cols);
    let bits_for = |k: u8| -> u64 {
        rows.iter()
            .map(|(g, n)| g.iter().map(|&g| rice_len(g, k)).sum::<u64>() + n.len() as u64)
            .sum()
    };
    let k = (0u8..=20).min_by_key(|&k| bits_for(k)).unwrap_or(0);
    let mut out = BitWriter::default();
    for (gaps, neg) in &rows {
        for (i, &g) in gaps.iter().enumerate() {
            out.push_rice(g, k);
            if let Some(&n) = neg.get(i) {
                out.push(u32::from(n), 1);
            }
        }
    }
    RiceStream {
        k,
        words: out.words,
        bits: out.bits,
    }
}

/// Reads bits least significant first.
struct BitReader<'a> {
    words: &'a [u32],
    at: u64,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Option<u32> {
        let w = *self.words.get((self.at / 32) as usize)?;
        let b = (w >> (self.at % 32)) & 1;
        self.at += 1;
        Some(b)
    }

    fn rice(&mut self, k: u8) -> Option<u64> {
        let mut q = 0u64;
        while self.bit()? == 1 {
            q += 1;
        }
        let mut low = 0u64;
        for i in 0..k {
            low |= (self.bit()? as u64) << i;
        }
        Some((q << k) | low)
    }
}

/// The kept weights of each of `rows` rows of `cols`: `(patch index,
/// negative)` in increasing index. `None` if the stream is malformed.
pub fn decode(s: &RiceStream, rows: usize, cols: usize) -> Option<Vec<Vec<(usize, bool)>>> {
    let mut r = BitReader {
        words: &s.words,
        at: 0,
    };
    let mut out = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut row = Vec::new();
        let mut next = 0u64;
        loop {
            let p = next + r.rice(s.k)?;
            if p >= cols as u64 {
                if p != cols as u64 {
                    return None;
                }
                break;
            }
            row.push((p as usize, r.bit()? == 1));
            next = p + 1;
        }
        out.push(row);
    }
    Some(out)
}

/// `log2 C(n, k) + k`: bits that any code needs, on average over all
/// layers with `n` weights of which `k` are kept with free signs.
pub fn information_bound_bits(n: u64, k: u64) -> f64 {
    let k = k.min(n);
    let j = k.min(n - k);
    let log2_choose: f64 = (1..=j)
        .map(|i| ((n - j + i) as f64 / i as f64).log2())
        .sum();
    log2_choose + k as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(rows: usize, cols: usize, keep: f32, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..rows * cols)
            .map(|_| {
                if r.uniform() >= keep {
                    0.0
                } else if r.uniform() < 0.5 {
                    -1.0
                } else {
                    1.0
                }
            })
            .collect()
    }

    #[test]
    fn streams_round_trip_with_empty_and_full_rows() {
        for (keep, cols) in [(0.05, 576), (0.5, 37), (1.0, 9), (0.0, 70)] {
            let mut w = pattern(6, cols, keep, 3);
            // An empty row and a full row in every case.
            w[..cols].iter_mut().for_each(|v| *v = 0.0);
            w[cols..2 * cols].iter_mut().for_each(|v| *v = -1.0);
            let s = encode(&w, cols);
            let rows = decode(&s, 6, cols).unwrap();
            let mut back = vec![0f32; w.len()];
            for (r, row) in rows.iter().enumerate() {
                for &(p, neg) in row {
                    back[r * cols + p] = if neg { -1.0 } else { 1.0 };
                }
            }
            assert_eq!(back, w, "keep {keep}, cols {cols}");
            assert_eq!(s.words.len() as u64, s.bits.div_ceil(32));
        }
    }

    #[test]
    fn sparse_streams_are_near_the_information_bound() {
        let (rows, cols) = (64, 576);
        for keep in [0.05f32, 0.1] {
            let w = pattern(rows, cols, keep, 7);
            let kept = w.iter().filter(|v| **v != 0.0).count() as u64;
            let bound = information_bound_bits((rows * cols) as u64, kept);
            let s = encode(&w, cols);
            let ratio = s.bits as f64 / bound;
            assert!(ratio > 1.0 && ratio < 1.15, "keep {keep}: {ratio}");
        }
    }

    #[test]
    fn damaged_streams_are_refused_not_misread() {
        let w = pattern(3, 40, 0.3, 1);
        let mut s = encode(&w, 40);
        s.words.truncate(s.words.len() / 2);
        assert!(decode(&s, 3, 40).is_none());
        assert_eq!(information_bound_bits(10, 0), 0.0);
        assert!((information_bound_bits(4, 2) - (6f64.log2() + 2.0)).abs() < 1e-12);
    }
}
