//! Evaluation: image and distribution metrics, and the exact-posterior check.

pub mod bench;
pub mod diagnose;
pub mod exemplar;
pub mod holes;
pub mod lpips;
pub mod metrics;
pub mod posterior_check;
pub mod reference;
pub mod restoration;
