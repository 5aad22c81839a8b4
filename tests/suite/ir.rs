//! Model IR: parameter and MAC counts of the built-in architectures against
//! the standard figures, shape rules and description errors.

use cardc::ir::models::{BuildOptions, build};
use cardc::ir::{Conv2d, Graph, Node, Op};
use cardc::model::Model;

fn counts(arch: &str, width: f32) -> (usize, u64) {
    let opts = BuildOptions {
        width_mult: width,
        ..Default::default()
    };
    let g = build(arch, &opts).expect("builds");
    let macs = g.macs().expect("shapes");
    let m = Model::init(g, 0).expect("init");
    (m.param_count(), macs)
}

#[test]
fn resnet20_has_standard_counts() {
    let (p, macs) = counts("resnet20", 1.0);
    // 0.27 M parameters, 40.8 M MACs (with 1x1 projection shortcuts).
    assert!((265_000..=275_000).contains(&p), "params {p}");
    assert!((40_700_000..=40_900_000).contains(&macs), "macs {macs}");
}

#[test]
fn resnet18_has_standard_counts() {
    let (p, macs) = counts("resnet18", 1.0);
    // 11.17 M parameters, 555 M MACs.
    assert!((11_150_000..=11_200_000).contains(&p), "params {p}");
    assert!((554_000_000..=557_000_000).contains(&macs), "macs {macs}");
}

#[test]
fn conv8_matches_the_research_table() {
    let (_, macs) = counts("conv8", 1.0);
    assert!((209_000_000..=211_000_000).contains(&macs), "macs {macs}");
}

#[test]
fn other_builtins_build_and_width_mult_scales() {
    for arch in ["conv4", "vgg16", "wrn-18-2"] {
        let (p, macs) = counts(arch, 1.0);
        assert!(p > 0 && macs > 0, "{arch}");
    }
    // VGG-16 (CIFAR, BN) ~14.7 M parameters, ~313 M MACs.
    let (p, macs) = counts("vgg16", 1.0);
    assert!((14_700_000..=14_800_000).contains(&p), "vgg16 params {p}");
    assert!(
        (312_000_000..=315_000_000).contains(&macs),
        "vgg16 macs {macs}"
    );
    // Doubling the width of ResNet-18 is WRN-18-2: ~4x the parameters.
    let (p1, _) = counts("resnet18", 1.0);
    let (p2, _) = counts("resnet18", 2.0);
    let (pw, _) = counts("wrn-18-2", 1.0);
    assert_eq!(p2, pw);
    assert!(p2 > 3 * p1 && p2 < 5 * p1);
    let (ph, _) = counts("resnet20", 0.5);
    assert!(ph < 80_000, "half-width resnet20 params {ph}");
}

#[test]
fn unknown_arch_and_bad_description_are_refused() {
    let e = build("resnet9000", &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet9000") && e.contains("resnet20"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "name = \"x\"\nfamily = \"plain\"\nlayers = [\"q12\"]\n").unwrap();
    let e = build(p.to_str().unwrap(), &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("q12"), "{e}");
    std::fs::write(&p, "name = \"x\"\nfamily = \"plain\"\nbogus = 1\n").unwrap();
    let e = build(p.to_str().unwrap(), &BuildOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.toml") && e.contains("bogus"), "{e}");
    let bad_width = BuildOptions {
        width_mult: -1.0,
        ..Default::default()
    };
    assert!(build("conv4", &bad_width).is_err());
}

#[test]
fn user_description_file_builds() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.toml");
    std::fs::write(
        &p,
        "name = \"tiny\"\nfamily = \"plain\"\ninput = [1, 28, 28]\nclasses = 5\nlayers = [\"c8\", \"M\"]\nfc = [16]\n",
    )
    .unwrap();
    let g = build(p.to_str().unwrap(), &BuildOptions::default()).unwrap();
    assert_eq!(g.input_shape(), [1, 28, 28]);
    assert_eq!(g.classes(), 5);
    // conv 1*8*9*784 + fc 1568*16 + 16*5
    assert_eq!(g.macs().unwrap(), 8 * 9 * 784 + 1568 * 16 + 16 * 5);
}

#[test]
fn shape_rules_reject_mismatches() {
    let conv = |cin, groups| {
        Op::Conv2d(Conv2d {
            in_channels: cin,
            out_channels: 4,
            kernel: (3, 3),
            stride: (1, 1),
            padding: (1, 1),
            groups,
            bias: false,
        })
    };
    let input = Node {
        name: "input".into(),
        op: Op::Input {
            channels: 3,
            height: 8,
            width: 8,
        },
        inputs: vec![],
    };
    let g = Graph {
        name: "t".into(),
        nodes: vec![
            input.clone(),
            Node {
                name: "c".into(),
                op: conv(2, 1),
                inputs: vec![0],
            },
        ],
    };
    let e = g.shapes().unwrap_err();
    assert!(e.contains("'c'") && e.contains("input channels"), "{e}");
    let g = Graph {
        name: "t".into(),
        nodes: vec![
            input.clone(),
            Node {
                name: "c".into(),
                op: conv(3, 2),
                inputs: vec![0],
            },
        ],
    };
    assert!(g.shapes().unwrap_err().contains("groups"));
    let g = Graph {
        name: "t".into(),
        nodes: vec![
            input,
            Node {
                name: "fwd".into(),
                op: Op::Relu,
                inputs: vec![2],
            },
        ],
    };
    assert!(g.shapes().unwrap_err().contains("does not come before"));
}
