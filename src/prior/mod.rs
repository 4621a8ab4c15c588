//! Analytic priors with known posteriors, used to prove the samplers exact.

pub mod gmm;

pub use gmm::{GaussianMixture, GmmPosteriorOracle};
