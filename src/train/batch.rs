//! Training batches (eps-method.md §4, Algorithm 1): noise levels from [`NoiseLevels`]; for the
//! prior, `x_t = x0 + σε`; for EPS, a fresh operator per image from the amortised task
//! distribution, `y = A x0 + σ_y η`, and the network input `μ*(x_t, y)` with the observation.

use candle_core::{DType, Tensor};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Normal, StandardNormal};

use crate::denoiser::Conditioning;
use crate::inverse::pivot::{pivot, pivot_variance};
use crate::inverse::{Interpolant, TaskSpec};
use crate::{Error, Result};

/// One training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Clean images `[B, 3, H, W]`.
    pub x0: Tensor,
    /// Network input: `x_t` (prior) or `μ*` (EPS).
    pub input: Tensor,
    /// Observation images and pivot variances (EPS only).
    pub cond: Option<Conditioning>,
    /// Per-image noise levels `[B]` (f64).
    pub sigma: Tensor,
}

/// The training distribution of noise levels: `σ = exp(N(p_mean, p_std²))` (EDM's log-normal),
/// except that a share of draws is log-uniform over the sampler's whole range `[0.002, 80]`
/// (the log-normal almost never reaches σ > 10, yet the sampler's first steps run there) and a
/// share sits exactly at σmax = 80, where the one-call posterior mean is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NoiseLevels {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
    /// Share of log-uniform draws over `[0.002, 80]`.
    pub uniform: f64,
    /// Share of draws at exactly σ = 80.
    pub at_max: f64,
}

impl Default for NoiseLevels {
    /// EDM2's pixel-space preset (−0.8, 1.6), which covers the restoration range σ ≈ 0.05–1
    /// better than EDM's (−1.2, 1.2), plus 10% log-uniform and 2% at σmax.
    fn default() -> Self {
        Self {
            p_mean: -0.8,
            p_std: 1.6,
            uniform: 0.1,
            at_max: 0.02,
        }
    }
}

impl NoiseLevels {
    /// One draw.
    pub fn sample(&self, rng: &mut impl Rng) -> f64 {
        let u: f64 = rng.random();
        if u < self.at_max {
            return 80.0;
        }
        if u < self.at_max + self.uniform {
            let (lo, hi) = (0.002f64.ln(), 80f64.ln());
            return (lo + rng.random::<f64>() * (hi - lo)).exp();
        }
        let n: f64 = Normal::new(self.p_mean, self.p_std).map_or(self.p_mean, |d| d.sample(rng));
        n.exp().clamp(0.002, 80.0)
    }
}

/// The amortised operator distribution. What photographers paint dominates: 60% masks — object
/// blobs covering 2–35% (20%), boxes of any size up to half the crop (15%), free-form strokes
/// (12%), random pixels hiding 50–70% (10%) and nothing observed (3%, so the network stays an
/// unconditional denoiser) — then Gaussian blur σ ~ U(0.5, 3) (15%), motion blur of length
/// 7–15 at any angle (8%), super-resolution ×2 or ×4 (17%).
pub fn training_task(rng: &mut impl Rng) -> TaskSpec {
    let u: f64 = rng.random();
    match u {
        u if u < 0.20 => TaskSpec::ObjectInpaint {
            min: 0.02,
            max: 0.35,
        },
        u if u < 0.35 => TaskSpec::AnyBoxInpaint,
        u if u < 0.47 => TaskSpec::BrushInpaint,
        u if u < 0.57 => TaskSpec::RandomInpaint {
            hidden: rng.random_range(0.5..0.7),
        },
        u if u < 0.60 => TaskSpec::NothingObserved,
        u if u < 0.75 => TaskSpec::GaussianDeblur {
            sigma: rng.random_range(0.5..3.0),
        },
        u if u < 0.83 => TaskSpec::MotionDeblur {
            length: f64::from(rng.random_range(7..=15)),
            angle: rng.random_range(0.0..180.0),
        },
        u if u < 0.915 => TaskSpec::SuperResolution { factor: 2 },
        _ => TaskSpec::SuperResolution { factor: 4 },
    }
}

fn normal_like(x: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            let z: f64 = StandardNormal.sample(rng);
            z as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, x.dims(), x.device())?.to_dtype(x.dtype())?)
}

fn sigma_tensor(s: &[f64], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::from_vec(s.to_vec(), s.len(), like.device())?.to_dtype(DType::F64)?)
}

/// A batch for the unconditional denoiser.
pub fn prior_batch(x0: &Tensor, noise: &NoiseLevels, rng: &mut impl Rng) -> Result<Batch> {
    let b = x0.dim(0)?;
    let sigmas: Vec<f64> = (0..b).map(|_| noise.sample(rng)).collect();
    let s = Tensor::from_vec(
        sigmas.iter().map(|v| *v as f32).collect::<Vec<_>>(),
        (b, 1, 1, 1),
        x0.device(),
    )?
    .to_dtype(x0.dtype())?;
    let input = (x0 + normal_like(x0, rng)?.broadcast_mul(&s)?)?;
    Ok(Batch {
        x0: x0.clone(),
        input,
        cond: None,
        sigma: sigma_tensor(&sigmas, x0)?,
    })
}

/// A batch for the EPS network: each image gets its own task, σ_y (log-uniform in
/// `sigma_y_range`), σ and noise, from `pick_task`.
pub fn eps_batch(
    x0: &Tensor,
    rng: &mut StdRng,
    noise: &NoiseLevels,
    sigma_y_range: (f64, f64),
    pick_task: &mut dyn FnMut(&mut StdRng) -> TaskSpec,
) -> Result<Batch> {
    let (b, _, h, w) = x0.dims4()?;
    let (lo, hi) = sigma_y_range;
    if !(lo > 0.0 && hi >= lo) {
        return Err(Error::invalid(
            "σ_y range",
            format!("{lo}..{hi}"),
            "need 0 < low ≤ high",
        ));
    }
    let (mut mus, mut obs, mut variances, mut sigmas) = (
        Vec::with_capacity(b),
        Vec::with_capacity(b),
        Vec::with_capacity(b),
        Vec::with_capacity(b),
    );
    for i in 0..b {
        let xi = x0.narrow(0, i, 1)?;
        let task = pick_task(rng);
        let op = task.operator(h, w, rng)?;
        let sigma_y = (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp();
        let clean = op.forward(&xi)?;
        let y =
            op.restrict_measurement(&(&clean + normal_like(&clean, rng)?.affine(sigma_y, 0.0)?)?)?;
        let sigma = noise.sample(rng);
        let xt = (&xi + normal_like(&xi, rng)?.affine(sigma, 0.0)?)?;
        let interp = Interpolant::edm(sigma);
        mus.push(pivot(&*op, &xt, &y, interp, sigma_y)?);
        obs.push(op.observation(&y, sigma_y)?);
        variances.push(pivot_variance(&*op, interp, sigma_y, (h, w), x0.device())?);
        sigmas.push(sigma);
    }
    Ok(Batch {
        x0: x0.clone(),
        input: Tensor::cat(&mus, 0)?,
        cond: Some(Conditioning {
            obs: Tensor::cat(&obs, 0)?,
            variance: Tensor::cat(&variances, 0)?,
        }),
        sigma: sigma_tensor(&sigmas, x0)?,
    })
}
