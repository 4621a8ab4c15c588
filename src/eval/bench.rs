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

/// Wall time of `f`, with the device's queue drained before and after (CUDA runs asynchronously:
/// without it a launch would be timed, not the work).
fn time(device: &candle_core::Device, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    device.synchronize()?;
    let t = Instant::now();
    f()?;
    device.synchronize()?;
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
        t[0].push(time(problem.device(), &mut bare)?);
        t[1].push(time(problem.device(), &mut eps_step)?);
        t[2].push(time(problem.device(), &mut dps)?);
        t[3].push(time(problem.device(), &mut pigdm)?);
        t[4].push(time(problem.device(), &mut pivot_only)?);
        t[5].push(time(problem.device(), &mut eps_net)?);
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
pub fn forward_time(
    net: &Network,
    batch: usize,
    size: usize,
    repeats: usize,
    device: &candle_core::Device,
) -> Result<f64> {
    let seeds: Vec<u64> = (0..batch as u64).collect();
    let x = SeededNoise::new(&seeds).normal((3, size, size), DType::F32, device)?;
    Denoiser::denoise(net, &x, 1.0)?;
    let mut v = Vec::new();
    for _ in 0..repeats.max(1) {
        v.push(time(device, &mut || {
            Denoiser::denoise(net, &x, 1.0).map(drop)
        })?);
    }
    Ok(median(v))
}

/// Training throughput of the prior stage for one architecture: the median wall time of a step
/// of `batch` crops of `crop²` pixels (after two warm-up steps), with the GEMM-backed
/// convolutions and fused activations or, with `reference`, candle's own operations (the same
/// results up to rounding).
pub fn training_step_time(
    model: &UNetConfig,
    photos: &crate::train::data::PhotoSet,
    batch: usize,
    crop: usize,
    steps: usize,
    reference: bool,
) -> Result<f64> {
    use crate::train::{Stage, TrainConfig, train};
    let dir = std::env::temp_dir().join(format!(
        "eps-studio-bench-train-{}-{}",
        std::process::id(),
        u8::from(reference)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = TrainConfig {
        stage: Stage::Prior,
        model: model.clone(),
        steps: steps.max(3) + 2,
        batch,
        crop,
        crop_mix: Vec::new(),
        val_every: usize::MAX,
        checkpoint_every: usize::MAX,
        val_crops_per_photo: 1,
        ..TrainConfig::default()
    };
    crate::denoiser::conv::use_reference_ops(reference);
    let mut times = Vec::new();
    let result = train(
        &cfg,
        photos,
        &dir,
        None,
        &candle_core::Device::Cpu,
        &mut |log| {
            if log.step > 2 {
                times.push(log.step_secs);
            }
        },
    );
    crate::denoiser::conv::use_reference_ops(false);
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    Ok(median(times))
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
    problem.device().synchronize()?;
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
    problem.device().synchronize()?;
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

/// One row of the pivot benchmark: one operator at one size, CPU against wgpu.
#[derive(Debug, Clone)]
pub struct PivotRow {
    /// The operator.
    pub operator: String,
    /// Image side in pixels.
    pub size: usize,
    /// The pivot on the CPU (candle tensors; blur through the f64 host FFT), median seconds.
    pub cpu_pivot: f64,
    /// The pivot on the wgpu device alone (submitted and waited for).
    pub gpu_pivot: Option<f64>,
    /// The pivot on the wgpu device including the copy of μ* back to the host, which the
    /// network on the CPU needs: what a sampler step pays.
    pub gpu_pivot_readback: Option<f64>,
    /// A DPM-Solver++(2M) update (three-term linear combination) on the CPU.
    pub cpu_update: f64,
    /// The same update on the wgpu device.
    pub gpu_update: Option<f64>,
    /// One EPS network call at this size on the CPU (the rest of a sampler step).
    pub network_step: f64,
}

/// Times the pivot and the sampler update of every operator family at each size, on the CPU and
/// (with `gpu`) on the wgpu device, next to one EPS network call of the same size.
pub fn pivot_costs(
    eps: &Network,
    gpu: Option<&crate::backend::GpuContext>,
    sizes: &[usize],
    repeats: usize,
) -> Result<Vec<PivotRow>> {
    use crate::backend::GpuArithmetic;
    use crate::inverse::TaskSpec;
    use crate::sampler::StepArithmetic;
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let mut rows = Vec::new();
    for &n in sizes {
        let x = SeededNoise::new(&[1]).normal((3, n, n), DType::F32, &candle_core::Device::Cpu)?;
        let x0 = x.zeros_like()?;
        let interp = Interpolant::edm(1.0);
        let mut network_step = None;
        for (label, task) in [
            ("mask 70%", TaskSpec::RandomInpaint { hidden: 0.7 }),
            ("SR ×4", TaskSpec::SuperResolution { factor: 4 }),
            ("Gaussian blur σ=2", TaskSpec::GaussianDeblur { sigma: 2.0 }),
            (
                "motion blur 15 px",
                TaskSpec::MotionDeblur {
                    length: 15.0,
                    angle: 30.0,
                },
            ),
        ] {
            let op = task.operator(n, n, &mut rng)?;
            let problem = Problem::simulate(op, &x0, 0.05, 1)?;
            if network_step.is_none() {
                let mut call = || -> Result<()> {
                    PosteriorDenoiser::denoise(eps, &x, &problem, 1.0).map(drop)
                };
                call()?;
                let mut v = Vec::new();
                for _ in 0..repeats.max(1) {
                    v.push(time(&candle_core::Device::Cpu, &mut call)?);
                }
                network_step = Some(median(v));
            }
            let mut cpu = crate::sampler::TensorArithmetic::new(&problem);
            let (a, b) = (x.clone(), x.affine(0.5, 0.1)?);
            let mut cpu_pivot = || -> Result<()> { cpu.pivot(&a, interp).map(drop) };
            let mut cpu_update = || -> Result<()> {
                crate::sampler::TensorArithmetic::new(&problem)
                    .combine(&[(0.8, &a), (0.3, &b), (-0.1, &a)])
                    .map(drop)
            };
            cpu_pivot()?;
            let mut t = [Vec::new(), Vec::new()];
            for _ in 0..repeats.max(1) {
                t[0].push(time(&candle_core::Device::Cpu, &mut cpu_pivot)?);
                t[1].push(time(&candle_core::Device::Cpu, &mut cpu_update)?);
            }
            let [cpu_p, cpu_u] = t.map(median);
            let (mut gpu_p, mut gpu_pr, mut gpu_u) = (None, None, None);
            if let Some(ctx) = gpu {
                let mut g = GpuArithmetic::new(ctx, &problem, 1)?;
                let (ga, gb) = (g.load(&a)?, g.load(&b)?);
                g.pivot(&ga, interp)?;
                let mut t = [Vec::new(), Vec::new(), Vec::new()];
                for _ in 0..repeats.max(1) {
                    t[0].push(time(&candle_core::Device::Cpu, &mut || {
                        g.pivot_in_place(&ga, interp)?;
                        ctx.wait()
                    })?);
                    t[1].push(time(&candle_core::Device::Cpu, &mut || {
                        g.pivot(&ga, interp).map(drop)
                    })?);
                    t[2].push(time(&candle_core::Device::Cpu, &mut || {
                        let out = g.combine(&[(0.8, &ga), (0.3, &gb), (-0.1, &ga)])?;
                        ctx.wait()?;
                        drop(out);
                        Ok(())
                    })?);
                }
                let [p, pr, u] = t.map(median);
                (gpu_p, gpu_pr, gpu_u) = (Some(p), Some(pr), Some(u));
            }
            rows.push(PivotRow {
                operator: label.into(),
                size: n,
                cpu_pivot: cpu_p,
                gpu_pivot: gpu_p,
                gpu_pivot_readback: gpu_pr,
                cpu_update: cpu_u,
                gpu_update: gpu_u,
                network_step: network_step.unwrap_or(f64::NAN),
            });
        }
    }
    Ok(rows)
}
