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

/// Exponential moving average of the weights: `ema ← d·ema + (1 − d)·θ`.
pub struct Ema {
    decay: f64,
    shadow: HashMap<String, Tensor>,
}

impl Ema {
    /// Starts at the current weights.
    pub fn new(vars: &[(String, Var)], decay: f64) -> Self {
        Self {
            decay,
            shadow: vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect(),
        }
    }

    /// Moves the average towards the current weights.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        for (name, var) in vars {
            if let Some(s) = self.shadow.get_mut(name) {
                *s = ((&*s * self.decay)? + (var.as_tensor().detach() * (1.0 - self.decay))?)?;
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
