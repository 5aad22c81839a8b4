//! The WGSL kernels of `shaders/` and their compute pipelines.
//!
//! Every kernel uses one binding layout: 0 a uniform parameter block,
//! 1..=3 read-only storage inputs, 4..=5 read-write storage outputs. One
//! layout means one bind-group builder, and kernels of different files can
//! share buffers without per-kernel layouts.

use std::collections::HashMap;
use std::sync::Mutex;

/// Shader sources, compiled into the binary.
pub const SHADERS: &[(&str, &str)] = &[
    ("gemm.wgsl", include_str!("../../../shaders/gemm.wgsl")),
    ("ops.wgsl", include_str!("../../../shaders/ops.wgsl")),
    ("norm.wgsl", include_str!("../../../shaders/norm.wgsl")),
    (
        "augment.wgsl",
        include_str!("../../../shaders/augment.wgsl"),
    ),
];

/// Which implicit-GEMM operand mapping `gemm.wgsl` runs (its `MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmMode {
    ConvForward = 0,
    ConvInputGrad = 1,
    ConvWeightGrad = 2,
    LinearForward = 3,
    LinearInputGrad = 4,
    LinearWeightGrad = 5,
}

/// Register tile of one GEMM thread (`TM` rows x `TN` columns, each 1, 2,
/// 4 or 8): the workgroup tile is 16 times that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub tm: u32,
    pub tn: u32,
}

/// Register tile sizes `gemm.wgsl` is generated for.
pub const TILE_SIZES: [u32; 4] = [1, 2, 4, 8];

/// The smallest tile size whose 16-wide multiple covers `d` (up to 128).
fn fit(d: usize) -> u32 {
    (d.clamp(1, 128).div_ceil(16).next_power_of_two() as u32).clamp(1, 8)
}

impl Tile {
    /// The tile for an `m x n` GEMM in `z` groups: as large as the shape
    /// allows without computing padding (a 16-channel layer gets 16-wide
    /// tiles), shrunk towards 4 x 4 while that leaves fewer than
    /// `min_groups` workgroups (the backend asks for 256, two per
    /// multiprocessor of a large GPU).
    pub fn pick(m: usize, n: usize, z: usize, min_groups: usize) -> Tile {
        let mut t = Tile {
            tm: fit(m),
            tn: fit(n),
        };
        while t.groups(m, n, z) < min_groups && (t.tm > 4 || t.tn > 4) {
            if t.tm >= t.tn {
                t.tm /= 2;
            } else {
                t.tn /= 2;
            }
        }
        t
    }
    /// Workgroups for an `m x n` GEMM in `z` groups.
    pub fn groups(self, m: usize, n: usize, z: usize) -> usize {
        m.div_ceil(self.rows()) * n.div_ceil(self.cols()) * z
    }
    /// Workgroup tile rows.
    pub fn rows(self) -> usize {
        16 * self.tm as usize
    }
    /// Workgroup tile columns.
    pub fn cols(self) -> usize {
        16 * self.tn as usize
    }
    /// Every tile the backend may pick.
    pub fn all() -> impl Iterator<Item = Tile> {
        TILE_SIZES
            .iter()
            .flat_map(|&tm| TILE_SIZES.iter().map(move |&tn| Tile { tm, tn }))
    }
}

/// `gemm.wgsl` for one register tile: the `//!` lines become the tile
/// sizes and straight-line code over one named register per output.
pub fn gemm_source(t: Tile) -> String {
    let (tm, tn) = (t.tm, t.tn);
    let mut acc = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for i in 0..tm {
        for j in 0..tn {
            acc += &format!("    var c{i}_{j} = 0.0;\n");
        }
    }
    for i in 0..tm {
        fma += &format!("            let a{i} = As[ra + {}u];\n", 16 * i);
    }
    for j in 0..tn {
        fma += &format!("            let b{j} = Bs[rb + {}u];\n", 16 * j);
    }
    for i in 0..tm {
        for j in 0..tn {
            fma += &format!("            c{i}_{j} = fma(a{i}, b{j}, c{i}_{j});\n");
        }
    }
    for i in 0..tm {
        store += &format!(
            "    {{\n        let m = m0 + lid.y + {}u;\n        if (m < G.m) {{\n",
            16 * i
        );
        for j in 0..tn {
            store += &format!(
                "            if (n0 + lid.x + {0}u < G.n) {{ store(m, n0 + lid.x + {0}u, g, z, c{i}_{j}); }}\n",
                16 * j
            );
        }
        store += "        }\n    }\n";
    }
    SHADERS[0]
        .1
        .lines()
        .map(|l| match l.trim() {
            "const TM: u32 = 4u; //! TM" => format!("const TM: u32 = {tm}u;\n"),
            "const TN: u32 = 4u; //! TN" => format!("const TN: u32 = {tn}u;\n"),
            "//! ACC" => acc.clone(),
            "//! FMA" => fma.clone(),
            "//! STORE" => store.clone(),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// A compute kernel: an entry point of one of the shader files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    Gemm(GemmMode, Tile),
    /// An entry point of `ops.wgsl`.
    Op(&'static str),
    /// An entry point of `norm.wgsl`.
    Norm(&'static str),
    /// The crop, flip and normalization of raw training batches
    /// (`augment.wgsl`).
    Augment,
}

/// Parses and validates every shader with naga (the same front end wgpu
/// uses), so a WGSL error names the file and line before any device exists.
pub fn validate_all() -> anyhow::Result<()> {
    let mut sources: Vec<(String, String)> = SHADERS
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    for t in Tile::all() {
        sources.push((
            format!("gemm.wgsl ({}x{} tile)", t.tm, t.tn),
            gemm_source(t),
        ));
    }
    for (name, src) in &sources {
        let src = src.as_str();
        let module = naga::front::wgsl::parse_str(src)
            .map_err(|e| anyhow::anyhow!("shaders/{name}: {}", e.emit_to_string(src)))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| anyhow::anyhow!("shaders/{name}: {}", e.emit_to_string(src)))?;
    }
    Ok(())
}

/// The pipelines of the kernels, compiled on first use, and their shared
/// layout.
pub struct Pipelines {
    pub layout: wgpu::BindGroupLayout,
    pipeline_layout: wgpu::PipelineLayout,
    /// `ops.wgsl`, `norm.wgsl` and `augment.wgsl`.
    modules: [wgpu::ShaderModule; 3],
    /// `gemm.wgsl` per register tile, generated on first use.
    gemm: Mutex<HashMap<Tile, wgpu::ShaderModule>>,
    map: Mutex<HashMap<Kernel, wgpu::ComputePipeline>>,
}

fn layout_entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Pipelines {
    /// Creates the shader modules and the shared layout for `device`.
    pub fn new(device: &wgpu::Device) -> Pipelines {
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let rw = wgpu::BufferBindingType::Storage { read_only: false };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("cardc kernels"),
            entries: &[
                layout_entry(0, wgpu::BufferBindingType::Uniform),
                layout_entry(1, ro),
                layout_entry(2, ro),
                layout_entry(3, ro),
                layout_entry(4, rw),
                layout_entry(5, rw),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("cardc kernels"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = |i: usize| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(SHADERS[i].0),
                source: wgpu::ShaderSource::Wgsl(SHADERS[i].1.into()),
            })
        };
        Pipelines {
            layout,
            pipeline_layout,
            modules: [module(1), module(2), module(3)],
            gemm: Mutex::new(HashMap::new()),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The pipeline of `k`, compiled on first use.
    pub fn get(&self, device: &wgpu::Device, k: Kernel) -> wgpu::ComputePipeline {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(k)
            .or_insert_with(|| {
                let (module, entry, constants): (_, &str, Vec<(&str, f64)>) = match k {
                    Kernel::Gemm(mode, t) => {
                        let mut gemm = self.gemm.lock().unwrap_or_else(|e| e.into_inner());
                        let m = gemm
                            .entry(t)
                            .or_insert_with(|| {
                                device.create_shader_module(wgpu::ShaderModuleDescriptor {
                                    label: Some("gemm.wgsl"),
                                    source: wgpu::ShaderSource::Wgsl(gemm_source(t).into()),
                                })
                            })
                            .clone();
                        (m, "main", vec![("MODE", mode as u32 as f64)])
                    }
                    Kernel::Op(e) => (self.modules[0].clone(), e, Vec::new()),
                    Kernel::Norm(e) => (self.modules[1].clone(), e, Vec::new()),
                    Kernel::Augment => (self.modules[2].clone(), "augment_nhwc", Vec::new()),
                };
                device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(entry),
                    layout: Some(&self.pipeline_layout),
                    module: &module,
                    entry_point: Some(entry),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        // Every kernel writes its shared tiles before reading them.
                        zero_initialize_workgroup_memory: false,
                    },
                    cache: None,
                })
            })
            .clone()
    }
}
