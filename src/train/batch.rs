//! Training batches (eps-method.md §4, Algorithm 1): noise levels from [`sample_sigma`]; for the
//! prior, `x_t = x0 + σε`; for EPS, a fresh operator per image from the amortised task
//! distribution, `y = A x0 + σ_y η`, and the network input `μ*(x_t, y)` with the observation.

use candle_core::{DType, Tensor};
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution as _, Normal, StandardNormal};

use crate::inverse::pivot::pivot;
use crate::inverse::{Interpolant, TaskSpec};
use crate::{Error, Result};

/// One training batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Clean images `[B, 3, H, W]`.
    pub x0: Tensor,
    /// Network input: `x_t` (prior) or `μ*` (EPS).
    pub input: Tensor,
    /// Observation images (EPS only).
    pub obs: Option<Tensor>,
    /// Per-image noise levels `[B]` (f64).
    pub sigma: Tensor,
}

/// `σ ~ exp(N(−1.2, 1.2²))` (EDM's log-normal training distribution), except that 15% of draws
/// are log-uniform over the sampler's whole range `[0.002, 80]` and 5% sit exactly at σmax = 80.
/// The log-normal almost never reaches σ > 10, yet the sampler's first steps depend on the
/// network there, and the one-call posterior mean is a single evaluation at σ = 80.
pub fn sample_sigma(rng: &mut impl Rng) -> f64 {
    if rng.random_bool(0.05) {
        return 80.0;
    }
    if rng.random_bool(0.15) {
        let (lo, hi) = (0.002f64.ln(), 80f64.ln());
        return (lo + rng.random::<f64>() * (hi - lo)).exp();
    }
    let n: f64 = Normal::new(-1.2, 1.2).map_or(-1.2, |d| d.sample(rng));
    n.exp()
}

/// The amortised operator distribution: one of seven families with equal probability —
/// random pixels hiding U(50%, 70%), a box, brush strokes, Gaussian blur σ ~ U(0.5, 2.5),
/// motion blur of length 7–15 at any angle, super-resolution ×2 or ×4.
pub fn training_task(rng: &mut impl Rng) -> TaskSpec {
    match rng.random_range(0..7) {
        0 => TaskSpec::RandomInpaint {
            hidden: rng.random_range(0.5..0.7),
        },
        1 => TaskSpec::BoxInpaint,
        2 => TaskSpec::BrushInpaint,
        3 => TaskSpec::GaussianDeblur {
            sigma: rng.random_range(0.5..2.5),
        },
        4 => TaskSpec::MotionDeblur {
            length: f64::from(rng.random_range(7..=15)),
            angle: rng.random_range(0.0..180.0),
        },
        5 => TaskSpec::SuperResolution { factor: 2 },
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
pub fn prior_batch(x0: &Tensor, rng: &mut impl Rng) -> Result<Batch> {
    let b = x0.dim(0)?;
    let sigmas: Vec<f64> = (0..b).map(|_| sample_sigma(rng)).collect();
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
        obs: None,
        sigma: sigma_tensor(&sigmas, x0)?,
    })
}

/// A batch for the EPS network: each image gets its own task, σ_y (log-uniform in
/// `sigma_y_range`), σ and noise, from `pick_task`.
pub fn eps_batch(
    x0: &Tensor,
    rng: &mut StdRng,
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
    let (mut mus, mut obs, mut sigmas) = (
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
        let sigma = sample_sigma(rng);
        let xt = (&xi + normal_like(&xi, rng)?.affine(sigma, 0.0)?)?;
        mus.push(pivot(&*op, &xt, &y, Interpolant::edm(sigma), sigma_y)?);
        obs.push(op.observation(&y)?);
        sigmas.push(sigma);
    }
    Ok(Batch {
        x0: x0.clone(),
        input: Tensor::cat(&mus, 0)?,
        obs: Some(Tensor::cat(&obs, 0)?),
        sigma: sigma_tensor(&sigmas, x0)?,
    })
}
