//! Metrics of eps-method.md §7: PSNR and SSIM on `[0, 1]` images, the unbiased MMD² with a
//! Gaussian kernel and median-heuristic bandwidth, the CRPS per coordinate (fair and plain
//! ensemble forms), and the Fréchet distance and KID estimator for feature sets (used on VGG16
//! features, named FD-VGG and KID-VGG — never FID or KID proper, which are defined on Inception).
//!
//! Point sets are `d × n` matrices, one point per column (as [`crate::inverse::dense`] builds them).

use candle_core::Tensor;
use nalgebra::DMatrix;

use crate::inverse::dense::columns_from_batch;
use crate::inverse::dims4;
use crate::{Error, Result};

/// Peak signal-to-noise ratio in dB of `x` against `reference`, both in `[0, 1]` (data range 1).
/// Identical images give `+∞`.
pub fn psnr(x: &[f64], reference: &[f64]) -> Result<f64> {
    if x.len() != reference.len() || x.is_empty() {
        return Err(Error::shape("PSNR", reference.len(), x.len()));
    }
    let mse = x
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        / x.len() as f64;
    Ok(-10.0 * mse.log10())
}

/// Per-image PSNR of a batch in `[-1, 1]` against a reference batch (or one shared reference).
pub fn psnr_batch(x: &Tensor, reference: &Tensor) -> Result<Vec<f64>> {
    per_image(x, reference, |a, b, _| psnr(a, b))
}

/// Structural similarity (Wang et al. 2004) of two `[0, 1]` images laid out `[C, H, W]`: 11×11
/// Gaussian window with σ = 1.5, `K1 = 0.01`, `K2 = 0.03`, data range 1, valid positions only,
/// averaged over positions and channels.
pub fn ssim(x: &[f64], reference: &[f64], chw: (usize, usize, usize)) -> Result<f64> {
    const WIN: usize = 11;
    let (c, h, w) = chw;
    if x.len() != c * h * w || reference.len() != x.len() {
        return Err(Error::shape(
            "SSIM",
            c * h * w,
            format!("{} and {}", x.len(), reference.len()),
        ));
    }
    if h < WIN || w < WIN {
        return Err(Error::invalid(
            "SSIM image size",
            format!("{h}×{w}"),
            "SSIM needs images of at least 11×11",
        ));
    }
    let g: Vec<f64> = {
        let raw: Vec<f64> = (0..WIN)
            .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
            .collect();
        let s: f64 = raw.iter().sum();
        raw.into_iter().map(|v| v / s).collect()
    };
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (oh, ow) = (h - WIN + 1, w - WIN + 1);
    // Separable valid filtering of one plane.
    let filter = |p: &[f64]| -> Vec<f64> {
        let mut rows = vec![0.0; h * ow];
        for r in 0..h {
            for j in 0..ow {
                rows[r * ow + j] = (0..WIN).map(|k| g[k] * p[r * w + j + k]).sum();
            }
        }
        let mut out = vec![0.0; oh * ow];
        for i in 0..oh {
            for j in 0..ow {
                out[i * ow + j] = (0..WIN).map(|k| g[k] * rows[(i + k) * ow + j]).sum();
            }
        }
        out
    };
    let mut total = 0.0;
    for ch in 0..c {
        let a = &x[ch * h * w..(ch + 1) * h * w];
        let b = &reference[ch * h * w..(ch + 1) * h * w];
        let prod = |f: fn(f64, f64) -> f64| -> Vec<f64> {
            a.iter().zip(b).map(|(&p, &q)| f(p, q)).collect()
        };
        let (mu_a, mu_b) = (filter(a), filter(b));
        let (aa, bb, ab) = (
            filter(&prod(|p, _| p * p)),
            filter(&prod(|_, q| q * q)),
            filter(&prod(|p, q| p * q)),
        );
        let mut acc = 0.0;
        for i in 0..oh * ow {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let (va, vb, cov) = (aa[i] - ma * ma, bb[i] - mb * mb, ab[i] - ma * mb);
            acc += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
        }
        total += acc / (oh * ow) as f64;
    }
    Ok(total / c as f64)
}

/// Per-image SSIM of a batch in `[-1, 1]` against a reference batch (or one shared reference).
pub fn ssim_batch(x: &Tensor, reference: &Tensor) -> Result<Vec<f64>> {
    per_image(x, reference, ssim)
}

fn per_image(
    x: &Tensor,
    reference: &Tensor,
    metric: impl Fn(&[f64], &[f64], (usize, usize, usize)) -> Result<f64>,
) -> Result<Vec<f64>> {
    let (b, c, h, w) = dims4(x, "metric input")?;
    let (rb, rc, rh, rw) = dims4(reference, "metric reference")?;
    if (rc, rh, rw) != (c, h, w) || (rb != b && rb != 1) {
        return Err(Error::shape(
            "metric reference",
            format!("[{b} or 1, {c}, {h}, {w}]"),
            format!("[{rb}, {rc}, {rh}, {rw}]"),
        ));
    }
    let to_unit = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(columns_from_batch(t)?
            .as_slice()
            .iter()
            .map(|v| ((v + 1.0) / 2.0).clamp(0.0, 1.0))
            .collect())
    };
    let (xs, rs) = (to_unit(x)?, to_unit(reference)?);
    let n = c * h * w;
    (0..b)
        .map(|i| {
            let ri = if rb == 1 { 0 } else { i };
            metric(
                &xs[i * n..(i + 1) * n],
                &rs[ri * n..(ri + 1) * n],
                (c, h, w),
            )
        })
        .collect()
}

/// Squared Euclidean distances between the columns of `a` and of `b`.
fn squared_distances(a: &DMatrix<f64>, b: &DMatrix<f64>) -> DMatrix<f64> {
    let na: Vec<f64> = a.column_iter().map(|c| c.norm_squared()).collect();
    let nb: Vec<f64> = b.column_iter().map(|c| c.norm_squared()).collect();
    let mut d = a.transpose() * b * -2.0;
    for i in 0..d.nrows() {
        for j in 0..d.ncols() {
            d[(i, j)] = (d[(i, j)] + na[i] + nb[j]).max(0.0);
        }
    }
    d
}

/// The median-heuristic bandwidth `ℓ`: the median Euclidean distance between distinct points of
/// the pooled sample (each set thinned to at most 1000 evenly spaced points).
pub fn median_bandwidth(x: &DMatrix<f64>, y: &DMatrix<f64>) -> f64 {
    let thin = |m: &DMatrix<f64>| -> DMatrix<f64> {
        let stride = m.ncols().div_ceil(1000).max(1);
        let cols: Vec<_> = (0..m.ncols())
            .step_by(stride)
            .map(|j| m.column(j).into_owned())
            .collect();
        DMatrix::from_columns(&cols)
    };
    let pooled = {
        let (a, b) = (thin(x), thin(y));
        let cols: Vec<_> = a
            .column_iter()
            .chain(b.column_iter())
            .map(nalgebra::Matrix::into_owned)
            .collect();
        DMatrix::from_columns(&cols)
    };
    let d2 = squared_distances(&pooled, &pooled);
    let n = pooled.ncols();
    let mut upper: Vec<f64> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .map(|(i, j)| d2[(i, j)])
        .collect();
    if upper.is_empty() {
        return 1.0;
    }
    let mid = upper.len() / 2;
    let (_, m, _) = upper.select_nth_unstable_by(mid, f64::total_cmp);
    m.sqrt().max(f64::MIN_POSITIVE)
}

/// Unbiased MMD² (U-statistic) between the columns of `x` and `y` with the Gaussian kernel
/// `exp(−‖u − v‖²/(2ℓ²))` and `ℓ` by the median heuristic. May be negative.
pub fn mmd2_unbiased(x: &DMatrix<f64>, y: &DMatrix<f64>) -> Result<f64> {
    mmd2_unbiased_with_bandwidth(x, y, median_bandwidth(x, y))
}

/// Unbiased MMD² with a given bandwidth `ℓ`.
pub fn mmd2_unbiased_with_bandwidth(x: &DMatrix<f64>, y: &DMatrix<f64>, ell: f64) -> Result<f64> {
    if x.nrows() != y.nrows() {
        return Err(Error::shape("MMD point dimension", x.nrows(), y.nrows()));
    }
    let (n, m) = (x.ncols(), y.ncols());
    if n < 2 || m < 2 {
        return Err(Error::invalid(
            "MMD sample size",
            format!("{n} and {m}"),
            "need at least 2 points per set",
        ));
    }
    if !(ell > 0.0 && ell.is_finite()) {
        return Err(Error::invalid("MMD bandwidth", ell, "must be positive"));
    }
    let k = |d2: f64| (-d2 / (2.0 * ell * ell)).exp();
    let off_diagonal_mean = |a: &DMatrix<f64>| -> f64 {
        let d2 = squared_distances(a, a);
        let p = a.ncols();
        let mut s = 0.0;
        for i in 0..p {
            for j in 0..p {
                if i != j {
                    s += k(d2[(i, j)]);
                }
            }
        }
        s / (p * (p - 1)) as f64
    };
    let cross = squared_distances(x, y).map(k).sum() / (n * m) as f64;
    Ok(off_diagonal_mean(x) + off_diagonal_mean(y) - 2.0 * cross)
}

/// Fréchet distance between Gaussians fitted to the columns of `x` and `y` (the formula of FID,
/// Heusel et al. 2017): `‖μx − μy‖² + tr Σx + tr Σy − 2 tr (Σx^½ Σy Σx^½)^½`, with unbiased
/// covariances. The matrix square roots use symmetric eigendecompositions (negative round-off
/// eigenvalues clipped to 0), so it stays finite for rank-deficient covariances.
pub fn frechet_distance(x: &DMatrix<f64>, y: &DMatrix<f64>) -> Result<f64> {
    check_sets("Fréchet distance", x, y)?;
    let (mx, cx) = mean_and_covariance(x);
    let (my, cy) = mean_and_covariance(y);
    let sqrt_x = psd_sqrt(&cx);
    let inner = &sqrt_x * &cy * &sqrt_x;
    let inner = (&inner + inner.transpose()) * 0.5;
    let cross: f64 = inner
        .symmetric_eigenvalues()
        .iter()
        .map(|&l| l.max(0.0).sqrt())
        .sum();
    Ok(((mx - my).norm_squared() + cx.trace() + cy.trace() - 2.0 * cross).max(0.0))
}

/// Kernel inception distance's estimator (Bińkowski et al. 2018) on any features: the unbiased
/// MMD² with the cubic polynomial kernel `k(u, v) = (uᵀv/d + 1)³`. May be negative.
pub fn kid(x: &DMatrix<f64>, y: &DMatrix<f64>) -> Result<f64> {
    check_sets("KID", x, y)?;
    let d = x.nrows() as f64;
    let k = |g: DMatrix<f64>| g.map(|v| (v / d + 1.0).powi(3));
    let off_diagonal_mean = |g: DMatrix<f64>| -> f64 {
        let p = g.nrows();
        (g.sum() - g.trace()) / (p * (p - 1)) as f64
    };
    let (n, m) = (x.ncols(), y.ncols());
    let kxx = off_diagonal_mean(k(x.transpose() * x));
    let kyy = off_diagonal_mean(k(y.transpose() * y));
    let kxy = k(x.transpose() * y).sum() / (n * m) as f64;
    Ok(kxx + kyy - 2.0 * kxy)
}

fn check_sets(what: &str, x: &DMatrix<f64>, y: &DMatrix<f64>) -> Result<()> {
    if x.nrows() != y.nrows() {
        return Err(Error::shape(
            format!("{what} point dimension"),
            x.nrows(),
            y.nrows(),
        ));
    }
    if x.ncols() < 2 || y.ncols() < 2 {
        return Err(Error::invalid(
            "sample size",
            format!("{} and {}", x.ncols(), y.ncols()),
            "need at least 2 points per set",
        ));
    }
    Ok(())
}

fn mean_and_covariance(x: &DMatrix<f64>) -> (nalgebra::DVector<f64>, DMatrix<f64>) {
    let n = x.ncols();
    let mean = x.column_mean();
    let mut centred = x.clone();
    for mut c in centred.column_iter_mut() {
        c -= &mean;
    }
    let cov = &centred * centred.transpose() / (n - 1) as f64;
    (mean, cov)
}

/// The square root of a symmetric positive semi-definite matrix.
fn psd_sqrt(a: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (a + a.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots) * eig.eigenvectors.transpose()
}

/// Which CRPS ensemble estimator to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrpsForm {
    /// Spread term `1/(2M(M−1)) Σ|x_i − x_j|`: unbiased for the CRPS of the sampling distribution.
    Fair,
    /// Spread term `1/(2M²) Σ|x_i − x_j|`: the CRPS of the empirical ensemble.
    Plain,
}

/// CRPS of an ensemble (the columns of `samples`, `d × M`) against `truth` (length `d`), per
/// coordinate, averaged over coordinates:
/// `(1/M)Σ_i|x_i − z| − c Σ_{i,j}|x_i − x_j|` with `c` set by `form`.
pub fn crps(samples: &DMatrix<f64>, truth: &[f64], form: CrpsForm) -> Result<f64> {
    let (d, m) = samples.shape();
    if truth.len() != d {
        return Err(Error::shape("CRPS truth", d, truth.len()));
    }
    if m == 0 || (form == CrpsForm::Fair && m < 2) {
        return Err(Error::invalid(
            "CRPS ensemble size",
            m,
            "the fair CRPS needs at least 2 samples",
        ));
    }
    let spread_scale = match form {
        CrpsForm::Fair => 1.0 / (2.0 * (m * (m - 1)) as f64),
        CrpsForm::Plain => 1.0 / (2.0 * (m * m) as f64),
    };
    let mut total = 0.0;
    let mut row = vec![0.0; m];
    for (i, &z) in truth.iter().enumerate() {
        for (j, r) in row.iter_mut().enumerate() {
            *r = samples[(i, j)];
        }
        let skill = row.iter().map(|v| (v - z).abs()).sum::<f64>() / m as f64;
        row.sort_by(f64::total_cmp);
        // Σ_{i,j}|x_i − x_j| = 2 Σ_k x_(k) (2k − M + 1) over the sorted ensemble (0-based k).
        let spread: f64 = 2.0
            * row
                .iter()
                .enumerate()
                .map(|(k, v)| v * (2.0 * k as f64 - m as f64 + 1.0))
                .sum::<f64>();
        total += skill - spread_scale * spread;
    }
    Ok(total / d as f64)
}
