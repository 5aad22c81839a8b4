//! The `xnor` weight format: binary weights applied to binary inputs.
//!
//! A convolution whose input is a `Sign` output sees only ±1 values, so
//! with binary weights (`±α` where kept) each output is
//! `α · (kept − 2 · popcount(mask & (x ⊕ s)))` over the patch's bits, where
//! a set bit means −1 in both the input `x` and the signs `s`: XOR and
//! popcount instead of adds (XNOR-Net; Larq Compute Engine's bconv).
//!
//! Layout. The patch of an output pixel is `K = kh·kw·ic` bits in the
//! weights' `[kh][kw][ic]` order, bit `k` in 32-bit word `k / 32`. Each
//! output channel's row holds `chunks` blocks of 128 bits (four words, one
//! NEON register) and, when the last `K mod 128` bits are 64 or fewer, a
//! *tail*: those one or two words repeated to fill four, so that one
//! register holds the tails of four pixels (or two) at once (ResNet-20's
//! 3×3 convolutions: K = 144, 288 and 576 bits: 1 chunk + a 16-bit tail,
//! 2 chunks + a 32-bit tail, and 4 chunks + a 64-bit tail). Unused bits are
//! zero in signs, masks and patches.
//!
//! Padding. The kernels read the zero-padded input, and a 0 packs as a
//! clear bit, i.e. +1. The patch sum over the padded taps is then
//! `Σ kept sign` of those taps' weights, which depends only on the output
//! channel and on which taps fall outside the image; [`corrections`]
//! tabulates it per class of output rows × class of output columns.

use super::lower::Geom;

/// Output pixels per block: the kernels compute eight neighbouring pixels
/// of a row at once (NEON: eight 16-bit lanes per output channel), and the
/// per-block table holds eight entries per channel.
pub const BLOCK: usize = 8;

/// The longest patch the format takes, in bits: the per-block table holds
/// `kept − correction` (up to `2·K`) as int16.
pub const MAX_BITS: usize = 16_383;

/// Packed `xnor` weights of one layer (`rows` output channels).
#[derive(Clone, Debug, PartialEq)]
pub struct XnorWeights {
    /// Patch length in bits, `kh·kw·ic`.
    pub bits: usize,
    /// 128-bit blocks per row.
    pub chunks: usize,
    /// Words of the row's tail: 0, or 1 / 2 (the last ≤ 32 / ≤ 64 bits),
    /// repeated to fill four words.
    pub tail: usize,
    /// `[rows][row_words]`, bit set = −1.
    pub signs: Vec<u32>,
    /// Same shape, bit set = kept; `None` when every weight is kept.
    pub mask: Option<Vec<u32>>,
    /// Kept weights per row.
    pub kept: Vec<u32>,
    /// Per row and kernel position: the sum of the kept weights' signs
    /// (+1 / −1), what a position of zero padding contributes.
    pub position_sums: Vec<i32>,
}

/// Chunks and tail words for a patch of `bits` bits.
pub fn shape(bits: usize) -> (usize, usize) {
    match bits % 128 {
        0 => (bits / 128, 0),
        rest @ 1..=64 => (bits / 128, rest.div_ceil(32)),
        _ => (bits.div_ceil(128), 0),
    }
}

impl XnorWeights {
    /// 32-bit words per row: four per chunk, four for the tail.
    pub fn row_words(&self) -> usize {
        4 * self.chunks + if self.tail > 0 { 4 } else { 0 }
    }

    /// The word of row `r` holding patch bit `k`, and the bit within it.
    fn word_of(&self, r: usize, k: usize) -> (usize, u32) {
        (r * self.row_words() + k / 32, 1u32 << (k % 32))
    }

    /// Bytes in flash: signs and masks.
    pub fn bytes(&self) -> usize {
        4 * (self.signs.len() + self.mask.as_ref().map_or(0, Vec::len))
    }
}

/// Packs binary rows `w` (`rows` × `cols`, patch order `[kh][kw][ic]`,
/// every nonzero of a row of one magnitude: see
/// [`super::pack::binary_magnitudes`]).
pub fn pack(w: &[f32], rows: usize, cols: usize, ic: usize) -> XnorWeights {
    let (chunks, tail) = shape(cols);
    let mut x = XnorWeights {
        bits: cols,
        chunks,
        tail,
        signs: Vec::new(),
        mask: None,
        kept: vec![0; rows],
        position_sums: vec![0; rows * (cols / ic.max(1))],
    };
    let rw = x.row_words();
    let mut signs = vec![0u32; rows * rw];
    let mut mask = vec![0u32; rows * rw];
    let positions = cols / ic.max(1);
    for (r, row) in w.chunks(cols.max(1)).enumerate() {
        for (k, &v) in row.iter().enumerate() {
            if v == 0.0 {
                continue;
            }
            let (at, bit) = x.word_of(r, k);
            mask[at] |= bit;
            let neg = v < 0.0;
            if neg {
                signs[at] |= bit;
            }
            x.kept[r] += 1;
            x.position_sums[r * positions + k / ic] += if neg { -1 } else { 1 };
        }
    }
    if tail > 0 {
        // The tail words, repeated in the row's last four words.
        for r in 0..rows {
            let t = r * rw + 4 * chunks;
            for v in [&mut signs, &mut mask] {
                for i in tail..4 {
                    v[t + i] = v[t + i % tail];
                }
            }
        }
    }
    let all_kept = x.kept.iter().all(|&k| k as usize == cols);
    x.signs = signs;
    x.mask = (!all_kept).then_some(mask);
    x
}

/// The weights `x` computes with (`rows` × `bits`), `±mult[r]` where kept:
/// the inverse of [`pack`].
pub fn unpack(x: &XnorWeights, mult: &[f32]) -> Vec<f32> {
    let rows = x.kept.len();
    let mut w = vec![0f32; rows * x.bits];
    for (r, &m) in mult.iter().enumerate().take(rows) {
        for k in 0..x.bits {
            let (at, bit) = x.word_of(r, k);
            if x.mask.as_ref().is_none_or(|mk| mk[at] & bit != 0) {
                w[r * x.bits + k] = if x.signs[at] & bit != 0 { -m } else { m };
            }
        }
    }
    w
}

/// What zero padding adds to the patch sums, by class of output pixel.
#[derive(Clone, Debug, PartialEq)]
pub struct Corrections {
    /// Per output row its class (0: every kernel row inside the image).
    pub row_class: Vec<u8>,
    /// Per output column its class (0: every kernel column inside); the
    /// kernels see it through `block_pattern`.
    pub col_class: Vec<u8>,
    /// Column classes.
    pub col_classes: usize,
    /// Row classes.
    pub row_classes: usize,
    /// Per block of [`BLOCK`] output columns (`ox0 = BLOCK·b`) its
    /// pattern: the column classes of its pixels (past the row's end, the
    /// first pixel's), numbered as they first occur.
    pub block_pattern: Vec<u8>,
    /// The distinct patterns.
    pub col_patterns: Vec<[u8; BLOCK]>,
    /// `[oc][row classes][col classes]`: the padded taps' sign sum, which
    /// the kernels subtract (`y = mult · (kept − 2·count − sum) + bias`).
    pub sums: Vec<i32>,
}

/// Per output coordinate, the set of kernel offsets that fall outside
/// `[0, len)` (as a bit set), numbered as classes with the empty set 0.
fn classes(out: usize, stride: usize, pad: usize, k: usize, len: usize) -> (Vec<u8>, Vec<u64>) {
    let mut sets = vec![0u64];
    let mut class = Vec::with_capacity(out);
    for o in 0..out {
        let set = (0..k)
            .filter(|&t| {
                let at = (o * stride + t) as i64 - pad as i64;
                at < 0 || at >= len as i64
            })
            .fold(0u64, |s, t| s | 1 << t);
        let id = sets.iter().position(|&s| s == set).unwrap_or_else(|| {
            sets.push(set);
            sets.len() - 1
        });
        class.push(id as u8);
    }
    (class, sets)
}

/// The padding corrections of `x` on geometry `g`; `None` when the kernel
/// is wider than 64 or has more than 255 classes a side (no such layer
/// compiles to xnor: [`supported`]).
pub fn corrections(x: &XnorWeights, g: &Geom) -> Option<Corrections> {
    if !supported(g) {
        return None;
    }
    let (row_class, row_sets) = classes(g.oh, g.sh, g.ph, g.kh, g.ih);
    let (col_class, col_sets) = classes(g.ow, g.sw, g.pw, g.kw, g.iw);
    let positions = g.kh * g.kw;
    let mut sums_out = Vec::with_capacity(g.oc * row_sets.len() * col_sets.len());
    for o in 0..g.oc {
        let sums = &x.position_sums[o * positions..(o + 1) * positions];
        for &rs in &row_sets {
            for &cs in &col_sets {
                let outside: i32 = (0..positions)
                    .filter(|p| rs >> (p / g.kw) & 1 == 1 || cs >> (p % g.kw) & 1 == 1)
                    .map(|p| sums[p])
                    .sum();
                sums_out.push(outside);
            }
        }
    }
    let mut col_patterns: Vec<[u8; BLOCK]> = Vec::new();
    let block_pattern = (0..g.ow.div_ceil(BLOCK))
        .map(|b| {
            let n = (g.ow - BLOCK * b).min(BLOCK);
            let pat: [u8; BLOCK] =
                std::array::from_fn(|l| col_class[BLOCK * b + if l < n { l } else { 0 }]);
            let id = col_patterns
                .iter()
                .position(|p| *p == pat)
                .unwrap_or_else(|| {
                    col_patterns.push(pat);
                    col_patterns.len() - 1
                });
            id as u8
        })
        .collect();
    Some(Corrections {
        row_class,
        col_class,
        col_classes: col_sets.len(),
        row_classes: row_sets.len(),
        block_pattern,
        col_patterns,
        sums: sums_out,
    })
}

/// Whether the xnor kernels handle `g`: kernels up to 64 wide and tall
/// (class sets are 64-bit) with at most 255 classes of rows or columns,
/// and patches of at most [`MAX_BITS`] bits.
pub fn supported(g: &Geom) -> bool {
    g.kh <= 64
        && g.kw <= 64
        && 2 * g.ph.max(g.pw) + 1 < 255
        && g.ow.div_ceil(BLOCK) < 256
        && g.cols() <= MAX_BITS
}

/// 32-bit words of RAM a layer needs (`xnor` in cardc_kernels.c): one bit
/// per padded input element, rounded up to whole words per position; the
/// patches of a block's [`BLOCK`] pixels; with a multiple of 8 input
/// channels the same bits as byte rows, from which patches are copied; and
/// [`BLOCK`] outputs per channel for a partial block.
pub fn ram_words(x: &XnorWeights, g: &Geom) -> usize {
    let padded = super::layout::Padded::of(g);
    let rows = if g.ic.is_multiple_of(8) {
        (padded.cstride * g.ic / 8).div_ceil(4)
    } else {
        0
    };
    padded.cstride * g.ic.div_ceil(32) + BLOCK * x.row_words() + rows + BLOCK * g.oc
}

/// Whether `producer`, handing its output straight to `reader` (the
/// planner's hand-off: the only reader, stride 1), writes it as the
/// reader's byte rows of sign bits instead of floats (`xn_out_bits` /
/// `xn_in_rows` in cardc_kernels.c): both run `xnor`, the producer ends in
/// Sign, and the reader's channels are whole bytes.
pub fn hands_bits(producer: &super::lower::MatLayer, reader: &super::lower::MatLayer) -> bool {
    use super::pack::Packed;
    matches!(producer.packed.packed, Packed::Xnor(_))
        && matches!(reader.packed.packed, Packed::Xnor(_))
        && producer.act == super::lower::Act::Sign
        && reader.geom.ic.is_multiple_of(8)
        && reader.geom.sw == 1
}

/// The smallest integer `t` with `mult · t + bias ≥ 0` in f32 (the
/// kernels' arithmetic, unfused), clamped to `[−lim, lim]`: from there on
/// the Sign of a binary row's output is +1 (`mult ≥ 0`, a magnitude). NaN
/// gives `lim` (−1 everywhere, as the reference's Sign of NaN).
pub fn sign_threshold(mult: f32, bias: f32, lim: i32) -> i32 {
    let positive = |t: i32| mult * t as f32 + bias >= 0.0;
    if mult.is_nan() || bias.is_nan() {
        return lim;
    }
    if mult <= 0.0 || positive(-lim) {
        // Constant (mult = 0), or +1 over the whole range.
        return if positive(-lim) { -lim } else { lim };
    }
    if !positive(lim) {
        return lim;
    }
    // positive(-lim) is false, positive(lim) true, and monotone between.
    let (mut lo, mut hi) = (-lim, lim);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if positive(mid) { hi = mid } else { lo = mid }
    }
    hi
}

/// Entries of [`block_table`]: row classes × column patterns × `oc` ×
/// [`BLOCK`].
pub fn block_table_len(corr: Option<&Corrections>, oc: usize) -> usize {
    corr.map_or(1, |c| c.row_classes * c.col_patterns.len()) * oc * BLOCK
}

/// The table the kernels read per block of [`BLOCK`] output pixels, indexed
/// `[row class][column pattern][output channel][pixel]` (one row class and
/// pattern without padding): `kept − correction`, the ±1 sum being
/// `kept − correction − 2·count`; or with a Sign activation the count
/// above which the output is −1, `⌊(kept − correction − T) / 2⌋` for the
/// channel's [`sign_threshold`] `T`. Computed here, once, so that the
/// kernels only compare. Int16: every entry lies in `[−K−2, 2K]` for
/// patches of at most [`MAX_BITS`] bits ([`supported`]).
/// `corr`: the layer's [`corrections`] (`None` without padding).
pub fn block_table(
    x: &XnorWeights,
    g: &Geom,
    corr: Option<&Corrections>,
    sign: bool,
    mult: &[f32],
    bias: &[f32],
) -> Vec<i16> {
    let (nrc, patterns) = match corr {
        Some(c) => (c.row_classes, c.col_patterns.clone()),
        None => (1, vec![[0u8; BLOCK]]),
    };
    let lim = (g.cols() + 2) as i32;
    let thresholds: Vec<i32> = (0..g.oc)
        .map(|o| {
            let m = mult.get(o).copied().unwrap_or(1.0);
            sign_threshold(m, bias.get(o).copied().unwrap_or(0.0), lim)
        })
        .collect();
    let mut table = Vec::with_capacity(block_table_len(corr, g.oc));
    for rc in 0..nrc {
        for pat in &patterns {
            for (o, &t) in thresholds.iter().enumerate() {
                for &cc in pat {
                    let outside = corr.map_or(0, |c| {
                        let classes = c.row_classes * c.col_classes;
                        c.sums[o * classes + rc * c.col_classes + cc as usize]
                    });
                    let kb = x.kept[o] as i32 - outside;
                    let v = if sign { (kb - t).div_euclid(2) } else { kb };
                    // In range for a supported layer (|v| ≤ 2K ≤ 32766).
                    table.push(v.clamp(i16::MIN.into(), i16::MAX.into()) as i16);
                }
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3×3, stride-1 convolution with padding 1 on an `h`×`w` image.
    fn same_3x3(h: usize, w: usize, ic: usize, oc: usize) -> Geom {
        Geom {
            ih: h,
            iw: w,
            ic,
            oh: h,
            ow: w,
            oc,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            ph: 1,
            pw: 1,
        }
    }

    fn binary_rows(rows: usize, cols: usize, seed: u64, zero_frac: f32) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..rows * cols)
            .map(|i| {
                let m = 0.5 + (i / cols) as f32;
                if r.uniform() < zero_frac {
                    0.0
                } else if r.uniform() < 0.5 {
                    -m
                } else {
                    m
                }
            })
            .collect()
    }

    #[test]
    fn shapes_use_a_tail_only_for_short_remainders() {
        assert_eq!(shape(144), (1, 1));
        assert_eq!(shape(288), (2, 1));
        assert_eq!(shape(576), (4, 2));
        assert_eq!(shape(128), (1, 0));
        assert_eq!(shape(27), (0, 1));
        assert_eq!(shape(33), (0, 2));
        assert_eq!(shape(192), (1, 2));
        assert_eq!(shape(200), (2, 0));
    }

    #[test]
    fn packing_round_trips_bit_exactly() {
        for (cols, ic) in [
            (144, 16),
            (288, 32),
            (576, 64),
            (27, 3),
            (9 * 37, 37),
            (200, 200),
        ] {
            for zf in [0.0, 0.6, 1.0] {
                let rows = 5;
                let w = binary_rows(rows, cols, cols as u64, zf);
                let x = pack(&w, rows, cols, ic);
                assert_eq!(x.mask.is_none(), zf == 0.0, "cols {cols} zf {zf}");
                let mult: Vec<f32> = (0..rows).map(|r| 0.5 + r as f32).collect();
                let back = unpack(&x, &mult);
                assert!(
                    back.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "cols {cols} zf {zf}"
                );
                let kept = w.iter().filter(|&&v| v != 0.0).count() as u32;
                assert_eq!(x.kept.iter().sum::<u32>(), kept);
                for r in 0..rows {
                    let t = r * x.row_words() + 4 * x.chunks;
                    for i in x.tail..if x.tail > 0 { 4 } else { 0 } {
                        assert_eq!(x.signs[t + i], x.signs[t + i % x.tail], "cols {cols}");
                    }
                }
            }
        }
    }

    #[test]
    fn corrections_sum_the_signs_of_the_padded_taps() {
        // One output channel over a 3×3 kernel on a 4×4 image, padding 1.
        let g = same_3x3(4, 4, 2, 1);
        let w = binary_rows(1, 18, 7, 0.3);
        let x = pack(&w, 1, 18, 2);
        let c = corrections(&x, &g).unwrap();
        assert_eq!(c.row_class, vec![1, 0, 0, 2]);
        assert_eq!(c.col_class, vec![1, 0, 0, 2]);
        let sign = |k: usize| (w[k] > 0.0) as i32 - (w[k] < 0.0) as i32;
        for (oy, ox) in [(0, 0), (0, 2), (3, 3), (1, 1)] {
            let mut outside = 0;
            for k in 0..18 {
                let (ky, kx) = (k / 2 / 3, k / 2 % 3);
                let (y, xx) = (oy as i64 + ky as i64 - 1, ox as i64 + kx as i64 - 1);
                if !(0..4).contains(&y) || !(0..4).contains(&xx) {
                    outside += sign(k);
                }
            }
            let at = c.row_class[oy] as usize * c.col_classes + c.col_class[ox] as usize;
            assert_eq!(c.sums[at], outside, "({oy}, {ox})");
        }
    }

    #[test]
    fn sign_thresholds_split_the_integers_where_the_affine_output_turns_nonnegative() {
        let mut r = crate::rng::Rng::new(11);
        let lim = 40;
        for case in 0..500 {
            let mult = if case % 50 == 0 {
                0.0
            } else {
                r.uniform() * 0.3
            };
            // Biases near multiples of mult: the rounding of mult·t + bias
            // decides the boundary.
            let bias = if case % 3 == 0 {
                -mult * (r.below(60) as f32 - 30.0)
            } else {
                r.normal() * 3.0
            };
            let t0 = sign_threshold(mult, bias, lim);
            for t in -lim + 2..lim - 2 {
                let positive = mult * t as f32 + bias >= 0.0;
                assert_eq!(positive, t >= t0, "mult {mult} bias {bias} t {t} T {t0}");
            }
        }
        assert_eq!(sign_threshold(f32::NAN, 1.0, lim), lim);
        assert_eq!(sign_threshold(0.0, 0.0, lim), -lim);
    }

    #[test]
    fn block_table_counts_reproduce_the_sign_of_the_affine_output() {
        // 3 channels, 3×3 kernel on a 5×6 image with padding: every count
        // a pixel can have gives the Sign the float epilogue would.
        let g = same_3x3(5, 6, 4, 3);
        let w = binary_rows(3, 36, 5, 0.3);
        let x = pack(&w, 3, 36, 4);
        let (mult, bias) = ([0.5f32, 0.25, 1.0], [0.3f32, -1.75, 2.0]);
        let c = corrections(&x, &g);
        let kb = block_table(&x, &g, c.as_ref(), false, &mult, &bias);
        let th = block_table(&x, &g, c.as_ref(), true, &mult, &bias);
        assert_eq!(kb.len(), th.len());
        for (i, (&k, &c)) in kb.iter().zip(&th).enumerate() {
            let o = i / BLOCK % 3;
            let (k, c) = (i32::from(k), i32::from(c));
            for count in 0..=36 {
                let y = mult[o] * (k - 2 * count) as f32 + bias[o];
                assert_eq!(y >= 0.0, count <= c, "entry {i}, count {count}");
            }
        }
    }
}
