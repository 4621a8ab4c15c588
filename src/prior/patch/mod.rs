//! A photo-internal patch prior for EPS (shared/docs/patch-prior.md): the smoothed empirical
//! distribution of the photo's own known `p × p` patches. Its denoiser under any diagonal
//! Gaussian noise is closed form, so EPS with it is exact for that prior with no training, and
//! the prior carries this photo's grain, colour and texture.
//!
//! - [`bank`]: channels-last images and the bank of known windows (with mirror images).
//! - [`clean`]: the photo's noise level and non-local means, so the bank holds clean patches.
//! - [`search`]: exact sums over the bank (streamed matrix products) and a PatchMatch
//!   k-nearest-neighbour field kept across calls.
//! - [`denoise`]: the denoiser (posterior mean and variance, window-weighted aggregation), as
//!   both the EPS posterior denoiser and the unconditional one.
//! - [`fuse`]: two denoisers fused pixel by pixel by their posterior variances (the patches and
//!   the network, whose variance comes from its Jacobian).
//! - [`pyramid`]: coarse-to-fine fills up to the photo's own resolution.
//! - [`transport`]: coherence transport, the first guess that carries the hole's surroundings
//!   in along their edges.
//! - [`superres`]: super-resolution from a cross-scale bank, exact in a block basis where the
//!   pivot's noise is diagonal.
//! - [`deblur`]: deblurring from a cross-scale bank, each window under its dense share of the
//!   pivot's stationary noise (whitened once per call) and a kernel that is wide along what the
//!   blur keeps.

pub mod bank;
pub mod clean;
pub mod deblur;
pub mod denoise;
pub mod fuse;
pub mod pyramid;
pub mod search;
pub mod superres;
pub mod transport;

pub use bank::{Bank, Entry, Plane, Transforms};
pub use deblur::{DeblurConfig, PatchDeblur};
pub use denoise::{EssRecord, PatchConfig, PatchDenoiser, Search};
pub use pyramid::{
    FillOutput, FillStep, Guide, Layout, Prepared, PyramidConfig, fill, fill_prepared,
};
pub use search::{Field, FieldSearch, Queries};
pub use superres::PatchSr;
