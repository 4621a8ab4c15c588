//! Speed measurements (`eps-studio bench`), taken in one run so ratios compare like with like:
//! the cost of one sampler step for EPS, DPS and ΠGDM relative to a bare denoiser step (the
//! unconditional network plus an Euler update), a single forward pass, and a full 20-NFE EPS
//! restoration.

use std::time::Instant;

use candle_core::{DType, Tensor};

use crate::denoiser::{Network, UNetConfig};
use crate::inverse::{Interpolant, Problem, batch_dot};
use crate::noise::SeededNoise;
use crate::sampler::{self, Denoiser, EpsConfig, Method, PosteriorDenoiser, ignore_progress};
use crate::{Error, Result};

/// One measurement.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// What was timed.
    pub what: String,
    /// Median seconds.
    pub secs: f64,
    /// Ratio to the bare denoiser step of the same size, where meaningful.
    pub ratio: Option<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// Per-step costs on `problem` (batch = the problem's measurement batch), `repeats` interleaved
/// rounds, medians reported.
pub fn step_costs(
    prior: &Network,
    eps: &Network,
    problem: &Problem,
    repeats: usize,
    label: &str,
) -> Result<Vec<BenchRow>> {
    let (c, h, w) = problem.image_chw();
    let b = problem.measurement_batch();
    let seeds: Vec<u64> = (0..b as u64).collect();
    let x = SeededNoise::new(&seeds).normal((c, h, w), DType::F32, problem.device())?;
    let (sigma, sigma_next) = (1.0, 0.8);
    let euler = |x: &Tensor, x0: &Tensor| -> Result<Tensor> {
        Ok((x + ((x - x0)? * ((sigma_next - sigma) / sigma))?)?)
    };
    let op = problem.operator();
    let mut bare = || -> Result<()> {
        let x0 = Denoiser::denoise(prior, &x, sigma)?;
        euler(&x, &x0).map(drop)
    };
    let mut eps_step = || -> Result<()> {
        let mu = problem.pivot(&x, Interpolant::edm(sigma))?;
        let x0 = PosteriorDenoiser::denoise(eps, &mu, problem, sigma)?;
        euler(&x, &x0).map(drop)
    };
    let mut dps = || -> Result<()> {
        let mut cot = |x0: &Tensor| -> Result<Tensor> {
            let r = problem.residual(x0)?;
            let n = batch_dot(&r, &r)?.affine(1.0, 1e-20)?.sqrt()?;
            Ok(op.adjoint(&r)?.broadcast_div(&n)?)
        };
        let (x0, g) = prior.denoise_vjp(&x, sigma, &mut cot)?;
        (euler(&x, &x0)? - g)?;
        Ok(())
    };
    let mut pigdm = || -> Result<()> {
        let s = problem.sigma_y().powi(2) * (1.0 + sigma * sigma) / (sigma * sigma);
        let mut cot = |x0: &Tensor| -> Result<Tensor> {
            let r = problem.residual(x0)?.neg()?;
            op.prox(&x0.zeros_like()?, &r, s, 1.0)
        };
        let (x0, g) = prior.denoise_vjp(&x, sigma, &mut cot)?;
        euler(&x, &(x0 + g)?).map(drop)
    };
    let mut pivot_only = || -> Result<()> { problem.pivot(&x, Interpolant::edm(sigma)).map(drop) };
    // The EPS network's own step without the pivot: isolates the pivot's overhead from the
    // three extra input channels of the EPS architecture.
    let mut eps_net = || -> Result<()> {
        let x0 = PosteriorDenoiser::denoise(eps, &x, problem, sigma)?;
        euler(&x, &x0).map(drop)
    };
    // Warm up every path once (allocations, thread pools).
    for f in [
        &mut bare as &mut dyn FnMut() -> Result<()>,
        &mut eps_step,
        &mut dps,
        &mut pigdm,
        &mut pivot_only,
        &mut eps_net,
    ] {
        f()?;
    }
    let mut t = vec![Vec::new(); 6];
    for _ in 0..repeats.max(1) {
        t[0].push(time(&mut bare)?);
        t[1].push(time(&mut eps_step)?);
        t[2].push(time(&mut dps)?);
        t[3].push(time(&mut pigdm)?);
        t[4].push(time(&mut pivot_only)?);
        t[5].push(time(&mut eps_net)?);
    }
    let m: Vec<f64> = t.into_iter().map(median).collect();
    let row = |what: &str, i: usize| BenchRow {
        what: format!("{label}: {what}"),
        secs: m[i],
        ratio: Some(m[i] / m[0]),
    };
    Ok(vec![
        row("bare denoiser step", 0),
        row("EPS step", 1),
        row("DPS step", 2),
        row("ΠGDM step", 3),
        row("pivot μ* alone", 4),
        row("EPS network step without the pivot", 5),
        BenchRow {
            what: format!("{label}: EPS step ÷ EPS network step (pivot overhead)"),
            secs: m[1],
            ratio: Some(m[1] / m[5]),
        },
    ])
}

/// Time of one forward pass of `net` on a `[batch, 3, size, size]` input, median of `repeats`.
pub fn forward_time(net: &Network, batch: usize, size: usize, repeats: usize) -> Result<f64> {
    let seeds: Vec<u64> = (0..batch as u64).collect();
    let x =
        SeededNoise::new(&seeds).normal((3, size, size), DType::F32, &candle_core::Device::Cpu)?;
    Denoiser::denoise(net, &x, 1.0)?;
    let mut v = Vec::new();
    for _ in 0..repeats.max(1) {
        v.push(time(&mut || Denoiser::denoise(net, &x, 1.0).map(drop))?);
    }
    Ok(median(v))
}

/// Wall time of a whole EPS restoration with the default sampler on `problem`.
pub fn restoration_time(eps: &Network, problem: &Problem, samples: usize) -> Result<(f64, usize)> {
    let cfg = EpsConfig::default();
    let seeds: Vec<u64> = (0..samples as u64).collect();
    if problem.measurement_batch() != 1 {
        return Err(Error::invalid(
            "problem",
            "batched",
            "use a single measurement",
        ));
    }
    let t = Instant::now();
    let out = sampler::sample(
        &Method::Eps(cfg),
        sampler::Denoisers {
            prior: None,
            posterior: Some(eps),
        },
        problem,
        &seeds,
        &mut ignore_progress,
    )?;
    Ok((t.elapsed().as_secs_f64(), out.nfe))
}

/// Parameters and FLOPs of a configuration at `size × size`.
pub fn model_size(cfg: &UNetConfig, size: usize) -> Result<(usize, u64)> {
    let params = crate::denoiser::weights::expected_shapes(cfg)?
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    Ok((params, cfg.flops(size, size)))
}
