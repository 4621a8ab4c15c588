//! Diffusion posterior sampling (Chung et al. 2023), EDM-VE form (eps-method.md §6): an Euler step
//! with the unconditional denoiser, then `x ← x − ζ′ ∇_x ‖y − A D(x, σ)‖` (unsquared norm, per
//! image), the gradient taken through the network.

use candle_core::Tensor;

use super::{Denoiser, EdmSchedule, Observer, SampleOutput, StepInfo, Task, report, start};
use crate::inverse::{Problem, batch_dot};
use crate::{Error, Result};

/// DPS settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpsConfig {
    /// Euler steps (one forward-and-backward call each).
    pub steps: usize,
    /// Guidance scale ζ′.
    pub zeta: f64,
    /// Noise schedule.
    pub schedule: EdmSchedule,
}

impl DpsConfig {
    /// The documented defaults: 250 steps; ζ′ = 5 (random inpainting), 10 (box, brush,
    /// super-resolution), 1.5 (Gaussian deblur), 2.5 (motion deblur).
    pub fn for_task(task: Task) -> Self {
        let zeta = match task {
            Task::RandomInpaint => 5.0,
            Task::BoxInpaint | Task::BrushInpaint | Task::SuperResolution => 10.0,
            Task::GaussianDeblur => 1.5,
            Task::MotionDeblur => 2.5,
        };
        Self {
            steps: 250,
            zeta,
            schedule: EdmSchedule::default(),
        }
    }
}

/// Draws one sample per seed with DPS.
pub fn sample(
    d: &dyn Denoiser,
    problem: &Problem,
    seeds: &[u64],
    cfg: &DpsConfig,
    mut observer: Observer<'_>,
) -> Result<SampleOutput> {
    if !(cfg.zeta >= 0.0 && cfg.zeta.is_finite()) {
        return Err(Error::invalid(
            "DPS ζ′",
            cfg.zeta,
            "the guidance scale must be finite and ≥ 0",
        ));
    }
    let super::Start { sigmas, mut x, .. } = start(problem, seeds, &cfg.schedule, cfg.steps)?;
    let op = problem.operator();
    for i in 0..cfg.steps {
        let (sigma, sigma_next) = (sigmas[i], sigmas[i + 1]);
        // ∇_x ‖A D(x) − y‖ = Jᵀ Aᵀ(A D − y) / ‖A D − y‖.
        let mut cotangent = |x0: &Tensor| -> Result<Tensor> {
            let r = problem.residual(x0)?;
            let norm = batch_dot(&r, &r)?.affine(1.0, 1e-20)?.sqrt()?;
            Ok(op.adjoint(&r)?.broadcast_div(&norm)?)
        };
        let (x0, grad) = d.denoise_vjp(&x, sigma, &mut cotangent)?;
        let slope = (&x - &x0)?.affine(1.0 / sigma, 0.0)?;
        let x_euler = (&x + slope.affine(sigma_next - sigma, 0.0)?)?;
        let x_next = (x_euler - grad.affine(cfg.zeta, 0.0)?)?;
        report(
            &mut observer,
            &StepInfo {
                step: i + 1,
                n_steps: cfg.steps,
                sigma,
                x0_hat: &x0,
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
