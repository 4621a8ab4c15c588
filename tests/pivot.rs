//! The pivot μ* and Σ* (eps-method.md §2–3): dense solves, the proximal form, limits, precision,
//! and the Monte Carlo check of Prop. 3.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use candle_core::DType;
use common::*;
use eps_studio::inverse::pivot::{pivot, sigma_star_apply};
use eps_studio::inverse::{AvgPoolSr, Blur, Interpolant, Kernel, LinearOperator, dense};
use nalgebra::{DMatrix, DVector};

fn column(t: &candle_core::Tensor) -> DVector<f64> {
    DVector::from_column_slice(dense::columns_from_batch(t).unwrap().as_slice())
}

/// `(cI + λAᵀA)⁻¹ b` with `c = α²/β²`, `λ = 1/σ_y²`, `b = α/β² x_t + λ Aᵀy`, by dense LU.
fn dense_pivot(
    a: &DMatrix<f64>,
    xt: &DVector<f64>,
    y: &DVector<f64>,
    interp: Interpolant,
    sigma_y: f64,
) -> DVector<f64> {
    let (al, be) = (interp.alpha, interp.beta);
    let (c, lam) = (al * al / (be * be), 1.0 / (sigma_y * sigma_y));
    let n = a.ncols();
    let m = DMatrix::identity(n, n) * c + a.transpose() * a * lam;
    let b = xt * (al / (be * be)) + a.transpose() * y * lam;
    m.lu().solve(&b).unwrap()
}

const INTERPOLANTS: [Interpolant; 5] = [
    Interpolant {
        alpha: 1.0,
        beta: 0.5,
    },
    Interpolant {
        alpha: 0.8,
        beta: 0.3,
    },
    Interpolant {
        alpha: 1.0,
        beta: 80.0,
    },
    Interpolant {
        alpha: 0.5,
        beta: 2.0,
    },
    Interpolant {
        alpha: 1.0,
        beta: 0.002,
    },
];

#[test]
fn pivot_equals_the_dense_solve_for_every_operator() {
    let dims = (1, 2, 6, 8);
    let chw = (2, 6, 8);
    for op in operators_for(dims) {
        let a = dense::forward_matrix(&*op, chw).unwrap();
        for (k, interp) in INTERPOLANTS.into_iter().enumerate() {
            for sigma_y in [0.05, 0.3] {
                let xt = randn(dims, 10 + k as u64).affine(interp.beta, 0.0).unwrap();
                let y = random_measurement(&*op, dims, 20 + k as u64);
                let mu = pivot(&*op, &xt, &y, interp, sigma_y).unwrap();
                let want = dense_pivot(&a, &column(&xt), &column(&y), interp, sigma_y);
                let err = (column(&mu) - &want).amax();
                assert!(
                    err <= 1e-9 * want.amax().max(1.0),
                    "{} α={} β={} σ_y={sigma_y}: |μ* − dense| = {err}",
                    op.name(),
                    interp.alpha,
                    interp.beta
                );
            }
        }
    }
}

#[test]
fn pivot_is_the_proximal_point() {
    // μ* minimises ½‖Ax − y‖²/σ_y² + ½(α²/β²)‖x − x_t/α‖², so the gradient vanishes there:
    // Aᵀ(Aμ − y)/σ_y² + (α²/β²)(μ − x_t/α) = 0.
    let dims = (2, 3, 8, 8);
    for op in operators_for(dims) {
        for interp in INTERPOLANTS {
            let sigma_y = 0.1;
            let xt = randn(dims, 3).affine(interp.beta, 0.0).unwrap();
            let y = random_measurement(&*op, dims, 4);
            let mu = pivot(&*op, &xt, &y, interp, sigma_y).unwrap();
            let c = interp.alpha.powi(2) / interp.beta.powi(2);
            let data = op
                .adjoint(&op.forward(&mu).unwrap().broadcast_sub(&y).unwrap())
                .unwrap();
            let prior = (&mu - xt.affine(1.0 / interp.alpha, 0.0).unwrap()).unwrap();
            let grad = (data.affine(1.0 / (sigma_y * sigma_y), 0.0).unwrap()
                + prior.affine(c, 0.0).unwrap())
            .unwrap();
            let scale = max_abs(&data) / (sigma_y * sigma_y) + c * max_abs(&prior) + 1.0;
            assert!(
                max_abs(&grad) <= 1e-9 * scale,
                "{}: gradient {} at μ*",
                op.name(),
                max_abs(&grad)
            );
        }
    }
}

#[test]
fn noiseless_limit_is_pinv_plus_null_space_and_finite() {
    let dims = (1, 1, 8, 8);
    let chw = (1, 8, 8);
    for op in operators_for(dims) {
        let interp = Interpolant {
            alpha: 0.9,
            beta: 1.5,
        };
        let xt = randn(dims, 5).affine(1.5, 0.0).unwrap();
        let x0 = randn(dims, 6);
        let y = op.forward(&x0).unwrap();
        let exact = pivot(&*op, &xt, &y, interp, 0.0).unwrap();
        assert!(
            to_vec(&exact).iter().all(|v| v.is_finite()),
            "{}: σ_y = 0 gave NaN",
            op.name()
        );
        // A⁺y + (I − A⁺A) x_t/α, with the pseudo-inverse from an SVD.
        let a = dense::forward_matrix(&*op, chw).unwrap();
        let pinv = a.clone().pseudo_inverse(1e-10).unwrap();
        let n = a.ncols();
        let want = &pinv * column(&y)
            + (DMatrix::identity(n, n) - &pinv * &a) * column(&xt) / interp.alpha;
        let err = (column(&exact) - &want).amax();
        // Blur kernels with near-zero frequencies amplify round-off in A⁺; 1e-6 relative is ample.
        assert!(
            err < 1e-6 * want.amax().max(1.0),
            "{}: σ_y=0 pivot off by {err}",
            op.name()
        );
        // The limit is continuous: a tiny σ_y lands next to it.
        let near = pivot(&*op, &xt, &y, interp, 1e-7).unwrap();
        assert!(
            max_abs_diff(&near, &exact) < 1e-4 * max_abs(&exact).max(1.0),
            "{}: discontinuous at σ_y → 0",
            op.name()
        );
    }
}

#[test]
fn zero_noise_level_returns_the_scaled_state() {
    let dims = (2, 1, 8, 8);
    for op in operators_for(dims) {
        let xt = randn(dims, 8);
        let y = random_measurement(&*op, dims, 9);
        for sigma_y in [0.0, 0.05] {
            let mu = pivot(
                &*op,
                &xt,
                &y,
                Interpolant {
                    alpha: 2.0,
                    beta: 0.0,
                },
                sigma_y,
            )
            .unwrap();
            assert!(
                max_abs_diff(&mu, &xt.affine(0.5, 0.0).unwrap()) < 1e-12,
                "{} β=0",
                op.name()
            );
        }
    }
}

#[test]
fn single_precision_pivot_is_accurate_at_large_noise() {
    // At σ = 80 and beyond, gains span 10 orders of magnitude; combining them carelessly in f32
    // once cost 0.46 in μ*. Compare the f32 pivot with the f64 dense solve.
    let dims = (1, 3, 8, 8);
    let chw = (3, 8, 8);
    for op in operators_for(dims) {
        let a = dense::forward_matrix(&*op, chw).unwrap();
        for sigma in [80.0, 1000.0] {
            let interp = Interpolant::edm(sigma);
            let xt = randn(dims, 1).affine(sigma, 0.0).unwrap();
            let y = random_measurement(&*op, dims, 2).affine(0.5, 0.0).unwrap();
            let (xt32, y32) = (
                xt.to_dtype(DType::F32).unwrap(),
                y.to_dtype(DType::F32).unwrap(),
            );
            let mu = pivot(&*op, &xt32, &y32, interp, 0.05).unwrap();
            let want = dense_pivot(&a, &column(&xt32), &column(&y32), interp, 0.05);
            let err = (column(&mu) - &want).amax();
            // f32 carries ~6e-8 relative error on values of size σ.
            assert!(
                err < 1e-6 * sigma + 1e-5,
                "{} σ={sigma}: f32 pivot off by {err}",
                op.name()
            );
        }
    }
}

#[test]
fn sigma_star_matches_the_dense_inverse() {
    let dims = (1, 1, 6, 6);
    let chw = (1, 6, 6);
    for op in operators_for(dims) {
        let a = dense::forward_matrix(&*op, chw).unwrap();
        let n = a.ncols();
        for interp in INTERPOLANTS {
            let sigma_y = 0.05;
            let c = interp.alpha.powi(2) / interp.beta.powi(2);
            let dense_sigma = (DMatrix::identity(n, n) * c
                + a.transpose() * &a / (sigma_y * sigma_y))
                .try_inverse()
                .unwrap();
            let v = randn(dims, 3);
            let got = column(&sigma_star_apply(&*op, &v, interp, sigma_y).unwrap());
            let want = &dense_sigma * column(&v);
            assert!(
                (got - &want).amax() <= 1e-9 * want.amax().max(1.0),
                "{} Σ*",
                op.name()
            );
        }
    }
}

/// Prop. 3: with x0 fixed, `μ* − x0 ~ N(0, Σ*)`. N = 40 000 draws of (ε, η); each sample
/// covariance entry then has standard error `√((Σ_ii Σ_jj + Σ_ij²)/N)`, and the mean entry
/// `√(Σ_ii/N)`. We require every entry within 5 standard errors: for 136 + 16 Gaussian-ish
/// statistics a false alarm has probability below 1e-4. Power, checked by mutating the pivot:
/// forgetting the 1/α on x_t gives z ≈ 74, weighting the x_t term 2× (4×) too heavily z ≈ 20
/// (77). A 10% weight error is *not* visible: μ* is the minimum-variance combination, so its
/// covariance is stationary in the weights; the dense-solve tests above pin the weights exactly.
#[test]
fn pivot_noise_has_covariance_sigma_star() {
    let chw = (1, 4, 4);
    let dims = (1, 1, 4, 4);
    let n_draws = 40_000;
    let ops: Vec<Arc<dyn LinearOperator>> = vec![
        Arc::new(random_mask(dims, 0.5, 3)),
        Arc::new(AvgPoolSr::new(2).unwrap()),
        Arc::new(Blur::new(Kernel::gaussian(0.8, 3).unwrap(), 4, 4).unwrap()),
    ];
    for op in ops {
        for interp in [
            Interpolant::edm(0.3),
            Interpolant {
                alpha: 0.7,
                beta: 0.5,
            },
        ] {
            let sigma_y = 0.2;
            let x0 = randn(dims, 1).affine(0.5, 0.0).unwrap();
            let eps = randn((n_draws, 1, 4, 4), 2);
            let eta = randn(op.measurement_dims((n_draws, 1, 4, 4)).unwrap(), 3);
            let xt = x0
                .affine(interp.alpha, 0.0)
                .unwrap()
                .broadcast_add(&eps.affine(interp.beta, 0.0).unwrap())
                .unwrap();
            let y = op
                .forward(&x0)
                .unwrap()
                .broadcast_add(&eta.affine(sigma_y, 0.0).unwrap())
                .unwrap();
            let mu = pivot(&*op, &xt, &y, interp, sigma_y).unwrap();
            let err = dense::columns_from_batch(&mu.broadcast_sub(&x0).unwrap()).unwrap();
            let a = dense::forward_matrix(&*op, chw).unwrap();
            let c = interp.alpha.powi(2) / interp.beta.powi(2);
            let sigma = (DMatrix::identity(16, 16) * c + a.transpose() * &a / (sigma_y * sigma_y))
                .try_inverse()
                .unwrap();
            let mean = err.column_mean();
            let mut centred = err.clone();
            for mut col in centred.column_iter_mut() {
                col -= &mean;
            }
            let cov = &centred * centred.transpose() / (n_draws as f64 - 1.0);
            let nf = n_draws as f64;
            let mut worst: f64 = 0.0;
            for i in 0..16 {
                worst = worst.max(mean[i].abs() / (sigma[(i, i)] / nf).sqrt());
                for j in i..16 {
                    let se = ((sigma[(i, i)] * sigma[(j, j)] + sigma[(i, j)].powi(2)) / nf).sqrt();
                    worst = worst.max((cov[(i, j)] - sigma[(i, j)]).abs() / se);
                }
            }
            assert!(
                worst < 5.0,
                "{} α={} β={}: worst z-score {worst:.2}",
                op.name(),
                interp.alpha,
                interp.beta
            );
        }
    }
}
