//! Priors whose denoisers are closed form: a Gaussian mixture with a known posterior, to prove
//! the samplers exact, and the photo-internal patch prior that fills holes with no training.

pub mod gmm;
pub mod patch;

pub use gmm::{GaussianMixture, GmmPosteriorOracle};
