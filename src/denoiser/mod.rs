//! The denoiser network: a fully convolutional U-Net with EDM preconditioning (eps-method.md §4),
//! in two roles sharing one architecture — the unconditional prior denoiser `D(x, σ)` the baselines
//! use, and the EPS posterior denoiser `D_θ(μ*, obs, σ)` with three extra input channels.

pub mod blocks;
pub mod config;
pub mod conv;
pub mod fused;
pub mod profile;
pub mod unet;
pub mod weights;

use candle_core::{DType, Tensor};

pub use config::UNetConfig;
pub use unet::{Conditioning, EdmDenoiser, UNet};
pub use weights::{ModelFile, ModelKind};

use crate::inverse::Problem;
use crate::sampler::{Denoiser, PosteriorDenoiser};
use crate::{Error, Result};

/// A trained network as a sampler denoiser: unconditional networks implement [`Denoiser`], EPS
/// networks [`PosteriorDenoiser`].
#[derive(Debug, Clone)]
pub struct Network {
    net: EdmDenoiser,
}

impl Network {
    /// Wraps a built network.
    pub fn new(net: EdmDenoiser) -> Self {
        Self { net }
    }

    /// The preconditioned network.
    pub fn inner(&self) -> &EdmDenoiser {
        &self.net
    }

    fn sigmas(x: &Tensor, sigma: f64) -> Result<Tensor> {
        let b = x.dims4()?.0;
        Ok(Tensor::full(sigma, b, x.device())?.to_dtype(DType::F64)?)
    }
}

impl Denoiser for Network {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        if self.net.is_conditional() {
            return Err(Error::Unsupported(
                "this is an EPS network; the baselines need the unconditional prior network".into(),
            ));
        }
        self.net.forward_padded(x, &Self::sigmas(x, sigma)?, None)
    }
}

impl PosteriorDenoiser for Network {
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        if !self.net.is_conditional() {
            return Err(Error::Unsupported(
                "this is the unconditional network; EPS needs the EPS (posterior) network".into(),
            ));
        }
        let cond = Conditioning {
            obs: problem.observation()?.clone(),
            variance: problem.pivot_variance(crate::inverse::Interpolant::edm(sigma))?,
        };
        self.net
            .forward_padded(mu, &Self::sigmas(mu, sigma)?, Some(&cond))
    }
}
