//! The `xnor` format: binary weights on Sign outputs, compiled to XOR and
//! popcount. Random binary nets with Sign activations over the shapes the
//! kernel special-cases (tail-only patches, one to five 128-bit chunks with
//! and without a tail, partial four-pixel blocks, strides, 1×3 kernels,
//! zero padding at every border), masked and fully kept, against the
//! reference forward: on the host under sanitizers, in portable C, and on
//! arm under QEMU (the NEON kernel).

use crate::compile::{
    SANITIZE, bn, card_of, compare, conv, graph_of, model_for, node, opts, random_images,
};
use cardc::card::Card;
use cardc::compile::{self, Format, FormatChoice};
use cardc::ir::{Conv2d, Graph, Linear, Op};
use cardc::model::WeightState;

/// Every value a Sign reads has a BatchNorm shift or a bias: a bare
/// convolution of ±1 inputs can sum to exactly 0, where the reference's
/// float sum of ±α may land on either side (a tie, not an error).
/// Patches of 144 bits (1 chunk + 32-bit tail), 297 (2 chunks + 64-bit
/// tail), 576 (4 chunks + 64-bit tail: two blocks of four pixels on NEON),
/// 192 (1 chunk + 64-bit tail), 63 (64-bit tail only), 720 (6 chunks: the
/// portable path on NEON targets too), 20 (32-bit tail only); output widths
/// 17, 9 (a full block of 8 and a partial one), 3 and 1.
fn sign_graph() -> Graph {
    let k13 = Op::Conv2d(Conv2d {
        in_channels: 64,
        out_channels: 7,
        kernel: (1, 3),
        stride: (1, 1),
        padding: (0, 1),
        groups: 1,
        bias: true,
    });
    let fc = |i, o| {
        Op::Linear(Linear {
            in_features: i,
            out_features: o,
            bias: true,
        })
    };
    let nodes = vec![
        node(
            "input",
            Op::Input {
                channels: 3,
                height: 9,
                width: 17,
            },
            &[],
        ),
        node("c1", conv(3, 16, 3, 1, 1, false), &[0]),
        node("bn1", bn(16, true), &[1]),
        node("s1", Op::Sign, &[2]),
        node("c2", conv(16, 33, 3, 2, 1, false), &[3]),
        node("bn2", bn(33, false), &[4]),
        node("s2", Op::Sign, &[5]),
        node("c3", conv(33, 64, 3, 1, 1, true), &[6]),
        node("s3", Op::Sign, &[7]),
        node("c4", conv(64, 64, 3, 1, 1, false), &[8]),
        node("bn4", bn(64, true), &[9]),
        node("add", Op::Add, &[10, 8]),
        node("s4", Op::Sign, &[11]),
        node("c5", k13, &[12]),
        node("s5", Op::Sign, &[13]),
        node("c6", conv(7, 120, 3, 3, 1, true), &[14]),
        node("s6", Op::Sign, &[15]),
        node("flatten", Op::Flatten, &[16]),
        node("fc1", fc(720, 20), &[17]),
        node("s7", Op::Sign, &[18]),
        node("classifier", fc(20, 5), &[19]),
    ];
    graph_of("sign-net", nodes)
}

/// The built-in `resnet20-bnn` at half width (8, 16 and 32 channels).
fn half_width_resnet20_bnn() -> Graph {
    cardc::ir::models::build(
        "resnet20-bnn",
        &cardc::ir::models::BuildOptions {
            width_mult: 0.5,
            affine_bn: false,
            classes: None,
        },
    )
    .unwrap()
}

/// A binary card of `graph`: masked ("binary": one row fully masked, one
/// fully kept, ~70 % kept elsewhere) or every weight kept.
fn binary_card(graph: Graph, kept: bool, seed: u64) -> Card {
    let mut m = model_for(graph, "binary", seed);
    if kept {
        for (i, k) in m.prunable() {
            if let WeightState::Binary { mask, .. } = &mut m.params[i][k].state {
                mask.fill(true);
            }
        }
    }
    card_of(m)
}

/// Compiles `card` with `format` for `target` and checks it against the
/// reference; returns the layers' formats.
fn check(card: &Card, target: &str, format: Format, cflags: &[&str], what: &str) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let ds = random_images(card, 4, 5);
    let (err, agree) = compare(
        card,
        tmp.path(),
        &opts(target, FormatChoice::Force(format)),
        &ds,
        cflags,
    );
    assert!(err <= 1e-4, "{what}: relative logit error {err}");
    assert_eq!(agree, 1.0, "{what}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("report.json")).unwrap())
            .unwrap();
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["format"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn xnor_layers_match_the_reference_on_the_host() {
    for kept in [false, true] {
        let card = binary_card(sign_graph(), kept, 41);
        let what = format!("kept {kept}");
        let formats = check(&card, "host", Format::Xnor, SANITIZE, &what);
        // c1 reads the image and fc1 a flattened Sign: only c1 is not xnor.
        assert_eq!(formats[0], "binary", "{formats:?}");
        assert!(formats[1..].iter().all(|f| f == "xnor"), "{formats:?}");
        let portable: Vec<&str> = SANITIZE
            .iter()
            .copied()
            .chain(["-DCARDC_PORTABLE"])
            .collect();
        check(
            &card,
            "host",
            Format::Xnor,
            &portable,
            &format!("{what}, portable"),
        );
    }
}

#[test]
fn auto_picks_xnor_for_binary_layers_on_sign_inputs() {
    let card = binary_card(sign_graph(), false, 43);
    let tmp = tempfile::tempdir().unwrap();
    let r = compile::compile(&card, &opts("arm", FormatChoice::Auto), tmp.path()).unwrap();
    let f: Vec<&str> = r.layers.iter().map(|l| l.format.as_str()).collect();
    assert_eq!(f[0], "binary");
    assert!(f[1..].iter().all(|&x| x == "xnor"), "{f:?}");
    // A host without NEON gets the float binary kernels (faster there).
    let r = compile::compile(&card, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
    let want = if cfg!(target_arch = "aarch64") {
        "xnor"
    } else {
        "binary"
    };
    assert!(
        r.layers[1..].iter().all(|l| l.format == want),
        "{:?}",
        r.layers
    );
    // A non-binary card keeps its formats: xnor needs binary weights.
    let dense = card_of(model_for(sign_graph(), "dense", 43));
    let r = compile::compile(&dense, &opts("host", FormatChoice::Auto), tmp.path()).unwrap();
    assert!(r.layers.iter().all(|l| l.format == "f32"), "{:?}", r.layers);
}

#[test]
fn binary_resnet_with_sign_activations_compiles_to_xnor() {
    let g = half_width_resnet20_bnn();
    for kept in [false, true] {
        let card = binary_card(g.clone(), kept, 45);
        let formats = check(
            &card,
            "host",
            Format::Xnor,
            &["-O2"],
            &format!("kept {kept}"),
        );
        // Every block convolution; not the stem, shortcuts or classifier.
        assert_eq!(
            formats.iter().filter(|f| *f == "xnor").count(),
            18,
            "{formats:?}"
        );
    }
}

/// How many layers of `card`, compiled with xnor for `target`, hand their
/// Sign output to the next xnor layer as bits, and how many read such bits.
fn bit_handoffs(card: &Card, target: &str) -> (usize, usize) {
    let tmp = tempfile::tempdir().unwrap();
    compile::compile(
        card,
        &opts(target, FormatChoice::Force(Format::Xnor)),
        tmp.path(),
    )
    .unwrap();
    let model = std::fs::read_to_string(tmp.path().join("model.c")).unwrap();
    (
        model.matches(".xn_out_bits = 1").count(),
        model.matches(".xn_in_rows = 1").count(),
    )
}

/// Sign outputs read by one stride-1 xnor layer only, of 64 and 24
/// channels (two words and a partial word per pixel), on an 11-pixel-wide
/// image (a full block of 8 and a partial one per row): hand-offs as bits.
fn bits_graph() -> Graph {
    let nodes = vec![
        node(
            "input",
            Op::Input {
                channels: 3,
                height: 7,
                width: 11,
            },
            &[],
        ),
        node("c1", conv(3, 16, 3, 1, 1, false), &[0]),
        node("bn1", bn(16, true), &[1]),
        node("s1", Op::Sign, &[2]),
        node("c2", conv(16, 64, 3, 1, 1, false), &[3]),
        node("bn2", bn(64, true), &[4]),
        node("s2", Op::Sign, &[5]),
        node("c3", conv(64, 24, 3, 1, 1, false), &[6]),
        node("bn3", bn(24, false), &[7]),
        node("s3", Op::Sign, &[8]),
        node("c4", conv(24, 8, 3, 1, 1, true), &[9]),
        node("flatten", Op::Flatten, &[10]),
        node(
            "classifier",
            Op::Linear(Linear {
                in_features: 8 * 7 * 11,
                out_features: 5,
                bias: true,
            }),
            &[11],
        ),
    ];
    graph_of("bits-net", nodes)
}

#[test]
fn sign_outputs_hand_bits_to_the_next_xnor_layer() {
    // c2 -> c3 and c3 -> c4; c1 reads the image (binary, not xnor).
    for kept in [false, true] {
        let card = binary_card(bits_graph(), kept, 49);
        assert_eq!(bit_handoffs(&card, "host"), (2, 2));
        let what = format!("bits, kept {kept}");
        check(&card, "host", Format::Xnor, SANITIZE, &what);
        let portable: Vec<&str> = SANITIZE
            .iter()
            .copied()
            .chain(["-DCARDC_PORTABLE"])
            .collect();
        check(
            &card,
            "host",
            Format::Xnor,
            &portable,
            &format!("{what}, portable"),
        );
    }
    // sign_graph's Sign outputs have a second reader, a stride or
    // channels that are not whole bytes: floats.
    assert_eq!(
        bit_handoffs(&binary_card(sign_graph(), false, 49), "host"),
        (0, 0)
    );
    // resnet20-bnn: each block's first convolution (Sign fused) hands
    // bits to its second, 9 blocks.
    let g = half_width_resnet20_bnn();
    assert_eq!(bit_handoffs(&binary_card(g, true, 49), "host"), (9, 9));
}

#[test]
fn binary_resnet20_bnn_fits_cortex_m4_ram_with_bit_handoffs() {
    // Planning only: each block's Sign-to-xnor hand-off is an arena value
    // of bits (a 32nd of the floats), which is what brings the full-width
    // network under the 256 KB of RAM.
    let g = cardc::ir::models::build("resnet20-bnn", &Default::default()).unwrap();
    let card = binary_card(g, true, 51);
    let (t, _) = compile::target::find("cortex-m4").unwrap();
    let p = compile::plan_card(&card, FormatChoice::Auto, None, &t).unwrap();
    let r = &p.report;
    assert_eq!(r.arena_bytes, r.arena_lower_bound_bytes);
    assert!(r.ram_bytes <= 256 * 1024, "{} bytes of RAM", r.ram_bytes);
    assert_eq!(
        r.layers.iter().filter(|l| l.format == "xnor").count(),
        18,
        "{:?}",
        r.layers
    );
    // ... and runs there (portable kernels, the planned arena) as the
    // reference does.
    let missing = t.missing_tools();
    if !missing.is_empty() {
        eprintln!("SKIPPED resnet20-bnn on cortex-m4: missing {missing:?} (test.sh installs them)");
        return;
    }
    check(
        &card,
        "cortex-m4",
        Format::Xnor,
        &[],
        "cortex-m4, resnet20-bnn",
    );
}

#[test]
fn xnor_neon_kernel_agrees_under_qemu() {
    let (t, _) = compile::target::find("arm").unwrap();
    let missing = t.missing_tools();
    if !missing.is_empty() {
        eprintln!("SKIPPED xnor on arm under QEMU: missing {missing:?} (test.sh installs them)");
        return;
    }
    for kept in [false, true] {
        let card = binary_card(sign_graph(), kept, 47);
        check(
            &card,
            "arm",
            Format::Xnor,
            &[],
            &format!("arm, kept {kept}"),
        );
    }
    for kept in [false, true] {
        check(
            &binary_card(bits_graph(), kept, 50),
            "arm",
            Format::Xnor,
            &[],
            &format!("arm, bits, kept {kept}"),
        );
    }
    // 8, 16 and 32 channels: bit hand-offs of 1, 2 and 4 bytes per pixel
    let g = half_width_resnet20_bnn();
    check(
        &binary_card(g, false, 48),
        "arm",
        Format::Xnor,
        &[],
        "arm, resnet20-bnn",
    );
}
