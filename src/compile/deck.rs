//! Compiling a CARD-Deck: every member card as its own C translation unit
//! (`member<N>.c`, entry point `cardc_member_<N>`), the spectral gate
//! (`cardc_gate.{c,h}` with the deck's tables) and a `model.c` whose
//! `cardc_infer` gates the image, runs the chosen members one after
//! another and writes the mean of their softmax — the same computation as
//! [`Deck::run_batch`] with one image.
//!
//! Members run one at a time, so they share one arena and one pair of
//! scratch buffers, each sized for the largest member: a deck needs the RAM
//! of its largest card plus the gate's working memory, and the flash of all
//! its cards plus the gate's tables.
//!
//! The artifact gates every image alone: a deck built with `--scope batch`
//! is compiled (and compared by `cardc run`) as its per-input gate.

use super::emit_c::{self, SHARED_BUFFERS, Unit};
use super::gate::{GATE_SOURCES, gate_tables_c};
use super::{Options, Planned, Report, check_ram, plan_card, target, write_artifact};
use crate::deck::{Deck, GateKind};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::Path;

/// File in a deck artifact holding the deck itself.
pub const DECK_FILE: &str = "model.deck";

/// One member in a deck artifact's report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberReport {
    pub name: String,
    /// Its translation unit.
    pub source: String,
    pub flash_bytes: u64,
    pub arena_bytes: u64,
    pub arena_lower_bound_bytes: u64,
    pub scratch_bytes: u64,
    pub macs: u64,
}

/// What a deck artifact's `report.json` adds to a card's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeckReport {
    /// `spectral` or `average`.
    pub gate: String,
    pub metric: String,
    /// Members that answer each image.
    pub k: usize,
    pub members: Vec<MemberReport>,
    /// The gate's constant tables (clean reference, signatures, twiddles).
    pub gate_flash_bytes: u64,
    /// The gate's working memory.
    pub gate_ram_bytes: u64,
}

/// Floats of the C gate's `work` buffer (see `cardc_gate.h`).
fn gate_work_floats(deck: &Deck) -> usize {
    let [c, h, w] = deck.input_shape();
    3 * c * h * w + 2 * h.max(w) + deck.members.len()
}

/// Bytes of the gate's tables in [`gate_tables_c`].
fn gate_table_bytes(deck: &Deck) -> u64 {
    let [c, h, w] = deck.input_shape();
    let n = c * h * w;
    4 * (n * (1 + deck.members.len()) + 2 * h * h + 2 * w * w) as u64
}

/// Compiles `deck` into `out` for `opts`. A flash budget is shared
/// equally by the members after the gate's tables; the RAM budget applies
/// to the shared arena, scratch and gate memory.
pub fn compile_deck(deck: &Deck, opts: &Options, out: &Path) -> anyhow::Result<Report> {
    deck.validate()
        .map_err(|e| anyhow::anyhow!("invalid deck: {e}"))?;
    let (target, extra_files) = target::find(&opts.target)?;
    if target.is_shader() {
        anyhow::bail!(
            "--target {}: decks compile to the C targets (host, arm, cortex-m4, cortex-m33); \
             shader targets take one card",
            target.name
        );
    }
    let spectral = deck.gate.kind == GateKind::Spectral;
    let n = deck.members.len();
    let (gate_flash, gate_ram) = if spectral {
        (gate_table_bytes(deck), 4 * gate_work_floats(deck) as u64)
    } else {
        (0, 0)
    };
    let member_flash = match opts.max_flash.or(target.flash_bytes) {
        Some(budget) if budget <= gate_flash => anyhow::bail!(
            "--max-flash {budget}: the deck's gate tables alone take {gate_flash} bytes"
        ),
        Some(budget) => Some((budget - gate_flash) / n as u64),
        None => None,
    };
    let mut planned: Vec<Planned> = Vec::with_capacity(n);
    for m in &deck.members {
        let p = plan_card(&m.card, opts.format, member_flash, &target)
            .with_context(|| format!("deck card '{}'", m.name))?;
        planned.push(p);
    }
    // Floats of the shared arena and padded-input buffers A and B: the
    // largest member's.
    let shared = [
        planned.iter().map(|p| p.plan.arena_bytes / 4).max(),
        planned.iter().map(|p| p.bufs.floats[0]).max(),
        planned.iter().map(|p| p.bufs.floats[1]).max(),
    ]
    .map(|v| v.unwrap_or(0));
    let report = deck_report(deck, &planned, &target.name, shared, gate_flash, gate_ram);
    check_ram(opts.max_ram, &target, &report, "the deck")?;
    let mut files = Vec::new();
    for (i, (p, r)) in planned
        .iter()
        .zip(report.deck.iter().flat_map(|d| &d.members))
        .enumerate()
    {
        let unit = Unit {
            function: &format!("cardc_member_{i}"),
            own_buffers: false,
        };
        let c = emit_c::emit_unit(&p.program, &p.plan, &p.bufs, &unit);
        files.push((r.source.clone(), c));
    }
    if spectral {
        for (name, text) in GATE_SOURCES {
            files.push((name.to_string(), text.to_string()));
        }
    }
    files.push(("model.h".into(), deck_header(deck, &report)));
    files.push((
        "model.c".into(),
        deck_model_c(deck, shared.map(|f| f.max(1))),
    ));
    files.push((
        "Makefile".into(),
        emit_c::makefile(&target, &report.sources),
    ));
    files.push(("report.json".into(), serde_json::to_string_pretty(&report)?));
    write_artifact(out, &target, extra_files, &files)?;
    let _ = std::fs::remove_file(out.join("model.card"));
    let deck_path = out.join(DECK_FILE);
    deck.save(&deck_path)
        .with_context(|| format!("cannot write {}", deck_path.display()))?;
    Ok(report)
}

/// The deck artifact's report: flash of all members plus the gate, RAM of
/// the largest member's buffers plus the gate's.
fn deck_report(
    deck: &Deck,
    planned: &[Planned],
    target: &str,
    shared: [usize; 3],
    gate_flash: u64,
    gate_ram: u64,
) -> Report {
    let members: Vec<MemberReport> = deck
        .members
        .iter()
        .zip(planned)
        .enumerate()
        .map(|(i, (m, p))| MemberReport {
            name: m.name.clone(),
            source: format!("member{i}.c"),
            flash_bytes: p.report.flash_bytes,
            arena_bytes: p.report.arena_bytes,
            arena_lower_bound_bytes: p.report.arena_lower_bound_bytes,
            scratch_bytes: p.report.scratch_bytes,
            macs: p.report.macs,
        })
        .collect();
    let max = |f: &dyn Fn(&Planned) -> u64| planned.iter().map(f).max().unwrap_or(0);
    let arena = 4 * shared[0] as u64;
    // The padded-input buffers are shared; each member keeps its own Rice
    // decode buffers (if any).
    let padded = |p: &Planned| 4 * (p.bufs.floats[0] + p.bufs.floats[1]) as u64;
    let own: u64 = planned
        .iter()
        .map(|p| p.report.scratch_bytes - padded(p))
        .sum();
    let scratch = 4 * (shared[1] + shared[2]) as u64 + own;
    let spectral = deck.gate.kind == GateKind::Spectral;
    let mut sources: Vec<String> = members.iter().map(|m| m.source.clone()).collect();
    if spectral {
        sources.push("cardc_gate.c".into());
    }
    let layers = deck
        .members
        .iter()
        .zip(planned)
        .flat_map(|(m, p)| {
            p.report.layers.iter().map(move |l| super::LayerReport {
                name: format!("{}/{}", m.name, l.name),
                ..l.clone()
            })
        })
        .collect();
    let first = &planned[0].report;
    let k = if spectral {
        deck.gate.k.min(deck.members.len())
    } else {
        deck.members.len()
    };
    Report {
        model: format!("deck of {}", deck.members.len()),
        target: target.to_string(),
        flash_bytes: gate_flash + members.iter().map(|m| m.flash_bytes).sum::<u64>(),
        arena_bytes: arena,
        arena_lower_bound_bytes: max(&|p| p.report.arena_lower_bound_bytes),
        scratch_bytes: scratch + gate_ram,
        ram_bytes: arena + scratch + gate_ram,
        macs: members.iter().map(|m| m.macs).sum(),
        input_bytes: first.input_bytes,
        classes: first.classes,
        input_format: first.input_format.clone(),
        format: first.format.clone(),
        layers,
        steps: planned.iter().map(|p| p.report.steps).sum(),
        sources,
        deck: Some(DeckReport {
            gate: if spectral { "spectral" } else { "average" }.into(),
            metric: format!("{:?}", deck.gate.metric).to_lowercase(),
            k,
            members,
            gate_flash_bytes: gate_flash,
            gate_ram_bytes: gate_ram,
        }),
    }
}

/// `model.h` of a deck artifact.
fn deck_header(deck: &Deck, report: &Report) -> String {
    let [c, h, w] = deck.input_shape();
    let k = report.deck.as_ref().map_or(0, |d| d.k);
    format!(
        "/* Generated by cardc: a CARD-Deck of {n} cards, {k} answering each image. */\n\
         #ifndef CARDC_MODEL_H\n#define CARDC_MODEL_H\n\n#include <stdint.h>\n\n\
         /* Raw image bytes: {c} channels x {h} x {w}, CHW, uint8. */\n\
         #define CARDC_INPUT_BYTES {bytes}\n#define CARDC_CLASSES {classes}\n\
         #define CARDC_DECK_MEMBERS {n}\n\n\
         /* Classifies one image: writes CARDC_CLASSES values, the mean softmax of the\n   \
         cards the gate chose; returns 0. Not reentrant (shared static buffers). */\n\
         int cardc_infer(const uint8_t *image, float *logits);\n\n\
         /* The gate alone: writes the chosen members (ascending) to `chosen`\n   \
         (CARDC_DECK_MEMBERS entries) and returns how many. */\n\
         int32_t cardc_deck_gate(const uint8_t *image, int32_t *chosen);\n\n\
         /* One member card alone: its logits. Returns 0, or 1 for a bad index. */\n\
         int cardc_deck_member(int32_t member, const uint8_t *image, float *logits);\n\n#endif\n",
        n = deck.members.len(),
        bytes = c * h * w,
        classes = deck.classes(),
    )
}

/// `model.c` of a deck artifact: the gate's tables, the shared buffers
/// (`buffers`: arena, scratch A, scratch B floats) and `cardc_infer`.
fn deck_model_c(deck: &Deck, buffers: [usize; 3]) -> String {
    let n = deck.members.len();
    let spectral = deck.gate.kind == GateKind::Spectral;
    let mut s = String::from("/* Generated by cardc: the CARD-Deck's gate and ensemble. */\n");
    s.push_str("#include <math.h>\n#include \"model.h\"\n");
    if spectral {
        s.push('\n');
        s.push_str(&gate_tables_c(deck));
        let _ = writeln!(s, "\nstatic float gate_work[{}];", gate_work_floats(deck));
    }
    let _ = writeln!(s, "\n/* Shared by the members, which run one at a time. */");
    for (name, floats) in SHARED_BUFFERS.iter().zip(buffers) {
        let _ = writeln!(s, "float {name}[{floats}];");
    }
    s.push('\n');
    for i in 0..n {
        let _ = writeln!(
            s,
            "int cardc_member_{i}(const uint8_t *image, float *logits);"
        );
    }
    let _ = write!(
        s,
        "static int (*const members[{n}])(const uint8_t *, float *) = {{{}}};\n\n",
        (0..n)
            .map(|i| format!("cardc_member_{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s.push_str("int32_t cardc_deck_gate(const uint8_t *image, int32_t *chosen) {\n");
    if spectral {
        s.push_str(
            "  return cardc_gate_select(&cardc_deck_gate_tables, image, gate_work, chosen);\n",
        );
    } else {
        s.push_str(
            "  int32_t m;\n  (void)image;\n  for (m = 0; m < CARDC_DECK_MEMBERS; m++) chosen[m] = m;\n  return CARDC_DECK_MEMBERS;\n",
        );
    }
    s.push_str("}\n\n");
    s.push_str(
        "int cardc_deck_member(int32_t member, const uint8_t *image, float *logits) {\n  \
         if (member < 0 || member >= CARDC_DECK_MEMBERS) return 1;\n  \
         return members[member](image, logits);\n}\n\n",
    );
    // The reference: softmax with the row maximum subtracted, divided by
    // the sum, then each chosen card's share 1/k added in member order.
    s.push_str(
        "int cardc_infer(const uint8_t *image, float *out) {\n  \
         int32_t chosen[CARDC_DECK_MEMBERS];\n  float z[CARDC_CLASSES];\n  \
         const int32_t k = cardc_deck_gate(image, chosen);\n  \
         const float share = 1.0f / (float)k;\n  int32_t j, c;\n  \
         for (c = 0; c < CARDC_CLASSES; c++) out[c] = 0.0f;\n  \
         for (j = 0; j < k; j++) {\n    float top, sum = 0.0f;\n    \
         if (members[chosen[j]](image, z) != 0) return 1;\n    \
         top = z[0];\n    for (c = 1; c < CARDC_CLASSES; c++) top = z[c] > top ? z[c] : top;\n    \
         for (c = 0; c < CARDC_CLASSES; c++) {\n      z[c] = expf(z[c] - top);\n      sum += z[c];\n    }\n    \
         for (c = 0; c < CARDC_CLASSES; c++) out[c] += share * (z[c] / sum);\n  }\n  \
         return 0;\n}\n",
    );
    s
}
