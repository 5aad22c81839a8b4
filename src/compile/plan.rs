//! The static memory plan: every activation gets a fixed offset in one
//! arena, and two activations share bytes only when their lifetimes (in
//! steps of the schedule) do not overlap.
//!
//! Lower bound: at each step, the bytes of every value that is live there
//! (defined at or before it and read at or after it) must coexist, so the
//! arena can be no smaller than the maximum of that sum over steps. The
//! planner tries two greedy placements (largest first, and by definition
//! time) and keeps the smaller; `report.json` shows both numbers.

use serde::Serialize;

/// Byte alignment of every value (NEON loads, cache lines of small cores).
pub const ALIGN: usize = 16;

/// A value's size and lifetime `[first, last]` in step indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Interval {
    pub bytes: usize,
    pub first: usize,
    pub last: usize,
}

impl Interval {
    fn overlaps(&self, o: &Interval) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Offsets of every value and the arena size, in bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub offsets: Vec<usize>,
    pub arena_bytes: usize,
    pub lower_bound_bytes: usize,
}

/// Lifetimes of values: defined by `defs[v]`, read by the steps listed in
/// `reads` (`(step, value)` pairs); `keep` is live until the last step
/// (the output). Sizes are rounded up to [`ALIGN`].
pub fn lifetimes(
    sizes: &[usize],
    defs: &[usize],
    reads: &[(usize, usize)],
    keep: usize,
    steps: usize,
) -> Vec<Interval> {
    let mut iv: Vec<Interval> = sizes
        .iter()
        .zip(defs)
        .map(|(&b, &d)| Interval {
            bytes: b.div_ceil(ALIGN) * ALIGN,
            first: d,
            last: d,
        })
        .collect();
    for &(s, v) in reads {
        iv[v].last = iv[v].last.max(s);
    }
    if let Some(k) = iv.get_mut(keep) {
        k.last = steps.saturating_sub(1).max(k.first);
    }
    iv
}

/// Max over steps of the bytes live at that step.
pub fn lower_bound(iv: &[Interval]) -> usize {
    let steps = iv.iter().map(|i| i.last + 1).max().unwrap_or(0);
    (0..steps)
        .map(|t| {
            iv.iter()
                .filter(|i| i.first <= t && t <= i.last)
                .map(|i| i.bytes)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
}

/// Places values in `order`, each at the lowest offset that does not
/// collide with an already placed value whose lifetime overlaps.
fn place(iv: &[Interval], order: &[usize]) -> (Vec<usize>, usize) {
    let mut offsets = vec![0usize; iv.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(iv.len());
    let mut top = 0;
    for &v in order {
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| iv[p].overlaps(&iv[v]))
            .map(|&p| (offsets[p], offsets[p] + iv[p].bytes))
            .collect();
        busy.sort_unstable();
        let mut at = 0;
        for (lo, hi) in busy {
            if at + iv[v].bytes <= lo {
                break;
            }
            at = at.max(hi);
        }
        offsets[v] = at;
        top = top.max(at + iv[v].bytes);
        placed.push(v);
    }
    (offsets, top)
}

/// Plans the arena for the given lifetimes.
pub fn plan(iv: &[Interval]) -> Plan {
    let mut by_size: Vec<usize> = (0..iv.len()).collect();
    by_size.sort_by_key(|&v| (std::cmp::Reverse(iv[v].bytes), iv[v].first, v));
    let mut by_time: Vec<usize> = (0..iv.len()).collect();
    by_time.sort_by_key(|&v| (iv[v].first, std::cmp::Reverse(iv[v].bytes), v));
    let a = place(iv, &by_size);
    let b = place(iv, &by_time);
    let (offsets, arena_bytes) = if b.1 < a.1 { b } else { a };
    Plan {
        offsets,
        arena_bytes,
        lower_bound_bytes: lower_bound(iv),
    }
}

/// Checks that no two values with overlapping lifetimes share bytes and
/// that every value lies inside the arena.
pub fn verify(iv: &[Interval], p: &Plan) -> Result<(), String> {
    for (a, ia) in iv.iter().enumerate() {
        if p.offsets[a] + ia.bytes > p.arena_bytes || !p.offsets[a].is_multiple_of(ALIGN) {
            return Err(format!("value {a} lies outside the arena or is unaligned"));
        }
        for (b, ib) in iv.iter().enumerate().skip(a + 1) {
            let disjoint =
                p.offsets[a] + ia.bytes <= p.offsets[b] || p.offsets[b] + ib.bytes <= p.offsets[a];
            if ia.overlaps(ib) && !disjoint && ia.bytes > 0 && ib.bytes > 0 {
                return Err(format!("values {a} and {b} are live together but overlap"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(bytes: usize, first: usize, last: usize) -> Interval {
        Interval { bytes, first, last }
    }

    #[test]
    fn chain_reaches_the_bound() {
        // a -> b -> c -> d: only neighbours coexist.
        let v = [iv(64, 0, 1), iv(128, 1, 2), iv(32, 2, 3), iv(16, 3, 3)];
        let p = plan(&v);
        verify(&v, &p).unwrap();
        assert_eq!(p.lower_bound_bytes, 192);
        assert_eq!(p.arena_bytes, 192);
    }

    #[test]
    fn residual_branch_stays_live_across_the_block() {
        // x (step 0) read by conv1 (1) and add (3); conv1 -> conv2 -> add.
        let v = [iv(256, 0, 3), iv(256, 1, 2), iv(256, 2, 3), iv(256, 3, 4)];
        let p = plan(&v);
        verify(&v, &p).unwrap();
        assert_eq!(p.lower_bound_bytes, 768);
        assert_eq!(p.arena_bytes, 768);
    }

    #[test]
    fn lifetimes_follow_reads_and_keep_the_output() {
        let l = lifetimes(&[10, 20, 30], &[0, 1, 2], &[(1, 0), (2, 1), (2, 0)], 2, 4);
        assert_eq!(l[0], iv(16, 0, 2));
        assert_eq!(l[1], iv(32, 1, 2));
        assert_eq!(l[2], iv(32, 2, 3));
    }

    #[test]
    fn random_lifetimes_never_collide_and_respect_the_bound() {
        let mut r = crate::rng::Rng::new(4);
        for _ in 0..200 {
            let n = 1 + r.below(12);
            let v: Vec<Interval> = (0..n)
                .map(|_| {
                    let f = r.below(10);
                    iv(16 * (1 + r.below(8)), f, f + r.below(5))
                })
                .collect();
            let p = plan(&v);
            verify(&v, &p).unwrap();
            assert!(p.arena_bytes >= p.lower_bound_bytes);
        }
    }
}
