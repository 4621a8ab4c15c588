//! Linear operators: adjoints, pseudo-inverses, conventions, conjugate gradients, measurements.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::*;
use eps_studio::inverse::{
    AvgPoolSr, Blur, CgOperator, CgSettings, Kernel, LinearOperator, Mask, Problem, dense,
};

const SIZES: [(usize, usize, usize, usize); 4] =
    [(1, 1, 8, 8), (2, 3, 7, 9), (3, 1, 12, 10), (1, 2, 16, 16)];

#[test]
fn adjoint_identity_holds_for_every_operator_and_size() {
    for dims in SIZES {
        for (k, op) in operators_for(dims).iter().enumerate() {
            let x = randn(dims, 1 + k as u64);
            let z = random_measurement(&**op, dims, 50 + k as u64);
            let lhs = dot(&op.forward(&x).unwrap(), &z);
            let rhs = dot(&x, &op.adjoint(&z).unwrap());
            let scale = lhs.abs().max(1.0);
            assert!(
                (lhs - rhs).abs() <= 1e-10 * scale,
                "{} on {dims:?}: <Ax,z> = {lhs}, <x,Aᵀz> = {rhs}",
                op.name()
            );
        }
    }
}

#[test]
fn pseudo_inverse_satisfies_a_pinv_a_equals_a() {
    for dims in SIZES {
        for (k, op) in operators_for(dims).iter().enumerate() {
            let x = randn(dims, 7 + k as u64);
            let ax = op.forward(&x).unwrap();
            let a_pinv_ax = op.forward(&op.pinv(&ax).unwrap()).unwrap();
            let err = max_abs_diff(&ax, &a_pinv_ax);
            assert!(
                err <= 1e-8 * max_abs(&ax).max(1.0),
                "{} on {dims:?}: |A A⁺ A x − A x| = {err}",
                op.name()
            );
            // And A⁺ A A⁺ = A⁺ (the other Penrose identity).
            let z = random_measurement(&**op, dims, 70 + k as u64);
            let p = op.pinv(&z).unwrap();
            let ppp = op.pinv(&op.forward(&p).unwrap()).unwrap();
            assert!(
                max_abs_diff(&p, &ppp) <= 1e-8 * max_abs(&p).max(1.0),
                "{}: A⁺AA⁺ ≠ A⁺",
                op.name()
            );
        }
    }
}

#[test]
fn dense_adjoint_is_the_transpose() {
    let chw = (2, 5, 6);
    for op in operators_for((1, 2, 5, 6)) {
        let a = dense::forward_matrix(&*op, chw).unwrap();
        let at = dense::adjoint_matrix(&*op, chw).unwrap();
        let err = (a.transpose() - at).amax();
        assert!(
            err < 1e-12,
            "{}: dense Aᵀ differs from transpose by {err}",
            op.name()
        );
    }
}

/// Circular convolution by direct summation: `(k ⊛ x)[i, j] = Σ_{r,c} k[r, c] x[i − (r − cr), j − (c − cc)]`
/// with the kernel centre `(cr, cc) = (kh/2, kw/2)`, indices modulo the image size.
fn direct_circular_convolution(x: &[f64], h: usize, w: usize, k: &Kernel) -> Vec<f64> {
    let (kh, kw) = (k.height(), k.width());
    let (cr, cc) = k.centre();
    let mut out = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            let mut acc = 0.0;
            for r in 0..kh {
                for c in 0..kw {
                    let si = (i + h + cr - r) % h;
                    let sj = (j + w + cc - c) % w;
                    acc += k.values()[r * kw + c] * x[si * w + sj];
                }
            }
            out[i * w + j] = acc;
        }
    }
    out
}

#[test]
fn blur_is_circular_convolution_with_centred_kernel() {
    let (h, w) = (7, 9);
    for kernel in [
        lopsided_kernel(),
        Kernel::motion(5.0, 45.0).unwrap(),
        Kernel::gaussian(0.8, 3).unwrap(),
    ] {
        let op = Blur::new(kernel.clone(), h, w).unwrap();
        let x = randn((1, 1, h, w), 3);
        let got = to_vec(&op.forward(&x).unwrap());
        let want = direct_circular_convolution(&to_vec(&x), h, w, &kernel);
        let err = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            err < 1e-12,
            "FFT blur differs from direct convolution by {err}"
        );
    }
}

#[test]
fn delta_kernel_is_identity_and_shifted_delta_shifts() {
    let x = randn((1, 1, 6, 6), 4);
    let id = Blur::new(
        Kernel::from_values(3, 3, vec![0., 0., 0., 0., 1., 0., 0., 0., 0.]).unwrap(),
        6,
        6,
    )
    .unwrap();
    assert!(max_abs_diff(&id.forward(&x).unwrap(), &x) < 1e-12);
    // Weight at row 1, col 2 of a 3×3 kernel (one right of centre) moves content one column right.
    let shift = Blur::new(
        Kernel::from_values(3, 3, vec![0., 0., 0., 0., 0., 1., 0., 0., 0.]).unwrap(),
        6,
        6,
    )
    .unwrap();
    let y = to_vec(&shift.forward(&x).unwrap());
    let xv = to_vec(&x);
    for i in 0..6 {
        for j in 0..6 {
            assert!((y[i * 6 + j] - xv[i * 6 + (j + 5) % 6]).abs() < 1e-12);
        }
    }
}

#[test]
fn average_pool_takes_block_means_and_pinv_upsamples() {
    let x = Tensor::arange(0f64, 16.0, &Device::Cpu)
        .unwrap()
        .reshape((1, 1, 4, 4))
        .unwrap();
    let op = AvgPoolSr::new(2).unwrap();
    let y = to_vec(&op.forward(&x).unwrap());
    // Blocks of [[0,1],[4,5]] etc.
    assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
    let up = to_vec(&op.pinv(&op.forward(&x).unwrap()).unwrap());
    assert_eq!(&up[0..4], &[2.5, 2.5, 4.5, 4.5]);
}

#[test]
fn mask_measurement_is_zero_off_the_mask() {
    let mask = random_mask((1, 1, 6, 6), 0.5, 3);
    let m = to_vec(mask.tensor());
    let y = randn((1, 3, 6, 6), 9);
    let problem = Problem::new(Arc::new(mask), &y, 0.05, (3, 6, 6)).unwrap();
    let stored = to_vec(problem.y());
    for (i, v) in stored.iter().enumerate() {
        if m[i % 36] == 0.0 {
            assert_eq!(*v, 0.0, "hidden pixel {i} kept a value");
        }
    }
}

#[test]
fn conjugate_gradients_match_the_closed_form() {
    let dims = (2, 2, 8, 8);
    let settings = CgSettings {
        tolerance: 1e-10,
        max_iterations: 500,
    };
    let structured: Vec<Arc<dyn LinearOperator>> = vec![
        Arc::new(random_mask(dims, 0.5, 5)),
        Arc::new(AvgPoolSr::new(2).unwrap()),
        Arc::new(Blur::new(Kernel::gaussian(1.2, 5).unwrap(), 8, 8).unwrap()),
    ];
    for op in structured {
        let z = randn(dims, 21);
        let y = random_measurement(&*op, dims, 22);
        for (p, q) in [(0.05, 1.0), (1.0, 400.0), (2.0, 0.5)] {
            let exact = op.prox(&z, &y, p, q).unwrap();
            let cg = eps_studio::inverse::cg::prox_cg(&*op, &z, &y, p, q, None, &settings).unwrap();
            let err = max_abs_diff(&exact, &cg);
            assert!(
                err < 1e-6 * max_abs(&exact).max(1.0),
                "{} p={p} q={q}: CG differs by {err}",
                op.name()
            );
        }
    }
    // The wrapper (no closed form) warm-starts from its previous solution and still agrees.
    let blur = Blur::new(Kernel::motion(5.0, 10.0).unwrap(), 8, 8).unwrap();
    let wrapped = CgOperator::new(blur.clone(), settings);
    let z = randn(dims, 31);
    let y = random_measurement(&blur, dims, 32);
    for q in [10.0, 11.0] {
        let a = wrapped.prox(&z, &y, 0.1, q).unwrap();
        let b = blur.prox(&z, &y, 0.1, q).unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6 * max_abs(&b).max(1.0));
    }
    assert!(!wrapped.is_structured());
    assert!(
        wrapped.prox(&z, &y, 0.0, 1.0).is_err(),
        "σ_y = 0 must be refused without a closed form"
    );
}

#[test]
fn simulated_measurements_are_seeded_and_have_the_requested_noise() {
    let op: Arc<dyn LinearOperator> =
        Arc::new(Blur::new(Kernel::gaussian(1.0, 5).unwrap(), 64, 64).unwrap());
    let x0 = randn((1, 3, 64, 64), 1).affine(0.3, 0.0).unwrap();
    let a = Problem::simulate(Arc::clone(&op), &x0, 0.05, 42).unwrap();
    let b = Problem::simulate(Arc::clone(&op), &x0, 0.05, 42).unwrap();
    let c = Problem::simulate(Arc::clone(&op), &x0, 0.05, 43).unwrap();
    assert_eq!(to_vec(a.y()), to_vec(b.y()), "same seed, same measurement");
    assert!(
        max_abs_diff(a.y(), c.y()) > 1e-3,
        "different seeds, different noise"
    );
    // Residual RMS of the clean image is σ_y within sampling error (12288 values: ±2%).
    let rms = a.residual_rms(&x0).unwrap()[0];
    assert!((rms - 0.05).abs() < 0.002, "residual RMS {rms} vs σ_y 0.05");
}

#[test]
fn kernel_from_an_image_file_is_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel.png");
    let mut img = image::GrayImage::new(3, 2);
    img.put_pixel(0, 0, image::Luma([255]));
    img.put_pixel(2, 1, image::Luma([85]));
    img.save(&path).unwrap();
    let k = Kernel::from_image_file(&path).unwrap();
    assert_eq!((k.height(), k.width()), (2, 3));
    assert!((k.values()[0] - 0.75).abs() < 1e-9 && (k.values()[5] - 0.25).abs() < 1e-9);

    let black = dir.path().join("black.png");
    image::GrayImage::new(3, 3).save(&black).unwrap();
    let err = Kernel::from_image_file(&black).unwrap_err().to_string();
    assert!(
        err.contains("black.png") && err.contains("positive weight"),
        "{err}"
    );
    let missing = Kernel::from_image_file(&dir.path().join("nope.png"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.png"), "{missing}");
}

#[test]
fn operators_work_in_single_precision_too() {
    for op in operators_for((2, 3, 8, 8)) {
        let x = randn((2, 3, 8, 8), 5);
        let x32 = x.to_dtype(DType::F32).unwrap();
        let y64 = op.forward(&x).unwrap();
        let y32 = op.forward(&x32).unwrap();
        assert_eq!(y32.dtype(), DType::F32, "{} changed the dtype", op.name());
        assert!(max_abs_diff(&y64, &y32) < 1e-5, "{}", op.name());
    }
    let _ = Mask::new(&Tensor::ones((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap();
}

/// A camera blurs without wrap-around. Deblurring a photo with the circular model directly mixes
/// its left and right edges; reflect-padding first (and cropping after) keeps the borders right.
#[test]
fn reflect_padding_removes_wrap_around_at_the_borders() {
    use eps_studio::inverse::pad::{Padding, crop, reflect_pad};
    let (h, w) = (32, 32);
    // A horizontal ramp: left edge −0.8, right edge +0.8, nothing periodic about it.
    let ramp: Vec<f64> = (0..h * w)
        .map(|i| -0.8 + 1.6 * (i % w) as f64 / (w - 1) as f64)
        .collect();
    let x = Tensor::from_vec(ramp, (1, 1, h, w), &Device::Cpu).unwrap();
    let kernel = Kernel::gaussian(1.5, 9).unwrap();
    let pad = Padding::uniform(8);
    let padded_op = Blur::new(kernel.clone(), h + 16, w + 16).unwrap();
    let y = crop(
        &padded_op.forward(&reflect_pad(&x, pad).unwrap()).unwrap(),
        pad,
    )
    .unwrap();

    let direct = Blur::new(kernel, h, w)
        .unwrap()
        .regularized_inverse(&y, 1e-3)
        .unwrap();
    let padded = crop(
        &padded_op
            .regularized_inverse(&reflect_pad(&y, pad).unwrap(), 1e-3)
            .unwrap(),
        pad,
    )
    .unwrap();
    let border_error = |r: &Tensor| {
        let (r, x) = (to_vec(r), to_vec(&x));
        (0..h * w)
            .filter(|i| i % w < 3 || i % w >= w - 3)
            .map(|i| (r[i] - x[i]).abs())
            .fold(0.0, f64::max)
    };
    let (e_direct, e_padded) = (border_error(&direct), border_error(&padded));
    assert!(
        e_direct > 0.2,
        "the circular model should wrap around here ({e_direct})"
    );
    assert!(
        e_padded < e_direct / 5.0,
        "padding: border error {e_padded} vs {e_direct} without"
    );
}

/// Crops and other views are not contiguous in memory; every operator accepts them.
#[test]
fn operators_accept_non_contiguous_views() {
    let dims = (2, 3, 8, 8);
    let wide = randn((2, 3, 8, 11), 3);
    let view = wide.narrow(3, 2, 8).unwrap();
    assert!(!view.is_contiguous());
    let copy = view.contiguous().unwrap();
    let transposed = randn((2, 3, 8, 8), 4).transpose(2, 3).unwrap();
    for op in operators_for(dims) {
        let y = random_measurement(&*op, dims, 5);
        for (a, b) in [
            (op.forward(&view).unwrap(), op.forward(&copy).unwrap()),
            (
                op.prox(&view, &y, 0.1, 1.0).unwrap(),
                op.prox(&copy, &y, 0.1, 1.0).unwrap(),
            ),
            (
                op.forward(&transposed).unwrap(),
                op.forward(&transposed.contiguous().unwrap()).unwrap(),
            ),
        ] {
            assert!(max_abs_diff(&a, &b) < 1e-12, "{}", op.name());
        }
    }
}

/// The observation image the EPS network sees is a classical reconstruction from `y`: the
/// biharmonic fill for masks (observed pixels kept, a quadratic image's hole filled exactly,
/// zeros when nothing is observed), bicubic upsampling for super-resolution, the σ_y-scaled
/// Wiener filter for blur.
#[test]
fn observations_are_classical_reconstructions() {
    use eps_studio::inverse::{AvgPoolSr, Blur, Kernel};
    let (h, w) = (20, 24);
    let quad: Vec<f64> = (0..3 * h * w)
        .map(|i| {
            let (c, r, x) = (i / (h * w), (i / w) % h, i % w);
            0.1 * c as f64 + 0.02 * r as f64 - 0.01 * x as f64
                + 0.001 * (r as f64 - 9.0) * (x as f64 - 11.0)
        })
        .collect();
    let x = Tensor::from_vec(quad, (1, 3, h, w), &Device::Cpu).unwrap();
    let m: Vec<f32> = (0..h * w)
        .map(|i| {
            if (6..14).contains(&(i / w)) && (7..17).contains(&(i % w)) {
                0.0
            } else {
                1.0
            }
        })
        .collect();
    let mask = Mask::new(&Tensor::from_vec(m, (1, 1, h, w), &Device::Cpu).unwrap()).unwrap();
    let y = mask.forward(&x).unwrap();
    let obs = mask.observation(&y, 0.05).unwrap();
    assert!(
        max_abs_diff(&obs, &x) < 1e-6,
        "biharmonic fill of a quadratic"
    );
    let nothing =
        Mask::new(&Tensor::zeros((1, 1, h, w), DType::F32, &Device::Cpu).unwrap()).unwrap();
    assert_eq!(max_abs(&nothing.observation(&y, 0.05).unwrap()), 0.0);

    let sr = AvgPoolSr::new(4).unwrap();
    let small = Tensor::full(0.3f64, (2, 3, 5, 6), &Device::Cpu).unwrap();
    let up = sr.observation(&small, 0.05).unwrap();
    assert_eq!(up.dims(), &[2, 3, 20, 24]);
    assert!(
        max_abs_diff(
            &up,
            &Tensor::full(0.3f64, (2, 3, 20, 24), &Device::Cpu).unwrap()
        ) < 1e-12
    );

    let blur = Blur::new(Kernel::gaussian(1.5, 9).unwrap(), h, w).unwrap();
    let yb = blur.forward(&x).unwrap();
    let want = blur.regularized_inverse(&yb, 10.0 * 0.05 * 0.05).unwrap();
    assert!(max_abs_diff(&blur.observation(&yb, 0.05).unwrap(), &want) < 1e-12);
}
