//! Model descriptions (`models/*.toml`) and the graphs they build.
//!
//! Two families cover the architectures of the CARD study:
//! * `plain`: a VGG-style list of `c<N>` (3×3 conv, BN, ReLU) and `M`
//!   (2×2 max-pool) entries followed by hidden `fc` widths (Conv-4/8, VGG-16);
//! * `resnet`: a CIFAR stem (3×3 conv) and stages of basic blocks with
//!   1×1-conv projection shortcuts where the shape changes (ResNet-20,
//!   ResNet-18, WRN-18-2).
//!
//! `--width-mult` scales every channel count and hidden width.

use super::graph::{Graph, Node};
use super::op::{BatchNorm, Conv2d, Linear, Op, Pool};
use serde::Deserialize;
use std::path::Path;

/// The model descriptions shipped in `models/`, compiled into the binary.
pub const BUILTIN: &[(&str, &str)] = &[
    ("conv4", include_str!("../../models/conv4.toml")),
    ("conv8", include_str!("../../models/conv8.toml")),
    ("vgg16", include_str!("../../models/vgg16.toml")),
    ("resnet20", include_str!("../../models/resnet20.toml")),
    (
        "resnet20-bnn",
        include_str!("../../models/resnet20-bnn.toml"),
    ),
    ("resnet18", include_str!("../../models/resnet18.toml")),
    ("wrn-18-2", include_str!("../../models/wrn-18-2.toml")),
];

/// A parsed model description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelDesc {
    pub name: String,
    pub family: String,
    /// `[C, H, W]`, default `[3, 32, 32]`.
    #[serde(default = "default_input")]
    pub input: [usize; 3],
    #[serde(default = "default_classes")]
    pub classes: usize,
    /// BatchNorm after each conv (plain family); default true.
    #[serde(default = "default_true")]
    pub batchnorm: bool,
    /// plain: `c64`, `M`, ...
    #[serde(default)]
    pub layers: Vec<String>,
    /// plain: hidden fully connected widths before the classifier.
    #[serde(default)]
    pub fc: Vec<usize>,
    /// resnet: stem conv channels.
    #[serde(default)]
    pub stem: usize,
    /// resnet: `[channels, blocks, stride]` per stage.
    #[serde(default)]
    pub stages: Vec<[usize; 3]>,
    /// `relu` (default) or `sign`: binary activations. With `sign` every
    /// ReLU becomes a Sign; in the resnet family each block's convolutions
    /// read `Sign` of their input (Bi-Real Net / XNOR-Net style: block
    /// `x + bn2(conv2(sign(bn1(conv1(sign(x))))))`, real-valued shortcuts,
    /// no ReLU, so the residual stream keeps its sign information), and
    /// the stem has no activation.
    #[serde(default = "default_activation")]
    pub activation: String,
}

fn default_activation() -> String {
    "relu".into()
}

fn default_input() -> [usize; 3] {
    [3, 32, 32]
}
fn default_classes() -> usize {
    10
}
fn default_true() -> bool {
    true
}

/// Options applied when building a graph from a description.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub width_mult: f32,
    /// Affine BatchNorm (false for edge-popup and BiProp).
    pub affine_bn: bool,
    /// Override the number of classes (e.g. from the dataset).
    pub classes: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            width_mult: 1.0,
            affine_bn: true,
            classes: None,
        }
    }
}

/// Names of the built-in architectures.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// Reads `arch` as a built-in name or a path to a description file.
pub fn load_desc(arch: &str) -> anyhow::Result<ModelDesc> {
    let (text, origin) = if let Some((_, t)) = BUILTIN.iter().find(|(n, _)| *n == arch) {
        (t.to_string(), format!("built-in model '{arch}'"))
    } else if Path::new(arch).is_file() {
        let t = std::fs::read_to_string(arch)
            .map_err(|e| anyhow::anyhow!("cannot read model description {arch}: {e}"))?;
        (t, format!("model description {arch}"))
    } else {
        anyhow::bail!(
            "unknown architecture '{arch}': not a file and not one of {}",
            builtin_names().join(", ")
        );
    };
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| {
                format!(
                    " (line {})",
                    text[..s.start.min(text.len())].lines().count().max(1)
                )
            })
            .unwrap_or_default();
        anyhow::anyhow!("{origin}: {}{line}", e.message().trim())
    })
}

/// Builds the graph for `arch` (name or description path).
pub fn build(arch: &str, opts: &BuildOptions) -> anyhow::Result<Graph> {
    let desc = load_desc(arch)?;
    build_from_desc(&desc, opts).map_err(|e| anyhow::anyhow!("architecture '{arch}': {e}"))
}

struct Builder {
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
    affine_bn: bool,
    /// Binary activations (`activation = "sign"`).
    sign: bool,
}

impl Builder {
    fn push(&mut self, name: String, op: Op, inputs: Vec<usize>) -> Result<usize, String> {
        let ins: Vec<&Vec<usize>> = inputs.iter().map(|&i| &self.shapes[i]).collect();
        let s = op
            .output_shape(&ins)
            .map_err(|e| format!("layer '{name}': {e}"))?;
        self.nodes.push(Node { name, op, inputs });
        self.shapes.push(s);
        Ok(self.nodes.len() - 1)
    }
    fn channels(&self, id: usize) -> usize {
        self.shapes[id][0]
    }
    fn conv(
        &mut self,
        name: &str,
        x: usize,
        out: usize,
        k: usize,
        stride: usize,
    ) -> Result<usize, String> {
        let op = Op::Conv2d(Conv2d {
            in_channels: self.channels(x),
            out_channels: out,
            kernel: (k, k),
            stride: (stride, stride),
            padding: (k / 2, k / 2),
            groups: 1,
            bias: false,
        });
        self.push(name.to_string(), op, vec![x])
    }
    fn bn(&mut self, name: &str, x: usize) -> Result<usize, String> {
        let op = Op::BatchNorm(BatchNorm {
            channels: self.channels(x),
            affine: self.affine_bn,
            eps: 1e-5,
            momentum: 0.1,
        });
        self.push(name.to_string(), op, vec![x])
    }
    /// The description's activation: ReLU, or Sign for binary nets.
    fn relu(&mut self, name: &str, x: usize) -> Result<usize, String> {
        if self.sign {
            let name = name.replacen("relu", "sign", 1);
            self.push(name, Op::Sign, vec![x])
        } else {
            self.push(name.to_string(), Op::Relu, vec![x])
        }
    }
}

fn scale(c: usize, m: f32) -> usize {
    ((c as f32 * m).round() as usize).max(1)
}

/// Largest parameter count a description may ask for (1 GiB of f32): far
/// above every model in `models/` (ResNet-18 has 11 M), so that a typo such
/// as `c100000` is an error instead of an out-of-memory abort.
pub const MAX_PARAMS: usize = 1 << 28;
/// Largest input (C·H·W elements per image) a description may ask for.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 24;

/// Builds a graph from a parsed description.
pub fn build_from_desc(desc: &ModelDesc, opts: &BuildOptions) -> Result<Graph, String> {
    if !(opts.width_mult > 0.0 && opts.width_mult.is_finite()) {
        return Err(format!(
            "--width-mult must be positive, got {}",
            opts.width_mult
        ));
    }
    let classes = opts.classes.unwrap_or(desc.classes);
    if classes < 2 {
        return Err(format!("needs at least 2 classes, got {classes}"));
    }
    let [c, h, w] = desc.input;
    if c.checked_mul(h)
        .and_then(|n| n.checked_mul(w))
        .is_none_or(|n| n > MAX_INPUT_ELEMENTS)
    {
        return Err(format!(
            "input {c}x{h}x{w} is larger than {MAX_INPUT_ELEMENTS} elements"
        ));
    }
    let sign = match desc.activation.as_str() {
        "relu" => false,
        "sign" => true,
        other => return Err(format!("unknown activation '{other}' (relu or sign)")),
    };
    let mut b = Builder {
        nodes: Vec::new(),
        shapes: Vec::new(),
        affine_bn: opts.affine_bn,
        sign,
    };
    let mut x = b.push(
        "input".into(),
        Op::Input {
            channels: c,
            height: h,
            width: w,
        },
        vec![],
    )?;
    let m = opts.width_mult;
    match desc.family.as_str() {
        "plain" => {
            let (mut ci, mut pi) = (0, 0);
            for l in &desc.layers {
                if l == "M" {
                    pi += 1;
                    let p = Pool {
                        kernel: (2, 2),
                        stride: (2, 2),
                        padding: (0, 0),
                    };
                    x = b.push(format!("pool{pi}"), Op::MaxPool(p), vec![x])?;
                } else if let Some(n) = l.strip_prefix('c').and_then(|n| n.parse::<usize>().ok()) {
                    ci += 1;
                    x = b.conv(&format!("conv{ci}"), x, scale(n, m), 3, 1)?;
                    if desc.batchnorm {
                        x = b.bn(&format!("bn{ci}"), x)?;
                    }
                    x = b.relu(&format!("relu{ci}"), x)?;
                } else {
                    return Err(format!("unknown layer '{l}' (use c<channels> or M)"));
                }
            }
            x = b.push("flatten".into(), Op::Flatten, vec![x])?;
            for (i, &f) in desc.fc.iter().enumerate() {
                let inf = b.shapes[x][0];
                let op = Op::Linear(Linear {
                    in_features: inf,
                    out_features: scale(f, m),
                    bias: true,
                });
                x = b.push(format!("fc{}", i + 1), op, vec![x])?;
                x = b.relu(&format!("fc{}_relu", i + 1), x)?;
            }
        }
        "resnet" => {
            if desc.stem == 0 || desc.stages.is_empty() {
                return Err("resnet family needs `stem` and `stages`".into());
            }
            x = b.conv("conv1", x, scale(desc.stem, m), 3, 1)?;
            x = b.bn("bn1", x)?;
            if !sign {
                x = b.relu("relu1", x)?;
            }
            for (si, st) in desc.stages.iter().enumerate() {
                let [ch, blocks, stride] = *st;
                let ch = scale(ch, m);
                if blocks == 0 || stride == 0 {
                    return Err(format!("stage {} needs blocks ≥ 1 and stride ≥ 1", si + 1));
                }
                for bi in 0..blocks {
                    let p = format!("layer{}.{}", si + 1, bi);
                    let s = if bi == 0 { stride } else { 1 };
                    let inp = x;
                    let first = if sign {
                        b.push(format!("{p}.sign0"), Op::Sign, vec![inp])?
                    } else {
                        inp
                    };
                    let mut y = b.conv(&format!("{p}.conv1"), first, ch, 3, s)?;
                    y = b.bn(&format!("{p}.bn1"), y)?;
                    y = b.relu(&format!("{p}.relu1"), y)?;
                    y = b.conv(&format!("{p}.conv2"), y, ch, 3, 1)?;
                    y = b.bn(&format!("{p}.bn2"), y)?;
                    let short = if s != 1 || b.channels(inp) != ch {
                        let z = b.conv(&format!("{p}.shortcut.conv"), inp, ch, 1, s)?;
                        b.bn(&format!("{p}.shortcut.bn"), z)?
                    } else {
                        inp
                    };
                    let sum = b.push(format!("{p}.add"), Op::Add, vec![y, short])?;
                    x = if sign {
                        sum
                    } else {
                        b.relu(&format!("{p}.relu2"), sum)?
                    };
                }
            }
            x = b.push("avgpool".into(), Op::GlobalAvgPool, vec![x])?;
        }
        other => return Err(format!("unknown family '{other}' (plain or resnet)")),
    }
    let inf = b.shapes[x][0];
    let op = Op::Linear(Linear {
        in_features: inf,
        out_features: classes,
        bias: true,
    });
    b.push("classifier".into(), op, vec![x])?;
    let g = Graph {
        name: desc.name.clone(),
        nodes: b.nodes,
    };
    g.shapes()?;
    let params: usize = g
        .nodes
        .iter()
        .flat_map(|n| n.op.param_specs())
        .map(|p| p.shape.iter().product::<usize>())
        .fold(0, usize::saturating_add);
    if params > MAX_PARAMS {
        return Err(format!(
            "{params} parameters is more than the {MAX_PARAMS} a description may ask for"
        ));
    }
    Ok(g)
}
