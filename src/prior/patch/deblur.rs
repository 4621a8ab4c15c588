//! Deblurring on the photo's own patches: the patch prior's posterior mean of each window under
//! the window's full share of the pivot's noise.
//!
//! For a circular blur `A` the pivot's covariance `Σ* = (I/σ² + AᵀA/σ_y²)⁻¹` is stationary: one
//! kernel `c(δ)`, the inverse DFT of `1/(1/σ² + |K̂|²/σ_y²)`. Restricted to a `p × p` window it is
//! the dense `p² × p²` matrix `S_jk = c(j − k)` (the same for every window and colour). Under the
//! kernel density prior `(1/N) Σ_i N(b_i, τ² I)` of one window, with `C = S + τ² I`:
//!
//! ```text
//! w_i = softmax_i(−½ (u − b_i)ᵀ C⁻¹ (u − b_i))
//! m   = Σ_i w_i b_i
//! D   = m + τ² C⁻¹ (u − m)                 E[x | u] for the window
//! ```
//!
//! With `C = L Lᵀ` (Cholesky) and the whitening `W = L⁻¹`, the distance is `|W u − W b_i|²` and
//! `C⁻¹ (u − m) = Wᵀ (W u − Σ_i w_i W b_i)`: queries and bank are whitened once per call (two
//! matrix products), and a PatchMatch field of each window's `k` nearest bank windows, kept
//! from call to call, is searched under that exact distance. This is the same per-window
//! posterior the fills use (each window's estimate is exact for its own marginal; overlapping
//! estimates are averaged), but with the window's dense noise covariance in place of a diagonal
//! one; on an image the size of one window with a bank of at most `k` windows it is the exact
//! posterior mean of the Gaussian mixture (tested against a dense computation).
//!
//! The bank is cross-scale: a blurred photo holds no sharp patches of itself, but its copy
//! shrunk `s` times is about `s` times sharper and has the same kinds of patches (Michaeli and
//! Irani, ECCV 2014). Every window of the cleaned measurement averaged over `s × s` blocks, at
//! all `s²` phases of the block grid, is a bank window.

use std::sync::Mutex;

use candle_core::Tensor;
use nalgebra::DMatrix;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rayon::prelude::*;

use super::bank::Plane;
use super::denoise::{PatchConfig, window_weights};
use super::search::{insert_sorted, sort_pairs};
use crate::inverse::{Blur, Kernel, Problem, Structure};
use crate::sampler::PosteriorDenoiser;
use crate::{Error, Result};

/// Settings of the deblurring prior beyond the patch prior's own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeblurConfig {
    /// The patch prior (patch side, τ and its schedule, aggregation window).
    pub patch: PatchConfig,
    /// How many times the measurement is shrunk for the bank; `None` chooses from the kernel
    /// ([`bank_scale`]).
    pub scale: Option<usize>,
    /// Also every smaller shrink factor from 2 up (blurrier copies that keep thinner lines).
    pub finer: bool,
    /// Nearest bank windows kept per query (8: the same scores as 16 on the validation crops,
    /// within 0.05 dB and 0.001 LPIPS, in 30% less time; docs/patch-prior.md).
    pub k: usize,
    /// PatchMatch sweeps on the first call (from a random field) and on every later one.
    pub sweeps: (usize, usize),
    /// Uniform random draws from the whole bank per query and sweep.
    pub random_draws: usize,
    /// Width of the KDE kernel along what the blur keeps, in units of σ_y (`β`, see
    /// `whitening`); 0 is the isotropic kernel `τ² I`.
    pub measured_width: f64,
}

impl Default for DeblurConfig {
    fn default() -> Self {
        Self {
            patch: PatchConfig {
                patch: 7,
                ..PatchConfig::default()
            },
            scale: None,
            finer: false,
            k: 8,
            sweeps: (4, 1),
            random_draws: 4,
            measured_width: 3.0,
        }
    }
}

/// The shrink factor that brings a blur of RMS radius `radius` (pixels, per axis) to about a
/// pixel in the shrunk copy (counting the block average's own `s/√12`), from 2 to 4. Sharper
/// copies (a target of two thirds of a pixel: ×4 for a Gaussian σ = 2) invented highlights in
/// out-of-focus backgrounds and scored 2.4 dB lower on the validation crops
/// (docs/patch-prior.md).
pub fn bank_scale(radius: f64) -> usize {
    (2..=4)
        .find(|&s| {
            let s = s as f64;
            (radius * radius + s * s / 12.0).sqrt() / s <= 1.05
        })
        .unwrap_or(4)
}

/// The RMS radius per axis of a blur kernel (the square root of half its second moment about
/// its centre of mass).
pub fn kernel_radius(k: &Kernel) -> f64 {
    let (kh, kw) = (k.height(), k.width());
    let v = k.values();
    let total: f64 = v.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let (mut my, mut mx) = (0.0, 0.0);
    for r in 0..kh {
        for c in 0..kw {
            my += r as f64 * v[r * kw + c];
            mx += c as f64 * v[r * kw + c];
        }
    }
    let (my, mx) = (my / total, mx / total);
    let mut m2 = 0.0;
    for r in 0..kh {
        for c in 0..kw {
            m2 += ((r as f64 - my).powi(2) + (c as f64 - mx).powi(2)) * v[r * kw + c];
        }
    }
    (m2 / total / 2.0).sqrt()
}

/// `img` averaged over `s × s` blocks starting at `(ox, oy)`.
fn shrink_phase(img: &Plane, s: usize, ox: usize, oy: usize) -> Option<Plane> {
    let c = img.channels;
    let w = img.width.saturating_sub(ox) / s;
    let h = img.height.saturating_sub(oy) / s;
    if w == 0 || h == 0 {
        return None;
    }
    let mut data = vec![0.0_f32; w * h * c];
    let norm = 1.0 / (s * s) as f32;
    for by in 0..h {
        for bx in 0..w {
            let o = &mut data[(by * w + bx) * c..][..c];
            for y in 0..s {
                for x in 0..s {
                    let px =
                        &img.data[((oy + by * s + y) * img.width + ox + bx * s + x) * c..][..c];
                    for (a, v) in o.iter_mut().zip(px) {
                        *a += v * norm;
                    }
                }
            }
        }
    }
    Plane::from_data(w, h, c, data).ok()
}

/// The bank: every `p × p` window of a set of source images, channel-planar per window.
#[derive(Debug, Clone)]
struct Windows {
    channels: usize,
    /// Per source: `(cols, rows)` of window positions and the first index.
    sources: Vec<(usize, usize, usize)>,
    /// `N × C × p²` values.
    values: Vec<f32>,
}

impl Windows {
    fn new(images: &[Plane], p: usize) -> Self {
        let channels = images.first().map_or(3, |i| i.channels);
        let mut sources = Vec::new();
        let mut values = Vec::new();
        let mut n = 0;
        for img in images {
            if img.width < p || img.height < p {
                continue;
            }
            let (cols, rows) = (img.width - p + 1, img.height - p + 1);
            sources.push((cols, rows, n));
            n += cols * rows;
            for y in 0..rows {
                for x in 0..cols {
                    push_window(img, x, y, p, &mut values);
                }
            }
        }
        Self {
            channels,
            sources,
            values,
        }
    }

    fn len(&self) -> usize {
        self.sources
            .last()
            .map_or(0, |&(c, r, first)| first + c * r)
    }

    /// `(source, x, y)` of window `i`.
    fn locate(&self, i: usize) -> (usize, usize, usize) {
        let s = self.sources.partition_point(|&(_, _, first)| first <= i) - 1;
        let (cols, _, first) = self.sources[s];
        let local = i - first;
        (s, local % cols, local / cols)
    }

    /// Window `(x, y)` of source `s`, if inside.
    fn index(&self, s: usize, x: isize, y: isize) -> Option<usize> {
        let (cols, rows, first) = self.sources[s];
        (x >= 0 && y >= 0 && (x as usize) < cols && (y as usize) < rows)
            .then(|| first + y as usize * cols + x as usize)
    }
}

/// Appends window `(x, y)` of `img`, channel-planar (`C × p × p`).
fn push_window(img: &Plane, x: usize, y: usize, p: usize, out: &mut Vec<f32>) {
    let c = img.channels;
    for ch in 0..c {
        for dy in 0..p {
            let row = img.row(x, y, dy, p);
            out.extend((0..p).map(|dx| row[dx * c + ch]));
        }
    }
}

/// Rows of `x` (`n × d`) times `mᵀ` (`m`: `d × d`, row-major): `n × d`, with the matrix-product
/// kernels the network uses, straight from and into flat buffers.
fn times_transpose(x: &[f32], d: usize, m: &[f32]) -> Vec<f32> {
    let n = x.len() / d;
    let mt: Vec<f32> = (0..d * d).map(|i| m[(i % d) * d + i / d]).collect();
    let mut out = vec![0.0_f32; n * d];
    if n > 0 {
        crate::denoiser::conv::product(x, &mt, &mut out, (n, d, d));
    }
    out
}

/// The window restriction of the stationary covariance with spectrum `spectrum` (per frequency
/// of an `h × w` circular image): `p² × p²`, row-major window offsets.
fn window_covariance(spectrum: Vec<f64>, (h, w): (usize, usize), p: usize) -> DMatrix<f64> {
    let mut c: Vec<rustfft::num_complex::Complex64> = spectrum
        .into_iter()
        .map(|v| rustfft::num_complex::Complex64::new(v, 0.0))
        .collect();
    crate::inverse::fft::Fft2::new(h, w).inverse(&mut c);
    let d = p * p;
    DMatrix::<f64>::from_fn(d, d, |j, k| {
        let (jy, jx) = ((j / p) as isize, (j % p) as isize);
        let (ky, kx) = ((k / p) as isize, (k % p) as isize);
        let dy = (jy - ky).rem_euclid(h as isize) as usize;
        let dx = (jx - kx).rem_euclid(w as isize) as usize;
        c[dy * w + dx].re
    })
}

/// One noise level's matrices, row-major `p² × p²`: the whitening `W = L⁻¹` for
/// `C = S + T = L Lᵀ` (the pivot's window noise `S` plus the KDE kernel `T`), and the gain
/// `G = T C⁻¹ = T Wᵀ W`, so that `E[x | u] = m + G (u − m)` with `m = Σ_i w_i b_i`.
///
/// The kernel is `T = τ² I + β² σ_y² AᵀA` (its spectrum `τ² + β² σ_y² |K̂|²`): a kernel density
/// estimate is exact under any Gaussian kernel, and this one is wide (`β σ_y`, 3 times the
/// measurement's noise) along what the blur keeps, so the measured content wins there where no
/// bank window has it, and narrow (`τ`) along what the blur removes, which the bank supplies.
fn whitening(
    blur: &Blur,
    sigma: f64,
    sigma_y: f64,
    (tau2, beta): (f64, f64),
    p: usize,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let size = blur.image_size();
    let s2 = sigma * sigma;
    let gram = blur.gram_eigenvalues();
    let noise: Vec<f64> = gram
        .iter()
        .map(|&g| {
            if sigma_y > 0.0 {
                1.0 / (1.0 / s2 + g / (sigma_y * sigma_y))
            } else if g > 0.0 {
                0.0
            } else {
                s2
            }
        })
        .collect();
    let kernel: Vec<f64> = gram
        .iter()
        .map(|&g| tau2 + beta * beta * sigma_y * sigma_y * g)
        .collect();
    let t = window_covariance(kernel, size, p);
    let cov = window_covariance(noise, size, p) + &t;
    let d = p * p;
    // A tiny ridge keeps the factorisation well defined when τ and the noise both vanish.
    let ridge = 1e-12 * cov.trace().max(1e-30) / d as f64;
    let chol = (cov + DMatrix::<f64>::identity(d, d) * ridge)
        .cholesky()
        .ok_or_else(|| {
            Error::invalid(
                "window noise covariance",
                sigma,
                "not positive definite at this noise level",
            )
        })?;
    let l_inv = chol
        .l()
        .solve_lower_triangular(&DMatrix::<f64>::identity(d, d))
        .ok_or_else(|| {
            Error::invalid(
                "window noise covariance",
                sigma,
                "singular at this noise level",
            )
        })?;
    let gain = &t * l_inv.transpose() * &l_inv;
    let flat =
        |m: &DMatrix<f64>| -> Vec<f32> { (0..d * d).map(|i| m[(i / d, i % d)] as f32).collect() };
    Ok((flat(&l_inv), flat(&gain)))
}

/// A noise level's matrices ([`whitening`], row-major `p² × p²`) and the bank's windows whitened.
struct Level {
    wm: Vec<f32>,
    gain: Vec<f32>,
    wb: Vec<f32>,
}

/// The patch prior's posterior denoiser for deblurring images of one size.
#[derive(Debug)]
pub struct PatchDeblur {
    bank: Windows,
    cfg: DeblurConfig,
    size: (usize, usize),
    /// Per batch element, the field (`Q × k` bank indices) of the last call.
    fields: Mutex<Vec<Option<Vec<u32>>>>,
}

impl PatchDeblur {
    /// A denoiser for `width × height` images whose prior is the windows of `exemplars` (the
    /// cleaned measurement, `[-1, 1]`, channels last) shrunk `scale` times at every phase (and
    /// every factor from 2 up with `cfg.finer`).
    pub fn new(
        exemplars: &Plane,
        scale: usize,
        cfg: DeblurConfig,
        (width, height): (usize, usize),
    ) -> Result<Self> {
        cfg.patch.validate()?;
        let p = cfg.patch.patch;
        if cfg.k == 0 {
            return Err(Error::invalid(
                "nearest windows k",
                cfg.k,
                "must be positive",
            ));
        }
        if width < p || height < p {
            return Err(Error::invalid(
                "image size",
                format!("{width}×{height}"),
                format!("smaller than one {p}×{p} patch"),
            ));
        }
        let mut images = Vec::new();
        let scales: Vec<usize> = if cfg.finer {
            (2..=scale).collect()
        } else {
            vec![scale]
        };
        for &f in &scales {
            if f <= 1 {
                images.push(exemplars.clone());
                continue;
            }
            for oy in 0..f {
                for ox in 0..f {
                    images.extend(shrink_phase(exemplars, f, ox, oy));
                }
            }
        }
        let bank = Windows::new(&images, p);
        if bank.len() == 0 {
            return Err(Error::invalid(
                "photo size for deblurring from its own patches",
                format!("{}×{}", exemplars.width, exemplars.height),
                format!(
                    "needs at least {0}×{0} pixels; use the network prior",
                    p * scale.max(1)
                ),
            ));
        }
        Ok(Self {
            bank,
            cfg,
            size: (width, height),
            fields: Mutex::new(Vec::new()),
        })
    }

    /// Number of bank windows.
    pub fn bank_len(&self) -> usize {
        self.bank.len()
    }

    /// One noise level's whitening and gain ([`whitening`]) and the bank whitened with it,
    /// shared by every image of a batch.
    fn level(&self, blur: &Blur, sigma: f64, sigma_y: f64) -> Result<Level> {
        let p = self.cfg.patch.patch;
        let tau2 = self.cfg.patch.tau_at(sigma).powi(2);
        let (wm, gain) = whitening(blur, sigma, sigma_y, (tau2, self.cfg.measured_width), p)?;
        let wb = times_transpose(&self.bank.values, p * p, &wm);
        Ok(Level { wm, gain, wb })
    }

    /// `E[x | u]` for every window of `u` (channels last) under the noise of `level`.
    fn estimate(&self, u: &Plane, level: &Level, slot: usize) -> Result<Plane> {
        let p = self.cfg.patch.patch;
        let d1 = p * p;
        let c = u.channels;
        let d = c * d1;
        if c != self.bank.channels {
            return Err(Error::shape("deblur input channels", self.bank.channels, c));
        }
        let Level { wm, gain, wb } = level;
        let (cols, rows) = (u.width - p + 1, u.height - p + 1);
        let nq = cols * rows;
        let mut queries = Vec::with_capacity(nq * d);
        for y in 0..rows {
            for x in 0..cols {
                push_window(u, x, y, p, &mut queries);
            }
        }
        let wq = times_transpose(&queries, d1, wm);
        let n = self.bank.len();
        let k = self.cfg.k.min(n);
        let dist = |qi: usize, bi: usize| sq_distance(&wq[qi * d..][..d], &wb[bi * d..][..d]);
        // The field: every window when the bank is small, else PatchMatch from the last call's.
        let previous = {
            let mut f = self.lock();
            if f.len() <= slot {
                f.resize(slot + 1, None);
            }
            f[slot].take().filter(|v| v.len() == nq * k)
        };
        let seed = u.data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, v| {
            (h ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3)
        });
        let mut entries: Vec<u32>;
        let mut dists = vec![0.0_f32; nq * k];
        if k == n {
            entries = (0..nq).flat_map(|_| 0..n as u32).collect();
            dists.par_chunks_mut(k).enumerate().for_each(|(qi, ds)| {
                for (bi, dd) in ds.iter_mut().enumerate() {
                    *dd = dist(qi, bi);
                }
            });
        } else {
            let sweeps = if previous.is_some() {
                self.cfg.sweeps.1
            } else {
                self.cfg.sweeps.0
            };
            entries = previous.unwrap_or_else(|| {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut e = Vec::with_capacity(nq * k);
                for _ in 0..nq {
                    let start = e.len();
                    while e.len() - start < k {
                        let b = rng.random_range(0..n) as u32;
                        if !e[start..].contains(&b) {
                            e.push(b);
                        }
                    }
                }
                e
            });
            entries
                .par_chunks_mut(k)
                .zip(dists.par_chunks_mut(k))
                .enumerate()
                .for_each(|(qi, (es, ds))| {
                    for (e, dd) in es.iter().zip(ds.iter_mut()) {
                        *dd = dist(qi, *e as usize);
                    }
                    sort_pairs(es, ds);
                });
            let radius = self
                .bank
                .sources
                .iter()
                .map(|&(c, r, _)| c.max(r))
                .max()
                .unwrap_or(1) as isize;
            for sweep in 0..sweeps {
                let snapshot = entries.clone();
                entries
                    .par_chunks_mut(k)
                    .zip(dists.par_chunks_mut(k))
                    .enumerate()
                    .for_each(|(qi, (es, ds))| {
                        let mut rng = StdRng::seed_from_u64(
                            seed ^ (sweep as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                ^ (qi as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                        );
                        let (qx, qy) = ((qi % cols) as isize, (qi / cols) as isize);
                        let try_entry = |b: usize, es: &mut [u32], ds: &mut [f32]| {
                            let b = b as u32;
                            if es.contains(&b) {
                                return;
                            }
                            let dd = dist(qi, b as usize);
                            if dd < ds[k - 1] {
                                insert_sorted(es, ds, b, dd);
                            }
                        };
                        // Propagation: each neighbour's matches, shifted back by the offset.
                        for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                            let (nx, ny) = (qx + dx, qy + dy);
                            if nx < 0 || ny < 0 || nx >= cols as isize || ny >= rows as isize {
                                continue;
                            }
                            let ni = ny as usize * cols + nx as usize;
                            for &b in &snapshot[ni * k..(ni + 1) * k] {
                                let (s, bx, by) = self.bank.locate(b as usize);
                                if let Some(j) =
                                    self.bank.index(s, bx as isize - dx, by as isize - dy)
                                {
                                    try_entry(j, es, ds);
                                }
                            }
                        }
                        // Random search around the best match, halving the radius.
                        let (s, bx, by) = self.bank.locate(es[0] as usize);
                        let mut r = radius;
                        while r >= 1 {
                            let x = bx as isize + rng.random_range(-(r as i64)..=r as i64) as isize;
                            let y = by as isize + rng.random_range(-(r as i64)..=r as i64) as isize;
                            if let Some(j) = self.bank.index(s, x, y) {
                                try_entry(j, es, ds);
                            }
                            r /= 2;
                        }
                        for _ in 0..self.cfg.random_draws {
                            try_entry(rng.random_range(0..n), es, ds);
                        }
                    });
            }
        }
        // The whitened queries served the search; the estimate needs the raw windows only.
        drop(wq);
        // Per query the weighted mean of its bank windows `m`, and `u − m` in place of `u`.
        let mut mean = vec![0.0_f32; nq * d];
        mean.par_chunks_mut(d)
            .zip(queries.par_chunks_mut(d))
            .zip(entries.par_chunks(k).zip(dists.par_chunks(k)))
            .for_each(|((m, q), (es, ds))| {
                let best = ds.iter().copied().fold(f32::INFINITY, f32::min);
                let ws: Vec<f32> = ds.iter().map(|&dd| (-0.5 * (dd - best)).exp()).collect();
                let total: f32 = ws.iter().sum();
                for (&e, &wi) in es.iter().zip(&ws) {
                    let wi = wi / total;
                    let b = &self.bank.values[e as usize * d..][..d];
                    for (mj, bj) in m.iter_mut().zip(b) {
                        *mj += wi * bj;
                    }
                }
                for (qj, mj) in q.iter_mut().zip(m.iter()) {
                    *qj -= mj;
                }
            });
        self.lock()[slot] = Some(entries);
        // `T C⁻¹ (u − m)` for every window.
        let corr = times_transpose(&queries, d1, gain);
        // Aggregation with the Gaussian window, as the fills do.
        let window = window_weights(p, self.cfg.patch.window);
        let w = u.width;
        let mut out = u.clone();
        out.data
            .par_chunks_mut(w * c)
            .enumerate()
            .for_each(|(y, row)| {
                let mut num = vec![0.0_f32; w * c];
                let mut den = vec![0.0_f32; w];
                for qy in y.saturating_sub(p - 1)..=y.min(rows - 1) {
                    let dy = y - qy;
                    for qx in 0..cols {
                        let qi = qy * cols + qx;
                        for dx in 0..p {
                            let om = window[dy * p + dx];
                            den[qx + dx] += om;
                            for ch in 0..c {
                                let j = ch * d1 + dy * p + dx;
                                let est = mean[qi * d + j] + corr[qi * d + j];
                                num[(qx + dx) * c + ch] += om * est;
                            }
                        }
                    }
                }
                for x in 0..w {
                    if den[x] > 0.0 {
                        for ch in 0..c {
                            row[x * c + ch] = num[x * c + ch] / den[x];
                        }
                    }
                }
            });
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Vec<u32>>>> {
        self.fields
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `|a − b|²`, in eight lanes so that it vectorises.
#[inline]
fn sq_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0_f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            let t = x[l] - y[l];
            acc[l] += t * t;
        }
    }
    let mut total: f32 = acc.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        total += (x - y) * (x - y);
    }
    total
}

impl PosteriorDenoiser for PatchDeblur {
    /// `E[x0 | μ*]` per window under the window's dense share of the pivot's `Σ*`, aggregated.
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        let Structure::Blur(blur) = problem.operator().structure() else {
            return Err(Error::Unsupported(format!(
                "the patch prior's deblurring denoiser got {}",
                problem.operator().name()
            )));
        };
        let (b, c, h, w) = mu.dims4()?;
        if (w, h) != self.size {
            return Err(Error::shape(
                "deblur denoiser input",
                format!("{}×{}", self.size.0, self.size.1),
                format!("{w}×{h}"),
            ));
        }
        let xs = mu
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let level = self.level(blur, sigma, problem.sigma_y())?;
        let mut out = Vec::with_capacity(xs.len());
        for i in 0..b {
            let u = Plane::from_chw(&xs[i * c * h * w..(i + 1) * c * h * w], (c, h, w));
            let est = self.estimate(&u, &level, i)?;
            out.extend(est.to_chw());
        }
        Ok(Tensor::from_vec(out, (b, c, h, w), mu.device())?.to_dtype(mu.dtype())?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use candle_core::Device;
    use nalgebra::DVector;
    use std::sync::Arc;

    #[test]
    fn the_bank_scale_follows_the_blur() {
        assert_eq!(bank_scale(0.5), 2);
        assert_eq!(bank_scale(2.0), 2);
        assert_eq!(bank_scale(3.0), 3);
        assert_eq!(bank_scale(4.0), 4);
        assert_eq!(bank_scale(20.0), 4);
    }

    /// On an image the size of one window, with a bank of fewer windows than `k`, the denoiser
    /// is the exact posterior mean of the Gaussian mixture with means the bank's windows and
    /// the kernel's covariance `τ² I + β² σ_y² AᵀA`, observed through the pivot's dense `Σ*`.
    #[test]
    fn one_window_equals_the_dense_gaussian_mixture_posterior() {
        let (p, c) = (3_usize, 3_usize);
        let n = p * p * c;
        let exemplars = Plane::ramp(5, 4, c);
        let cfg = DeblurConfig {
            patch: PatchConfig {
                patch: p,
                tau: 0.3,
                tau_per_sigma: 0.0,
                ..PatchConfig::default()
            },
            k: 64,
            ..DeblurConfig::default()
        };
        let deblur = PatchDeblur::new(&exemplars, 1, cfg, (p, p)).unwrap();
        assert_eq!(deblur.bank_len(), 3 * 2);
        let kernel =
            Kernel::from_values(3, 3, vec![0.05, 0.1, 0.05, 0.1, 0.4, 0.1, 0.05, 0.1, 0.05])
                .unwrap();
        let blur = Blur::new(kernel, p, p).unwrap();
        let (sigma, sigma_y) = (0.7_f64, 0.2_f64);
        let y = Tensor::from_vec(
            (0..n)
                .map(|i| (i as f32 * 0.21).cos() * 0.5)
                .collect::<Vec<_>>(),
            (1, c, p, p),
            &Device::Cpu,
        )
        .unwrap();
        let problem = Problem::new(Arc::new(blur.clone()), &y, sigma_y, (c, p, p)).unwrap();
        let mu_chw: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 0.8).collect();
        let mu = Tensor::from_vec(mu_chw.clone(), (1, c, p, p), &Device::Cpu).unwrap();
        let got = deblur
            .denoise(&mu, &problem, sigma)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // Dense Σ* of one channel: (I/σ² + AᵀA/σ_y²)⁻¹ with A the circular blur on p×p.
        let d1 = p * p;
        let mut a = DMatrix::<f64>::zeros(d1, d1);
        for j in 0..d1 {
            let mut e = vec![0.0_f32; d1];
            e[j] = 1.0;
            let t = Tensor::from_vec(e, (1, 1, p, p), &Device::Cpu).unwrap();
            let col = crate::inverse::LinearOperator::forward(&blur, &t)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (i, v) in col.iter().enumerate() {
                a[(i, j)] = f64::from(*v);
            }
        }
        let lambda = DMatrix::<f64>::identity(d1, d1) / (sigma * sigma)
            + a.transpose() * &a / (sigma_y * sigma_y);
        let s1 = lambda.try_inverse().unwrap();
        let beta2 = cfg.measured_width * cfg.measured_width;
        let t1 = DMatrix::<f64>::identity(d1, d1) * 0.09
            + a.transpose() * &a * (beta2 * sigma_y * sigma_y);
        // Channels first: block-diagonal over colours.
        let mut cov = DMatrix::<f64>::zeros(n, n);
        let mut kernel = DMatrix::<f64>::zeros(n, n);
        for ch in 0..c {
            for j in 0..d1 {
                for k in 0..d1 {
                    cov[(ch * d1 + j, ch * d1 + k)] = s1[(j, k)] + t1[(j, k)];
                    kernel[(ch * d1 + j, ch * d1 + k)] = t1[(j, k)];
                }
            }
        }
        let prec = cov.try_inverse().unwrap();
        let u = DVector::from_iterator(n, mu_chw.iter().map(|&v| f64::from(v)));
        let mut means = Vec::new();
        for y0 in 0..=exemplars.height - p {
            for x0 in 0..=exemplars.width - p {
                means.push(DVector::from_fn(n, |i, _| {
                    let (ch, j) = (i / d1, i % d1);
                    let (dy, dx) = (j / p, j % p);
                    f64::from(exemplars.data[((y0 + dy) * exemplars.width + x0 + dx) * c + ch])
                }));
            }
        }
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
        let mut want = DVector::<f64>::zeros(n);
        for (b, wi) in means.iter().zip(&w) {
            want += (b + &kernel * &prec * (&u - b)) * (wi / total);
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

    /// PatchMatch under the whitened distance finds the nearest bank windows: on a photo-like
    /// texture, the field's best match is as close as the brute-force nearest for almost every
    /// query.
    #[test]
    fn the_field_finds_the_nearest_bank_windows() {
        let (w, h, c) = (40, 36, 3);
        let data: Vec<f32> = (0..w * h * c)
            .map(|i| {
                let (px, ch) = (i / c, i % c);
                let (x, y) = ((px % w) as f32, (px / w) as f32);
                ((x * 0.7 + ch as f32).sin() * (y * 0.45).cos() * 0.6)
                    + 0.2 * ((x * 1.9 + y * 1.3).sin())
            })
            .collect();
        let img = Plane::from_data(w, h, c, data).unwrap();
        let cfg = DeblurConfig {
            patch: PatchConfig {
                patch: 5,
                ..PatchConfig::default()
            },
            k: 4,
            ..DeblurConfig::default()
        };
        let (iw, ih) = (24, 20);
        let deblur = PatchDeblur::new(&img, 2, cfg, (iw, ih)).unwrap();
        let kernel = Kernel::gaussian(1.0, 5).unwrap();
        let blur = Blur::new(kernel, ih, iw).unwrap();
        // The query image: a crop of the photo itself.
        let mut q = Vec::new();
        for y in 0..ih {
            for x in 0..iw {
                q.extend_from_slice(&img.data[((y + 5) * w + x + 7) * c..][..c]);
            }
        }
        let u = Plane::from_data(iw, ih, c, q).unwrap();
        let (sigma, sigma_y) = (0.05, 0.02);
        let level = deblur.level(&blur, sigma, sigma_y).unwrap();
        let _ = deblur.estimate(&u, &level, 0).unwrap();
        let field = deblur.lock()[0].clone().unwrap();
        // Brute force under the same distance.
        let p = 5;
        let d1 = p * p;
        let d = c * d1;
        let tau2 = cfg.patch.tau_at(sigma).powi(2);
        let (wm, _) = whitening(&blur, sigma, sigma_y, (tau2, cfg.measured_width), p).unwrap();
        let mut queries = Vec::new();
        let (cols, rows) = (iw - p + 1, ih - p + 1);
        for y in 0..rows {
            for x in 0..cols {
                push_window(&u, x, y, p, &mut queries);
            }
        }
        let wq = times_transpose(&queries, d1, &wm);
        let wb = times_transpose(&deblur.bank.values, d1, &wm);
        let dist = |qi: usize, bi: usize| -> f32 {
            (0..d)
                .map(|j| (wq[qi * d + j] - wb[bi * d + j]).powi(2))
                .sum()
        };
        let mut good = 0;
        for qi in 0..cols * rows {
            let best = (0..deblur.bank_len())
                .map(|b| dist(qi, b))
                .fold(f32::INFINITY, f32::min);
            let found = dist(qi, field[qi * cfg.k] as usize);
            if found <= best * 1.05 + 1e-6 {
                good += 1;
            }
        }
        let frac = good as f64 / (cols * rows) as f64;
        assert!(frac > 0.9, "best match found for {frac:.2} of the queries");
    }
}
