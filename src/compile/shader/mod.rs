//! Shader targets (`wgsl`, `spirv`, `msl`, `glsl`): a card compiled to GPU
//! inference kernels instead of C.
//!
//! The kernels (`shaders/infer.wgsl`) are the same for every model; a
//! model is its lowered program ([`super::lower`]) written as data:
//! * `weights.bin`: the packed weights, biases, multipliers and the
//!   normalization table as little-endian 32-bit words ([`Blob`]);
//! * `schedule.json`: one dispatch per step, each with the entry point, its
//!   element count and its parameter block ([`Schedule`]);
//! * the kernels in the target's language ([`translate`]): `model.wgsl`
//!   always, plus `model.spv`, `model.metal` or `model.<entry>.comp`.
//!
//! Activations live in one arena per image laid out by the same static
//! memory planner as the C targets ([`super::plan`]). `cardc run` executes
//! the wgsl, spirv and glsl artifacts through wgpu ([`run`]).

pub mod run;
pub mod translate;

use super::lower::{Act, Program, Step};
use super::pack::{Format, Increments, Packed};
use super::{FormatChoice, LayerReport, Options, Report, plan, target::Target};
use crate::card::Card;
use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The inference kernels, in WGSL.
pub const SOURCE: &str = include_str!("../../../shaders/infer.wgsl");

/// Threads per workgroup of every entry point.
pub const WORKGROUP: u32 = 64;

/// Bytes between consecutive parameter blocks in the uniform buffer (the
/// largest `minUniformBufferOffsetAlignment` APIs ask for).
pub const PARAM_STRIDE: u32 = 256;

/// "No such array" in a parameter block (no mask, multiplier of 1).
pub const NONE: u32 = u32::MAX;

/// File names in the artifact.
pub const SCHEDULE_FILE: &str = "schedule.json";
pub const WEIGHTS_FILE: &str = "weights.bin";
pub const WGSL_FILE: &str = "model.wgsl";

/// The entry points of `infer.wgsl`.
pub const ENTRY_POINTS: [&str; 13] = [
    "normalize_image",
    "matrix_f32",
    "matrix_f16",
    "matrix_int8",
    "matrix_sparse",
    "matrix_sparse8",
    "matrix_binary",
    "add_tensors",
    "affine_channels",
    "activation_only",
    "max_pool",
    "avg_pool",
    "global_avg_pool",
];

/// The fields of `struct Params` in `infer.wgsl`, in order (32 words; the
/// suite's `shader::parameter_block_and_entry_points_match_the_shader`
/// checks them against the shader).
pub const PARAM_FIELDS: [&str; 32] = [
    "n",
    "in_off",
    "in2_off",
    "out_off",
    "stride",
    "img_words",
    "c",
    "ih",
    "iw",
    "oc",
    "oh",
    "ow",
    "kh",
    "kw",
    "sh",
    "sw",
    "ph",
    "pw",
    "act",
    "format",
    "w_off",
    "vals_off",
    "rows_off",
    "mask_off",
    "mult_off",
    "bias_off",
    "words",
    "inc16",
    "pad0",
    "pad1",
    "pad2",
    "pad3",
];

/// One dispatch's parameter block (`struct Params` of the shader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    pub n: u32,
    pub in_off: u32,
    pub in2_off: u32,
    pub out_off: u32,
    pub stride: u32,
    pub img_words: u32,
    pub c: u32,
    pub ih: u32,
    pub iw: u32,
    pub oc: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub sh: u32,
    pub sw: u32,
    pub ph: u32,
    pub pw: u32,
    pub act: u32,
    pub format: u32,
    pub w_off: u32,
    pub vals_off: u32,
    pub rows_off: u32,
    pub mask_off: u32,
    pub mult_off: u32,
    pub bias_off: u32,
    pub words: u32,
    pub inc16: u32,
}

impl Params {
    /// The block as the shader reads it, in [`PARAM_FIELDS`] order.
    pub fn words(&self) -> [u32; 32] {
        [
            self.n,
            self.in_off,
            self.in2_off,
            self.out_off,
            self.stride,
            self.img_words,
            self.c,
            self.ih,
            self.iw,
            self.oc,
            self.oh,
            self.ow,
            self.kh,
            self.kw,
            self.sh,
            self.sw,
            self.ph,
            self.pw,
            self.act,
            self.format,
            self.w_off,
            self.vals_off,
            self.rows_off,
            self.mask_off,
            self.mult_off,
            self.bias_off,
            self.words,
            self.inc16,
            0,
            0,
            0,
            0,
        ]
    }
}

/// The weight format's code (`FMT_*` in the shader) and its entry point.
fn format_kernel(p: &Packed) -> Option<(u32, &'static str)> {
    Some(match p {
        Packed::F32(_) => (0, "matrix_f32"),
        Packed::F16(_) => (1, "matrix_f16"),
        Packed::Int8(_) => (2, "matrix_int8"),
        Packed::Sparse { .. } => (3, "matrix_sparse"),
        Packed::Binary { .. } => (4, "matrix_binary"),
        Packed::Sparse8 { .. } => (5, "matrix_sparse8"),
        Packed::Rice(_) | Packed::Xnor(_) => return None,
    })
}

/// One kernel launch of the schedule.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dispatch {
    /// The program step (layer name, or `normalize`).
    pub step: String,
    /// Entry point in `model.wgsl` (see `Schedule::entry_points` for
    /// translated names).
    pub entry: String,
    /// Output elements per image: `ceil(elements / 64)` workgroups, split
    /// into x ≤ 65535 and y when larger; z = images.
    pub elements: u32,
    /// The parameter block, [`PARAM_FIELDS`] order.
    pub params: Vec<u32>,
}

/// `schedule.json`: everything a host program needs to run the kernels.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Schedule {
    pub model: String,
    /// `wgsl`, `spirv`, `msl` or `glsl`.
    pub language: String,
    /// The shader file (glsl: `model.{entry}.comp` per entry point).
    pub shader: String,
    /// WGSL entry point → its name in the shader file.
    pub entry_points: std::collections::BTreeMap<String, String>,
    pub workgroup_size: u32,
    /// Bytes between parameter blocks in the uniform buffer (binding 0).
    pub param_stride_bytes: u32,
    /// Arena floats per image (binding 1 holds `images × arena_floats`).
    pub arena_floats: u32,
    /// Raw input bytes per image (uint8 CHW) and the u32 words each image
    /// takes in binding 3.
    pub image_bytes: u32,
    pub image_words: u32,
    /// Where the logits of an image start in its arena, and how many.
    pub logits_offset: u32,
    pub classes: u32,
    /// Words of `weights.bin` (binding 2).
    pub weight_words: u32,
    pub dispatches: Vec<Dispatch>,
}

/// The weight blob being laid out: every array starts on a word.
#[derive(Default)]
pub struct Blob {
    pub words: Vec<u32>,
}

impl Blob {
    fn at(&self) -> anyhow::Result<u32> {
        u32::try_from(self.words.len()).context("the weights exceed 2^32 words")
    }

    fn f32s(&mut self, v: &[f32]) -> anyhow::Result<u32> {
        let at = self.at()?;
        self.words.extend(v.iter().map(|x| x.to_bits()));
        Ok(at)
    }

    fn u32s(&mut self, v: &[u32]) -> anyhow::Result<u32> {
        let at = self.at()?;
        self.words.extend_from_slice(v);
        Ok(at)
    }

    /// Two per word, the first in the low half.
    fn u16s(&mut self, v: &[u16]) -> anyhow::Result<u32> {
        let at = self.at()?;
        self.words.extend(
            v.chunks(2)
                .map(|p| p[0] as u32 | (p.get(1).copied().unwrap_or(0) as u32) << 16),
        );
        Ok(at)
    }

    /// Four per word, the first in the low byte.
    fn i8s(&mut self, v: &[i8]) -> anyhow::Result<u32> {
        let at = self.at()?;
        self.words.extend(v.chunks(4).map(|q| {
            q.iter()
                .enumerate()
                .fold(0u32, |w, (i, &b)| w | ((b as u8 as u32) << (8 * i)))
        }));
        Ok(at)
    }

    /// Little-endian bytes, as `weights.bin` stores them.
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
}

fn act_code(a: Act) -> u32 {
    a as u32
}

/// A u32 for a parameter block (every size fits, or the model is far too
/// large for a GPU binding anyway).
fn word(v: usize, what: &str) -> anyhow::Result<u32> {
    u32::try_from(v).with_context(|| format!("{what} ({v}) exceeds 32 bits"))
}

/// `p` with a windowed step's geometry: `[c, ih, iw, oc, oh, ow, kh, kw,
/// sh, sw, ph, pw]` (input, output, kernel, stride, padding).
fn with_window(p: Params, dims: [usize; 12]) -> anyhow::Result<Params> {
    let d = |i: usize| word(dims[i], "layer geometry");
    Ok(Params {
        c: d(0)?,
        ih: d(1)?,
        iw: d(2)?,
        oc: d(3)?,
        oh: d(4)?,
        ow: d(5)?,
        kh: d(6)?,
        kw: d(7)?,
        sh: d(8)?,
        sw: d(9)?,
        ph: d(10)?,
        pw: d(11)?,
        ..p
    })
}

/// Lays out what the sparse kernels (f32 and int8 values) share: the row
/// starts (`oc + 1` prefix sums of the counts) and the increments.
fn sparse_index(
    blob: &mut Blob,
    p: &mut Params,
    nnz: &[u32],
    increments: &Increments,
) -> anyhow::Result<()> {
    let mut rows = Vec::with_capacity(nnz.len() + 1);
    rows.push(0u32);
    for &k in nnz {
        let last = rows.last().copied().unwrap_or(0);
        rows.push(last + k);
    }
    p.rows_off = blob.u32s(&rows)?;
    p.w_off = match increments {
        Increments::U16(v) => {
            p.inc16 = 1;
            blob.u16s(v)?
        }
        Increments::U32(v) => blob.u32s(v)?,
    };
    Ok(())
}

/// The compiled form of a lowered program: its blob, schedule and report.
pub struct Emitted {
    pub blob: Blob,
    pub schedule: Schedule,
    pub report: Report,
}

/// Lays `program` out as a blob and a schedule over the arena `mem`.
fn emit(
    program: &Program,
    mem: &plan::Plan,
    target: &Target,
    format: FormatChoice,
) -> anyhow::Result<Emitted> {
    let mut blob = Blob::default();
    let off = |v: usize| word(mem.offsets[v] / 4, "arena offset");
    let stride = word(mem.arena_bytes / 4, "arena size")?;
    let [c, h, w] = program.input;
    let image_words = word((c * h * w).div_ceil(4), "image size")?;
    let lut: Vec<f32> = program.lut.iter().flatten().copied().collect();
    let lut_off = blob.f32s(&lut)?;
    let base = Params {
        stride,
        img_words: image_words,
        mask_off: NONE,
        mult_off: NONE,
        ..Params::default()
    };
    let mut dispatches = Vec::new();
    let mut layers = Vec::new();
    for step in &program.steps {
        let out = off(step.output())?;
        let n = word(program.values[step.output()], "tensor size")?;
        let (name, entry, p) = match step {
            Step::Normalize { .. } => (
                "normalize".to_string(),
                "normalize_image",
                Params {
                    n,
                    out_off: out,
                    c: c as u32,
                    ih: h as u32,
                    iw: w as u32,
                    w_off: lut_off,
                    ..base
                },
            ),
            Step::Mat { layer, input, .. } => {
                let g = &layer.geom;
                let kernel = format_kernel(&layer.packed.packed).with_context(|| {
                    format!(
                        "layer '{}': the rice format has no GPU kernel; use binary{}",
                        layer.name,
                        if format == FormatChoice::Auto {
                            " (a --max-flash budget asked for Rice coding)"
                        } else {
                            ""
                        }
                    )
                })?;
                let start = blob.words.len();
                let window = [
                    g.ic, g.ih, g.iw, g.oc, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw,
                ];
                let mut p = with_window(
                    Params {
                        n,
                        in_off: off(*input)?,
                        out_off: out,
                        act: act_code(layer.act),
                        format: kernel.0,
                        ..base
                    },
                    window,
                )?;
                match &layer.packed.packed {
                    Packed::F32(v) => p.w_off = blob.f32s(v)?,
                    Packed::F16(v) => p.w_off = blob.u16s(v)?,
                    Packed::Int8(v) => p.w_off = blob.i8s(v)?,
                    Packed::Sparse {
                        nnz,
                        values,
                        increments,
                    } => {
                        sparse_index(&mut blob, &mut p, nnz, increments)?;
                        p.vals_off = blob.f32s(values)?;
                    }
                    Packed::Sparse8 {
                        nnz,
                        values,
                        increments,
                    } => {
                        sparse_index(&mut blob, &mut p, nnz, increments)?;
                        p.vals_off = blob.i8s(values)?;
                    }
                    Packed::Binary { words, signs, mask } => {
                        p.words = word(*words, "binary words")?;
                        p.w_off = blob.u32s(signs)?;
                        if let Some(m) = mask {
                            p.mask_off = blob.u32s(m)?;
                        }
                    }
                    Packed::Rice(_) | Packed::Xnor(_) => unreachable!("refused by format_kernel"),
                }
                let weight_words = blob.words.len() - start;
                if let Some(m) = &layer.packed.mult {
                    p.mult_off = blob.f32s(m)?;
                }
                p.bias_off = blob.f32s(&layer.bias)?;
                let bytes = 4 * (blob.words.len() - start) as u64;
                layers.push(LayerReport::of(layer, bytes, 4 * weight_words as u64));
                (layer.name.clone(), kernel.1, p)
            }
            Step::Add {
                name, a, b, act, ..
            } => (
                name.clone(),
                "add_tensors",
                Params {
                    n,
                    in_off: off(*a)?,
                    in2_off: off(*b)?,
                    out_off: out,
                    act: act_code(*act),
                    ..base
                },
            ),
            Step::Affine {
                name,
                input,
                scale,
                shift,
                act,
                ..
            } => {
                let pixels = program.values[*input] / scale.len().max(1);
                (
                    name.clone(),
                    "affine_channels",
                    Params {
                        n,
                        in_off: off(*input)?,
                        out_off: out,
                        ih: word(pixels, "pixels")?,
                        iw: 1,
                        act: act_code(*act),
                        w_off: blob.f32s(scale)?,
                        bias_off: blob.f32s(shift)?,
                        ..base
                    },
                )
            }
            Step::Activation {
                name, input, act, ..
            } => (
                name.clone(),
                "activation_only",
                Params {
                    n,
                    in_off: off(*input)?,
                    out_off: out,
                    act: act_code(*act),
                    ..base
                },
            ),
            Step::MaxPool {
                name, input, geom, ..
            }
            | Step::AvgPool {
                name, input, geom, ..
            } => (
                name.clone(),
                if matches!(step, Step::MaxPool { .. }) {
                    "max_pool"
                } else {
                    "avg_pool"
                },
                with_window(
                    Params {
                        n,
                        in_off: off(*input)?,
                        out_off: out,
                        ..base
                    },
                    [
                        geom.c, geom.ih, geom.iw, geom.c, geom.oh, geom.ow, geom.kh, geom.kw,
                        geom.sh, geom.sw, geom.ph, geom.pw,
                    ],
                )?,
            ),
            Step::GlobalAvgPool {
                name,
                input,
                pixels,
                c,
                ..
            } => (
                name.clone(),
                "global_avg_pool",
                Params {
                    n,
                    in_off: off(*input)?,
                    out_off: out,
                    c: word(*c, "channels")?,
                    ih: word(*pixels, "pixels")?,
                    iw: 1,
                    ..base
                },
            ),
        };
        dispatches.push(Dispatch {
            step: name,
            entry: entry.to_string(),
            elements: n,
            params: p.words().to_vec(),
        });
    }
    let language = target.shader.clone().unwrap_or_default();
    let flash = 4 * blob.words.len() as u64;
    let schedule = Schedule {
        model: program.name.clone(),
        language: language.clone(),
        shader: translate::shader_file(&language),
        entry_points: ENTRY_POINTS
            .iter()
            .map(|e| (e.to_string(), e.to_string()))
            .collect(),
        workgroup_size: WORKGROUP,
        param_stride_bytes: PARAM_STRIDE,
        arena_floats: stride,
        image_bytes: word(c * h * w, "image size")?,
        image_words,
        logits_offset: off(program.output)?,
        classes: word(program.classes, "classes")?,
        weight_words: word(blob.words.len(), "weights")?,
        dispatches,
    };
    let report = Report {
        model: program.name.clone(),
        target: target.name.clone(),
        flash_bytes: flash,
        arena_bytes: mem.arena_bytes as u64,
        arena_lower_bound_bytes: mem.lower_bound_bytes as u64,
        scratch_bytes: 0,
        ram_bytes: mem.arena_bytes as u64,
        macs: program.macs,
        input_bytes: (c * h * w) as u64,
        classes: program.classes,
        input_format: "uint8 CHW raw image, 4 bytes per u32 word; normalization inside the kernels"
            .into(),
        format: match format {
            FormatChoice::Auto => "auto".into(),
            FormatChoice::Force(f) => f.name().into(),
        },
        layers,
        steps: program.steps.len(),
        sources: Vec::new(),
        deck: None,
    };
    Ok(Emitted {
        blob,
        schedule,
        report,
    })
}

/// The shaders have no XOR/popcount kernel: layers the cost model gave the
/// xnor format run as binary (the same weights, on the ±1 inputs as
/// floats); asking for xnor is an error.
fn binary_for_xnor(program: &mut Program, format: FormatChoice) -> anyhow::Result<()> {
    for layer in program.mat_layers_mut() {
        if layer.packed.packed.format() != Format::Xnor {
            continue;
        }
        if format == FormatChoice::Force(Format::Xnor) {
            bail!(
                "layer '{}': the xnor format has no GPU kernel; use --format binary (or auto) for shader targets",
                layer.name
            );
        }
        layer.packed = layer.pack(Format::Binary)?;
    }
    Ok(())
}

/// Lowers, packs and plans `card` and lays it out for shader target
/// `target` (nothing written).
pub fn plan_card(card: &Card, opts: &Options, target: &Target) -> anyhow::Result<Emitted> {
    let (mut program, _, _) = super::lower_with_formats(card, opts.format, opts.max_flash, true)?;
    binary_for_xnor(&mut program, opts.format)?;
    let (defs, reads) = program.defs_and_reads();
    let sizes: Vec<usize> = program.values.iter().map(|&n| 4 * n).collect();
    let iv = plan::lifetimes(&sizes, &defs, &reads, program.output, program.steps.len());
    let mem = plan::plan(&iv);
    plan::verify(&iv, &mem).map_err(|e| anyhow::anyhow!("memory planner: {e}"))?;
    emit(&program, &mem, target, opts.format)
}

/// Compiles `card` for shader target `target` into `out`: kernels in the
/// target's language (validated), `weights.bin`, `schedule.json`,
/// `report.json` and the card.
pub fn compile(card: &Card, opts: &Options, target: &Target, out: &Path) -> anyhow::Result<Report> {
    let mut e = plan_card(card, opts, target)?;
    if let Some(budget) = opts.max_ram
        && e.report.ram_bytes > budget
    {
        bail!(
            "--max-ram {budget}: the model needs {} bytes of GPU memory per image ({} arena, lower bound {})",
            e.report.ram_bytes,
            e.report.arena_bytes,
            e.report.arena_lower_bound_bytes
        );
    }
    let language = target.shader.as_deref().unwrap_or("wgsl");
    let files = translate::translate(language, &mut e.schedule)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, data: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, data).with_context(|| format!("cannot write {}", p.display()))
    };
    // Files of an earlier compile for another target must not linger.
    super::remove_stale_outputs(out);
    let _ = std::fs::remove_file(out.join(super::deck::DECK_FILE));
    write(WGSL_FILE, SOURCE.as_bytes())?;
    for (name, data) in &files {
        write(name, data)?;
    }
    write(WEIGHTS_FILE, &e.blob.bytes())?;
    write(
        SCHEDULE_FILE,
        serde_json::to_string_pretty(&e.schedule)?.as_bytes(),
    )?;
    write(
        "report.json",
        serde_json::to_string_pretty(&e.report)?.as_bytes(),
    )?;
    let card_path = out.join("model.card");
    card.save(&card_path)
        .with_context(|| format!("cannot write {}", card_path.display()))?;
    Ok(e.report)
}
