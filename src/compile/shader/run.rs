//! Running a shader artifact through wgpu, the way a host program would:
//! read `schedule.json` and `weights.bin`, load the shader file of the
//! artifact's language (the translated SPIR-V or GLSL itself, not the WGSL
//! it came from), and replay the dispatches over batches of images.

use super::{PARAM_STRIDE, SCHEDULE_FILE, Schedule, WEIGHTS_FILE, WORKGROUP, translate};
use crate::backend::gpu::Device;
use crate::compile::artifact::Output;
use anyhow::{Context, anyhow, bail};
use std::path::Path;
use std::time::Instant;

/// Images per GPU submission (fewer when the arena would not fit).
const BATCH: usize = 256;

/// Reads and checks `schedule.json` and `weights.bin` of `dir`.
pub fn load(dir: &Path) -> anyhow::Result<(Schedule, Vec<u32>)> {
    let p = dir.join(SCHEDULE_FILE);
    let text =
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let s: Schedule =
        serde_json::from_str(&text).with_context(|| format!("{}: damaged", p.display()))?;
    let p = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    if bytes.len() != 4 * s.weight_words as usize {
        bail!(
            "{}: {} bytes, but {SCHEDULE_FILE} says {} words",
            p.display(),
            bytes.len(),
            s.weight_words
        );
    }
    let words = bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for d in &s.dispatches {
        if d.params.len() != super::PARAM_FIELDS.len() || !s.entry_points.contains_key(&d.entry) {
            bail!(
                "{}: dispatch '{}' has a bad entry point or parameter block",
                dir.join(SCHEDULE_FILE).display(),
                d.step
            );
        }
    }
    Ok((s, words))
}

/// The shader module(s) of the artifact: one for every entry point
/// (wgsl, spirv) or one per entry point (glsl), with the entry name to use.
fn modules(
    dir: &Path,
    s: &Schedule,
    gpu: &Device,
) -> anyhow::Result<Vec<(String, wgpu::ShaderModule, String)>> {
    let read_text = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
    };
    let make = |label: &str, source: wgpu::ShaderSource| {
        gpu.device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source,
            })
    };
    let entries = s.entry_points.iter();
    Ok(match s.language.as_str() {
        "wgsl" => {
            let m = make(
                &s.shader,
                wgpu::ShaderSource::Wgsl(read_text(&s.shader)?.into()),
            );
            entries
                .map(|(e, n)| (e.clone(), m.clone(), n.clone()))
                .collect()
        }
        "spirv" => {
            let p = dir.join(&s.shader);
            let bytes =
                std::fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
            if !bytes.len().is_multiple_of(4) {
                bail!("{}: not SPIR-V (length not a multiple of 4)", p.display());
            }
            let words: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let m = make(&s.shader, wgpu::ShaderSource::SpirV(words.into()));
            entries
                .map(|(e, n)| (e.clone(), m.clone(), n.clone()))
                .collect()
        }
        "glsl" => {
            let mut out = Vec::new();
            for (e, n) in entries {
                let file = translate::glsl_file(e);
                let m = make(
                    &file,
                    wgpu::ShaderSource::Glsl {
                        shader: read_text(&file)?.into(),
                        stage: naga::ShaderStage::Compute,
                        defines: &[],
                    },
                );
                out.push((e.clone(), m, n.clone()));
            }
            out
        }
        "msl" => bail!(
            "{}: Metal shaders run on Apple GPUs only; this machine validated them at compile time. \
             Compile with --target spirv, glsl or wgsl to run the same kernels here",
            dir.display()
        ),
        other => bail!("{}: unknown shader language '{other}'", dir.display()),
    })
}

fn layout_entry(
    binding: u32,
    ty: wgpu::BufferBindingType,
    dynamic: bool,
) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: dynamic,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Workgroups of a dispatch over `elements` per image and `images`.
fn groups(elements: u32, images: u32) -> (u32, u32, u32) {
    let g = elements.div_ceil(WORKGROUP).max(1);
    let x = g.min(65535);
    (x, g.div_ceil(x), images)
}

/// The loaded artifact on a device: pipelines, weights and parameters.
struct Runner {
    gpu: Device,
    schedule: Schedule,
    layout: wgpu::BindGroupLayout,
    pipelines: Vec<wgpu::ComputePipeline>,
    params: wgpu::Buffer,
    weights: wgpu::Buffer,
}

impl Runner {
    fn new(dir: &Path) -> anyhow::Result<Runner> {
        let (schedule, blob) = load(dir)?;
        let gpu = Device::open(false)?;
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mods = modules(dir, &schedule, &gpu)?;
        let ro = wgpu::BufferBindingType::Storage { read_only: true };
        let layout = gpu
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("cardc inference"),
                entries: &[
                    layout_entry(0, wgpu::BufferBindingType::Uniform, true),
                    layout_entry(
                        1,
                        wgpu::BufferBindingType::Storage { read_only: false },
                        false,
                    ),
                    layout_entry(2, ro, false),
                    layout_entry(3, ro, false),
                ],
            });
        let pipeline_layout = gpu
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("cardc inference"),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let mut pipelines = Vec::new();
        for d in &schedule.dispatches {
            let (_, module, name) = mods
                .iter()
                .find(|(e, _, _)| *e == d.entry)
                .ok_or_else(|| anyhow!("no shader for entry point {}", d.entry))?;
            pipelines.push(
                gpu.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(&d.step),
                        layout: Some(&pipeline_layout),
                        module,
                        entry_point: Some(name),
                        compilation_options: Default::default(),
                        cache: None,
                    }),
            );
        }
        let mut block = vec![0u32; schedule.dispatches.len() * (PARAM_STRIDE as usize / 4)];
        for (i, d) in schedule.dispatches.iter().enumerate() {
            let at = i * PARAM_STRIDE as usize / 4;
            block[at..at + d.params.len()].copy_from_slice(&d.params);
        }
        let params = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("parameter blocks"),
            size: 4 * block.len().max(64) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        gpu.write(&params, 0, &block);
        let weights = gpu.storage(blob.len(), "weights.bin")?;
        gpu.write(&weights, 0, &blob);
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("{}: loading the shaders on the GPU: {e}", dir.display());
        }
        Ok(Runner {
            gpu,
            schedule,
            layout,
            pipelines,
            params,
            weights,
        })
    }

    /// Images per submission that fit the device's binding limit.
    fn batch(&self) -> usize {
        let cap = self.gpu.limits.max_storage_buffer_binding_size as usize;
        let per = 4 * self.schedule.arena_floats.max(1) as usize;
        (cap / per).clamp(1, BATCH)
    }

    /// Logits (`images × classes`) of `images` (raw bytes back to back).
    fn infer(
        &self,
        images: &[u8],
        arena: &wgpu::Buffer,
        input: &wgpu::Buffer,
    ) -> anyhow::Result<Vec<f32>> {
        let s = &self.schedule;
        let per = s.image_bytes as usize;
        let n = images.len() / per.max(1);
        // Each image padded to whole words.
        let mut words = vec![0u8; n * 4 * s.image_words as usize];
        for (i, img) in images.chunks(per).enumerate() {
            let at = i * 4 * s.image_words as usize;
            words[at..at + per].copy_from_slice(img);
        }
        self.gpu.write(input, 0, &words);
        let bind = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &self.params,
                            offset: 0,
                            size: wgpu::BufferSize::new(4 * super::PARAM_FIELDS.len() as u64),
                        }),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: arena.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: self.weights.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: input.as_entire_binding(),
                    },
                ],
            });
        let mut enc = self
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            for (i, (d, p)) in s.dispatches.iter().zip(&self.pipelines).enumerate() {
                pass.set_pipeline(p);
                pass.set_bind_group(0, &bind, &[i as u32 * PARAM_STRIDE]);
                let (x, y, z) = groups(d.elements, n as u32);
                pass.dispatch_workgroups(x, y, z);
            }
        }
        self.gpu.queue.submit([enc.finish()]);
        let ranges: Vec<(&wgpu::Buffer, usize, usize)> = (0..n)
            .map(|z| {
                let at = z * s.arena_floats as usize + s.logits_offset as usize;
                (arena, at, s.classes as usize)
            })
            .collect();
        Ok(self.gpu.read_many(&ranges)?.concat())
    }
}

/// Runs the shader artifact in `dir` on `images` (raw bytes, back to back):
/// logits, and the median latency of one image (submit to result).
pub fn execute(dir: &Path, images: &[u8]) -> anyhow::Result<Output> {
    let r = Runner::new(dir)?;
    let s = &r.schedule;
    let per = s.image_bytes as usize;
    if per == 0 || !images.len().is_multiple_of(per) {
        bail!(
            "{} bytes of images are not whole {per}-byte images",
            images.len()
        );
    }
    let batch = r.batch();
    let arena = r
        .gpu
        .storage(batch * s.arena_floats as usize, "activation arena")?;
    let input = r
        .gpu
        .storage(batch * s.image_words as usize, "input images")?;
    let scope = r.gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let mut logits = Vec::with_capacity(images.len() / per * s.classes as usize);
    for chunk in images.chunks(batch * per) {
        logits.extend(r.infer(chunk, &arena, &input)?);
    }
    // Single-image latency: median of a few runs after the first.
    let mut times = Vec::new();
    if let Some(first) = images.get(..per) {
        for _ in 0..6 {
            let t = Instant::now();
            r.infer(first, &arena, &input)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.remove(0);
    }
    if let Some(e) = pollster::block_on(scope.pop()) {
        bail!("{}: running the shaders: {e}", dir.display());
    }
    times.sort_by(f64::total_cmp);
    Ok(Output {
        logits,
        median_ms: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        ..Output::default()
    })
}
