//! DDNM+ (Wang et al. 2023), EDM-VE form (eps-method.md §6): range-null-space correction
//! `x̂0 ← x̂0 + λ_σ A⁺(y − A x̂0)` with `λ_σ = σ²/(σ² + σ_y²)` (full correction while the sampler
//! noise dominates, fading as σ drops below σ_y), then a DDIM step with η. Blur uses the Wiener
//! inverse `(AᵀA + εI)⁻¹Aᵀ` in place of `A⁺`.

use super::{
    Denoiser, EdmSchedule, Observer, SampleOutput, StepInfo, ddim_step, report, start,
    validate_unit,
};
use crate::inverse::{OperatorKind, Problem};
use crate::{Error, Result};

/// DDNM+ settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdnmConfig {
    /// Steps (one network call each).
    pub steps: usize,
    /// DDIM stochasticity η.
    pub eta: f64,
    /// Wiener regularisation ε for blur (≈ σ_y² / signal variance).
    pub wiener_eps: f64,
    /// Noise schedule.
    pub schedule: EdmSchedule,
}

impl Default for DdnmConfig {
    /// 100 steps, η = 0.85, ε = 0.01.
    fn default() -> Self {
        Self {
            steps: 100,
            eta: 0.85,
            wiener_eps: 0.01,
            schedule: EdmSchedule::default(),
        }
    }
}

/// Draws one sample per seed with DDNM+.
pub fn sample(
    d: &dyn Denoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &DdnmConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    validate_unit("DDNM η", cfg.eta)?;
    if !(cfg.wiener_eps > 0.0 && cfg.wiener_eps.is_finite()) {
        return Err(Error::invalid(
            "DDNM Wiener ε",
            cfg.wiener_eps,
            "must be positive",
        ));
    }
    let super::Start {
        mut noise,
        sigmas,
        mut x,
    } = start(problem, seeds, &cfg.schedule, cfg.steps)?;
    let op = problem.operator();
    let s2y = problem.sigma_y().powi(2);
    for i in 0..cfg.steps {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let x0 = d.denoise(&x, sigma)?;
        let r = problem.residual(&x0)?.neg()?;
        let correction = match op.kind() {
            OperatorKind::Mask | OperatorKind::SuperResolution => op.pinv(&r)?,
            OperatorKind::Blur | OperatorKind::Other => {
                op.regularized_inverse(&r, cfg.wiener_eps)?
            }
        };
        let gain = sigma * sigma / (sigma * sigma + s2y);
        let x0c = (&x0 + correction.affine(gain, 0.0)?)?;
        let x_next = ddim_step(&x, &x0c, &x0, sigma, sigma_next, cfg.eta, &mut noise)?;
        report(
            &mut observer,
            &StepInfo {
                step: i + 1,
                n_steps: cfg.steps,
                sigma,
                x0_hat: &x0c,
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
