//! ΠGDM (Song et al. 2023), EDM-VE form (eps-method.md §6). The likelihood `p(y | x_t)` is
//! approximated by `N(A x̂0, r² AAᵀ + σ_y² I)` with `r² = σ²/(1+σ²)`. Each step takes
//! `v = Aᵀ(AAᵀ + σ_y²(1+σ²)/σ² I)⁻¹(y − A x̂0)`, pulls it back through the network,
//! `g = Jᵀ v` (one vector-Jacobian product), and adds it to the DDIM step from `x̂0`:
//! `x_next = x̂0 + √(1−η²)(σ_next/σ)(x − x̂0) + η σ_next z + g`. `v` uses the push-through
//! identity `Aᵀ(AAᵀ + sI)⁻¹ = (AᵀA + sI)⁻¹Aᵀ`, i.e. the operator's proximal map.
//!
//! The guidance is `g` itself, not the Tweedie-scaled `σ² ∇ log p(y | x_t) = (1+σ²) Jᵀ v`.
//! That scaling is exact when the prior is a unit Gaussian, whose Jacobian is `I/(1+σ²)`, but
//! a photo prior's Jacobian is near 1 on the large structures (their variance is far above
//! `σ_d²`): there `r² = σ²/(1+σ²)` understates the posterior spread `σ² J` by up to `1+σ²`, and
//! the scaled step overshot by as much — every object-sized hole diverged to NaN by σ ≈ 4
//! (docs/training.md §5).

use candle_core::Tensor;

use super::{
    Denoiser, EdmSchedule, Observer, SampleOutput, StepInfo, ddim_step, report, start,
    validate_unit,
};
use crate::Result;
use crate::inverse::Problem;

/// ΠGDM settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PigdmConfig {
    /// Steps (one forward-and-backward call each).
    pub steps: usize,
    /// DDIM stochasticity η.
    pub eta: f64,
    /// Noise schedule.
    pub schedule: EdmSchedule,
}

impl Default for PigdmConfig {
    /// 100 steps, η = 1 (fully stochastic DDIM).
    fn default() -> Self {
        Self {
            steps: 100,
            eta: 1.0,
            schedule: EdmSchedule::default(),
        }
    }
}

/// Draws one sample per seed with ΠGDM.
pub fn sample(
    d: &dyn Denoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &PigdmConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    validate_unit("ΠGDM η", cfg.eta)?;
    let super::Start {
        mut noise,
        sigmas,
        mut x,
    } = start(problem, seeds, &cfg.schedule, cfg.steps)?;
    let op = problem.operator();
    let s2y = problem.sigma_y().powi(2);
    for i in 0..cfg.steps {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        let s2 = sigma * sigma;
        let shift = s2y * (1.0 + s2) / s2;
        let mut cotangent = |x0: &Tensor| -> Result<Tensor> {
            let r = problem.residual(x0)?.neg()?;
            op.prox(&x0.zeros_like()?, &r, shift, 1.0)
        };
        let (x0, g) = d.denoise_vjp(&x, sigma, &mut cotangent)?;
        let x_next = (ddim_step(&x, &x0, &x0, sigma, sigma_next, cfg.eta, &mut noise)? + &g)?;
        // What the step lands on at σ_next = 0: the guided clean estimate.
        let x0g = (&x0 + &g)?;
        report(
            &mut observer,
            &StepInfo {
                step: i + 1,
                n_steps: cfg.steps,
                sigma,
                x0_hat: &x0g,
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
