//! The training-free baselines, called through their real samplers on Gaussian priors where the
//! right answer is known in closed form: each method's defining property.
//!
//! - ΠGDM: for a prior N(m, I) its Gaussian approximation of `p(x0 | x_t)` is exact, so its
//!   guided estimate must be the exact posterior mean `E[x0 | x_t, y]`.
//! - DPS: one step is the backbone's Euler step minus ζ′ times the gradient of `‖y − A D(x)‖`.
//! - DDNM+ and DiffPIR: with a noiseless measurement, every sample agrees with it exactly.
//! - DiffPIR: its data step is the proximal point of `½‖Ax − y‖² + ½ρ‖x − D(x)‖²`.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::*;
use eps_studio::inverse::{AvgPoolSr, LinearOperator, Problem};
use eps_studio::noise::SeededNoise;
use eps_studio::prior::GaussianMixture;
use eps_studio::sampler::{
    self, DdnmConfig, Denoiser, Denoisers, DiffpirConfig, DpsConfig, EdmSchedule, EpsConfig, Flow,
    Method, PigdmConfig, PosteriorDenoiser, Solver, StepInfo, Task,
};
use nalgebra::{DMatrix, DVector};

const CHW: (usize, usize, usize) = (1, 4, 4);

/// A unit-covariance Gaussian prior N(m, I) on 1×4×4 images.
fn unit_gaussian() -> GaussianMixture {
    let m = DVector::from_iterator(16, (0..16).map(|i| 0.3 * ((i as f64) * 0.7).sin()));
    GaussianMixture::new(CHW, vec![1.0], vec![m], vec![DMatrix::identity(16, 16)]).unwrap()
}

fn flat(t: &Tensor) -> DVector<f64> {
    DVector::from_vec(to_vec(t))
}

/// The dense matrix of `op` on 1×4×4 images.
fn dense(op: &dyn LinearOperator) -> DMatrix<f64> {
    let mut cols = Vec::new();
    for j in 0..16 {
        let mut e = vec![0.0; 16];
        e[j] = 1.0;
        let t = Tensor::from_vec(e, (1, 1, 4, 4), &Device::Cpu).unwrap();
        cols.push(flat(&op.forward(&t).unwrap()));
    }
    DMatrix::from_columns(&cols)
}

/// `x_T` as every sampler draws it for these seeds at `sigma_max`.
fn start_noise(seeds: &[u64], sigma_max: f64) -> Tensor {
    SeededNoise::new(seeds)
        .normal(CHW, DType::F64, &Device::Cpu)
        .unwrap()
        .affine(sigma_max, 0.0)
        .unwrap()
}

/// Runs `method` for one step from σmax and returns the estimate it reported and its output.
fn one_step(
    method: &Method,
    prior: &dyn Denoiser,
    problem: &Problem,
    seed: u64,
) -> (Tensor, Tensor) {
    let mut reported = None;
    let out = sampler::sample(
        method,
        Denoisers {
            prior: Some(prior),
            posterior: None,
        },
        problem,
        &[seed],
        &mut |s: &StepInfo<'_>| {
            reported = Some(s.x0_hat.clone());
            Flow::Continue
        },
    )
    .unwrap();
    (reported.unwrap(), out.samples)
}

fn schedule(sigma_max: f64) -> EdmSchedule {
    EdmSchedule {
        sigma_max,
        ..EdmSchedule::default()
    }
}

/// ΠGDM's step as specified (eps-method.md §6), against a dense computation for a unit
/// Gaussian prior, whose denoiser and Jacobian are known: `x̂0 = (x + σ² m)/(1+σ²)`,
/// `J = I/(1+σ²)`, so `g = Jᵀ v = v/(1+σ²)` with `v = Aᵀ(AAᵀ + σ_y²(1+σ²)/σ² I)⁻¹(y − A x̂0)`;
/// one step to σ = 0 lands on `x̂0 + g`.
#[test]
fn pigdm_step_adds_the_pulled_back_pseudoinverse_residual() {
    let prior = unit_gaussian();
    let op = random_mask((1, 1, 4, 4), 0.5, 11);
    let a = dense(&op);
    let sigma_y = 0.1;
    let y = op
        .forward(&randn((1, 1, 4, 4), 12).affine(0.5, 0.0).unwrap())
        .unwrap();
    let problem = Problem::new(Arc::new(op), &y, sigma_y, CHW).unwrap();
    let m = prior.mean();
    for (k, sigma) in [0.3, 2.0, 80.0].into_iter().enumerate() {
        let cfg = PigdmConfig {
            steps: 1,
            schedule: schedule(sigma),
            ..PigdmConfig::default()
        };
        let seed = 20 + k as u64;
        let (estimate, sample) = one_step(&Method::Pigdm(cfg), &prior, &problem, seed);
        let s2 = sigma * sigma;
        let xt = flat(&start_noise(&[seed], sigma));
        let x0 = (xt + &m * s2) / (1.0 + s2);
        let shift = sigma_y * sigma_y * (1.0 + s2) / s2;
        let gram = &a * a.transpose() + DMatrix::identity(a.nrows(), a.nrows()) * shift;
        let v = a.transpose() * gram.lu().solve(&(flat(&y) - &a * &x0)).unwrap();
        let want = &x0 + v / (1.0 + s2);
        for (what, got) in [("estimate", &estimate), ("sample", &sample)] {
            let err = (flat(got) - &want).amax();
            assert!(err < 1e-6, "σ = {sigma}: ΠGDM {what} off by {err}");
        }
    }
}

#[test]
fn dps_step_is_the_euler_step_minus_the_residual_norm_gradient() {
    let prior = GaussianMixture::synthetic(CHW, 3, 4).unwrap();
    let op = random_mask((1, 1, 4, 4), 0.5, 2);
    let y = op
        .forward(&randn((1, 1, 4, 4), 3).affine(0.4, 0.0).unwrap())
        .unwrap();
    let problem = Problem::new(Arc::new(op.clone()), &y, 0.05, CHW).unwrap();
    let (sigma, zeta, seed) = (1.5, 3.0, 9);
    let cfg = DpsConfig {
        steps: 1,
        zeta,
        schedule: schedule(sigma),
    };
    let (_, out) = one_step(&Method::Dps(cfg), &prior, &problem, seed);
    // With one step the Euler step lands on D(x_T); DPS then moves against ∇‖y − A D(x)‖.
    let xt = start_noise(&[seed], sigma);
    let objective = |x: &Tensor| -> f64 {
        let r = op
            .forward(&prior.denoise(x, sigma).unwrap())
            .unwrap()
            .broadcast_sub(&y)
            .unwrap();
        dot(&r, &r).sqrt()
    };
    let h = 1e-5;
    let grad: Vec<f64> = (0..16)
        .map(|j| {
            let mut e = vec![0.0; 16];
            e[j] = h;
            let e = Tensor::from_vec(e, (1, 1, 4, 4), &Device::Cpu).unwrap();
            (objective(&(&xt + &e).unwrap()) - objective(&(&xt - &e).unwrap())) / (2.0 * h)
        })
        .collect();
    let d = flat(&prior.denoise(&xt, sigma).unwrap());
    let want = d - DVector::from_vec(grad) * zeta;
    let err = (flat(&out) - want).amax();
    assert!(err < 1e-5, "DPS step off by {err}");

    // Without guidance DPS is the backbone's Euler sampler, step for step.
    let steps = 6;
    let unguided = sampler::sample(
        &Method::Dps(DpsConfig {
            steps,
            zeta: 0.0,
            schedule: EdmSchedule::default(),
        }),
        Denoisers {
            prior: Some(&prior),
            posterior: None,
        },
        &problem,
        &[seed],
        &mut sampler::ignore_progress,
    )
    .unwrap();
    let nothing = random_mask((1, 1, 4, 4), 1.0, 1);
    let free = Problem::new(Arc::new(nothing), &y.zeros_like().unwrap(), 0.05, CHW).unwrap();
    struct Plain<'a>(&'a GaussianMixture);
    impl PosteriorDenoiser for Plain<'_> {
        fn denoise(&self, mu: &Tensor, _: &Problem, sigma: f64) -> eps_studio::Result<Tensor> {
            self.0.denoise(mu, sigma)
        }
    }
    let euler = sampler::eps::sample(
        &Plain(&prior),
        &free,
        &[seed],
        &EpsConfig::ode(steps, Solver::Euler),
        &mut sampler::ignore_progress,
    )
    .unwrap();
    assert!(max_abs_diff(&unguided.samples, &euler.samples) < 1e-9);
}

#[test]
fn ddnm_and_diffpir_samples_agree_exactly_with_a_noiseless_measurement() {
    let prior = GaussianMixture::synthetic(CHW, 3, 5).unwrap();
    let truth = prior.sample_tensor(1, 6, &randn((1, 1, 4, 4), 0)).unwrap();
    let mask = random_mask((1, 1, 4, 4), 0.6, 7);
    let ops: Vec<(&str, Arc<dyn LinearOperator>)> = vec![
        ("mask", Arc::new(mask)),
        ("SR ×2", Arc::new(AvgPoolSr::new(2).unwrap())),
    ];
    for (name, op) in ops {
        let y = op.forward(&truth).unwrap();
        let problem = Problem::new(Arc::clone(&op), &y, 0.0, CHW).unwrap();
        for method in [
            Method::Ddnm(DdnmConfig {
                steps: 12,
                ..DdnmConfig::default()
            }),
            Method::Diffpir(DiffpirConfig {
                steps: 12,
                ..DiffpirConfig::for_task(Task::BoxInpaint)
            }),
        ] {
            let out = sampler::sample(
                &method,
                Denoisers {
                    prior: Some(&prior),
                    posterior: None,
                },
                &problem,
                &[1, 2, 3],
                &mut sampler::ignore_progress,
            )
            .unwrap();
            let residual = max_abs(&op.forward(&out.samples).unwrap().broadcast_sub(&y).unwrap());
            assert!(
                residual < 1e-6,
                "{} on {name}: ‖A x − y‖∞ = {residual}",
                method.name()
            );
        }
    }
}

#[test]
fn diffpir_data_step_is_the_proximal_point() {
    let prior = GaussianMixture::synthetic(CHW, 2, 8).unwrap();
    let op = random_mask((1, 1, 4, 4), 0.5, 3);
    let y = op
        .forward(&randn((1, 1, 4, 4), 4).affine(0.5, 0.0).unwrap())
        .unwrap();
    let sigma_y = 0.05;
    let problem = Problem::new(Arc::new(op.clone()), &y, sigma_y, CHW).unwrap();
    let (sigma, seed) = (0.8, 5);
    let cfg = DiffpirConfig {
        steps: 1,
        schedule: schedule(sigma),
        ..DiffpirConfig::for_task(Task::BoxInpaint)
    };
    let (estimate, _) = one_step(&Method::Diffpir(cfg), &prior, &problem, seed);
    // Optimality of argmin ½‖Ax − y‖² + ½ρ‖x − D(x_T)‖²: Aᵀ(Ax − y) + ρ(x − D(x_T)) = 0.
    let rho = cfg.lambda * sigma_y * sigma_y / (sigma * sigma);
    let d = prior.denoise(&start_noise(&[seed], sigma), sigma).unwrap();
    let grad = (op
        .adjoint(&op.forward(&estimate).unwrap().broadcast_sub(&y).unwrap())
        .unwrap()
        + (&estimate - &d).unwrap().affine(rho, 0.0).unwrap())
    .unwrap();
    assert!(
        max_abs(&grad) < 1e-9,
        "stationarity violated by {}",
        max_abs(&grad)
    );
}
