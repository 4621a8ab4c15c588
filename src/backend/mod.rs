//! Compute backends and their selection at run time.
//!
//! The networks run in candle on CUDA (when built with the `cuda` feature and an NVIDIA GPU
//! answers) or on the CPU. On other GPUs the pivot and the EPS sampler's arithmetic run in WGSL
//! compute shaders ([`gpu`]) while the network stays on the CPU. The order for
//! [`BackendChoice::Auto`] is CUDA → wgpu on a real (non-software) adapter → CPU; any choice that
//! cannot be honoured falls back with a note saying why.

pub mod gpu;

use std::sync::Arc;

use candle_core::Device;

pub use gpu::{AdapterPolicy, GpuArithmetic, GpuContext};

/// What the user asked for (CLI `--backend`, app setting).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
pub enum BackendChoice {
    /// The fastest available: CUDA, then a real GPU through wgpu, then the CPU.
    #[default]
    Auto,
    /// The CPU only.
    Cpu,
    /// wgpu compute shaders for the pivot and the sampler arithmetic (any adapter, software ones
    /// included); the network on the CPU.
    Wgpu,
    /// candle on CUDA (builds with the `cuda` feature).
    Cuda,
}

impl BackendChoice {
    /// Every choice, for menus.
    pub const ALL: [Self; 4] = [Self::Auto, Self::Cpu, Self::Wgpu, Self::Cuda];

    /// The choice in words.
    pub fn label(self) -> &'static str {
        match self {
            Self::Auto => "Automatic",
            Self::Cpu => "CPU",
            Self::Wgpu => "GPU (wgpu)",
            Self::Cuda => "CUDA",
        }
    }
}

/// The backend in use: the networks' candle device and, for wgpu, the compute context.
#[derive(Debug, Clone)]
pub struct Compute {
    device: Device,
    gpu: Option<Arc<GpuContext>>,
    label: String,
}

impl Compute {
    /// Everything on the CPU.
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            gpu: None,
            label: "CPU".into(),
        }
    }

    /// The wgpu backend on a context built elsewhere (tests inject their own device).
    pub fn wgpu(ctx: Arc<GpuContext>) -> Self {
        let label = format!("wgpu: {}", ctx.adapter_name());
        Self {
            device: Device::Cpu,
            gpu: Some(ctx),
            label,
        }
    }

    /// Selects a backend for `choice`. The notes say why a faster backend was not used (always
    /// one for an explicit choice that could not be honoured).
    pub fn select(choice: BackendChoice) -> (Self, Vec<String>) {
        let mut notes = Vec::new();
        if matches!(choice, BackendChoice::Auto | BackendChoice::Cuda) {
            match Self::cuda() {
                Ok(c) => return (c, notes),
                Err(why) if choice == BackendChoice::Cuda => notes.push(why),
                Err(_) => {}
            }
        }
        if matches!(choice, BackendChoice::Auto | BackendChoice::Wgpu) {
            let policy = if choice == BackendChoice::Wgpu {
                AdapterPolicy::Any
            } else {
                AdapterPolicy::HardwareOnly
            };
            match GpuContext::acquire(policy) {
                Ok(ctx) => {
                    if ctx.is_software() {
                        notes.push(format!(
                            "{} is a software adapter: expect it to be slower than the CPU backend",
                            ctx.adapter_name()
                        ));
                    }
                    return (Self::wgpu(Arc::new(ctx)), notes);
                }
                Err(e) if choice == BackendChoice::Wgpu => {
                    notes.push(format!("{e}; using the CPU"));
                }
                Err(_) => {}
            }
        }
        (Self::cpu(), notes)
    }

    fn cuda() -> std::result::Result<Self, String> {
        cuda_device().map(|device| Self {
            device,
            gpu: None,
            label: "CUDA (device 0)".into(),
        })
    }

    /// The device the networks run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The wgpu context, when the pivot and the sampler arithmetic run there.
    pub fn gpu(&self) -> Option<&GpuContext> {
        self.gpu.as_deref()
    }

    /// The backend in words, e.g. `"CPU"`, `"CUDA (device 0)"`, `"wgpu: Radeon … (Vulkan)"`.
    pub fn label(&self) -> &str {
        &self.label
    }
}

/// candle's CUDA device 0, or why not (the reason ends in "using the CPU", for notes). Float
/// matrix products may use TF32 tensor cores there (10-bit mantissa products, f32 sums), as
/// PyTorch does for convolutions by default.
pub fn cuda_device() -> std::result::Result<Device, String> {
    if !candle_core::utils::cuda_is_available() {
        return Err(
            "this build has no CUDA support (build with `--features cuda`); using the CPU".into(),
        );
    }
    let missing = cuda_libraries_missing();
    if !missing.is_empty() {
        return Err(format!(
            "CUDA libraries not found ({}): install the NVIDIA driver and the CUDA 13 runtime, \
             or add their folder to LD_LIBRARY_PATH; using the CPU",
            missing.join(", ")
        ));
    }
    match Device::new_cuda(0) {
        Ok(device) => {
            candle_core::cuda::set_gemm_reduced_precision_f32(true);
            Ok(device)
        }
        Err(e) => Err(format!("no CUDA device answered ({e}); using the CPU")),
    }
}

/// The CUDA libraries a `cuda` build loads at run time that cannot be found on this machine
/// (empty when all of them load). A build without the `cuda` feature loads none and says so with
/// an empty list.
///
/// candle would panic on first use of a missing library; asking first turns that into a fallback.
pub fn cuda_libraries_missing() -> Vec<&'static str> {
    #[cfg(feature = "cuda")]
    {
        // SAFETY: each `is_culib_present` only tries `dlopen` on the library's usual names and
        // closes what it opened; loading the NVIDIA libraries runs no code of ours.
        #[allow(unsafe_code)]
        let present = unsafe {
            [
                (
                    "libcuda (the NVIDIA driver)",
                    cudarc::driver::sys::is_culib_present(),
                ),
                ("libcublas", cudarc::cublas::sys::is_culib_present()),
                ("libcublasLt", cudarc::cublaslt::sys::is_culib_present()),
                ("libcurand", cudarc::curand::sys::is_culib_present()),
                ("libnvrtc", cudarc::nvrtc::sys::is_culib_present()),
            ]
        };
        present
            .into_iter()
            .filter(|(_, found)| !found)
            .map(|(name, _)| name)
            .collect()
    }
    #[cfg(not(feature = "cuda"))]
    Vec::new()
}
