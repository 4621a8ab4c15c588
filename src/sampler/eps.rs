//! EPS sampling (eps-method.md §5): the backbone's EDM sampler (Euler/Heun, optionally with EDM's
//! stochastic churn), unchanged, on
//! `D_post(x, σ) = D_θ(μ*(x, y, σ), y, σ)`. No likelihood gradients, no projections: the pivot is
//! a closed-form solve and the network call is the only expensive part of a step.

use candle_core::Tensor;

use super::arith::{StepArithmetic, TensorArithmetic};
use super::{
    EdmSchedule, Observer, PosteriorDenoiser, SampleOutput, Solver, StepInfo, report, start,
};
use crate::inverse::{Interpolant, Problem};
use crate::{Error, Result};

/// EPS sampler settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpsConfig {
    /// Number of noise levels (Euler and DPM-Solver++(2M): NFE = steps; Heun: NFE = 2·steps − 1).
    pub steps: usize,
    /// ODE solver.
    pub solver: Solver,
    /// Noise schedule.
    pub schedule: EdmSchedule,
    /// Fresh noise added before each step (EDM's stochastic sampler); [`Churn::NONE`] follows the
    /// probability-flow ODE.
    pub churn: Churn,
}

impl Default for EpsConfig {
    /// 10 Euler steps with EDM's churn `S_churn = 4` (γ = 0.4 per step): EDM's stochastic
    /// sampler with the paper's first-order step.
    ///
    /// On the shipped network this leaves the least noise in filled holes of every setting
    /// measured (`docs/training.md` §3.6: texture ratio 5 against 48 for 20 deterministic
    /// DPM-Solver++(2M) steps, with higher hole PSNR and lower LPIPS, and 1.7 dB better
    /// deblurring). A higher-order solver extrapolates the network's own errors, and churn hands
    /// the noise a step's estimate kept back to the next call as noise, which it removes. The
    /// price is spread: with an exact denoiser these samples have about 0.37 of the posterior's
    /// variance, where 40 steps of the ODE solvers reach it ([`EpsConfig::ode`];
    /// `eps-studio check-posterior`).
    fn default() -> Self {
        Self {
            steps: 10,
            solver: Solver::Euler,
            schedule: EdmSchedule::default(),
            churn: Churn::total(4.0),
        }
    }
}

impl EpsConfig {
    /// The deterministic probability-flow ODE with `solver` over `steps` noise levels.
    pub fn ode(steps: usize, solver: Solver) -> Self {
        Self {
            steps,
            solver,
            schedule: EdmSchedule::default(),
            churn: Churn::NONE,
        }
    }

    /// The solver's display name.
    pub fn solver_name(&self) -> &'static str {
        match self.solver {
            Solver::Euler => "Euler",
            Solver::Heun => "Heun",
            Solver::DpmSolver2m => "DPM++2M",
        }
    }

    /// The sampler's display name: the solver, and the churn when there is one.
    pub fn name(&self) -> String {
        if self.churn.is_none() {
            self.solver_name().to_owned()
        } else {
            format!("{} + churn {}", self.solver_name(), self.churn.s_churn)
        }
    }

    /// Checks the settings before any work: steps within [`crate::limits`], a valid churn, and
    /// no churn with the multistep solver.
    pub fn validate(&self) -> Result<()> {
        crate::limits::steps(self.steps)?;
        self.churn.validate()?;
        if self.solver == Solver::DpmSolver2m && !self.churn.is_none() {
            return Err(Error::invalid(
                "churn",
                self.churn.s_churn,
                "DPM-Solver++(2M) extrapolates from the previous step's estimate, which churn \
                 invalidates; use Euler or Heun with churn, or churn 0 with DPM-Solver++(2M)",
            ));
        }
        Ok(())
    }
}

/// EDM's stochastic "churn" (Karras et al. 2022, Algorithm 2): before a step at σ within
/// `[sigma_lo, sigma_hi]`, fresh noise raises the level to `σ̂ = (1 + γ) σ` with
/// `γ = min(S_churn / N, √2 − 1)` for `N` steps, `x ← x + s_noise √(σ̂² − σ²) z`, and the step runs
/// from `σ̂`. It costs no network call, and gives each call the chance to remove as noise what
/// earlier calls left behind. As `N` grows `γ` falls as `1/N`, so the sampler converges to the
/// same distribution as the ODE.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// EDM's `S_churn`: the total churn, shared over the steps (0: the deterministic ODE).
    pub s_churn: f64,
    /// Lowest σ that gets churn (EDM's `S_tmin`).
    pub sigma_lo: f64,
    /// Highest σ that gets churn (EDM's `S_tmax`).
    pub sigma_hi: f64,
    /// Scale of the added noise (EDM's `S_noise`).
    pub s_noise: f64,
}

impl Churn {
    /// The largest churn per step EDM allows, `√2 − 1`: the added noise variance at most equals
    /// the state's own.
    pub const MAX_GAMMA: f64 = std::f64::consts::SQRT_2 - 1.0;

    /// The largest `S_churn` accepted (far above where `γ` reaches its cap at any step count
    /// the app allows).
    pub const MAX_S_CHURN: f64 = 1000.0;

    /// No churn: the deterministic ODE.
    pub const NONE: Self = Self::total(0.0);

    /// `S_churn` at every noise level, `S_noise = 1`.
    pub const fn total(s_churn: f64) -> Self {
        Self {
            s_churn,
            sigma_lo: 0.0,
            sigma_hi: f64::INFINITY,
            s_noise: 1.0,
        }
    }

    /// Whether this adds no noise.
    pub fn is_none(&self) -> bool {
        self.s_churn == 0.0
    }

    /// The relative increase of σ per step for `steps` steps.
    pub fn gamma(&self, steps: usize) -> f64 {
        (self.s_churn / steps.max(1) as f64).min(Self::MAX_GAMMA)
    }

    /// Checks `S_churn`, the σ range and the noise scale.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=Self::MAX_S_CHURN).contains(&self.s_churn) {
            return Err(Error::invalid(
                "churn",
                self.s_churn,
                "S_churn must lie in [0, 1000] (0: the deterministic ODE; γ per step is \
                 min(S_churn / steps, √2 − 1))",
            ));
        }
        if !(self.sigma_lo >= 0.0 && self.sigma_lo <= self.sigma_hi) {
            return Err(Error::invalid(
                "churn σ range",
                format!("[{}, {}]", self.sigma_lo, self.sigma_hi),
                "needs 0 ≤ low ≤ high",
            ));
        }
        if !(self.s_noise.is_finite() && self.s_noise > 0.0) {
            return Err(Error::invalid(
                "churn noise scale",
                self.s_noise,
                "must be a positive number",
            ));
        }
        Ok(())
    }

    /// The raised level `σ̂` for a step at `sigma` of a `steps`-step run (`sigma` itself
    /// outside the range).
    pub fn raised(&self, sigma: f64, steps: usize) -> f64 {
        if self.is_none() || sigma < self.sigma_lo || sigma > self.sigma_hi {
            sigma
        } else {
            sigma * (1.0 + self.gamma(steps))
        }
    }
}

/// One-call posterior mean settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PosteriorMeanConfig {
    /// The noise level of the single call; at σmax the pivot is `A⁺y + P_null x_t` and the
    /// posterior denoiser returns `E[x0 | y]` (eps-method.md §2).
    pub sigma: f64,
}

impl Default for PosteriorMeanConfig {
    fn default() -> Self {
        Self {
            sigma: EdmSchedule::default().sigma_max,
        }
    }
}

/// Draws one posterior sample per seed with the EPS sampler, on the problem's device.
pub fn sample(
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &EpsConfig,
    observer: Observer<'_>,
) -> Result<SampleOutput> {
    sample_with(
        &mut TensorArithmetic::new(problem),
        d,
        problem,
        seeds,
        cfg,
        observer,
    )
}

/// [`sample`] started part-way down the schedule: `x = x_start + σ_0 ε`, where `σ_0` is the
/// schedule's `sigma_max` and `x_start` (`[B, C, H, W]`, one image per seed) is a clean estimate
/// whose errors are small next to `σ_0` — a coarser result brought to this resolution, as in
/// coarse-to-fine sampling (SDEdit, Meng et al. 2022).
pub fn sample_from(
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    x_start: &Tensor,
    seeds: &[u64],
    cfg: &EpsConfig,
    observer: Observer<'_>,
) -> Result<SampleOutput> {
    run(
        &mut TensorArithmetic::new(problem),
        d,
        problem,
        Some(x_start),
        seeds,
        cfg,
        observer,
    )
}

/// [`sample`] with the pivot and the solver updates done by `arith` (another backend).
///
/// Every update is written as a linear combination of the state `x`, the current estimate `x̂0`
/// and, for Heun and DPM-Solver++(2M), one earlier batch, so any [`StepArithmetic`] can hold the
/// state between network calls.
pub fn sample_with<A: StepArithmetic>(
    arith: &mut A,
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &EpsConfig,
    observer: Observer<'_>,
) -> Result<SampleOutput> {
    run(arith, d, problem, None, seeds, cfg, observer)
}

fn run<A: StepArithmetic>(
    arith: &mut A,
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    x_start: Option<&Tensor>,
    seeds: &[u64],
    cfg: &EpsConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    cfg.validate()?;
    let super::Start {
        sigmas,
        x,
        mut noise,
    } = start(problem, seeds, &cfg.schedule, cfg.steps)?;
    let x = match x_start {
        Some(clean) => {
            let dims = problem.check_image(clean, "the sampler's starting image")?;
            if dims.0 != seeds.len() {
                return Err(Error::shape(
                    "the sampler's starting image",
                    format!("one image per seed ({})", seeds.len()),
                    dims.0,
                ));
            }
            (clean.to_dtype(x.dtype())? + x)?
        }
        None => x,
    };
    let mut x = arith.load(&x)?;
    let denoise = |arith: &mut A, x: &A::Batch, sigma: f64| -> Result<(Tensor, A::Batch)> {
        let mu = arith.pivot(x, Interpolant::edm(sigma))?;
        let x0 = d.denoise(&mu, problem, sigma)?;
        let held = arith.load(&x0)?;
        Ok((x0, held))
    };
    let mut nfe = 0;
    let mut previous_x0: Option<A::Batch> = None;
    for i in 0..cfg.steps {
        let (sigma, sigma_next) = (cfg.churn.raised(sigmas[i], cfg.steps), sigmas[i + 1]);
        if sigma > sigmas[i] {
            // Churn: x at σ̂ = (1 + γ) σ, from each sample's own noise stream.
            let z = noise.normal(problem.image_chw(), problem.dtype(), problem.device())?;
            let z = arith.load(&z)?;
            let scale = cfg.churn.s_noise * (sigma * sigma - sigmas[i] * sigmas[i]).sqrt();
            x = arith.combine(&[(1.0, &x), (scale, &z)])?;
        }
        let (x0_tensor, x0) = denoise(arith, &x, sigma)?;
        nfe += 1;
        let x_next = match (cfg.solver, previous_x0.as_ref()) {
            (Solver::DpmSolver2m, Some(prev)) if sigma_next > 0.0 => {
                // Exponential integrator in t = −ln σ with a linear extrapolation of x̂0 from the
                // previous step: x_next = (σ'/σ) x + (1 − σ'/σ) x̂0_d,
                // x̂0_d = (1 + 1/(2r)) x̂0 − 1/(2r) x̂0_prev, r = h_prev/h.
                let h = (sigma / sigma_next).ln();
                let h_prev = (sigmas[i - 1] / sigma).ln();
                let k = 1.0 / (2.0 * h_prev / h);
                let ratio = sigma_next / sigma;
                arith.combine(&[
                    (ratio, &x),
                    ((1.0 - ratio) * (1.0 + k), &x0),
                    (-(1.0 - ratio) * k, prev),
                ])?
            }
            _ => {
                // Probability-flow ODE dx/dσ = (x − D(x, σ))/σ; an Euler step (also the first
                // and last DPM-Solver++(2M) step): x + h (x − x̂0)/σ with h = σ' − σ, which is
                // exactly x̂0 when σ' = 0.
                let h = sigma_next - sigma;
                let x_euler = arith.combine(&[(1.0 + h / sigma, &x), (-h / sigma, &x0)])?;
                if cfg.solver == Solver::Heun && sigma_next > 0.0 {
                    // Trapezoid: x + h/2 ((x − x̂0)/σ + (x_e − x̂0')/σ').
                    let (_, x0_next) = denoise(arith, &x_euler, sigma_next)?;
                    nfe += 1;
                    let (a, b) = (h / (2.0 * sigma), h / (2.0 * sigma_next));
                    arith.combine(&[(1.0 + a, &x), (-a, &x0), (b, &x_euler), (-b, &x0_next)])?
                } else {
                    x_euler
                }
            }
        };
        report(
            &mut observer,
            &StepInfo {
                step: i + 1,
                n_steps: cfg.steps,
                sigma,
                x0_hat: &x0_tensor,
                nfe,
            },
        )?;
        previous_x0 = Some(x0);
        x = x_next;
    }
    Ok(SampleOutput {
        samples: arith.read(&x)?,
        nfe,
        steps: cfg.steps,
    })
}

/// The EPS posterior mean `E[x0 | y]`: a single posterior-denoiser call at σmax.
pub fn posterior_mean(
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &PosteriorMeanConfig,
    observer: Observer<'_>,
) -> Result<SampleOutput> {
    posterior_mean_with(
        &mut TensorArithmetic::new(problem),
        d,
        problem,
        seeds,
        cfg,
        observer,
    )
}

/// [`posterior_mean`] with the pivot computed by `arith` (another backend).
pub fn posterior_mean_with<A: StepArithmetic>(
    arith: &mut A,
    d: &dyn PosteriorDenoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &PosteriorMeanConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    let schedule = EdmSchedule {
        sigma_max: cfg.sigma,
        ..EdmSchedule::default()
    };
    let super::Start { x, .. } = start(problem, seeds, &schedule, 1)?;
    let x = arith.load(&x)?;
    let mu = arith.pivot(&x, Interpolant::edm(cfg.sigma))?;
    let x0 = d.denoise(&mu, problem, cfg.sigma)?;
    report(
        &mut observer,
        &StepInfo {
            step: 1,
            n_steps: 1,
            sigma: cfg.sigma,
            x0_hat: &x0,
            nfe: 1,
        },
    )?;
    Ok(SampleOutput {
        samples: x0,
        nfe: 1,
        steps: 1,
    })
}
