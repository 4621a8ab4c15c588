//! A Gaussian-mixture prior `Σ_k w_k N(m_k, C_k)` over small images, for which everything the
//! samplers approximate is closed form (eps-method.md §8):
//!
//! - the denoiser under any Gaussian noise `u = x0 + N(0, S)`: responsibilities
//!   `r_k ∝ w_k N(u; m_k, C_k + S)` and mean `Σ_k r_k (m_k + C_k (C_k + S)⁻¹ (u − m_k))`;
//!   with `S = σ² I` it is the unconditional denoiser, with `S = Σ*` the EPS posterior denoiser;
//! - its Jacobian, `J = Cov[x0 | u] S⁻¹` (Tweedie), for the DPS and ΠGDM baselines;
//! - the exact posterior `p(x0 | y)`, again a Gaussian mixture.
//!
//! Dense linear algebra in `f64`; meant for images of a few dozen pixels.

use std::sync::Arc;

use candle_core::Tensor;
use nalgebra::{Cholesky, DMatrix, DVector, Dyn};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rand_distr::{Distribution as _, StandardNormal};

use crate::inverse::dense::{batch_from_columns, columns_from_batch, forward_matrix};
use crate::inverse::{Problem, dims4};
use crate::sampler::{Denoiser, PosteriorDenoiser};
use crate::{Error, Result};

/// A Gaussian mixture over `C × H × W` images (flattened in `[C, H, W]` order).
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    chw: (usize, usize, usize),
    weights: Vec<f64>,
    means: Vec<DVector<f64>>,
    covs: Vec<DMatrix<f64>>,
}

/// A square root `R` with `R Rᵀ = C`, from the symmetric eigendecomposition (robust to a
/// positive-semidefinite `C`).
fn psd_sqrt(c: &DMatrix<f64>) -> DMatrix<f64> {
    let sym = (c + c.transpose()) * 0.5;
    let eig = sym.symmetric_eigen();
    let roots = eig.eigenvalues.map(|l| l.max(0.0).sqrt());
    &eig.eigenvectors * DMatrix::from_diagonal(&roots)
}

fn cholesky(m: DMatrix<f64>, what: &str) -> Result<Cholesky<f64, Dyn>> {
    Cholesky::new(m).ok_or_else(|| Error::Unsupported(format!("{what} is not positive definite")))
}

impl GaussianMixture {
    /// A mixture from its parts; weights are normalised, covariances must be positive definite.
    pub fn new(
        chw: (usize, usize, usize),
        weights: Vec<f64>,
        means: Vec<DVector<f64>>,
        covs: Vec<DMatrix<f64>>,
    ) -> Result<Self> {
        let d = chw.0 * chw.1 * chw.2;
        let k = weights.len();
        if k == 0 || means.len() != k || covs.len() != k {
            return Err(Error::shape(
                "mixture components",
                k,
                format!("{} means, {} covariances", means.len(), covs.len()),
            ));
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || weights.iter().sum::<f64>() <= 0.0
        {
            return Err(Error::invalid(
                "mixture weights",
                format!("{weights:?}"),
                "must be ≥ 0 with a positive sum",
            ));
        }
        for (m, c) in means.iter().zip(&covs) {
            if m.len() != d || c.nrows() != d || c.ncols() != d {
                return Err(Error::shape(
                    "mixture component",
                    d,
                    format!("mean {} cov {}×{}", m.len(), c.nrows(), c.ncols()),
                ));
            }
        }
        let total: f64 = weights.iter().sum();
        Ok(Self {
            chw,
            weights: weights.into_iter().map(|w| w / total).collect(),
            means,
            covs,
        })
    }

    /// A seeded mixture of `k` image-like components: smooth means and squared-exponential
    /// covariances of different length scales (plus a small nugget), values mostly in [-1, 1].
    pub fn synthetic(chw: (usize, usize, usize), k: usize, seed: u64) -> Result<Self> {
        let (c, h, w) = chw;
        let d = c * h * w;
        let mut rng = StdRng::seed_from_u64(seed);
        let coords: Vec<(f64, f64, f64)> = (0..d)
            .map(|i| ((i / (h * w)) as f64, ((i / w) % h) as f64, (i % w) as f64))
            .collect();
        let mut weights = Vec::with_capacity(k);
        let mut means = Vec::with_capacity(k);
        let mut covs = Vec::with_capacity(k);
        for j in 0..k {
            weights.push(1.0 + rng.random::<f64>());
            let length = 1.0 + 2.5 * (j as f64 + rng.random::<f64>()) / k.max(1) as f64;
            let scale = 0.22 + 0.12 * rng.random::<f64>();
            let (fy, fx, phase): (f64, f64, f64) = (rng.random(), rng.random(), rng.random());
            let level = 0.6 * (rng.random::<f64>() - 0.5);
            means.push(DVector::from_iterator(
                d,
                coords.iter().map(|&(ch, y, x)| {
                    let wave = (std::f64::consts::TAU
                        * (fy * y / h as f64 + fx * x / w as f64 + phase))
                        .sin();
                    level + 0.35 * wave - 0.1 * ch
                }),
            ));
            let mut cov = DMatrix::from_fn(d, d, |a, b| {
                let (ca, ya, xa) = coords[a];
                let (cb, yb, xb) = coords[b];
                let r2 = (ya - yb).powi(2) + (xa - xb).powi(2);
                let channel = if ca == cb { 1.0 } else { 0.8 };
                scale * scale * channel * (-r2 / (2.0 * length * length)).exp()
            });
            for i in 0..d {
                cov[(i, i)] += 1e-3;
            }
            covs.push(cov);
        }
        Self::new(chw, weights, means, covs)
    }

    /// Image shape `(C, H, W)`.
    pub fn chw(&self) -> (usize, usize, usize) {
        self.chw
    }

    /// Dimension `C·H·W`.
    pub fn dim(&self) -> usize {
        self.chw.0 * self.chw.1 * self.chw.2
    }

    /// Component weights (sum to one).
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The mixture mean `Σ_k w_k m_k`.
    pub fn mean(&self) -> DVector<f64> {
        self.weights
            .iter()
            .zip(&self.means)
            .fold(DVector::zeros(self.dim()), |acc, (w, m)| acc + m * *w)
    }

    /// `n` independent draws as the columns of a `d × n` matrix.
    pub fn sample(&self, n: usize, seed: u64) -> DMatrix<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let roots: Vec<DMatrix<f64>> = self.covs.iter().map(psd_sqrt).collect();
        let d = self.dim();
        let mut out = DMatrix::zeros(d, n);
        for j in 0..n {
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut k = self.weights.len() - 1;
            for (i, w) in self.weights.iter().enumerate() {
                acc += w;
                if u < acc {
                    k = i;
                    break;
                }
            }
            let z = DVector::from_iterator(d, (0..d).map(|_| StandardNormal.sample(&mut rng)));
            out.set_column(j, &(&self.means[k] + &roots[k] * z));
        }
        out
    }

    /// `n` draws as a `[n, C, H, W]` tensor on the device and with the dtype of `like`.
    pub fn sample_tensor(&self, n: usize, seed: u64, like: &Tensor) -> Result<Tensor> {
        batch_from_columns(&self.sample(n, seed), self.chw, like)
    }

    /// `E[x0 | u]` for `u = x0 + N(0, S)`, per column of `u`, and the responsibilities.
    fn posterior_parts(&self, u: &DMatrix<f64>, s: &DMatrix<f64>) -> Result<Parts> {
        let n = u.ncols();
        let kk = self.weights.len();
        let mut logits = DMatrix::zeros(kk, n);
        let mut comp_means = Vec::with_capacity(kk);
        let mut chols = Vec::with_capacity(kk);
        for k in 0..kk {
            let chol = cholesky(&self.covs[k] + s, "prior covariance plus noise covariance")?;
            let logdet: f64 = 2.0
                * chol
                    .l_dirty()
                    .diagonal()
                    .iter()
                    .map(|v| v.ln())
                    .sum::<f64>();
            let mut diff = u.clone();
            for mut col in diff.column_iter_mut() {
                col -= &self.means[k];
            }
            let sol = chol.solve(&diff);
            for j in 0..n {
                let quad = diff.column(j).dot(&sol.column(j));
                logits[(k, j)] = self.weights[k].ln() - 0.5 * quad - 0.5 * logdet;
            }
            let mut mk = &self.covs[k] * &sol;
            for mut col in mk.column_iter_mut() {
                col += &self.means[k];
            }
            comp_means.push(mk);
            chols.push(chol);
        }
        let mut resp = logits;
        for mut col in resp.column_iter_mut() {
            let max = col.max();
            col.apply(|v| *v = (*v - max).exp());
            let sum = col.sum();
            col /= sum;
        }
        let mut mean = DMatrix::zeros(u.nrows(), n);
        for (k, mk) in comp_means.iter().enumerate() {
            for j in 0..n {
                let r = resp[(k, j)];
                let mut col = mean.column_mut(j);
                col.axpy(r, &mk.column(j), 1.0);
            }
        }
        Ok(Parts {
            mean,
            resp,
            comp_means,
            chols,
        })
    }

    /// The denoiser under Gaussian noise of covariance `s`: `E[x0 | u]` for each column of `u`.
    pub fn denoise_with_covariance(
        &self,
        u: &DMatrix<f64>,
        s: &DMatrix<f64>,
    ) -> Result<DMatrix<f64>> {
        Ok(self.posterior_parts(u, s)?.mean)
    }

    /// The per-coordinate posterior variance `diag Cov[x0 | u]` under Gaussian noise of
    /// covariance `s`, for the first column of `u`: `Σ_k r_k (diag P_k + μ_k²) − D²` with
    /// `P_k = C_k − C_k (C_k + S)⁻¹ C_k`.
    pub fn denoise_variance_with_covariance(
        &self,
        u: &DMatrix<f64>,
        s: &DMatrix<f64>,
    ) -> Result<DVector<f64>> {
        let parts = self.posterior_parts(&u.columns(0, 1).into_owned(), s)?;
        let d = self.dim();
        let mut second = DVector::<f64>::zeros(d);
        for (k, chol) in parts.chols.iter().enumerate() {
            let p = &self.covs[k] - &self.covs[k] * chol.solve(&self.covs[k]);
            let r = parts.resp[(k, 0)];
            let mk = parts.comp_means[k].column(0);
            for i in 0..d {
                second[i] += r * (p[(i, i)] + mk[i] * mk[i]);
            }
        }
        let mean = parts.mean.column(0);
        Ok(DVector::from_fn(d, |i, _| second[i] - mean[i] * mean[i]))
    }

    /// The isotropic denoiser and `J v` (per column), `J = Cov[x0 | u]/σ²` (symmetric), where
    /// `Cov[x0 | u] = Σ_k r_k (P_k + μ_k μ_kᵀ) − D Dᵀ` and `P_k = C_k − C_k (C_k + σ²I)⁻¹ C_k`.
    pub fn denoise_jvp(
        &self,
        u: &DMatrix<f64>,
        sigma: f64,
        v: &DMatrix<f64>,
    ) -> Result<(DMatrix<f64>, DMatrix<f64>)> {
        let d = self.dim();
        let s = DMatrix::identity(d, d) * (sigma * sigma);
        let parts = self.posterior_parts(u, &s)?;
        let n = u.ncols();
        let mut jv = DMatrix::zeros(d, n);
        for (k, chol) in parts.chols.iter().enumerate() {
            let cv = &self.covs[k] * v;
            let pv = &cv - &self.covs[k] * chol.solve(&cv);
            for j in 0..n {
                let r = parts.resp[(k, j)];
                let mk = parts.comp_means[k].column(j);
                let proj = mk.dot(&v.column(j));
                let mut col = jv.column_mut(j);
                col.axpy(r, &pv.column(j), 1.0);
                col.axpy(r * proj, &mk, 1.0);
            }
        }
        for j in 0..n {
            let dj = parts.mean.column(j);
            let proj = dj.dot(&v.column(j));
            let mut col = jv.column_mut(j);
            col.axpy(-proj, &dj, 1.0);
        }
        Ok((parts.mean, jv / (sigma * sigma)))
    }

    /// The exact posterior `p(x0 | y)` for `y = A x0 + N(0, σ_y² I)` with a dense `A` (`m × d`):
    /// `G_k = C_k Aᵀ(A C_k Aᵀ + σ_y² I)⁻¹`, means `m_k + G_k(y − A m_k)`, covariances
    /// `C_k − G_k A C_k`, weights `∝ w_k N(y; A m_k, A C_k Aᵀ + σ_y² I)`.
    pub fn posterior(&self, a: &DMatrix<f64>, y: &DVector<f64>, sigma_y: f64) -> Result<Self> {
        let m = a.nrows();
        if a.ncols() != self.dim() || y.len() != m {
            return Err(Error::shape(
                "exact posterior",
                format!("A {m}×{}", self.dim()),
                format!("A {}×{}, y {}", a.nrows(), a.ncols(), y.len()),
            ));
        }
        let mut logw = Vec::new();
        let mut means = Vec::new();
        let mut covs = Vec::new();
        for k in 0..self.weights.len() {
            let ca = &self.covs[k] * a.transpose();
            let s = a * &ca + DMatrix::identity(m, m) * (sigma_y * sigma_y);
            let chol = cholesky(s, "the measurement covariance A C Aᵀ + σ_y² I")?;
            let resid = y - a * &self.means[k];
            let sol = chol.solve(&resid);
            let logdet: f64 = 2.0
                * chol
                    .l_dirty()
                    .diagonal()
                    .iter()
                    .map(|v| v.ln())
                    .sum::<f64>();
            logw.push(self.weights[k].ln() - 0.5 * resid.dot(&sol) - 0.5 * logdet);
            means.push(&self.means[k] + &ca * sol);
            // C − C Aᵀ S⁻¹ A C, symmetrised against round-off.
            let cov = &self.covs[k] - &ca * chol.solve(&ca.transpose());
            covs.push((&cov + cov.transpose()) * 0.5);
        }
        let max = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights = logw.iter().map(|l| (l - max).exp()).collect();
        Self::new(self.chw, weights, means, covs)
    }
}

struct Parts {
    mean: DMatrix<f64>,
    resp: DMatrix<f64>,
    comp_means: Vec<DMatrix<f64>>,
    chols: Vec<Cholesky<f64, Dyn>>,
}

/// The mixture as an unconditional denoiser (`S = σ² I`), with an exact vector–Jacobian product.
impl Denoiser for GaussianMixture {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let u = columns_from_batch(x)?;
        let d = self.dim();
        let out = self.denoise_with_covariance(&u, &(DMatrix::identity(d, d) * (sigma * sigma)))?;
        batch_from_columns(&out, self.chw, x)
    }

    fn denoise_vjp(
        &self,
        x: &Tensor,
        sigma: f64,
        cotangent: &mut dyn FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let u = columns_from_batch(x)?;
        let d = self.dim();
        let mean =
            self.denoise_with_covariance(&u, &(DMatrix::identity(d, d) * (sigma * sigma)))?;
        let x0 = batch_from_columns(&mean, self.chw, x)?;
        let v = columns_from_batch(&cotangent(&x0)?)?;
        // J is symmetric for isotropic noise, so Jᵀv = J v.
        let (_, jv) = self.denoise_jvp(&u, sigma, &v)?;
        Ok((x0, batch_from_columns(&jv, self.chw, x)?))
    }
}

/// The exact EPS posterior denoiser for a mixture prior: `D_{Σ*}(μ*)` with
/// `Σ* = (I/σ² + AᵀA/σ_y²)⁻¹` built from the operator's dense matrix (independently of the
/// structured pivot code it is used to check).
#[derive(Debug, Clone)]
pub struct GmmPosteriorOracle {
    prior: Arc<GaussianMixture>,
    gram: DMatrix<f64>,
    sigma_y: f64,
}

impl GmmPosteriorOracle {
    /// The oracle for `problem`'s operator and σ_y (σ_y must be positive).
    pub fn new(prior: Arc<GaussianMixture>, problem: &Problem) -> Result<Self> {
        if problem.sigma_y() <= 0.0 {
            return Err(Error::invalid(
                "σ_y",
                problem.sigma_y(),
                "the dense oracle needs σ_y > 0",
            ));
        }
        if problem.image_chw() != prior.chw() {
            return Err(Error::shape(
                "oracle",
                format!("{:?}", prior.chw()),
                format!("{:?}", problem.image_chw()),
            ));
        }
        let a = forward_matrix(problem.operator(), prior.chw())?;
        Ok(Self {
            prior,
            gram: a.transpose() * a,
            sigma_y: problem.sigma_y(),
        })
    }

    /// `Σ*(σ)` as a dense matrix.
    pub fn sigma_star(&self, sigma: f64) -> Result<DMatrix<f64>> {
        let d = self.gram.nrows();
        let precision =
            DMatrix::identity(d, d) / (sigma * sigma) + &self.gram / (self.sigma_y * self.sigma_y);
        precision
            .try_inverse()
            .ok_or_else(|| Error::Unsupported("Σ* precision is singular".into()))
    }
}

impl PosteriorDenoiser for GmmPosteriorOracle {
    fn denoise(&self, mu: &Tensor, _problem: &Problem, sigma: f64) -> Result<Tensor> {
        dims4(mu, "oracle μ*")?;
        let u = columns_from_batch(mu)?;
        let out = self
            .prior
            .denoise_with_covariance(&u, &self.sigma_star(sigma)?)?;
        batch_from_columns(&out, self.prior.chw(), mu)
    }
}
