//! The pivot of Theorem 1 (eps-method.md §2–3).
//!
//! For `x_t = α x0 + β ε` and `y = A x0 + σ_y η`:
//! `Σ* = (α²/β² I + AᵀA/σ_y²)⁻¹`, `μ* = Σ* (α/β² x_t + Aᵀy/σ_y²)`, and `μ* | x0 ~ N(x0, Σ*)`
//! (Prop. 3). Multiplying through by `σ_y² β²` gives the proximal form used here,
//! `μ* = (α²σ_y² I + β² AᵀA)⁻¹(α²σ_y² · x_t/α + β² Aᵀy)`, i.e. [`LinearOperator::prox`] with
//! `z = x_t/α`, `p = α²σ_y²`, `q = β²`. That form stays finite as `σ_y → 0` (it becomes
//! `A⁺y + P_null x_t/α`) and as `β → 0` (it becomes `x_t/α`).

use candle_core::Tensor;

use super::LinearOperator;
use crate::{Error, Result};

/// An interpolant `x_t = α x0 + β ε`; EDM is `α = 1, β = σ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interpolant {
    /// Signal scale α (> 0).
    pub alpha: f64,
    /// Noise scale β (≥ 0).
    pub beta: f64,
}

impl Interpolant {
    /// The variance-exploding (EDM) interpolant at noise level `sigma`.
    pub fn edm(sigma: f64) -> Self {
        Self {
            alpha: 1.0,
            beta: sigma,
        }
    }

    /// Fails unless `α > 0` and `β ≥ 0`, both finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(Error::invalid(
                "α",
                self.alpha,
                "the signal scale must be positive and finite",
            ));
        }
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::invalid(
                "β (σ)",
                self.beta,
                "the noise level must be finite and ≥ 0",
            ));
        }
        Ok(())
    }
}

/// Fails unless `σ_y` is finite and ≥ 0.
pub fn validate_sigma_y(sigma_y: f64) -> Result<()> {
    if sigma_y >= 0.0 && sigma_y.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            "σ_y",
            sigma_y,
            "the measurement noise level must be finite and ≥ 0 (typical: 0.01–0.1 on a [-1, 1] scale)",
        ))
    }
}

/// `μ*(x_t, y)` for any operator, batched; `y` may have batch 1 (shared by all samples).
pub fn pivot<O: LinearOperator + ?Sized>(
    op: &O,
    x_t: &Tensor,
    y: &Tensor,
    interp: Interpolant,
    sigma_y: f64,
) -> Result<Tensor> {
    interp.validate()?;
    validate_sigma_y(sigma_y)?;
    let Interpolant { alpha, beta } = interp;
    let z = x_t.affine(1.0 / alpha, 0.0)?;
    op.prox(&z, y, alpha * alpha * sigma_y * sigma_y, beta * beta)
}

/// Per eigenvalue `e` of `AᵀA`, the variance `β²σ_y² / (α²σ_y² + β² e)` of the pivot's noise
/// in that direction (`β²/α²` on the null space when `σ_y = 0`).
fn sigma_star_gain(interp: Interpolant, sigma_y: f64) -> impl Fn(f64) -> f64 {
    let Interpolant { alpha, beta } = interp;
    let (a2, b2, s2) = (alpha * alpha, beta * beta, sigma_y * sigma_y);
    move |e| {
        let e = if e <= super::NULL_EIGENVALUE { 0.0 } else { e };
        let den = a2 * s2 + b2 * e;
        if den > 0.0 { b2 * s2 / den } else { b2 / a2 }
    }
}

/// `diag(Σ*)`, the per-pixel variance of the pivot's noise, as `[B or 1, 1, h, w]` for an
/// `h × w` image: per pixel for masks, one value for the translation-invariant operators (blur,
/// super-resolution). Operators without a known diagonal get the isotropic `β²/α²` (the
/// variance before any measurement, an upper bound).
pub fn pivot_variance<O: LinearOperator + ?Sized>(
    op: &O,
    interp: Interpolant,
    sigma_y: f64,
    (h, w): (usize, usize),
    device: &candle_core::Device,
) -> Result<Tensor> {
    interp.validate()?;
    validate_sigma_y(sigma_y)?;
    let gain = sigma_star_gain(interp, sigma_y);
    match op.gram_function_diagonal(&gain, (h, w)) {
        Err(Error::Unsupported(_)) => {
            let v = (interp.beta / interp.alpha).powi(2);
            Ok(Tensor::full(v as f32, (1, 1, h, w), device)?)
        }
        other => Ok(other?.to_device(device)?),
    }
}

/// `Σ* v`: the posterior-noise covariance of Prop. 3 applied to `v` (structured operators only).
///
/// Per eigenvalue `e` of `AᵀA`: `β²σ_y² / (α²σ_y² + β² e)`; on the null space with `σ_y = 0`
/// this is `β²/α²` (the prior noise, scaled).
pub fn sigma_star_apply<O: LinearOperator + ?Sized>(
    op: &O,
    v: &Tensor,
    interp: Interpolant,
    sigma_y: f64,
) -> Result<Tensor> {
    interp.validate()?;
    validate_sigma_y(sigma_y)?;
    op.spectral(v, &sigma_star_gain(interp, sigma_y))
}
