//! Conjugate gradients for `(pI + qAᵀA) u = p z + q Aᵀy` when an operator provides only `A` and
//! `Aᵀ` (eps-method.md §3, "anything else"). Each image of the batch is its own system (the
//! operators act image by image), so step sizes are per image, shaped `[B, 1, 1, 1]`.

use std::sync::Mutex;

use candle_core::Tensor;

use super::{Dims4, LinearOperator, OperatorKind, batch_dot, check_prox_weights};
use crate::{Error, Result};

/// Stopping rule for conjugate gradients.
#[derive(Debug, Clone, Copy)]
pub struct CgSettings {
    /// Stop when every image's residual norm is below `tolerance` × its right-hand side norm.
    pub tolerance: f64,
    /// Hard cap on iterations.
    pub max_iterations: usize,
}

impl Default for CgSettings {
    fn default() -> Self {
        Self {
            tolerance: 1e-6,
            max_iterations: 200,
        }
    }
}

/// What a conjugate-gradient solve did.
#[derive(Debug, Clone)]
pub struct CgSolution {
    /// The solution.
    pub x: Tensor,
    /// Iterations used.
    pub iterations: usize,
    /// Largest relative residual over the batch at exit.
    pub relative_residual: f64,
}

/// Solves `M x = b` for a symmetric positive-definite `M` given as a function, image by image,
/// starting from `x0`.
pub fn conjugate_gradient(
    apply: &dyn Fn(&Tensor) -> Result<Tensor>,
    b: &Tensor,
    x0: &Tensor,
    settings: &CgSettings,
) -> Result<CgSolution> {
    let mut x = x0.broadcast_as(b.shape())?.contiguous()?;
    let mut r = (b - apply(&x)?)?;
    let mut p = r.clone();
    let bb = to_vec(&batch_dot(b, b)?)?;
    let mut rr = batch_dot(&r, &r)?;
    let relative = |rr: &Tensor| -> Result<f64> {
        let v = to_vec(rr)?;
        Ok(v.iter()
            .zip(&bb)
            .map(|(&r, &b)| if b > 0.0 { (r / b).sqrt() } else { r.sqrt() })
            .fold(0.0, f64::max))
    };
    let mut rel = relative(&rr)?;
    let mut iterations = 0;
    while rel > settings.tolerance && iterations < settings.max_iterations {
        let mp = apply(&p)?;
        let pmp = batch_dot(&p, &mp)?;
        // Images that have converged exactly have p = 0: keep their step at zero instead of 0/0.
        let alpha = safe_div(&rr, &pmp)?;
        x = (x + p.broadcast_mul(&alpha)?)?;
        r = (r - mp.broadcast_mul(&alpha)?)?;
        let rr_new = batch_dot(&r, &r)?;
        let beta = safe_div(&rr_new, &rr)?;
        p = (&r + p.broadcast_mul(&beta)?)?;
        rr = rr_new;
        rel = relative(&rr)?;
        iterations += 1;
    }
    if !rel.is_finite() {
        return Err(Error::NonFinite {
            what: "conjugate-gradient residual".into(),
        });
    }
    Ok(CgSolution {
        x,
        iterations,
        relative_residual: rel,
    })
}

fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    super::to_host_f64(t)
}

fn safe_div(num: &Tensor, den: &Tensor) -> Result<Tensor> {
    let n = to_vec(num)?;
    let d = to_vec(den)?;
    let q: Vec<f64> = n
        .iter()
        .zip(&d)
        .map(|(&a, &b)| if b > 0.0 { a / b } else { 0.0 })
        .collect();
    let b = q.len();
    super::from_host_f64(q, (b, 1, 1, 1), num)
}

/// The proximal map by conjugate gradients, warm-started from `warm` (or `z`). Needs `p > 0`:
/// with `p = 0` the system is singular on the null space of `A`.
pub fn prox_cg<O: LinearOperator + ?Sized>(
    op: &O,
    z: &Tensor,
    y: &Tensor,
    p: f64,
    q: f64,
    warm: Option<&Tensor>,
    settings: &CgSettings,
) -> Result<Tensor> {
    check_prox_weights(p, q)?;
    if p == 0.0 {
        return Err(Error::Unsupported(format!(
            "{}: σ_y = 0 (or ρ = 0) needs a closed-form operator; use σ_y > 0 with this operator",
            op.name()
        )));
    }
    let aty = op.adjoint(y)?;
    let rhs = z.affine(p, 0.0)?.broadcast_add(&aty.affine(q, 0.0)?)?;
    let apply = |u: &Tensor| -> Result<Tensor> {
        let gram = op.adjoint(&op.forward(u)?)?;
        Ok((u.affine(p, 0.0)? + gram.affine(q, 0.0)?)?)
    };
    let start = match warm {
        Some(w) if w.dims() == rhs.dims() => w.clone(),
        _ => z.broadcast_as(rhs.shape())?.contiguous()?,
    };
    Ok(conjugate_gradient(&apply, &rhs, &start, settings)?.x)
}

/// Any operator seen only through `A` and `Aᵀ`: its proximal map is solved by conjugate
/// gradients, warm-started from the previous solution of the same shape (consecutive sampler
/// steps have nearby pivots).
#[derive(Debug)]
pub struct CgOperator<O> {
    inner: O,
    settings: CgSettings,
    warm: Mutex<Option<Tensor>>,
}

impl<O: LinearOperator> CgOperator<O> {
    /// Wraps `inner`, hiding any closed form it has.
    pub fn new(inner: O, settings: CgSettings) -> Self {
        Self {
            inner,
            settings,
            warm: Mutex::new(None),
        }
    }
}

impl<O: LinearOperator> LinearOperator for CgOperator<O> {
    fn name(&self) -> String {
        format!("{} (conjugate gradients)", self.inner.name())
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Other
    }

    fn measurement_dims(&self, image: Dims4) -> Result<Dims4> {
        self.inner.measurement_dims(image)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.inner.forward(x)
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.inner.adjoint(y)
    }

    fn prox(&self, z: &Tensor, y: &Tensor, p: f64, q: f64) -> Result<Tensor> {
        // A poisoned lock only means another thread panicked mid-solve: the warm start is a hint.
        let previous = self.warm.lock().map(|g| g.clone()).unwrap_or(None);
        let u = prox_cg(&self.inner, z, y, p, q, previous.as_ref(), &self.settings)?;
        if let Ok(mut g) = self.warm.lock() {
            *g = Some(u.clone());
        }
        Ok(u)
    }

    fn pinv(&self, _y: &Tensor) -> Result<Tensor> {
        Err(Error::Unsupported(format!(
            "{}: no pseudo-inverse without a closed form; use a regularised inverse",
            self.name()
        )))
    }

    fn observation(&self, y: &Tensor, sigma_y: f64) -> Result<Tensor> {
        self.inner.observation(y, sigma_y)
    }
}
