//! EPS Studio: photo restoration by exact posterior sampling.
//!
//! For a measurement `y = A x0 + η` and a noised state `x_t`, the posterior `p(x0 | x_t, y)` is the
//! prior denoised at a closed-form pivot `μ*` under anisotropic noise `Σ*` (Theorem 1 of "Exact
//! Posterior Score Estimation for Solving Linear Inverse Problems", arXiv 2606.17048). A denoiser
//! trained on pivots gives the exact posterior score, so the backbone's own sampler runs unchanged.
//!
//! Modules, from the math outwards:
//! - [`inverse`]: linear operators (mask, average-pool super-resolution, circular blur), their
//!   adjoints, pseudo-inverses and the structured pivot solve.
//! - [`sampler`]: the EDM schedule, Euler/Heun, EPS and the training-free baselines (DPS, DDNM+,
//!   ΠGDM, DiffPIR) on one shared denoiser trait.
//! - [`prior`]: a Gaussian-mixture prior whose posterior is known exactly, to prove the samplers.
//! - [`denoiser`]: the U-Net denoiser (unconditional prior and EPS posterior roles) and its
//!   weight files.
//! - [`train`]: data packing, the two training stages, checkpoints.
//! - [`eval`]: metrics (PSNR, SSIM, MMD², CRPS) and the exact-posterior check.
//! - [`photo`]: photo files in and out (orientation, 16-bit, alpha, EXIF kept).
//! - [`backend`]: run-time choice of CUDA, wgpu compute shaders or the CPU.
//! - [`restore`]: whole-photo restoration on crops and tiles, shared by the app and the CLI.
//! - [`worker`]: the sampler thread and its plain-data protocol.
//! - [`app`] and [`ui`]: the desktop app (eframe/egui).

#[cfg(feature = "gui")]
pub mod app;
pub mod backend;
pub mod cli;
pub mod denoiser;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod heap;
pub mod inverse;
pub mod limits;
pub mod noise;
pub mod photo;
pub mod prior;
pub mod restore;
pub mod sampler;
pub mod selftest;
pub mod train;
#[cfg(feature = "gui")]
pub mod ui;
pub mod worker;

#[cfg(feature = "gui")]
pub use app::{AppOptions, EpsApp};
pub use error::{Error, Result};
