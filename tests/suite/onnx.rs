//! ONNX export and import: exported files run in tract-onnx with the same
//! logits as cardc's CPU reference (every architecture, sparse and binary
//! cards, BatchNorm kept and folded), import → export → import is stable,
//! PyTorch-style files (committed fixtures) give their stored reference
//! logits, and unsupported operators or damaged files are refused clearly.

use crate::common::{assert_clean_error, cardc};

use cardc::backend::cpu::infer;
use cardc::card::Card;
use cardc::data::Normalization;
use cardc::ir::models::{BuildOptions, build, builtin_names};
use cardc::ir::{Conv2d, Graph, Linear, Node, Op, ParamKind, Pool};
use cardc::model::{Model, WeightState};
use cardc::onnx::{
    ExportOptions, ImportOptions, export_file, export_model, import_path, import_proto,
};
use cardc::rng::Rng;
use cardc::tensor::Tensor;
use prost::Message;
use std::path::{Path, PathBuf};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Largest |a - b| over the largest |b| (the logits' scale).
fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Non-trivial BatchNorm statistics, so that keeping and folding differ
/// from the identity.
fn perturb_bn(model: &mut Model, seed: u64) {
    let mut rng = Rng::derive(seed, "bn");
    for ts in &mut model.params {
        for t in ts {
            for v in &mut t.data {
                match t.kind {
                    ParamKind::Gamma => *v = rng.range(0.5, 1.5),
                    ParamKind::Beta | ParamKind::RunningMean => *v = rng.range(-0.3, 0.3),
                    ParamKind::RunningVar => *v = rng.range(0.5, 2.0),
                    _ => {}
                }
            }
        }
    }
}

fn card_of(model: Model) -> Card {
    let k = model.graph.classes();
    let c = model.graph.input_shape()[0];
    let norm = if c == 3 {
        Normalization::cifar10()
    } else {
        Normalization::identity(c)
    };
    Card::new(model, norm, (0..k).map(|i| format!("c{i}")).collect())
}

/// A small random card of a built-in architecture.
fn arch_card(arch: &str, width: f32, affine_bn: bool, seed: u64) -> Card {
    let opts = BuildOptions {
        width_mult: width,
        affine_bn,
        classes: None,
    };
    let g = build(arch, &opts).unwrap();
    let mut m = Model::init(g, seed).unwrap();
    perturb_bn(&mut m, seed);
    card_of(m)
}

/// Width multipliers that keep every architecture small (4–32 channels).
fn small_width(arch: &str) -> f32 {
    match arch {
        "conv4" => 0.125,
        "resnet20" => 0.25,
        "wrn-18-2" => 0.03125,
        _ => 0.0625,
    }
}

fn images(model: &Model, batch: usize, seed: u64) -> Tensor {
    let [c, h, w] = model.graph.input_shape();
    let mut rng = Rng::derive(seed, "images");
    let n = batch * c * h * w;
    Tensor::from_vec(&[batch, c, h, w], (0..n).map(|_| rng.normal()).collect())
}

/// Runs an ONNX file in tract-onnx at the batch size of `x`.
fn tract_logits(path: &Path, x: &Tensor) -> Vec<f32> {
    let model = tract_onnx::onnx()
        .model_for_path(path)
        .unwrap()
        .with_input_fact(0, f32::fact(x.shape.clone()).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = tract_onnx::prelude::Tensor::from_shape(&x.shape, &x.data).unwrap();
    let out = model.run(tvec!(input.into_tvalue())).unwrap();
    assert_eq!(out[0].shape(), &[x.shape[0], out[0].shape()[1]]);
    out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

fn count_ops(path: &Path, op: &str) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let p = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    p.graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == op)
        .count()
}

/// Exports `card` kept and folded and checks tract against `infer`.
fn check_export(card: &Card, dir: &Path, tag: &str) {
    let x = images(&card.model, 2, 7);
    let want = infer(&card.model, &x).unwrap().data;
    let bns = card
        .model
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::BatchNorm(_)))
        .count();
    for (fold, opset) in [(false, 13), (true, 17)] {
        let path = dir.join(format!("{tag}-{fold}.onnx"));
        let s = export_file(
            card,
            &path,
            &ExportOptions {
                opset,
                fold_bn: fold,
            },
        )
        .unwrap();
        let got = tract_logits(&path, &x);
        let err = max_rel_err(&got, &want);
        assert!(err <= 1e-4, "{tag} fold_bn={fold}: relative error {err}");
        let kept = count_ops(&path, "BatchNormalization");
        if fold {
            assert_eq!(kept + s.folded_bn, bns, "{tag}");
            assert!(bns == 0 || s.folded_bn > 0, "{tag}: nothing folded");
        } else {
            assert_eq!(kept, bns, "{tag}");
        }
    }
}

#[test]
fn every_architecture_exports_and_runs_the_same_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    for (i, arch) in builtin_names().into_iter().enumerate() {
        let card = arch_card(arch, small_width(arch), true, 10 + i as u64);
        check_export(&card, dir.path(), arch);
    }
}

#[test]
fn sparse_and_binary_cards_export_their_dense_equivalents() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, state) in [
        ("resnet20", "masked"),
        ("conv4", "masked"),
        ("resnet20", "binary"),
        ("conv4", "binary"),
    ] {
        // Binary methods (BiProp) use non-affine BatchNorm.
        let mut card = arch_card(arch, small_width(arch), state == "masked", 3);
        let mut rng = Rng::derive(5, state);
        for (i, k) in card.model.prunable() {
            let t = &mut card.model.params[i][k];
            let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < 0.3).collect();
            t.state = if state == "masked" {
                WeightState::Masked { mask }
            } else {
                WeightState::Binary {
                    mask,
                    alpha: rng.range(0.05, 0.2),
                }
            };
        }
        assert!(card.model.sparsity() > 0.5);
        check_export(&card, dir.path(), &format!("{arch}-{state}"));
    }
}

/// One IR node appended to a hand-built graph.
fn push(g: &mut Graph, name: &str, op: Op, inputs: &[usize]) -> usize {
    g.nodes.push(Node {
        name: name.into(),
        op,
        inputs: inputs.to_vec(),
    });
    g.nodes.len() - 1
}

/// Every IR operator, with the parameters the built-in models never use:
/// grouped and strided convs with bias, padded max and average pooling
/// (padding counts in the average), ReLU6, BatchNorm on a vector, a
/// linear layer without bias, non-square inputs.
fn all_ops_graph() -> Graph {
    let mut g = Graph {
        name: "all-ops".into(),
        nodes: vec![],
    };
    let conv = |i, o, k, s, p, groups, bias| {
        Op::Conv2d(Conv2d {
            in_channels: i,
            out_channels: o,
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
            groups,
            bias,
        })
    };
    let bn = |c, affine| {
        Op::BatchNorm(cardc::ir::BatchNorm {
            channels: c,
            affine,
            eps: 1e-3,
            momentum: 0.1,
        })
    };
    let x = push(
        &mut g,
        "input",
        Op::Input {
            channels: 4,
            height: 12,
            width: 10,
        },
        &[],
    );
    let a = push(&mut g, "conv_a", conv(4, 8, 3, 1, 1, 2, true), &[x]);
    let a = push(&mut g, "bn_a", bn(8, false), &[a]);
    let a = push(&mut g, "relu6_a", Op::Relu6, &[a]);
    let b = push(&mut g, "conv_b", conv(4, 8, 1, 1, 0, 1, false), &[x]);
    let s = push(&mut g, "sum", Op::Add, &[a, b]);
    let p = Pool {
        kernel: (3, 3),
        stride: (2, 2),
        padding: (1, 1),
    };
    let m = push(&mut g, "maxpool", Op::MaxPool(p.clone()), &[s]);
    let m = push(&mut g, "conv_c", conv(8, 8, 3, 2, 1, 8, true), &[m]);
    let m = push(&mut g, "avgpool", Op::AvgPool(p), &[m]);
    let f = push(&mut g, "flatten", Op::Flatten, &[m]);
    let l = push(
        &mut g,
        "fc",
        Op::Linear(Linear {
            // 8 channels of 2x2 after 12x10 -> 6x5 -> 3x3 -> 2x2.
            in_features: 32,
            out_features: 6,
            bias: false,
        }),
        &[f],
    );
    let l = push(&mut g, "fc_bn", bn(6, true), &[l]);
    let l = push(&mut g, "fc_relu", Op::Relu, &[l]);
    let q = push(&mut g, "gap", Op::GlobalAvgPool, &[s]);
    let q = push(
        &mut g,
        "fc_q",
        Op::Linear(Linear {
            in_features: 8,
            out_features: 6,
            bias: true,
        }),
        &[q],
    );
    let o = push(&mut g, "sum2", Op::Add, &[l, q]);
    push(
        &mut g,
        "classifier",
        Op::Linear(Linear {
            in_features: 6,
            out_features: 5,
            bias: true,
        }),
        &[o],
    );
    g
}

#[test]
fn every_ir_operator_exports_and_runs_the_same_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let g = all_ops_graph();
    g.shapes().unwrap();
    let mut m = Model::init(g, 4).unwrap();
    perturb_bn(&mut m, 4);
    check_export(&card_of(m), dir.path(), "all-ops");
}

/// Parameters as the network sees them, with non-affine BN as γ=1, β=0
/// (what an ONNX file can say).
fn effective(model: &Model) -> Vec<(String, Vec<f32>)> {
    let mut v = Vec::new();
    for (n, ts) in model.graph.nodes.iter().zip(&model.params) {
        if let Op::BatchNorm(b) = &n.op
            && !b.affine
        {
            v.push((format!("{}.gamma", n.name), vec![1.0; b.channels]));
            v.push((format!("{}.beta", n.name), vec![0.0; b.channels]));
        }
        for t in ts {
            v.push((
                format!("{}.{}", n.name, t.kind.suffix()),
                t.effective().into_owned(),
            ));
        }
    }
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn import_export_import_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let all_ops = {
        let mut m = Model::init(all_ops_graph(), 8).unwrap();
        perturb_bn(&mut m, 8);
        card_of(m)
    };
    let mut sparse = arch_card("resnet20", 0.25, true, 9);
    for (i, k) in sparse.model.prunable() {
        let t = &mut sparse.model.params[i][k];
        let mask = (0..t.data.len()).map(|j| j % 3 != 0).collect();
        t.state = WeightState::Masked { mask };
    }
    for (tag, mut card) in [("all-ops", all_ops), ("resnet20-sparse", sparse)] {
        card.class_names = (0..card.class_names.len())
            .map(|i| format!("name {i}"))
            .collect();
        card.normalization = Normalization {
            mean: (0..card.normalization.mean.len())
                .map(|i| 0.1 * i as f32)
                .collect(),
            std: (0..card.normalization.std.len())
                .map(|i| 0.2 + 0.1 * i as f32)
                .collect(),
        };
        card.provenance.method = "gmp".into();
        let p1 = dir.path().join(format!("{tag}-1.onnx"));
        export_file(&card, &p1, &ExportOptions::default()).unwrap();
        let first = import_path(&p1, &ImportOptions::default()).unwrap();
        assert!(first.notes.is_empty(), "{:?}", first.notes);
        let c1 = first.card;
        // Metadata restores preprocessing, names and provenance.
        assert_eq!(c1.normalization, card.normalization);
        assert_eq!(c1.class_names, card.class_names);
        assert_eq!(c1.provenance.method, "gmp");
        // Same weights as the network saw them, same logits.
        assert_eq!(effective(&c1.model), effective(&card.model), "{tag}");
        assert_eq!(
            c1.model.graph.nodes.len(),
            card.model.graph.nodes.len(),
            "{tag}"
        );
        let x = images(&card.model, 2, 1);
        let err = max_rel_err(
            &infer(&c1.model, &x).unwrap().data,
            &infer(&card.model, &x).unwrap().data,
        );
        assert!(err <= 1e-6, "{tag}: {err}");
        // And a second round trip changes nothing at all.
        let p2 = dir.path().join(format!("{tag}-2.onnx"));
        export_file(
            &c1,
            &p2,
            &ExportOptions {
                opset: 15,
                fold_bn: false,
            },
        )
        .unwrap();
        let c2 = import_path(&p2, &ImportOptions::default()).unwrap().card;
        assert_eq!(c2.model, c1.model, "{tag}");
        assert_eq!(c2.normalization, c1.normalization);
        // The imported card saves, loads and validates like any other.
        let path = dir.path().join(format!("{tag}.card"));
        c2.save(&path).unwrap();
        assert_eq!(Card::load(&path).unwrap().model, c2.model);
    }
}

/// The committed PyTorch-style fixtures (scripts/onnx/make_fixtures.py).
fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

#[test]
fn pytorch_style_files_import_with_their_reference_logits() {
    let files = fixtures();
    assert!(files.len() >= 3, "fixtures missing: {files:?}");
    for path in files {
        let reference: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
        let floats = |k: &str| -> Vec<f32> {
            reference[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        let shape: Vec<usize> = reference["input_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let imported = import_path(&path, &ImportOptions::default()).unwrap();
        // No cardc metadata: CIFAR-10 defaults, with a note saying so.
        assert!(
            imported.notes.iter().any(|n| n.contains("CIFAR-10")),
            "{:?}",
            imported.notes
        );
        let card = imported.card;
        card.validate().unwrap();
        let x = Tensor::from_vec(&shape, floats("input"));
        let got = infer(&card.model, &x).unwrap();
        let want = floats("logits");
        let err = max_rel_err(&got.data, &want);
        assert!(err <= 1e-4, "{}: relative error {err}", path.display());
        // The import exports again to a file tract runs the same way.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("again.onnx");
        export_file(&card, &out, &ExportOptions::default()).unwrap();
        let err = max_rel_err(&tract_logits(&out, &x), &want);
        assert!(err <= 1e-4, "{} re-exported: {err}", path.display());
    }
}

/// A minimal valid model around one node under test: input [N,3,8,8] →
/// `node` → `y`, with float initializers.
fn one_node_model(node: pb::NodeProto, inits: Vec<pb::TensorProto>) -> pb::ModelProto {
    let card = arch_card("conv4", 0.125, true, 1);
    let (mut p, _) = export_model(&card, &ExportOptions::default()).unwrap();
    let g = p.graph.as_mut().unwrap();
    // Splice the node right after the input: it reads `input` and feeds
    // the first conv.
    let first = g.node.iter_mut().find(|n| n.op_type == "Conv").unwrap();
    first.input[0] = "spliced".into();
    let mut node = node;
    node.output = vec!["spliced".into()];
    g.node.insert(0, node);
    g.initializer.extend(inits);
    p
}

fn node(op: &str, name: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn float_init(name: &str, dims: &[i64], v: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        float_data: v.to_vec(),
        ..Default::default()
    }
}

fn import_err(p: &pb::ModelProto) -> String {
    let e = import_proto(p, &ImportOptions::default(), "t", "t.onnx").unwrap_err();
    format!("{e:#}")
}

#[test]
fn unsupported_operators_are_refused_by_type_and_name() {
    let e = import_err(&one_node_model(
        node("Sigmoid", "my_sigmoid", &["input"], vec![]),
        vec![],
    ));
    assert!(e.contains("Sigmoid") && e.contains("my_sigmoid"), "{e}");
    // Clip other than ReLU6 / ReLU.
    let m = one_node_model(
        node("Clip", "clip01", &["input", "lo", "hi"], vec![]),
        vec![float_init("lo", &[], &[0.0]), float_init("hi", &[], &[1.0])],
    );
    let e = import_err(&m);
    assert!(e.contains("clip01") && e.contains("Clip to [0, 1]"), "{e}");
    // Clip(0, 6) is ReLU6 and imports.
    let m = one_node_model(
        node("Clip", "clip06", &["input", "lo", "hi"], vec![]),
        vec![float_init("lo", &[], &[0.0]), float_init("hi", &[], &[6.0])],
    );
    let c = import_proto(&m, &ImportOptions::default(), "t", "t.onnx")
        .unwrap()
        .card;
    assert!(c.model.graph.nodes.iter().any(|n| n.op == Op::Relu6));
    // Dilated convolution.
    let dil = pb::AttributeProto {
        name: "dilations".into(),
        ints: vec![2, 2],
        ..Default::default()
    };
    let m = one_node_model(
        node("Conv", "dilated", &["input", "w"], vec![dil]),
        vec![float_init("w", &[3, 3, 1, 1], &[0.5; 9])],
    );
    let e = import_err(&m);
    assert!(e.contains("dilated") && e.contains("dilations"), "{e}");
    // A weight whose dimensions claim far more data than the file holds.
    let m = one_node_model(
        node("Conv", "huge", &["input", "w"], vec![]),
        vec![float_init("w", &[3, 3, 100_000, 100_000], &[0.5; 9])],
    );
    let e = import_err(&m);
    assert!(e.contains("huge") && e.contains("exceed"), "{e}");
    // A reference to a tensor nothing produces.
    let e = import_err(&one_node_model(
        node("Relu", "orphan", &["nowhere"], vec![]),
        vec![],
    ));
    assert!(e.contains("orphan") && e.contains("nowhere"), "{e}");
}

#[test]
fn cli_exports_imports_and_refuses_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    arch_card("conv4", 0.125, true, 2)
        .save(Path::new(&d("m.card")))
        .unwrap();
    let o = cardc(&[
        "export",
        "--model",
        &d("m.card"),
        "--out",
        &d("m.onnx"),
        "--fold-bn",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["folded_bn"], 4);
    let o = cardc(&[
        "import",
        &d("m.onnx"),
        "--out",
        &d("back.card"),
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25,0.25,0.25",
        "--classes",
        "a,b,c,d,e,f,g,h,i,j",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let back = Card::load(Path::new(&d("back.card"))).unwrap();
    assert_eq!(back.normalization.mean, vec![0.5; 3]);
    assert_eq!(back.class_names[9], "j");
    let o = cardc(&["info", &d("back.card"), "--json"]);
    assert!(o.status.success());

    assert_clean_error(
        &cardc(&[
            "export",
            "--model",
            &d("m.card"),
            "--out",
            &d("x.onnx"),
            "--opset",
            "9",
        ]),
        "opset",
    );
    assert_clean_error(
        &cardc(&[
            "import",
            &d("m.onnx"),
            "--out",
            &d("x.card"),
            "--mean",
            "0.5",
        ]),
        "--mean",
    );
    assert_clean_error(
        &cardc(&[
            "import",
            &d("m.onnx"),
            "--out",
            &d("x.card"),
            "--classes",
            "a,b",
        ]),
        "class names",
    );
    // Damaged files: truncated, empty, foreign, missing.
    let bytes = std::fs::read(d("m.onnx")).unwrap();
    for cut in [bytes.len() / 2, 100, 7] {
        std::fs::write(d("cut.onnx"), &bytes[..cut]).unwrap();
        assert_clean_error(
            &cardc(&["import", &d("cut.onnx"), "--out", &d("x.card")]),
            "cut.onnx",
        );
    }
    std::fs::write(d("empty.onnx"), b"").unwrap();
    assert_clean_error(
        &cardc(&["import", &d("empty.onnx"), "--out", &d("x.card")]),
        "empty.onnx",
    );
    std::fs::write(d("png.onnx"), b"\x89PNG\r\n\x1a\n0000000000000000000000").unwrap();
    assert_clean_error(
        &cardc(&["import", &d("png.onnx"), "--out", &d("x.card")]),
        "png.onnx",
    );
    assert_clean_error(
        &cardc(&["import", &d("none.onnx"), "--out", &d("x.card")]),
        "none.onnx",
    );
    assert!(!Path::new(&d("x.card")).exists());
}

#[test]
fn flipped_bytes_never_panic() {
    let card = arch_card("resnet20", 0.25, true, 6);
    let (p, _) = export_model(&card, &ExportOptions::default()).unwrap();
    let bytes = p.encode_to_vec();
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.below(256) as u8;
        }
        if let Ok(p) = pb::ModelProto::decode(b.as_slice()) {
            // Either a valid card or an error; never a panic.
            if let Ok(i) = import_proto(&p, &ImportOptions::default(), "t", "t.onnx") {
                i.card.validate().unwrap();
            }
        }
    }
}

/// Writes every architecture (BN kept and folded) and sparse/binary cards
/// as `.onnx` plus `.json` (input and cardc's logits) into
/// `$CARDC_ORT_DIR`, for `scripts/onnx/check_ort.py logits DIR`
/// (ONNX Runtime is not a Rust dependency). Run with
/// `CARDC_ORT_DIR=/tmp/ort cargo test --test onnx write_ort_check_set -- --ignored`.
#[test]
#[ignore = "writes files for the ONNX Runtime check (notes/onnx.md)"]
fn write_ort_check_set() {
    let dir = PathBuf::from(std::env::var("CARDC_ORT_DIR").expect("set CARDC_ORT_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cards: Vec<(String, Card)> = builtin_names()
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            (
                a.to_string(),
                arch_card(a, small_width(a), true, 20 + i as u64),
            )
        })
        .collect();
    let mut m = Model::init(all_ops_graph(), 3).unwrap();
    perturb_bn(&mut m, 3);
    cards.push(("all-ops".into(), card_of(m)));
    for state in ["masked", "binary"] {
        for arch in ["resnet20", "vgg16"] {
            let mut card = arch_card(arch, small_width(arch), state == "masked", 31);
            let mut rng = Rng::derive(5, state);
            for (i, k) in card.model.prunable() {
                let t = &mut card.model.params[i][k];
                let mask: Vec<bool> = (0..t.data.len()).map(|_| rng.uniform() < 0.2).collect();
                t.state = if state == "masked" {
                    WeightState::Masked { mask }
                } else {
                    WeightState::Binary { mask, alpha: 0.1 }
                };
            }
            cards.push((format!("{arch}-{state}"), card));
        }
    }
    for (name, card) in cards {
        let x = images(&card.model, 4, 2);
        let logits = infer(&card.model, &x).unwrap().data;
        for (fold, opset) in [(false, 13), (true, 17)] {
            let stem = format!("{name}-{}-op{opset}", if fold { "folded" } else { "bn" });
            export_file(
                &card,
                &dir.join(format!("{stem}.onnx")),
                &ExportOptions {
                    opset,
                    fold_bn: fold,
                },
            )
            .unwrap();
            let j = serde_json::json!({"input_shape": x.shape, "input": x.data, "logits": logits});
            std::fs::write(dir.join(format!("{stem}.json")), j.to_string()).unwrap();
        }
    }
}
