//! A graph lowered to GPU dispatches for one batch size: every buffer
//! allocated once, every bind group and parameter block built once, so a
//! training step is one command encoder replaying the recorded dispatches.

use super::device::Gpu;
use super::kernels::{GemmMode, Kernel, Tile};
use crate::ir::op::{channels_spatial as cs, height_width as hw};
use crate::ir::{Op, ParamKind};
use crate::model::{Model, WeightState};
use anyhow::{Context, bail};

/// Words of one dispatch's uniform block (its 256-byte slot).
const SLOT_WORDS: usize = 64;
/// Threads per workgroup of the 1-D kernels.
const THREADS: usize = 256;

/// What a plan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlanMode {
    /// Eval-mode forward (BatchNorm running statistics).
    Infer,
    /// Train-mode forward, softmax cross-entropy and backward.
    Train,
}

/// The model's parameters on the device, flat in `Model::params` order.
pub struct Params {
    /// `offsets[node][k]`: first float of tensor k of node.
    pub offsets: Vec<Vec<usize>>,
    pub len: usize,
    pub values: wgpu::Buffer,
    /// Mask and binarisation applied (what the kernels compute with).
    pub effective: wgpu::Buffer,
    pub grads: wgpu::Buffer,
    pub velocity: wgpu::Buffer,
    /// Per-value flags (see `shaders/ops.wgsl`, `effective_value`).
    pub flags: wgpu::Buffer,
    /// Binary scale per tensor (index in the flags' high bits).
    pub alpha: wgpu::Buffer,
    /// Running totals of the training steps since the host last read
    /// them: `[Σ loss × images, correct, images]` (`stats_accumulate`).
    pub totals: wgpu::Buffer,
}

/// Flag bits shared with `shaders/ops.wgsl`.
const TRAINABLE: u32 = 1;
const DECAY: u32 = 2;
const KEEP: u32 = 4;
const BINARY: u32 = 8;

impl Params {
    /// Allocates the flat buffers of `model`.
    pub fn new(gpu: &Gpu, model: &Model) -> anyhow::Result<Params> {
        let mut offsets = Vec::with_capacity(model.params.len());
        let mut len = 0;
        for ts in &model.params {
            let mut o = Vec::with_capacity(ts.len());
            for t in ts {
                o.push(len);
                len += t.data.len();
            }
            offsets.push(o);
        }
        let tensors: usize = model.params.iter().map(|t| t.len()).sum();
        Ok(Params {
            offsets,
            len,
            values: gpu.storage(len, "parameters")?,
            effective: gpu.storage(len, "effective parameters")?,
            grads: gpu.storage(len, "parameter gradients")?,
            velocity: gpu.storage(len, "momentum buffers")?,
            flags: gpu.storage(len, "parameter flags")?,
            alpha: gpu.storage(tensors, "binary scales")?,
            totals: gpu.storage(3, "training statistics")?,
        })
    }

    /// Uploads values, flags and binary scales (`decay_all`: weight decay on
    /// every trainable tensor, else on weights only, as `Sgd`).
    pub fn upload(&self, gpu: &Gpu, model: &Model, decay_all: bool) -> anyhow::Result<()> {
        let mut values = Vec::with_capacity(self.len);
        let mut flags = Vec::with_capacity(self.len);
        let mut alpha = Vec::new();
        for ts in &model.params {
            for t in ts {
                let index = alpha.len() as u32;
                if index >= 1 << 24 {
                    bail!("the wgpu backend supports at most 2^24 parameter tensors");
                }
                let mut base = index << 8;
                if t.kind.trainable() {
                    base |= TRAINABLE;
                    if decay_all || t.kind == ParamKind::Weight {
                        base |= DECAY;
                    }
                }
                let (mask, a) = match &t.state {
                    WeightState::Dense => (None, 0.0),
                    WeightState::Masked { mask } => (Some(mask), 0.0),
                    WeightState::Binary { mask, alpha } => {
                        base |= BINARY;
                        (Some(mask), *alpha)
                    }
                };
                alpha.push(a);
                values.extend_from_slice(&t.data);
                match mask {
                    Some(m) => flags.extend(m.iter().map(|&k| if k { base | KEEP } else { base })),
                    None => flags.extend(std::iter::repeat_n(base | KEEP, t.data.len())),
                }
            }
        }
        gpu.write(&self.values, 0, &values);
        gpu.write(&self.flags, 0, &flags);
        gpu.write(&self.alpha, 0, &alpha);
        Ok(())
    }
}

/// One recorded dispatch.
pub struct Step {
    /// What the dispatch is (kernel, tile), for `CARDC_GPU_PROFILE`.
    pub kernel: Kernel,
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub groups: [u32; 3],
}

/// Buffers a dispatch reads (slots 1..=3) and writes (4..=5).
#[derive(Default)]
struct Io<'a> {
    ins: [Option<&'a wgpu::Buffer>; 3],
    outs: [Option<&'a wgpu::Buffer>; 2],
}

fn io<'a>(ins: &[&'a wgpu::Buffer], outs: &[&'a wgpu::Buffer]) -> Io<'a> {
    let mut r = Io::default();
    for (s, b) in r.ins.iter_mut().zip(ins) {
        *s = Some(*b);
    }
    for (s, b) in r.outs.iter_mut().zip(outs) {
        *s = Some(*b);
    }
    r
}

struct Pending {
    kernel: Kernel,
    ins: [Option<wgpu::Buffer>; 3],
    outs: [Option<wgpu::Buffer>; 2],
    slot: usize,
    groups: [u32; 3],
}

/// Collects dispatches and their parameter blocks, then builds the bind
/// groups against one uniform buffer.
struct Recorder<'g> {
    gpu: &'g Gpu,
    /// Workgroups a GEMM's tile choice must keep (see [`Tile::pick`]).
    min_groups: usize,
    words: Vec<u32>,
    pending: Vec<Pending>,
}

impl<'g> Recorder<'g> {
    fn push(&mut self, kernel: Kernel, params: &[u32], io: Io, groups: [u32; 3]) -> usize {
        let slot = self.words.len() / SLOT_WORDS;
        let mut block = [0u32; SLOT_WORDS];
        block[..params.len()].copy_from_slice(params);
        self.words.extend_from_slice(&block);
        self.pending.push(Pending {
            kernel,
            ins: io.ins.map(|b| b.cloned()),
            outs: io.outs.map(|b| b.cloned()),
            slot,
            groups,
        });
        self.pending.len() - 1
    }

    /// An implicit GEMM of `m x n` outputs in `z` groups, its tile picked
    /// for the shape.
    fn gemm(
        &mut self,
        mode: GemmMode,
        params: &[u32],
        io: Io,
        (m, n, z): (usize, usize, usize),
    ) -> usize {
        let t = Tile::pick(m, n, z, self.min_groups);
        self.push(
            Kernel::Gemm(mode, t),
            params,
            io,
            [u(n.div_ceil(t.cols())), u(m.div_ceil(t.rows())), u(z)],
        )
    }

    /// A 1-D kernel over `n` elements (grid folded into y past 65535 groups).
    fn elementwise(&mut self, kernel: Kernel, params: &[u32], io: Io, n: usize) -> usize {
        self.push(kernel, params, io, grid_1d(n, THREADS))
    }

    fn finish(self) -> anyhow::Result<(wgpu::Buffer, Vec<Step>)> {
        let gpu = self.gpu;
        let uniforms = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dispatch parameters"),
            size: (self.words.len().max(SLOT_WORDS) * 4) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.write(&uniforms, 0, &self.words);
        let mut steps = Vec::with_capacity(self.pending.len());
        for p in self.pending {
            let slot_bytes = (SLOT_WORDS * 4) as u64;
            let ubind = wgpu::BufferBinding {
                buffer: &uniforms,
                offset: p.slot as u64 * slot_bytes,
                size: wgpu::BufferSize::new(slot_bytes),
            };
            let bind = bind_group(gpu, wgpu::BindingResource::Buffer(ubind), &p.ins, &p.outs);
            steps.push(Step {
                kernel: p.kernel,
                pipeline: gpu.pipelines.get(&gpu.device, p.kernel),
                bind,
                groups: p.groups,
            });
        }
        Ok((uniforms, steps))
    }
}

/// A bind group of the shared layout: the uniform block, up to three
/// inputs and two outputs (unused slots get the device's dummy buffers).
fn bind_group(
    gpu: &Gpu,
    uniform: wgpu::BindingResource,
    ins: &[Option<wgpu::Buffer>; 3],
    outs: &[Option<wgpu::Buffer>; 2],
) -> wgpu::BindGroup {
    let r = |i: usize| ins[i].as_ref().unwrap_or(&gpu.dummy_r).as_entire_binding();
    let w = |i: usize| {
        outs[i]
            .as_ref()
            .unwrap_or(&gpu.dummy_w[i])
            .as_entire_binding()
    };
    let entries = [
        (0, uniform),
        (1, r(0)),
        (2, r(1)),
        (3, r(2)),
        (4, w(0)),
        (5, w(1)),
    ]
    .map(|(binding, resource)| wgpu::BindGroupEntry { binding, resource });
    gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &gpu.pipelines.layout,
        entries: &entries,
    })
}

/// Workgroups for `n` threads in groups of `per`, folded to stay within
/// 65535 per dimension (the kernels compute `x + y * 65535 * per`).
fn grid_1d(n: usize, per: usize) -> [u32; 3] {
    let groups = n.div_ceil(per).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        [65535, groups.div_ceil(65535) as u32, 1]
    }
}

fn f(v: f32) -> u32 {
    v.to_bits()
}

fn u(v: usize) -> u32 {
    v as u32
}

/// A plan for one batch size and mode.
pub struct Plan {
    pub batch: usize,
    pub mode: PlanMode,
    /// Images as they arrive, `[B, C, H, W]`.
    pub images: wgpu::Buffer,
    /// Labels (u32 bits), train plans only.
    pub labels: wgpu::Buffer,
    /// `[mean loss, correct]` of the last step.
    pub stats: wgpu::Buffer,
    /// Node outputs (pixel-major).
    pub acts: Vec<wgpu::Buffer>,
    pub classes: usize,
    /// Optimizer parameter block, rewritten each step (learning rate).
    pub sgd_params: wgpu::Buffer,
    /// Effective weights, forward, loss and backward.
    pub steps: Vec<Step>,
    /// The SGD update.
    pub update: Vec<Step>,
    /// Train plans: the input of raw batches, augmented on the device.
    pub raw: Option<RawInput>,
    _uniforms: wgpu::Buffer,
}

/// Where a train plan takes a raw batch ([`crate::data::RawBatch`]): its
/// bytes, crops and normalization tables, and the dispatch that crops,
/// flips and normalizes them into the first activation in place of the
/// normalized images' layout change (`steps[replaces]`).
pub struct RawInput {
    /// `[B, C, H, W]` bytes, four per word.
    pub bytes: wgpu::Buffer,
    /// Per image: dy, dx, flip.
    pub shifts: wgpu::Buffer,
    /// `[C, 256]` normalization tables.
    pub luts: wgpu::Buffer,
    pub step: Step,
    pub replaces: usize,
}

impl Plan {
    /// The dispatches of one step: the forward (and backward) from raw
    /// bytes or normalized images, then the update when asked.
    pub fn dispatches(&self, raw: bool, update: bool) -> impl Iterator<Item = &Step> {
        let input = self.raw.as_ref().filter(|_| raw);
        self.steps
            .iter()
            .enumerate()
            .map(move |(k, st)| match input {
                Some(r) if k == r.replaces => &r.step,
                _ => st,
            })
            .chain(if update { &self.update[..] } else { &[] })
    }
}

/// Output channels per workgroup of the BatchNorm reduction.
const BN_CHANNELS: usize = 64;

/// Rows per chunk of a per-channel reduction over `r` rows and `c` channels:
/// enough chunks to fill the GPU, at least 64 rows each.
fn chunking(r: usize, c: usize) -> (usize, usize) {
    let blocks = c.div_ceil(BN_CHANNELS).max(1);
    let want = (1024 / blocks).max(1);
    let rows = r.div_ceil(want).max(64);
    (rows, r.div_ceil(rows).max(1))
}

/// Split-K of a weight gradient with reduction length `k` over `tiles`
/// output tiles: `(splits, chunk)` with the chunk a multiple of 16.
fn split_k(k: usize, tiles: usize) -> (usize, usize) {
    let splits = 512usize.div_ceil(tiles.max(1)).min(k.div_ceil(256)).max(1);
    let chunk = k.div_ceil(splits).div_ceil(16) * 16;
    (k.div_ceil(chunk).max(1), chunk)
}

impl Plan {
    /// Lowers `model`'s graph for `batch` images.
    /// `min_groups`: see [`Tile::pick`].
    pub fn new(
        gpu: &Gpu,
        model: &Model,
        params: &Params,
        batch: usize,
        mode: PlanMode,
        min_groups: usize,
    ) -> anyhow::Result<Plan> {
        let graph = &model.graph;
        let shapes = graph
            .shapes()
            .map_err(|e| anyhow::anyhow!("invalid graph: {e}"))?;
        let nodes = &graph.nodes;
        let n = nodes.len();
        let b = batch;
        let numel = |i: usize| -> usize { shapes[i].iter().product::<usize>() * b };
        let train = mode == PlanMode::Train;
        let classes = shapes[n - 1].first().copied().unwrap_or(0);
        let [ic, ih, iw] = graph.input_shape();
        let images = gpu.storage(b * ic * ih * iw, "input images")?;
        let labels = gpu.storage(b, "labels")?;
        let stats = gpu.storage(2, "step statistics")?;
        let sgd_params = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("optimizer parameters"),
            size: (SLOT_WORDS * 4) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut acts = Vec::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            acts.push(
                gpu.storage(numel(i), &format!("activation of layer '{}'", node.name))
                    .with_context(|| format!("batch {b}"))?,
            );
        }
        let mut grads: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(n);
        for (i, node) in nodes.iter().enumerate() {
            grads.push(if train && i > 0 {
                Some(gpu.storage(numel(i), &format!("gradient of layer '{}'", node.name))?)
            } else {
                None
            });
        }
        // Side buffers: BatchNorm statistics (+ backward coefficients),
        // max-pool winners, and scratch shared by reductions.
        let mut side: Vec<Option<wgpu::Buffer>> = Vec::with_capacity(n);
        let (mut bn_scratch, mut split_scratch) = (2usize, 4usize);
        for (i, node) in nodes.iter().enumerate() {
            let r = numel(i) / cs(&shapes[i]).0.max(1);
            side.push(match &node.op {
                Op::BatchNorm(bn) => {
                    let (_, chunks) = chunking(r, bn.channels);
                    bn_scratch = bn_scratch.max(chunks * bn.channels * 2);
                    Some(gpu.storage(5 * bn.channels, "BatchNorm statistics")?)
                }
                Op::MaxPool(_) => Some(gpu.storage(numel(i), "max-pool winners")?),
                Op::Conv2d(c) if train => {
                    let (oh, ow) = hw(&shapes[i]);
                    let (cig, cog) = (c.in_channels / c.groups, c.out_channels / c.groups);
                    let kn = c.kernel.0 * c.kernel.1 * cig;
                    let tile = Tile::pick(cog, kn, 1, 0);
                    let tiles = cog.div_ceil(tile.rows()) * kn.div_ceil(tile.cols()) * c.groups;
                    let (splits, _) = split_k(b * oh * ow, tiles);
                    split_scratch = split_scratch.max(splits * c.out_channels * kn);
                    if c.bias {
                        let (_, chunks) = chunking(b * oh * ow, c.out_channels);
                        bn_scratch = bn_scratch.max(chunks * c.out_channels * 2);
                    }
                    None
                }
                Op::Linear(l) if train => {
                    let tile = Tile::pick(l.out_features, l.in_features, 1, 0);
                    let tiles =
                        l.out_features.div_ceil(tile.rows()) * l.in_features.div_ceil(tile.cols());
                    let (splits, _) = split_k(b, tiles);
                    split_scratch = split_scratch.max(splits * l.out_features * l.in_features);
                    if l.bias {
                        let (_, chunks) = chunking(b, l.out_features);
                        bn_scratch = bn_scratch.max(chunks * l.out_features * 2);
                    }
                    None
                }
                _ => None,
            });
        }
        let bn_scratch = gpu.storage(bn_scratch, "reduction scratch")?;
        let split_scratch = gpu.storage(split_scratch, "weight-gradient partials")?;
        let rowstats = gpu.storage(2 * b, "per-image losses")?;
        let raw_buffers = match train {
            true => Some((
                gpu.storage((b * ic * ih * iw).div_ceil(4), "raw image bytes")?,
                gpu.storage(3 * b, "crops and flips")?,
                gpu.storage(256 * ic, "normalization tables")?,
            )),
            false => None,
        };
        let (mut input_step, mut raw_step, mut accumulate_step) = (0, None, None);

        let mut rec = Recorder {
            gpu,
            min_groups,
            words: Vec::new(),
            pending: Vec::new(),
        };
        let p = params;
        let off = |i: usize, kind: ParamKind| -> Option<usize> {
            model.params[i]
                .iter()
                .position(|t| t.kind == kind)
                .map(|k| p.offsets[i][k])
        };
        let op = Kernel::Op;
        let norm = Kernel::Norm;
        // Effective weights (mask, binarisation) once per step.
        rec.elementwise(
            op("effective"),
            &[u(p.len)],
            io(&[&p.values, &p.flags, &p.alpha], &[&p.effective]),
            p.len,
        );
        // ---- forward ----
        for (i, node) in nodes.iter().enumerate() {
            let name = &node.name;
            let x = node.inputs.first().map(|&j| &acts[j]);
            let y = &acts[i];
            let (c, s) = cs(&shapes[i]);
            let total = numel(i);
            match &node.op {
                Op::Input { .. } => {
                    input_step = rec.elementwise(
                        op("nchw_to_nhwc"),
                        &[u(total), u(c), u(s)],
                        io(&[&images], &[y]),
                        total,
                    );
                    if let Some((bytes, shifts, luts)) = &raw_buffers {
                        raw_step = Some(rec.elementwise(
                            Kernel::Augment,
                            &[u(total), u(c), u(ih), u(iw)],
                            io(&[bytes, shifts, luts], &[y]),
                            total,
                        ));
                    }
                }
                Op::Conv2d(cv) => {
                    let x = x.context("conv without input")?;
                    let (h, w) = hw(&shapes[node.inputs[0]]);
                    let (oh, ow) = hw(&shapes[i]);
                    let g = conv_geom(
                        cv,
                        (h, w),
                        (oh, ow),
                        off(i, ParamKind::Weight),
                        off(i, ParamKind::Bias),
                    )
                    .with_context(|| format!("layer '{name}'"))?;
                    let m = b * oh * ow;
                    let nn = cv.out_channels / cv.groups;
                    let k = cv.kernel.0 * cv.kernel.1 * (cv.in_channels / cv.groups);
                    let mut words = g;
                    words[0] = u(m);
                    words[1] = u(nn);
                    words[2] = u(k);
                    rec.gemm(
                        GemmMode::ConvForward,
                        &words,
                        io(&[x, &p.effective], &[y]),
                        (m, nn, cv.groups),
                    );
                }
                Op::Linear(l) => {
                    let x = x.context("linear without input")?;
                    let words = linear_geom(
                        l,
                        b,
                        GemmMode::LinearForward,
                        off(i, ParamKind::Weight),
                        off(i, ParamKind::Bias),
                    );
                    rec.gemm(
                        GemmMode::LinearForward,
                        &words,
                        io(&[x, &p.effective], &[y]),
                        (b, l.out_features, 1),
                    );
                }
                Op::BatchNorm(bn) => {
                    let x = x.context("batchnorm without input")?;
                    let st = side[i].as_ref().context("statistics buffer")?;
                    let r = total / c.max(1);
                    let (rows, chunks) = chunking(r, c);
                    let words = bn_words(
                        bn,
                        r,
                        rows,
                        chunks,
                        0,
                        off(i, ParamKind::Gamma),
                        off(i, ParamKind::Beta),
                        off(i, ParamKind::RunningMean),
                        off(i, ParamKind::RunningVar),
                    );
                    if train {
                        if r < 2 {
                            bail!(
                                "layer '{name}': BatchNorm in training needs more than one value per channel (batch {b})"
                            );
                        }
                        rec.push(
                            norm("partial"),
                            &words,
                            io(&[x], &[&bn_scratch]),
                            [u(c.div_ceil(BN_CHANNELS)), u(chunks), 1],
                        );
                        rec.push(
                            norm("stats_train"),
                            &words,
                            io(&[&bn_scratch, x], &[st, &p.values]),
                            [u(c.div_ceil(64)), 1, 1],
                        );
                    } else {
                        rec.push(
                            norm("stats_eval"),
                            &words,
                            io(&[&p.values], &[st]),
                            [u(c.div_ceil(64)), 1, 1],
                        );
                    }
                    rec.elementwise(
                        norm("apply"),
                        &words,
                        io(&[x, st, &p.effective], &[y]),
                        total,
                    );
                }
                Op::Relu | Op::Relu6 | Op::Sign => {
                    let x = x.context("activation without input")?;
                    let flags = act_flags(&node.op);
                    rec.elementwise(
                        op("relu_fwd"),
                        &[u(total), 0, 0, flags],
                        io(&[x], &[y]),
                        total,
                    );
                }
                Op::MaxPool(pl) | Op::AvgPool(pl) => {
                    let x = x.context("pool without input")?;
                    // Max pooling also writes each window's winner.
                    let (flag, winners) = match &node.op {
                        Op::MaxPool(_) => (4, side[i].as_ref()),
                        _ => (0, None),
                    };
                    let words = pool_words(
                        pl,
                        total,
                        c,
                        hw(&shapes[node.inputs[0]]),
                        hw(&shapes[i]),
                        flag,
                    );
                    let outs: Vec<&wgpu::Buffer> = std::iter::once(y).chain(winners).collect();
                    rec.elementwise(op("pool_fwd"), &words, io(&[x], &outs), total);
                }
                Op::GlobalAvgPool => {
                    let x = x.context("pool without input")?;
                    let (_, si) = cs(&shapes[node.inputs[0]]);
                    rec.elementwise(
                        op("gap_fwd"),
                        &[u(total), u(c), u(si)],
                        io(&[x], &[y]),
                        total,
                    );
                }
                Op::Add => {
                    let (a, c2) = (&acts[node.inputs[0]], &acts[node.inputs[1]]);
                    rec.elementwise(op("add_fwd"), &[u(total)], io(&[a, c2], &[y]), total);
                }
                Op::Flatten => {
                    let x = x.context("flatten without input")?;
                    let (ci, si) = cs(&shapes[node.inputs[0]]);
                    rec.elementwise(
                        op("flatten_fwd"),
                        &[u(total), u(ci), u(si)],
                        io(&[x], &[y]),
                        total,
                    );
                }
            }
        }
        if train {
            // ---- loss ----
            let dl = grads[n - 1].as_ref().context("logit gradient")?;
            rec.push(
                op("xent"),
                &[u(b), u(classes)],
                io(&[&acts[n - 1], &labels], &[dl, &rowstats]),
                [u(b.div_ceil(64)), 1, 1],
            );
            rec.push(
                op("xent_total"),
                &[u(b)],
                io(&[&rowstats], &[&stats]),
                [1, 1, 1],
            );
            accumulate_step = Some(rec.push(
                op("stats_accumulate"),
                &[u(b)],
                io(&[&stats], &[&p.totals]),
                [1, 1, 1],
            ));
            // ---- backward ----
            let mut written = vec![false; n];
            written[n - 1] = true;
            for i in (1..n).rev() {
                if !written[i] {
                    continue;
                }
                let node = &nodes[i];
                let name = &node.name;
                let dy = grads[i].as_ref().context("gradient buffer")?;
                let (c, _) = cs(&shapes[i]);
                let total = numel(i);
                // Where the gradient of input `j` goes, and whether it adds
                // to one already written by a later reader.
                let mut target = |j: usize| -> Option<(wgpu::Buffer, u32)> {
                    if j == 0 {
                        return None;
                    }
                    let acc = written[j] as u32;
                    written[j] = true;
                    grads[j].clone().map(|g| (g, acc))
                };
                match &node.op {
                    Op::Input { .. } => {}
                    Op::Conv2d(cv) => {
                        let j = node.inputs[0];
                        let (h, w) = hw(&shapes[j]);
                        let (oh, ow) = hw(&shapes[i]);
                        let base = conv_geom(
                            cv,
                            (h, w),
                            (oh, ow),
                            off(i, ParamKind::Weight),
                            off(i, ParamKind::Bias),
                        )
                        .with_context(|| format!("layer '{name}'"))?;
                        let (cig, cog) = (cv.in_channels / cv.groups, cv.out_channels / cv.groups);
                        let khw = cv.kernel.0 * cv.kernel.1;
                        let kn = khw * cig;
                        let pix = b * oh * ow;
                        // weight gradient: M = cog, N = kh*kw*cig, K = pixels (split)
                        let tile = Tile::pick(cog, kn, 1, 0);
                        let tiles =
                            cog.div_ceil(tile.rows()) * kn.div_ceil(tile.cols()) * cv.groups;
                        let (splits, chunk) = split_k(pix, tiles);
                        let mut words = base;
                        words[0] = u(cog);
                        words[1] = u(kn);
                        words[2] = u(pix);
                        words[20] = u(splits);
                        words[21] = u(chunk);
                        rec.push(
                            Kernel::Gemm(GemmMode::ConvWeightGrad, tile),
                            &words,
                            io(&[dy, &acts[j]], &[&split_scratch]),
                            [
                                u(kn.div_ceil(tile.cols())),
                                u(cog.div_ceil(tile.rows())),
                                u(cv.groups * splits),
                            ],
                        );
                        let wsize = cv.out_channels * kn;
                        let woff = off(i, ParamKind::Weight).context("conv weight")?;
                        rec.elementwise(
                            op("reduce_splits"),
                            &[
                                u(wsize),
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                u(woff),
                                u(splits),
                            ],
                            io(&[&split_scratch, &p.flags], &[&p.grads]),
                            wsize,
                        );
                        if let Some(boff) = off(i, ParamKind::Bias) {
                            bias_grad(
                                &mut rec,
                                dy,
                                &bn_scratch,
                                &p.grads,
                                pix,
                                cv.out_channels,
                                boff,
                            );
                        }
                        if let Some((dx, acc)) = target(j) {
                            let mut words = base;
                            words[0] = u(b * h * w);
                            words[1] = u(cig);
                            words[2] = u(khw * cog);
                            words[3] = acc << 1;
                            rec.gemm(
                                GemmMode::ConvInputGrad,
                                &words,
                                io(&[dy, &p.effective], &[&dx]),
                                (b * h * w, cig, cv.groups),
                            );
                        }
                    }
                    Op::Linear(l) => {
                        let j = node.inputs[0];
                        let (wo, bo) = (off(i, ParamKind::Weight), off(i, ParamKind::Bias));
                        let tile = Tile::pick(l.out_features, l.in_features, 1, 0);
                        let tiles = l.out_features.div_ceil(tile.rows())
                            * l.in_features.div_ceil(tile.cols());
                        let (splits, chunk) = split_k(b, tiles);
                        let mut words = linear_geom(l, b, GemmMode::LinearWeightGrad, wo, bo);
                        words[20] = u(splits);
                        words[21] = u(chunk);
                        rec.push(
                            Kernel::Gemm(GemmMode::LinearWeightGrad, tile),
                            &words,
                            io(&[dy, &acts[j]], &[&split_scratch]),
                            [
                                u(l.in_features.div_ceil(tile.cols())),
                                u(l.out_features.div_ceil(tile.rows())),
                                u(splits),
                            ],
                        );
                        let wsize = l.out_features * l.in_features;
                        rec.elementwise(
                            op("reduce_splits"),
                            &[
                                u(wsize),
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                0,
                                u(wo.context("linear weight")?),
                                u(splits),
                            ],
                            io(&[&split_scratch, &p.flags], &[&p.grads]),
                            wsize,
                        );
                        if let Some(boff) = bo {
                            bias_grad(&mut rec, dy, &bn_scratch, &p.grads, b, l.out_features, boff);
                        }
                        if let Some((dx, acc)) = target(j) {
                            let mut words = linear_geom(l, b, GemmMode::LinearInputGrad, wo, bo);
                            words[3] = acc << 1;
                            rec.gemm(
                                GemmMode::LinearInputGrad,
                                &words,
                                io(&[dy, &p.effective], &[&dx]),
                                (b, l.in_features, 1),
                            );
                        }
                    }
                    Op::BatchNorm(bn) => {
                        let j = node.inputs[0];
                        let st = side[i].as_ref().context("statistics buffer")?;
                        let r = total / c.max(1);
                        let (rows, chunks) = chunking(r, c);
                        let (go, bo) = (off(i, ParamKind::Gamma), off(i, ParamKind::Beta));
                        let words = bn_words(bn, r, rows, chunks, 256, go, bo, None, None);
                        rec.push(
                            norm("partial"),
                            &words,
                            io(&[dy, &acts[j], st], &[&bn_scratch]),
                            [u(c.div_ceil(BN_CHANNELS)), u(chunks), 1],
                        );
                        rec.push(
                            norm("coef_bwd"),
                            &words,
                            io(&[&bn_scratch, &gpu.dummy_r, &p.effective], &[st, &p.grads]),
                            [u(c.div_ceil(64)), 1, 1],
                        );
                        if let Some((dx, acc)) = target(j) {
                            let words = bn_words(bn, r, rows, chunks, acc, go, bo, None, None);
                            rec.elementwise(
                                norm("apply_bwd"),
                                &words,
                                io(&[dy, &acts[j], st], &[&dx]),
                                total,
                            );
                        }
                    }
                    Op::Relu | Op::Relu6 | Op::Sign => {
                        let j = node.inputs[0];
                        // ReLUs mask by their output, Sign by its input.
                        let saved = if matches!(node.op, Op::Sign) { j } else { i };
                        if let Some((dx, acc)) = target(j) {
                            rec.elementwise(
                                op("relu_bwd"),
                                &[u(total), 0, 0, act_flags(&node.op) | acc],
                                io(&[&acts[saved], dy], &[&dx]),
                                total,
                            );
                        }
                    }
                    Op::MaxPool(pl) | Op::AvgPool(pl) => {
                        let j = node.inputs[0];
                        let total_in = numel(j);
                        let (flag, winners) = match &node.op {
                            Op::MaxPool(_) => (4, side[i].as_ref()),
                            _ => (0, None),
                        };
                        if let Some((dx, acc)) = target(j) {
                            let words = pool_words(
                                pl,
                                total_in,
                                c,
                                hw(&shapes[j]),
                                hw(&shapes[i]),
                                flag | acc,
                            );
                            let ins: Vec<&wgpu::Buffer> =
                                std::iter::once(dy).chain(winners).collect();
                            rec.elementwise(op("pool_bwd"), &words, io(&ins, &[&dx]), total_in);
                        }
                    }
                    Op::GlobalAvgPool | Op::Flatten => {
                        // Both map [B, S, C] to per-image vectors: the
                        // backward kernels take (elements, C, S) of the input.
                        let j = node.inputs[0];
                        let (ci, si) = cs(&shapes[j]);
                        let kernel = match &node.op {
                            Op::Flatten => "flatten_bwd",
                            _ => "gap_bwd",
                        };
                        if let Some((dx, acc)) = target(j) {
                            rec.elementwise(
                                op(kernel),
                                &[u(numel(j)), u(ci), u(si), acc],
                                io(&[dy], &[&dx]),
                                numel(j),
                            );
                        }
                    }
                    Op::Add => {
                        let (a, c2) = (node.inputs[0], node.inputs[1]);
                        let scale = if a == c2 { 2.0 } else { 1.0 };
                        let mut once = vec![a];
                        if c2 != a {
                            once.push(c2);
                        }
                        for j in once {
                            if let Some((dx, acc)) = target(j) {
                                let mut words = [0u32; 20];
                                words[0] = u(total);
                                words[3] = acc;
                                words[16] = f(scale);
                                rec.elementwise(op("scale_into"), &words, io(&[dy], &[&dx]), total);
                            }
                        }
                    }
                }
            }
        }
        let (uniforms, mut steps) = rec.finish()?;
        // The statistics are added to the running totals by training steps
        // only (with the update), not by a bare gradient computation.
        let accumulate = accumulate_step.map(|k| steps.remove(k));
        // The raw input's dispatch runs in place of the layout change, not
        // beside it.
        let raw = match (raw_buffers, raw_step) {
            (Some((bytes, shifts, luts)), Some(k)) => Some(RawInput {
                bytes,
                shifts,
                luts,
                step: steps.remove(k),
                replaces: input_step,
            }),
            _ => None,
        };
        anyhow::ensure!(
            raw.as_ref().is_none_or(|r| r.replaces < steps.len()),
            "the raw input replaces a dispatch past the recorded ones"
        );
        // The update has its own parameter block: the learning rate changes.
        let sgd = Kernel::Op("sgd");
        let mut update = vec![Step {
            kernel: sgd,
            pipeline: gpu.pipelines.get(&gpu.device, sgd),
            bind: bind_group(
                gpu,
                sgd_params.as_entire_binding(),
                &[Some(p.grads.clone()), Some(p.flags.clone()), None],
                &[Some(p.values.clone()), Some(p.velocity.clone())],
            ),
            groups: grid_1d(p.len, THREADS),
        }];
        update.extend(accumulate);
        Ok(Plan {
            batch,
            mode,
            images,
            labels,
            stats,
            acts,
            classes,
            sgd_params,
            steps,
            update,
            raw,
            _uniforms: uniforms,
        })
    }
}

/// Bias gradient: column sums of `dy` (`[r, c]`) into the flat gradients.
fn bias_grad(
    rec: &mut Recorder,
    dy: &wgpu::Buffer,
    scratch: &wgpu::Buffer,
    grads: &wgpu::Buffer,
    r: usize,
    c: usize,
    off: usize,
) {
    let (rows, chunks) = chunking(r, c);
    let mut words = [0u32; 16];
    words[0] = u(r);
    words[1] = u(c);
    words[2] = u(rows);
    words[3] = u(chunks);
    words[4] = 512;
    words[5] = u(off);
    rec.push(
        Kernel::Norm("partial"),
        &words,
        io(&[dy], &[scratch]),
        [u(c.div_ceil(BN_CHANNELS)), u(chunks), 1],
    );
    rec.push(
        Kernel::Norm("bias_grad"),
        &words,
        io(&[scratch], &[grads]),
        [u(c.div_ceil(64)), 1, 1],
    );
}

#[allow(clippy::too_many_arguments)]
fn bn_words(
    bn: &crate::ir::BatchNorm,
    r: usize,
    rows: usize,
    chunks: usize,
    flags: u32,
    gamma: Option<usize>,
    beta: Option<usize>,
    rmean: Option<usize>,
    rvar: Option<usize>,
) -> [u32; 16] {
    let affine = gamma.is_some() && beta.is_some();
    let mut w = [0u32; 16];
    w[0] = u(r);
    w[1] = u(bn.channels);
    w[2] = u(rows);
    w[3] = u(chunks);
    w[4] = flags | if affine { 4 } else { 0 };
    w[5] = u(gamma.unwrap_or(0));
    w[6] = u(beta.unwrap_or(0));
    w[7] = u(rmean.unwrap_or(0));
    w[8] = u(rvar.unwrap_or(0));
    w[12] = f(bn.eps);
    w[13] = f(bn.momentum);
    w
}

fn pool_words(
    p: &crate::ir::Pool,
    n: usize,
    c: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    flags: u32,
) -> [u32; 20] {
    let mut v = [0u32; 20];
    v[0] = u(n);
    v[1] = u(c);
    v[3] = flags;
    v[4] = u(h);
    v[5] = u(w);
    v[6] = u(oh);
    v[7] = u(ow);
    v[8] = u(p.kernel.0);
    v[9] = u(p.kernel.1);
    v[10] = u(p.stride.0);
    v[11] = u(p.stride.1);
    v[12] = u(p.padding.0);
    v[13] = u(p.padding.1);
    v
}

/// The `Geom` block of `gemm.wgsl` for a convolution (M, N, K filled in by
/// the caller per mode).
fn conv_geom(
    c: &crate::ir::Conv2d,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    woff: Option<usize>,
    boff: Option<usize>,
) -> anyhow::Result<[u32; 24]> {
    let woff = woff.context("missing weight")?;
    let mut g = [0u32; 24];
    g[3] = if boff.is_some() { 1 } else { 0 };
    g[4] = u(h);
    g[5] = u(w);
    g[6] = u(c.in_channels);
    g[7] = u(c.out_channels);
    g[8] = u(oh);
    g[9] = u(ow);
    g[10] = u(c.kernel.0);
    g[11] = u(c.kernel.1);
    g[12] = u(c.stride.0);
    g[13] = u(c.stride.1);
    g[14] = u(c.padding.0);
    g[15] = u(c.padding.1);
    g[16] = u(c.in_channels / c.groups);
    g[17] = u(c.out_channels / c.groups);
    g[18] = u(woff);
    g[19] = u(boff.unwrap_or(0));
    g[20] = 1;
    g[21] = 0;
    Ok(g)
}

/// The `Geom` block of `gemm.wgsl` for a linear layer in `mode`.
fn linear_geom(
    l: &crate::ir::Linear,
    b: usize,
    mode: GemmMode,
    woff: Option<usize>,
    boff: Option<usize>,
) -> [u32; 24] {
    let (i, o) = (l.in_features, l.out_features);
    let (m, n, k) = match mode {
        GemmMode::LinearForward => (b, o, i),
        GemmMode::LinearInputGrad => (b, i, o),
        _ => (o, i, b),
    };
    let mut g = [0u32; 24];
    g[0] = u(m);
    g[1] = u(n);
    g[2] = u(k);
    g[3] = if boff.is_some() { 1 } else { 0 };
    // Store strides: forward writes [B, O] (co = O), input grad [B, I] (ci = I).
    g[6] = u(i);
    g[7] = u(o);
    g[10] = 1;
    g[11] = 1;
    g[16] = u(i);
    g[17] = u(o);
    g[18] = u(woff.unwrap_or(0));
    g[19] = u(boff.unwrap_or(0));
    g[20] = 1;
    g[21] = 0;
    g
}

/// The `flags` of `relu_fwd`/`relu_bwd` (shaders/ops.wgsl) for an
/// activation: 2 clips at 6 (ReLU6), 8 is the binary Sign.
fn act_flags(op: &Op) -> u32 {
    match op {
        Op::Relu6 => 2,
        Op::Sign => 8,
        _ => 0,
    }
}
