//! A restoration problem: an operator, its measurement `y`, the noise level `σ_y`, and the shape of
//! the image to recover. Validated once, so samplers can trust it.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::pivot::{Interpolant, pivot, pivot_variance, validate_sigma_y};
use super::{Dims4, LinearOperator, dims4, ensure_finite};
use crate::noise::SeededNoise;
use crate::{Error, Result};

/// `y = A x0 + η`, `η ~ N(0, σ_y² I)`, with `x0` of shape `[*, C, H, W]`.
#[derive(Debug, Clone)]
pub struct Problem {
    operator: Arc<dyn LinearOperator>,
    y: Tensor,
    sigma_y: f64,
    image_chw: (usize, usize, usize),
    /// Made on first use: only the EPS network reads it, and for a mask it is a biharmonic
    /// solve over the whole image.
    observation: std::sync::OnceLock<Tensor>,
}

impl Problem {
    /// A problem for images of shape `[*, c, h, w]`. `y` has batch 1 (one measurement shared by
    /// every sample) or one measurement per sample.
    pub fn new(
        operator: Arc<dyn LinearOperator>,
        y: &Tensor,
        sigma_y: f64,
        image_chw: (usize, usize, usize),
    ) -> Result<Self> {
        validate_sigma_y(sigma_y)?;
        let (c, h, w) = image_chw;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                "image size",
                format!("{c}×{h}×{w}"),
                "the image is empty",
            ));
        }
        let yd = dims4(y, "measurement y")?;
        let expected = operator.measurement_dims((yd.0, c, h, w))?;
        if yd != expected {
            return Err(Error::shape(
                format!("measurement y for {}", operator.name()),
                format!("{expected:?}"),
                format!("{yd:?}"),
            ));
        }
        ensure_finite(y, "measurement y")?;
        let y = operator.restrict_measurement(y)?;
        Ok(Self {
            operator,
            y,
            sigma_y,
            image_chw,
            observation: std::sync::OnceLock::new(),
        })
    }

    /// Simulates `y = A x0 + σ_y η` with one seeded noise stream per image of `x0`.
    pub fn simulate(
        operator: Arc<dyn LinearOperator>,
        x0: &Tensor,
        sigma_y: f64,
        seed: u64,
    ) -> Result<Self> {
        validate_sigma_y(sigma_y)?;
        let (b, c, h, w) = dims4(x0, "clean image x0")?;
        ensure_finite(x0, "clean image x0")?;
        let clean = operator.forward(x0)?;
        let seeds: Vec<u64> = (0..b as u64)
            .map(|i| seed.wrapping_mul(0x9E37_79B9).wrapping_add(i))
            .collect();
        let noise = SeededNoise::new(&seeds).normal_like(&clean)?;
        let y = (clean + noise.affine(sigma_y, 0.0)?)?;
        Self::new(operator, &y, sigma_y, (c, h, w))
    }

    /// The operator `A`.
    pub fn operator(&self) -> &dyn LinearOperator {
        &*self.operator
    }

    /// A shared handle to the operator.
    pub fn operator_arc(&self) -> Arc<dyn LinearOperator> {
        Arc::clone(&self.operator)
    }

    /// The measurement `y`.
    pub fn y(&self) -> &Tensor {
        &self.y
    }

    /// Measurement noise standard deviation σ_y.
    pub fn sigma_y(&self) -> f64 {
        self.sigma_y
    }

    /// `(C, H, W)` of the image being recovered.
    pub fn image_chw(&self) -> (usize, usize, usize) {
        self.image_chw
    }

    /// Batch size of `y` (1 when shared by all samples).
    pub fn measurement_batch(&self) -> usize {
        self.y.dims()[0]
    }

    /// The image-sized conditioning input for EPS networks (see [`LinearOperator::observation`]),
    /// made on the first call.
    pub fn observation(&self) -> Result<&Tensor> {
        if let Some(o) = self.observation.get() {
            return Ok(o);
        }
        let o = self.operator.observation(&self.y, self.sigma_y)?;
        Ok(self.observation.get_or_init(|| o))
    }

    /// Device of the measurement.
    pub fn device(&self) -> &Device {
        self.y.device()
    }

    /// Dtype of the measurement.
    pub fn dtype(&self) -> DType {
        self.y.dtype()
    }

    /// Checks a batch of images `x` can be paired with this problem.
    pub fn check_image(&self, x: &Tensor, context: &str) -> Result<Dims4> {
        let d = dims4(x, context)?;
        if (d.1, d.2, d.3) != self.image_chw {
            return Err(Error::shape(
                context,
                format!("{:?}", self.image_chw),
                format!("{:?}", (d.1, d.2, d.3)),
            ));
        }
        super::check_batch(context, self.measurement_batch(), d.0)?;
        Ok(d)
    }

    /// The pivot `μ*(x_t, y)` at the given interpolant (eps-method.md §2).
    pub fn pivot(&self, x_t: &Tensor, interp: Interpolant) -> Result<Tensor> {
        self.check_image(x_t, "pivot x_t")?;
        pivot(&*self.operator, x_t, &self.y, interp, self.sigma_y)
    }

    /// `diag(Σ*)` at the given interpolant, `[B or 1, 1, H, W]` (see
    /// [`super::pivot::pivot_variance`]).
    pub fn pivot_variance(&self, interp: Interpolant) -> Result<Tensor> {
        let (_, h, w) = self.image_chw;
        pivot_variance(&*self.operator, interp, self.sigma_y, (h, w), self.device())
    }

    /// `A x − y`, the measurement residual.
    pub fn residual(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.operator.forward(x)?.broadcast_sub(&self.y)?)
    }

    /// Root-mean-square of `A x − y` per image: a faithful posterior sample sits near σ_y.
    pub fn residual_rms(&self, x: &Tensor) -> Result<Vec<f64>> {
        let r = self.residual(x)?;
        let (b, _, _, _) = dims4(&r, "residual")?;
        let n = r.elem_count() / b.max(1);
        let ss = super::to_host_f64(&super::batch_dot(&r, &r)?)?;
        Ok(ss.into_iter().map(|s| (s / n as f64).sqrt()).collect())
    }
}
