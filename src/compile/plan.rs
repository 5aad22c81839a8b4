//! The static memory plan: every activation gets a fixed offset in one
//! arena, and two activations share bytes only when their lifetimes (in
//! steps of the schedule) do not overlap.
//!
//! Lower bound: at each step, the bytes of every value that is live there
//! (defined at or before it and read at or after it) must coexist, so the
//! arena can be no smaller than the maximum of that sum over steps. The
//! planner tries two greedy placements (largest first, and by definition
//! time) and keeps the smaller. When that is above the bound, a bounded
//! depth-first search looks for a placement in exactly the bound, in two
//! passes: values in order of definition, each at an offset touching a
//! placed value it overlaps (on top of one, right below one, or at either
//! end of the arena), which is what residual blocks need, where a value
//! must leave room for values defined after it; then, if that fails, an
//! exhaustive search over arenas filled from the bottom up (each value at
//! 0 or on top of a value beneath it). Both passes count the placements
//! they try and stop at a fixed number, so planning is deterministic and
//! fast; if neither reaches the bound, the greedy placement stays.
//! `report.json` shows the arena and the bound.

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

/// The better of the two greedy placements: largest first (big values
/// claim low offsets before small ones fragment the arena) and by
/// definition time (values placed as the schedule creates them).
fn greedy(iv: &[Interval]) -> (Vec<usize>, usize) {
    let mut by_size: Vec<usize> = (0..iv.len()).collect();
    by_size.sort_by_key(|&v| (std::cmp::Reverse(iv[v].bytes), iv[v].first, v));
    let a = place(iv, &by_size);
    let b = place(iv, &by_time(iv));
    if b.1 < a.1 { b } else { a }
}

/// Values by definition step, larger first among values defined together.
fn by_time(iv: &[Interval]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..iv.len()).collect();
    order.sort_by_key(|&v| (iv[v].first, std::cmp::Reverse(iv[v].bytes), v));
    order
}

/// Plans the arena for the given lifetimes: the greedy placement, or a
/// searched one when the greedy one is above the lower bound and the
/// search fits the values in exactly the bound.
pub fn plan(iv: &[Interval]) -> Plan {
    let lower_bound_bytes = lower_bound(iv);
    let (mut offsets, mut arena_bytes) = greedy(iv);
    if arena_bytes > lower_bound_bytes
        && let Some(found) = fit(iv, lower_bound_bytes, SEARCH_NODES)
    {
        arena_bytes = arena_top(iv, &found);
        offsets = found;
    }
    Plan {
        offsets,
        arena_bytes,
        lower_bound_bytes,
    }
}

/// The highest byte any value reaches at `offsets`.
fn arena_top(iv: &[Interval], offsets: &[usize]) -> usize {
    iv.iter()
        .zip(offsets)
        .map(|(i, &o)| o + i.bytes)
        .max()
        .unwrap_or(0)
}

/// Placements the defined-order pass and the bottom-up pass may each try
/// before giving up: a count, not a time, so plans do not depend on the
/// machine; the first pass needs few on residual nets (one per value when
/// nothing is undone), the second more on small irregular puzzles.
const SEARCH_NODES: [usize; 2] = [5_000, 20_000];

/// How a subtree of the search ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Found,
    Failed,
    OutOfNodes,
}

/// Offsets that fit every value within `cap` bytes, if the two passes find
/// them within `nodes` placements each (see the module comment).
fn fit(iv: &[Interval], cap: usize, nodes: [usize; 2]) -> Option<Vec<usize>> {
    let mut s = Search::new(iv, cap, nodes[0]);
    if s.touching(&by_time(iv), 0) == Outcome::Found {
        return Some(s.offsets());
    }
    let mut s = Search::new(iv, cap, nodes[1]);
    (s.bottom_up(None) == Outcome::Found).then(|| s.offsets())
}

/// The state of one search: the values placed so far below `cap`.
struct Search<'a> {
    iv: &'a [Interval],
    cap: usize,
    /// Per value: the other values with bytes whose lifetimes overlap it.
    conflicts: Vec<Vec<usize>>,
    /// Per step: the values with bytes live there.
    live: Vec<Vec<usize>>,
    /// Per value: its offset once placed (values of 0 bytes sit at 0).
    at: Vec<Option<usize>>,
    nodes_left: usize,
}

impl<'a> Search<'a> {
    fn new(iv: &'a [Interval], cap: usize, nodes: usize) -> Self {
        let sized = |v: &usize| iv[*v].bytes > 0;
        let conflicts = (0..iv.len())
            .map(|v| {
                (0..iv.len())
                    .filter(|&u| u != v && sized(&u) && iv[u].overlaps(&iv[v]))
                    .collect()
            })
            .collect();
        let steps = iv.iter().map(|i| i.last + 1).max().unwrap_or(0);
        let live = (0..steps)
            .map(|t| {
                (0..iv.len())
                    .filter(|v| sized(v) && iv[*v].first <= t && t <= iv[*v].last)
                    .collect()
            })
            .collect();
        Search {
            iv,
            cap,
            conflicts,
            live,
            at: iv.iter().map(|i| (i.bytes == 0).then_some(0)).collect(),
            nodes_left: nodes,
        }
    }

    /// The offsets of a complete placement.
    fn offsets(&self) -> Vec<usize> {
        self.at.iter().map(|o| o.unwrap_or(0)).collect()
    }

    /// Takes one node from the budget; false when none is left.
    fn spend(&mut self) -> bool {
        let left = self.nodes_left > 0;
        self.nodes_left = self.nodes_left.saturating_sub(1);
        left
    }

    /// `[lo, hi)` of the placed values that overlap `v` in time.
    fn busy(&self, v: usize) -> Vec<(usize, usize)> {
        self.conflicts[v]
            .iter()
            .filter_map(|&u| self.at[u].map(|o| (o, o + self.iv[u].bytes)))
            .collect()
    }

    /// First pass: places `order[k..]` in turn, each at an offset where it
    /// touches a placed value it overlaps or an end of the arena, lowest
    /// first. Looking only at such offsets keeps the tree small; it can
    /// miss a placement where a value must float between values placed
    /// after it (the second pass covers those).
    fn touching(&mut self, order: &[usize], k: usize) -> Outcome {
        let Some(&v) = order.get(k) else {
            return Outcome::Found;
        };
        if self.at[v].is_some() {
            return self.touching(order, k + 1);
        }
        for at in self.touching_offsets(v) {
            if !self.spend() {
                return Outcome::OutOfNodes;
            }
            self.at[v] = Some(at);
            if self.steps_can_fit(v) {
                match self.touching(order, k + 1) {
                    Outcome::Failed => {}
                    done => return done,
                }
            }
            self.at[v] = None;
        }
        Outcome::Failed
    }

    /// The free offsets of `v` that touch a placed value overlapping it or
    /// an end of the arena, ascending.
    fn touching_offsets(&self, v: usize) -> Vec<usize> {
        let b = self.iv[v].bytes;
        let busy = self.busy(v);
        let mut cand = vec![0, self.cap.saturating_sub(b)];
        for &(lo, hi) in &busy {
            cand.push(hi);
            cand.extend(lo.checked_sub(b));
        }
        cand.sort_unstable();
        cand.dedup();
        cand.retain(|&c| {
            c.is_multiple_of(ALIGN)
                && c + b <= self.cap
                && busy.iter().all(|&(lo, hi)| c + b <= lo || hi <= c)
        });
        cand
    }

    /// Whether, at every step of `v`'s lifetime, the values live there and
    /// not yet placed could still fit the gaps the placed ones leave: the
    /// largest fits the largest gap, and their total fits the gaps at least
    /// as large as the smallest of them.
    fn steps_can_fit(&self, v: usize) -> bool {
        (self.iv[v].first..=self.iv[v].last).all(|t| {
            let mut busy = Vec::new();
            let (mut sum, mut min, mut max) = (0, usize::MAX, 0);
            for &u in &self.live[t] {
                let b = self.iv[u].bytes;
                match self.at[u] {
                    Some(o) => busy.push((o, o + b)),
                    None => (sum, min, max) = (sum + b, min.min(b), max.max(b)),
                }
            }
            if sum == 0 {
                return true;
            }
            let gaps = gaps(busy, self.cap);
            let room: usize = gaps.iter().filter(|&&g| g >= min).sum();
            gaps.iter().any(|&g| g >= max) && room >= sum
        })
    }

    /// Where `v` rests if placed now: on the highest top of the placed
    /// values that overlap it, else at 0.
    fn rest(&self, v: usize) -> usize {
        self.conflicts[v]
            .iter()
            .filter_map(|&u| self.at[u].map(|o| o + self.iv[u].bytes))
            .max()
            .unwrap_or(0)
    }

    /// Second pass, exhaustive: any placement can be pushed down until each
    /// value rests on 0 or on a value beneath it, and then it is the one
    /// obtained by placing the values in order of (offset, index), each
    /// where it rests. So this tries, in turn, every unplaced value whose
    /// resting offset keeps that order after `last` (the offset and index
    /// of the value placed last).
    fn bottom_up(&mut self, last: Option<(usize, usize)>) -> Outcome {
        let floor = last.map_or(0, |(o, _)| o);
        let unplaced: Vec<usize> = (0..self.iv.len())
            .filter(|&v| self.at[v].is_none())
            .collect();
        if unplaced.is_empty() {
            return Outcome::Found;
        }
        if !self.above_can_fit(floor, &unplaced, last) {
            return Outcome::Failed;
        }
        let mut cand: Vec<(usize, usize)> = unplaced
            .iter()
            .map(|&v| (self.rest(v), v))
            .filter(|&(o, v)| last.is_none_or(|l| (o, v) > l) && o + self.iv[v].bytes <= self.cap)
            .collect();
        cand.sort_by_key(|&(o, v)| (o, std::cmp::Reverse(self.iv[v].bytes), self.iv[v].first, v));
        for (o, v) in cand {
            if !self.spend() {
                return Outcome::OutOfNodes;
            }
            self.at[v] = Some(o);
            match self.bottom_up(Some((o, v))) {
                Outcome::Failed => {}
                done => return done,
            }
            self.at[v] = None;
        }
        Outcome::Failed
    }

    /// Whether the unplaced values can still go at or above `floor`: each
    /// fits between where it would rest and `cap`; one that overlaps no
    /// unplaced value rests where it would now, so that must come after
    /// `last`; and at every step, the unplaced values live there fit in
    /// what the placed ones leave free above `floor`.
    fn above_can_fit(
        &self,
        floor: usize,
        unplaced: &[usize],
        last: Option<(usize, usize)>,
    ) -> bool {
        let room = self.cap - floor;
        for &v in unplaced {
            let rest = self.rest(v);
            if rest.max(floor) + self.iv[v].bytes > self.cap {
                return false;
            }
            let alone = self.conflicts[v].iter().all(|&u| self.at[u].is_some());
            if alone && last.is_some_and(|l| (rest, v) < l) {
                return false;
            }
        }
        self.live.iter().all(|vs| {
            let need: usize = vs
                .iter()
                .map(|&u| {
                    let b = self.iv[u].bytes;
                    match self.at[u] {
                        None => b,
                        Some(o) => (o + b).saturating_sub(o.max(floor)),
                    }
                })
                .sum();
            need <= room
        })
    }
}

/// The sizes of the free stretches of `[0, cap)` around `busy`.
fn gaps(mut busy: Vec<(usize, usize)>, cap: usize) -> Vec<usize> {
    busy.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (lo, hi) in busy {
        if lo > at {
            out.push(lo - at);
        }
        at = at.max(hi);
    }
    if cap > at {
        out.push(cap - at);
    }
    out
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

    /// `n` residual blocks in a row, in 16-byte units: the block input (4)
    /// is live across both convolutions; the first convolution has a
    /// padded input (5) live at its step and an output (5) handed off as
    /// the second one's padded input; the sum (4) is the next block's
    /// input. Input, padded input and handed-off output are live together:
    /// 14 units.
    fn residual_blocks(n: usize) -> Vec<Interval> {
        let u = |b: usize, f, l| iv(16 * b, f, l);
        let mut v = vec![u(4, 0, 3)];
        for b in 0..n {
            let s = 3 * b;
            let sum_last = if b + 1 == n { s + 4 } else { s + 6 };
            v.extend([
                u(5, s + 1, s + 1),
                u(5, s + 1, s + 2),
                u(4, s + 2, s + 3),
                u(4, s + 3, sum_last),
            ]);
        }
        v
    }

    #[test]
    fn search_reaches_the_bound_where_both_greedy_orders_miss_it() {
        let v = residual_blocks(2);
        let bound = lower_bound(&v);
        assert_eq!(bound, 16 * 14);
        // `greedy` keeps the better order, so both miss.
        assert!(greedy(&v).1 > bound, "{:?}", greedy(&v));
        let p = plan(&v);
        verify(&v, &p).unwrap();
        assert_eq!(p.arena_bytes, bound);
    }

    /// In 16-byte units: a (1) defined first, d (5) second, then e (3),
    /// b (3) and c (6); at step 4 b, d and e fill 11 units. Every
    /// placement in 11 units puts a away from the ends or d away from
    /// both the ends and a: one of them rests only on values defined
    /// after it.
    fn floating_values() -> Vec<Interval> {
        let u = |b: usize, f, l| iv(16 * b, f, l);
        vec![u(1, 0, 3), u(3, 4, 4), u(6, 5, 8), u(5, 2, 4), u(3, 3, 5)]
    }

    #[test]
    fn bottom_up_pass_finds_what_the_defined_order_pass_misses() {
        let v = floating_values();
        let bound = lower_bound(&v);
        assert_eq!(bound, 16 * 11);
        assert!(greedy(&v).1 > bound, "{:?}", greedy(&v));
        let mut first = Search::new(&v, bound, SEARCH_NODES[0]);
        assert_eq!(first.touching(&by_time(&v), 0), Outcome::Failed);
        let p = plan(&v);
        verify(&v, &p).unwrap();
        assert_eq!(p.arena_bytes, bound);
    }

    #[test]
    fn search_gives_up_below_the_bound_and_past_its_budget() {
        let v = residual_blocks(2);
        let bound = lower_bound(&v);
        assert!(fit(&v, bound - ALIGN, SEARCH_NODES).is_none());
        assert!(fit(&v, bound, [1, 1]).is_none());
        assert!(fit(&v, bound, SEARCH_NODES).is_some());
    }

    #[test]
    fn many_residual_blocks_reach_the_bound_deterministically() {
        // Nine blocks, as in each stage of ResNet-20.
        let v = residual_blocks(9);
        let p = plan(&v);
        verify(&v, &p).unwrap();
        assert_eq!(p.arena_bytes, 16 * 14);
        assert_eq!(p.lower_bound_bytes, 16 * 14);
        assert!(greedy(&v).1 > p.arena_bytes);
        assert_eq!(plan(&v), p);
    }

    /// Random lifetimes of `n` values, sizes 1 to `units` × 16 bytes.
    fn random_values(r: &mut crate::rng::Rng, n: usize, units: usize) -> Vec<Interval> {
        (0..n)
            .map(|_| {
                let f = r.below(10);
                iv(16 * (1 + r.below(units)), f, f + r.below(5))
            })
            .collect()
    }

    #[test]
    fn random_lifetimes_never_collide_and_respect_the_bound() {
        let mut r = crate::rng::Rng::new(4);
        for _ in 0..300 {
            let n = 1 + r.below(24);
            let v = random_values(&mut r, n, 8);
            let p = plan(&v);
            verify(&v, &p).unwrap();
            assert!(p.arena_bytes >= p.lower_bound_bytes);
            assert!(p.arena_bytes <= greedy(&v).1, "worse than greedy: {v:?}");
            assert_eq!(plan(&v), p, "not deterministic: {v:?}");
        }
    }

    /// Whether some placement of all of `v` fits in `cap` bytes, trying
    /// every aligned offset of every value.
    fn fits_by_brute_force(v: &[Interval], cap: usize, at: &mut Vec<usize>) -> bool {
        let k = at.len();
        if k == v.len() {
            return true;
        }
        for o in (0..=cap.saturating_sub(v[k].bytes)).step_by(ALIGN) {
            let free = (0..k).all(|j| {
                !v[j].overlaps(&v[k]) || at[j] + v[j].bytes <= o || o + v[k].bytes <= at[j]
            });
            at.push(o);
            if free && fits_by_brute_force(v, cap, at) {
                return true;
            }
            at.pop();
        }
        false
    }

    #[test]
    fn small_random_cases_reach_the_bound_whenever_it_is_feasible() {
        // The brute force itself tells a fit from a miss.
        let f = floating_values();
        assert!(fits_by_brute_force(&f, 16 * 11, &mut Vec::new()));
        assert!(!fits_by_brute_force(&f, 16 * 10, &mut Vec::new()));
        let mut r = crate::rng::Rng::new(11);
        let (mut missed_by_greedy, mut missed_by_first_pass) = (0, 0);
        for _ in 0..5000 {
            let n = 1 + r.below(12);
            let v = random_values(&mut r, n, 8);
            let p = plan(&v);
            verify(&v, &p).unwrap();
            let bound = p.lower_bound_bytes;
            // A plan above the bound is only right if no placement fits.
            if p.arena_bytes > bound {
                assert!(!fits_by_brute_force(&v, bound, &mut Vec::new()), "{v:?}");
            }
            if greedy(&v).1 > bound {
                missed_by_greedy += 1;
                let mut first = Search::new(&v, bound, SEARCH_NODES[0]);
                missed_by_first_pass +=
                    usize::from(first.touching(&by_time(&v), 0) != Outcome::Found);
            }
        }
        // The cases exercise both passes, not only the greedy placements.
        assert!(missed_by_first_pass > 0 && missed_by_greedy > missed_by_first_pass);
    }
}
