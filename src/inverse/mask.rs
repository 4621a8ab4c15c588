//! Inpainting: `A = Aᵀ = diag(m)` with `m ∈ {0, 1}` per pixel (1 = observed). The measurement is
//! stored full-size with zeros where `m = 0` (eps-method.md §3), so `AᵀA = diag(m)` has eigenvalue
//! 1 on observed pixels and 0 on hidden ones.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use super::{Dims4, LinearOperator, OperatorKind, Structure, check_batch, dims4};
use crate::{Error, Result};

/// A binary observation mask, `[B or 1, 1 or C, H, W]`, 1 where the pixel is observed.
#[derive(Debug, Clone)]
pub struct Mask {
    mask: Tensor,
    dims: Dims4,
    observed_fraction: f64,
}

impl Mask {
    /// Wraps a mask tensor whose values are exactly 0 or 1 (1 = observed, 0 = to be filled).
    pub fn new(mask: &Tensor) -> Result<Self> {
        let dims = dims4(mask, "mask")?;
        let values = super::to_host_f64(mask)?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "mask".into(),
            });
        }
        if let Some(bad) = values.iter().find(|&&v| v != 0.0 && v != 1.0) {
            return Err(Error::invalid(
                "mask value",
                bad,
                "masks must hold only 0 (hidden) and 1 (observed); threshold a soft mask first",
            ));
        }
        let observed_fraction = values.iter().sum::<f64>() / values.len().max(1) as f64;
        Ok(Self {
            mask: mask.to_dtype(DType::F32)?,
            dims,
            observed_fraction,
        })
    }

    /// The mask tensor (F32, 1 = observed).
    pub fn tensor(&self) -> &Tensor {
        &self.mask
    }

    /// The mask's dimensions `[B or 1, 1 or C, H, W]`.
    pub fn dims(&self) -> Dims4 {
        self.dims
    }

    /// Fraction of observed entries.
    pub fn observed_fraction(&self) -> f64 {
        self.observed_fraction
    }

    /// The mask in the dtype and on the device of `like`, after checking it fits `like`.
    fn matching(&self, like: &Tensor, context: &str) -> Result<Tensor> {
        let d = dims4(like, context)?;
        check_batch(context, self.dims.0, d.0)?;
        if self.dims.1 != 1 && self.dims.1 != d.1 {
            return Err(Error::shape(
                context,
                format!("{} channels (or 1)", self.dims.1),
                d.1,
            ));
        }
        if (self.dims.2, self.dims.3) != (d.2, d.3) {
            return Err(Error::shape(
                context,
                format!("{}×{} image (the mask size)", self.dims.2, self.dims.3),
                format!("{}×{}", d.2, d.3),
            ));
        }
        Ok(self.mask.to_dtype(like.dtype())?.to_device(like.device())?)
    }
}

impl LinearOperator for Mask {
    fn name(&self) -> String {
        format!(
            "mask ({:.0}% hidden)",
            100.0 * (1.0 - self.observed_fraction)
        )
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Mask
    }

    fn structure(&self) -> Structure<'_> {
        Structure::Mask(self)
    }

    fn measurement_dims(&self, image: Dims4) -> Result<Dims4> {
        check_batch("mask", self.dims.0, image.0)?;
        if (self.dims.2, self.dims.3) != (image.2, image.3) {
            return Err(Error::shape(
                "mask",
                format!("{}×{} image (the mask size)", self.dims.2, self.dims.3),
                format!("{}×{}", image.2, image.3),
            ));
        }
        Ok(image)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let m = self.matching(x, "mask A x")?;
        Ok(x.broadcast_mul(&m)?)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        let m = self.matching(y, "mask Aᵀ y")?;
        Ok(y.broadcast_mul(&m)?)
    }

    fn restrict_measurement(&self, y: &Tensor) -> Result<Tensor> {
        self.forward(y)
    }

    /// `y` with every hidden pixel filled by the biharmonic continuation of the observed ones
    /// (per image and channel; zero where nothing is observed).
    fn observation(&self, y: &Tensor, _sigma_y: f64) -> Result<Tensor> {
        let m = self.matching(y, "mask observation")?;
        let (b, c, h, w) = dims4(y, "mask observation")?;
        let (mb, mc, _, _) = self.dims;
        let yv = super::to_host_f64(&y.broadcast_mul(&m)?)?;
        let mv = super::to_host_f64(&self.mask)?;
        let plane = h * w;
        let out: Vec<f64> = (0..b * c)
            .into_par_iter()
            .flat_map_iter(|k| {
                let (bi, ci) = (k / c, k % c);
                let mo = (bi.min(mb - 1) * mc + ci.min(mc - 1)) * plane;
                let fill: Vec<bool> = mv[mo..mo + plane].iter().map(|&v| v == 0.0).collect();
                let src = &yv[k * plane..(k + 1) * plane];
                if fill.iter().all(|&f| f) {
                    vec![0.0; plane]
                } else {
                    super::classical::biharmonic_plane(src, &fill, w, h)
                }
            })
            .collect();
        Ok(Tensor::from_vec(out, (b, c, h, w), y.device())?.to_dtype(y.dtype())?)
    }

    fn is_structured(&self) -> bool {
        true
    }

    fn gram_function_diagonal(
        &self,
        f: &dyn Fn(f64) -> f64,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        if (self.dims.2, self.dims.3) != (h, w) {
            return Err(Error::shape(
                "mask diagonal",
                format!("{}×{} image (the mask size)", self.dims.2, self.dims.3),
                format!("{h}×{w}"),
            ));
        }
        let (on, off) = (f(1.0), f(0.0));
        // Per pixel f(m) = on·m + off·(1 − m), averaged over the mask's channels.
        let m = self.mask.mean_keepdim(1)?;
        Ok((m.affine(on, 0.0)? + m.affine(-off, off)?)?)
    }

    fn spectral(&self, x: &Tensor, f: &dyn Fn(f64) -> f64) -> Result<Tensor> {
        let m = self.matching(x, "mask f(AᵀA) x")?;
        let (on, off) = (f(1.0), f(0.0));
        // f(diag m) = on·m + off·(1 − m), per pixel; two exact products for binary m, where
        // `off + (on − off)·m` would lose `on` to round-off when |off| ≫ |on|.
        let gain = (m.affine(on, 0.0)? + m.affine(-off, off)?)?;
        Ok(x.broadcast_mul(&gain)?)
    }
}
