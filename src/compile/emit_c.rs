//! C99 code generation: the weights as `const` arrays, one static arena
//! laid out by the memory plan, and `cardc_infer` as a straight line of
//! kernel calls (kernels in `targets/common/cardc_kernels.c`). Weights are
//! written in the orders the kernels read ([`layout`]): dense blocks of
//! `DENSE_J` output channels, sparse (f32 or int8) values with scratch offsets, binary
//! sign/mask words or, for sparse binary layers, offset lists.
//!
//! Entry point: `int cardc_infer(const uint8_t *image, float *logits)`.
//! `image` is the raw CHW bytes the datasets store; the card's
//! normalization is baked in as a 256-entry table per channel holding
//! exactly the reference's f32 values, so the harness needs no
//! preprocessing. Returns 0.

use super::layout;
use super::lower::{Act, Geom, MatLayer, Program, Step};
use super::pack::Packed;
use super::plan::Plan;
use super::target::Target;
use std::fmt::Write;

/// Generated sources: `model.h`, `model.c`, `Makefile`.
pub struct Sources {
    pub header: String,
    pub model_c: String,
    pub makefile: String,
}

/// Appends `const TYPE NAME[] = {...};` with `fmt` per element.
fn array<T>(out: &mut String, ty: &str, name: &str, v: &[T], fmt: impl Fn(&T) -> String) {
    let _ = writeln!(out, "static const {ty} {name}[{}] = {{", v.len().max(1));
    if v.is_empty() {
        out.push_str("  0\n");
    }
    for chunk in v.chunks(8) {
        out.push_str("  ");
        for x in chunk {
            out.push_str(&fmt(x));
            out.push_str(", ");
        }
        out.push('\n');
    }
    out.push_str("};\n");
}

/// A C literal that parses back to exactly `x` (finite values only).
fn float_lit(x: &f32) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'i', 'N']) {
        format!("{s}f")
    } else {
        format!("{s}.0f")
    }
}

fn act_name(a: Act) -> &'static str {
    match a {
        Act::None => "CARDC_ACT_NONE",
        Act::Relu => "CARDC_ACT_RELU",
        Act::Relu6 => "CARDC_ACT_RELU6",
        Act::Sign => "CARDC_ACT_SIGN",
    }
}

/// The rows of a sparse layer with no weights.
fn no_rows<T>(g: &Geom) -> layout::SparseRows<T> {
    layout::SparseRows {
        nnz: vec![0; g.oc],
        values: vec![],
        offsets: vec![],
    }
}

/// Emits what the sparse kernels (f32 and int8 values) share: the
/// per-channel counts and the scratch offsets, 16-bit where they fit.
fn sparse_index<T>(
    out: &mut String,
    fields: &mut Vec<String>,
    p: &str,
    g: &Geom,
    rows: &layout::SparseRows<T>,
) {
    array(out, "uint32_t", &format!("{p}_nnz"), &rows.nnz, |n| {
        format!("{n}u")
    });
    fields.push(format!(".sp_nnz = {p}_nnz"));
    if layout::sparse_offsets_fit_u16(g) {
        array(out, "uint16_t", &format!("{p}_off"), &rows.offsets, |n| {
            format!("{n}")
        });
        fields.push(format!(".off16 = {p}_off"));
    } else {
        array(out, "uint32_t", &format!("{p}_off"), &rows.offsets, |n| {
            format!("{n}u")
        });
        fields.push(format!(".off32 = {p}_off"));
    }
}

/// Emits a matrix layer's arrays (in the orders of [`layout`]) and its
/// `cardc_layer`.
/// Where a matrix layer's operands live and what its epilogue applies
/// (from [`layout::Buffers`]).
struct LayerIo {
    /// The input is already this layer's padded input (handed off or read
    /// in place).
    in_padded: bool,
    /// The input is a bordered value, copied into scratch.
    from: Option<layout::Bordered>,
    /// The output is written zero-bordered (handed off to the next layer,
    /// or a bordered value).
    to: Option<layout::Bordered>,
    /// The hand-off out of / into this layer carries sign bits
    /// ([`layout::Buffers::handoff_bits`]).
    out_bits: bool,
    in_rows: bool,
    /// The activation: the layer's, or a fused residual Add's.
    act: Act,
}

fn emit_layer(out: &mut String, id: usize, l: &MatLayer, io: &LayerIo) {
    let LayerIo {
        in_padded,
        from,
        to,
        out_bits,
        in_rows,
        act,
    } = *io;
    let p = format!("L{id}");
    let g = &l.geom;
    let pad = layout::Padded::of(g);
    let _ = writeln!(
        out,
        "/* {} ({}): {} */",
        l.name,
        l.op,
        l.packed.packed.format().name()
    );
    array(out, "float", &format!("{p}_bias"), &l.bias, float_lit);
    let mut fields = Vec::new();
    if let Some(m) = &l.packed.mult {
        array(out, "float", &format!("{p}_mult"), m, float_lit);
        fields.push(format!(".mult = {p}_mult"));
    }
    let dense_offsets = |out: &mut String, fields: &mut Vec<String>| {
        array(
            out,
            "int32_t",
            &format!("{p}_koff"),
            &layout::dense_offsets(g),
            |o| format!("{o}"),
        );
        fields.push(format!(".koff = {p}_koff"));
    };
    let position_offsets = |out: &mut String, fields: &mut Vec<String>| {
        array(
            out,
            "int32_t",
            &format!("{p}_poff"),
            &layout::position_offsets(g),
            |o| format!("{o}"),
        );
        fields.push(format!(".poff = {p}_poff"));
    };
    let format = match &l.packed.packed {
        Packed::F32(w) => {
            dense_offsets(out, &mut fields);
            let b = layout::dense_blocks(w, g, 0.0);
            array(out, "float", &format!("{p}_w"), &b, float_lit);
            fields.push(format!(".w_f32 = {p}_w"));
            "CARDC_F32"
        }
        Packed::F16(w) => {
            dense_offsets(out, &mut fields);
            let b = layout::dense_blocks(w, g, 0);
            array(out, "uint16_t", &format!("{p}_w"), &b, |h| format!("{h}"));
            fields.push(format!(".w_f16 = {p}_w"));
            "CARDC_F16"
        }
        Packed::Int8(w) => {
            dense_offsets(out, &mut fields);
            let b = layout::dense_blocks(w, g, 0);
            array(out, "int8_t", &format!("{p}_w"), &b, |q| format!("{q}"));
            fields.push(format!(".w_i8 = {p}_w"));
            "CARDC_I8"
        }
        packed @ Packed::Sparse { .. } => {
            let rows = layout::sparse_rows(packed, g).unwrap_or_else(|| no_rows(g));
            array(out, "float", &format!("{p}_val"), &rows.values, float_lit);
            fields.push(format!(".sp_val = {p}_val"));
            sparse_index(out, &mut fields, &p, g, &rows);
            "CARDC_SPARSE"
        }
        packed @ Packed::Sparse8 { .. } => {
            let rows = layout::sparse8_rows(packed, g).unwrap_or_else(|| no_rows(g));
            array(out, "int8_t", &format!("{p}_val"), &rows.values, |q| {
                format!("{q}")
            });
            fields.push(format!(".sp_val8 = {p}_val"));
            sparse_index(out, &mut fields, &p, g, &rows);
            "CARDC_SPARSE8"
        }
        packed @ Packed::Binary { .. } if layout::binary_as_lists(packed, g) => {
            let lists = layout::binary_lists(packed, g).unwrap_or(layout::BinaryLists {
                npos: vec![0; g.oc],
                nneg: vec![0; g.oc],
                offsets: vec![],
            });
            let u = |n: &u32| format!("{n}u");
            array(out, "uint32_t", &format!("{p}_npos"), &lists.npos, u);
            array(out, "uint32_t", &format!("{p}_nneg"), &lists.nneg, u);
            fields.push(format!(".bin_npos = {p}_npos, .bin_nneg = {p}_nneg"));
            if layout::sparse_offsets_fit_u16(g) {
                array(out, "uint16_t", &format!("{p}_off"), &lists.offsets, |n| {
                    format!("{n}")
                });
                fields.push(format!(".off16 = {p}_off"));
            } else {
                array(out, "uint32_t", &format!("{p}_off"), &lists.offsets, u);
                fields.push(format!(".off32 = {p}_off"));
            }
            "CARDC_BINARY_LISTS"
        }
        Packed::Rice(stream) => {
            let hex = |w: &u32| format!("0x{w:08x}u");
            // One word of padding: the decoder reads 32-bit windows.
            let words: Vec<u32> = stream.words.iter().copied().chain([0]).collect();
            array(out, "uint32_t", &format!("{p}_rice"), &words, hex);
            position_offsets(out, &mut fields);
            fields.push(format!(
                ".rice = {p}_rice, .rice_k = {}, .rice_counts = rice_counts, .rice_off = rice_off",
                stream.k
            ));
            "CARDC_BINARY_RICE"
        }
        Packed::Xnor(x) => {
            let hex = |w: &u32| format!("0x{w:08x}u");
            array(out, "uint32_t", &format!("{p}_sign"), &x.signs, hex);
            fields.push(format!(
                ".xn_sign = {p}_sign, .xn_chunks = {}, .xn_tail = {}, .xn_bits = xnor_bits",
                x.chunks, x.tail
            ));
            if let Some(m) = &x.mask {
                array(out, "uint32_t", &format!("{p}_mask"), m, hex);
                fields.push(format!(".xn_mask = {p}_mask"));
            }
            let int = |v: &i16| format!("{v}");
            let mult = l.packed.mult.as_deref().unwrap_or(&[]);
            let corr = super::xnor::corrections(x, g);
            let sign = l.act == Act::Sign;
            let table = super::xnor::block_table(x, g, corr.as_ref(), sign, mult, &l.bias);
            array(out, "int16_t", &format!("{p}_kt"), &table, int);
            fields.push(format!(".xn_kt = {p}_kt"));
            if let Some(c) = corr {
                let byte = |v: &u8| format!("{v}");
                array(out, "uint8_t", &format!("{p}_rowc"), &c.row_class, byte);
                array(
                    out,
                    "uint8_t",
                    &format!("{p}_blockc"),
                    &c.block_pattern,
                    byte,
                );
                fields.push(format!(
                    ".xn_rowc = {p}_rowc, .xn_blockc = {p}_blockc, .xn_colpatterns = {}",
                    c.col_patterns.len()
                ));
            }
            position_offsets(out, &mut fields);
            "CARDC_XNOR"
        }
        Packed::Binary { words, signs, mask } => {
            let hex = |w: &u32| format!("0x{w:08x}u");
            array(out, "uint32_t", &format!("{p}_sign"), signs, hex);
            fields.push(format!(".bin_sign = {p}_sign, .bin_words = {words}"));
            if let Some(m) = mask {
                array(out, "uint32_t", &format!("{p}_mask"), m, hex);
                fields.push(format!(".bin_mask = {p}_mask"));
            }
            position_offsets(out, &mut fields);
            "CARDC_BINARY"
        }
    };
    // Output layout: plain [oc][oh][ow], or zero-bordered.
    match to {
        Some(b) => fields.push(b.output_fields()),
        None => fields.push(format!(".out_plane = {}, .out_row = {}", g.oh * g.ow, g.ow)),
    }
    if in_padded {
        fields.push(".in_padded = 1".into());
    } else if let Some(b) = from {
        fields.push(b.source_fields());
    }
    if out_bits {
        fields.push(".xn_out_bits = 1".into());
    }
    if in_rows {
        fields.push(".xn_in_rows = 1".into());
    }
    let _ = writeln!(
        out,
        "static const cardc_layer {p} = {{\n  .ih = {}, .iw = {}, .ic = {}, .oh = {}, .ow = {}, .oc = {},\n  \
         .kh = {}, .kw = {}, .sh = {}, .sw = {}, .ph = {}, .pw = {}, .act = {}, .format = {format},\n  \
         .hp = {}, .wq = {}, .bias = {p}_bias,\n  {}\n}};\n",
        g.ih,
        g.iw,
        g.ic,
        g.oh,
        g.ow,
        g.oc,
        g.kh,
        g.kw,
        g.sh,
        g.sw,
        g.ph,
        g.pw,
        act_name(act),
        pad.hp,
        pad.wq,
        fields.join(",\n  ")
    );
}

/// How one network's translation unit names its entry point and buffers.
pub struct Unit<'a> {
    /// The entry point: `cardc_infer` for a card, `cardc_member_N` for a
    /// deck's member.
    pub function: &'a str,
    /// Whether the unit defines its own static arena and scratch buffers (a
    /// card) or uses the deck's shared ones ([`SHARED_BUFFERS`]): members
    /// run one after another, so one arena sized for the largest serves all.
    pub own_buffers: bool,
}

/// The names of a deck's shared arena and scratch buffers.
pub const SHARED_BUFFERS: [&str; 3] = [
    "cardc_deck_arena",
    "cardc_deck_scratch_a",
    "cardc_deck_scratch_b",
];

/// Generates the sources of `program` laid out by `plan` for `target`.
pub fn emit(program: &Program, plan: &Plan, target: &Target, bufs: &layout::Buffers) -> Sources {
    let unit = Unit {
        function: "cardc_infer",
        own_buffers: true,
    };
    Sources {
        header: model_header(program),
        model_c: emit_unit(program, plan, bufs, &unit),
        makefile: makefile(target, &[]),
    }
}

/// `model.h` of a card's artifact.
fn model_header(program: &Program) -> String {
    let [c, h, w] = program.input;
    format!(
        "/* Generated by cardc from '{name}'. */\n#ifndef CARDC_MODEL_H\n#define CARDC_MODEL_H\n\n\
         #include <stdint.h>\n\n\
         /* Raw image bytes: {c} channels x {h} x {w}, CHW, uint8. */\n\
         #define CARDC_INPUT_BYTES {bytes}\n#define CARDC_CLASSES {k}\n\n\
         /* Classifies one image: writes CARDC_CLASSES logits, returns 0.\n   \
         Not reentrant (one static arena). */\n\
         int cardc_infer(const uint8_t *image, float *logits);\n\n#endif\n",
        name = program.name.replace("*/", "* /"),
        bytes = c * h * w,
        k = program.classes,
    )
}

/// The C translation unit of `program`: weights, buffers and the entry
/// point named by `unit`.
pub fn emit_unit(program: &Program, plan: &Plan, bufs: &layout::Buffers, unit: &Unit) -> String {
    let [c, h, w] = program.input;
    let [arena, scratch_a, scratch_b] = if unit.own_buffers {
        ["arena", "scratch_a", "scratch_b"]
    } else {
        SHARED_BUFFERS
    };
    let mut m = String::new();
    let _ = writeln!(
        m,
        "/* Generated by cardc: weights, memory plan and schedule of '{}'. */\n\
         #include <string.h>\n#include \"model.h\"\n#include \"cardc_kernels.h\"\n",
        program.name.replace("*/", "* /")
    );
    let (rice_counts, rice_off) = layout::rice_buffers(program);
    if rice_counts > 0 {
        let _ = writeln!(
            m,
            "/* Rice-coded layers decode into these on each call (the largest layer's size). */\n\
             static uint32_t rice_counts[{rice_counts}];\nstatic uint32_t rice_off[{}];\n",
            rice_off.max(1)
        );
    }
    let xnor_words = layout::xnor_buffer_words(program);
    if xnor_words > 0 {
        let _ = writeln!(
            m,
            "/* xnor layers pack their input signs and patches here (the largest layer's size). */\n\
             static uint32_t xnor_bits[{xnor_words}];\n"
        );
    }
    let lut: Vec<f32> = program.lut.iter().flatten().copied().collect();
    array(&mut m, "float", "norm_lut", &lut, float_lit);
    let mut calls = Vec::new();
    let at = |v: usize| format!("{arena} + {}", plan.offsets[v] / 4);
    for (i, step) in program.steps.iter().enumerate() {
        let call = match step {
            Step::Normalize { out } => format!(
                "cardc_normalize(image, norm_lut, {c}, {}, {});",
                h * w,
                at(*out)
            ),
            Step::Mat { layer, input, out } => {
                let names = [arena, scratch_a, scratch_b];
                let in_buf = bufs.input[i].unwrap_or(0);
                let handed = i > 0 && bufs.handoff[i - 1].is_some();
                let stored = bufs.bordered[*input];
                let in_place = stored.is_some_and(|b| b.serves(&layer.geom));
                let next = match (bufs.handoff[i], program.steps.get(i + 1)) {
                    (Some(_), Some(Step::Mat { layer: n, .. })) => {
                        Some(layout::Bordered::read_by(&n.geom))
                    }
                    _ => None,
                };
                // A fused residual Add: the sum is the output.
                let fused = match (bufs.residual[i], program.steps.get(i + 1)) {
                    (Some(r), Some(Step::Add { out, act, .. })) => Some((r, *out, *act)),
                    _ => None,
                };
                let out = fused.map_or(*out, |(_, o, _)| o);
                emit_layer(
                    &mut m,
                    i,
                    layer,
                    &LayerIo {
                        in_padded: handed || in_place,
                        from: stored.filter(|_| !in_place),
                        to: next.or(bufs.bordered[out]),
                        out_bits: bufs.handoff_bits[i],
                        in_rows: i > 0 && bufs.handoff_bits[i - 1],
                        act: fused.map_or(layer.act, |(_, _, act)| act),
                    },
                );
                let src = if handed {
                    bufs.padded_input(i, in_buf, &names)
                } else {
                    at(*input)
                };
                let dst = match (bufs.handoff[i], next) {
                    (Some(b), Some(_)) => bufs.padded_input(i + 1, b, &names),
                    _ => at(out),
                };
                let scratch = bufs.padded_input(i, in_buf, &names);
                match fused {
                    Some((r, _, _)) => format!(
                        "cardc_mat_residual(&L{i}, {src}, {}, {dst}, {scratch}); /* {} + residual */",
                        at(r),
                        layer.name
                    ),
                    None => format!(
                        "cardc_mat(&L{i}, {src}, {dst}, {scratch}); /* {} */",
                        layer.name
                    ),
                }
            }
            Step::Add { name, .. } if i > 0 && bufs.residual[i - 1].is_some() => {
                format!("/* {name}: in the layer before */")
            }
            Step::Add {
                name,
                a,
                b,
                out,
                act,
            } => format!(
                "cardc_add({}, {}, {}, {}, {}); /* {name} */",
                at(*a),
                at(*b),
                at(*out),
                // Bordered operands: whole planes (zero borders stay zero).
                bufs.bordered[*out].map_or(program.values[*out], |b| b.c * b.plane()),
                act_name(*act)
            ),
            Step::Affine {
                name,
                input,
                out,
                scale,
                shift,
                act,
            } => {
                array(&mut m, "float", &format!("A{i}_scale"), scale, float_lit);
                array(&mut m, "float", &format!("A{i}_shift"), shift, float_lit);
                format!(
                    "cardc_affine({}, {}, A{i}_scale, A{i}_shift, {}, {}, {}); /* {name} */",
                    at(*input),
                    at(*out),
                    program.values[*out] / scale.len().max(1),
                    scale.len(),
                    act_name(*act)
                )
            }
            Step::Activation {
                name,
                input,
                out,
                act,
            } => format!(
                "cardc_activation({}, {}, {}, {}); /* {name} */",
                at(*input),
                at(*out),
                program.values[*out],
                act_name(*act)
            ),
            Step::MaxPool {
                name,
                input,
                out,
                geom: g,
            }
            | Step::AvgPool {
                name,
                input,
                out,
                geom: g,
            } => format!(
                "cardc_{}({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}); /* {name} */",
                if matches!(step, Step::MaxPool { .. }) {
                    "maxpool"
                } else {
                    "avgpool"
                },
                at(*input),
                at(*out),
                g.ih,
                g.iw,
                g.c,
                g.oh,
                g.ow,
                g.kh,
                g.kw,
                g.sh,
                g.sw,
                g.ph,
                g.pw
            ),
            Step::GlobalAvgPool {
                name,
                input,
                out,
                pixels,
                c,
            } => format!(
                "cardc_global_avgpool({}, {}, {}, {pixels}, {c}); /* {name} */",
                at(*input),
                at(*out),
                bufs.bordered[*input].map_or(*pixels, |b| b.plane())
            ),
        };
        calls.push(call);
    }
    let _ = writeln!(
        m,
        "\n/* Memory plan: {} arena bytes (lower bound {}). */",
        plan.arena_bytes, plan.lower_bound_bytes
    );
    if unit.own_buffers {
        let _ = writeln!(m, "static float arena[{}];", (plan.arena_bytes / 4).max(1));
        // Padded layer inputs outside the arena; none when they are planned
        // into it (an unused static array would only draw a warning).
        for (name, floats) in [("scratch_a", bufs.floats[0]), ("scratch_b", bufs.floats[1])] {
            if floats > 0 {
                let _ = writeln!(
                    m,
                    "/* Padded layer inputs (see cardc_kernels.h). */\nstatic float {name}[{floats}];"
                );
            }
        }
        m.push('\n');
    } else {
        let _ = writeln!(
            m,
            "/* The deck's shared buffers (at least {} / {} / {} floats). */\n\
             extern float {arena}[], {scratch_a}[], {scratch_b}[];\n\
             int {}(const uint8_t *image, float *logits);\n",
            (plan.arena_bytes / 4).max(1),
            bufs.floats[0].max(1),
            bufs.floats[1].max(1),
            unit.function
        );
    }
    let _ = writeln!(
        m,
        "int {}(const uint8_t *image, float *logits) {{",
        unit.function
    );
    for c in &calls {
        let _ = writeln!(m, "  {c}");
    }
    let _ = writeln!(
        m,
        "  memcpy(logits, {}, sizeof(float) * CARDC_CLASSES);\n  return 0;\n}}",
        at(program.output)
    );
    m
}

/// The C sources of an artifact, in link order.
pub const C_SOURCES: &[&str] = &["main.c", "model.c", "cardc_kernels.c"];

/// Every C file of an artifact: the common ones, the target's own (startup
/// code), then `extra` (a deck's members and gate).
pub fn all_sources(target: &Target, extra: &[String]) -> Vec<String> {
    C_SOURCES
        .iter()
        .map(|s| s.to_string())
        .chain(target.sources.iter().cloned())
        .chain(extra.iter().cloned())
        .collect()
}

/// The build command of the artifact `model` for `target` from `inputs`
/// (its [`all_sources`], or objects in their place), with extra flags.
pub fn build_command(target: &Target, inputs: &[String], extra_cflags: &[String]) -> Vec<String> {
    let mut v = vec![target.cc.clone()];
    v.extend(target.cflags.iter().cloned());
    v.extend(extra_cflags.iter().cloned());
    v.push("-o".into());
    v.push("model".into());
    v.extend(inputs.iter().cloned());
    v.extend(target.ldflags.iter().cloned());
    v
}

/// `w` as one word of a Makefile recipe line: single-quoted for the shell
/// when it holds anything but plain characters, `$` doubled for make.
fn make_shell_word(w: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=,:+".contains(c);
    let word = if !w.is_empty() && w.chars().all(plain) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    };
    word.replace('$', "$$")
}

/// The artifact's Makefile: builds `model` from the common sources plus
/// `extra`.
pub fn makefile(t: &Target, extra: &[String]) -> String {
    let run = if t.runner.is_empty() {
        "./model".to_string()
    } else {
        let words: Vec<String> = t.runner.iter().map(|w| make_shell_word(w)).collect();
        format!("{} ./model", words.join(" "))
    };
    format!(
        "# Generated by cardc for target '{name}'. `make` builds ./model;\n\
         # `make run INPUT=images.bin` prints one line of logits per image.\n\
         CC = {cc}\nCFLAGS = {cflags}\nLDLIBS = {ld}\n\n\
         model: {srcs} model.h cardc_kernels.h\n\t$(CC) $(CFLAGS) -o model {srcs} $(LDLIBS)\n\n\
         run: model\n\t{run} $(INPUT)\n\nclean:\n\trm -f model\n\n.PHONY: run clean\n",
        name = t.name,
        cc = t.cc,
        cflags = t.cflags.join(" "),
        ld = t.ldflags.join(" "),
        srcs = all_sources(t, extra).join(" "),
    )
}
