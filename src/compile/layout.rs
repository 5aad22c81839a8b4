//! Where the C kernels find their operands: the padded, column-phase-split
//! copy of a matrix layer's input in `scratch`, and the weight orders the
//! emitter writes for it (see `targets/common/cardc_kernels.h`).
//!
//! Channel `ci`, column phase `q = x mod sw`, padded row `y` and column
//! `x = j·sw + q` live at `((ci·sw + q)·hp + y)·wq + j`. For a fixed patch
//! element `(ci, ky, kx)` the inputs of consecutive output columns are then
//! consecutive floats at any stride, which is what lets every kernel
//! vectorize over output pixels with plain loads.

use super::lower::{Act, Geom, Program, Step};
use super::pack::{Increments, Packed};

/// Output channels per dense weight block (the C kernels' `CARDC_J`).
pub const DENSE_J: usize = 4;

/// Output columns per pixel vector (the kernels' 8-float vectors).
const LANES: usize = 8;

/// The padded input layout of one matrix layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Padded {
    /// Padded rows.
    pub hp: usize,
    /// Columns per phase.
    pub wq: usize,
    /// Floats per input channel: `sw · hp · wq`.
    pub cstride: usize,
}

impl Padded {
    /// The layout for `g`.
    pub fn of(g: &Geom) -> Padded {
        let hp = g.ih + 2 * g.ph;
        let wq = (g.iw + 2 * g.pw).div_ceil(g.sw.max(1));
        Padded {
            hp,
            wq,
            cstride: g.sw * hp * wq,
        }
    }

    /// Offset of kernel position `(ky, kx)` of channel 0.
    pub fn poff(&self, g: &Geom, ky: usize, kx: usize) -> usize {
        ((kx % g.sw) * self.hp + ky) * self.wq + kx / g.sw
    }

    /// Offset of patch element `(ci, ky, kx)` for output pixel (0, 0).
    pub fn off(&self, g: &Geom, ci: usize, ky: usize, kx: usize) -> usize {
        ci * self.cstride + self.poff(g, ky, kx)
    }

    /// Scratch floats the layer needs: the padded input plus what the last
    /// (partly valid) pixel vector reads past it.
    pub fn scratch_floats(&self, g: &Geom) -> usize {
        let nvx = g.ow.div_ceil(LANES);
        let max_base = (g.oh.max(1) - 1) * g.sh * self.wq + (nvx.max(1) - 1) * LANES;
        let max_poff = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
            .map(|(ky, kx)| self.poff(g, ky, kx))
            .max()
            .unwrap_or(0);
        let read_end = (g.ic.max(1) - 1) * self.cstride + max_poff + max_base + LANES;
        read_end.max(g.ic * self.cstride)
    }
}

/// Where each step's padded input and output live: matrix layers read a
/// padded copy of their input from buffer `A`, except when the previous
/// step (a matrix layer whose output nothing else reads) wrote its output
/// straight into this layer's padded layout ("handoff": stride-1 consumers
/// only, where the layout is a plain zero-bordered image). A producer writes
/// into the buffer its own input does not occupy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buffers {
    /// Per step: the buffer (0 = A, 1 = B) holding its padded input, for
    /// matrix layers.
    pub input: Vec<Option<u8>>,
    /// Per step: the buffer its output is handed off into (else the arena).
    pub handoff: Vec<Option<u8>>,
    /// Per step: its hand-off carries Sign bits as the reader's byte rows
    /// ([`super::xnor::hands_bits`]) instead of floats.
    pub handoff_bits: Vec<bool>,
    /// Floats of buffers A and B.
    pub floats: [usize; 2],
    /// Per step: byte offset in the arena of its padded input, when the
    /// padded inputs live in the arena (see [`Buffers::move_to_arena`])
    /// instead of buffers A and B.
    pub arena: Vec<Option<usize>>,
    /// Per value: stored as a zero-bordered image ([`bordered_values`]).
    pub bordered: Vec<Option<Bordered>>,
    /// Per step: a matrix layer that also does the next step, an `Add` of
    /// its output and this residual value, in its epilogue
    /// ([`fuse_residual_adds`]).
    pub residual: Vec<Option<usize>>,
}

impl Buffers {
    /// The C expression of step `step`'s padded input: buffer A or B, or
    /// its place in the arena (`names`: the arena and the two buffers).
    pub fn padded_input(&self, step: usize, buf: u8, names: &[&str; 3]) -> String {
        match self.arena.get(step).copied().flatten() {
            Some(off) => format!("{} + {}", names[0], off / 4),
            None => names[1 + (buf as usize & 1)].to_string(),
        }
    }

    /// For small-RAM targets: plans every matrix layer's padded input as a
    /// value of the arena, live only while it is written and read, instead
    /// of two buffers as large as the largest padded input that sit beside
    /// the arena for the whole run. A handed-off output (size 0 in `sizes`)
    /// becomes the next layer's padded input; any other matrix layer gets a
    /// value defined and read at its own step. A hand-off of sign bits
    /// ([`super::xnor::hands_bits`]) takes the reader's byte rows, a 32nd
    /// of its floats. Appends those values to
    /// `sizes`, `defs` and `reads` (the planner's inputs, bytes) and returns
    /// per step the value holding its padded input; [`Buffers::place`]
    /// takes the planned offsets.
    pub fn move_to_arena(
        &mut self,
        program: &super::lower::Program,
        sizes: &mut Vec<usize>,
        defs: &mut Vec<usize>,
        reads: &mut Vec<(usize, usize)>,
    ) -> Vec<Option<usize>> {
        let mut holder = vec![None; program.steps.len()];
        for (i, step) in program.steps.iter().enumerate() {
            let Step::Mat { layer, input, .. } = step else {
                continue;
            };
            let g = &layer.geom;
            let bytes = if i > 0 && self.handoff_bits[i - 1] {
                // Sign bits as the reader's byte rows, plus what the patch
                // copies read past the last row (whole 8/16/32-byte words).
                let p = Padded::of(g);
                p.cstride * g.ic / 8 + 16
            } else {
                4 * Padded::of(g).scratch_floats(g)
            };
            if i > 0 && self.handoff[i - 1].is_some() {
                sizes[*input] = bytes;
                holder[i] = Some(*input);
            } else {
                let v = sizes.len();
                sizes.push(bytes);
                defs.push(i);
                reads.push((i, v));
                holder[i] = Some(v);
            }
        }
        self.floats = [0, 0];
        holder
    }

    /// Records the planned arena offsets (`offsets[v]`, bytes) of the
    /// values [`Buffers::move_to_arena`] returned.
    pub fn place(&mut self, holder: &[Option<usize>], offsets: &[usize]) {
        self.arena = holder.iter().map(|h| h.map(|v| offsets[v])).collect();
    }
}

/// A value stored as a zero-bordered image: each of its `c` channels is a
/// plane of `hp × wp` floats with the `h × w` image at row `ph`, column
/// `pw`, and zeros around it. A stride-1 matrix layer with that padding
/// reads it in place as its padded input (no copy into scratch); an
/// element-wise `Add` whose operands share the layout adds whole planes
/// (zero borders stay zero under None/ReLU/ReLU6); other matrix layers copy
/// from it ([`Bordered::source_fields`]); a global average pool sums whole
/// planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bordered {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub ph: usize,
    pub pw: usize,
    /// Rows and columns per channel plane.
    pub hp: usize,
    pub wp: usize,
    /// Floats the value takes: its planes, plus what the last pixel vector
    /// of a reader that reads it in place loads past them.
    pub floats: usize,
}

impl Bordered {
    /// The layout a stride-1 matrix layer `g` reads as its padded input.
    pub fn read_by(g: &Geom) -> Bordered {
        let p = Padded::of(g);
        Bordered {
            c: g.ic,
            h: g.ih,
            w: g.iw,
            ph: g.ph,
            pw: g.pw,
            hp: p.hp,
            wp: p.wq,
            floats: p.scratch_floats(g),
        }
    }

    /// Floats per channel plane.
    pub fn plane(&self) -> usize {
        self.hp * self.wp
    }

    /// Offset of image pixel (0, 0) in its plane.
    pub fn base(&self) -> usize {
        self.ph * self.wp + self.pw
    }

    /// Whether matrix layer `g` reads this layout in place as its padded
    /// input.
    pub fn serves(&self, g: &Geom) -> bool {
        g.sw == 1 && (g.ic, g.ih, g.iw, g.ph, g.pw) == (self.c, self.h, self.w, self.ph, self.pw)
    }

    /// The `cardc_layer` fields of a producer writing this layout.
    pub fn output_fields(&self) -> String {
        format!(
            ".out_plane = {}, .out_row = {}, .out_base = {}, .out_hp = {}, .out_wq = {}, .out_ph = {}, .out_pw = {}",
            self.plane(),
            self.wp,
            self.base(),
            self.hp,
            self.wp,
            self.ph,
            self.pw
        )
    }

    /// The `cardc_layer` fields of a reader copying its padded input from
    /// this layout instead of a plain `[c][h][w]` image.
    pub fn source_fields(&self) -> String {
        format!(
            ".in_plane = {}, .in_row = {}, .in_base = {}",
            self.plane(),
            self.wp,
            self.base()
        )
    }
}

/// Which values of `program` to store as zero-bordered images: the outputs
/// of residual chains (matrix layers and element-wise adds, except those
/// `handoff` already writes into a reader's scratch) read by stride-1
/// matrix layers with padding, so that those layers read them in place
/// instead of copying them into scratch on every call. All values an `Add`
/// joins share one layout, so a chain is bordered as a whole or not at all:
/// only when every reader of every member is a matrix layer, an `Add` or a
/// global average pool, no member is the network's output, and every `Add`
/// keeps zero borders zero (no Sign). The padding is that of the chain's
/// first stride-1 reader with padding.
pub fn bordered_values(program: &Program, handoff: &[Option<u8>]) -> Vec<Option<Bordered>> {
    let n = program.values.len();
    // [c, h, w] of the values matrix layers and adds write.
    let mut shape: Vec<Option<(usize, usize, usize)>> = vec![None; n];
    // Whether the value's producer and readers allow a bordered layout.
    let mut ok = vec![false; n];
    for (i, s) in program.steps.iter().enumerate() {
        match s {
            Step::Mat { layer, out, .. } => {
                let g = &layer.geom;
                shape[*out] = Some((g.oc, g.oh, g.ow));
                ok[*out] = handoff[i].is_none();
            }
            Step::Add { a, b, out, act, .. } => {
                shape[*out] = shape[*a].filter(|_| shape[*a] == shape[*b]);
                ok[*out] = shape[*out].is_some() && !matches!(act, Act::Sign);
            }
            _ => {}
        }
    }
    ok[program.output] = false;
    // Chains: the values each Add joins.
    let mut chain: Vec<usize> = (0..n).collect();
    fn root(chain: &mut [usize], mut v: usize) -> usize {
        while chain[v] != v {
            chain[v] = chain[chain[v]];
            v = chain[v];
        }
        v
    }
    for s in &program.steps {
        match s {
            Step::Add { a, b, out, .. } => {
                for x in [*a, *b] {
                    let (rx, ro) = (root(&mut chain, x), root(&mut chain, *out));
                    chain[rx] = ro;
                }
            }
            Step::Mat { .. } | Step::GlobalAvgPool { .. } => {}
            other => {
                for v in other.inputs() {
                    ok[v] = false;
                }
            }
        }
    }
    // Per chain: every member allowed, and the layout of its first
    // stride-1 padded reader.
    let mut chain_ok = vec![true; n];
    let mut layout: Vec<Option<Bordered>> = vec![None; n];
    for (v, &allowed) in ok.iter().enumerate() {
        let r = root(&mut chain, v);
        chain_ok[r] &= allowed;
    }
    for s in &program.steps {
        if let Step::Mat { layer, input, .. } = s {
            let g = &layer.geom;
            let r = root(&mut chain, *input);
            if layout[r].is_none() && g.sw == 1 && (g.ph, g.pw) != (0, 0) {
                layout[r] = Some(Bordered::read_by(g));
            }
        }
    }
    // Every in-place reader's reach, and one shape per chain.
    let mut reach = vec![0usize; n];
    for s in &program.steps {
        if let Step::Mat { layer, input, .. } = s {
            let r = root(&mut chain, *input);
            if layout[r].is_some_and(|b| b.serves(&layer.geom)) {
                reach[r] = reach[r].max(Padded::of(&layer.geom).scratch_floats(&layer.geom));
            }
        }
    }
    for (v, &s) in shape.iter().enumerate() {
        let r = root(&mut chain, v);
        if let Some(b) = layout[r]
            && s != Some((b.c, b.h, b.w))
        {
            chain_ok[r] = false;
        }
    }
    (0..n)
        .map(|v| {
            let r = root(&mut chain, v);
            let b = layout[r].filter(|_| chain_ok[r])?;
            Some(Bordered {
                floats: reach[r].max(b.c * b.plane()),
                ..b
            })
        })
        .collect()
}

/// Which matrix layers also do the `Add` that follows them: when the
/// layer's output is read by that `Add` only, the layer has no activation
/// of its own and is not an xnor layer (whose kernels have their own
/// epilogues), and the other operand is stored like the sum (both plain,
/// or both in one bordered layout), the layer writes `act(y + residual)`
/// straight into the sum, in the order the reference adds them (the sum
/// is commutative in IEEE arithmetic, so either operand order agrees).
/// That saves writing and re-reading the layer's output, and the memory
/// it takes.
fn fuse_residual_adds(program: &Program, b: &Buffers, readers: &[usize]) -> Vec<Option<usize>> {
    let mut fused = vec![None; program.steps.len()];
    for (i, pair) in program.steps.windows(2).enumerate() {
        let [
            Step::Mat { layer, out: m, .. },
            Step::Add {
                a, b: other, out, ..
            },
        ] = pair
        else {
            continue;
        };
        let residual = if a == m { *other } else { *a };
        if (*a == *m || *other == *m)
            && residual != *m
            && readers[*m] == 1
            && *m != program.output
            && b.handoff[i].is_none()
            && layer.act == Act::None
            && !matches!(layer.packed.packed, super::pack::Packed::Xnor(_))
            && b.bordered[residual] == b.bordered[*out]
        {
            fused[i] = Some(residual);
        }
    }
    fused
}

/// Plans the padded-input buffers of `program`; `bordered`: also store
/// residual chains as zero-bordered images ([`bordered_values`]).
pub fn buffers(program: &Program, bordered: bool) -> Buffers {
    let n = program.steps.len();
    let mut readers = vec![0usize; program.values.len()];
    for s in &program.steps {
        for v in s.inputs() {
            readers[v] += 1;
        }
    }
    let mut b = Buffers {
        input: vec![None; n],
        handoff: vec![None; n],
        handoff_bits: vec![false; n],
        floats: [0, 0],
        arena: vec![None; n],
        bordered: vec![None; program.values.len()],
        residual: vec![None; n],
    };
    for i in 0..n {
        let Step::Mat { layer, out, .. } = &program.steps[i] else {
            continue;
        };
        let g = &layer.geom;
        let buf = b.input[i].unwrap_or(0);
        b.input[i] = Some(buf);
        if let Some(Step::Mat {
            layer: next,
            input: next_in,
            ..
        }) = program.steps.get(i + 1)
            && *next_in == *out
            && readers[*out] == 1
            && *out != program.output
            && next.geom.sw == 1
            && (next.geom.ic, next.geom.ih, next.geom.iw) == (g.oc, g.oh, g.ow)
        {
            let other = 1 - buf;
            b.handoff[i] = Some(other);
            b.handoff_bits[i] = super::xnor::hands_bits(layer, next);
            b.input[i + 1] = Some(other);
        }
    }
    if bordered {
        b.bordered = bordered_values(program, &b.handoff);
    }
    b.residual = fuse_residual_adds(program, &b, &readers);
    // Buffer sizes: every padded input copied or handed off into them (not
    // those read in place from a bordered value).
    for (i, s) in program.steps.iter().enumerate() {
        if let (Step::Mat { layer, input, .. }, Some(buf)) = (s, b.input[i])
            && !b.bordered[*input].is_some_and(|v| v.serves(&layer.geom))
        {
            let need = Padded::of(&layer.geom).scratch_floats(&layer.geom);
            b.floats[buf as usize] = b.floats[buf as usize].max(need);
        }
    }
    b
}

/// Scratch offsets of the patch elements in the dense kernels' `(ci, ky, kx)`
/// order.
pub fn dense_offsets(g: &Geom) -> Vec<i32> {
    let p = Padded::of(g);
    let mut v = Vec::with_capacity(g.cols());
    for ci in 0..g.ic {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                v.push(p.off(g, ci, ky, kx) as i32);
            }
        }
    }
    v
}

/// Binary kernels: offset of each kernel position (`ky·kw + kx`) of channel 0.
pub fn position_offsets(g: &Geom) -> Vec<i32> {
    let p = Padded::of(g);
    (0..g.kh)
        .flat_map(|ky| (0..g.kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| p.poff(g, ky, kx) as i32)
        .collect()
}

/// Dense weights `[oc][kh][kw][ic]` reordered to `[ceil(oc/J)][(ci, ky, kx)][J]`
/// with the missing output channels of the last block as `zero`.
pub fn dense_blocks<T: Copy>(w: &[T], g: &Geom, zero: T) -> Vec<T> {
    let cols = g.cols();
    let blocks = g.oc.div_ceil(DENSE_J);
    let mut out = Vec::with_capacity(blocks * DENSE_J * cols);
    for b in 0..blocks {
        for ci in 0..g.ic {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let k = (ky * g.kw + kx) * g.ic + ci;
                    for j in 0..DENSE_J {
                        let o = b * DENSE_J + j;
                        out.push(if o < g.oc { w[o * cols + k] } else { zero });
                    }
                }
            }
        }
    }
    out
}

/// A sparse layer as the kernel reads it: per output channel its nonzero
/// count, and the values (f32 for sparse, int8 for sparse8) with their
/// scratch offsets, ascending by offset.
pub struct SparseRows<T> {
    pub nnz: Vec<u32>,
    pub values: Vec<T>,
    pub offsets: Vec<u32>,
}

/// Converts a sparse packing (patch-index increments) to scratch offsets.
pub fn sparse_rows(packed: &Packed, g: &Geom) -> Option<SparseRows<f32>> {
    let Packed::Sparse {
        nnz,
        values,
        increments,
    } = packed
    else {
        return None;
    };
    Some(rows_at_offsets(nnz, values, increments, g))
}

/// Converts a sparse8 packing to scratch offsets.
pub fn sparse8_rows(packed: &Packed, g: &Geom) -> Option<SparseRows<i8>> {
    let Packed::Sparse8 {
        nnz,
        values,
        increments,
    } = packed
    else {
        return None;
    };
    Some(rows_at_offsets(nnz, values, increments, g))
}

/// The rows of a sparse structure with each value at its scratch offset.
fn rows_at_offsets<T: Copy>(
    nnz: &[u32],
    values: &[T],
    increments: &Increments,
    g: &Geom,
) -> SparseRows<T> {
    let p = Padded::of(g);
    let mut rows = SparseRows {
        nnz: nnz.to_vec(),
        values: Vec::with_capacity(values.len()),
        offsets: Vec::with_capacity(values.len()),
    };
    let mut j = 0;
    for &n in nnz {
        let mut k = 0;
        let mut row: Vec<(u32, T)> = (0..n)
            .map(|_| {
                k += increments.get(j);
                let (pos, ci) = (k / g.ic, k % g.ic);
                let v = values[j];
                j += 1;
                (p.off(g, ci, pos / g.kw, pos % g.kw) as u32, v)
            })
            .collect();
        // Ascending offsets: channel by channel through the scratch.
        row.sort_by_key(|&(o, _)| o);
        rows.offsets.extend(row.iter().map(|&(o, _)| o));
        rows.values.extend(row.iter().map(|&(_, v)| v));
    }
    rows
}

/// A binary layer as offset lists: per output channel the scratch offsets
/// of the kept `+1` weights (`npos`), then of the kept `−1` weights (`nneg`).
pub struct BinaryLists {
    pub npos: Vec<u32>,
    pub nneg: Vec<u32>,
    pub offsets: Vec<u32>,
}

/// Converts a binary packing (sign and mask words) to offset lists.
pub fn binary_lists(packed: &Packed, g: &Geom) -> Option<BinaryLists> {
    let Packed::Binary { words, signs, mask } = packed else {
        return None;
    };
    let p = Padded::of(g);
    let positions = g.kh * g.kw;
    let mut l = BinaryLists {
        npos: Vec::with_capacity(g.oc),
        nneg: Vec::with_capacity(g.oc),
        offsets: Vec::new(),
    };
    for o in 0..g.oc {
        let (mut pos, mut neg) = (Vec::new(), Vec::new());
        for ci in 0..g.ic {
            for ky in 0..g.kh {
                for kx in 0..g.kw {
                    let at = (o * positions + ky * g.kw + kx) * words + ci / 32;
                    let bit = 1u32 << (ci % 32);
                    if mask.as_ref().is_none_or(|m| m[at] & bit != 0) {
                        let off = p.off(g, ci, ky, kx) as u32;
                        if signs[at] & bit != 0 {
                            neg.push(off);
                        } else {
                            pos.push(off);
                        }
                    }
                }
            }
        }
        pos.sort_unstable();
        neg.sort_unstable();
        l.npos.push(pos.len() as u32);
        l.nneg.push(neg.len() as u32);
        l.offsets.extend(pos);
        l.offsets.extend(neg);
    }
    Some(l)
}

/// Bytes of a binary layer as offset lists.
fn binary_lists_bytes(packed: &Packed, g: &Geom) -> Option<usize> {
    let Packed::Binary { mask, .. } = packed else {
        return None;
    };
    let kept: usize = match mask {
        Some(m) => m.iter().map(|w| w.count_ones() as usize).sum(),
        None => g.oc * g.cols(),
    };
    let off = if sparse_offsets_fit_u16(g) { 2 } else { 4 };
    Some(8 * g.oc + off * kept)
}

/// Whether a binary layer is emitted as offset lists: when they take no
/// more flash than the sign and mask words (sparse binary layers). The
/// lists need no bit decoding, whose data-dependent loop exits mispredict.
pub fn binary_as_lists(packed: &Packed, g: &Geom) -> bool {
    binary_lists_bytes(packed, g).is_some_and(|b| b <= packed.bytes() + 4 * g.kh * g.kw)
}

/// Whether sparse offsets of `g` fit 16 bits.
pub fn sparse_offsets_fit_u16(g: &Geom) -> bool {
    g.ic * Padded::of(g).cstride <= u16::MAX as usize + 1
}

/// Flash bytes of a layer's weights as emitted: blocked dense weights
/// (padded to `J` channels) and their offset table, sparse (f32 or int8)
/// values with their offsets, binary words with their position offsets.
pub fn emitted_weight_bytes(packed: &Packed, g: &Geom) -> usize {
    let padded_rows = g.oc.div_ceil(DENSE_J) * DENSE_J;
    let dense = |elem: usize| elem * padded_rows * g.cols() + 4 * g.cols();
    let off = if sparse_offsets_fit_u16(g) { 2 } else { 4 };
    match packed {
        Packed::F32(_) => dense(4),
        Packed::F16(_) => dense(2),
        Packed::Int8(_) => dense(1),
        Packed::Sparse { nnz, values, .. } => 4 * nnz.len() + (4 + off) * values.len(),
        Packed::Sparse8 { nnz, values, .. } => 4 * nnz.len() + (1 + off) * values.len(),
        Packed::Binary { .. } => {
            let words = packed.bytes() + 4 * g.kh * g.kw;
            binary_lists_bytes(packed, g).map_or(words, |l| l.min(words))
        }
        // The stream, its padding word and the position offsets.
        Packed::Rice(_) => packed.bytes() + 4 + 4 * g.kh * g.kw,
        // Words, position offsets, the per-block table (row classes ×
        // column patterns × channels × xnor::BLOCK pixels, int16), the row
        // classes and the pattern of each block.
        Packed::Xnor(x) => {
            let corr = super::xnor::corrections(x, g);
            let table = super::xnor::block_table_len(corr.as_ref(), g.oc);
            let classes = corr.map_or(0, |c| g.oh + c.block_pattern.len());
            packed.bytes() + 4 * g.kh * g.kw + 2 * table + classes
        }
    }
}

/// 32-bit words of RAM the program's xnor layers pack their inputs into
/// (shared, so the largest layer's).
pub fn xnor_buffer_words(program: &super::lower::Program) -> usize {
    program
        .mat_layers()
        .filter_map(|l| match &l.packed.packed {
            Packed::Xnor(x) => Some(super::xnor::ram_words(x, &l.geom)),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The decode buffers of a program's Rice-coded layers (shared, so the
/// largest layer's): `(counts, offsets)` entries of 32 bits.
pub fn rice_buffers(program: &super::lower::Program) -> (usize, usize) {
    program
        .mat_layers()
        .filter_map(|l| rice_decoded_len(&l.packed.packed, &l.geom))
        .fold((0, 0), |(c, o), (lc, lo)| (c.max(lc), o.max(lo)))
}

/// RAM a Rice-coded layer decodes into: `(counts, offsets)` entries of 32
/// bits (one count per output channel, one offset per kept weight).
pub fn rice_decoded_len(packed: &Packed, g: &Geom) -> Option<(usize, usize)> {
    let Packed::Rice(s) = packed else {
        return None;
    };
    let kept = super::rice::decode(s, g.oc, g.cols())?
        .iter()
        .map(Vec::len)
        .sum();
    Some((g.oc, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::pack::{Format, pack};

    fn geom(ih: usize, ic: usize, oc: usize, k: usize, s: usize, p: usize) -> Geom {
        let o = (ih + 2 * p - k) / s + 1;
        Geom {
            ih,
            iw: ih,
            ic,
            oh: o,
            ow: o,
            oc,
            kh: k,
            kw: k,
            sh: s,
            sw: s,
            ph: p,
            pw: p,
        }
    }

    #[test]
    fn offsets_address_the_padded_phase_split_input() {
        // Stride 2: padded column x of phase x % 2 at index x / 2.
        let g = geom(9, 3, 5, 3, 2, 1);
        let p = Padded::of(&g);
        assert_eq!((p.hp, p.wq, p.cstride), (11, 6, 2 * 11 * 6));
        // Output column ox reads padded column 2·ox + kx.
        for kx in 0..3 {
            let x = 2 * 3 + kx; // ox = 3
            let want = ((x % 2) * p.hp) * p.wq + x / 2;
            assert_eq!(p.poff(&g, 0, kx) + 3, want);
        }
        // Every read of the last, partly valid vector stays inside scratch.
        let last = (g.oh - 1) * g.sh * p.wq + 8 * (g.ow.div_ceil(8) - 1);
        let max = dense_offsets(&g).into_iter().max().unwrap() as usize;
        assert!(max + last + 8 <= p.scratch_floats(&g));
    }

    #[test]
    fn dense_blocks_pad_the_last_block_with_zeros() {
        let g = geom(4, 2, 5, 3, 1, 1);
        let w: Vec<f32> = (0..g.oc * g.cols()).map(|i| i as f32 + 1.0).collect();
        let b = dense_blocks(&w, &g, 0.0);
        assert_eq!(b.len(), 2 * DENSE_J * g.cols());
        // Block 1 holds channel 4 then three zero channels.
        let k = (g.kw + 1) * g.ic; // (ky=1, kx=1, ci=0)
        let at = (g.cols() + g.kw + 1) * DENSE_J; // block 1, (ci=0, ky=1, kx=1)
        assert_eq!(b[at], w[4 * g.cols() + k]);
        assert_eq!(&b[at + 1..at + 4], &[0.0; 3]);
    }

    #[test]
    fn sparse_rows_keep_every_value_at_its_offset() {
        let g = geom(6, 3, 4, 3, 1, 1);
        let mut r = crate::rng::Rng::new(2);
        let w: Vec<f32> = (0..g.oc * g.cols())
            .map(|_| if r.uniform() < 0.7 { 0.0 } else { r.normal() })
            .collect();
        let p = pack(&w, g.oc, g.cols(), g.ic, Format::Sparse).unwrap();
        let rows = sparse_rows(&p.packed, &g).unwrap();
        let pad = Padded::of(&g);
        let mut j = 0;
        for (o, &n) in rows.nnz.iter().enumerate() {
            for _ in 0..n {
                let off = rows.offsets[j] as usize;
                let ci = off / pad.cstride;
                let rest = off % pad.cstride;
                let (ky, kx) = (rest / pad.wq, rest % pad.wq);
                assert_eq!(
                    w[o * g.cols() + (ky * g.kw + kx) * g.ic + ci],
                    rows.values[j]
                );
                j += 1;
            }
        }
        assert_eq!(j, w.iter().filter(|&&v| v != 0.0).count());
        // Sparse8: the same offsets, with the int8 values.
        let p8 = pack(&w, g.oc, g.cols(), g.ic, Format::Sparse8).unwrap();
        let rows8 = sparse8_rows(&p8.packed, &g).unwrap();
        let scales = p8.mult.unwrap();
        assert_eq!(
            (rows8.nnz.clone(), rows8.offsets.clone()),
            (rows.nnz, rows.offsets)
        );
        let mut j = 0;
        for (o, &n) in rows8.nnz.iter().enumerate() {
            for _ in 0..n {
                let q = (rows.values[j] / scales[o]).round() as i8;
                assert_eq!(rows8.values[j], q);
                j += 1;
            }
        }
        assert!(sparse_rows(&p8.packed, &g).is_none());
    }
}
