//! The patch denoiser: the posterior mean of the smoothed empirical patch prior under
//! diagonal Gaussian noise, one variance per pixel or per value (shared/docs/patch-prior.md §1).
//!
//! The prior of one `p × p` patch is the kernel density estimate `p(x) = (1/N) Σ_i N(x; b_i, τ² I)`
//! over the bank. For a query `u = x + N(0, S)` with `S = diag(s_j²)` (the pivot's `diag(Σ*)`,
//! small on observed pixels and σ² in the hole), with `λ_j = 1/(s_j² + τ²)` and
//! `g_j = τ² λ_j = τ²/(τ² + s_j²)`:
//!
//! ```text
//! w_i  = softmax_i(Σ_j λ_j u_j b_ij − ½ Σ_j λ_j b_ij²)
//! m    = Σ_i w_i b_i
//! D_j  = m_j + g_j (u_j − m_j)                            E[x_j | u]
//! V_j  = (1 − g_j)² (Σ_i w_i b_ij² − m_j²) + g_j s_j²      Var[x_j | u]
//! ```
//!
//! Every window that touches the region of interest is a query; each pixel then takes the
//! window-weighted average of the estimates of the queries covering it (its variance includes
//! their disagreement), and pixels no query covers keep `u` (no prior information: `D = u`,
//! `V = s²`). An image the size of one patch has one query and no averaging, so the denoiser is
//! the exact posterior mean of a Gaussian mixture with means `b_i` and covariance `τ² I`.

use std::sync::Mutex;

use candle_core::Tensor;

use super::bank::{Bank, Entry, Plane};
use super::search::{
    BankMatrix, Field, FieldSearch, Metric, Precision, Queries, QueryMoments, Shift, SparseWeights,
    exact_moments,
};
use crate::inverse::{Interpolant, Problem};
use crate::sampler::{Denoiser, PosteriorDenoiser};
use crate::{Error, Result};

/// How the bank is searched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Search {
    /// Every bank patch, every call.
    Exact,
    /// A PatchMatch k-nearest-neighbour field, every call.
    Field(FieldSearch),
    /// Exact sums at noise levels `σ ≥ exact_above` (where the weights are flat) and whenever
    /// queries × bank is at most `exact_budget`; the field elsewhere, started from the last
    /// exact call's best matches.
    Auto {
        /// The field's settings.
        field: FieldSearch,
        /// Noise level from which the sums are exact.
        exact_above: f64,
        /// Largest queries × bank product searched exactly at any σ.
        exact_budget: usize,
    },
}

impl Search {
    /// The same search with its field kept near where it starts: random search within
    /// `radius` pixels of each query's best match and no draws from the whole bank
    /// ([`FieldSearch::radius`]). Exact sums stay exact.
    pub fn local(self, radius: usize) -> Self {
        let near = |f: FieldSearch| FieldSearch {
            radius: Some(radius),
            random_draws: 0,
            ..f
        };
        match self {
            Self::Exact => Self::Exact,
            Self::Field(f) => Self::Field(near(f)),
            Self::Auto {
                field,
                exact_above,
                exact_budget,
            } => Self::Auto {
                field: near(field),
                exact_above,
                exact_budget,
            },
        }
    }
}

/// The patch prior's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchConfig {
    /// Patch side (odd).
    pub patch: usize,
    /// KDE bandwidth τ in `[-1, 1]` units.
    pub tau: f64,
    /// When positive, τ follows the noise level: `τ(σ) = min(τ, tau_per_sigma · σ)`. The
    /// KDE's samples carry `N(0, τ²)` per pixel; annealing τ removes that noise from the final
    /// samples (the prior then changes with σ, so the sampler is exact for each level's prior,
    /// not for one prior). 0 keeps τ fixed.
    pub tau_per_sigma: f64,
    /// Standard deviation of the Gaussian window that weighs overlapping estimates, relative to
    /// the patch's half-width (`f64::INFINITY`: a uniform average).
    pub window: f64,
    /// How the bank is searched.
    pub search: Search,
    /// Standard deviation of a constant the prior may add to each colour channel of a window
    /// (a local change of brightness and colour), in `[-1, 1]` units; 0: windows as they are.
    /// Integrated out in closed form ([`super::search::Shift`]), so the denoiser stays exact.
    pub shift: f64,
}

impl Default for PatchConfig {
    fn default() -> Self {
        Self {
            patch: 9,
            tau: 0.01,
            tau_per_sigma: 0.3,
            window: 0.1,
            search: Search::Auto {
                field: FieldSearch::default(),
                exact_above: 2.0,
                exact_budget: 2_000_000,
            },
            shift: 0.0,
        }
    }
}

impl PatchConfig {
    /// τ at noise level `sigma`.
    pub fn tau_at(&self, sigma: f64) -> f64 {
        if self.tau_per_sigma > 0.0 {
            self.tau.min(self.tau_per_sigma * sigma)
        } else {
            self.tau
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.patch == 0 || self.patch.is_multiple_of(2) || self.patch > 31 {
            return Err(Error::invalid(
                "patch size",
                self.patch,
                "must be odd, from 1 to 31",
            ));
        }
        if !(self.tau.is_finite() && self.tau >= 0.0) {
            return Err(Error::invalid("τ", self.tau, "must be finite and ≥ 0"));
        }
        if !(self.tau_per_sigma.is_finite() && self.tau_per_sigma >= 0.0) {
            return Err(Error::invalid(
                "τ per σ",
                self.tau_per_sigma,
                "must be finite and ≥ 0",
            ));
        }
        if self.window.is_nan() || self.window <= 0.0 {
            return Err(Error::invalid("window", self.window, "must be positive"));
        }
        if !(self.shift.is_finite() && (0.0..=2.0).contains(&self.shift)) {
            return Err(Error::invalid(
                "window shift",
                self.shift,
                "must be from 0 to 2 ([-1, 1] units)",
            ));
        }
        Ok(())
    }
}

/// The denoiser's output for one image.
#[derive(Debug, Clone)]
pub struct Estimate {
    /// `E[x | u]` per pixel.
    pub mean: Plane,
    /// `Var[x | u]` per pixel, averaged over channels.
    pub variance: Vec<f32>,
    /// Per query, the effective number of bank patches `1/Σ w²`.
    pub ess: Vec<f32>,
}

/// One call's effective-sample-size summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EssRecord {
    /// Noise level of the call.
    pub sigma: f64,
    /// Median over queries of `1/Σ w²`.
    pub median: f32,
    /// Fraction of queries with an effective sample size below 1.5 (copying one patch).
    pub copying: f32,
    /// Whether the call summed the whole bank.
    pub exact: bool,
}

#[derive(Debug, Default)]
struct Slot {
    field: Option<Field>,
    calls: u64,
    variance: Option<Vec<f32>>,
}

#[derive(Debug, Default)]
struct State {
    slots: Vec<Slot>,
    log: Vec<EssRecord>,
}

/// The patch prior's denoiser over images of one size, with its bank.
#[derive(Debug)]
pub struct PatchDenoiser {
    bank: Bank,
    matrix: std::sync::OnceLock<BankMatrix>,
    sample: std::sync::OnceLock<BankMatrix>,
    cfg: PatchConfig,
    queries: Queries,
    state: Mutex<State>,
}

impl PatchDenoiser {
    /// A denoiser for `width × height` images that estimates the windows touching `roi` (every
    /// window when `None`; elsewhere it returns its input), with the patches of `bank`.
    pub fn new(
        bank: Bank,
        cfg: PatchConfig,
        (width, height): (usize, usize),
        roi: Option<&[bool]>,
    ) -> Result<Self> {
        cfg.validate()?;
        if bank.patch != cfg.patch {
            return Err(Error::shape("bank patch size", cfg.patch, bank.patch));
        }
        if bank.is_empty() {
            return Err(Error::invalid(
                "patch bank",
                "empty",
                "no window of known pixels fits; paint a smaller mask or use the network prior",
            ));
        }
        if width < cfg.patch || height < cfg.patch {
            return Err(Error::invalid(
                "image size",
                format!("{width}×{height}"),
                format!("smaller than one {0}×{0} patch", cfg.patch),
            ));
        }
        if let Some(r) = roi
            && r.len() != width * height
        {
            return Err(Error::shape("region of interest", width * height, r.len()));
        }
        let queries = Queries::new(width, height, cfg.patch, roi);
        Ok(Self {
            bank,
            matrix: std::sync::OnceLock::new(),
            sample: std::sync::OnceLock::new(),
            cfg,
            queries,
            state: Mutex::new(State::default()),
        })
    }

    /// The bank.
    pub fn bank(&self) -> &Bank {
        &self.bank
    }

    /// The settings.
    pub fn config(&self) -> &PatchConfig {
        &self.cfg
    }

    /// The query windows.
    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    /// Starts batch element `slot` from a given nearest-neighbour field (coarse to fine).
    pub fn set_field(&self, slot: usize, field: Field) {
        let mut st = self.lock();
        if st.slots.len() <= slot {
            st.slots.resize_with(slot + 1, Slot::default);
        }
        st.slots[slot].field = Some(field);
    }

    /// The field batch element `slot` ended with, if it used one.
    pub fn field(&self, slot: usize) -> Option<Field> {
        self.lock().slots.get(slot).and_then(|s| s.field.clone())
    }

    /// The posterior variance of the last call for batch element `slot`.
    pub fn last_variance(&self, slot: usize) -> Option<Vec<f32>> {
        self.lock().slots.get(slot).and_then(|s| s.variance.clone())
    }

    /// The effective-sample-size record of every call so far.
    pub fn ess_log(&self) -> Vec<EssRecord> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the state half-written in a way that matters here
        // (fields are replaced whole), so a poisoned lock is taken over.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn matrix(&self) -> Result<&BankMatrix> {
        if let Some(m) = self.matrix.get() {
            return Ok(m);
        }
        let m = BankMatrix::new(&self.bank)?;
        Ok(self.matrix.get_or_init(|| m))
    }

    /// A fixed random subset of the bank with about `budget / queries` patches (at least 2048).
    fn sample_matrix(&self, budget: usize) -> Result<&BankMatrix> {
        if let Some(m) = self.sample.get() {
            return Ok(m);
        }
        let n = (budget / self.queries.len().max(1)).max(2048);
        let m = BankMatrix::subset(&self.bank, n, self.bank.len() as u64)?;
        Ok(self.sample.get_or_init(|| m))
    }

    /// `E[x | u]` and `Var[x | u]` for `u = x + N(0, diag(s2))` at sampler noise level `sigma`
    /// (which sets τ and the search), for batch element `slot`. `s2` holds one variance per
    /// pixel (shared by its channels) or one per value (pixel × channel, channels last).
    pub fn estimate(&self, u: &Plane, s2: &[f32], sigma: f64, slot: usize) -> Result<Estimate> {
        let (w, h, c) = (u.width, u.height, u.channels);
        let per_value = s2.len() == w * h * c && c > 1;
        if (w, h) != (self.queries.width, self.queries.height) || !(s2.len() == w * h || per_value)
        {
            return Err(Error::shape(
                "patch denoiser input",
                format!(
                    "{}×{} with one variance per pixel or per value",
                    self.queries.width, self.queries.height
                ),
                format!("{w}×{h} with {} variances", s2.len()),
            ));
        }
        let bank_channels = self.bank.sources.first().map_or(c, |s| s.image.channels);
        if bank_channels != c {
            return Err(Error::shape("patch denoiser channels", bank_channels, c));
        }
        let tau = self.cfg.tau_at(sigma) as f32;
        let tau2 = tau * tau;
        let lambda_values: Vec<f32> = s2
            .iter()
            .map(|&s| 1.0 / (s.max(0.0) + tau2).max(1e-10))
            .collect();
        let lambda = if per_value {
            Precision::per_value(&lambda_values, w, c)
        } else {
            Precision::per_pixel(&lambda_values, w, c)
        };
        let work = self.queries.len().saturating_mul(self.bank.len());
        // High noise on a big bank: the weights are nearly flat, and a random subset of the
        // bank estimates the sums.
        let (exact, field_search, subsample) = match self.cfg.search {
            Search::Exact => (true, None, None),
            Search::Field(f) => (false, Some(f), None),
            Search::Auto {
                field,
                exact_above,
                exact_budget,
            } => {
                let small = work <= exact_budget;
                let exact = sigma >= exact_above || small;
                (
                    exact,
                    Some(field),
                    (exact && !small).then_some(exact_budget),
                )
            }
        };
        let seed = hash_plane(u);
        // The colours shift; a pyramid level's detail channel does not.
        let shift = Shift::new(self.cfg.shift, c.min(3));
        let moments = if exact || self.queries.is_empty() {
            let matrix = match subsample {
                Some(budget) => self.sample_matrix(budget)?,
                None => self.matrix()?,
            };
            let (m, top) = exact_moments(
                u,
                Metric { lambda, shift },
                &self.queries,
                &self.bank,
                matrix,
                field_search.map(|f| f.k),
            )?;
            if let Some(top) = top {
                // The best matches of the exact sums start the field for lower noise levels.
                let k = field_search.map_or(1, |f| f.k.min(self.bank.len()).max(1));
                let mut st = self.lock();
                if st.slots.len() <= slot {
                    st.slots.resize_with(slot + 1, Slot::default);
                }
                st.slots[slot].field = Some(Field {
                    k,
                    dist: vec![f32::INFINITY; top.len()],
                    entries: top,
                });
            }
            QueryMoments::Dense(m)
        } else {
            let search = field_search.unwrap_or_default();
            let taken = {
                let mut st = self.lock();
                if st.slots.len() <= slot {
                    st.slots.resize_with(slot + 1, Slot::default);
                }
                let s = &mut st.slots[slot];
                s.calls += 1;
                (s.field.take(), s.calls)
            };
            let mut field = taken
                .0
                .filter(|f| f.entries.len() == self.queries.len() * f.k);
            let mut field = field.take().unwrap_or_else(|| {
                Field::random(&self.queries, &self.bank, search.k, seed ^ taken.1)
            });
            let m = field.search_and_weigh(
                u,
                Metric { lambda, shift },
                &self.queries,
                &self.bank,
                &search,
                seed ^ taken.1.wrapping_mul(0x2545_F491_4F6C_DD1D),
            );
            self.lock().slots[slot].field = Some(field);
            QueryMoments::Sparse(m)
        };
        let est = self.aggregate(u, s2, tau2, &moments);
        {
            let mut st = self.lock();
            let mut sorted = est.ess.clone();
            sorted.sort_by(f32::total_cmp);
            let median = sorted.get(sorted.len() / 2).copied().unwrap_or(f32::NAN);
            let copying =
                est.ess.iter().filter(|&&e| e < 1.5).count() as f32 / est.ess.len().max(1) as f32;
            st.log.push(EssRecord {
                sigma,
                median,
                copying,
                exact,
            });
            if st.slots.len() <= slot {
                st.slots.resize_with(slot + 1, Slot::default);
            }
            st.slots[slot].variance = Some(est.variance.clone());
        }
        Ok(est)
    }

    /// The image `field` says: each query window takes its best match (the field's first
    /// entry) whole, and each covered pixel the window-weighted average of those copies (the
    /// voting step of exemplar EM); `u` elsewhere.
    pub fn render(&self, field: &Field, u: &Plane) -> Result<Plane> {
        let k = field.k;
        if field.entries.len() != self.queries.len() * k || k == 0 {
            return Err(Error::shape(
                "nearest-neighbour field",
                self.queries.len() * k.max(1),
                field.entries.len(),
            ));
        }
        let n = self.queries.len();
        let moments = QueryMoments::Sparse(SparseWeights {
            k: 1,
            entries: (0..n).map(|q| field.entries[q * k]).collect(),
            weights: vec![1.0; n],
            ess: vec![1.0; n],
            channels: 0,
            shifts: Vec::new(),
            shift_var: Vec::new(),
        });
        let flat = vec![1.0; u.width * u.height];
        Ok(self.aggregate(u, &flat, 0.0, &moments).mean)
    }

    /// Per-query estimates to per-pixel ones: window-weighted averages over the queries that
    /// cover each pixel. In parallel blocks of output rows; each block reads the rows of the
    /// query windows that fall in it, so nothing is written twice and nothing is recomputed.
    fn aggregate(&self, u: &Plane, s2: &[f32], tau2: f32, m: &QueryMoments) -> Estimate {
        use rayon::prelude::*;
        let (w, h, c) = (u.width, u.height, u.channels);
        let p = self.cfg.patch;
        let window = window_weights(p, self.cfg.window);
        const BLOCK: usize = 16;
        let corners = &self.queries.corners;
        let mut out = u.clone();
        let per_value = s2.len() == w * h * c && c > 1;
        // Where no query reaches, the variance stays the input's (averaged over channels).
        let mut variance: Vec<f32> = if per_value {
            s2.chunks_exact(c)
                .map(|v| v.iter().map(|x| x.max(0.0)).sum::<f32>() / c as f32)
                .collect()
        } else {
            s2.iter().map(|v| v.max(0.0)).collect()
        };
        out.data
            .par_chunks_mut(BLOCK * w * c)
            .zip(variance.par_chunks_mut(BLOCK * w))
            .enumerate()
            .for_each(|(block, (out_rows, var_rows))| {
                let y0 = block * BLOCK;
                let y1 = (y0 + BLOCK).min(h);
                let mut num = vec![0.0_f32; (y1 - y0) * w * c];
                let mut sq = vec![0.0_f32; (y1 - y0) * w * c];
                let mut den = vec![0.0_f32; (y1 - y0) * w];
                let mut mean = vec![0.0_f32; p * c];
                let mut second = vec![0.0_f32; p * c];
                // Queries whose windows reach rows y0..y1.
                let first = corners.partition_point(|q| (q.1 as usize) + p <= y0);
                let last = corners.partition_point(|q| (q.1 as usize) < y1);
                for (qi, corner) in corners.iter().enumerate().take(last).skip(first) {
                    let (qx, qy) = (corner.0 as usize, corner.1 as usize);
                    for dy in y0.saturating_sub(qy)..p.min(y1 - qy) {
                        let row = qy + dy;
                        m.row(&self.bank, qi, dy, &mut mean, &mut second);
                        for dx in 0..p {
                            let pix = row * w + qx + dx;
                            let local = (row - y0) * w + qx + dx;
                            let om = window[dy * p + dx];
                            den[local] += om;
                            for ch in 0..c {
                                let s = if per_value { s2[pix * c + ch] } else { s2[pix] }.max(0.0);
                                let g = tau2 / (tau2 + s).max(1e-10);
                                let k = dx * c + ch;
                                let uj = u.data[pix * c + ch];
                                let est = mean[k] + g * (uj - mean[k]);
                                let spread = (second[k] - mean[k] * mean[k]).max(0.0);
                                let var = (1.0 - g) * (1.0 - g) * spread + g * s;
                                num[local * c + ch] += om * est;
                                sq[local * c + ch] += om * (var + est * est);
                            }
                        }
                    }
                }
                for local in 0..(y1 - y0) * w {
                    if den[local] > 0.0 {
                        let mut v = 0.0;
                        for ch in 0..c {
                            let mu = num[local * c + ch] / den[local];
                            out_rows[local * c + ch] = mu;
                            v += (sq[local * c + ch] / den[local] - mu * mu).max(0.0);
                        }
                        var_rows[local] = v / c as f32;
                    }
                }
            });
        Estimate {
            mean: out,
            variance,
            ess: m.ess().to_vec(),
        }
    }

    fn denoise_batch(&self, x: &Tensor, s2: &Tensor, sigma: f64) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let xs = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let s2_batch = s2.dim(0)?;
        let s2s = s2
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(xs.len());
        for i in 0..b {
            let u = Plane::from_chw(&xs[i * c * h * w..(i + 1) * c * h * w], (c, h, w));
            let j = if s2_batch == 1 { 0 } else { i };
            let est = self.estimate(&u, &s2s[j * h * w..(j + 1) * h * w], sigma, i)?;
            out.extend(est.mean.to_chw());
        }
        Ok(Tensor::from_vec(out, (b, c, h, w), x.device())?.to_dtype(x.dtype())?)
    }
}

/// A seed from an image's values: the random search of batch element `i` then depends on that
/// element alone, not on its place in the batch.
/// The Gaussian weights of a `p × p` window's pixels in the aggregation of overlapping
/// estimates (standard deviation `window` times the half-width; `f64::INFINITY`: uniform). They
/// never reach zero, so every covered pixel gets a weight.
pub(super) fn window_weights(p: usize, window: f64) -> Vec<f32> {
    let r = (p / 2) as f64;
    let sw = window * r.max(0.5);
    (0..p * p)
        .map(|k| {
            let (dy, dx) = ((k / p) as f64 - r, (k % p) as f64 - r);
            let v = (-(dy * dy + dx * dx) / (2.0 * sw * sw)).exp();
            v.max(1e-4) as f32
        })
        .collect()
}

fn hash_plane(u: &Plane) -> u64 {
    u.data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, v| {
        (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01b3)
    })
}

impl PosteriorDenoiser for PatchDenoiser {
    /// The pivot `μ*` denoised under the pivot's own per-pixel variance `diag(Σ*)` (exact for
    /// masks, whose `Σ*` is diagonal; for other operators the diagonal of `Σ*` stands in for it).
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        let s2 = problem.pivot_variance(Interpolant::edm(sigma))?;
        self.denoise_batch(mu, &s2, sigma)
    }
}

impl Denoiser for PatchDenoiser {
    /// The unconditional denoiser: every pixel has noise variance σ².
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let s2 = Tensor::full((sigma * sigma) as f32, (1, 1, h, w), x.device())?;
        self.denoise_batch(x, &s2, sigma)
    }
}

/// Entries of a field, for tests and diagnostics.
#[doc(hidden)]
pub fn field_entries(field: &Field) -> &[Entry] {
    &field.entries
}
