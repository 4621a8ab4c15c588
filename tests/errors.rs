//! Bad input gets a typed error that names the problem — never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::*;
use eps_studio::Error;
use eps_studio::inverse::pivot::pivot;
use eps_studio::inverse::{AvgPoolSr, Blur, Interpolant, Kernel, LinearOperator, Mask, Problem};
use eps_studio::prior::GaussianMixture;
use eps_studio::sampler::{self, Denoisers, EpsConfig, Method, ignore_progress};

fn message(e: &Error) -> String {
    e.to_string()
}

#[test]
fn mismatched_shapes_are_named() {
    let mask = random_mask((1, 1, 8, 8), 0.5, 1);
    let e = mask.forward(&randn((1, 3, 8, 9), 1)).unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { .. }) && message(&e).contains("8×8"),
        "{e}"
    );
    let per_image = random_mask((2, 1, 8, 8), 0.5, 1);
    let e = per_image.forward(&randn((3, 1, 8, 8), 1)).unwrap_err();
    assert!(message(&e).contains("batch"), "{e}");
    let e = mask
        .forward(&Tensor::zeros((8, 8), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(message(&e).contains("[B, C, H, W]"), "{e}");
    let blur = Blur::new(Kernel::gaussian(1.0, 3).unwrap(), 8, 8).unwrap();
    assert!(matches!(
        blur.forward(&randn((1, 1, 8, 10), 2)),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn wrong_measurement_size_is_refused_by_the_problem() {
    let op: Arc<dyn LinearOperator> = Arc::new(AvgPoolSr::new(4).unwrap());
    let e = Problem::new(Arc::clone(&op), &randn((1, 3, 8, 8), 1), 0.05, (3, 16, 16)).unwrap_err();
    assert!(
        matches!(e, Error::ShapeMismatch { .. }) && message(&e).contains("super-resolution ×4"),
        "{e}"
    );
    let e = Problem::new(op, &randn((1, 3, 4, 4), 1), 0.05, (3, 16, 18)).unwrap_err();
    assert!(message(&e).contains("divisible by 4"), "{e}");
    let e = AvgPoolSr::new(0).unwrap_err();
    assert!(message(&e).contains("at least 1"), "{e}");
}

#[test]
fn kernel_larger_than_the_image_is_refused() {
    let e = Blur::new(Kernel::gaussian(2.0, 13).unwrap(), 8, 16).unwrap_err();
    assert!(
        matches!(
            e,
            Error::KernelTooLarge {
                kernel_h: 13,
                image_h: 8,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        message(&e).contains("13×13") && message(&e).contains("16×8"),
        "{e}"
    );
}

#[test]
fn negative_or_nan_noise_levels_are_refused() {
    let op: Arc<dyn LinearOperator> = Arc::new(random_mask((1, 1, 4, 4), 0.5, 2));
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        let e = Problem::new(Arc::clone(&op), &randn((1, 1, 4, 4), 1), bad, (1, 4, 4)).unwrap_err();
        assert!(
            matches!(e, Error::InvalidParameter { name: "σ_y", .. }),
            "{e}"
        );
        let e = pivot(
            &*op,
            &randn((1, 1, 4, 4), 1),
            &randn((1, 1, 4, 4), 2),
            Interpolant::edm(1.0),
            bad,
        )
        .unwrap_err();
        assert!(message(&e).contains("σ_y"), "{e}");
    }
    let e = pivot(
        &*op,
        &randn((1, 1, 4, 4), 1),
        &randn((1, 1, 4, 4), 2),
        Interpolant {
            alpha: 0.0,
            beta: 1.0,
        },
        0.1,
    )
    .unwrap_err();
    assert!(message(&e).contains("α"), "{e}");
    let e = pivot(
        &*op,
        &randn((1, 1, 4, 4), 1),
        &randn((1, 1, 4, 4), 2),
        Interpolant::edm(-1.0),
        0.1,
    )
    .unwrap_err();
    assert!(message(&e).contains("noise level"), "{e}");
}

#[test]
fn nan_anywhere_is_reported() {
    let nan = Tensor::new(&[[[[f32::NAN, 0.0], [0.0, 0.0]]]], &Device::Cpu).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(AvgPoolSr::new(1).unwrap());
    let e = Problem::new(Arc::clone(&op), &nan, 0.1, (1, 2, 2)).unwrap_err();
    assert!(
        matches!(e, Error::NonFinite { .. }) && message(&e).contains("measurement"),
        "{e}"
    );
    let e = Problem::simulate(op, &nan, 0.1, 1).unwrap_err();
    assert!(message(&e).contains("clean image"), "{e}");
    assert!(matches!(Mask::new(&nan), Err(Error::NonFinite { .. })));
    assert!(matches!(
        Kernel::from_values(1, 2, vec![1.0, f64::NAN]),
        Err(Error::NonFinite { .. })
    ));
    let half = Tensor::new(&[[[[0.5f32, 1.0]]]], &Device::Cpu).unwrap();
    let e = Mask::new(&half).unwrap_err();
    assert!(
        message(&e).contains("only 0") && message(&e).contains("threshold"),
        "{e}"
    );
}

#[test]
fn zero_steps_and_empty_requests_are_refused() {
    let prior = GaussianMixture::synthetic((1, 4, 4), 2, 1).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(random_mask((1, 1, 4, 4), 0.5, 2));
    let x0 = prior
        .sample_tensor(1, 1, &Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap())
        .unwrap();
    let problem = Problem::simulate(op, &x0, 0.05, 1).unwrap();
    let denoisers = Denoisers {
        prior: Some(&prior),
        posterior: None,
    };
    for m in Method::baselines(sampler::Task::BoxInpaint) {
        let zero = match m {
            Method::Dps(c) => Method::Dps(sampler::DpsConfig { steps: 0, ..c }),
            Method::Ddnm(c) => Method::Ddnm(sampler::DdnmConfig { steps: 0, ..c }),
            Method::Pigdm(c) => Method::Pigdm(sampler::PigdmConfig { steps: 0, ..c }),
            Method::Diffpir(c) => Method::Diffpir(sampler::DiffpirConfig { steps: 0, ..c }),
            other => other,
        };
        let e =
            sampler::sample(&zero, denoisers, &problem, &[1], &mut ignore_progress).unwrap_err();
        assert!(
            message(&e).contains("at least one step"),
            "{}: {e}",
            zero.name()
        );
    }
    let e = sampler::sample(
        &Method::Eps(EpsConfig::default()),
        denoisers,
        &problem,
        &[1],
        &mut ignore_progress,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Unsupported(_)), "{e}");
    let e = Problem::new(problem.operator_arc(), problem.y(), 0.05, (1, 0, 4)).unwrap_err();
    assert!(message(&e).contains("empty"), "{e}");
    // Seeds must match a per-sample measurement batch.
    let y2 = Tensor::cat(&[problem.y(), problem.y()], 0).unwrap();
    let two = Problem::new(problem.operator_arc(), &y2, 0.05, (1, 4, 4)).unwrap();
    let e = sampler::sample(
        &Method::Ddnm(Default::default()),
        denoisers,
        &two,
        &[1, 2, 3],
        &mut ignore_progress,
    )
    .unwrap_err();
    assert!(message(&e).contains("seeds"), "{e}");
}
