//! Where the EPS sampler keeps its state between network calls, and where it does the pivot and
//! the solver's linear updates: in candle tensors on the networks' device (CPU or CUDA), or in
//! GPU buffers of another backend (the wgpu compute shaders of `crate::backend::gpu`).
//!
//! The sampler is written once against [`StepArithmetic`]; every backend runs the same loop.

use candle_core::Tensor;

use crate::Result;
use crate::inverse::{Interpolant, Problem};

/// The sampler's arithmetic between network calls.
pub trait StepArithmetic {
    /// An image batch `[B, C, H, W]` held by this arithmetic.
    type Batch;

    /// A short name for display ("CPU", "wgpu: <adapter>").
    fn name(&self) -> String;

    /// Takes a batch from a candle tensor (the initial noise, or a network output).
    fn load(&mut self, x: &Tensor) -> Result<Self::Batch>;

    /// The pivot `μ*(x_t, y)` (eps-method.md §2) as a tensor the network can take.
    fn pivot(&mut self, x_t: &Self::Batch, interp: Interpolant) -> Result<Tensor>;

    /// `Σ cᵢ xᵢ` over one to four batches of equal shape.
    fn combine(&mut self, terms: &[(f64, &Self::Batch)]) -> Result<Self::Batch>;

    /// The batch as a candle tensor on the networks' device.
    fn read(&mut self, x: &Self::Batch) -> Result<Tensor>;
}

/// Candle tensors on the problem's device: the CPU path, and the CUDA path when the networks run
/// there.
#[derive(Debug, Clone, Copy)]
pub struct TensorArithmetic<'a> {
    problem: &'a Problem,
}

impl<'a> TensorArithmetic<'a> {
    /// Arithmetic for `problem`, on its device.
    pub fn new(problem: &'a Problem) -> Self {
        Self { problem }
    }
}

impl StepArithmetic for TensorArithmetic<'_> {
    type Batch = Tensor;

    fn name(&self) -> String {
        match self.problem.device() {
            candle_core::Device::Cpu => "CPU".into(),
            candle_core::Device::Cuda(_) => "CUDA".into(),
            candle_core::Device::Metal(_) => "Metal".into(),
        }
    }

    fn load(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }

    fn pivot(&mut self, x_t: &Tensor, interp: Interpolant) -> Result<Tensor> {
        self.problem.pivot(x_t, interp)
    }

    fn combine(&mut self, terms: &[(f64, &Tensor)]) -> Result<Tensor> {
        let Some(((c0, first), rest)) = terms.split_first() else {
            return Err(crate::Error::invalid(
                "linear combination",
                0,
                "needs at least one term",
            ));
        };
        let mut acc = first.affine(*c0, 0.0)?;
        for (c, t) in rest {
            acc = (acc + t.affine(*c, 0.0)?)?;
        }
        Ok(acc)
    }

    fn read(&mut self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
}
