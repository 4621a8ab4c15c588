//! The two ways the patch denoiser weighs the bank for a query patch `u` with precisions
//! `λ_j = 1/(s_j² + τ²)`, one per pixel or one per value ([`Precision`]):
//!
//! - [`exact_moments`]: every bank patch. The logits `Σ_j λ_j u_j b_ij − ½ Σ_j λ_j b_ij²` of a
//!   block of queries are one matrix product of `[λ⊙u, −½λ]` with the bank rows `[b_i, b_i²]`;
//!   the softmax is streamed over bank chunks (running maximum, rescaled sums), so no
//!   queries × bank matrix is ever held, and a second product with the same rows gives
//!   `Σ w_i b_i` and `Σ w_i b_i²` at once.
//! - [`Field`]: a k-nearest-neighbour field found by PatchMatch (Barnes et al. 2009) —
//!   propagation from the neighbouring queries, random search around the current matches and a
//!   few draws from the whole bank — under the exact anisotropic distance
//!   `Σ_j λ_j (u_j − b_ij)²`, kept from one denoiser call to the next, with exact weights over
//!   its `k` patches. Where the weights are concentrated (low σ) the `k` best patches carry
//!   nearly all the mass; where they are flat (high σ), the exact sums are used instead.
//!
//! Both take an optional [`Shift`] prior (each window may move by a constant per colour
//! channel), integrated out in closed form: the exact sums add one product per channel for
//! the shift's residuals and one for its share of the moments.

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use rayon::prelude::*;

use super::bank::{Bank, Entry, Plane};
use crate::Result;

/// Bank patches per matrix product in [`exact_moments`].
const BANK_CHUNK: usize = 2048;
/// Queries per block in [`exact_moments`].
const QUERY_BLOCK: usize = 1024;

/// The precisions `λ` of a query image: one per pixel (shared by its channels: the masks'
/// diagonal `Σ*`) or one per value (a `Σ*` that is diagonal in a transformed basis, such as
/// super-resolution's block basis, where a pixel's channels carry different noise).
#[derive(Debug, Clone, Copy)]
pub struct Precision<'a> {
    values: &'a [f32],
    width: usize,
    channels: usize,
    per_value: bool,
}

impl<'a> Precision<'a> {
    /// One precision per pixel of a `width`-wide image with `channels` channels.
    pub fn per_pixel(values: &'a [f32], width: usize, channels: usize) -> Self {
        Self {
            values,
            width,
            channels,
            per_value: false,
        }
    }

    /// One precision per value (pixel × channel, channels last).
    pub fn per_value(values: &'a [f32], width: usize, channels: usize) -> Self {
        Self {
            values,
            width,
            channels,
            per_value: true,
        }
    }

    /// Whether each value has its own precision.
    pub fn is_per_value(&self) -> bool {
        self.per_value
    }

    /// Row `dy` of the `p`-wide window at `(x, y)`: `p` values, or `p · channels` per value.
    #[inline]
    fn row(&self, x: usize, y: usize, dy: usize, p: usize) -> &'a [f32] {
        let pix = (y + dy) * self.width + x;
        if self.per_value {
            &self.values[pix * self.channels..][..p * self.channels]
        } else {
            &self.values[pix..][..p]
        }
    }

    /// The precision of value `ch` of entry `dx` of a row from [`Self::row`].
    #[inline]
    fn at(&self, row: &[f32], dx: usize, ch: usize) -> f32 {
        if self.per_value {
            row[dx * self.channels + ch]
        } else {
            row[dx]
        }
    }
}

/// Where the queries are: top-left corners of `p × p` windows of a `width × height` image.
#[derive(Debug, Clone)]
pub struct Queries {
    /// Patch side.
    pub patch: usize,
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Top-left corners `(x, y)`, row-major order.
    pub corners: Vec<(u32, u32)>,
    /// Per window position (`(W − p + 1) × (H − p + 1)`): the query index, or `u32::MAX`.
    pub index: Vec<u32>,
}

impl Queries {
    /// Every window that holds at least one pixel of `roi` (all windows when `roi` is `None`).
    pub fn new(width: usize, height: usize, patch: usize, roi: Option<&[bool]>) -> Self {
        let (cols, rows) = (
            (width + 1).saturating_sub(patch),
            (height + 1).saturating_sub(patch),
        );
        let touches = match roi {
            None => vec![true; cols * rows],
            Some(roi) => super::bank::valid_windows(roi, width, height, patch)
                .into_iter()
                .map(|clear| !clear)
                .collect(),
        };
        let mut corners = Vec::new();
        let mut index = vec![u32::MAX; cols * rows];
        for y in 0..rows {
            for x in 0..cols {
                if touches[y * cols + x] {
                    index[y * cols + x] = corners.len() as u32;
                    corners.push((x as u32, y as u32));
                }
            }
        }
        Self {
            patch,
            width,
            height,
            corners,
            index,
        }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.corners.len()
    }

    /// Whether there is no query.
    pub fn is_empty(&self) -> bool {
        self.corners.is_empty()
    }

    fn cols(&self) -> usize {
        (self.width + 1).saturating_sub(self.patch)
    }

    /// The query at window position `(x, y)`, if any.
    #[inline]
    fn at(&self, x: isize, y: isize) -> Option<usize> {
        let cols = self.cols() as isize;
        let rows = (self.height + 1).saturating_sub(self.patch) as isize;
        if x < 0 || y < 0 || x >= cols || y >= rows {
            return None;
        }
        let i = self.index[(y * cols + x) as usize];
        (i != u32::MAX).then_some(i as usize)
    }
}

/// Per query: `Σ w_i b_i` and `Σ w_i b_i²` over the bank (each `d` values) and the effective
/// sample size `1/Σ w_i²`.
#[derive(Debug, Clone)]
pub struct Moments {
    /// Values per patch.
    pub dim: usize,
    /// `Q × d` weighted means.
    pub mean: Vec<f32>,
    /// `Q × d` weighted second moments.
    pub second: Vec<f32>,
    /// Per query, `1/Σ w²`.
    pub ess: Vec<f32>,
    /// With a shift prior, per query and channel the posterior variance of a window's shift
    /// (`Q × C`, the same for every bank patch); empty without one.
    pub shift_var: Vec<f32>,
}

impl Moments {
    pub(crate) fn zeros(q: usize, dim: usize) -> Self {
        Self {
            dim,
            mean: vec![0.0; q * dim],
            second: vec![0.0; q * dim],
            ess: vec![0.0; q],
            shift_var: Vec::new(),
        }
    }
}

/// How a query window is compared with a bank patch: the query's precisions, and the shift
/// prior if any.
#[derive(Debug, Clone, Copy)]
pub struct Metric<'a> {
    /// Per pixel or per value, `λ = 1/(s² + τ²)`.
    pub lambda: Precision<'a>,
    /// The shift prior (`None`: windows as they are).
    pub shift: Option<Shift>,
}

impl<'a> Metric<'a> {
    /// The distance `Σ_j λ_j (u_j − b_j)²`, with no shift.
    pub fn plain(lambda: Precision<'a>) -> Self {
        Self {
            lambda,
            shift: None,
        }
    }
}

/// Most channels a shifted window has ([`Shift`]).
pub const SHIFT_CHANNELS: usize = 4;

/// The shift prior: each window of the bank may be moved by a constant per channel, drawn from
/// `N(0, s²)` (a local change of brightness and colour). For a query `u` with precisions `λ`
/// and a bank patch `b`, integrating the shift out leaves the distance
/// `Σ_j λ_j r_j² − Σ_c R_c² / P_c` with `r = u − b`, `R_c = Σ_{j ∈ c} λ_j r_j` and
/// `P_c = 1/s² + Σ_{j ∈ c} λ_j`, and the shift's posterior `N(R_c / P_c, 1 / P_c)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shift {
    /// `1/s²`.
    inv_var: f32,
    /// The leading channels that shift (the colours; a pyramid level's detail channel does
    /// not), at most [`SHIFT_CHANNELS`].
    channels: usize,
}

impl Shift {
    /// The shift prior of standard deviation `s` on the first `channels` channels (`None`
    /// when `s` is 0: windows as they are).
    pub fn new(s: f64, channels: usize) -> Option<Self> {
        (s > 0.0 && s.is_finite() && channels > 0).then(|| Self {
            inv_var: (1.0 / (s * s)) as f32,
            channels: channels.min(SHIFT_CHANNELS),
        })
    }

    /// The channels that shift in an image of `c` channels.
    fn shifted(self, c: usize) -> usize {
        self.channels.min(c)
    }

    /// `P_c` of the query window at `(qx, qy)`.
    fn precisions(
        self,
        lambda: Precision<'_>,
        (qx, qy): (usize, usize),
        p: usize,
        c: usize,
    ) -> [f32; SHIFT_CHANNELS] {
        let cs = self.shifted(c);
        let mut out = [0.0; SHIFT_CHANNELS];
        for dy in 0..p {
            let lr = lambda.row(qx, qy, dy, p);
            for dx in 0..p {
                for (ch, o) in out.iter_mut().enumerate().take(cs) {
                    *o += lambda.at(lr, dx, ch);
                }
            }
        }
        for o in out.iter_mut().take(cs) {
            *o += self.inv_var;
        }
        out
    }
}

/// `Σ_j λ_j r_j²` and `R_c` (for the first `cs` channels) between the query window at
/// `(qx, qy)` and bank entry `e`.
#[inline]
fn residual_sums(
    u: &Plane,
    lambda: Precision<'_>,
    (qx, qy): (usize, usize),
    bank: &Bank,
    e: Entry,
    cs: usize,
) -> (f32, [f32; SHIFT_CHANNELS]) {
    let (p, c) = (bank.patch, u.channels);
    let mut sq = 0.0_f32;
    let mut r = [0.0_f32; SHIFT_CHANNELS];
    for dy in 0..p {
        let ur = u.row(qx, qy, dy, p);
        let br = bank.row(e, dy);
        let lr = lambda.row(qx, qy, dy, p);
        for dx in 0..p {
            for ch in 0..c {
                let l = lambda.at(lr, dx, ch);
                let d = ur[dx * c + ch] - br[dx * c + ch];
                sq += l * d * d;
                if ch < cs {
                    r[ch] += l * d;
                }
            }
        }
    }
    (sq, r)
}

/// The distance of [`distance`] with the shift integrated out ([`Shift`]), and the shift's
/// posterior mean per channel.
#[inline]
fn shifted_distance(
    u: &Plane,
    lambda: Precision<'_>,
    q: (usize, usize),
    bank: &Bank,
    e: Entry,
    shift: Shift,
    precisions: &[f32; SHIFT_CHANNELS],
) -> (f32, [f32; SHIFT_CHANNELS]) {
    let cs = shift.shifted(u.channels);
    let (sq, r) = residual_sums(u, lambda, q, bank, e, cs);
    let mut d = sq;
    let mut mean = [0.0; SHIFT_CHANNELS];
    for ch in 0..cs {
        d -= r[ch] * r[ch] / precisions[ch];
        mean[ch] = r[ch] / precisions[ch];
    }
    // The subtraction can round below zero where the fit is perfect.
    (d.max(0.0), mean)
}

/// The bank (or a subset of it) as the rows `[b_i, b_i ⊙ b_i]` of the matrix products, in
/// chunks.
#[derive(Debug)]
pub struct BankMatrix {
    chunks: Vec<Tensor>,
    entries: Vec<Entry>,
}

impl BankMatrix {
    /// Lays out every bank patch as a row `[b, b²]`.
    pub fn new(bank: &Bank) -> Result<Self> {
        Self::of(bank, bank.entries.clone())
    }

    /// A uniform random subset of `n` bank patches (seeded): where the weights are nearly flat
    /// (high noise) its sums are an unbiased estimate of the whole bank's, at a fraction of the
    /// cost.
    pub fn subset(bank: &Bank, n: usize, seed: u64) -> Result<Self> {
        if n >= bank.len() {
            return Self::new(bank);
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picked = rand::seq::index::sample(&mut rng, bank.len(), n).into_vec();
        picked.sort_unstable();
        Self::of(bank, picked.into_iter().map(|i| bank.entries[i]).collect())
    }

    fn of(bank: &Bank, entries: Vec<Entry>) -> Result<Self> {
        let d = bank.dim();
        let mut chunks = Vec::new();
        for part in entries.chunks(BANK_CHUNK) {
            let mut rows = Vec::with_capacity(part.len() * 2 * d);
            for &e in part {
                let b = bank.patch_values(e);
                rows.extend_from_slice(&b);
                rows.extend(b.iter().map(|v| v * v));
            }
            chunks.push(Tensor::from_vec(rows, (part.len(), 2 * d), &Device::Cpu)?);
        }
        Ok(Self { chunks, entries })
    }

    /// Patches in the matrix.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the matrix holds no patch.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The query rows `[λ ⊙ u, −½ λ]` of queries `first..first + n`.
fn query_rows(
    u: &Plane,
    lambda: Precision<'_>,
    queries: &Queries,
    range: std::ops::Range<usize>,
) -> Vec<f32> {
    let (p, c) = (queries.patch, u.channels);
    let d = p * p * c;
    let mut out = vec![0.0; range.len() * 2 * d];
    out.par_chunks_mut(2 * d)
        .zip(&queries.corners[range])
        .for_each(|(row, &(qx, qy))| {
            let (qx, qy) = (qx as usize, qy as usize);
            let mut k = 0;
            for dy in 0..p {
                let ur = u.row(qx, qy, dy, p);
                let lr = lambda.row(qx, qy, dy, p);
                for dx in 0..p {
                    for ch in 0..c {
                        let l = lambda.at(lr, dx, ch);
                        row[k] = l * ur[dx * c + ch];
                        row[d + k] = -0.5 * l;
                        k += 1;
                    }
                }
            }
        });
    out
}

/// What the exact sums need of a block of queries under a shift prior.
struct ShiftRows {
    /// `(n · C) × d`: row `(i, c)` holds `λ` on channel `c` of query `i`'s window, 0 elsewhere.
    rows: Tensor,
    /// `n × C`: `Σ_{j ∈ c} λ_j u_j`.
    sums: Vec<f32>,
    /// `n × C`: `P_c`.
    precisions: Vec<f32>,
}

fn shift_rows(
    u: &Plane,
    lambda: Precision<'_>,
    queries: &Queries,
    range: std::ops::Range<usize>,
    shift: Shift,
) -> Result<ShiftRows> {
    let (p, c) = (queries.patch, u.channels);
    let cs = shift.shifted(c);
    let d = p * p * c;
    let n = range.len();
    let mut rows = vec![0.0_f32; n * cs * d];
    let mut sums = vec![0.0_f32; n * cs];
    let mut precisions = vec![0.0_f32; n * cs];
    rows.par_chunks_mut(cs * d)
        .zip(sums.par_chunks_mut(cs))
        .zip(precisions.par_chunks_mut(cs))
        .zip(&queries.corners[range])
        .for_each(|(((r, a), pr), &(qx, qy))| {
            let (qx, qy) = (qx as usize, qy as usize);
            let mut k = 0;
            for dy in 0..p {
                let ur = u.row(qx, qy, dy, p);
                let lr = lambda.row(qx, qy, dy, p);
                for dx in 0..p {
                    for ch in 0..c {
                        if ch < cs {
                            let l = lambda.at(lr, dx, ch);
                            r[ch * d + k] = l;
                            a[ch] += l * ur[dx * c + ch];
                        }
                        k += 1;
                    }
                }
            }
            let ps = shift.precisions(lambda, (qx, qy), p, c);
            pr.copy_from_slice(&ps[..cs]);
        });
    Ok(ShiftRows {
        rows: Tensor::from_vec(rows, (n * cs, d), &Device::Cpu)?,
        sums,
        precisions,
    })
}

/// Weighted moments of the whole bank for every query (the exact sums), and with `top_k`, each
/// query's `k` highest-weighted bank entries (`Q × k`, best first).
pub fn exact_moments(
    u: &Plane,
    metric: Metric<'_>,
    queries: &Queries,
    bank: &Bank,
    matrix: &BankMatrix,
    top_k: Option<usize>,
) -> Result<(Moments, Option<Vec<Entry>>)> {
    let Metric { lambda, shift } = metric;
    let d = bank.dim();
    let q = queries.len();
    let c = u.channels;
    let cs = shift.map_or(0, |sh| sh.shifted(c));
    let mut out = Moments::zeros(q, d);
    if shift.is_some() {
        out.shift_var = vec![0.0; q * c];
    }
    let k = top_k.map(|k| k.min(matrix.len()).max(1));
    let mut tops: Vec<(f32, u32)> = vec![(f32::NEG_INFINITY, 0); k.unwrap_or(0) * q];
    let mut start = 0;
    while start < q {
        let n = QUERY_BLOCK.min(q - start);
        let a = Tensor::from_vec(
            query_rows(u, lambda, queries, start..start + n),
            (n, 2 * d),
            &Device::Cpu,
        )?;
        let mut max = vec![f32::NEG_INFINITY; n];
        let mut sum = vec![0.0_f32; n];
        let mut sum_sq = vec![0.0_f32; n];
        let mut acc = vec![0.0_f32; n * 2 * d];
        // With a shift: per query and channel `Σ λ u` and `P_c`, the rows that weigh one
        // channel of a patch by `λ` (so a product gives `Σ λ b` per bank patch), and the sums
        // `Σ w ô`, `Σ w ô²` and `Σ w ô b` (per value).
        let shifted = shift
            .map(|sh| shift_rows(u, lambda, queries, start..start + n, sh))
            .transpose()?;
        let mut acc_shift = vec![0.0_f32; n * cs * 2];
        let mut acc_cross = vec![0.0_f32; if shift.is_some() { n * d } else { 0 }];
        let mut offset = 0;
        for chunk in &matrix.chunks {
            let nc = chunk.dim(0)?;
            let mut logits = a.matmul(&chunk.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            // The shift's posterior mean per (query, channel) and bank patch, and its share of
            // the logits: `+½ R_c² / P_c = ½ ô² P_c` (the logits are `−½` the distance).
            let shift_means = match &shifted {
                Some(sr) => {
                    let b = sr
                        .rows
                        .matmul(&chunk.narrow(1, 0, d)?.t()?)?
                        .flatten_all()?
                        .to_vec1::<f32>()?;
                    let mut means = b;
                    means
                        .par_chunks_mut(nc * cs)
                        .zip(logits.par_chunks_mut(nc))
                        .enumerate()
                        .for_each(|(i, (m, l))| {
                            for ch in 0..cs {
                                let (a_c, p_c) = (sr.sums[i * cs + ch], sr.precisions[i * cs + ch]);
                                for (mv, lv) in
                                    m[ch * nc..(ch + 1) * nc].iter_mut().zip(l.iter_mut())
                                {
                                    let o = (a_c - *mv) / p_c;
                                    *mv = o;
                                    *lv += 0.5 * o * o * p_c;
                                }
                            }
                        });
                    Some(means)
                }
                None => None,
            };
            if let Some(k) = k {
                tops[start * k..(start + n) * k]
                    .par_chunks_mut(k)
                    .zip(logits.par_chunks(nc))
                    .for_each(|(best, row)| {
                        for (j, &v) in row.iter().enumerate() {
                            if v > best[k - 1].0 {
                                let mut i = k - 1;
                                while i > 0 && best[i - 1].0 < v {
                                    best[i] = best[i - 1];
                                    i -= 1;
                                }
                                best[i] = (v, (offset + j) as u32);
                            }
                        }
                    });
            }
            offset += nc;
            let mut e = logits;
            // Per query: rescale what was summed to the new maximum, then exponentiate.
            let scales: Vec<f32> = e
                .par_chunks_mut(nc)
                .zip(max.par_iter_mut())
                .zip(sum.par_iter_mut().zip(sum_sq.par_iter_mut()))
                .map(|((row, m), (s, s2))| {
                    let chunk_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let new_max = m.max(chunk_max);
                    let scale = if m.is_finite() {
                        (*m - new_max).exp()
                    } else {
                        0.0
                    };
                    *m = new_max;
                    let (mut cs, mut cs2) = (0.0_f32, 0.0_f32);
                    for v in row.iter_mut() {
                        *v = (*v - new_max).exp();
                        cs += *v;
                        cs2 += *v * *v;
                    }
                    *s = *s * scale + cs;
                    *s2 = *s2 * scale * scale + cs2;
                    scale
                })
                .collect();
            if let Some(mut means) = shift_means {
                // `Σ w ô` and `Σ w ô²` per (query, channel); then `w ⊙ ô` for the products.
                means
                    .par_chunks_mut(nc * cs)
                    .zip(e.par_chunks(nc))
                    .zip(acc_shift.par_chunks_mut(2 * cs))
                    .zip(scales.par_iter())
                    .for_each(|(((m, w), acc), &scale)| {
                        for ch in 0..cs {
                            let (mut s1, mut s2) = (0.0_f32, 0.0_f32);
                            for (mv, &wv) in m[ch * nc..(ch + 1) * nc].iter_mut().zip(w) {
                                s1 += wv * *mv;
                                s2 += wv * *mv * *mv;
                                *mv *= wv;
                            }
                            acc[2 * ch] = acc[2 * ch] * scale + s1;
                            acc[2 * ch + 1] = acc[2 * ch + 1] * scale + s2;
                        }
                    });
                let wo = Tensor::from_vec(means, (n * cs, nc), &Device::Cpu)?;
                let cross = wo
                    .matmul(&chunk.narrow(1, 0, d)?)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                acc_cross
                    .par_chunks_mut(d)
                    .zip(cross.par_chunks(d * cs))
                    .zip(scales.par_iter())
                    .for_each(|((a, rows), &scale)| {
                        for (j, x) in a.iter_mut().enumerate() {
                            if j % c < cs {
                                *x = *x * scale + rows[(j % c) * d + j];
                            }
                        }
                    });
            }
            let w = Tensor::from_vec(e, (n, nc), &Device::Cpu)?;
            let part = w.matmul(chunk)?.flatten_all()?.to_vec1::<f32>()?;
            acc.par_chunks_mut(2 * d)
                .zip(part.par_chunks(2 * d))
                .zip(scales.par_iter())
                .for_each(|((a, p), &s)| {
                    for (x, y) in a.iter_mut().zip(p) {
                        *x = *x * s + y;
                    }
                });
        }
        for i in 0..n {
            let inv = 1.0 / sum[i];
            let row = &acc[i * 2 * d..(i + 1) * 2 * d];
            let o = (start + i) * d;
            for k in 0..d {
                out.mean[o + k] = row[k] * inv;
                out.second[o + k] = row[d + k] * inv;
            }
            if let Some(sr) = &shifted {
                // The moments of `b + ô`: `Σ w (b + ô)` and `Σ w (b + ô)²`.
                let sh = &acc_shift[i * 2 * cs..(i + 1) * 2 * cs];
                let cross = &acc_cross[i * d..(i + 1) * d];
                for (k, &cr) in cross.iter().enumerate() {
                    let ch = k % c;
                    if ch < cs {
                        out.mean[o + k] += sh[2 * ch] * inv;
                        out.second[o + k] += (2.0 * cr + sh[2 * ch + 1]) * inv;
                    }
                }
                // Channels that do not shift keep a variance of 0.
                for ch in 0..cs {
                    out.shift_var[(start + i) * c + ch] = 1.0 / sr.precisions[i * cs + ch];
                }
            }
            out.ess[start + i] = sum[i] * sum[i] / sum_sq[i];
        }
        start += n;
    }
    let top = k.map(|_| {
        tops.iter()
            .map(|&(_, i)| matrix.entries[i as usize])
            .collect()
    });
    Ok((out, top))
}

/// `Σ_j λ_j (u_j − b_j)²` between the query window at `(qx, qy)` and bank entry `e`, stopping
/// early (with a value above `bound`) once the partial sum passes `bound`.
#[inline]
fn distance(
    u: &Plane,
    lambda: Precision<'_>,
    (qx, qy): (usize, usize),
    bank: &Bank,
    e: Entry,
    bound: f32,
) -> f32 {
    let (p, c) = (bank.patch, u.channels);
    let mut acc = 0.0_f32;
    for dy in 0..p {
        let ur = u.row(qx, qy, dy, p);
        let br = bank.row(e, dy);
        let lr = lambda.row(qx, qy, dy, p);
        let mut row = 0.0_f32;
        if lambda.is_per_value() {
            for ((a, b), l) in ur.iter().zip(br).zip(lr) {
                row += l * (a - b) * (a - b);
            }
        } else if c == 3 {
            for ((a, b), l) in ur.chunks_exact(3).zip(br.chunks_exact(3)).zip(lr) {
                let (d0, d1, d2) = (a[0] - b[0], a[1] - b[1], a[2] - b[2]);
                row += l * (d0 * d0 + d1 * d1 + d2 * d2);
            }
        } else {
            for ((a, b), l) in ur.chunks_exact(c).zip(br.chunks_exact(c)).zip(lr) {
                let s: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
                row += l * s;
            }
        }
        acc += row;
        if acc > bound {
            return acc;
        }
    }
    acc
}

/// A k-nearest-neighbour field: for every query, `k` bank entries sorted by distance.
#[derive(Debug, Clone)]
pub struct Field {
    /// Neighbours per query.
    pub k: usize,
    /// `Q × k` entries.
    pub entries: Vec<Entry>,
    /// `Q × k` distances under the last call's `u` and `λ`.
    pub dist: Vec<f32>,
}

/// PatchMatch settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldSearch {
    /// Neighbours kept per query.
    pub k: usize,
    /// Propagation and random-search sweeps per denoiser call.
    pub sweeps: usize,
    /// Uniform draws from the whole bank per query and sweep.
    pub random_draws: usize,
    /// Largest offset of the random search around each query's best match: `None` starts at
    /// the bank's whole extent and halves down to a pixel (PatchMatch), `Some(r)` starts at
    /// `r` pixels, so the field only moves near where it already is (a finer level refining
    /// the matches its coarser level chose).
    pub radius: Option<usize>,
}

impl Default for FieldSearch {
    fn default() -> Self {
        Self {
            k: 16,
            sweeps: 2,
            random_draws: 2,
            radius: None,
        }
    }
}

/// Rows of window positions per parallel band.
const BAND_ROWS: usize = 8;

impl Field {
    /// A field of `k` distinct random entries per query (the whole bank when it has no more
    /// than `k`).
    pub fn random(queries: &Queries, bank: &Bank, k: usize, seed: u64) -> Self {
        let k = k.min(bank.len()).max(1);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut entries = Vec::with_capacity(queries.len() * k);
        for _ in 0..queries.len() {
            if k == bank.len() {
                entries.extend_from_slice(&bank.entries);
                continue;
            }
            let start = entries.len();
            while entries.len() - start < k {
                let e = bank.entries[rng.random_range(0..bank.len())];
                if !entries[start..].contains(&e) {
                    entries.push(e);
                }
            }
        }
        Self {
            k,
            dist: vec![f32::INFINITY; entries.len()],
            entries,
        }
    }

    /// A field for `queries` from `coarse`, the field of the same bank sources at half the
    /// resolution (the patch size may differ): each match moves to the finer copy of the same
    /// place — window centres doubled, plus the query's own sub-position, reversed where the
    /// source is a mirror image or turned — and an entry that lands outside the finer bank is
    /// replaced by a random one.
    pub fn upsampled(
        coarse: &Self,
        coarse_queries: &Queries,
        coarse_bank: &Bank,
        queries: &Queries,
        bank: &Bank,
        seed: u64,
    ) -> Self {
        let mut field = Self::random(queries, bank, coarse.k, seed);
        let k = field.k;
        let (rc, rf) = (
            (coarse_queries.patch / 2) as isize,
            (queries.patch / 2) as isize,
        );
        let ccols = coarse_queries.cols() as isize;
        let crows = (coarse_queries.height + 1).saturating_sub(coarse_queries.patch) as isize;
        for (qi, &(qx, qy)) in queries.corners.iter().enumerate() {
            // The query's centre, and the coarse window centred over the same place.
            let (fx, fy) = (qx as isize + rf, qy as isize + rf);
            let (sx, sy) = (fx % 2, fy % 2);
            let (cx, cy) = (
                (fx / 2 - rc).clamp(0, (ccols - 1).max(0)),
                (fy / 2 - rc).clamp(0, (crows - 1).max(0)),
            );
            let Some(ci) = coarse_queries.at(cx, cy) else {
                continue;
            };
            let mut n = 0;
            for &e in &coarse.entries[ci * coarse.k..(ci + 1) * coarse.k] {
                let (Some(src_c), Some(src_f)) = (
                    coarse_bank.sources.get(usize::from(e.source)),
                    bank.sources.get(usize::from(e.source)),
                ) else {
                    continue;
                };
                // Centre of the match in the photo's own columns and rows (a mirrored source
                // reverses the columns, a turned one both), doubled, with the query's own
                // half-pixel (reversed with them), and back into the source's.
                let (wc, wf) = (src_c.image.width as isize, src_f.image.width as isize);
                let (hc, hf) = (src_c.image.height as isize, src_f.image.height as isize);
                let (centre_x, centre_y) = (e.x as isize + rc, e.y as isize + rc);
                let flip_x = src_c.mirrored || src_c.turned;
                let fine_x = if flip_x {
                    wf - 1 - (2 * (wc - 1 - centre_x) + (1 - sx))
                } else {
                    2 * centre_x + sx
                };
                let fine_y = if src_c.turned {
                    hf - 1 - (2 * (hc - 1 - centre_y) + (1 - sy))
                } else {
                    2 * centre_y + sy
                };
                let (x, y) = (fine_x - rf, fine_y - rf);
                if x < 0 || y < 0 {
                    continue;
                }
                let fine = Entry {
                    source: e.source,
                    x: x.min(u16::MAX as isize) as u16,
                    y: y.min(u16::MAX as isize) as u16,
                };
                let slot = &mut field.entries[qi * k..(qi + 1) * k];
                if n < k && bank.is_valid(fine) && !slot[..n].contains(&fine) {
                    slot[n] = fine;
                    n += 1;
                }
            }
        }
        field
    }

    /// Improves the field for the current `u` and `λ` (`sweeps` rounds of propagation and
    /// random search, in parallel bands of rows), then returns every query's `k` entries with
    /// exact softmax weights.
    pub fn search_and_weigh(
        &mut self,
        u: &Plane,
        metric: Metric<'_>,
        queries: &Queries,
        bank: &Bank,
        search: &FieldSearch,
        seed: u64,
    ) -> SparseWeights {
        let Metric { lambda, shift } = metric;
        let k = self.k;
        let c = u.channels;
        // With a shift, each query's `P_c`; the shifted distance is not a growing partial sum,
        // so it is computed whole.
        let precisions: Vec<[f32; SHIFT_CHANNELS]> = match shift {
            Some(sh) => queries
                .corners
                .par_iter()
                .map(|&(qx, qy)| {
                    sh.precisions(lambda, (qx as usize, qy as usize), queries.patch, c)
                })
                .collect(),
            None => Vec::new(),
        };
        let dist = |qi: usize, q: (usize, usize), e: Entry, bound: f32| -> f32 {
            match (shift, precisions.get(qi)) {
                (Some(sh), Some(pr)) => shifted_distance(u, lambda, q, bank, e, sh, pr).0,
                _ => distance(u, lambda, q, bank, e, bound),
            }
        };
        // Distances under the new u and λ, sorted.
        self.entries
            .par_chunks_mut(k)
            .zip(self.dist.par_chunks_mut(k))
            .zip(queries.corners.par_iter().enumerate())
            .for_each(|((es, ds), (qi, &(qx, qy)))| {
                let q = (qx as usize, qy as usize);
                for (e, d) in es.iter().zip(ds.iter_mut()) {
                    *d = dist(qi, q, *e, f32::INFINITY);
                }
                sort_pairs(es, ds);
            });
        let rows = (queries.height + 1).saturating_sub(queries.patch);
        let max_radius = bank
            .sources
            .iter()
            .map(|s| s.cols.max(s.rows))
            .max()
            .unwrap_or(1) as isize;
        let max_radius = match search.radius {
            Some(r) => max_radius.min(isize::try_from(r).unwrap_or(isize::MAX)),
            None => max_radius,
        };
        for sweep in 0..search.sweeps {
            let forward = sweep % 2 == 0;
            let snapshot = self.entries.clone();
            // Queries are in row-major order, so a band of rows is a contiguous range.
            let bands: Vec<(usize, usize)> = (0..rows.div_ceil(BAND_ROWS))
                .map(|b| {
                    let (y0, y1) = (b * BAND_ROWS, ((b + 1) * BAND_ROWS).min(rows));
                    let first = queries.corners.partition_point(|c| (c.1 as usize) < y0);
                    let last = queries.corners.partition_point(|c| (c.1 as usize) < y1);
                    (first, last)
                })
                .collect();
            let mut slices: Vec<(usize, &mut [Entry], &mut [f32])> = Vec::new();
            {
                let mut es: &mut [Entry] = &mut self.entries;
                let mut ds: &mut [f32] = &mut self.dist;
                let mut at = 0;
                for &(first, last) in &bands {
                    let (a, rest) = es.split_at_mut((last - at) * k);
                    let (b, rest_d) = ds.split_at_mut((last - at) * k);
                    let skip = (first - at) * k;
                    slices.push((first, &mut a[skip..], &mut b[skip..]));
                    es = rest;
                    ds = rest_d;
                    at = last;
                }
            }
            slices
                .into_par_iter()
                .enumerate()
                .for_each(|(band, (first, es, ds))| {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ (sweep as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            ^ (band as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
                    );
                    let n = es.len() / k;
                    let step: isize = if forward { 1 } else { -1 };
                    for j in 0..n {
                        let local = if forward { j } else { n - 1 - j };
                        let qi = first + local;
                        let (qx, qy) = queries.corners[qi];
                        let q = (qx as usize, qy as usize);
                        // Propagation: the neighbours behind in scan order, their matches
                        // shifted by one (copied first: they may live in this band).
                        let mut proposals: Vec<Entry> = Vec::with_capacity(2 * k + 16);
                        for (dx, dy) in [(-step, 0), (0, -step)] {
                            let Some(ni) = queries.at(qx as isize + dx, qy as isize + dy) else {
                                continue;
                            };
                            let neighbour = if ni >= first && ni < first + n {
                                &es[(ni - first) * k..(ni - first + 1) * k]
                            } else {
                                &snapshot[ni * k..(ni + 1) * k]
                            };
                            proposals.extend(neighbour.iter().filter_map(|e| {
                                let (x, y) = (e.x as isize - dx, e.y as isize - dy);
                                (x >= 0 && y >= 0).then_some(Entry {
                                    source: e.source,
                                    x: x as u16,
                                    y: y as u16,
                                })
                            }));
                        }
                        let (mine_e, mine_d) = (
                            &mut es[local * k..(local + 1) * k],
                            &mut ds[local * k..(local + 1) * k],
                        );
                        let try_entry = |e: Entry, mine_e: &mut [Entry], mine_d: &mut [f32]| {
                            if !bank.is_valid(e) || mine_e.contains(&e) {
                                return;
                            }
                            let worst = mine_d[k - 1];
                            let d = dist(qi, q, e, worst);
                            if d < worst {
                                insert_sorted(mine_e, mine_d, e, d);
                            }
                        };
                        for e in proposals {
                            try_entry(e, mine_e, mine_d);
                        }
                        // Random search around the best match, halving the radius.
                        let best = mine_e[0];
                        let mut radius = max_radius;
                        while radius >= 1 {
                            let x = best.x as isize
                                + rng.random_range(-(radius as i64)..=radius as i64) as isize;
                            let y = best.y as isize
                                + rng.random_range(-(radius as i64)..=radius as i64) as isize;
                            if x >= 0 && y >= 0 {
                                let e = Entry {
                                    source: best.source,
                                    x: x.min(u16::MAX as isize) as u16,
                                    y: y.min(u16::MAX as isize) as u16,
                                };
                                try_entry(e, mine_e, mine_d);
                            }
                            radius /= 2;
                        }
                        for _ in 0..search.random_draws {
                            let e = bank.entries[rng.random_range(0..bank.len())];
                            try_entry(e, mine_e, mine_d);
                        }
                    }
                });
        }
        let mut weights = self.weigh();
        if let Some(sh) = shift {
            // Each entry's shift: its posterior mean, and per query its posterior variance
            // (channels that do not shift keep zeros).
            let cs = sh.shifted(c);
            let mut shifts = vec![0.0_f32; self.entries.len() * c];
            shifts
                .par_chunks_mut(k * c)
                .zip(self.entries.par_chunks(k))
                .zip(queries.corners.par_iter().zip(&precisions))
                .for_each(|((out, es), (&(qx, qy), pr))| {
                    let q = (qx as usize, qy as usize);
                    for (o, &e) in out.chunks_exact_mut(c).zip(es) {
                        let mean = shifted_distance(u, lambda, q, bank, e, sh, pr).1;
                        o[..cs].copy_from_slice(&mean[..cs]);
                    }
                });
            weights.shifts = shifts;
            weights.shift_var = precisions
                .iter()
                .flat_map(|pr| (0..c).map(move |ch| if ch < cs { 1.0 / pr[ch] } else { 0.0 }))
                .collect();
            weights.channels = c;
        }
        weights
    }

    /// Softmax weights of each query's `k` entries from their distances (`Q × k`, normalised)
    /// and each query's effective sample size.
    fn weigh(&self) -> SparseWeights {
        let k = self.k;
        let mut weights = vec![0.0_f32; self.dist.len()];
        let mut ess = vec![0.0_f32; self.dist.len() / k.max(1)];
        weights
            .par_chunks_mut(k)
            .zip(self.dist.par_chunks(k))
            .zip(ess.par_iter_mut())
            .for_each(|((w, ds), ess)| {
                let best = ds.iter().copied().fold(f32::INFINITY, f32::min);
                for (wi, &dd) in w.iter_mut().zip(ds) {
                    *wi = if dd.is_finite() {
                        (-0.5 * (dd - best)).exp()
                    } else {
                        0.0
                    };
                }
                let total: f32 = w.iter().sum();
                let mut sq = 0.0;
                for wi in w.iter_mut() {
                    *wi /= total;
                    sq += *wi * *wi;
                }
                *ess = 1.0 / sq.max(f32::MIN_POSITIVE);
            });
        SparseWeights {
            k,
            entries: self.entries.clone(),
            weights,
            ess,
            channels: 0,
            shifts: Vec::new(),
            shift_var: Vec::new(),
        }
    }
}

/// Per query, `k` bank entries and their normalised weights: the moments are read from the
/// bank when needed, row by row, instead of being held as `Q × d` matrices.
#[derive(Debug, Clone)]
pub struct SparseWeights {
    /// Entries per query.
    pub k: usize,
    /// `Q × k` entries.
    pub entries: Vec<Entry>,
    /// `Q × k` weights, summing to one per query.
    pub weights: Vec<f32>,
    /// Per query, `1/Σ w²`.
    pub ess: Vec<f32>,
    /// Channels of [`Self::shifts`] and [`Self::shift_var`] (0 without a shift prior).
    pub channels: usize,
    /// With a shift prior, per entry its shift's posterior mean per channel (`Q × k × C`);
    /// empty without one.
    pub shifts: Vec<f32>,
    /// With a shift prior, per query and channel the shift's posterior variance (`Q × C`).
    pub shift_var: Vec<f32>,
}

/// What the aggregation reads per query: dense moments (the exact sums) or sparse weights
/// over a few bank entries (the field).
#[derive(Debug, Clone)]
pub enum QueryMoments {
    /// `Σ w b` and `Σ w b²` per query, held.
    Dense(Moments),
    /// A few entries per query with their weights.
    Sparse(SparseWeights),
}

impl QueryMoments {
    /// Per query, the effective sample size.
    pub fn ess(&self) -> &[f32] {
        match self {
            Self::Dense(m) => &m.ess,
            Self::Sparse(s) => &s.ess,
        }
    }

    /// Row `dy` of query `qi`'s weighted mean and second moment (`p · C` values each).
    #[inline]
    pub fn row(&self, bank: &Bank, qi: usize, dy: usize, mean: &mut [f32], second: &mut [f32]) {
        match self {
            Self::Dense(m) => {
                let n = mean.len();
                let o = qi * m.dim + dy * n;
                mean.copy_from_slice(&m.mean[o..o + n]);
                second.copy_from_slice(&m.second[o..o + n]);
                if !m.shift_var.is_empty() {
                    let c = m.shift_var.len() / m.ess.len().max(1);
                    let var = &m.shift_var[qi * c..(qi + 1) * c];
                    for (k, q) in second.iter_mut().enumerate() {
                        *q += var[k % c];
                    }
                }
            }
            Self::Sparse(s) => {
                mean.iter_mut().for_each(|v| *v = 0.0);
                second.iter_mut().for_each(|v| *v = 0.0);
                let es = &s.entries[qi * s.k..(qi + 1) * s.k];
                let ws = &s.weights[qi * s.k..(qi + 1) * s.k];
                if s.shifts.is_empty() {
                    for (&e, &w) in es.iter().zip(ws) {
                        if w == 0.0 {
                            continue;
                        }
                        for ((m, q), &b) in
                            mean.iter_mut().zip(second.iter_mut()).zip(bank.row(e, dy))
                        {
                            *m += w * b;
                            *q += w * b * b;
                        }
                    }
                    return;
                }
                let c = s.channels;
                let shifts = &s.shifts[qi * s.k * c..(qi + 1) * s.k * c];
                for ((&e, &w), o) in es.iter().zip(ws).zip(shifts.chunks_exact(c)) {
                    if w == 0.0 {
                        continue;
                    }
                    for (j, ((m, q), &b)) in mean
                        .iter_mut()
                        .zip(second.iter_mut())
                        .zip(bank.row(e, dy))
                        .enumerate()
                    {
                        let v = b + o[j % c];
                        *m += w * v;
                        *q += w * v * v;
                    }
                }
                let var = &s.shift_var[qi * c..(qi + 1) * c];
                for (j, q) in second.iter_mut().enumerate() {
                    *q += var[j % c];
                }
            }
        }
    }
}

/// Sorts `es` by their distances `ds` (ascending), keeping the pairs together.
pub(super) fn sort_pairs<T: Copy>(es: &mut [T], ds: &mut [f32]) {
    let mut pairs: Vec<(f32, T)> = ds.iter().copied().zip(es.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, (d, e)) in pairs.into_iter().enumerate() {
        ds[i] = d;
        es[i] = e;
    }
}

/// Puts `e` at distance `d` into the sorted `k`-best list, dropping the last; the caller has
/// checked that `d` beats the last.
pub(super) fn insert_sorted<T: Copy>(es: &mut [T], ds: &mut [f32], e: T, d: f32) {
    let k = es.len();
    let mut i = k - 1;
    while i > 0 && ds[i - 1] > d {
        ds[i] = ds[i - 1];
        es[i] = es[i - 1];
        i -= 1;
    }
    ds[i] = d;
    es[i] = e;
}
