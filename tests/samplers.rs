//! Samplers: solver order, NFE accounting, progress and cancellation, seeds, vector–Jacobian
//! products, and failure modes.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use common::*;
use eps_studio::inverse::{LinearOperator, Mask, Problem};
use eps_studio::prior::{GaussianMixture, GmmPosteriorOracle};
use eps_studio::sampler::{
    self, DdnmConfig, Denoiser, Denoisers, DiffpirConfig, DpsConfig, EpsConfig, Flow, Method,
    PigdmConfig, PosteriorDenoiser, PosteriorMeanConfig, Solver, Task, eps::Churn, ignore_progress,
};
use eps_studio::{Error, Result};
use nalgebra::{DMatrix, DVector};

/// A problem on 1×4×4 images with nothing observed: μ* = x_t, so EPS runs the plain ODE.
fn unobserved(dtype: DType) -> Problem {
    let op: Arc<dyn LinearOperator> = Arc::new(
        Mask::new(&Tensor::zeros((1, 1, 4, 4), DType::F32, &Device::Cpu).unwrap()).unwrap(),
    );
    Problem::new(
        op,
        &Tensor::zeros((1, 1, 4, 4), dtype, &Device::Cpu).unwrap(),
        0.05,
        (1, 4, 4),
    )
    .unwrap()
}

/// A single Gaussian N(m, c I) as a posterior denoiser (ignores the measurement).
struct Gaussian {
    mean: f64,
    var: f64,
    calls: AtomicUsize,
}

impl Gaussian {
    fn new(mean: f64, var: f64) -> Self {
        Self {
            mean,
            var,
            calls: AtomicUsize::new(0),
        }
    }
}

impl PosteriorDenoiser for Gaussian {
    fn denoise(&self, mu: &Tensor, _: &Problem, sigma: f64) -> Result<Tensor> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let g = self.var / (self.var + sigma * sigma);
        Ok(mu.affine(g, (1.0 - g) * self.mean)?)
    }
}

/// The probability-flow ODE maps x_T to m + √(c/(c+σmax²))(x_T − m) exactly for N(m, cI). Doubling
/// the steps must cut the error ~2× for Euler and ~4× for the second-order solvers.
#[test]
fn solvers_converge_at_their_order_on_a_gaussian() {
    let problem = unobserved(DType::F64);
    let seeds = [3, 4, 5];
    let gauss = Gaussian::new(0.3, 0.04);
    let start = eps_studio::noise::SeededNoise::new(&seeds)
        .normal((1, 4, 4), DType::F64, &Device::Cpu)
        .unwrap();
    let smax: f64 = 80.0;
    let shrink = (0.04 / (0.04 + smax * smax)).sqrt();
    let exact = start.affine(smax * shrink, 0.3 * (1.0 - shrink)).unwrap();
    for (solver, order) in [
        (Solver::Euler, 1.0),
        (Solver::Heun, 2.0),
        (Solver::DpmSolver2m, 2.0),
    ] {
        let err = |steps: usize| {
            let cfg = EpsConfig::ode(steps, solver);
            let out =
                sampler::eps::sample(&gauss, &problem, &seeds, &cfg, &mut ignore_progress).unwrap();
            max_abs_diff(&out.samples, &exact)
        };
        let (e1, e2) = (err(40), err(80));
        let observed = (e1 / e2).log2();
        assert!(
            (observed - order).abs() < 0.35,
            "{solver:?}: error {e1:.2e} → {e2:.2e}, order {observed:.2}, expected {order}"
        );
    }
}

#[test]
fn nfe_is_counted_and_reported_per_solver() {
    let problem = unobserved(DType::F32);
    for (solver, steps, want) in [
        (Solver::Euler, 7, 7),
        (Solver::Heun, 7, 13),
        (Solver::DpmSolver2m, 7, 7),
    ] {
        let gauss = Gaussian::new(0.0, 0.1);
        let mut reported = Vec::new();
        let cfg = EpsConfig::ode(steps, solver);
        let out = sampler::eps::sample(&gauss, &problem, &[1, 2], &cfg, &mut |info| {
            reported.push((
                info.step,
                info.n_steps,
                info.nfe,
                info.x0_hat.dims().to_vec(),
            ));
            Flow::Continue
        })
        .unwrap();
        assert_eq!(out.nfe, want, "{solver:?}");
        assert_eq!(
            gauss.calls.load(Ordering::SeqCst),
            want,
            "{solver:?} network calls"
        );
        assert_eq!(reported.len(), steps);
        assert!(
            reported
                .iter()
                .enumerate()
                .all(|(i, r)| r.0 == i + 1 && r.1 == steps && r.3 == [2, 1, 4, 4])
        );
        assert_eq!(reported.last().unwrap().2, want);
    }
    let gauss = Gaussian::new(0.0, 0.1);
    let mean = sampler::eps::posterior_mean(
        &gauss,
        &problem,
        &[1],
        &PosteriorMeanConfig::default(),
        &mut ignore_progress,
    )
    .unwrap();
    assert_eq!((mean.nfe, gauss.calls.load(Ordering::SeqCst)), (1, 1));
}

/// EDM's churn: fresh noise before each step, no extra network call, and — because its
/// per-step increase `γ = min(S_churn/N, √2 − 1)` shrinks as steps are added — the same
/// distribution as the ODE in the limit. A churn with a fixed per-step γ would settle near 0.85 of
/// the variance instead.
#[test]
fn churn_costs_no_call_and_keeps_the_distribution() {
    let problem = unobserved(DType::F64);
    let gauss = Gaussian::new(0.3, 0.04);
    for (solver, steps, want) in [(Solver::Euler, 9, 9), (Solver::Heun, 9, 17)] {
        gauss.calls.store(0, Ordering::SeqCst);
        let cfg = EpsConfig {
            steps,
            solver,
            churn: Churn::total(4.0),
            ..EpsConfig::default()
        };
        let out =
            sampler::eps::sample(&gauss, &problem, &[1, 2], &cfg, &mut ignore_progress).unwrap();
        assert_eq!(
            (out.nfe, gauss.calls.load(Ordering::SeqCst)),
            (want, want),
            "{solver:?}"
        );
    }

    // 256 samples of 16 pixels from N(0.3, 0.04): the variance's standard error is about 2%.
    let seeds: Vec<u64> = (0..256).collect();
    let variance_ratio = |cfg: &EpsConfig| {
        let out =
            sampler::eps::sample(&gauss, &problem, &seeds, cfg, &mut ignore_progress).unwrap();
        let v = to_vec(&out.samples);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (v.len() - 1) as f64;
        assert!(
            (mean - 0.3).abs() < 0.01,
            "sample mean {mean:.4}, expected 0.3"
        );
        var / 0.04
    };
    let churned = EpsConfig {
        steps: 400,
        churn: Churn::total(4.0),
        ..EpsConfig::default()
    };
    let ratio = variance_ratio(&churned);
    assert!(
        (ratio - 1.0).abs() < 0.08,
        "400 churned Euler steps give {ratio:.3} of the prior's variance"
    );
    // Churn draws from each sample's own stream: the ODE from the same x_T differs.
    let ode = sampler::eps::sample(
        &gauss,
        &problem,
        &[5],
        &EpsConfig::ode(10, Solver::Euler),
        &mut ignore_progress,
    )
    .unwrap();
    let sde = sampler::eps::sample(
        &gauss,
        &problem,
        &[5],
        &EpsConfig {
            steps: 10,
            ..EpsConfig::default()
        },
        &mut ignore_progress,
    )
    .unwrap();
    assert!(max_abs_diff(&ode.samples, &sde.samples) > 1e-3);
}

#[test]
fn churn_settings_are_checked_before_any_call() {
    let problem = unobserved(DType::F32);
    let gauss = Gaussian::new(0.0, 0.1);
    let bad = [
        (Solver::Euler, Churn::total(-1.0), "S_churn"),
        (Solver::Euler, Churn::total(f64::NAN), "S_churn"),
        (Solver::Euler, Churn::total(5000.0), "S_churn"),
        (
            Solver::Heun,
            Churn {
                s_noise: 0.0,
                ..Churn::total(4.0)
            },
            "noise scale",
        ),
        (
            Solver::Euler,
            Churn {
                sigma_lo: 2.0,
                sigma_hi: 1.0,
                ..Churn::total(4.0)
            },
            "σ range",
        ),
        (Solver::DpmSolver2m, Churn::total(4.0), "DPM-Solver++(2M)"),
    ];
    for (solver, churn, says) in bad {
        let cfg = EpsConfig {
            solver,
            churn,
            ..EpsConfig::default()
        };
        let err =
            sampler::eps::sample(&gauss, &problem, &[1], &cfg, &mut ignore_progress).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err:?}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(
        gauss.calls.load(Ordering::SeqCst),
        0,
        "no call before the check"
    );
}

#[test]
fn cancel_stops_between_steps() {
    let problem = unobserved(DType::F32);
    let gauss = Gaussian::new(0.0, 0.1);
    let cfg = EpsConfig {
        steps: 20,
        solver: Solver::Euler,
        ..EpsConfig::default()
    };
    let result = sampler::eps::sample(&gauss, &problem, &[1], &cfg, &mut |info| {
        if info.step == 3 {
            Flow::Cancel
        } else {
            Flow::Continue
        }
    });
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert_eq!(
        gauss.calls.load(Ordering::SeqCst),
        3,
        "no work after the cancelling step"
    );
}

#[test]
fn a_sample_does_not_depend_on_its_batch() {
    let prior = Arc::new(GaussianMixture::synthetic((1, 4, 4), 2, 3).unwrap());
    let op: Arc<dyn LinearOperator> = Arc::new(random_mask((1, 1, 4, 4), 0.5, 1));
    let x0 = prior
        .sample_tensor(1, 1, &Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let problem = Problem::simulate(op, &x0, 0.05, 2).unwrap();
    let oracle = GmmPosteriorOracle::new(Arc::clone(&prior), &problem).unwrap();
    let cfg = EpsConfig::default();
    let alone = sampler::eps::sample(&oracle, &problem, &[42], &cfg, &mut ignore_progress).unwrap();
    let batch =
        sampler::eps::sample(&oracle, &problem, &[7, 42, 9], &cfg, &mut ignore_progress).unwrap();
    let again =
        sampler::eps::sample(&oracle, &problem, &[7, 42, 9], &cfg, &mut ignore_progress).unwrap();
    assert!(max_abs_diff(&alone.samples, &batch.samples.narrow(0, 1, 1).unwrap()) < 1e-5);
    assert_eq!(
        to_vec(&batch.samples),
        to_vec(&again.samples),
        "same seeds, same samples"
    );
    assert!(
        max_abs_diff(
            &batch.samples.narrow(0, 0, 1).unwrap(),
            &batch.samples.narrow(0, 2, 1).unwrap()
        ) > 1e-3
    );
}

/// A small denoiser built from candle operations: `D(x) = c(σ)·tanh(W ⋆ x) + x/(1+σ²)`.
struct ConvDenoiser {
    weight: Tensor,
}

impl Denoiser for ConvDenoiser {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let conv = x.conv2d(&self.weight, 1, 1, 1, 1)?.tanh()?;
        Ok((conv.affine(1.0 / (1.0 + sigma), 0.0)?
            + x.affine(1.0 / (1.0 + sigma * sigma), 0.0)?)?)
    }
}

/// `⟨Jᵀv, u⟩` must equal the directional derivative `⟨v, (D(x+hu) − D(x−hu))/2h⟩`.
fn check_vjp(d: &dyn Denoiser, x: &Tensor, sigma: f64, what: &str) {
    let v = randn(x.dims4().unwrap(), 91);
    let u = randn(x.dims4().unwrap(), 92);
    let mut cot = |_: &Tensor| -> Result<Tensor> { Ok(v.clone()) };
    let (x0, jtv) = d.denoise_vjp(x, sigma, &mut cot).unwrap();
    assert!(
        max_abs_diff(&x0, &d.denoise(x, sigma).unwrap()) < 1e-12,
        "{what}: vjp's x̂0 differs"
    );
    let h = 1e-5;
    let plus = d
        .denoise(&(x + u.affine(h, 0.0).unwrap()).unwrap(), sigma)
        .unwrap();
    let minus = d
        .denoise(&(x - u.affine(h, 0.0).unwrap()).unwrap(), sigma)
        .unwrap();
    let fd = dot(&v, &(plus - minus).unwrap()) / (2.0 * h);
    let ad = dot(&jtv, &u);
    assert!(
        (fd - ad).abs() < 1e-6 * fd.abs().max(1.0),
        "{what} σ={sigma}: ⟨Jᵀv,u⟩ = {ad}, finite difference {fd}"
    );
}

#[test]
fn autograd_and_analytic_vjps_match_finite_differences() {
    let weight = randn((3, 3, 3, 3), 5).affine(0.3, 0.0).unwrap();
    let conv = ConvDenoiser { weight };
    let x = randn((2, 3, 6, 6), 6);
    for sigma in [0.1, 2.0] {
        check_vjp(&conv, &x, sigma, "candle autograd");
    }
    let gmm = GaussianMixture::synthetic((1, 4, 4), 3, 2).unwrap();
    let xg = randn((3, 1, 4, 4), 7).affine(0.5, 0.0).unwrap();
    for sigma in [0.05, 0.5, 5.0] {
        check_vjp(&gmm, &xg, sigma, "mixture");
    }
}

/// A denoiser that leaves candle for the host cannot be differentiated; the error says what to do.
struct HostDenoiser;

impl Denoiser for HostDenoiser {
    fn denoise(&self, x: &Tensor, _: f64) -> Result<Tensor> {
        let v: Vec<f64> = to_vec(x).iter().map(|v| v * 0.5).collect();
        Ok(Tensor::from_vec(v, x.dims(), x.device())?)
    }
}

#[test]
fn non_differentiable_denoiser_gets_a_clear_error() {
    let x = randn((1, 1, 4, 4), 1);
    let err = HostDenoiser
        .denoise_vjp(&x, 1.0, &mut |t: &Tensor| Ok(t.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("denoise_vjp"), "{err}");
}

/// A denoiser that returns NaN after a few calls: the sampler stops with an error naming the step.
struct Diverging(AtomicUsize);

impl Denoiser for Diverging {
    fn denoise(&self, x: &Tensor, _: f64) -> Result<Tensor> {
        if self.0.fetch_add(1, Ordering::SeqCst) >= 4 {
            Ok(x.affine(f64::NAN, 0.0)?)
        } else {
            Ok(x.affine(0.5, 0.0)?)
        }
    }
}

impl PosteriorDenoiser for Diverging {
    fn denoise(&self, mu: &Tensor, _: &Problem, sigma: f64) -> Result<Tensor> {
        Denoiser::denoise(self, mu, sigma)
    }
}

#[test]
fn a_diverging_network_stops_the_run_with_a_clear_error() {
    let problem = unobserved(DType::F32);
    let methods = [
        Method::Eps(EpsConfig::default()),
        Method::Ddnm(DdnmConfig::default()),
        Method::Diffpir(DiffpirConfig::for_task(Task::RandomInpaint)),
    ];
    for m in methods {
        let d = Diverging(AtomicUsize::new(0));
        let denoisers = Denoisers {
            prior: Some(&d),
            posterior: Some(&d),
        };
        let err = sampler::sample(&m, denoisers, &problem, &[1], &mut ignore_progress).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { .. }) && err.to_string().contains("step 5"),
            "{}: {err}",
            m.name()
        );
    }
}

#[test]
fn methods_refuse_missing_denoisers_and_bad_settings() {
    let problem = unobserved(DType::F32);
    let gmm = GaussianMixture::synthetic((1, 4, 4), 2, 1).unwrap();
    let only_prior = Denoisers {
        prior: Some(&gmm),
        posterior: None,
    };
    let err = sampler::sample(
        &Method::Eps(EpsConfig::default()),
        only_prior,
        &problem,
        &[1],
        &mut ignore_progress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("EPS denoiser"), "{err}");
    let bad = [
        Method::Dps(DpsConfig {
            zeta: -1.0,
            ..DpsConfig::for_task(Task::BoxInpaint)
        }),
        Method::Ddnm(DdnmConfig {
            eta: 1.5,
            ..DdnmConfig::default()
        }),
        Method::Pigdm(PigdmConfig {
            eta: -0.1,
            ..PigdmConfig::default()
        }),
        Method::Diffpir(DiffpirConfig {
            lambda: 0.0,
            ..DiffpirConfig::for_task(Task::MotionDeblur)
        }),
        Method::Eps(EpsConfig {
            steps: 0,
            ..EpsConfig::default()
        }),
    ];
    let gauss = Gaussian::new(0.0, 0.1);
    let both = Denoisers {
        prior: Some(&gmm),
        posterior: Some(&gauss),
    };
    for m in bad {
        let err = sampler::sample(&m, both, &problem, &[1], &mut ignore_progress);
        assert!(
            matches!(err, Err(Error::InvalidParameter { .. })),
            "{}: {err:?}",
            m.name()
        );
    }
    let err = sampler::sample(
        &Method::Ddnm(DdnmConfig::default()),
        only_prior,
        &problem,
        &[],
        &mut ignore_progress,
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least one sample"), "{err}");
}

/// DPS's guidance direction is the gradient of ‖y − A D(x)‖: compare with finite differences of
/// that objective on the mixture prior.
#[test]
fn dps_guidance_is_the_gradient_of_the_residual_norm() {
    let gmm = GaussianMixture::synthetic((1, 4, 4), 3, 4).unwrap();
    let op = random_mask((1, 1, 4, 4), 0.5, 2);
    let y = randn((1, 1, 4, 4), 3).affine(0.3, 0.0).unwrap();
    let x = randn((1, 1, 4, 4), 4);
    let sigma = 0.7;
    let objective = |x: &Tensor| -> f64 {
        let r = op
            .forward(&gmm.denoise(x, sigma).unwrap())
            .unwrap()
            .broadcast_sub(&op.forward(&y).unwrap())
            .unwrap();
        dot(&r, &r).sqrt()
    };
    let mut cot = |x0: &Tensor| -> Result<Tensor> {
        let r = op.forward(x0)?.broadcast_sub(&op.forward(&y)?)?;
        let n = dot(&r, &r).sqrt();
        Ok(op.adjoint(&r)?.affine(1.0 / n, 0.0)?)
    };
    let (_, grad) = gmm.denoise_vjp(&x, sigma, &mut cot).unwrap();
    let u = randn((1, 1, 4, 4), 5);
    let h = 1e-6;
    let fd = (objective(&(&x + u.affine(h, 0.0).unwrap()).unwrap())
        - objective(&(&x - u.affine(h, 0.0).unwrap()).unwrap()))
        / (2.0 * h);
    assert!(
        (fd - dot(&grad, &u)).abs() < 1e-6,
        "{fd} vs {}",
        dot(&grad, &u)
    );
}

/// The mixture's exact posterior (closed form) agrees with brute-force Bayes on a 1-pixel image.
#[test]
fn mixture_posterior_matches_numerical_bayes_in_one_dimension() {
    let prior = GaussianMixture::new(
        (1, 1, 1),
        vec![0.3, 0.7],
        vec![
            DVector::from_element(1, -0.5),
            DVector::from_element(1, 0.4),
        ],
        vec![
            DMatrix::from_element(1, 1, 0.04),
            DMatrix::from_element(1, 1, 0.09),
        ],
    )
    .unwrap();
    let a = DMatrix::from_element(1, 1, 0.8);
    let (y, sy) = (0.1, 0.2);
    let post = prior
        .posterior(&a, &DVector::from_element(1, y), sy)
        .unwrap();
    // Riemann sums of p(x) p(y|x) on a fine grid.
    let pdf = |x: f64, m: f64, v: f64| {
        (-(x - m).powi(2) / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v).sqrt()
    };
    let (mut z, mut m1) = (0.0, 0.0);
    for i in 0..200_000 {
        let x = -4.0 + 8.0 * i as f64 / 200_000.0;
        let p = (0.3 * pdf(x, -0.5, 0.04) + 0.7 * pdf(x, 0.4, 0.09)) * pdf(y, 0.8 * x, sy * sy);
        z += p;
        m1 += p * x;
    }
    assert!(
        (post.mean()[0] - m1 / z).abs() < 1e-6,
        "{} vs {}",
        post.mean()[0],
        m1 / z
    );
}
