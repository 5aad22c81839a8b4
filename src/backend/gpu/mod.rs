//! The wgpu backend: WGSL compute kernels (`shaders/`) for the forward and
//! backward of every IR operator, the fused softmax cross-entropy and the
//! SGD update, run through wgpu on Vulkan (a real GPU, or lavapipe on a
//! machine without one).
//!
//! A graph is lowered once per batch size into a [`plan::Plan`]: buffers,
//! parameter blocks and bind groups are built once, and a training step
//! records every dispatch (effective weights, forward, loss, backward,
//! update) into one command encoder and one submit. During training the
//! weights, momentum buffers and BatchNorm running statistics stay on the
//! device; [`crate::backend::Backend::sync`] copies them back into the
//! model when the host needs it (evaluation, checkpoints, pruning).

mod device;
pub mod kernels;
mod plan;

use super::cpu::{check_batch_images, check_images, check_labels};
use super::{Backend, Batch, BatchGradients, Images, Loss, StepStats};
use crate::model::Model;
use crate::tensor::Tensor;
use crate::train::optim::Sgd;
use anyhow::{Context, bail};
use device::Gpu;
use plan::{Params, Plan, PlanMode};

pub use device::Gpu as Device;
pub use kernels::validate_all as validate_shaders;

/// Whether the machine has GPU device nodes (`/dev/nvidia*`, DRM render
/// nodes): `--backend auto` only asks Vulkan for a GPU then, so a machine
/// without one does not start a Vulkan instance on every command.
pub fn device_nodes_present() -> bool {
    let any = |dir: &str, prefix: &str| {
        std::fs::read_dir(dir).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(prefix))
        })
    };
    any("/dev", "nvidia") || any("/dev/dri", "renderD")
}

/// The model state a backend holds on the device.
struct Session {
    graph: crate::ir::Graph,
    params: Params,
    plans: Vec<Plan>,
    /// The device holds newer weights than the host model (training).
    resident: bool,
}

/// The wgpu training/inference backend.
pub struct WgpuBackend {
    gpu: Gpu,
    session: Option<Session>,
    /// Workgroups a GEMM tile choice must keep (larger tiles only where
    /// the layer still fills the GPU).
    min_groups: usize,
    /// Training steps between reads of the loss and accuracy totals: each
    /// read waits for the GPU to drain, so they are not read every step.
    stats_every: usize,
    /// Training steps since the last read.
    unreported: usize,
}

impl WgpuBackend {
    /// Opens the best Vulkan adapter (`require_hardware`: refuse lavapipe).
    pub fn new(require_hardware: bool) -> anyhow::Result<WgpuBackend> {
        Ok(WgpuBackend {
            gpu: Gpu::open(require_hardware)?,
            session: None,
            min_groups: 256,
            stats_every: 16,
            unreported: 0,
        })
    }

    /// Reads the training statistics back every `steps` training steps
    /// (at least 1; 16 by default).
    pub fn set_stats_every(&mut self, steps: usize) {
        self.stats_every = steps.max(1);
    }

    /// Makes every GEMM take the largest register tile its shape allows,
    /// however few workgroups that leaves (tests exercise the 128-wide
    /// tiles on small shapes with this). Drops plans built before.
    pub fn prefer_large_tiles(&mut self) {
        self.min_groups = 0;
        self.session = None;
    }

    /// Index of the plan for `(batch, mode)`, building it on first use.
    fn plan(
        gpu: &Gpu,
        s: &mut Session,
        model: &Model,
        batch: usize,
        mode: PlanMode,
        min_groups: usize,
    ) -> anyhow::Result<usize> {
        if let Some(i) = s
            .plans
            .iter()
            .position(|p| p.batch == batch && p.mode == mode)
        {
            return Ok(i);
        }
        // Plans of other batch sizes (a last partial batch) are kept: a
        // few at most, and rebuilding one costs more than its memory.
        if s.plans.len() >= 4 {
            s.plans.remove(0);
        }
        let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = gpu.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let plan = Plan::new(gpu, model, &s.params, batch, mode, min_groups);
        if let Some(e) = pollster::block_on(oom.pop()) {
            bail!("the GPU ran out of memory for batch {batch}: {e}; lower --batch");
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            bail!("building the GPU plan for batch {batch}: {e}");
        }
        s.plans.push(plan?);
        Ok(s.plans.len() - 1)
    }

    /// Records the plan's steps (and the update when given an lr) into one
    /// encoder and submits it.
    fn submit(gpu: &Gpu, s: &Session, plan: &Plan, raw: bool, update: bool) -> anyhow::Result<()> {
        if std::env::var_os("CARDC_GPU_PROFILE").is_some() {
            return Self::submit_profiled(gpu, s, plan, raw, update);
        }
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("step"),
            });
        if plan.mode == PlanMode::Train {
            enc.clear_buffer(&s.params.grads, 0, None);
        }
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for st in plan.dispatches(raw, update) {
                pass.set_pipeline(&st.pipeline);
                pass.set_bind_group(0, &st.bind, &[]);
                pass.dispatch_workgroups(st.groups[0], st.groups[1], st.groups[2]);
            }
        }
        gpu.queue.submit([enc.finish()]);
        Ok(())
    }

    /// [`Self::submit`] one dispatch at a time, waiting for each: prints
    /// where a step's time goes (`CARDC_GPU_PROFILE=1`, a diagnostic; the
    /// waits make the step itself slower).
    fn submit_profiled(
        gpu: &Gpu,
        s: &Session,
        plan: &Plan,
        raw: bool,
        update: bool,
    ) -> anyhow::Result<()> {
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("clear"),
            });
        if plan.mode == PlanMode::Train {
            enc.clear_buffer(&s.params.grads, 0, None);
        }
        gpu.queue.submit([enc.finish()]);
        let wait = || {
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| anyhow::anyhow!("waiting for the GPU: {e}"))
        };
        wait()?;
        let mut by_kernel: std::collections::HashMap<String, (f64, usize)> = Default::default();
        for st in plan.dispatches(raw, update) {
            let t = std::time::Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&st.pipeline);
                pass.set_bind_group(0, &st.bind, &[]);
                pass.dispatch_workgroups(st.groups[0], st.groups[1], st.groups[2]);
            }
            gpu.queue.submit([enc.finish()]);
            wait()?;
            let e = by_kernel.entry(format!("{:?}", st.kernel)).or_default();
            e.0 += t.elapsed().as_secs_f64() * 1e3;
            e.1 += 1;
        }
        let mut v: Vec<_> = by_kernel.into_iter().collect();
        v.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        let total: f64 = v.iter().map(|x| x.1.0).sum();
        eprintln!("gpu profile: {total:.2} ms in {} kernels", v.len());
        for (k, (ms, n)) in v.iter().take(12) {
            eprintln!("  {ms:9.3} ms {n:4}x {k}");
        }
        Ok(())
    }

    /// Uploads the batch's images (and labels); whether they are raw
    /// bytes, which the plan's augmentation dispatch turns into the input.
    fn upload_batch(
        gpu: &Gpu,
        plan: &Plan,
        images: Images,
        labels: Option<&[u32]>,
    ) -> anyhow::Result<bool> {
        if let Some(l) = labels {
            gpu.write(&plan.labels, 0, l);
        }
        match images {
            Images::Normalized(t) => {
                gpu.write(&plan.images, 0, &t.data);
                Ok(false)
            }
            Images::Raw(r) => {
                let input = plan
                    .raw
                    .as_ref()
                    .context("raw batches are for training plans")?;
                // A queue write is whole words: the bytes' last partial
                // word goes separately, zero-padded (no copy of the rest).
                let whole = r.bytes.len() / 4 * 4;
                gpu.write(&input.bytes, 0, &r.bytes[..whole]);
                if whole < r.bytes.len() {
                    let mut tail = [0u8; 4];
                    tail[..r.bytes.len() - whole].copy_from_slice(&r.bytes[whole..]);
                    gpu.write(&input.bytes, whole / 4, &tail);
                }
                let shifts: Vec<i32> = r
                    .shifts
                    .iter()
                    .flat_map(|s| [s.dy, s.dx, i32::from(s.flip)])
                    .collect();
                gpu.write(&input.shifts, 0, &shifts);
                gpu.write(&input.luts, 0, r.luts.as_flattened());
                Ok(true)
            }
        }
    }

    /// Copies device parameters (and momentum) back into `model` / `sgd`.
    fn download(
        gpu: &Gpu,
        s: &Session,
        model: &mut Model,
        sgd: Option<&mut Sgd>,
    ) -> anyhow::Result<()> {
        let want_v = sgd.is_some();
        let mut ranges = vec![(&s.params.values, 0, s.params.len)];
        if want_v {
            ranges.push((&s.params.velocity, 0, s.params.len));
        }
        let mut got = gpu.read_many(&ranges)?;
        let values = got.remove(0);
        for (i, ts) in model.params.iter_mut().enumerate() {
            for (k, t) in ts.iter_mut().enumerate() {
                let o = s.params.offsets[i][k];
                let n = t.data.len();
                t.data.copy_from_slice(&values[o..o + n]);
            }
        }
        if let Some(sgd) = sgd {
            let v = got.remove(0);
            sgd.velocity = model
                .params
                .iter()
                .enumerate()
                .map(|(i, ts)| {
                    ts.iter()
                        .enumerate()
                        .map(|(k, t)| {
                            let o = s.params.offsets[i][k];
                            v[o..o + t.data.len()].to_vec()
                        })
                        .collect()
                })
                .collect();
        }
        Ok(())
    }

    /// The CPU backend's image and label checks, and the objectives the
    /// GPU has.
    fn check_batch(model: &Model, batch: &Batch) -> anyhow::Result<usize> {
        if batch.loss != Loss::CrossEntropy {
            bail!(
                "--backend wgpu: the AugMix consistency loss (--jsd) is not on the GPU yet; use --backend cpu"
            );
        }
        let b = check_batch_images(model, batch.images)?;
        check_labels(batch.labels, b, model.graph.classes())?;
        Ok(b)
    }

    /// Runs one training step on the device without reading anything
    /// back (benchmarks); the stats stay on the device.
    pub fn step_no_readback(
        &mut self,
        model: &mut Model,
        sgd: &mut Sgd,
        batch: &Batch,
        lr: f32,
    ) -> anyhow::Result<()> {
        let b = Self::check_batch(model, batch)?;
        let gpu = &self.gpu;
        let s = Self::session_for(&mut self.session, gpu, model)?;
        if !s.resident {
            s.params.upload(gpu, model, sgd.decay_all)?;
            let zeros;
            let v: Vec<f32> = if sgd.velocity.is_empty() {
                zeros = vec![0.0; s.params.len];
                zeros
            } else {
                sgd.velocity.iter().flatten().flatten().copied().collect()
            };
            if v.len() != s.params.len {
                bail!(
                    "optimizer state does not match the model ({} vs {} values)",
                    v.len(),
                    s.params.len
                );
            }
            gpu.write(&s.params.velocity, 0, &v);
            s.resident = true;
        }
        let pi = Self::plan(gpu, s, model, b, PlanMode::Train, self.min_groups)?;
        let plan = &s.plans[pi];
        let raw = Self::upload_batch(gpu, plan, batch.images, Some(batch.labels))?;
        let mut words = [0u32; 20];
        words[0] = s.params.len as u32;
        words[3] = if sgd.nesterov { 2 } else { 0 };
        words[16] = lr.to_bits();
        words[17] = sgd.momentum.to_bits();
        words[18] = sgd.weight_decay.to_bits();
        gpu.write(&plan.sgd_params, 0, &words);
        Self::submit(gpu, s, plan, raw, true)
    }

    fn session_for<'s>(
        slot: &'s mut Option<Session>,
        gpu: &Gpu,
        model: &Model,
    ) -> anyhow::Result<&'s mut Session> {
        if slot.as_ref().is_none_or(|s| s.graph != model.graph) {
            model
                .validate()
                .map_err(|e| anyhow::anyhow!("invalid model: {e}"))?;
            *slot = Some(Session {
                graph: model.graph.clone(),
                params: Params::new(gpu, model)?,
                plans: Vec::new(),
                resident: false,
            });
        }
        slot.as_mut().context("no session")
    }

    /// Reads the last step's `[mean loss, correct]`.
    fn last_stats(&self, batch: usize) -> anyhow::Result<StepStats> {
        let s = self.session.as_ref().context("no GPU session")?;
        let plan = s
            .plans
            .iter()
            .find(|p| p.batch == batch && p.mode == PlanMode::Train)
            .context("no training plan")?;
        let v = self.gpu.read(&plan.stats, 0, 2)?;
        Ok(StepStats {
            loss: v[0],
            correct: v[1].round() as usize,
            images: batch,
        })
    }

    /// Reads the running totals of the training steps since the last read
    /// (`stats_accumulate`) and clears them.
    fn read_totals(&mut self) -> anyhow::Result<StepStats> {
        self.unreported = 0;
        let Some(s) = self.session.as_ref() else {
            return Ok(StepStats::default());
        };
        let v = self.gpu.read(&s.params.totals, 0, 3)?;
        let mut enc = self.gpu.device.create_command_encoder(&Default::default());
        enc.clear_buffer(&s.params.totals, 0, None);
        self.gpu.queue.submit([enc.finish()]);
        let images = v[2].round() as usize;
        Ok(StepStats {
            loss: if images > 0 { v[0] / v[2] } else { 0.0 },
            correct: v[1].round() as usize,
            images,
        })
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> anyhow::Result<()> {
        self.gpu
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| anyhow::anyhow!("waiting for the GPU: {e}"))?;
        Ok(())
    }
}

impl Backend for WgpuBackend {
    fn adapter(&self) -> String {
        self.gpu.description.clone()
    }

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn infer(&mut self, model: &Model, images: &Tensor) -> anyhow::Result<Tensor> {
        let b = check_images(model, images)?;
        if self.session.as_ref().is_some_and(|s| s.resident) {
            bail!("wgpu backend: the model is being trained on the device; call sync first");
        }
        let gpu = &self.gpu;
        let s = Self::session_for(&mut self.session, gpu, model)?;
        s.params.upload(gpu, model, true)?;
        let pi = Self::plan(gpu, s, model, b, PlanMode::Infer, self.min_groups)?;
        let plan = &s.plans[pi];
        Self::upload_batch(gpu, plan, Images::Normalized(images), None)?;
        Self::submit(gpu, s, plan, false, false)?;
        let k = plan.classes;
        let out = gpu.read(plan.acts.last().context("empty graph")?, 0, b * k)?;
        Ok(Tensor::from_vec(&[b, k], out))
    }

    fn gradients(&mut self, model: &mut Model, batch: &Batch) -> anyhow::Result<BatchGradients> {
        let b = Self::check_batch(model, batch)?;
        if self.session.as_ref().is_some_and(|s| s.resident) {
            bail!("wgpu backend: the model is being trained on the device; call sync first");
        }
        let gpu = &self.gpu;
        let s = Self::session_for(&mut self.session, gpu, model)?;
        s.params.upload(gpu, model, true)?;
        let pi = Self::plan(gpu, s, model, b, PlanMode::Train, self.min_groups)?;
        let plan = &s.plans[pi];
        let raw = Self::upload_batch(gpu, plan, batch.images, Some(batch.labels))?;
        Self::submit(gpu, s, plan, raw, false)?;
        let mut got = gpu.read_many(&[
            (&plan.stats, 0, 2),
            (&s.params.grads, 0, s.params.len),
            (&s.params.values, 0, s.params.len),
        ])?;
        let values = got.pop().unwrap_or_default();
        let flat = got.pop().unwrap_or_default();
        let st = got.pop().unwrap_or_default();
        let mut grads = Vec::with_capacity(model.params.len());
        for (i, ts) in model.params.iter_mut().enumerate() {
            let mut g = Vec::with_capacity(ts.len());
            for (k, t) in ts.iter_mut().enumerate() {
                let o = s.params.offsets[i][k];
                let n = t.data.len();
                if t.kind.trainable() {
                    g.push(flat[o..o + n].to_vec());
                } else {
                    // Running statistics: updated on the device, zero gradient.
                    t.data.copy_from_slice(&values[o..o + n]);
                    g.push(vec![0.0; n]);
                }
            }
            grads.push(g);
        }
        Ok(BatchGradients {
            stats: StepStats {
                loss: st[0],
                correct: st[1].round() as usize,
                images: b,
            },
            grads,
        })
    }

    fn train_step(
        &mut self,
        model: &mut Model,
        sgd: &mut Sgd,
        batch: &Batch,
        lr: f32,
    ) -> anyhow::Result<StepStats> {
        self.step_no_readback(model, sgd, batch, lr)?;
        self.unreported += 1;
        if self.unreported < self.stats_every {
            return Ok(StepStats::default());
        }
        self.read_totals()
    }

    fn flush_stats(&mut self) -> anyhow::Result<StepStats> {
        self.read_totals()
    }

    fn as_gpu(&mut self) -> Option<&mut WgpuBackend> {
        Some(self)
    }

    fn sync(&mut self, model: &mut Model, sgd: &mut Sgd) -> anyhow::Result<()> {
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if !s.resident {
            return Ok(());
        }
        if s.graph != model.graph {
            bail!("wgpu backend: sync with a different model than the one trained");
        }
        Self::download(&self.gpu, s, model, Some(sgd))?;
        s.resident = false;
        Ok(())
    }
}

/// Trains `arch` on random data for `steps` SGD steps of `batch` images on
/// the device, after three untimed warm-up steps, and returns images per
/// second. Nothing is read back between steps (as in training, where the
/// statistics are read back once per step at most).
pub fn bench_train_step(
    backend: &mut WgpuBackend,
    arch: &str,
    width_mult: f32,
    batch: usize,
    steps: usize,
) -> anyhow::Result<f64> {
    anyhow::ensure!(batch > 0 && steps > 0, "batch and steps must be positive");
    let (mut model, images, labels) = crate::backend::cpu::bench_setup(arch, width_mult, batch)?;
    let mut sgd = Sgd::new(0.9, false, 5e-4);
    let b = Batch::new(&images, &labels);
    for _ in 0..3 {
        backend.step_no_readback(&mut model, &mut sgd, &b, 0.01)?;
    }
    backend.wait()?;
    let t = std::time::Instant::now();
    for _ in 0..steps {
        backend.step_no_readback(&mut model, &mut sgd, &b, 0.01)?;
    }
    let st = backend.last_stats(batch)?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        st.loss.is_finite(),
        "benchmark training diverged (loss {})",
        st.loss
    );
    backend.sync(&mut model, &mut sgd)?;
    Ok((batch * steps) as f64 / secs)
}
