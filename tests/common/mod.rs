//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use eps_studio::inverse::{AvgPoolSr, Blur, Kernel, LinearOperator, Mask};
use eps_studio::noise::SeededNoise;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// Standard normal `[b, c, h, w]` in f64 on the CPU.
pub fn randn(dims: (usize, usize, usize, usize), seed: u64) -> Tensor {
    let (b, c, h, w) = dims;
    let seeds: Vec<u64> = (0..b as u64).map(|i| seed * 1000 + i).collect();
    SeededNoise::new(&seeds)
        .normal((c, h, w), DType::F64, &Device::Cpu)
        .unwrap()
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

pub fn dot(a: &Tensor, b: &Tensor) -> f64 {
    to_vec(a).iter().zip(to_vec(b)).map(|(x, y)| x * y).sum()
}

pub fn max_abs(t: &Tensor) -> f64 {
    to_vec(t).iter().fold(0.0, |m, v| m.max(v.abs()))
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    let (a, b) = (to_vec(a), to_vec(b));
    assert_eq!(a.len(), b.len(), "shapes differ");
    a.iter().zip(&b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// A random binary mask `[b, c, h, w]` with about `hidden` of the entries 0.
pub fn random_mask(dims: (usize, usize, usize, usize), hidden: f64, seed: u64) -> Mask {
    let (b, c, h, w) = dims;
    let mut rng = StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..b * c * h * w)
        .map(|_| {
            if rng.random::<f64>() < hidden {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    Mask::new(&Tensor::from_vec(v, dims, &Device::Cpu).unwrap()).unwrap()
}

/// An asymmetric, non-negative kernel (so flips and centring mistakes show).
pub fn lopsided_kernel() -> Kernel {
    Kernel::from_values(
        3,
        4,
        vec![0.0, 1.0, 0.5, 0.0, 2.0, 3.0, 0.25, 0.1, 0.0, 0.7, 0.0, 1.5],
    )
    .unwrap()
}

/// Every operator family that acts on `[b, c, h, w]` images: per-image and shared masks,
/// super-resolution where the size allows, and Gaussian, motion and arbitrary blurs.
pub fn operators_for(dims: (usize, usize, usize, usize)) -> Vec<Arc<dyn LinearOperator>> {
    let (b, c, h, w) = dims;
    let mut ops: Vec<Arc<dyn LinearOperator>> = vec![
        Arc::new(random_mask((b, c, h, w), 0.6, 11)),
        Arc::new(random_mask((1, 1, h, w), 0.4, 12)),
    ];
    for s in [2, 4] {
        if h % s == 0 && w % s == 0 {
            ops.push(Arc::new(AvgPoolSr::new(s).unwrap()));
        }
    }
    if h >= 5 && w >= 5 {
        ops.push(Arc::new(
            Blur::new(Kernel::gaussian(1.0, 5).unwrap(), h, w).unwrap(),
        ));
    }
    if h >= 7 && w >= 7 {
        ops.push(Arc::new(
            Blur::new(Kernel::motion(7.0, 30.0).unwrap(), h, w).unwrap(),
        ));
    }
    ops.push(Arc::new(Blur::new(lopsided_kernel(), h, w).unwrap()));
    ops
}

/// Random measurement-shaped tensor for `op` on images of `dims`.
pub fn random_measurement(
    op: &dyn LinearOperator,
    dims: (usize, usize, usize, usize),
    seed: u64,
) -> Tensor {
    randn(op.measurement_dims(dims).unwrap(), seed)
}
