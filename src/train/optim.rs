//! Adam with global-norm gradient clipping, an exponential moving average of the weights, and
//! state that can be saved and restored exactly (resumable training).

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::{Error, Result};

/// Adam (Kingma & Ba 2015) over named variables.
pub struct Adam {
    /// Step size.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator guard.
    pub eps: f64,
    step: usize,
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl Adam {
    /// Zero moments for `vars` (sorted by name so the order is reproducible).
    pub fn new(mut vars: Vec<(String, Var)>, lr: f64) -> Result<Self> {
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars
            .iter()
            .map(|(_, v)| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        Ok(Self {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            vars,
            m,
            v,
        })
    }

    /// Updates taken so far.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut total = 0.0;
        for (_, var) in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                total += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(candle_core::DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(total.sqrt())
    }

    /// One update with learning rate `lr`, gradients scaled down to global norm `clip` when
    /// larger. Returns the norm before clipping. A non-finite gradient skips the update.
    pub fn step(&mut self, grads: &GradStore, lr: f64, clip: f64) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        if !norm.is_finite() {
            return Err(Error::NonFinite {
                what: "the gradient".into(),
            });
        }
        let scale = if norm > clip { clip / norm } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            // Gradients carry the op history of the backward pass; the moments must not keep
            // it alive (that would retain every step's graph).
            let g = g.detach().affine(scale, 0.0)?;
            self.m[i] = ((&self.m[i] * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            self.v[i] = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let mhat = (&self.m[i] / bc1)?;
            let vhat = (&self.v[i] / bc2)?;
            let update = (mhat / (vhat.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (update * lr)?)?)?;
        }
        Ok(norm)
    }

    /// The moments as named tensors (`m.NAME`, `v.NAME`) for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`Self::state`].
    pub fn restore(&mut self, state: &HashMap<String, Tensor>, step: usize) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t = state.get(&format!("{prefix}.{name}")).ok_or_else(|| {
                    Error::Unsupported(format!("optimizer checkpoint lacks {prefix}.{name}; delete the checkpoint to restart"))
                })?;
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        format!("optimizer state {prefix}.{name}"),
                        format!("{:?}", var.dims()),
                        format!("{:?}", t.dims()),
                    ));
                }
                *slot = t.to_device(var.device())?.to_dtype(var.dtype())?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Power-function moving average of the weights (EDM2, Karras et al. 2024): after update `t`,
/// `ema ← β_t·ema + (1 − β_t)·θ` with `β_t = (1 − 1/t)^(γ+1)`. Its width is a fixed fraction
/// `σ_rel` of the training so far, so it suits runs of any length and runs that are continued.
pub struct Ema {
    gamma: f64,
    shadow: HashMap<String, Tensor>,
}

/// The exponent γ of a power-function EMA of relative width `sigma_rel`
/// (`σ_rel² = (γ+1) / ((γ+2)² (γ+3))`, solved by bisection; 0.10 → γ ≈ 6.94).
pub fn ema_gamma(sigma_rel: f64) -> Result<f64> {
    if !(sigma_rel > 0.0 && sigma_rel < 0.28) {
        return Err(Error::invalid(
            "EMA width σ_rel",
            sigma_rel,
            "must lie in (0, 0.28); 0.05–0.15 is usual",
        ));
    }
    let width = |g: f64| ((g + 1.0) / ((g + 2.0).powi(2) * (g + 3.0))).sqrt();
    let (mut lo, mut hi) = (0.0f64, 1e6f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if width(mid) > sigma_rel {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(0.5 * (lo + hi))
}

impl Ema {
    /// Starts at the current weights, with relative width `sigma_rel`.
    pub fn new(vars: &[(String, Var)], sigma_rel: f64) -> Result<Self> {
        Ok(Self {
            gamma: ema_gamma(sigma_rel)?,
            shadow: vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect(),
        })
    }

    /// The decay `β_t` after update `t` (1-based).
    pub fn decay(&self, t: usize) -> f64 {
        (1.0 - 1.0 / t.max(1) as f64).powf(self.gamma + 1.0)
    }

    /// Moves the average towards the current weights after update `t` (1-based).
    pub fn update(&mut self, vars: &[(String, Var)], t: usize) -> Result<()> {
        let d = self.decay(t);
        for (name, var) in vars {
            if let Some(s) = self.shadow.get_mut(name) {
                *s = ((&*s * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
            }
        }
        Ok(())
    }

    /// The averaged weights.
    pub fn weights(&self) -> &HashMap<String, Tensor> {
        &self.shadow
    }

    /// Replaces the averaged weights (resuming).
    pub fn restore(&mut self, weights: HashMap<String, Tensor>) {
        self.shadow = weights;
    }
}
