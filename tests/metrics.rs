//! Metrics against values computed by hand or by an independent formula.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{Device, Tensor};
use eps_studio::eval::metrics::{
    CrpsForm, crps, median_bandwidth, mmd2_unbiased, mmd2_unbiased_with_bandwidth, psnr,
    psnr_batch, ssim, ssim_batch,
};
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, StandardNormal};

#[test]
fn psnr_by_hand() {
    // MSE = (0.1² + 0.1²)/4 = 0.005 → PSNR = −10 log10(0.005) = 23.0103 dB.
    let p = psnr(&[0.1, 0.5, 0.5, 0.9], &[0.0, 0.5, 0.5, 1.0]).unwrap();
    assert!((p - 23.010_299_956_639_813).abs() < 1e-9, "{p}");
    assert!(psnr(&[0.2; 4], &[0.2; 4]).unwrap().is_infinite());
    // Tensor helper maps [-1, 1] to [0, 1]: a 0.2 shift in [-1,1] is 0.1 in [0,1] → 20 dB.
    let a = Tensor::zeros((2, 1, 4, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    let b = a.affine(1.0, 0.2).unwrap();
    let v = psnr_batch(&b, &a).unwrap();
    assert_eq!(v.len(), 2);
    assert!((v[0] - 20.0).abs() < 1e-4, "{v:?}");
}

#[test]
fn ssim_of_identical_images_is_one_and_constants_follow_the_luminance_term() {
    let img: Vec<f64> = (0..3 * 16 * 20)
        .map(|i| ((i * 37 % 101) as f64) / 100.0)
        .collect();
    assert!((ssim(&img, &img, (3, 16, 20)).unwrap() - 1.0).abs() < 1e-12);
    // Constant images: variances and covariance vanish, so SSIM = (2ab + C1)/(a² + b² + C1).
    let (a, b) = (0.3, 0.7);
    let c1 = 0.01f64.powi(2);
    let want = (2.0 * a * b + c1) / (a * a + b * b + c1);
    let got = ssim(&[a; 144], &[b; 144], (1, 12, 12)).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}

/// On an 11×11 image there is exactly one window: SSIM is the formula evaluated on the
/// Gaussian-weighted statistics of the whole image, computed here directly in 2-D.
#[test]
fn ssim_single_window_matches_direct_weighted_statistics() {
    let mut rng = StdRng::seed_from_u64(1);
    let x: Vec<f64> = (0..121).map(|_| rng.random()).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|v| (0.8 * v + 0.1 * rng.random::<f64>()).min(1.0))
        .collect();
    let g = |i: usize, j: usize| {
        (-(((i as f64 - 5.0).powi(2) + (j as f64 - 5.0).powi(2)) / (2.0 * 2.25))).exp()
    };
    let total: f64 = (0..121).map(|k| g(k / 11, k % 11)).sum();
    let wmean =
        |f: &dyn Fn(usize) -> f64| (0..121).map(|k| g(k / 11, k % 11) * f(k)).sum::<f64>() / total;
    let (mx, my) = (wmean(&|k| x[k]), wmean(&|k| y[k]));
    let vx = wmean(&|k| x[k] * x[k]) - mx * mx;
    let vy = wmean(&|k| y[k] * y[k]) - my * my;
    let cxy = wmean(&|k| x[k] * y[k]) - mx * my;
    let (c1, c2) = (1e-4, 9e-4);
    let want =
        ((2.0 * mx * my + c1) * (2.0 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2));
    let got = ssim(&x, &y, (1, 11, 11)).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert!(
        ssim(&x[..100], &y[..100], (1, 10, 10)).is_err(),
        "images under 11×11 are refused"
    );
    let t = Tensor::from_vec(
        x.iter().map(|v| (2.0 * v - 1.0) as f32).collect::<Vec<_>>(),
        (1, 1, 11, 11),
        &Device::Cpu,
    )
    .unwrap();
    assert!((ssim_batch(&t, &t).unwrap()[0] - 1.0).abs() < 1e-6);
}

#[test]
fn mmd_by_hand_on_four_points() {
    // x = {0, 1}, y = {0, 3} in 1-D, ℓ = 1: k(d) = exp(−d²/2).
    // within-x: k(1) = e^{-1/2}; within-y: k(3) = e^{-9/2};
    // cross: k(0) + k(3) + k(1) + k(2) over 4.
    let x = DMatrix::from_row_slice(1, 2, &[0.0, 1.0]);
    let y = DMatrix::from_row_slice(1, 2, &[0.0, 3.0]);
    let k = |d: f64| (-d * d / 2.0).exp();
    let want = k(1.0) + k(3.0) - 2.0 * (k(0.0) + k(3.0) + k(1.0) + k(2.0)) / 4.0;
    let got = mmd2_unbiased_with_bandwidth(&x, &y, 1.0).unwrap();
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Median heuristic: pooled distances {1, 0, 3, 1, 3, 2} → median of 6 (upper middle) = 2.
    assert!((median_bandwidth(&x, &y) - 2.0).abs() < 1e-12);
}

/// Population MMD² between N(0, s²I) and N(m, s²I) with a Gaussian kernel of width ℓ in d
/// dimensions is `2 (ℓ²/(ℓ²+2s²))^{d/2} (1 − exp(−‖m‖²/(2(ℓ²+2s²))))`. Eight independent
/// estimates of 1000 vs 1000 points: their mean must sit within 4 standard errors (estimated
/// from the replicates themselves) of the closed form, and same-distribution estimates near 0.
#[test]
fn mmd_estimate_matches_the_gaussian_closed_form() {
    let (d, n, s, ell): (usize, usize, f64, f64) = (3, 1000, 1.0, 1.5);
    let mut rng = StdRng::seed_from_u64(7);
    let mut draw = |shift: f64| {
        DMatrix::from_fn(d, n, |i, _| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z * s + if i == 0 { shift } else { 0.0 }
        })
    };
    let l2 = ell * ell;
    let want = 2.0
        * (l2 / (l2 + 2.0 * s * s)).powf(d as f64 / 2.0)
        * (1.0 - (-0.64 / (2.0 * (l2 + 2.0 * s * s))).exp());
    let (mut alt, mut null) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let (x, y, z) = (draw(0.0), draw(0.8), draw(0.0));
        alt.push(mmd2_unbiased_with_bandwidth(&x, &y, ell).unwrap());
        null.push(mmd2_unbiased_with_bandwidth(&x, &z, ell).unwrap());
        assert!(mmd2_unbiased(&x, &y).unwrap() > mmd2_unbiased(&x, &z).unwrap());
    }
    let mean_se = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64;
        (m, (var / v.len() as f64).sqrt())
    };
    let (m_alt, se_alt) = mean_se(&alt);
    assert!(
        (m_alt - want).abs() < 4.0 * se_alt,
        "mean {m_alt} ± {se_alt} vs closed form {want}"
    );
    let (m_null, se_null) = mean_se(&null);
    assert!(
        m_null.abs() < 4.0 * se_null,
        "same distribution: {m_null} ± {se_null}"
    );
    assert!(
        se_alt < 0.1 * want,
        "the estimate should be informative: se {se_alt} vs {want}"
    );
}

#[test]
fn crps_by_hand() {
    // Ensemble {0, 1, 3}, truth 1: mean |x − z| = (1 + 0 + 2)/3 = 1;
    // Σ_{i,j}|x_i − x_j| = 2 (1 + 3 + 2) = 12. Fair: 1 − 12/(2·3·2) = 0. Plain: 1 − 12/18 = 1/3.
    let ens = DMatrix::from_row_slice(1, 3, &[0.0, 1.0, 3.0]);
    assert!(crps(&ens, &[1.0], CrpsForm::Fair).unwrap().abs() < 1e-12);
    assert!((crps(&ens, &[1.0], CrpsForm::Plain).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    // Averaged over coordinates.
    let two = DMatrix::from_row_slice(2, 3, &[0.0, 1.0, 3.0, 5.0, 5.0, 5.0]);
    let got = crps(&two, &[1.0, 4.0], CrpsForm::Plain).unwrap();
    assert!((got - (1.0 / 3.0 + 1.0) / 2.0).abs() < 1e-12, "{got}");
    assert!(
        crps(
            &DMatrix::from_row_slice(1, 1, &[0.0]),
            &[0.0],
            CrpsForm::Fair
        )
        .is_err()
    );
}

/// The fair CRPS is unbiased for the CRPS of the sampling distribution, which for N(μ, s²) and
/// truth z is `s [ω(2Φ(ω) − 1) + 2φ(ω) − 1/√π]`, ω = (z − μ)/s (Gneiting & Raftery 2007).
#[test]
fn fair_crps_estimates_the_gaussian_closed_form() {
    let (mu, s, z): (f64, f64, f64) = (0.2, 0.5, 0.9);
    let w: f64 = (z - mu) / s;
    // Φ(ω) via erf by a high-order series (ω is small here).
    let erf = |x: f64| {
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..60 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        2.0 / std::f64::consts::PI.sqrt() * sum
    };
    let cdf = 0.5 * (1.0 + erf(w / 2f64.sqrt()));
    let pdf = (-w * w / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let want = s * (w * (2.0 * cdf - 1.0) + 2.0 * pdf - 1.0 / std::f64::consts::PI.sqrt());
    // 4000 coordinates, each an independent ensemble of 8 members: the average is tight.
    let (d, m) = (4000, 8);
    let mut rng = StdRng::seed_from_u64(3);
    let ens = DMatrix::from_fn(d, m, |_, _| {
        let n: f64 = StandardNormal.sample(&mut rng);
        mu + s * n
    });
    let got = crps(&ens, &vec![z; d], CrpsForm::Fair).unwrap();
    assert!(
        (got - want).abs() < 0.01,
        "fair CRPS {got} vs closed form {want}"
    );
    // The plain form is biased upward by E|X − X'|/(2M) = s/(√π M).
    let plain = crps(&ens, &vec![z; d], CrpsForm::Plain).unwrap();
    assert!((plain - got - s / (std::f64::consts::PI.sqrt() * m as f64)).abs() < 0.01);
}

fn gaussian_points(d: usize, n: usize, mean: &[f64], std: &[f64], seed: u64) -> DMatrix<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    DMatrix::from_fn(d, n, |i, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        mean[i] + std[i] * z
    })
}

#[test]
fn frechet_distance_matches_the_closed_form_for_gaussians() {
    use eps_studio::eval::metrics::frechet_distance;
    // Diagonal Gaussians: FD = ‖Δμ‖² + Σ (σx − σy)²; with 20 000 points the estimate is close.
    let (mx, sx) = ([0.0, 1.0, -2.0], [1.0, 0.5, 2.0]);
    let (my, sy) = ([0.5, 1.0, -1.0], [1.5, 0.5, 1.0]);
    let x = gaussian_points(3, 20_000, &mx, &sx, 1);
    let y = gaussian_points(3, 20_000, &my, &sy, 2);
    let exact: f64 = (0..3)
        .map(|i| (mx[i] - my[i]).powi(2) + (sx[i] - sy[i]).powi(2))
        .sum();
    let fd = frechet_distance(&x, &y).unwrap();
    assert!((fd - exact).abs() < 0.05 * exact, "{fd} vs {exact}");
    // Identical sets: zero (up to round-off), even with fewer points than dimensions.
    let z = gaussian_points(10, 6, &[0.0; 10], &[1.0; 10], 3);
    assert!(frechet_distance(&z, &z).unwrap() < 1e-8);
    assert!(frechet_distance(&z, &x).is_err(), "dimensions must agree");
}

#[test]
fn kid_is_near_zero_for_one_distribution_and_grows_with_a_shift() {
    use eps_studio::eval::metrics::kid;
    let x = gaussian_points(4, 400, &[0.0; 4], &[1.0; 4], 4);
    let y = gaussian_points(4, 400, &[0.0; 4], &[1.0; 4], 5);
    let shifted = gaussian_points(4, 400, &[1.0; 4], &[1.0; 4], 6);
    let same = kid(&x, &y).unwrap();
    let apart = kid(&x, &shifted).unwrap();
    assert!(same.abs() < 0.05, "{same}");
    assert!(apart > 20.0 * same.abs().max(1e-3), "{apart} vs {same}");
    // By hand on two points per set in one dimension: k(u, v) = (uv + 1)³.
    let a = DMatrix::from_row_slice(1, 2, &[0.0, 1.0]);
    let b = DMatrix::from_row_slice(1, 2, &[1.0, 2.0]);
    let k = |u: f64, v: f64| (u * v + 1.0).powi(3);
    let want = k(0.0, 1.0) + k(1.0, 2.0)
        - 2.0 * (k(0.0, 1.0) + k(0.0, 2.0) + k(1.0, 1.0) + k(1.0, 2.0)) / 4.0;
    assert!((kid(&a, &b).unwrap() - want).abs() < 1e-12);
}

/// The fills table's hole CRPS: only hole values count; one result scores its mean absolute
/// error; two results score `mean|x_i − z| − |x_1 − x_2|/2` per value (the fair estimator).
#[test]
fn hole_crps_by_hand() {
    use eps_studio::eval::holes::hole_crps;
    use eps_studio::photo::RgbImage;
    let img = |v: [f32; 2]| {
        RgbImage::from_data(
            2,
            1,
            vec![v[0]; 3].into_iter().chain(vec![v[1]; 3]).collect(),
        )
        .unwrap()
    };
    let truth = img([0.5, 0.0]);
    let fill = [true, false];
    // The unmasked pixel differs wildly and must not count.
    let a = img([0.7, 1.0]);
    let b = img([0.2, 1.0]);
    let one = hole_crps(std::slice::from_ref(&a), &truth, &fill).unwrap();
    assert!((one - 0.2).abs() < 1e-6, "{one}");
    let two = hole_crps(&[a.clone(), b], &truth, &fill).unwrap();
    // mean(|0.2|, |−0.3|) − |0.5|/2 = 0.25 − 0.25 = 0.
    assert!(two.abs() < 1e-6, "{two}");
    let same = hole_crps(&[a.clone(), a], &truth, &fill).unwrap();
    assert!((same - 0.2).abs() < 1e-6, "{same}");
    assert!(hole_crps(&[], &truth, &fill).is_err());
    assert!(hole_crps(std::slice::from_ref(&truth), &truth, &[false, false]).is_err());
}
