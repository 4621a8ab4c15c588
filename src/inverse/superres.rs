//! Super-resolution by average pooling ×s (eps-method.md §3): `A = avgpool_s`,
//! `Aᵀz = nn_upsample(z)/s²`, `AAᵀ = I/s²`, `A⁺ = nn_upsample`. With the projector
//! `P = nn_upsample ∘ avgpool` onto block-constant images, `AᵀA = P/s²`: eigenvalue `1/s²` on
//! block-constant images and 0 on their complement.

use candle_core::Tensor;

use super::{Dims4, LinearOperator, OperatorKind, Structure, dims4};
use crate::{Error, Result};

/// Average-pool down-sampling by an integer factor.
#[derive(Debug, Clone, Copy)]
pub struct AvgPoolSr {
    factor: usize,
}

impl AvgPoolSr {
    /// Down-sampling by `factor` (≥ 1; the app offers 2, 4 and 8).
    pub fn new(factor: usize) -> Result<Self> {
        if factor == 0 {
            return Err(Error::invalid(
                "super-resolution factor",
                factor,
                "must be at least 1",
            ));
        }
        Ok(Self { factor })
    }

    /// The scale factor `s`.
    pub fn factor(&self) -> usize {
        self.factor
    }

    fn check_image(&self, x: &Tensor, context: &str) -> Result<Dims4> {
        let d = dims4(x, context)?;
        self.measurement_dims(d)?;
        Ok(d)
    }

    /// `P x`: each `s × s` block replaced by its mean.
    fn project(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = dims4(x, "super-resolution")?;
        Ok(x.avg_pool2d(self.factor)?.upsample_nearest2d(h, w)?)
    }
}

impl LinearOperator for AvgPoolSr {
    fn name(&self) -> String {
        format!("super-resolution ×{}", self.factor)
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::SuperResolution
    }

    fn structure(&self) -> Structure<'_> {
        Structure::SuperResolution(self)
    }

    fn measurement_dims(&self, image: Dims4) -> Result<Dims4> {
        let (b, c, h, w) = image;
        let s = self.factor;
        if h % s != 0 || w % s != 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                format!("super-resolution ×{s}"),
                format!("height and width divisible by {s}"),
                format!("{h}×{w} (crop or pad the image to a multiple of {s})"),
            ));
        }
        Ok((b, c, h / s, w / s))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.check_image(x, "super-resolution A x")?;
        Ok(x.avg_pool2d(self.factor)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = dims4(y, "super-resolution Aᵀ y")?;
        let s = self.factor;
        Ok(y.upsample_nearest2d(h * s, w * s)?
            .affine(1.0 / (s * s) as f64, 0.0)?)
    }

    fn is_structured(&self) -> bool {
        true
    }

    fn spectral(&self, x: &Tensor, f: &dyn Fn(f64) -> f64) -> Result<Tensor> {
        self.check_image(x, "super-resolution f(AᵀA) x")?;
        let s2 = (self.factor * self.factor) as f64;
        let (on, off) = (f(1.0 / s2), f(0.0));
        // f(P/s²) x = on · P x + off · (x − P x).
        let px = self.project(x)?;
        let rest = (x - &px)?;
        Ok((px.affine(on, 0.0)? + rest.affine(off, 0.0)?)?)
    }

    fn gram_function_diagonal(
        &self,
        f: &dyn Fn(f64) -> f64,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        // f(P/s²) = f(1/s²) P + f(0) (I − P); P averages s² pixels, so diag(P) = 1/s².
        let s2 = (self.factor * self.factor) as f64;
        let d = f(1.0 / s2) / s2 + f(0.0) * (1.0 - 1.0 / s2);
        Ok(Tensor::full(
            d as f32,
            (1, 1, h, w),
            &candle_core::Device::Cpu,
        )?)
    }

    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = dims4(y, "super-resolution A⁺ y")?;
        Ok(y.upsample_nearest2d(h * self.factor, w * self.factor)?)
    }

    /// Bicubic upsampling of `y`.
    fn observation(&self, y: &Tensor, _sigma_y: f64) -> Result<Tensor> {
        let (b, c, h, w) = dims4(y, "super-resolution observation")?;
        let f = self.factor;
        let host = super::to_host_f64(y)?;
        let out: Vec<f64> = host
            .chunks(h * w)
            .flat_map(|plane| super::classical::bicubic_plane(plane, w, h, f))
            .collect();
        Ok(Tensor::from_vec(out, (b, c, h * f, w * f), y.device())?.to_dtype(y.dtype())?)
    }
}
