//! Super-resolution on the photo's own patches, exact for the patch prior.
//!
//! For average pooling by `s` (`A = avgpool_s`, [`crate::inverse::AvgPoolSr`]) the pivot's
//! precision is `Λ = I/σ² + P/(s²σ_y²)`, where `P` replaces each `s × s` block by its mean. In an
//! orthonormal basis of each block whose first vector is the constant `1/s` (the 2-D DCT-II),
//! `Λ` is diagonal: `1/σ² + 1/(s²σ_y²)` on the first (DC) coefficient of every block and colour,
//! `1/σ²` on the `s² − 1` others. Rearranged so that each block is one pixel with `3s²`
//! channels ([`to_blocks`]), the pivot's noise is diagonal per value and the patch denoiser
//! (with one precision per value) is the exact posterior mean of the patch prior of that
//! domain: no stand-in for `Σ*`.
//!
//! The bank is cross-scale. A small photo holds no high-resolution patches of itself, but
//! natural photos repeat their patches across scales (Glasner, Bagon and Irani, ICCV 2009), so
//! the bank reads the measured photo's own `(p·s) × (p·s)` windows as high-resolution patches,
//! at every one of the `s²` phases of the block grid. The measurement is cleaned first
//! (non-local means at the estimated noise level), as the fill's bank is.

use candle_core::Tensor;

use super::bank::{Bank, Plane, Transforms};
use super::denoise::{PatchConfig, PatchDenoiser};
use crate::inverse::{Problem, Structure};
use crate::sampler::PosteriorDenoiser;
use crate::{Error, Result};

/// The kernel's width on the DC channels in units of `s·σ_y` (the measurement noise of a DC
/// coefficient): at 3 the measured block means carry 9/10 of the posterior's weight where no
/// bank patch has them.
pub const DC_WIDTH: f64 = 3.0;

/// The orthonormal 1-D DCT-II of size `s` (row `k` is basis vector `k`; row 0 is `1/√s`).
fn dct(s: usize) -> Vec<f32> {
    let mut c = vec![0.0_f32; s * s];
    for k in 0..s {
        let a = if k == 0 {
            (1.0 / s as f64).sqrt()
        } else {
            (2.0 / s as f64).sqrt()
        };
        for n in 0..s {
            let v =
                a * (std::f64::consts::PI * (2 * n + 1) as f64 * k as f64 / (2 * s) as f64).cos();
            c[k * s + n] = v as f32;
        }
    }
    c
}

/// An image (`H × W × C`, both sides multiples of `s`) in the block basis: one pixel per
/// `s × s` block, channel `(ky·s + kx)·C + c` holding DCT coefficient `(ky, kx)` of colour `c`.
/// Channels `0..C` are the DC coefficients, `s` times each block's mean.
pub fn to_blocks(img: &Plane, s: usize) -> Result<Plane> {
    let (w, h, c) = (img.width, img.height, img.channels);
    if s == 0 || !w.is_multiple_of(s) || !h.is_multiple_of(s) {
        return Err(Error::shape(
            "image for the block basis",
            format!("sides divisible by {s}"),
            format!("{w}×{h}"),
        ));
    }
    let d = dct(s);
    let (bw, bh, bc) = (w / s, h / s, c * s * s);
    let mut out = vec![0.0_f32; bw * bh * bc];
    let mut rows = vec![0.0_f32; s * s * c];
    for by in 0..bh {
        for bx in 0..bw {
            // Along x first: rows[(y·s + kx)·c + ch].
            rows.fill(0.0);
            for y in 0..s {
                for x in 0..s {
                    let px = &img.data[((by * s + y) * w + bx * s + x) * c..][..c];
                    for kx in 0..s {
                        let f = d[kx * s + x];
                        for (ch, v) in px.iter().enumerate() {
                            rows[(y * s + kx) * c + ch] += f * v;
                        }
                    }
                }
            }
            let o = &mut out[(by * bw + bx) * bc..][..bc];
            for ky in 0..s {
                for y in 0..s {
                    let f = d[ky * s + y];
                    for kx in 0..s {
                        for ch in 0..c {
                            o[(ky * s + kx) * c + ch] += f * rows[(y * s + kx) * c + ch];
                        }
                    }
                }
            }
        }
    }
    Plane::from_data(bw, bh, bc, out)
}

/// The inverse of [`to_blocks`]: a block-basis image back to `C`-channel pixels.
pub fn from_blocks(blocks: &Plane, s: usize, channels: usize) -> Result<Plane> {
    let (bw, bh, bc) = (blocks.width, blocks.height, blocks.channels);
    let c = channels;
    if s == 0 || c == 0 || bc != c * s * s {
        return Err(Error::shape(
            "block-basis image",
            format!("{} channels", c * s * s),
            bc,
        ));
    }
    let d = dct(s);
    let (w, h) = (bw * s, bh * s);
    let mut out = vec![0.0_f32; w * h * c];
    let mut rows = vec![0.0_f32; s * s * c];
    for by in 0..bh {
        for bx in 0..bw {
            let coef = &blocks.data[(by * bw + bx) * bc..][..bc];
            // Along y first: rows[(y·s + kx)·c + ch].
            rows.fill(0.0);
            for ky in 0..s {
                for y in 0..s {
                    let f = d[ky * s + y];
                    for kx in 0..s {
                        for ch in 0..c {
                            rows[(y * s + kx) * c + ch] += f * coef[(ky * s + kx) * c + ch];
                        }
                    }
                }
            }
            for y in 0..s {
                for x in 0..s {
                    let px = &mut out[((by * s + y) * w + bx * s + x) * c..][..c];
                    for kx in 0..s {
                        let f = d[kx * s + x];
                        for (ch, v) in px.iter_mut().enumerate() {
                            *v += f * rows[(y * s + kx) * c + ch];
                        }
                    }
                }
            }
        }
    }
    Plane::from_data(w, h, c, out)
}

/// The cross-scale bank: every `(p·s) × (p·s)` window of `exemplars` (the cleaned measurement,
/// read as high-resolution pixels) in the block basis, at all `s²` phases of the block grid.
pub fn cross_scale_bank(exemplars: &Plane, s: usize, patch: usize) -> Result<Bank> {
    let mut phases = Vec::with_capacity(s * s);
    for a in 0..s {
        for b in 0..s {
            let w = (exemplars.width.saturating_sub(b) / s) * s;
            let h = (exemplars.height.saturating_sub(a) / s) * s;
            if w < patch * s || h < patch * s {
                continue;
            }
            let c = exemplars.channels;
            let mut data = Vec::with_capacity(w * h * c);
            for y in 0..h {
                let row = ((a + y) * exemplars.width + b) * c;
                data.extend_from_slice(&exemplars.data[row..row + w * c]);
            }
            phases.push(to_blocks(&Plane::from_data(w, h, c, data)?, s)?);
        }
    }
    let holes: Vec<Vec<bool>> = phases
        .iter()
        .map(|p| vec![false; p.width * p.height])
        .collect();
    let sources: Vec<(&Plane, &[bool])> = phases
        .iter()
        .zip(&holes)
        .map(|(p, h)| (p, h.as_slice()))
        .collect();
    let bank = Bank::from_sources(&sources, patch, Transforms::NONE)?;
    if bank.is_empty() {
        return Err(Error::invalid(
            "photo size for super-resolution from its own patches",
            format!("{}×{}", exemplars.width, exemplars.height),
            format!(
                "needs at least {0}×{0} pixels; use the network prior",
                patch * s
            ),
        ));
    }
    Ok(bank)
}

/// The patch prior's posterior denoiser for super-resolution ×`s` of one image size: the pivot
/// in the block basis, denoised under its exact (diagonal) noise there.
#[derive(Debug)]
pub struct PatchSr {
    inner: PatchDenoiser,
    factor: usize,
}

impl PatchSr {
    /// A denoiser for `width × height` high-resolution images (multiples of `factor`) whose
    /// prior is the patches of `exemplars` (`[-1, 1]`, channels last), `cfg.patch` blocks wide.
    pub fn new(
        exemplars: &Plane,
        factor: usize,
        cfg: PatchConfig,
        (width, height): (usize, usize),
    ) -> Result<Self> {
        if factor < 2 {
            return Err(Error::invalid(
                "super-resolution factor",
                factor,
                "must be at least 2",
            ));
        }
        if !width.is_multiple_of(factor) || !height.is_multiple_of(factor) {
            return Err(Error::shape(
                format!("image for super-resolution ×{factor}"),
                format!("sides divisible by {factor}"),
                format!("{width}×{height}"),
            ));
        }
        let bank = cross_scale_bank(exemplars, factor, cfg.patch)?;
        let inner = PatchDenoiser::new(bank, cfg, (width / factor, height / factor), None)?;
        Ok(Self { inner, factor })
    }

    /// The denoiser in the block basis.
    pub fn inner(&self) -> &PatchDenoiser {
        &self.inner
    }

    /// The pivot's noise variance of each value in the block basis at noise level `sigma`
    /// (`σ_m²` on the DC channels, `σ²` on the others), one block's worth (`3s²` values).
    pub fn block_variance(&self, sigma: f64, sigma_y: f64, channels: usize) -> Vec<f32> {
        let s = self.factor as f64;
        let s2 = sigma * sigma;
        let dc = if sigma_y > 0.0 {
            1.0 / (1.0 / s2 + 1.0 / (s * s * sigma_y * sigma_y))
        } else {
            0.0
        };
        let n = channels * self.factor * self.factor;
        (0..n)
            .map(|i| if i < channels { dc } else { s2 } as f32)
            .collect()
    }
}

impl PosteriorDenoiser for PatchSr {
    /// `E[x0 | μ*]` under the pivot's exact `Σ*`, which is diagonal in the block basis.
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        match problem.operator().structure() {
            Structure::SuperResolution(op) if op.factor() == self.factor => {}
            _ => {
                return Err(Error::Unsupported(format!(
                    "the patch prior's super-resolution denoiser ×{} got {}",
                    self.factor,
                    problem.operator().name()
                )));
            }
        }
        let (b, c, h, w) = mu.dims4()?;
        let xs = mu
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let sigma_y = problem.sigma_y();
        let block = self.block_variance(sigma, sigma_y, c);
        // The kernel is wider on the DC channels (τ_DC = 3·s·σ_y, [`DC_WIDTH`]), so the
        // measured block means win where no bank patch has them.
        // The denoiser takes one τ: its input variance on those channels is raised by
        // τ_DC² − τ² (the same weights as the wider kernel) and each estimate's gain is
        // corrected afterwards: D = m + g(u − m) gives m, then D' = m + g'(u − m).
        let tau2 = self.inner.config().tau_at(sigma).powi(2);
        let tau_dc2 = (DC_WIDTH * self.factor as f64 * sigma_y).powi(2).max(tau2);
        let shifted: Vec<f32> = block
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i < c {
                    (f64::from(v) + tau_dc2 - tau2) as f32
                } else {
                    v
                }
            })
            .collect();
        let gains: Vec<(f32, f32)> = (0..c)
            .map(|i| {
                let v = f64::from(block[i]);
                let g = tau2 / (tau2 + v + tau_dc2 - tau2).max(1e-20);
                let g_wide = tau_dc2 / (tau_dc2 + v).max(1e-20);
                (g as f32, g_wide as f32)
            })
            .collect();
        let (bw, bh) = (w / self.factor, h / self.factor);
        let s2: Vec<f32> = (0..bw * bh).flat_map(|_| shifted.iter().copied()).collect();
        let mut out = Vec::with_capacity(xs.len());
        for i in 0..b {
            let u = to_blocks(
                &Plane::from_chw(&xs[i * c * h * w..(i + 1) * c * h * w], (c, h, w)),
                self.factor,
            )?;
            let mut est = self.inner.estimate(&u, &s2, sigma, i)?;
            let bc = est.mean.channels;
            for (d, q) in est
                .mean
                .data
                .chunks_exact_mut(bc)
                .zip(u.data.chunks_exact(bc))
            {
                for (ch, &(g, g_wide)) in gains.iter().enumerate() {
                    let m = (d[ch] - g * q[ch]) / (1.0 - g).max(1e-6);
                    d[ch] = m + g_wide * (q[ch] - m);
                }
            }
            out.extend(from_blocks(&est.mean, self.factor, c)?.to_chw());
        }
        Ok(Tensor::from_vec(out, (b, c, h, w), mu.device())?.to_dtype(mu.dtype())?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_block_basis_is_orthonormal_and_inverts() {
        for s in [2, 3, 4] {
            let img = Plane::ramp(4 * s, 3 * s, 3);
            let b = to_blocks(&img, s).unwrap();
            // Orthonormal: the energy is kept.
            let e0: f32 = img.data.iter().map(|v| v * v).sum();
            let e1: f32 = b.data.iter().map(|v| v * v).sum();
            assert!((e0 - e1).abs() < 1e-3 * e0, "s = {s}: {e0} vs {e1}");
            let back = from_blocks(&b, s, 3).unwrap();
            for (x, y) in img.data.iter().zip(&back.data) {
                assert!((x - y).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn the_dc_channels_are_s_times_the_block_means() {
        let s = 4;
        let img = Plane::ramp(8, 8, 3);
        let b = to_blocks(&img, s).unwrap();
        for by in 0..2 {
            for bx in 0..2 {
                for ch in 0..3 {
                    let mut mean = 0.0;
                    for y in 0..s {
                        for x in 0..s {
                            mean += img.data[((by * s + y) * 8 + bx * s + x) * 3 + ch];
                        }
                    }
                    mean /= (s * s) as f32;
                    let dc = b.data[(by * 2 + bx) * b.channels + ch];
                    assert!((dc - s as f32 * mean).abs() < 1e-5);
                }
            }
        }
    }

    /// On an image of one block and a one-block patch there is one query and no averaging, so
    /// the denoiser must be the exact posterior mean of the Gaussian mixture with means the
    /// bank's windows and the kernel's covariance (`τ² I`, `(s·σ_y)²` along the block means),
    /// observed through the pivot's dense `Σ*`.
    #[test]
    fn one_block_equals_the_dense_gaussian_mixture_posterior() {
        use nalgebra::{DMatrix, DVector};
        use std::sync::Arc;
        let (s, c) = (2_usize, 3_usize);
        let n = s * s * c;
        let exemplars = Plane::ramp(5, 4, c);
        let cfg = PatchConfig {
            patch: 1,
            tau: 0.3,
            tau_per_sigma: 0.0,
            search: super::super::Search::Exact,
            ..PatchConfig::default()
        };
        let sr = PatchSr::new(&exemplars, s, cfg, (s, s)).unwrap();
        let (sigma, sigma_y) = (0.7_f64, 0.2_f64);
        let y = Tensor::from_vec(
            vec![0.3_f32, -0.2, 0.1],
            (1, c, 1, 1),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let op = crate::inverse::AvgPoolSr::new(s).unwrap();
        let problem = Problem::new(Arc::new(op), &y, sigma_y, (c, s, s)).unwrap();
        // A pivot (any point: the denoiser's input).
        let mu_chw: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.8).collect();
        let mu = Tensor::from_vec(mu_chw.clone(), (1, c, s, s), &candle_core::Device::Cpu).unwrap();
        let got = sr
            .denoise(&mu, &problem, sigma)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Dense, in channels-first pixel order: Λ = I/σ² + AᵀA/σ_y², A the block mean.
        let mut a = DMatrix::<f64>::zeros(c, n);
        for ch in 0..c {
            for k in 0..s * s {
                a[(ch, ch * s * s + k)] = 1.0 / (s * s) as f64;
            }
        }
        let lambda = DMatrix::<f64>::identity(n, n) / (sigma * sigma)
            + a.transpose() * &a / (sigma_y * sigma_y);
        // The kernel: τ² I, widened to τ_DC² = (s·σ_y)² along each colour's block mean.
        let tau_dc2 = (DC_WIDTH * s as f64 * sigma_y).powi(2);
        let mut kernel = DMatrix::<f64>::identity(n, n) * (cfg.tau * cfg.tau);
        for ch in 0..c {
            let dir = DVector::from_fn(n, |i, _| {
                if i / (s * s) == ch {
                    1.0 / s as f64
                } else {
                    0.0
                }
            });
            kernel += &dir * dir.transpose() * (tau_dc2 - cfg.tau * cfg.tau);
        }
        let cov = lambda.try_inverse().unwrap() + &kernel;
        let prec = cov.clone().try_inverse().unwrap();
        let u = DVector::from_iterator(n, mu_chw.iter().map(|&v| f64::from(v)));
        // Every s×s window of the exemplars, channels first.
        let mut means = Vec::new();
        for y0 in 0..=exemplars.height - s {
            for x0 in 0..=exemplars.width - s {
                means.push(DVector::from_fn(n, |i, _| {
                    let (ch, k) = (i / (s * s), i % (s * s));
                    let (dy, dx) = (k / s, k % s);
                    f64::from(exemplars.data[((y0 + dy) * exemplars.width + x0 + dx) * c + ch])
                }));
            }
        }
        assert_eq!(means.len(), sr.inner().bank().len());
        let logw: Vec<f64> = means
            .iter()
            .map(|b| {
                let d = &u - b;
                -0.5 * (d.transpose() * &prec * &d)[(0, 0)]
            })
            .collect();
        let max = logw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = logw.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = w.iter().sum();
        let gain = &kernel * &prec;
        let mut want = DVector::<f64>::zeros(n);
        for (b, wi) in means.iter().zip(&w) {
            want += (b + &gain * (&u - b)) * (wi / total);
        }
        for i in 0..n {
            assert!(
                (f64::from(got[i]) - want[i]).abs() < 1e-4,
                "value {i}: {} vs {}",
                got[i],
                want[i]
            );
        }
    }
}
