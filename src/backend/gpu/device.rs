//! The wgpu device: adapter choice, limits, buffers, and reading results back.

use super::kernels::Pipelines;
use anyhow::{Context, anyhow, bail};

/// An open GPU (or lavapipe) with the backend's pipelines.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub pipelines: Pipelines,
    /// `name (device type, driver)` as recorded in provenance.
    pub description: String,
    pub limits: wgpu::Limits,
    /// Bound to unused read-only slots.
    pub dummy_r: wgpu::Buffer,
    /// Bound to unused read-write slots (two: writable bindings may not alias).
    pub dummy_w: [wgpu::Buffer; 2],
}

/// Every adapter Vulkan offers, best first: discrete, integrated, virtual,
/// then CPU implementations (lavapipe).
fn ranked_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    adapters.sort_by_key(rank);
    adapters
}

impl Gpu {
    /// Opens the best Vulkan adapter. With `require_hardware`, a CPU
    /// implementation is refused (`--backend auto` then falls back to the
    /// CPU backend, which is faster than lavapipe).
    pub fn open(require_hardware: bool) -> anyhow::Result<Gpu> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: wgpu::Backends::VULKAN,
            ..wgpu::InstanceDescriptor::new_without_display_handle_from_env()
        });
        let adapters = ranked_adapters(&instance);
        let Some(adapter) = adapters.into_iter().next() else {
            bail!(
                "no Vulkan adapter found: install a GPU driver, or lavapipe (Debian: mesa-vulkan-drivers) for a CPU-emulated one"
            );
        };
        let info = adapter.get_info();
        let hardware = info.device_type != wgpu::DeviceType::Cpu;
        if require_hardware && !hardware {
            bail!("only a CPU Vulkan implementation ({}) was found", info.name);
        }
        // The adapter's real limits, not WebGPU's defaults: activations of a
        // batch of 256 exceed the default 128 MiB binding size.
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("cardc"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("opening Vulkan device '{}'", info.name))?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipelines = Pipelines::new(&device);
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("compiling the WGSL kernels on '{}': {e}", info.name);
        }
        let small = |label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        };
        let dummy_r = small("unused input");
        let dummy_w = [small("unused output 0"), small("unused output 1")];
        let description = format!(
            "wgpu/Vulkan: {} ({:?}, {} {})",
            info.name, info.device_type, info.driver, info.driver_info
        )
        .trim_end()
        .to_string();
        Ok(Gpu {
            device,
            queue,
            pipelines,
            description,
            limits,
            dummy_r,
            dummy_w,
        })
    }

    /// A storage buffer of `floats` 32-bit values, checked against the
    /// device's limits so that a model or batch too large gets a clear error.
    pub fn storage(&self, floats: usize, what: &str) -> anyhow::Result<wgpu::Buffer> {
        let bytes = (floats.max(4) as u64) * 4;
        let cap = self
            .limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size);
        if bytes > cap {
            bail!(
                "{what} needs {bytes} bytes in one buffer, over this GPU's {cap}-byte binding limit; lower --batch"
            );
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// Reads `floats` values of `buf` from `offset` (in floats), waiting
    /// for the queue.
    pub fn read(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        floats: usize,
    ) -> anyhow::Result<Vec<f32>> {
        Ok(self
            .read_many(&[(buf, offset, floats)])?
            .pop()
            .unwrap_or_default())
    }

    /// Reads several ranges in one copy and one wait.
    pub fn read_many(
        &self,
        ranges: &[(&wgpu::Buffer, usize, usize)],
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        let total: usize = ranges.iter().map(|r| r.2).sum();
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: (total.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        let mut at = 0u64;
        for (buf, off, n) in ranges {
            if *n > 0 {
                enc.copy_buffer_to_buffer(buf, (*off * 4) as u64, &staging, at, (*n * 4) as u64);
            }
            at += (*n * 4) as u64;
        }
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow!("waiting for the GPU: {e}"))?;
        rx.recv()
            .map_err(|_| anyhow!("GPU readback was dropped"))?
            .map_err(|e| anyhow!("mapping a GPU buffer for reading: {e}"))?;
        let data = slice
            .get_mapped_range()
            .map_err(|e| anyhow!("reading a mapped GPU buffer: {e}"))?;
        let all: &[f32] = bytemuck::cast_slice(&data);
        let mut out = Vec::with_capacity(ranges.len());
        let mut at = 0;
        for (_, _, n) in ranges {
            out.push(all[at..at + n].to_vec());
            at += n;
        }
        drop(data);
        staging.unmap();
        Ok(out)
    }

    /// Uploads `data` at `offset` floats into `buf`.
    pub fn write<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: usize, data: &[T]) {
        if !data.is_empty() {
            self.queue
                .write_buffer(buf, (offset * 4) as u64, bytemuck::cast_slice(data));
        }
    }
}
