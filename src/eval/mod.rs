//! Evaluation: image and distribution metrics, and the exact-posterior check.

pub mod bench;
pub mod lpips;
pub mod metrics;
pub mod posterior_check;
pub mod restoration;
