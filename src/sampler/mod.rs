//! Samplers on one shared EDM schedule: EPS (the backbone's own Euler/Heun sampler on the exact
//! posterior denoiser) and the training-free baselines DPS, DDNM+, ΠGDM and DiffPIR on the
//! unconditional denoiser (eps-method.md §5–6).
//!
//! Every sampler is batched (one image per seed), reports the network evaluations (NFE) it used,
//! streams its current `x̂0` estimate after every step, and stops between steps when the observer
//! asks it to.

pub mod arith;
pub mod ddnm;
pub mod diffpir;
pub mod dps;
pub mod eps;
pub mod pigdm;
pub mod schedule;

use candle_core::{Tensor, Var};

use crate::inverse::{OperatorKind, Problem, ensure_finite};
use crate::noise::SeededNoise;
use crate::{Error, Result};

pub use arith::{StepArithmetic, TensorArithmetic};
pub use ddnm::DdnmConfig;
pub use diffpir::DiffpirConfig;
pub use dps::DpsConfig;
pub use eps::{EpsConfig, PosteriorMeanConfig};
pub use pigdm::PigdmConfig;
pub use schedule::EdmSchedule;

/// An unconditional denoiser `D(x, σ) ≈ E[x0 | x]` for `x = x0 + σ ε` (EDM, α = 1).
pub trait Denoiser: Send + Sync {
    /// `x̂0` for a batch `x` at noise level `sigma`.
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor>;

    /// `x̂0 = D(x, σ)` and the vector–Jacobian product `(∂D/∂x)ᵀ v`, where the cotangent `v` is
    /// computed from `x̂0` by `cotangent` (DPS and ΠGDM need `x̂0` to form `v`).
    ///
    /// The default differentiates [`Self::denoise`] with candle's autograd, which works for any
    /// denoiser built from candle operations.
    fn denoise_vjp(
        &self,
        x: &Tensor,
        sigma: f64,
        cotangent: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let x_var = Var::from_tensor(&x.detach())?;
        let x0 = self.denoise(x_var.as_tensor(), sigma)?;
        let x0_value = x0.detach();
        let v = cotangent(&x0_value)?.detach();
        let grads = x0.broadcast_mul(&v)?.sum_all()?.backward()?;
        let g = grads.get(x_var.as_tensor()).cloned().ok_or_else(|| {
            Error::Unsupported(
                "this denoiser is not differentiable with candle autograd; implement denoise_vjp for it".into(),
            )
        })?;
        Ok((x0_value, g))
    }
}

/// A posterior denoiser `D_post(μ*, y, σ) ≈ E[x0 | x_t, y]`: the EPS network (fed `μ*` and the
/// observation image) or an exact oracle.
pub trait PosteriorDenoiser: Send + Sync {
    /// `E[x0 | x_t, y]` from the pivot `mu = μ*(x_t, y)` at EDM noise level `sigma`.
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor>;
}

/// ODE solver for the EDM probability-flow ODE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Solver {
    /// First order, one network call per step (the paper's choice).
    #[default]
    Euler,
    /// Second order (trapezoid correction), two calls per step except the last.
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022) in EDM form: second order from the previous step's
    /// estimate, one call per step — Heun's accuracy at half the network calls.
    DpmSolver2m,
}

impl Solver {
    /// Parses `euler`, `heun` or `dpm2m`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "euler" => Self::Euler,
            "heun" => Self::Heun,
            "dpm2m" => Self::DpmSolver2m,
            _ => return None,
        })
    }
}

/// What a sampler reports after each step.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// Steps completed so far (1-based).
    pub step: usize,
    /// Total steps.
    pub n_steps: usize,
    /// Noise level of the step just taken.
    pub sigma: f64,
    /// The current estimate of the clean image, `[B, C, H, W]`.
    pub x0_hat: &'a Tensor,
    /// Network evaluations so far.
    pub nfe: usize,
}

/// The observer's answer after each step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep sampling.
    Continue,
    /// Stop now; the sampler returns [`Error::Cancelled`].
    Cancel,
}

/// A per-step callback.
pub type Observer<'a> = &'a mut dyn FnMut(&StepInfo<'_>) -> Flow;

/// An observer that never cancels and ignores progress.
pub fn ignore_progress(_: &StepInfo<'_>) -> Flow {
    Flow::Continue
}

/// The result of a sampling run.
#[derive(Debug, Clone)]
pub struct SampleOutput {
    /// The samples, `[B, C, H, W]`, one per seed.
    pub samples: Tensor,
    /// Network evaluations used (a forward-and-backward call counts once).
    pub nfe: usize,
    /// Sampler steps taken.
    pub steps: usize,
}

/// The restoration task; baselines take task-specific defaults from eps-method.md §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Random pixel mask.
    RandomInpaint,
    /// Box mask.
    BoxInpaint,
    /// Free-form brush strokes.
    BrushInpaint,
    /// Gaussian blur.
    GaussianDeblur,
    /// Motion blur.
    MotionDeblur,
    /// Average-pool super-resolution.
    SuperResolution,
}

impl Task {
    /// The task a bare operator kind suggests (used when nothing more specific is known).
    pub fn from_kind(kind: OperatorKind) -> Self {
        match kind {
            OperatorKind::Mask => Self::BrushInpaint,
            OperatorKind::SuperResolution => Self::SuperResolution,
            OperatorKind::Blur | OperatorKind::Other => Self::GaussianDeblur,
        }
    }

    /// Whether the task is an inpainting task.
    pub fn is_inpainting(self) -> bool {
        matches!(
            self,
            Self::RandomInpaint | Self::BoxInpaint | Self::BrushInpaint
        )
    }
}

/// Which sampling method to run, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// EPS: the backbone sampler on the exact posterior denoiser.
    Eps(EpsConfig),
    /// EPS posterior mean: one call at σmax.
    PosteriorMean(PosteriorMeanConfig),
    /// Diffusion posterior sampling.
    Dps(DpsConfig),
    /// DDNM+.
    Ddnm(DdnmConfig),
    /// Pseudo-inverse guided diffusion.
    Pigdm(PigdmConfig),
    /// DiffPIR.
    Diffpir(DiffpirConfig),
}

impl Method {
    /// Short display name.
    pub fn name(&self) -> String {
        match self {
            Self::Eps(c) => format!("EPS {}", c.name()),
            Self::PosteriorMean(_) => "EPS mean".into(),
            Self::Dps(c) => format!("DPS ζ′={:.3}", c.zeta),
            Self::Ddnm(_) => "DDNM+".into(),
            Self::Pigdm(_) => "ΠGDM".into(),
            Self::Diffpir(_) => "DiffPIR".into(),
        }
    }

    /// The documented baselines with their default settings for `task`.
    pub fn baselines(task: Task) -> Vec<Self> {
        vec![
            Self::Dps(DpsConfig::for_task(task)),
            Self::Ddnm(DdnmConfig::default()),
            Self::Pigdm(PigdmConfig::default()),
            Self::Diffpir(DiffpirConfig::for_task(task)),
        ]
    }

    /// Network calls one run takes (a forward-and-backward call counts once).
    pub fn network_calls(&self) -> usize {
        match self {
            Self::Eps(c) => match c.solver {
                Solver::Heun => (2 * c.steps).saturating_sub(1),
                Solver::Euler | Solver::DpmSolver2m => c.steps,
            },
            Self::PosteriorMean(_) => 1,
            Self::Dps(c) => c.steps,
            Self::Ddnm(c) => c.steps,
            Self::Pigdm(c) => c.steps,
            Self::Diffpir(c) => c.steps,
        }
    }

    /// Whether every step differentiates the network (DPS, ΠGDM): about four times the memory
    /// and twice the time of a forward call.
    pub fn uses_gradients(&self) -> bool {
        matches!(self, Self::Dps(_) | Self::Pigdm(_))
    }

    /// Whether the method needs the EPS (posterior) denoiser rather than the unconditional one.
    pub fn needs_posterior_denoiser(&self) -> bool {
        matches!(self, Self::Eps(_) | Self::PosteriorMean(_))
    }
}

/// The denoisers a run may use: EPS methods need `posterior`, baselines need `prior`.
#[derive(Clone, Copy, Default)]
pub struct Denoisers<'a> {
    /// The unconditional backbone.
    pub prior: Option<&'a dyn Denoiser>,
    /// The EPS posterior denoiser.
    pub posterior: Option<&'a dyn PosteriorDenoiser>,
}

/// Runs `method` on `problem`, one sample per seed.
pub fn sample(
    method: &Method,
    denoisers: Denoisers<'_>,
    problem: &Problem,
    seeds: &[u64],
    observer: Observer<'_>,
) -> Result<SampleOutput> {
    let missing = |what: &str| {
        Error::Unsupported(format!(
            "{} needs the {what} denoiser, which is not loaded",
            method.name()
        ))
    };
    match method {
        Method::Eps(cfg) => eps::sample(
            denoisers.posterior.ok_or_else(|| missing("EPS"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
        Method::PosteriorMean(cfg) => eps::posterior_mean(
            denoisers.posterior.ok_or_else(|| missing("EPS"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
        Method::Dps(cfg) => dps::sample(
            denoisers.prior.ok_or_else(|| missing("unconditional"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
        Method::Ddnm(cfg) => ddnm::sample(
            denoisers.prior.ok_or_else(|| missing("unconditional"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
        Method::Pigdm(cfg) => pigdm::sample(
            denoisers.prior.ok_or_else(|| missing("unconditional"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
        Method::Diffpir(cfg) => diffpir::sample(
            denoisers.prior.ok_or_else(|| missing("unconditional"))?,
            problem,
            seeds,
            cfg,
            observer,
        ),
    }
}

/// Shared set-up of every sampler: validated seeds and noise levels, and `x_T = σ_0 ε`.
pub(crate) struct Start {
    pub noise: SeededNoise,
    pub sigmas: Vec<f64>,
    pub x: Tensor,
}

pub(crate) fn start(
    problem: &Problem,
    seeds: &[u64],
    schedule: &EdmSchedule,
    steps: usize,
) -> Result<Start> {
    if seeds.is_empty() {
        return Err(Error::invalid("samples", 0, "ask for at least one sample"));
    }
    let mb = problem.measurement_batch();
    if mb != 1 && mb != seeds.len() {
        return Err(Error::shape(
            "seeds",
            format!("1 or {mb} (the measurement batch)"),
            seeds.len(),
        ));
    }
    let sigmas = schedule.sigmas(steps)?;
    let mut noise = SeededNoise::new(seeds);
    let x = noise
        .normal(problem.image_chw(), problem.dtype(), problem.device())?
        .affine(sigmas[0], 0.0)?;
    Ok(Start { noise, sigmas, x })
}

/// Reports a step and turns a cancel request into [`Error::Cancelled`]; also rejects a
/// non-finite estimate, so a diverging run stops with a clear error instead of a black image.
pub(crate) fn report(observer: &mut Observer<'_>, info: &StepInfo<'_>) -> Result<()> {
    ensure_finite(
        info.x0_hat,
        &format!("the estimate at step {} (σ = {:.4})", info.step, info.sigma),
    )?;
    match observer(info) {
        Flow::Continue => Ok(()),
        Flow::Cancel => Err(Error::Cancelled),
    }
}

/// The DDIM-style update used by DDNM+, ΠGDM and DiffPIR in EDM form:
/// `x_next = x̂0 + σ_next (√(1−η²) ε̂ + η z)` with `ε̂ = (x − x̂0_eps)/σ`.
pub(crate) fn ddim_step(
    x: &Tensor,
    x0: &Tensor,
    eps_from: &Tensor,
    sigma: f64,
    sigma_next: f64,
    eta: f64,
    noise: &mut SeededNoise,
) -> Result<Tensor> {
    if sigma_next == 0.0 {
        return Ok(x0.clone());
    }
    let eps_hat = (x - eps_from)?.affine(1.0 / sigma, 0.0)?;
    let mut dir = eps_hat.affine((1.0 - eta * eta).max(0.0).sqrt() * sigma_next, 0.0)?;
    if eta > 0.0 {
        let z = noise.normal_like(x)?;
        dir = (dir + z.affine(eta * sigma_next, 0.0)?)?;
    }
    Ok((x0 + dir)?)
}

pub(crate) fn validate_unit(name: &'static str, v: f64) -> Result<()> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(name, v, "must lie in [0, 1]"))
    }
}
