//! Two posterior denoisers fused pixel by pixel by their posterior variances.
//!
//! Each denoiser's estimate of `x0` at a pixel is read as a Gaussian with the denoiser's
//! posterior mean and variance there; the fused estimate is their product's mean, the
//! precision-weighted average
//!
//! ```text
//! D = (V_b D_a + V_a D_b) / (V_a + V_b),        V = V_a V_b / (V_a + V_b)
//! ```
//!
//! The patch denoiser's variance is closed form (it includes the disagreement of the
//! overlapping windows, so it is large on a seam). A network gives only its mean; its variance
//! follows from Tweedie's formula for anisotropic noise, `Cov[x0 | u] = Σ ∂D/∂u`, whose diagonal
//! `s_j² ∂D_j/∂u_j` is estimated by Hutchinson's probe with finite differences
//! ([`JacobianVariance::variance`]).

use std::sync::Mutex;

use candle_core::Tensor;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::inverse::{Interpolant, Problem};
use crate::sampler::PosteriorDenoiser;
use crate::{Error, Result};

/// Finite-difference step of the probe, as a fraction of each pixel's noise deviation.
const PROBE_STEP: f64 = 0.01;

/// Half-width of the box the probe's per-pixel estimates are averaged over: the posterior
/// variance varies slowly across the image, the probe's cross terms do not.
const PROBE_RADIUS: usize = 2;

/// A posterior denoiser that also returns its per-pixel posterior variance.
pub trait VarianceDenoiser: Send + Sync {
    /// `E[x0 | μ*]` (`[B, C, H, W]`) and, per batch element, `Var[x0_j | μ*]` per pixel
    /// (`H · W` values, averaged over channels).
    fn denoise_with_variance(
        &self,
        mu: &Tensor,
        problem: &Problem,
        sigma: f64,
    ) -> Result<(Tensor, Vec<Vec<f32>>)>;
}

impl VarianceDenoiser for super::PatchDenoiser {
    fn denoise_with_variance(
        &self,
        mu: &Tensor,
        problem: &Problem,
        sigma: f64,
    ) -> Result<(Tensor, Vec<Vec<f32>>)> {
        let mean = PosteriorDenoiser::denoise(self, mu, problem, sigma)?;
        let b = mu.dim(0)?;
        let variances = (0..b)
            .map(|slot| {
                self.last_variance(slot).ok_or_else(|| {
                    Error::invalid("patch denoiser", slot, "kept no variance for this image")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((mean, variances))
    }
}

/// A posterior denoiser with its variance estimated from its Jacobian ([`Self::variance`]):
/// `probes + 1` calls of the denoiser per call.
pub struct JacobianVariance<'a> {
    /// The denoiser.
    pub inner: &'a dyn PosteriorDenoiser,
    /// Hutchinson probes per call (at least 1).
    pub probes: usize,
    /// Seed of the probes per batch element (mixed with the noise level, so each call draws
    /// its own), so that an image's probes do not depend on the batch it is in.
    pub seeds: Vec<u64>,
    /// The leading channels the variance is averaged over (`None`: all).
    pub channels: Option<usize>,
}

impl VarianceDenoiser for JacobianVariance<'_> {
    fn denoise_with_variance(
        &self,
        mu: &Tensor,
        problem: &Problem,
        sigma: f64,
    ) -> Result<(Tensor, Vec<Vec<f32>>)> {
        let mean = self.inner.denoise(mu, problem, sigma)?;
        let var = self.variance(mu, &mean, problem, sigma)?;
        Ok((mean, var))
    }
}

impl JacobianVariance<'_> {
    /// `Var[x0_j | μ*] = s_j² ∂D_j/∂μ*_j` per pixel (Tweedie's formula for the pivot's
    /// diagonal noise `s_j² = diag(Σ*)_j`), with the Jacobian's diagonal from
    /// [`Self::probes`] Rademacher probes `v`: `s_j v_j (D(μ* + ε s ⊙ v) − D(μ*))_j / ε`, whose
    /// mean is `s_j² ∂D_j/∂μ*_j` (the cross terms `s_j s_k ∂D_j/∂μ*_k v_j v_k` average out).
    /// Averaged over [`Self::channels`] and over a `(2·2+1)²` box, and clipped to `[0, s_j²]`
    /// (a denoiser's Jacobian diagonal lies in `[0, 1]` for a log-concave prior, and a noisier
    /// estimate than the input means nothing). `mean` is the denoiser's estimate at `mu`; batch
    /// element `i` draws its probes from `seeds[i]` (the last seed for elements past the end)
    /// mixed with `sigma`.
    pub fn variance(
        &self,
        mu: &Tensor,
        mean: &Tensor,
        problem: &Problem,
        sigma: f64,
    ) -> Result<Vec<Vec<f32>>> {
        let (b, c, h, w) = mu.dims4()?;
        let n = h * w;
        let read = self.channels.unwrap_or(c).clamp(1, c);
        let s2_t = problem.pivot_variance(Interpolant::edm(sigma))?;
        let s2_batch = s2_t.dim(0)?;
        let s2: Vec<f32> = s2_t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        if s2.len() != s2_batch * n {
            return Err(Error::shape("pivot variance", s2_batch * n, s2.len()));
        }
        // `s_j²` and `s_j` per batch element and pixel.
        let var_in: Vec<f64> = (0..b * n)
            .map(|k| {
                let (i, pix) = (k / n, k % n);
                f64::from(s2[(if s2_batch == 1 { 0 } else { i }) * n + pix].max(0.0))
            })
            .collect();
        let sd: Vec<f64> = var_in.iter().map(|v| v.sqrt()).collect();
        let mix = sigma.to_bits().rotate_left(17);
        let mut rngs: Vec<StdRng> = (0..b)
            .map(|i| {
                let seed = self.seeds.get(i).or(self.seeds.last()).copied();
                StdRng::seed_from_u64(seed.unwrap_or(0) ^ mix)
            })
            .collect();
        let base: Vec<f32> = mean
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let mut acc = vec![0.0_f64; b * n];
        let probes = self.probes.max(1);
        for _ in 0..probes {
            let v: Vec<f32> = rngs
                .iter_mut()
                .flat_map(|rng| {
                    (0..c * n)
                        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                        .collect::<Vec<f32>>()
                })
                .collect();
            // Value k is channel (k / n) % c of pixel k % n of batch element k / (c n).
            let at = |k: usize| (k / (c * n)) * n + k % n;
            let delta: Vec<f32> = v
                .iter()
                .enumerate()
                .map(|(k, &vk)| (PROBE_STEP as f32) * (var_in[at(k)] as f32).sqrt() * vk)
                .collect();
            let delta = Tensor::from_vec(delta, (b, c, h, w), mu.device())?.to_dtype(mu.dtype())?;
            let moved: Vec<f32> = self
                .inner
                .denoise(&(mu + delta)?, problem, sigma)?
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            for (k, (&m1, &m0)) in moved.iter().zip(&base).enumerate() {
                if (k / n) % c < read {
                    acc[at(k)] += sd[at(k)] * f64::from(v[k]) * f64::from(m1 - m0) / PROBE_STEP;
                }
            }
        }
        let scale = 1.0 / (probes * read) as f64;
        Ok((0..b)
            .map(|i| {
                let raw: Vec<f64> = acc[i * n..(i + 1) * n].iter().map(|a| a * scale).collect();
                box_mean(&raw, w, h, PROBE_RADIUS)
                    .into_iter()
                    .zip(&var_in[i * n..(i + 1) * n])
                    .map(|(v, &s2)| v.clamp(0.0, s2) as f32)
                    .collect()
            })
            .collect())
    }
}

/// The mean of `values` (`w × h`) over the `(2r+1)²` box around each pixel, clipped to the image.
fn box_mean(values: &[f64], w: usize, h: usize, r: usize) -> Vec<f64> {
    let mut sat = vec![0.0_f64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0.0;
        for x in 0..w {
            row += values[y * w + x];
            sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
        }
    }
    (0..w * h)
        .map(|k| {
            let (x, y) = (k % w, k / w);
            let (x0, y0) = (x.saturating_sub(r), y.saturating_sub(r));
            let (x1, y1) = ((x + r + 1).min(w), (y + r + 1).min(h));
            let s = sat[y1 * (w + 1) + x1] + sat[y0 * (w + 1) + x0]
                - sat[y0 * (w + 1) + x1]
                - sat[y1 * (w + 1) + x0];
            s / ((x1 - x0) * (y1 - y0)) as f64
        })
        .collect()
}

/// Two denoisers' estimates fused per pixel by their variances; the fused variance of each
/// call is kept per batch element ([`Self::last_variance`]).
pub struct Fused<'a> {
    /// The first denoiser (the patches).
    pub a: &'a dyn VarianceDenoiser,
    /// The second (the network, with its Jacobian's variance).
    pub b: &'a dyn VarianceDenoiser,
    /// The leading channels that are fused (`None`: all); the others are `a`'s alone (the
    /// patches' detail channel, which the network does not model).
    pub fused_channels: Option<usize>,
    last: Mutex<Vec<Vec<f32>>>,
    share: Mutex<Vec<(f64, f64)>>,
}

impl<'a> Fused<'a> {
    /// `a` and `b` fused.
    pub fn new(a: &'a dyn VarianceDenoiser, b: &'a dyn VarianceDenoiser) -> Self {
        Self {
            a,
            b,
            fused_channels: None,
            last: Mutex::new(Vec::new()),
            share: Mutex::new(Vec::new()),
        }
    }

    /// The fused variance of batch element `slot` at the last call.
    pub fn last_variance(&self, slot: usize) -> Option<Vec<f32>> {
        lock(&self.last).get(slot).cloned()
    }

    /// Per call: the noise level and `b`'s mean weight over the pixels where the input is
    /// noisier than its measurement (the hole), `V_a / (V_a + V_b)`.
    pub fn share_log(&self) -> Vec<(f64, f64)> {
        lock(&self.share).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each field is replaced whole, so a poisoned lock holds nothing half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per pixel, `(V_b D_a + V_a D_b) / (V_a + V_b)` and `V_a V_b / (V_a + V_b)`; where both
/// variances are 0 (or not finite) the plain average and 0.
pub fn fuse_pixel(da: f32, va: f32, db: f32, vb: f32) -> (f32, f32) {
    let (va, vb) = (va.max(0.0), vb.max(0.0));
    let sum = va + vb;
    if !(sum.is_finite() && sum > 0.0) {
        return (0.5 * (da + db), 0.0);
    }
    ((vb * da + va * db) / sum, va * vb / sum)
}

impl PosteriorDenoiser for Fused<'_> {
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        let (b, c, h, w) = mu.dims4()?;
        let n = h * w;
        let (da, va) = self.a.denoise_with_variance(mu, problem, sigma)?;
        let (db, vb) = self.b.denoise_with_variance(mu, problem, sigma)?;
        if da.dims() != db.dims() {
            return Err(Error::shape(
                "fused estimates",
                format!("{:?}", da.dims()),
                format!("{:?}", db.dims()),
            ));
        }
        for v in va.iter().chain(&vb) {
            if v.len() != n {
                return Err(Error::shape("fused variance", n, v.len()));
            }
        }
        if va.len() != b || vb.len() != b {
            return Err(Error::shape("fused variances", b, va.len().min(vb.len())));
        }
        let da: Vec<f32> = da
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let db: Vec<f32> = db
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let s2: Vec<f32> = problem
            .pivot_variance(Interpolant::edm(sigma))?
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let s2_floor = s2.iter().copied().fold(f32::INFINITY, f32::min);
        let mut out = vec![0.0_f32; da.len()];
        let mut fused_var = vec![vec![0.0_f32; n]; b];
        let (mut share, mut count) = (0.0_f64, 0usize);
        for i in 0..b {
            for pix in 0..n {
                let (a_var, b_var) = (va[i][pix], vb[i][pix]);
                for ch in 0..c {
                    let k = (i * c + ch) * n + pix;
                    if ch >= self.fused_channels.unwrap_or(c) {
                        out[k] = da[k];
                        continue;
                    }
                    let (m, v) = fuse_pixel(da[k], a_var, db[k], b_var);
                    out[k] = m;
                    if ch == 0 {
                        fused_var[i][pix] = v;
                    }
                }
                let row = if s2.len() == n { 0 } else { i };
                let s = s2.get(row * n + pix).copied().unwrap_or(0.0);
                let sum = a_var.max(0.0) + b_var.max(0.0);
                if s > 4.0 * s2_floor && sum > 0.0 {
                    share += f64::from(a_var.max(0.0) / sum);
                    count += 1;
                }
            }
        }
        *lock(&self.last) = fused_var;
        if count > 0 {
            lock(&self.share).push((sigma, share / count as f64));
        }
        Ok(Tensor::from_vec(out, (b, c, h, w), mu.device())?.to_dtype(mu.dtype())?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::inverse::Mask;
    use candle_core::Device;
    use std::sync::Arc;

    const C: usize = 3;
    const W: usize = 16;
    const H: usize = 12;

    /// A mask problem on `W × H` images whose left half is observed.
    fn half_observed() -> Problem {
        let observed: Vec<f32> = (0..W * H)
            .map(|i| if i % W < W / 2 { 1.0 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(observed, (1, 1, H, W), &Device::Cpu).unwrap();
        let y = Tensor::full(0.2_f32, (1, C, H, W), &Device::Cpu)
            .unwrap()
            .broadcast_mul(&mask)
            .unwrap();
        Problem::new(Arc::new(Mask::new(&mask).unwrap()), &y, 0.05, (C, H, W)).unwrap()
    }

    /// The posterior mean under a Gaussian prior `N(m, c²)` per value, whose Jacobian is
    /// diagonal: `∂D_j/∂u_j = c² / (c² + s_j²)`.
    struct Shrink {
        m: f32,
        c2: f64,
    }

    impl PosteriorDenoiser for Shrink {
        fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
            let s2 = problem.pivot_variance(Interpolant::edm(sigma))?;
            let gain = ((s2 + self.c2)?.recip()? * self.c2)?;
            let m = Tensor::full(self.m, mu.dims4()?, mu.device())?;
            Ok(((mu - &m)?.broadcast_mul(&gain)? + m)?)
        }
    }

    /// For a denoiser with a diagonal Jacobian Hutchinson's probe has no cross terms, so one
    /// probe gives `Var_j = s_j² ∂D_j/∂u_j` exactly, away from the edge of the hole where the
    /// box mixes the observed pixels' variance with the hole's: `s² c² / (c² + s²)`, the
    /// Gaussian posterior's variance, in the hole and on the observed pixels alike.
    #[test]
    fn the_jacobian_variance_of_a_gaussian_prior_is_its_posterior_variance() {
        let problem = half_observed();
        let shrink = Shrink { m: 0.1, c2: 0.09 };
        for sigma in [0.05, 0.7, 3.0] {
            let mu = Tensor::rand(-1.0_f32, 1.0, (2, C, H, W), &Device::Cpu).unwrap();
            let mean = shrink.denoise(&mu, &problem, sigma).unwrap();
            let probe = JacobianVariance {
                inner: &shrink,
                probes: 1,
                seeds: vec![7, 8],
                channels: None,
            };
            let var = probe.variance(&mu, &mean, &problem, sigma).unwrap();
            let s2_obs = 1.0 / (1.0 / (sigma * sigma) + 1.0 / 0.0025);
            for v in &var {
                for y in 0..H {
                    for (x, s2) in [(1, s2_obs), (W - 2, sigma * sigma)] {
                        let want = s2 * 0.09 / (0.09 + s2);
                        let got = f64::from(v[y * W + x]);
                        assert!(
                            (got - want).abs() <= 2e-3 * want,
                            "σ {sigma}, pixel ({x}, {y}): {got} against {want}"
                        );
                    }
                }
            }
        }
    }

    /// A channel past `channels` (the patches' detail channel, which the colour network passes
    /// through unchanged, Jacobian 1) does not enter the variance.
    #[test]
    fn the_jacobian_variance_reads_only_the_channels_asked_for() {
        struct PassLast(Shrink);
        impl PosteriorDenoiser for PassLast {
            fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
                let shrunk = self.0.denoise(mu, problem, sigma)?;
                Ok(Tensor::cat(
                    &[&shrunk.narrow(1, 0, C - 1)?, &mu.narrow(1, C - 1, 1)?],
                    1,
                )?)
            }
        }
        let problem = half_observed();
        let d = PassLast(Shrink { m: 0.1, c2: 0.09 });
        let sigma = 0.7;
        let mu = Tensor::rand(-1.0_f32, 1.0, (1, C, H, W), &Device::Cpu).unwrap();
        let mean = d.denoise(&mu, &problem, sigma).unwrap();
        let probe = |channels| JacobianVariance {
            inner: &d,
            probes: 1,
            seeds: vec![3],
            channels,
        };
        let colours = probe(Some(C - 1))
            .variance(&mu, &mean, &problem, sigma)
            .unwrap();
        let all = probe(None).variance(&mu, &mean, &problem, sigma).unwrap();
        let s2 = sigma * sigma;
        let want = s2 * 0.09 / (0.09 + s2);
        let got = f64::from(colours[0][5 * W + W - 2]);
        assert!((got - want).abs() <= 2e-3 * want, "{got} against {want}");
        // With the passed-through channel its Jacobian of 1 is averaged in.
        let mixed = f64::from(all[0][5 * W + W - 2]);
        let want_mixed = ((C - 1) as f64 * want + s2) / C as f64;
        assert!(
            (mixed - want_mixed).abs() <= 2e-3 * want_mixed,
            "{mixed} against {want_mixed}"
        );
    }

    #[test]
    fn fusing_weighs_each_estimate_by_the_other_ones_variance() {
        assert_eq!(fuse_pixel(0.0, 1.0, 1.0, 3.0), (0.25, 0.75));
        assert_eq!(fuse_pixel(0.2, 0.5, 0.6, 0.5), (0.4, 0.25));
        // A certain estimate wins whole; two certain ones are averaged.
        assert_eq!(fuse_pixel(0.2, 0.0, 0.6, 0.5), (0.2, 0.0));
        assert_eq!(fuse_pixel(0.2, 0.0, 0.6, 0.0), (0.4, 0.0));
        assert_eq!(fuse_pixel(0.2, -1.0, 0.6, 0.5), (0.2, 0.0));
    }

    /// A denoiser with a fixed estimate and fixed per-pixel variances.
    struct Fixed {
        mean: f32,
        var: Vec<f32>,
    }

    impl VarianceDenoiser for Fixed {
        fn denoise_with_variance(
            &self,
            mu: &Tensor,
            _: &Problem,
            _: f64,
        ) -> Result<(Tensor, Vec<Vec<f32>>)> {
            let b = mu.dim(0)?;
            let mean = Tensor::full(self.mean, mu.dims4()?, mu.device())?;
            Ok((mean, vec![self.var.clone(); b]))
        }
    }

    /// Through the posterior-denoiser interface the samplers call: every value is the
    /// precision-weighted average of the two estimates, and the fused variance is kept for
    /// the uncertainty map.
    #[test]
    fn the_fused_denoiser_is_the_precision_weighted_average() {
        let problem = half_observed();
        let a = Fixed {
            mean: -0.4,
            var: (0..W * H).map(|i| 0.01 + (i % 7) as f32 * 0.02).collect(),
        };
        let b = Fixed {
            mean: 0.5,
            var: (0..W * H).map(|i| 0.03 + (i % 5) as f32 * 0.01).collect(),
        };
        let fused = Fused::new(&a, &b);
        let mu = Tensor::zeros((2, C, H, W), candle_core::DType::F32, &Device::Cpu).unwrap();
        let out = fused.denoise(&mu, &problem, 0.8).unwrap();
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        for (k, &o) in out.iter().enumerate() {
            let pix = k % (W * H);
            let (va, vb) = (a.var[pix], b.var[pix]);
            let want = (vb * -0.4 + va * 0.5) / (va + vb);
            assert!((o - want).abs() < 1e-6, "value {k}: {o} against {want}");
        }
        for slot in 0..2 {
            let v = fused.last_variance(slot).unwrap();
            for (pix, &got) in v.iter().enumerate() {
                let (va, vb) = (a.var[pix], b.var[pix]);
                assert!((got - va * vb / (va + vb)).abs() < 1e-7);
            }
        }
        // Over the hole (the right half), b's share is V_a / (V_a + V_b).
        let log = fused.share_log();
        assert_eq!(log.len(), 1);
        let hole: Vec<usize> = (0..W * H).filter(|i| i % W >= W / 2).collect();
        let want = hole
            .iter()
            .map(|&i| f64::from(a.var[i] / (a.var[i] + b.var[i])))
            .sum::<f64>()
            / hole.len() as f64;
        assert!(
            (log[0].1 - want).abs() < 1e-6,
            "{} against {want}",
            log[0].1
        );

        // Channels past the fused ones (the patches' detail channel) are the first
        // denoiser's alone.
        let mut colours_only = Fused::new(&a, &b);
        colours_only.fused_channels = Some(2);
        let out = colours_only.denoise(&mu, &problem, 0.8).unwrap();
        let out: Vec<f32> = out.flatten_all().unwrap().to_vec1().unwrap();
        for (k, &o) in out.iter().enumerate() {
            if (k / (W * H)) % C == 2 {
                assert_eq!(o, -0.4, "value {k}");
            } else {
                let pix = k % (W * H);
                let (va, vb) = (a.var[pix], b.var[pix]);
                assert!((o - (vb * -0.4 + va * 0.5) / (va + vb)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn the_box_mean_keeps_a_constant_and_averages_a_spike() {
        let flat = box_mean(&[2.0; 20], 5, 4, 2);
        assert!(flat.iter().all(|&v| (v - 2.0).abs() < 1e-12));
        let mut spike = vec![0.0; 49];
        spike[24] = 25.0;
        let out = box_mean(&spike, 7, 7, 2);
        assert!((out[24] - 1.0).abs() < 1e-12);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[24 + 3], 0.0);
        assert!((out[24 + 1] - 1.0).abs() < 1e-12);
    }
}
