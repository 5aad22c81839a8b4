//! The CARD-Deck gate for compiled artifacts: the portable C gate
//! (`targets/common/cardc_gate.{c,h}`) and the tables a deck gives it
//! (clean reference, signatures, DFT twiddles).
//!
//! [`super::deck`] links it into deck artifacts. Tests check that the C
//! gate chooses the same cards as [`Deck::decide`].

use crate::deck::{Deck, GateKind, Metric};
use std::fmt::Write;

/// The gate's runtime sources: `(file name, contents)`.
pub const GATE_SOURCES: &[(&str, &str)] = &[
    (
        "cardc_gate.h",
        include_str!("../../targets/common/cardc_gate.h"),
    ),
    (
        "cardc_gate.c",
        include_str!("../../targets/common/cardc_gate.c"),
    ),
];

/// A C array definition of `values` (exact: 9 significant digits).
fn float_array(out: &mut String, name: &str, values: &[f32]) {
    let _ = write!(
        out,
        "static const float {name}[{}] = {{",
        values.len().max(1)
    );
    for (i, v) in values.iter().enumerate() {
        if i % 8 == 0 {
            out.push_str("\n ");
        }
        let _ = write!(out, " {v:.9e}f,");
    }
    if values.is_empty() {
        out.push_str(" 0.0f");
    }
    out.push_str("\n};\n");
}

/// `cos(2πab/n)` or `sin(2πab/n)` for a, b in 0..n, row-major.
fn twiddles(n: usize, sin: bool) -> Vec<f32> {
    (0..n * n)
        .map(|i| {
            let t = 2.0 * std::f64::consts::PI * ((i / n) * (i % n) % n.max(1)) as f64 / n as f64;
            (if sin { t.sin() } else { t.cos() }) as f32
        })
        .collect()
}

/// C source defining `const cardc_gate cardc_deck_gate_tables` for `deck`: its
/// reference, signatures, k, metric and the twiddle tables. An `average`
/// deck gets k = all members (the gate then chooses everyone).
pub fn gate_tables_c(deck: &Deck) -> String {
    let [c, h, w] = deck.input_shape();
    let mut s = String::from(
        "/* CARD-Deck gate tables, written by cardc. */\n#include \"cardc_gate.h\"\n\n",
    );
    float_array(&mut s, "gate_reference", &deck.reference);
    let sigs: Vec<f32> = deck
        .members
        .iter()
        .flat_map(|m| m.signature.iter().copied())
        .collect();
    float_array(&mut s, "gate_signatures", &sigs);
    float_array(&mut s, "gate_cos_h", &twiddles(h, false));
    float_array(&mut s, "gate_sin_h", &twiddles(h, true));
    float_array(&mut s, "gate_cos_w", &twiddles(w, false));
    float_array(&mut s, "gate_sin_w", &twiddles(w, true));
    let n = deck.members.len();
    let k = if deck.gate.kind == GateKind::Average {
        n
    } else {
        deck.gate.k
    };
    let metric = match deck.gate.metric {
        Metric::L1 => "CARDC_GATE_L1",
        Metric::Cosine => "CARDC_GATE_COSINE",
    };
    let _ = writeln!(
        s,
        "\nconst cardc_gate cardc_deck_gate_tables = {{{c}, {h}, {w}, {n}, {k}, {metric}, gate_reference,\n  gate_signatures, gate_cos_h, gate_sin_h, gate_cos_w, gate_sin_w}};"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiddles_are_roots_of_unity() {
        let (c, s) = (twiddles(4, false), twiddles(4, true));
        assert_eq!(c.len(), 16);
        assert!((c[4 + 1]).abs() < 1e-6 && (s[4 + 1] - 1.0).abs() < 1e-6);
        for (a, b) in c.iter().zip(&s) {
            assert!((a * a + b * b - 1.0).abs() < 1e-5);
        }
        let mut out = String::new();
        float_array(&mut out, "x", &[1.5, -0.25]);
        assert!(
            out.contains("x[2]") && out.contains("1.500000000e0f"),
            "{out}"
        );
    }
}
