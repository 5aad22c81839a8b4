//! Weight formats of a compiled layer and their packing.
//!
//! Every matrix layer (convolution or linear) computes, per output channel
//! `o` and patch `x` (the input window in `[kh][kw][ic]` order, channels
//! last), `y[o] = mult[o] · Σ_k w[o][k] · x[k] + bias[o]`. The formats differ
//! in how `w` is stored:
//!
//! * `f32`: every value;
//! * `f16`: IEEE half bit patterns (lossy: rounds to nearest);
//! * `int8`: symmetric per-output-channel: `w = q · mult[o]`, `|q| ≤ 127`;
//! * `sparse`: per output channel the count of nonzeros, the nonzero
//!   values, and the increments between consecutive nonzero patch indices
//!   (the first increment counts from 0; XNNPACK's scheme with element
//!   instead of byte increments);
//! * `sparse8`: `sparse` with the values quantized as `int8` (same scales,
//!   `w = q · mult[o]`); weights that quantize to 0 are dropped;
//! * `binary`: per output channel and kernel position, the input channels
//!   in 32-bit words, bit `i` of word `j` = channel `32·j + i`; a sign word
//!   (bit set = −1) and a mask word (bit set = kept; omitted when every
//!   weight is kept). `w = ±mult[o]` where kept, else 0.
//! * `rice`: the same binary weights as a Rice-coded stream of the gaps
//!   between kept weights and their signs ([`super::rice`]): near the
//!   information bound, decoded at run time into RAM.
//! * `xnor`: the same binary weights for layers whose input is a `Sign`
//!   output: whole patches as bits, XOR and popcount ([`super::xnor`]).
//!
//! `unpack` inverts every packing; for f32, sparse and binary the round trip
//! is bit-exact, and sparse8 unpacks to exactly int8's values (tested).
//!
//! The int8 formats quantize on a per-row grid: the given scales (a card
//! already quantized to int8, BatchNorm folded, so the compiled values are
//! the card's) or `max |w| / 127` of the row.

use serde::Serialize;

/// A weight format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    F32,
    F16,
    Int8,
    Sparse,
    Sparse8,
    Binary,
    Rice,
    Xnor,
}

impl Format {
    /// All formats, in the order `--format` lists them.
    pub const ALL: [Format; 8] = [
        Format::F32,
        Format::F16,
        Format::Int8,
        Format::Sparse,
        Format::Sparse8,
        Format::Binary,
        Format::Rice,
        Format::Xnor,
    ];

    /// The `--format` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::F32 => "f32",
            Format::F16 => "f16",
            Format::Int8 => "int8",
            Format::Sparse => "sparse",
            Format::Sparse8 => "sparse8",
            Format::Binary => "binary",
            Format::Rice => "rice",
            Format::Xnor => "xnor",
        }
    }

    /// Parses a `--format` name.
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether packing reproduces the weights exactly.
    pub fn exact(self) -> bool {
        !matches!(self, Format::F16 | Format::Int8 | Format::Sparse8)
    }
}

/// Increments of a sparse row: 16 bits when every patch index fits.
#[derive(Clone, Debug, PartialEq)]
pub enum Increments {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Increments {
    /// Increments of consecutive nonzero patch indices, 16 bits when a
    /// row of `cols` allows.
    fn of(inc: Vec<u32>, cols: usize) -> Increments {
        if cols <= u16::MAX as usize {
            Increments::U16(inc.iter().map(|&i| i as u16).collect())
        } else {
            Increments::U32(inc)
        }
    }

    /// Increment `j`.
    pub fn get(&self, j: usize) -> usize {
        match self {
            Increments::U16(v) => v[j] as usize,
            Increments::U32(v) => v[j] as usize,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Increments::U16(v) => 2 * v.len(),
            Increments::U32(v) => 4 * v.len(),
        }
    }
}

/// Packed weights of one matrix layer with `rows` output channels of
/// `cols` patch elements each.
#[derive(Clone, Debug, PartialEq)]
pub enum Packed {
    F32(Vec<f32>),
    F16(Vec<u16>),
    /// Quantized values; the scales are the layer's multipliers.
    Int8(Vec<i8>),
    Sparse {
        /// Nonzeros per output channel.
        nnz: Vec<u32>,
        values: Vec<f32>,
        increments: Increments,
    },
    /// `Sparse` with int8 values; the scales are the layer's multipliers.
    Sparse8 {
        nnz: Vec<u32>,
        values: Vec<i8>,
        increments: Increments,
    },
    Binary {
        /// Words per kernel position: `ceil(ic / 32)`.
        words: usize,
        signs: Vec<u32>,
        /// `None` when every weight is kept.
        mask: Option<Vec<u32>>,
    },
    Rice(super::rice::RiceStream),
    Xnor(super::xnor::XnorWeights),
}

/// Packed weights and the per-output-channel multiplier they need (`None`:
/// multiply by 1).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedWeights {
    pub packed: Packed,
    pub mult: Option<Vec<f32>>,
}

impl Packed {
    /// Bytes the weights occupy in flash (arrays only).
    pub fn bytes(&self) -> usize {
        match self {
            Packed::F32(v) => 4 * v.len(),
            Packed::F16(v) => 2 * v.len(),
            Packed::Int8(v) => v.len(),
            Packed::Sparse {
                nnz,
                values,
                increments,
            } => 4 * nnz.len() + 4 * values.len() + increments.bytes(),
            Packed::Sparse8 {
                nnz,
                values,
                increments,
            } => 4 * nnz.len() + values.len() + increments.bytes(),
            Packed::Binary { signs, mask, .. } => {
                4 * signs.len() + mask.as_ref().map_or(0, |m| 4 * m.len())
            }
            Packed::Rice(s) => 4 * s.words.len(),
            Packed::Xnor(x) => x.bytes(),
        }
    }

    /// The format of these weights.
    pub fn format(&self) -> Format {
        match self {
            Packed::F32(_) => Format::F32,
            Packed::F16(_) => Format::F16,
            Packed::Int8(_) => Format::Int8,
            Packed::Sparse { .. } => Format::Sparse,
            Packed::Sparse8 { .. } => Format::Sparse8,
            Packed::Binary { .. } => Format::Binary,
            Packed::Rice(_) => Format::Rice,
            Packed::Xnor(_) => Format::Xnor,
        }
    }
}

/// IEEE half bits of `x`, rounded to nearest even.
pub fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// The f32 value of IEEE half bits (exact).
pub fn f16_value(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

/// Per-row magnitude if every nonzero of every row has the same magnitude
/// (a binary layer, possibly with a per-channel scale folded in).
pub fn binary_magnitudes(w: &[f32], rows: usize) -> Option<Vec<f32>> {
    if rows == 0 || !w.len().is_multiple_of(rows) {
        return None;
    }
    let cols = w.len() / rows;
    let mut mags = Vec::with_capacity(rows);
    for row in w.chunks(cols.max(1)) {
        let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        if row.iter().any(|&v| v != 0.0 && v.abs() != m) {
            return None;
        }
        mags.push(m);
    }
    Some(mags)
}

/// The int8 grid of each row of `w` (`cols` per row): `given` (checked:
/// one positive finite scale per row) or `max |w| / 127` (1 for an
/// all-zero row, so the scale stays positive).
fn int8_scales(
    w: &[f32],
    rows: usize,
    cols: usize,
    given: Option<&[f32]>,
) -> Result<Vec<f32>, String> {
    if let Some(g) = given {
        if g.len() != rows {
            return Err(format!(
                "{} int8 scales for {rows} output channels",
                g.len()
            ));
        }
        if let Some(o) = g.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(format!(
                "int8 scale {} of output channel {o} is not a positive number",
                g[o]
            ));
        }
        return Ok(g.to_vec());
    }
    Ok(w.chunks(cols.max(1))
        .map(|row| {
            let max = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            if max > 0.0 { max / 127.0 } else { 1.0 }
        })
        .collect())
}

/// `v` on the int8 grid of step `s`: symmetric, `|q| ≤ 127`.
fn quantize(v: f32, s: f32) -> i8 {
    (v / s).round().clamp(-127.0, 127.0) as i8
}

/// The sparse structure of `w` (`cols` per row): per row the count of the
/// entries `keep` maps to `Some` (given the row and the weight), their
/// values in patch order, and the increments between their patch indices.
fn sparse_pack<T>(
    w: &[f32],
    cols: usize,
    mut keep: impl FnMut(usize, f32) -> Option<T>,
) -> (Vec<u32>, Vec<T>, Increments) {
    let mut nnz = Vec::new();
    let mut values = Vec::new();
    let mut inc = Vec::new();
    for (r, row) in w.chunks(cols.max(1)).enumerate() {
        let mut prev = 0usize;
        let mut n = 0u32;
        for (k, &v) in row.iter().enumerate() {
            if let Some(x) = keep(r, v) {
                values.push(x);
                inc.push((k - prev) as u32);
                prev = k;
                n += 1;
            }
        }
        nnz.push(n);
    }
    (nnz, values, Increments::of(inc, cols))
}

/// The dense `rows` × `cols` matrix of a sparse structure, entry `j` of
/// row `r` being `value(r, &values[j])`: the inverse of [`sparse_pack`].
fn sparse_unpack<T>(
    nnz: &[u32],
    values: &[T],
    increments: &Increments,
    rows: usize,
    cols: usize,
    value: impl Fn(usize, &T) -> f32,
) -> Vec<f32> {
    let mut w = vec![0f32; rows * cols];
    let mut j = 0;
    for (r, &n) in nnz.iter().enumerate() {
        let mut k = 0;
        for _ in 0..n {
            k += increments.get(j);
            w[r * cols + k] = value(r, &values[j]);
            j += 1;
        }
    }
    w
}

/// Packs `w` (`rows` × `cols`, row-major, patch order `[kh][kw][ic]` with
/// `ic` input channels) in `format`, the int8 formats on max-abs grids.
/// Binary packing fails when the rows are not binary (see
/// [`binary_magnitudes`]).
pub fn pack(
    w: &[f32],
    rows: usize,
    cols: usize,
    ic: usize,
    format: Format,
) -> Result<PackedWeights, String> {
    pack_on_grid(w, rows, cols, ic, format, None)
}

/// [`pack`], the int8 formats quantizing row `o` on the grid of step
/// `int8_grid[o]` when given (a card quantized to int8: its scales with
/// BatchNorm folded in, which reproduce its values exactly).
pub fn pack_on_grid(
    w: &[f32],
    rows: usize,
    cols: usize,
    ic: usize,
    format: Format,
    int8_grid: Option<&[f32]>,
) -> Result<PackedWeights, String> {
    if w.len() != rows * cols || ic == 0 || !cols.is_multiple_of(ic) {
        return Err(format!(
            "{} weights do not form {rows} rows of {cols} (input channels {ic})",
            w.len()
        ));
    }
    Ok(match format {
        Format::F32 => PackedWeights {
            packed: Packed::F32(w.to_vec()),
            mult: None,
        },
        Format::F16 => PackedWeights {
            packed: Packed::F16(w.iter().map(|&v| f16_bits(v)).collect()),
            mult: None,
        },
        Format::Int8 => {
            let scales = int8_scales(w, rows, cols, int8_grid)?;
            let q = w
                .iter()
                .enumerate()
                .map(|(i, &v)| quantize(v, scales[i / cols.max(1)]))
                .collect();
            PackedWeights {
                packed: Packed::Int8(q),
                mult: Some(scales),
            }
        }
        Format::Sparse8 => {
            let scales = int8_scales(w, rows, cols, int8_grid)?;
            let (nnz, values, increments) = sparse_pack(w, cols, |r, v| {
                let q = quantize(v, scales[r]);
                (q != 0).then_some(q)
            });
            PackedWeights {
                packed: Packed::Sparse8 {
                    nnz,
                    values,
                    increments,
                },
                mult: Some(scales),
            }
        }
        Format::Sparse => {
            let (nnz, values, increments) = sparse_pack(w, cols, |_, v| (v != 0.0).then_some(v));
            PackedWeights {
                packed: Packed::Sparse {
                    nnz,
                    values,
                    increments,
                },
                mult: None,
            }
        }
        Format::Rice => PackedWeights {
            mult: Some(
                binary_magnitudes(w, rows)
                    .ok_or("weights are not binary (nonzeros of a row differ in magnitude)")?,
            ),
            packed: Packed::Rice(super::rice::encode(w, cols)),
        },
        Format::Xnor => PackedWeights {
            mult: Some(
                binary_magnitudes(w, rows)
                    .ok_or("weights are not binary (nonzeros of a row differ in magnitude)")?,
            ),
            packed: Packed::Xnor(super::xnor::pack(w, rows, cols, ic)),
        },
        Format::Binary => {
            let mags = binary_magnitudes(w, rows)
                .ok_or("weights are not binary (nonzeros of a row differ in magnitude)")?;
            let words = ic.div_ceil(32);
            let positions = cols / ic;
            let mut signs = vec![0u32; rows * positions * words];
            let mut mask = vec![0u32; rows * positions * words];
            let mut all_kept = true;
            for (r, row) in w.chunks(cols.max(1)).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    let (p, c) = (k / ic, k % ic);
                    let at = (r * positions + p) * words + c / 32;
                    let bit = 1u32 << (c % 32);
                    if v != 0.0 {
                        mask[at] |= bit;
                        if v < 0.0 {
                            signs[at] |= bit;
                        }
                    } else {
                        all_kept = false;
                    }
                }
            }
            PackedWeights {
                packed: Packed::Binary {
                    words,
                    signs,
                    mask: (!all_kept).then_some(mask),
                },
                mult: Some(mags),
            }
        }
    })
}

/// The weights a packing computes with (`rows` × `cols`, multipliers
/// applied): the inverse of [`pack`].
pub fn unpack(p: &PackedWeights, rows: usize, cols: usize, ic: usize) -> Vec<f32> {
    let mult = |r: usize| p.mult.as_ref().map_or(1.0, |m| m[r]);
    match &p.packed {
        Packed::F32(v) => v.clone(),
        Packed::F16(v) => v.iter().map(|&h| f16_value(h)).collect(),
        Packed::Int8(q) => q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * mult(i / cols.max(1)))
            .collect(),
        Packed::Sparse {
            nnz,
            values,
            increments,
        } => sparse_unpack(nnz, values, increments, rows, cols, |_, &v| v),
        Packed::Sparse8 {
            nnz,
            values,
            increments,
        } => sparse_unpack(nnz, values, increments, rows, cols, |r, &q| {
            q as f32 * mult(r)
        }),
        Packed::Binary { words, signs, mask } => {
            let positions = cols / ic.max(1);
            let mut w = vec![0f32; rows * cols];
            for r in 0..rows {
                for k in 0..cols {
                    let (pos, c) = (k / ic, k % ic);
                    let at = (r * positions + pos) * words + c / 32;
                    let bit = 1u32 << (c % 32);
                    let kept = mask.as_ref().is_none_or(|m| m[at] & bit != 0);
                    if kept {
                        let m = mult(r);
                        w[r * cols + k] = if signs[at] & bit != 0 { -m } else { m };
                    }
                }
            }
            w
        }
        Packed::Xnor(x) => super::xnor::unpack(x, p.mult.as_deref().unwrap_or(&[])),
        Packed::Rice(s) => {
            let mut w = vec![0f32; rows * cols];
            for (r, row) in super::rice::decode(s, rows, cols)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                for (k, neg) in row {
                    w[r * cols + k] = if neg { -mult(r) } else { mult(r) };
                }
            }
            w
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand_w(n: usize, seed: u64, zero_frac: f32) -> Vec<f32> {
        let mut r = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| {
                if r.uniform() < zero_frac {
                    0.0
                } else {
                    r.normal()
                }
            })
            .collect()
    }

    #[test]
    fn exact_formats_round_trip_bit_exactly() {
        // 5 rows of 3x3 kernels over 37 input channels: not a multiple of 32.
        let (rows, ic) = (5, 37);
        let cols = 9 * ic;
        for zf in [0.0, 0.7, 1.0] {
            let w = rand_w(rows * cols, 3, zf);
            for f in [Format::F32, Format::Sparse] {
                let p = pack(&w, rows, cols, ic, f).unwrap();
                let back = unpack(&p, rows, cols, ic);
                assert!(
                    back.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{f:?} at {zf}"
                );
            }
        }
    }

    #[test]
    fn binary_round_trips_with_masked_and_empty_rows() {
        let (rows, ic) = (4, 33);
        let cols = 2 * ic;
        let mut r = crate::rng::Rng::new(9);
        let alphas = [0.5f32, -1.25, 3.0, 0.75];
        let mut w = Vec::new();
        for (row, &a) in alphas.iter().enumerate() {
            for _ in 0..cols {
                // Row 2 fully masked, row 3 fully kept, others mixed.
                let kept = match row {
                    2 => false,
                    3 => true,
                    _ => r.uniform() < 0.6,
                };
                let s = if r.uniform() < 0.5 { -a } else { a };
                w.push(if kept { s } else { 0.0 });
            }
        }
        let rice = pack(&w, rows, cols, ic, Format::Rice).unwrap();
        let back = unpack(&rice, rows, cols, ic);
        assert!(back.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()));
        let p = pack(&w, rows, cols, ic, Format::Binary).unwrap();
        let Packed::Binary {
            words, ref mask, ..
        } = p.packed
        else {
            panic!("not binary")
        };
        assert_eq!(words, 2);
        assert!(mask.is_some());
        let back = unpack(&p, rows, cols, ic);
        assert!(back.iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()));
        // Fully kept: no mask stored.
        let full: Vec<f32> = w[3 * cols..].to_vec();
        let p = pack(&full, 1, cols, ic, Format::Binary).unwrap();
        assert!(matches!(p.packed, Packed::Binary { mask: None, .. }));
        assert_eq!(unpack(&p, 1, cols, ic), full);
        // Not binary: refused.
        assert!(pack(&rand_w(cols, 1, 0.0), 1, cols, ic, Format::Binary).is_err());
        assert!(pack(&rand_w(cols, 1, 0.0), 1, cols, ic, Format::Rice).is_err());
    }

    #[test]
    fn lossy_formats_stay_within_their_step() {
        let (rows, ic) = (3, 8);
        let cols = 9 * ic;
        let w = rand_w(rows * cols, 5, 0.2);
        let p = pack(&w, rows, cols, ic, Format::Int8).unwrap();
        let back = unpack(&p, rows, cols, ic);
        for r in 0..rows {
            let max = w[r * cols..][..cols]
                .iter()
                .fold(0f32, |a, v| a.max(v.abs()));
            for k in 0..cols {
                let i = r * cols + k;
                assert!((back[i] - w[i]).abs() <= max / 254.0 * 1.0001);
            }
        }
        let p = pack(&w, rows, cols, ic, Format::F16).unwrap();
        for (a, b) in unpack(&p, rows, cols, ic).iter().zip(&w) {
            assert!((a - b).abs() <= b.abs() / 1024.0 + 1e-7);
        }
    }

    #[test]
    fn sparse8_holds_int8s_nonzeros_and_round_trips_bit_exactly() {
        let (rows, ic) = (5, 37);
        let cols = 9 * ic;
        for zf in [0.0, 0.7, 1.0] {
            let mut w = rand_w(rows * cols, 4, zf);
            // Row 1 all zero; row 2 with a weight that quantizes to 0.
            w[cols..2 * cols].fill(0.0);
            w[2 * cols] = 100.0;
            w[2 * cols + 1] = 1e-4;
            let dense = pack(&w, rows, cols, ic, Format::Int8).unwrap();
            let p = pack(&w, rows, cols, ic, Format::Sparse8).unwrap();
            assert_eq!(p.mult, dense.mult, "{zf}");
            let (Packed::Sparse8 { nnz, values, .. }, Packed::Int8(q)) = (&p.packed, &dense.packed)
            else {
                panic!("formats")
            };
            let kept: Vec<i8> = q.iter().copied().filter(|&q| q != 0).collect();
            assert_eq!(values, &kept, "{zf}");
            assert_eq!(nnz[1], 0);
            let back = unpack(&p, rows, cols, ic);
            let want = unpack(&dense, rows, cols, ic);
            assert!(
                back.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{zf}"
            );
            // Its own values are on its grid: packing them again is identity.
            let again = pack_on_grid(&back, rows, cols, ic, Format::Sparse8, p.mult.as_deref());
            assert_eq!(again.unwrap(), p, "{zf}");
            assert_eq!(p.packed.bytes(), 4 * rows + 3 * kept.len(), "{zf}");
        }
    }

    #[test]
    fn int8_grids_reproduce_a_quantized_cards_values_after_folding() {
        // A card's int8 row q · s, then BatchNorm's factor f folded in:
        // on the grid s · |f| the int8 formats recover ±q exactly, even
        // where max |q| < 127 (where a max-abs grid would rescale q).
        let (rows, cols) = (3, 50);
        let mut r = crate::rng::Rng::new(8);
        let scale = [0.01f32, 0.37, 2.5];
        let fold = [1.7f32, -0.3, 0.9];
        let q: Vec<i8> = (0..rows * cols)
            .map(|i| {
                let lim = if i / cols == 2 { 40 } else { 127 };
                (r.below(2 * lim + 1) as i32 - lim as i32) as i8
            })
            .collect();
        let w: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * scale[i / cols] * fold[i / cols])
            .collect();
        let grid: Vec<f32> = (0..rows).map(|o| scale[o] * fold[o].abs()).collect();
        let want: Vec<i8> = q
            .iter()
            .enumerate()
            .map(|(i, &q)| if fold[i / cols] < 0.0 { -q } else { q })
            .collect();
        let p = pack_on_grid(&w, rows, cols, 1, Format::Int8, Some(&grid)).unwrap();
        assert_eq!(p.packed, Packed::Int8(want.clone()));
        assert_eq!(p.mult.as_deref(), Some(&grid[..]));
        let p = pack_on_grid(&w, rows, cols, 1, Format::Sparse8, Some(&grid)).unwrap();
        let Packed::Sparse8 { values, .. } = &p.packed else {
            panic!("not sparse8")
        };
        let kept: Vec<i8> = want.into_iter().filter(|&q| q != 0).collect();
        assert_eq!(values, &kept);
        // A grid that does not fit the rows is refused.
        for bad in [&grid[..2], &[0.1, 0.0, 0.2][..]] {
            assert!(pack_on_grid(&w, rows, cols, 1, Format::Sparse8, Some(bad)).is_err());
        }
    }

    #[test]
    fn sparse_uses_wide_increments_for_long_rows() {
        let cols = 70_000;
        let mut w = vec![0f32; cols];
        w[0] = 1.0;
        w[cols - 1] = -2.0;
        let p = pack(&w, 1, cols, 1, Format::Sparse).unwrap();
        assert!(matches!(
            p.packed,
            Packed::Sparse {
                increments: Increments::U32(_),
                ..
            }
        ));
        assert_eq!(unpack(&p, 1, cols, 1), w);
    }
}
