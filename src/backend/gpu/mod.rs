//! The wgpu compute backend: the pivot `μ*` and the EPS sampler's updates in WGSL compute shaders
//! (`shaders/`), for GPUs candle cannot drive (anything but NVIDIA through CUDA).
//!
//! [`GpuContext`] is built once: it owns the device, the queue and every compute pipeline.
//! Acquiring a device ([`GpuContext::acquire`]) is separate from building the context around one
//! ([`GpuContext::from_device`]), so tests and embedders can hand in their own. The context keeps a
//! device of its own rather than sharing the window's renderer: a fault here (out of memory, a lost
//! device) then ends one restoration, which falls back to the CPU, and never the window.
//!
//! Every submission runs inside validation, out-of-memory and internal error scopes, and the
//! device's lost and uncaptured-error callbacks record a fault instead of panicking, so any GPU
//! failure comes back as [`Error::Gpu`].

mod arith;
pub mod fft;
mod uniforms;

use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

pub use arith::{GpuArithmetic, GpuBatch};

use crate::{Error, Result};

/// Side of the square workgroups of every image kernel.
pub const WORKGROUP: u32 = 16;

/// Which adapters [`GpuContext::acquire`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Real GPUs only: a software rasteriser (llvmpipe, WARP) is slower than the CPU path.
    HardwareOnly,
    /// Any adapter, software ones included (tests, and an explicit user choice).
    Any,
}

/// The compute pipelines, one per shader.
#[derive(Debug)]
struct Pipelines {
    mask_pivot: wgpu::ComputePipeline,
    sr_pivot: wgpu::ComputePipeline,
    fft_pack: wgpu::ComputePipeline,
    fft_pass: wgpu::ComputePipeline,
    blur_combine: wgpu::ComputePipeline,
    fft_unpack: wgpu::ComputePipeline,
    lincomb: wgpu::ComputePipeline,
}

/// A GPU device with the project's compute pipelines.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pipelines: Pipelines,
    /// The first fault reported by the device's callbacks (lost device, uncaptured error).
    fault: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("adapter", &self.info.name)
            .field("backend", &self.info.backend)
            .finish_non_exhaustive()
    }
}

/// Every shader of the project, by file name, for validation and pipeline creation.
pub const SHADERS: [(&str, &str); 7] = [
    (
        "mask_pivot.wgsl",
        include_str!("../../../shaders/mask_pivot.wgsl"),
    ),
    (
        "sr_pivot.wgsl",
        include_str!("../../../shaders/sr_pivot.wgsl"),
    ),
    (
        "fft_pack.wgsl",
        include_str!("../../../shaders/fft_pack.wgsl"),
    ),
    (
        "fft_pass.wgsl",
        include_str!("../../../shaders/fft_pass.wgsl"),
    ),
    (
        "blur_combine.wgsl",
        include_str!("../../../shaders/blur_combine.wgsl"),
    ),
    (
        "fft_unpack.wgsl",
        include_str!("../../../shaders/fft_unpack.wgsl"),
    ),
    (
        "lincomb.wgsl",
        include_str!("../../../shaders/lincomb.wgsl"),
    ),
];

impl GpuContext {
    /// Finds an adapter allowed by `policy` (high-performance preference; `WGPU_BACKEND` and
    /// friends are honoured) and builds the context on a device of its own.
    pub fn acquire(policy: AdapterPolicy) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .map_err(|e| Error::Gpu(format!("no GPU adapter found ({e})")))?;
        let info = adapter.get_info();
        if policy == AdapterPolicy::HardwareOnly && info.device_type == wgpu::DeviceType::Cpu {
            return Err(Error::Gpu(format!(
                "the only adapter is the software rasteriser {} ({:?}), which is slower than the CPU path; choose the wgpu backend explicitly to use it anyway",
                info.name, info.backend
            )));
        }
        // The adapter's own limits: the defaults cap storage buffers at 128 MiB and, on GL,
        // allow no compute at all.
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("eps-studio compute"),
            required_features: wgpu::Features::empty(),
            required_limits: adapter.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Gpu(format!("cannot open {} ({e})", info.name)))?;
        Self::from_device(device, queue, info)
    }

    /// Builds the pipelines on a device someone else opened.
    pub fn from_device(
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
    ) -> Result<Self> {
        let fault = Arc::new(Mutex::new(None::<String>));
        let record = {
            let fault = Arc::clone(&fault);
            move |message: String| {
                if let Ok(mut f) = fault.lock() {
                    f.get_or_insert(message);
                }
            }
        };
        {
            let record = record.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| record(e.to_string())));
        }
        device.set_device_lost_callback(move |reason, message| {
            record(format!("the GPU device was lost ({reason:?}: {message})"));
        });
        let scope = ErrorScopes::push(&device);
        let pipeline = |file: &str, label: &str| -> wgpu::ComputePipeline {
            let source = SHADERS
                .iter()
                .find(|(name, _)| *name == file)
                .map_or("", |(_, s)| *s);
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions::default(),
                cache: None,
            })
        };
        let pipelines = Pipelines {
            mask_pivot: pipeline("mask_pivot.wgsl", "mask pivot"),
            sr_pivot: pipeline("sr_pivot.wgsl", "super-resolution pivot"),
            fft_pack: pipeline("fft_pack.wgsl", "fft pack"),
            fft_pass: pipeline("fft_pass.wgsl", "fft pass"),
            blur_combine: pipeline("blur_combine.wgsl", "blur combine"),
            fft_unpack: pipeline("fft_unpack.wgsl", "fft unpack"),
            lincomb: pipeline("lincomb.wgsl", "linear combination"),
        };
        scope.pop("building the compute pipelines")?;
        let ctx = Self {
            device,
            queue,
            info,
            pipelines,
            fault,
        };
        ctx.check_fault()?;
        Ok(ctx)
    }

    /// The adapter in words, e.g. `"AMD Radeon RX 7600 (Vulkan)"`.
    pub fn adapter_name(&self) -> String {
        format!("{} ({:?})", self.info.name, self.info.backend)
    }

    /// Whether the adapter is a software rasteriser.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The device (tests use it to simulate a lost device).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Waits until every submitted piece of work has finished (benchmarks).
    pub fn wait(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed ({e})")))?;
        self.check_fault()
    }

    /// Fails with the recorded fault, if the device reported one.
    fn check_fault(&self) -> Result<()> {
        let fault = self.fault.lock().ok().and_then(|f| f.clone());
        match fault {
            Some(message) => Err(Error::Gpu(message)),
            None => Ok(()),
        }
    }

    /// A storage buffer of `len` f32 (or `len / 2` complex) values, after checking the device
    /// allows one that large.
    fn storage(&self, label: &str, len_f32: usize) -> Result<wgpu::Buffer> {
        let size = (len_f32.max(1) * 4) as u64;
        let limits = self.device.limits();
        let max = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if size > max {
            return Err(Error::Gpu(format!(
                "{label} needs a {:.0} MiB buffer; {} allows {:.0} MiB (lower the working size or the number of samples)",
                size as f64 / 1048576.0,
                self.info.name,
                max as f64 / 1048576.0
            )));
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }))
    }

    /// A storage buffer holding `data`.
    fn storage_with(&self, label: &str, data: &[f32]) -> Result<wgpu::Buffer> {
        let buffer = self.storage(label, data.len())?;
        self.queue
            .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
        Ok(buffer)
    }

    /// A uniform buffer holding `bytes`, rewritable with [`wgpu::Queue::write_buffer`].
    fn uniform(&self, label: &str, bytes: &[u8]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A bind group for group 0 of `pipeline`, buffers bound in binding order.
    fn bind(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Records work with `record`, submits it, and turns any error the device reports into
    /// [`Error::Gpu`] naming `what`.
    fn submit(
        &self,
        what: &str,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<()>,
    ) -> Result<()> {
        self.check_fault()?;
        let scope = ErrorScopes::push(&self.device);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(what) });
        let recorded = record(&mut encoder);
        if recorded.is_ok() {
            self.queue.submit([encoder.finish()]);
        }
        scope.pop(what)?;
        recorded?;
        self.check_fault()
    }

    /// Copies `len` f32 values out of `buffer` through `staging` (MAP_READ, at least as large).
    fn read(&self, buffer: &wgpu::Buffer, staging: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
        let size = (len * 4) as u64;
        self.submit("read back", |encoder| {
            encoder.copy_buffer_to_buffer(buffer, 0, staging, 0, size);
            Ok(())
        })?;
        let slice = staging.slice(..size);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(format!("waiting for the GPU failed ({e})")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("the GPU never answered the read-back".into()))?
            .map_err(|e| Error::Gpu(format!("reading a result back failed ({e})")))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| Error::Gpu(format!("reading a result back failed ({e})")))?;
            view.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        staging.unmap();
        self.check_fault()?;
        Ok(out)
    }

    /// A MAP_READ buffer for [`Self::read`].
    fn staging(&self, label: &str, len_f32: usize) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (len_f32.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Workgroup counts covering `(x, y, z)` invocations with [`WORKGROUP`]² tiles, checked
    /// against the device's limit per dimension.
    fn groups(&self, x: usize, y: usize, z: usize) -> Result<(u32, u32, u32)> {
        let w = WORKGROUP as usize;
        let dims = [x.div_ceil(w), y.div_ceil(w), z];
        let max = self.device.limits().max_compute_workgroups_per_dimension as usize;
        if dims.iter().any(|&d| d > max) {
            return Err(Error::Gpu(format!(
                "a dispatch of {dims:?} workgroups exceeds the device's {max} per dimension (lower the working size or the number of samples)"
            )));
        }
        Ok((dims[0] as u32, dims[1] as u32, dims[2] as u32))
    }
}

/// Validation, out-of-memory and internal error scopes around a piece of work.
struct ErrorScopes {
    guards: Vec<wgpu::ErrorScopeGuard>,
}

impl ErrorScopes {
    fn push(device: &wgpu::Device) -> Self {
        Self {
            guards: [
                wgpu::ErrorFilter::Validation,
                wgpu::ErrorFilter::OutOfMemory,
                wgpu::ErrorFilter::Internal,
            ]
            .into_iter()
            .map(|f| device.push_error_scope(f))
            .collect(),
        }
    }

    /// Pops the scopes (innermost first) and returns the first error any of them caught.
    fn pop(mut self, what: &str) -> Result<()> {
        let mut first = None;
        while let Some(guard) = self.guards.pop() {
            if let Some(e) = pollster::block_on(guard.pop()) {
                first.get_or_insert(e);
            }
        }
        match first {
            Some(e) => Err(Error::Gpu(format!("{what}: {e}"))),
            None => Ok(()),
        }
    }
}

/// Records one compute dispatch.
fn dispatch(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    bind_group: &wgpu::BindGroup,
    groups: (u32, u32, u32),
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    pass.set_bind_group(0, bind_group, &[]);
    pass.dispatch_workgroups(groups.0, groups.1, groups.2);
}
