//! The exact-posterior check (eps-method.md §8): on a Gaussian-mixture prior, where `p(x0 | y)` is
//! known in closed form, run every sampler on the same measurement and compare its samples with
//! exact posterior samples. EPS with the exact anisotropic denoiser `D_Σ*` must reach the Monte
//! Carlo noise floor; the training-free baselines are reported for comparison.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use super::metrics::mmd2_unbiased;
use crate::inverse::dense::{columns_from_batch, forward_matrix};
use crate::inverse::{AvgPoolSr, Blur, Kernel, LinearOperator, Mask, Problem};
use crate::noise::consecutive_seeds;
use crate::prior::{GaussianMixture, GmmPosteriorOracle};
use crate::sampler::{
    self, Denoisers, DpsConfig, EpsConfig, Method, PosteriorDenoiser, Solver, Task, ignore_progress,
};
use crate::{Error, Result};

/// The operators the check covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckOperator {
    /// A seeded random pixel mask hiding 60% of the pixels.
    RandomMask,
    /// Average-pool super-resolution ×2.
    SuperResolution2,
    /// Circular Gaussian blur, σ = 1 pixel, 5×5 (3×3 on images smaller than 5×5).
    GaussianBlur,
}

impl CheckOperator {
    /// All operators, in table order.
    pub const ALL: [Self; 3] = [Self::RandomMask, Self::SuperResolution2, Self::GaussianBlur];

    /// The task used for baseline defaults.
    pub fn task(self) -> Task {
        match self {
            Self::RandomMask => Task::RandomInpaint,
            Self::SuperResolution2 => Task::SuperResolution,
            Self::GaussianBlur => Task::GaussianDeblur,
        }
    }

    fn build(self, chw: (usize, usize, usize), seed: u64) -> Result<Arc<dyn LinearOperator>> {
        let (_, h, w) = chw;
        Ok(match self {
            Self::RandomMask => {
                let mut rng = StdRng::seed_from_u64(seed ^ 0x6d61_736b);
                let m: Vec<f32> = (0..h * w)
                    .map(|_| if rng.random::<f64>() < 0.6 { 0.0 } else { 1.0 })
                    .collect();
                Arc::new(Mask::new(&Tensor::from_vec(
                    m,
                    (1, 1, h, w),
                    &Device::Cpu,
                )?)?)
            }
            Self::SuperResolution2 => Arc::new(AvgPoolSr::new(2)?),
            Self::GaussianBlur => {
                // 5×5 where it fits, else 3×3 (4×4 images).
                let size = if h.min(w) >= 5 { 5 } else { 3 };
                let kernel = Kernel::gaussian(1.0, size)?;
                Arc::new(
                    Blur::new(kernel, h, w)?
                        .with_label(format!("Gaussian blur σ=1 ({size}×{size})")),
                )
            }
        })
    }
}

/// Settings of the check.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Image shape `(C, H, W)` of the mixture prior.
    pub chw: (usize, usize, usize),
    /// Mixture components.
    pub components: usize,
    /// Samples per method (and per exact reference set).
    pub samples: usize,
    /// Measurement noise.
    pub sigma_y: f64,
    /// Seed for the prior, the ground truth, the measurement and the samplers.
    pub seed: u64,
    /// Independent repetitions: each method runs this many times (new seeds) against as many
    /// independent exact reference sets, and as many exact-vs-exact pairs set the noise floor.
    pub runs: usize,
    /// Operators to check.
    pub operators: Vec<CheckOperator>,
    /// Methods to run on each operator; `None` means [`default_methods`].
    pub methods: Option<Vec<CheckMethod>>,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            chw: (1, 8, 8),
            components: 3,
            samples: 1000,
            sigma_y: 0.05,
            seed: 0,
            runs: 4,
            operators: CheckOperator::ALL.to_vec(),
            methods: None,
        }
    }
}

/// A method in the check: a sampler, or EPS fed a deliberately wrong posterior denoiser.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckMethod {
    /// A sampler run as in the product (EPS methods use the exact oracle `D_Σ*`).
    Sampler(Method),
    /// EPS with the *unconditional* denoiser applied at the pivot ("zero-shot pivoting"): wrong
    /// by construction, it shows what the fine-tuned posterior denoiser is for.
    ZeroShotPivot(EpsConfig),
}

impl CheckMethod {
    fn name(&self) -> String {
        match self {
            Self::Sampler(m) => m.name(),
            Self::ZeroShotPivot(c) => format!("EPS {} zero-shot D(μ*)", c.solver_name()),
        }
    }
}

/// EPS Euler at 20 steps, Heun at 20 and 40 steps (39 and 79 NFE), DPM-Solver++(2M) at 20 and
/// 40 steps, the app's sampler (Euler with churn) at 10 and 40 steps, the 1-call mean, the
/// zero-shot control and the baselines.
///
/// DPS appears twice: with its documented ζ′ (tuned for 3×64×64 images) and with ζ′ scaled by
/// `√(dim/12288)`. The gradient of the unsquared residual norm has unit length spread over all
/// `dim` pixels, so the documented values take steps ~14× larger per pixel on a 64-pixel image.
pub fn default_methods(task: Task, dim: usize) -> Vec<CheckMethod> {
    let heun = EpsConfig::ode(20, Solver::Heun);
    let mut v = vec![
        CheckMethod::Sampler(Method::Eps(EpsConfig::ode(20, Solver::Euler))),
        CheckMethod::Sampler(Method::Eps(heun)),
        CheckMethod::Sampler(Method::Eps(EpsConfig { steps: 40, ..heun })),
        CheckMethod::Sampler(Method::Eps(EpsConfig::ode(20, Solver::DpmSolver2m))),
        CheckMethod::Sampler(Method::Eps(EpsConfig::ode(40, Solver::DpmSolver2m))),
        // The app's sampler (Euler with churn, 10 steps) and the same at 40 steps.
        CheckMethod::Sampler(Method::Eps(EpsConfig::default())),
        CheckMethod::Sampler(Method::Eps(EpsConfig {
            steps: 40,
            ..EpsConfig::default()
        })),
        CheckMethod::Sampler(Method::PosteriorMean(Default::default())),
        CheckMethod::ZeroShotPivot(heun),
    ];
    v.extend(
        Method::baselines(task)
            .into_iter()
            .map(CheckMethod::Sampler),
    );
    let documented = DpsConfig::for_task(task);
    v.push(CheckMethod::Sampler(Method::Dps(DpsConfig {
        zeta: documented.zeta * (dim as f64 / 12288.0).sqrt(),
        ..documented
    })));
    v
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct CheckRow {
    /// Operator name.
    pub operator: String,
    /// Method name.
    pub method: String,
    /// Network evaluations per sample.
    pub nfe: usize,
    /// Unbiased MMD² between the method's samples and exact posterior samples, averaged over the
    /// independent runs.
    pub mmd2: f64,
    /// RMS difference between the sample mean (all runs pooled) and the exact posterior mean.
    pub mean_error: f64,
    /// Median over pixels of the sample variance divided by the exact posterior variance
    /// (1 for an exact sampler; above 1 over-dispersed, below under-dispersed).
    pub variance_ratio: f64,
    /// Wall-clock seconds per run (all samples of one run).
    pub seconds: f64,
}

/// The check for one operator: the problem, the exact posterior and its reference samples.
pub struct OperatorCheck {
    /// Which operator.
    pub kind: CheckOperator,
    /// The prior.
    pub prior: Arc<GaussianMixture>,
    /// The measurement problem (one `y`, shared by all samples).
    pub problem: Problem,
    /// The exact posterior `p(x0 | y)`.
    pub posterior: GaussianMixture,
    /// Independent exact posterior sample sets; run `r` of a method is compared with set `r`.
    pub references: Vec<DMatrix<f64>>,
    /// MMD² between independent pairs of exact sample sets (not involving `references`).
    pub floor_pairs: Vec<f64>,
    samples: usize,
    seed: u64,
}

impl OperatorCheck {
    /// Builds the prior, draws a ground truth, simulates `y` and samples the exact posterior.
    pub fn new(kind: CheckOperator, cfg: &CheckConfig) -> Result<Self> {
        let prior = Arc::new(GaussianMixture::synthetic(
            cfg.chw,
            cfg.components,
            cfg.seed,
        )?);
        Self::with_prior(kind, cfg, prior)
    }

    /// [`Self::new`] with a given prior over `cfg.chw` images.
    pub fn with_prior(
        kind: CheckOperator,
        cfg: &CheckConfig,
        prior: Arc<GaussianMixture>,
    ) -> Result<Self> {
        if cfg.samples < 2 {
            return Err(Error::invalid(
                "samples",
                cfg.samples,
                "the check needs at least 2 samples per method",
            ));
        }
        if cfg.runs == 0 {
            return Err(Error::invalid(
                "runs",
                cfg.runs,
                "the check needs at least one run",
            ));
        }
        if prior.chw() != cfg.chw {
            return Err(Error::shape(
                "check prior",
                format!("{:?}", cfg.chw),
                format!("{:?}", prior.chw()),
            ));
        }
        let like = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
        let x0 = prior.sample_tensor(1, cfg.seed.wrapping_add(1), &like)?;
        let op = kind.build(cfg.chw, cfg.seed)?;
        let problem =
            Problem::simulate(Arc::clone(&op), &x0, cfg.sigma_y, cfg.seed.wrapping_add(2))?;
        let a = forward_matrix(&*op, cfg.chw)?;
        let y = DVector::from_column_slice(
            columns_from_batch(&problem.y().to_dtype(DType::F64)?)?.as_slice(),
        );
        let posterior = prior.posterior(&a, &y, cfg.sigma_y)?;
        let exact_set =
            |j: u64| posterior.sample(cfg.samples, cfg.seed.wrapping_add(100).wrapping_add(j));
        let references: Vec<_> = (0..cfg.runs as u64).map(exact_set).collect();
        let floor_pairs = (0..cfg.runs as u64)
            .map(|r| {
                let base = 1000 + 2 * r;
                mmd2_unbiased(&exact_set(base), &exact_set(base + 1))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind,
            prior,
            problem,
            posterior,
            references,
            floor_pairs,
            samples: cfg.samples,
            seed: cfg.seed,
        })
    }

    /// The MMD² noise floor: the root-mean-square MMD² between two independent exact sample
    /// sets of the same size (the unbiased MMD² has mean zero between equal distributions, so
    /// its spread is the scale a correct sampler's MMD² is measured against).
    pub fn floor(&self) -> f64 {
        (self.floor_pairs.iter().map(|v| v * v).sum::<f64>() / self.floor_pairs.len().max(1) as f64)
            .sqrt()
    }

    /// The exact posterior mean.
    pub fn exact_mean(&self) -> DVector<f64> {
        self.posterior.mean()
    }

    /// Runs `method` once per reference set (new seeds each time) and scores it.
    pub fn run(&self, method: &CheckMethod) -> Result<CheckRow> {
        self.run_with(method, None)
    }

    /// Like [`Self::run`], with EPS methods given `posterior` instead of the exact oracle.
    pub fn run_with(
        &self,
        method: &CheckMethod,
        posterior: Option<&dyn PosteriorDenoiser>,
    ) -> Result<CheckRow> {
        let oracle = GmmPosteriorOracle::new(Arc::clone(&self.prior), &self.problem)?;
        let posterior = posterior.unwrap_or(&oracle);
        let zero_shot = ZeroShot(Arc::clone(&self.prior));
        let mut mmd_sum = 0.0;
        let mut mean_sum = DVector::zeros(self.prior.dim());
        let mut var_sum = DVector::zeros(self.prior.dim());
        let mut seconds = 0.0;
        let mut nfe = 0;
        for (r, reference) in self.references.iter().enumerate() {
            let base = self
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(7 + (r * self.samples) as u64);
            let seeds = consecutive_seeds(base, self.samples);
            let started = Instant::now();
            let out = match method {
                CheckMethod::Sampler(m) => {
                    let denoisers = Denoisers {
                        prior: Some(&*self.prior),
                        posterior: Some(posterior),
                    };
                    sampler::sample(m, denoisers, &self.problem, &seeds, &mut ignore_progress)?
                }
                CheckMethod::ZeroShotPivot(cfg) => sampler::eps::sample(
                    &zero_shot,
                    &self.problem,
                    &seeds,
                    cfg,
                    &mut ignore_progress,
                )?,
            };
            seconds += started.elapsed().as_secs_f64();
            nfe = out.nfe;
            let samples = columns_from_batch(&out.samples)?;
            mean_sum += samples.column_mean();
            var_sum += pixel_variance(&samples);
            mmd_sum += mmd2_unbiased(&samples, reference)?;
        }
        let runs = self.references.len() as f64;
        let mean = mean_sum / runs;
        let exact_var = self
            .references
            .iter()
            .map(pixel_variance)
            .fold(DVector::zeros(self.prior.dim()), |a, v| a + v);
        let mut ratios: Vec<f64> = var_sum
            .iter()
            .zip(exact_var.iter())
            .map(|(s, e)| s / e)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let variance_ratio = ratios[ratios.len() / 2];
        Ok(CheckRow {
            operator: self.problem.operator().name(),
            method: method.name(),
            nfe,
            mmd2: mmd_sum / runs,
            mean_error: ((mean - self.exact_mean()).norm_squared() / self.prior.dim() as f64)
                .sqrt(),
            variance_ratio,
            seconds: seconds / runs,
        })
    }
}

/// Per-pixel sample variance of the columns of `samples` (`d × n`).
fn pixel_variance(samples: &DMatrix<f64>) -> DVector<f64> {
    let n = samples.ncols() as f64;
    let mean = samples.column_mean();
    let mut v = DVector::zeros(samples.nrows());
    for col in samples.column_iter() {
        v += (col - &mean).map(|x| x * x);
    }
    v / (n - 1.0)
}

/// EPS fed the unconditional denoiser at the pivot (ignores Σ*'s anisotropy).
struct ZeroShot(Arc<GaussianMixture>);

impl PosteriorDenoiser for ZeroShot {
    fn denoise(&self, mu: &Tensor, _problem: &Problem, sigma: f64) -> Result<Tensor> {
        sampler::Denoiser::denoise(&*self.0, mu, sigma)
    }
}

/// The whole table: per operator, its noise floor and one row per method.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// `(operator name, MMD² floor, rows)`.
    pub operators: Vec<(String, f64, Vec<CheckRow>)>,
}

impl CheckReport {
    /// A markdown table, with the floor and the 1.5× acceptance threshold per operator.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "| operator | method | NFE | MMD² to exact | ≤ 1.5× floor | mean error (RMS) | variance ratio | seconds |\n|---|---|---:|---:|:---:|---:|---:|---:|\n",
        );
        for (op, floor, rows) in &self.operators {
            s.push_str(&format!(
                "| {op} | exact vs exact (floor, RMS) | – | {floor:.2e} | – | – | 1 | – |\n"
            ));
            for r in rows {
                let ok = if r.mmd2 <= 1.5 * floor { "yes" } else { "no" };
                s.push_str(&format!(
                    "| {op} | {} | {} | {:.2e} | {ok} | {:.4} | {:.3} | {:.2} |\n",
                    r.method, r.nfe, r.mmd2, r.mean_error, r.variance_ratio, r.seconds
                ));
            }
        }
        s
    }
}

/// Runs the check for every operator and method in `cfg`, calling `on_row` as rows complete.
pub fn run_check(cfg: &CheckConfig, on_row: &mut dyn FnMut(&CheckRow)) -> Result<CheckReport> {
    let mut operators = Vec::new();
    for &kind in &cfg.operators {
        let check = OperatorCheck::new(kind, cfg)?;
        let methods = cfg
            .methods
            .clone()
            .unwrap_or_else(|| default_methods(kind.task(), cfg.chw.0 * cfg.chw.1 * cfg.chw.2));
        let mut rows = Vec::new();
        for m in &methods {
            let row = check.run(m)?;
            on_row(&row);
            rows.push(row);
        }
        operators.push((check.problem.operator().name(), check.floor(), rows));
    }
    Ok(CheckReport { operators })
}

/// The patch prior on an image the size of one patch: its kernel density estimate is a
/// Gaussian mixture (the bank's windows as means, covariance `τ² I`, equal weights), so the
/// exact posterior is known and EPS with the patch denoiser must reach the MMD floor.
#[derive(Debug)]
pub struct PatchCheck {
    /// The patch denoiser (one query window: the whole image).
    pub denoiser: crate::prior::patch::PatchDenoiser,
    /// The same prior as a Gaussian mixture over `[C, H, W]` images.
    pub mixture: Arc<GaussianMixture>,
}

impl PatchCheck {
    /// A bank of every `patch × patch` window (and its mirror image) of a seeded smooth
    /// `channels`-channel texture of `source × source` pixels, with KDE bandwidth `tau` held
    /// fixed (no annealing, so one prior at every noise level).
    pub fn new(
        channels: usize,
        patch: usize,
        source: usize,
        tau: f64,
        shift: f64,
        seed: u64,
    ) -> Result<Self> {
        use crate::prior::patch::{Bank, PatchConfig, PatchDenoiser, Plane, Search, Transforms};
        let mut rng = StdRng::seed_from_u64(seed);
        let waves: Vec<(f64, f64, f64, f64)> = (0..4)
            .map(|_| {
                (
                    rng.random::<f64>() * 0.9,
                    rng.random::<f64>() * 0.9,
                    rng.random::<f64>() * std::f64::consts::TAU,
                    0.15 + 0.25 * rng.random::<f64>(),
                )
            })
            .collect();
        let mut data = Vec::with_capacity(source * source * channels);
        for y in 0..source {
            for x in 0..source {
                for c in 0..channels {
                    let v: f64 = waves
                        .iter()
                        .map(|(fx, fy, ph, a)| {
                            a * (fx * x as f64 + fy * y as f64 + ph + c as f64).sin()
                        })
                        .sum();
                    data.push(v.clamp(-1.0, 1.0) as f32);
                }
            }
        }
        let image = Plane::from_data(source, source, channels, data)?;
        let bank = Bank::new(
            &image,
            &vec![false; source * source],
            patch,
            Transforms::MIRROR,
        )?;
        let d = channels * patch * patch;
        let means: Vec<DVector<f64>> = bank
            .entries
            .iter()
            .map(|&e| {
                // Bank order (row, column, channel) to the mixture's (channel, row, column).
                let v = bank.patch_values(e);
                DVector::from_fn(d, |i, _| {
                    let (c, rest) = (i / (patch * patch), i % (patch * patch));
                    f64::from(v[rest * channels + c])
                })
            })
            .collect();
        let n = means.len();
        let mixture = Arc::new(GaussianMixture::new(
            (channels, patch, patch),
            vec![1.0; n],
            means,
            vec![shifted_covariance(channels, patch, tau, shift); n],
        )?);
        let cfg = PatchConfig {
            patch,
            tau,
            tau_per_sigma: 0.0,
            window: 1.0,
            search: Search::Exact,
            shift,
        };
        let denoiser = PatchDenoiser::new(bank, cfg, (patch, patch), None)?;
        Ok(Self { denoiser, mixture })
    }
}

/// The covariance of one component of the patch prior over `[C, H, W]` images: `τ² I` plus,
/// with a shift of standard deviation `shift`, `shift²` between any two pixels of the same
/// colour channel (at most three channels shift).
pub fn shifted_covariance(channels: usize, patch: usize, tau: f64, shift: f64) -> DMatrix<f64> {
    let n = patch * patch;
    DMatrix::from_fn(channels * n, channels * n, |i, j| {
        let (ci, cj) = (i / n, j / n);
        let mut v = if ci == cj && ci < 3 {
            shift * shift
        } else {
            0.0
        };
        if i == j {
            v += tau * tau;
        }
        v
    })
}

/// The check's rows for the patch prior on a mask hiding 60% of one patch: EPS with the patch
/// denoiser against exact posterior samples of the same prior, for the ODE sampler that reaches
/// the floor on the mixtures and for the app's sampler. Returns the operator name, the floor
/// and the rows.
pub fn patch_prior_check(
    cfg: &CheckConfig,
    on_row: &mut dyn FnMut(&CheckRow),
) -> Result<(String, f64, Vec<CheckRow>)> {
    let check = PatchCheck::new(1, 5, 12, 0.15, 0.0, cfg.seed)?;
    let cfg = CheckConfig {
        chw: check.mixture.chw(),
        ..cfg.clone()
    };
    let op =
        OperatorCheck::with_prior(CheckOperator::RandomMask, &cfg, Arc::clone(&check.mixture))?;
    let mut rows = Vec::new();
    for eps in [
        EpsConfig::ode(40, Solver::DpmSolver2m),
        EpsConfig::ode(20, Solver::Heun),
        EpsConfig::default(),
    ] {
        let method = CheckMethod::Sampler(Method::Eps(eps));
        let mut row = op.run_with(&method, Some(&check.denoiser))?;
        row.method = format!("{} (patch prior)", row.method);
        on_row(&row);
        rows.push(row);
    }
    let name = format!(
        "patch prior, {} windows: {}",
        check.mixture.weights().len(),
        op.problem.operator().name()
    );
    Ok((name, op.floor(), rows))
}
