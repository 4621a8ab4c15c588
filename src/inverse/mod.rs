//! The math of `y = A x0 + η`: linear operators, their adjoints and pseudo-inverses, and the
//! closed-form pivot `μ*` of shared/docs/eps-method.md §2–3.
//!
//! Images are candle tensors `[B, C, H, W]` in `[-1, 1]`. Every structured operator exposes a
//! functional calculus on its Gram matrix, `f(AᵀA) x` ([`LinearOperator::spectral`]): masks have
//! eigenvalues {0, 1}, average pooling ×s has {0, 1/s²} and circular blur has `|K̂|²` per
//! frequency. The pivot, `A⁺`, `Σ*`, the DiffPIR proximal step and the ΠGDM solve are all one
//! proximal map, `(pI + qAᵀA)⁻¹(p z + q Aᵀy)` ([`LinearOperator::prox`]), evaluated in that basis.
//! Operators without a cheap basis fall back to conjugate gradients ([`cg`]).

pub mod blur;
pub mod cg;
pub mod classical;
pub mod dense;
pub mod fft;
pub mod kernel;
pub mod mask;
pub mod masks;
pub mod pad;
pub mod pivot;
pub mod problem;
pub mod superres;
pub mod tasks;

use candle_core::Tensor;

use crate::{Error, Result};

pub use blur::Blur;
pub use cg::{CgOperator, CgSettings};
pub use kernel::Kernel;
pub use mask::Mask;
pub use pivot::Interpolant;
pub use problem::Problem;
pub use superres::AvgPoolSr;
pub use tasks::TaskSpec;

/// Eigenvalues of `AᵀA` at or below this are treated as exactly zero (the null space) where a
/// division by them would otherwise happen (σ_y = 0, pseudo-inverse).
pub const NULL_EIGENVALUE: f64 = 1e-12;

/// The family an operator belongs to; used for defaults (baseline step sizes) and display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorKind {
    /// Per-pixel inpainting mask.
    Mask,
    /// Average-pool down-sampling.
    SuperResolution,
    /// Circular convolution.
    Blur,
    /// Anything else (solved with conjugate gradients).
    Other,
}

/// The concrete structure of an operator, for backends that implement the structured operators
/// themselves (the wgpu compute shaders) instead of going through candle.
#[derive(Debug, Clone, Copy)]
pub enum Structure<'a> {
    /// An inpainting mask.
    Mask(&'a Mask),
    /// Average-pool super-resolution.
    SuperResolution(&'a AvgPoolSr),
    /// Circular blur.
    Blur(&'a Blur),
    /// Anything else.
    Other,
}

/// A linear measurement operator on `[B, C, H, W]` images.
///
/// Implementors provide `A` and `Aᵀ`; structured operators also provide [`Self::spectral`], which
/// makes every solve closed form. The defaults of the remaining methods are exact for structured
/// operators and use conjugate gradients otherwise.
pub trait LinearOperator: Send + Sync + std::fmt::Debug {
    /// A short human-readable description, e.g. `"mask (62% hidden)"`.
    fn name(&self) -> String;

    /// The operator family.
    fn kind(&self) -> OperatorKind {
        OperatorKind::Other
    }

    /// The operator's concrete structure, when it is one of the structured families.
    fn structure(&self) -> Structure<'_> {
        Structure::Other
    }

    /// Shape `[B, C, H', W']` of `A x` for an image of shape `[B, C, H, W]`, or a clear error when
    /// the operator cannot act on that shape.
    fn measurement_dims(&self, image: Dims4) -> Result<Dims4>;

    /// `A x`.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// `Aᵀ y`.
    fn adjoint(&self, y: &Tensor) -> Result<Tensor>;

    /// Whether [`Self::spectral`] is available.
    fn is_structured(&self) -> bool {
        false
    }

    /// `f(AᵀA) x` for a real function `f` of the eigenvalues of `AᵀA`.
    fn spectral(&self, x: &Tensor, f: &dyn Fn(f64) -> f64) -> Result<Tensor> {
        let _ = (x, f);
        Err(Error::Unsupported(format!(
            "{} has no closed-form eigenbasis; use conjugate gradients",
            self.name()
        )))
    }

    /// The diagonal of `f(AᵀA)` for an `h × w` image, as `[B or 1, 1, h, w]` (f32): what
    /// [`pivot::pivot_variance`] needs. Structured operators know it in closed form; the default
    /// is [`Error::Unsupported`].
    fn gram_function_diagonal(&self, f: &dyn Fn(f64) -> f64, hw: (usize, usize)) -> Result<Tensor> {
        let _ = (f, hw);
        Err(Error::Unsupported(format!(
            "{} has no closed-form diagonal",
            self.name()
        )))
    }

    /// The proximal map `(pI + qAᵀA)⁻¹(p z + q Aᵀy)` with `p, q ≥ 0`.
    ///
    /// It is the minimiser of `½ q‖Ax − y‖² + ½ p‖x − z‖²`. Limits are exact: where `p + q e = 0`
    /// for an eigenvalue `e` (null space with `p = 0`, or `q = 0`) the result keeps `z`, so
    /// `p → 0` gives `A⁺y + P_null z` without NaN.
    fn prox(&self, z: &Tensor, y: &Tensor, p: f64, q: f64) -> Result<Tensor> {
        check_prox_weights(p, q)?;
        if self.is_structured() {
            let aty = self.adjoint(y)?;
            let from_z = self.spectral(z, &|e| prox_gains(e, p, q).0)?;
            let from_y = self.spectral(&aty, &|e| prox_gains(e, p, q).1)?;
            Ok(from_z.broadcast_add(&from_y)?)
        } else {
            cg::prox_cg(self, z, y, p, q, None, &CgSettings::default())
        }
    }

    /// The Moore–Penrose pseudo-inverse `A⁺ y`.
    fn pinv(&self, y: &Tensor) -> Result<Tensor> {
        let aty = self.adjoint(y)?;
        self.spectral(&aty, &|e| if e > NULL_EIGENVALUE { 1.0 / e } else { 0.0 })
    }

    /// The regularised inverse `(AᵀA + εI)⁻¹ Aᵀ y` (Wiener filter for blur; DDNM+ uses it).
    fn regularized_inverse(&self, y: &Tensor, eps: f64) -> Result<Tensor> {
        if !(eps > 0.0 && eps.is_finite()) {
            return Err(Error::invalid(
                "ε",
                eps,
                "the regularisation must be positive",
            ));
        }
        self.prox(&self.adjoint(y)?.zeros_like()?, y, eps, 1.0)
    }

    /// Puts a measurement into the operator's convention. Masks store `y` full-size with zeros
    /// where nothing is observed (eps-method.md §3); every other operator keeps `y` as is.
    fn restrict_measurement(&self, y: &Tensor) -> Result<Tensor> {
        Ok(y.clone())
    }

    /// The image-sized conditioning input the EPS network sees next to `μ*`: a classical
    /// reconstruction from `y` for the structured operators — the biharmonic fill of the hole
    /// (inpainting), bicubic upsampling (super-resolution), a Wiener filter scaled to `sigma_y`
    /// (deblurring) — and `Aᵀy` otherwise. μ* alone determines the posterior; this image only
    /// hands the network a smooth estimate to refine where μ* is still mostly noise.
    fn observation(&self, y: &Tensor, sigma_y: f64) -> Result<Tensor> {
        let _ = sigma_y;
        self.adjoint(y)
    }
}

/// Gains `(g_z, g_y)` of the proximal map for one eigenvalue `e` of `AᵀA`: the result is
/// `g_z z + g_y (Aᵀy)` in that eigendirection.
///
/// On the null space (`e = 0`) the map keeps `z` (`g_z = 1`) and `g_y = 0`: `Aᵀy` has no
/// null-space component, so that gain multiplies zero, and choosing 0 rather than the formal
/// `q/p` (up to 10⁹ at σmax) keeps single-precision arithmetic from amplifying round-off.
pub fn prox_gains(e: f64, p: f64, q: f64) -> (f64, f64) {
    if e <= NULL_EIGENVALUE {
        return (1.0, 0.0);
    }
    let den = p + q * e;
    if den > 0.0 {
        (p / den, q / den)
    } else {
        (1.0, 0.0)
    }
}

pub(crate) fn check_prox_weights(p: f64, q: f64) -> Result<()> {
    for (name, v) in [("p", p), ("q", q)] {
        if !(v >= 0.0 && v.is_finite()) {
            return Err(Error::invalid(
                name,
                v,
                "proximal weights must be finite and ≥ 0",
            ));
        }
    }
    Ok(())
}

/// Image dimensions `(B, C, H, W)`.
pub type Dims4 = (usize, usize, usize, usize);

/// The four dimensions of `x`, or a clear error naming `context` when `x` is not 4-D.
pub fn dims4(x: &Tensor, context: &str) -> Result<Dims4> {
    match *x.dims() {
        [b, c, h, w] => Ok((b, c, h, w)),
        ref other => Err(Error::shape(context, "[B, C, H, W]", format!("{other:?}"))),
    }
}

/// Fails with [`Error::NonFinite`] when `x` holds a NaN or an infinity.
pub fn ensure_finite(x: &Tensor, what: &str) -> Result<()> {
    let s = x
        .abs()?
        .sum_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_scalar::<f64>()?;
    if s.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite {
            what: what.to_owned(),
        })
    }
}

/// Per-image inner product `⟨a, b⟩` over `C, H, W`, shaped `[B, 1, 1, 1]` for broadcasting.
pub fn batch_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(a.broadcast_mul(b)?
        .sum_keepdim(3)?
        .sum_keepdim(2)?
        .sum_keepdim(1)?)
}

/// Checks that an image batch of `image` dims is compatible with a per-image parameter of batch
/// `own` (equal, or one shared by all).
pub fn check_batch(context: &str, own: usize, image: usize) -> Result<()> {
    if own == image || own == 1 {
        Ok(())
    } else {
        Err(Error::shape(
            context,
            format!("batch {own} (or 1)"),
            format!("batch {image}"),
        ))
    }
}

/// Copies a tensor to the host as `f64`, contiguous in `[B, C, H, W]` order.
pub fn to_host_f64(x: &Tensor) -> Result<Vec<f64>> {
    Ok(x.to_dtype(candle_core::DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?)
}

/// Builds a tensor shaped `dims` from host `f64` data, on the device and with the dtype of `like`.
pub(crate) fn from_host_f64(data: Vec<f64>, dims: Dims4, like: &Tensor) -> Result<Tensor> {
    let t = Tensor::from_vec(data, dims, &candle_core::Device::Cpu)?;
    Ok(t.to_dtype(like.dtype())?.to_device(like.device())?)
}
