//! DiffPIR (Zhu et al. 2023), EDM-VE form (eps-method.md §6): denoise, then the data proximal step
//! `x̂0 = (AᵀA + ρI)⁻¹(Aᵀy + ρ x0)` with `ρ = λ σ_y²/σ²`, then re-noise with
//! `x_next = x̂0 + σ_next(√(1−ζ) ε̂ + √ζ z)`, `ε̂ = (x − x̂0)/σ`.

use super::{
    Denoiser, EdmSchedule, Observer, SampleOutput, StepInfo, Task, ddim_step, report, start,
    validate_unit,
};
use crate::inverse::Problem;
use crate::{Error, Result};

/// DiffPIR settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffpirConfig {
    /// Steps (one network call each).
    pub steps: usize,
    /// Data-term weight λ.
    pub lambda: f64,
    /// Re-noising mix ζ ∈ [0, 1].
    pub zeta: f64,
    /// Noise schedule.
    pub schedule: EdmSchedule,
}

impl DiffpirConfig {
    /// 100 steps, λ = 7, ζ = 1 for inpainting and 0.3 for deblurring and super-resolution.
    pub fn for_task(task: Task) -> Self {
        Self {
            steps: 100,
            lambda: 7.0,
            zeta: if task.is_inpainting() { 1.0 } else { 0.3 },
            schedule: EdmSchedule::default(),
        }
    }
}

/// Draws one sample per seed with DiffPIR.
pub fn sample(
    d: &dyn Denoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &DiffpirConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    validate_unit("DiffPIR ζ", cfg.zeta)?;
    if !(cfg.lambda > 0.0 && cfg.lambda.is_finite()) {
        return Err(Error::invalid("DiffPIR λ", cfg.lambda, "must be positive"));
    }
    let super::Start {
        mut noise,
        sigmas,
        mut x,
    } = start(problem, seeds, &cfg.schedule, cfg.steps)?;
    let op = problem.operator();
    let s2y = problem.sigma_y().powi(2);
    // ddim_step's η: √(1−η²) = √(1−ζ) and η = √ζ.
    let eta = cfg.zeta.sqrt();
    for i in 0..cfg.steps {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let x0 = d.denoise(&x, sigma)?;
        let rho = cfg.lambda * s2y / (sigma * sigma);
        let x0_data = op.prox(&x0, problem.y(), rho, 1.0)?;
        let x_next = ddim_step(&x, &x0_data, &x0_data, sigma, sigma_next, eta, &mut noise)?;
        report(
            &mut observer,
            &StepInfo {
                step: i + 1,
                n_steps: cfg.steps,
                sigma,
                x0_hat: &x0_data,
                nfe: i + 1,
            },
        )?;
        x = x_next;
    }
    Ok(SampleOutput {
        samples: x,
        nfe: cfg.steps,
        steps: cfg.steps,
    })
}
