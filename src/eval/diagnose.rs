//! `eps-studio diagnose`: the measurements that say whether the networks generate photographs,
//! each beside a classical reference.
//!
//! - **Denoising curve**: PSNR of `D(x0 + σε, σ)` on validation crops over σ from 0.02 to 80,
//!   for the prior and the EPS network (all pixels hidden, so it is an unconditional denoiser
//!   too), next to the input's PSNR and CBM3D (measured by `scripts/cbm3d.py` on the exact
//!   noisy crops this command exports).
//! - **Unconditional samples** of the prior at 128 and 256 pixels, with their texture energy
//!   against real crops of the same size.
//! - **Fills** of object-sized brush masks on validation photos through the product's own
//!   restoration path, scored on the hole ([`super::holes`]) against the biharmonic fill.
//! - **Deblurring and super-resolution** of 256-pixel validation crops at photo scale, against
//!   the blurry input, a tuned Wiener filter and bicubic upsampling.
//!
//! Every part writes its table as markdown and its pictures as PNG.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng as _;
use rand::rngs::StdRng;

use super::holes::{HoleScores, hole_box, hole_scores, laplacian_energy, object_mask};
use super::lpips::Lpips;
use super::reference::{best_wiener, bicubic_upsample, biharmonic_fill, wiener_deconvolve};
use crate::denoiser::Network;
use crate::inverse::{Interpolant, Mask, Problem};
use crate::noise::SeededNoise;
use crate::photo::{Pixels, RgbImage};
use crate::restore::{BlurSpec, Degradation, Models, Rect, Settings, from_tensor, restore};
use crate::sampler::{self, Denoiser, EpsConfig, PosteriorDenoiser, ignore_progress};
use crate::{Error, Result};

use crate::restore::MethodChoice;

/// The noise levels of the denoising curve (image range [-1, 1]).
pub const CURVE_SIGMAS: [f64; 10] = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0, 80.0];

/// Noise levels CBM3D is run at (it is meaningless far above the signal range).
pub const CBM3D_SIGMAS: [f64; 6] = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

/// One row of the denoising curve.
#[derive(Debug, Clone, Copy)]
pub struct CurveRow {
    /// Noise level.
    pub sigma: f64,
    /// Mean PSNR (dB) of the noisy input.
    pub input: f64,
    /// Mean PSNR of the prior's estimate.
    pub prior: Option<f64>,
    /// Mean PSNR of the EPS network's estimate with nothing observed.
    pub eps: Option<f64>,
    /// CBM3D's mean PSNR on the same noisy crops, when measured.
    pub cbm3d: Option<f64>,
}

/// An EPS network asked to denoise with nothing observed: μ* = x_t, the observation is zero and
/// every pixel has the pivot variance σ².
struct EpsAsDenoiser<'a>(&'a Network);

impl Denoiser for EpsAsDenoiser<'_> {
    fn denoise(&self, x: &Tensor, sigma: f64) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        let nothing = Tensor::zeros((1, 1, h, w), DType::F32, x.device())?;
        let problem = Problem::new(
            std::sync::Arc::new(Mask::new(&nothing)?),
            &Tensor::zeros((1, c, h, w), x.dtype(), x.device())?,
            0.05,
            (c, h, w),
        )?;
        let mu = problem.pivot(x, Interpolant::edm(sigma))?;
        PosteriorDenoiser::denoise(self.0, &mu, &problem, sigma)
    }
}

/// A prior denoiser used as a posterior denoiser for a problem that observes nothing: there the
/// pivot is `x_t` itself, so the EPS sampler runs the plain unconditional sampler.
struct Unconditional<'a>(&'a dyn Denoiser);

impl PosteriorDenoiser for Unconditional<'_> {
    fn denoise(&self, mu: &Tensor, _problem: &Problem, sigma: f64) -> Result<Tensor> {
        self.0.denoise(mu, sigma)
    }
}

/// Noisy copies of `truth` for every σ, from fixed seeds (so CBM3D sees the same inputs).
pub fn noisy_inputs(truth: &Tensor, sigmas: &[f64], seed: u64) -> Result<Vec<Tensor>> {
    sigmas
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let n = truth.dim(0)?;
            let seeds: Vec<u64> = (0..n as u64)
                .map(|i| seed ^ (k as u64 * 1_000_003 + i).wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .collect();
            let noise = SeededNoise::new(&seeds).normal_like(truth)?;
            Ok((truth + noise.affine(s, 0.0)?)?)
        })
        .collect()
}

fn mean_psnr(x: &Tensor, truth: &Tensor) -> Result<f64> {
    let p = super::metrics::psnr_batch(&x.clamp(-1.0, 1.0)?, truth)?;
    Ok(p.iter().sum::<f64>() / p.len().max(1) as f64)
}

/// The denoising curve on `truth` (`[N, 3, H, W]` in `[-1, 1]`), `batch` crops per call.
pub fn denoising_curve(
    truth: &Tensor,
    noisy: &[Tensor],
    sigmas: &[f64],
    prior: Option<&Network>,
    eps: Option<&Network>,
    batch: usize,
) -> Result<Vec<CurveRow>> {
    let n = truth.dim(0)?;
    let run = |d: &dyn Denoiser, x: &Tensor, s: f64| -> Result<Tensor> {
        let parts = (0..n)
            .step_by(batch.max(1))
            .map(|i| d.denoise(&x.narrow(0, i, batch.max(1).min(n - i))?, s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    };
    sigmas
        .iter()
        .zip(noisy)
        .map(|(&s, x)| {
            Ok(CurveRow {
                sigma: s,
                input: mean_psnr(x, truth)?,
                prior: prior
                    .map(|p| mean_psnr(&run(p, x, s)?, truth))
                    .transpose()?,
                eps: eps
                    .map(|e| mean_psnr(&run(&EpsAsDenoiser(e), x, s)?, truth))
                    .transpose()?,
                cbm3d: None,
            })
        })
        .collect()
}

/// A picture of the denoiser at work: for the first `n` crops, rows of clean crops, then for each
/// σ of `show` the noisy crops and the prior's estimates.
pub fn denoise_picture(
    truth: &Tensor,
    noisy: &[Tensor],
    sigmas: &[f64],
    show: &[f64],
    prior: &Network,
    n: usize,
) -> Result<Vec<u8>> {
    let n = n.min(truth.dim(0)?);
    let mut rows = vec![truth.narrow(0, 0, n)?];
    for s in show {
        let Some(k) = sigmas.iter().position(|v| (v - s).abs() < 1e-12) else {
            continue;
        };
        let x = noisy[k].narrow(0, 0, n)?;
        rows.push(x.clone());
        rows.push(Denoiser::denoise(prior, &x, *s)?);
    }
    grid_png(&Tensor::cat(&rows, 0)?.clamp(-1.0, 1.0)?, n)
}

/// A stable fingerprint of a batch of crops (FNV-1a of their 8-bit values), so a stored CBM3D
/// measurement is only used for the crops it was made on.
pub fn fingerprint(truth: &Tensor) -> Result<String> {
    let v: Vec<f32> = truth.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let h = v.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        let b = ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u64;
        (h ^ b).wrapping_mul(0x100_0000_01b3)
    });
    Ok(format!("{h:016x}"))
}

/// Reads CBM3D's PSNRs from the JSON `scripts/cbm3d.py` writes (`{"fingerprint": …, "psnr":
/// {"0.1": 34.0, …}}`), if it was made on these crops.
pub fn read_cbm3d(path: &Path, truth: &Tensor) -> Result<Option<Vec<(f64, f64)>>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid("CBM3D results", path.display(), e.to_string()))?;
    if v.get("fingerprint").and_then(|f| f.as_str()) != Some(fingerprint(truth)?.as_str()) {
        return Ok(None);
    }
    let Some(map) = v.get("psnr").and_then(|p| p.as_object()) else {
        return Ok(None);
    };
    Ok(Some(
        map.iter()
            .filter_map(|(k, v)| Some((k.parse::<f64>().ok()?, v.as_f64()?)))
            .collect(),
    ))
}

/// Writes `[N, H, W, 3]` float32 values in `[0, 1]` as a NumPy `.npy` file (what
/// `scripts/cbm3d.py` reads).
pub fn write_npy(path: &Path, x: &Tensor) -> Result<()> {
    let (n, c, h, w) = x.dims4()?;
    let hwc = x
        .permute((0, 2, 3, 1))?
        .affine(0.5, 0.5)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {h}, {w}, {c}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in hwc {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    crate::fsutil::write_atomic(path, &bytes)
}

/// The denoising curve as a markdown table.
pub fn curve_markdown(rows: &[CurveRow]) -> String {
    let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.2}"));
    let mut s = String::from(
        "| σ ([-1, 1]) | σ (0–255) | noisy input | prior | EPS (nothing observed) | CBM3D |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.2} | {} | {} | {} |\n",
            r.sigma,
            r.sigma * 127.5,
            r.input,
            f(r.prior),
            f(r.eps),
            f(r.cbm3d)
        ));
    }
    s
}

/// Unconditional samples of `prior` (`n` images of `size × size`, the EPS sampler `cfg`).
pub fn prior_samples(
    prior: &dyn Denoiser,
    n: usize,
    size: usize,
    cfg: &EpsConfig,
    seed: u64,
) -> Result<Tensor> {
    let nothing = Tensor::zeros((1, 1, size, size), DType::F32, &Device::Cpu)?;
    let problem = Problem::new(
        std::sync::Arc::new(Mask::new(&nothing)?),
        &Tensor::zeros((1, 3, size, size), DType::F32, &Device::Cpu)?,
        0.05,
        (3, size, size),
    )?;
    let seeds: Vec<u64> = (0..n as u64).map(|i| seed.wrapping_add(i)).collect();
    let out = sampler::eps::sample(
        &Unconditional(prior),
        &problem,
        &seeds,
        cfg,
        &mut ignore_progress,
    )?;
    Ok(out.samples.clamp(-1.0, 1.0)?)
}

/// Mean squared Laplacian over every pixel of a batch in `[-1, 1]` (on `[0, 1]` values).
pub fn batch_texture(x: &Tensor) -> Result<f64> {
    let n = x.dim(0)?;
    let mut total = 0.0;
    for b in 0..n {
        let img = from_tensor(x, b)?;
        let all = vec![true; img.width * img.height];
        total += laplacian_energy(&img, &all);
    }
    Ok(total / n.max(1) as f64)
}

/// Tiles images (`[N, 3, H, W]` in `[-1, 1]`) into a grid PNG with `cols` columns.
pub fn grid_png(x: &Tensor, cols: usize) -> Result<Vec<u8>> {
    let n = x.dim(0)?;
    let imgs = (0..n)
        .map(|b| from_tensor(x, b))
        .collect::<Result<Vec<_>>>()?;
    mosaic(&imgs.iter().collect::<Vec<_>>(), cols, 2)
}

/// Images of equal size in rows of `cols`, separated by `gap` white pixels, as PNG bytes.
pub fn mosaic(imgs: &[&RgbImage], cols: usize, gap: usize) -> Result<Vec<u8>> {
    let Some(first) = imgs.first() else {
        return Err(Error::invalid("mosaic", "empty", "no images to tile"));
    };
    let (w, h) = (first.width, first.height);
    let cols = cols.max(1);
    let rows = imgs.len().div_ceil(cols);
    let (gw, gh) = (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap);
    let mut canvas = RgbImage {
        width: gw,
        height: gh,
        data: vec![1.0; gw * gh * 3],
    };
    for (k, img) in imgs.iter().enumerate() {
        if (img.width, img.height) != (w, h) {
            return Err(Error::shape(
                "mosaic tile",
                format!("{w}×{h}"),
                format!("{}×{}", img.width, img.height),
            ));
        }
        let (ox, oy) = ((k % cols) * (w + gap), (k / cols) * (h + gap));
        for y in 0..h {
            let src = &img.data[y * w * 3..(y + 1) * w * 3];
            let dst = ((oy + y) * gw + ox) * 3;
            canvas.data[dst..dst + w * 3].copy_from_slice(src);
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            &canvas.to_rgb8(),
            gw as u32,
            gh as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::Unsupported(format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

use image::ImageEncoder as _;

/// A method of the fill and restoration suites: a product method or a classical reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// A sampler of the product with this many samples.
    Method(MethodChoice, usize),
    /// A sampler of the product on another prior than the network (the photo's patches, or a
    /// hybrid), with this many samples.
    OnPrior(crate::restore::Prior, MethodChoice, usize),
    /// The instant preview the app shows while the user paints (the posterior mean from quick
    /// low-resolution draws, [`crate::restore::Settings::preview`]) on a prior without a network.
    Preview(crate::restore::Prior),
    /// The biharmonic fill (inpainting only).
    Biharmonic,
    /// Exemplar EM completion (inpainting only; [`super::exemplar`]).
    Exemplar,
}

impl Contender {
    /// The prior, sampler, sample count and preview flag of a contender that runs through
    /// [`crate::restore::restore`]; `None` for the classical fills.
    fn sampler(&self) -> Option<(crate::restore::Prior, MethodChoice, usize, bool)> {
        match *self {
            Self::Method(m, n) => Some((crate::restore::Prior::Network, m, n, false)),
            Self::OnPrior(p, m, n) => Some((p, m, n, false)),
            Self::Preview(p) => Some((p, MethodChoice::EpsMean, 1, true)),
            Self::Biharmonic | Self::Exemplar => None,
        }
    }

    /// Column label; EPS names its sampler and steps as `suite` sets them.
    pub fn label(&self, suite: &Suite<'_>) -> String {
        match self {
            Self::Method(MethodChoice::Eps, _) => {
                let c = suite.eps_config();
                format!("EPS {} @{}", c.name(), c.steps)
            }
            Self::Method(MethodChoice::EpsMean, _) => "EPS mean (1 NFE)".into(),
            Self::Method(m, _) => m.label().into(),
            Self::OnPrior(p, MethodChoice::Eps, _) => format!("EPS on {}", p.label()),
            Self::OnPrior(p, MethodChoice::EpsMean, _) => format!("EPS mean on {}", p.label()),
            Self::OnPrior(p, m, _) => format!("{} on {}", m.label(), p.label()),
            Self::Preview(p) => format!("instant preview on {}", p.label()),
            Self::Biharmonic => "biharmonic fill".into(),
            Self::Exemplar => "exemplar EM (Wexler)".into(),
        }
    }
}

/// One fill case: a validation photo, its mask and what every contender produced.
pub struct FillCase {
    /// Photo name.
    pub name: String,
    /// The clean photo.
    pub truth: RgbImage,
    /// The measurement (observed pixels with noise, hole grey).
    pub y: RgbImage,
    /// The hole.
    pub fill: Vec<bool>,
    /// Per contender, its images.
    pub results: Vec<(Contender, Vec<RgbImage>)>,
}

/// Mean scores of one contender over the fill cases (one value per sample, averaged).
#[derive(Debug, Clone)]
pub struct FillRow {
    /// Contender.
    pub label: String,
    /// Hole scores averaged over cases and samples (LPIPS when measured); the texture and ring
    /// ratios as geometric means (a ratio's natural average: 0.5 and 2 average to 1).
    pub hole: HoleScores,
    /// CRPS over the hole's values, per case over its results ([`super::holes::hole_crps`]),
    /// averaged over cases.
    pub hole_crps: f64,
    /// RMS difference in the hole between two samples of the same case (`[0, 1]` units),
    /// averaged over pairs and cases: how far the samples are from one another (NaN with one
    /// sample per case).
    pub spread: f64,
    /// PSNR over the crop the network worked on (hole plus context).
    pub crop_psnr: f64,
    /// Seconds per image.
    pub secs: f64,
    /// Cases where the method diverged (a NaN or infinity): left out of the scores.
    pub diverged: usize,
    /// Cases run.
    pub cases: usize,
    /// The patch posterior's effective sample size per pyramid level of every region and draw
    /// (empty for contenders without a patch prior).
    pub ess: Vec<crate::restore::LevelEss>,
    /// Per case, each result's hole LPIPS (`None` where not measured); empty per case where the
    /// method diverged.
    pub case_lpips: Vec<Vec<Option<f64>>>,
    /// Whether this is the default fill (EPS on the default prior): what [`paired_markdown`]
    /// compares the others with.
    pub reference: bool,
}

/// One contender against the reference, result by result: over the pairs both have (same
/// case; the same seed, or the contender's one result against each of the reference's), how
/// many have the lower hole LPIPS, and the mean paired difference (contender − reference) with
/// its standard error. A mean over a few dozen holes moves by a few thousandths between
/// near-identical settings; the count says whether a lead is carried by most holes or by a few.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// Pairs compared.
    pub pairs: usize,
    /// Pairs where the contender's LPIPS is the lower.
    pub lower: usize,
    /// Pairs where the reference's is the lower.
    pub higher: usize,
    /// Mean of contender − reference.
    pub mean_difference: f64,
    /// Standard error of that mean (NaN with fewer than two pairs).
    pub standard_error: f64,
}

/// [`Paired`] from per-case, per-result LPIPS values; `None` without a pair.
pub fn paired_lpips(
    contender: &[Vec<Option<f64>>],
    reference: &[Vec<Option<f64>>],
) -> Option<Paired> {
    let mut diffs = Vec::new();
    for (c, r) in contender.iter().zip(reference) {
        for (k, rv) in r.iter().enumerate() {
            let cv = match c.len() {
                0 => None,
                1 => c[0],
                _ => c.get(k).copied().flatten(),
            };
            if let (Some(a), Some(b)) = (cv, *rv)
                && a.is_finite()
                && b.is_finite()
            {
                diffs.push(a - b);
            }
        }
    }
    if diffs.is_empty() {
        return None;
    }
    let n = diffs.len() as f64;
    let mean = diffs.iter().sum::<f64>() / n;
    let standard_error = if diffs.len() > 1 {
        (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0) / n).sqrt()
    } else {
        f64::NAN
    };
    Some(Paired {
        pairs: diffs.len(),
        lower: diffs.iter().filter(|&&d| d < 0.0).count(),
        higher: diffs.iter().filter(|&&d| d > 0.0).count(),
        mean_difference: mean,
        standard_error,
    })
}

/// Every other contender against the reference row ([`FillRow::reference`]), result by result
/// ([`Paired`]), as markdown; empty without a reference or without LPIPS.
pub fn paired_markdown(rows: &[FillRow]) -> String {
    let Some(reference) = rows.iter().find(|r| r.reference) else {
        return String::new();
    };
    let mut s = String::new();
    for r in rows.iter().filter(|r| !r.reference) {
        let Some(p) = paired_lpips(&r.case_lpips, &reference.case_lpips) else {
            continue;
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:+.4} | {} |\n",
            r.label,
            p.pairs,
            p.lower,
            p.higher,
            p.mean_difference,
            if p.standard_error.is_finite() {
                format!("{:.4}", p.standard_error)
            } else {
                "–".into()
            }
        ));
    }
    if s.is_empty() {
        return s;
    }
    format!(
        "Result by result against {} (same holes, masks, noise and seeds; a method with one result per hole is compared with each of the reference's samples): how many have the lower hole LPIPS, and the mean difference with its standard error.\n\n| method | pairs | lower LPIPS | higher LPIPS | mean difference | standard error |\n|---|---:|---:|---:|---:|---:|\n{s}",
        reference.label
    )
}

/// RMS difference in the hole between every pair of `results`, averaged over pairs; NaN for
/// fewer than two.
pub fn pairwise_hole_distance(results: &[RgbImage], fill: &[bool]) -> f64 {
    let (mut total, mut pairs) = (0.0, 0usize);
    for i in 0..results.len() {
        for j in i + 1..results.len() {
            let (mut se, mut n) = (0.0, 0usize);
            for (k, _) in fill.iter().enumerate().filter(|(_, f)| **f) {
                for c in 0..3 {
                    let d = f64::from(results[i].data[k * 3 + c] - results[j].data[k * 3 + c]);
                    se += d * d;
                    n += 1;
                }
            }
            total += (se / n.max(1) as f64).sqrt();
            pairs += 1;
        }
    }
    if pairs == 0 {
        f64::NAN
    } else {
        total / pairs as f64
    }
}

/// Downscales a photo so its long side is at most `long` (area filter).
pub fn fit_long_side(img: &RgbImage, long: usize) -> RgbImage {
    let k = (long as f64 / img.width.max(img.height) as f64).min(1.0);
    if k >= 1.0 {
        return img.clone();
    }
    let w = ((img.width as f64 * k).round() as usize).max(1);
    let h = ((img.height as f64 * k).round() as usize).max(1);
    crate::restore::resize::area(img, w, h)
}

/// What every suite run shares: the networks, the measurement noise, the seed, and the LPIPS
/// network when there is one.
#[derive(Clone, Copy)]
pub struct Suite<'a> {
    /// The networks.
    pub models: &'a Models,
    /// Measurement noise σ_y.
    pub sigma_y: f64,
    /// Seed of masks, noise and samplers.
    pub seed: u64,
    /// LPIPS (AlexNet), when loaded.
    pub lpips: Option<&'a Lpips>,
    /// Sampler steps (`None`: each method's default).
    pub steps: Option<usize>,
    /// The EPS sampler's solver (`None`: its default).
    pub solver: Option<sampler::Solver>,
    /// The EPS sampler's total churn `S_churn` (`None`: its default).
    pub churn: Option<f64>,
    /// The patch prior's settings (for [`Contender::Patch`]).
    pub patch: crate::prior::patch::PyramidConfig,
    /// The deblurring patch prior's settings.
    pub deblur: crate::prior::patch::DeblurConfig,
    /// The priors the deblur and SR parts run EPS on (patches only for those two tasks).
    pub restore_priors: &'a [crate::restore::Prior],
}

impl Suite<'_> {
    /// The EPS sampler these settings run.
    pub fn eps_config(&self) -> EpsConfig {
        let settings = Settings {
            steps: self.steps,
            solver: self.solver,
            churn: self.churn,
            ..Settings::default()
        };
        match settings.sampler_method(&Degradation::inpaint(Vec::new())) {
            sampler::Method::Eps(c) => c,
            _ => EpsConfig::default(),
        }
    }
}

/// Runs the fill suite: for each photo, `per_photo` object-sized masks (2–5% of the photo),
/// restored by every contender through [`restore`], scored on the hole.
pub fn fill_suite(
    suite: &Suite<'_>,
    photos: &[(String, RgbImage)],
    per_photo: usize,
    keep: &dyn Fn(&str) -> bool,
    contenders: &[Contender],
    on_case: &mut dyn FnMut(&str),
) -> Result<(Vec<FillRow>, Vec<FillCase>)> {
    let Suite {
        models,
        sigma_y,
        seed,
        lpips,
        steps,
        solver,
        churn,
        patch,
        ..
    } = *suite;
    let mut cases = Vec::new();
    let mut timings = vec![0.0; contenders.len()];
    let mut counts = vec![0usize; contenders.len()];
    let mut diverged = vec![0usize; contenders.len()];
    let mut ess: Vec<Vec<crate::restore::LevelEss>> = vec![Vec::new(); contenders.len()];
    // Photos left out keep their index, so the others get the masks of a full run.
    for (p, (name, photo)) in photos.iter().enumerate() {
        if !keep(name) {
            continue;
        }
        for k in 0..per_photo {
            let mut rng = StdRng::seed_from_u64(seed ^ (((p * 1000 + k) as u64 + 1) * 0x51_7CC1));
            let fill = object_mask(photo.width, photo.height, (0.02, 0.05), &mut rng);
            let deg = Degradation::inpaint(fill.clone());
            let sim =
                crate::restore::simulate(photo, &deg, sigma_y, seed ^ p as u64 ^ (k as u64) << 16)?;
            let mut results = Vec::new();
            for (ci, c) in contenders.iter().enumerate() {
                on_case(&format!("{name} #{k}: {}", c.label(suite)));
                let t = std::time::Instant::now();
                let imgs = match c.sampler() {
                    None if *c == Contender::Exemplar => vec![super::exemplar::exemplar_fill(
                        &sim.y,
                        &fill,
                        &super::exemplar::ExemplarConfig::default(),
                    )?],
                    None => vec![biharmonic_fill(&sim.y, &fill)?],
                    Some((prior, m, samples, preview)) => {
                        let settings = Settings {
                            method: m,
                            sigma_y,
                            steps,
                            solver,
                            churn,
                            prior,
                            patch,
                            preview,
                            ..Settings::default()
                        };
                        let seeds: Vec<u64> = (0..samples as u64)
                            .map(|s| seed.wrapping_mul(31).wrapping_add(s))
                            .collect();
                        match restore(models, None, &sim.y, &deg, &settings, &seeds, &mut |_| {
                            sampler::Flow::Continue
                        }) {
                            Ok(r) => {
                                if !r.patch_ess.is_empty() {
                                    let turns: Vec<String> =
                                        r.patch_turns.iter().map(ToString::to_string).collect();
                                    let turns = if turns.is_empty() {
                                        String::new()
                                    } else {
                                        format!("; {}", turns.join(", "))
                                    };
                                    on_case(&format!(
                                        "{name} #{k}: {} ESS per level, first → last call: {}{turns}",
                                        c.label(suite),
                                        ess_line(&r.patch_ess)
                                    ));
                                }
                                ess[ci].extend(r.patch_ess);
                                r.samples.into_iter().map(Pixels::into_rgb).collect()
                            }
                            // A diverging method is a result to report, not the end of the run.
                            Err(e @ crate::Error::NonFinite { .. }) => {
                                on_case(&format!("{name} #{k}: {} diverged ({e})", c.label(suite)));
                                diverged[ci] += 1;
                                Vec::new()
                            }
                            Err(e) => return Err(e),
                        }
                    }
                };
                timings[ci] += t.elapsed().as_secs_f64();
                counts[ci] += imgs.len();
                results.push((*c, imgs));
            }
            cases.push(FillCase {
                name: name.clone(),
                truth: sim.truth,
                y: sim.y,
                fill,
                results,
            });
        }
    }
    let mut rows = Vec::new();
    for (ci, c) in contenders.iter().enumerate() {
        let (mut psnr, mut ssim, mut lp, mut crop, mut n, mut nl) =
            (0.0, 0.0, 0.0, 0.0, 0usize, 0usize);
        let (mut log_texture, mut nt, mut log_ring, mut nr) = (0.0, 0usize, 0.0, 0usize);
        let (mut crps, mut nc, mut spread, mut ns) = (0.0, 0usize, 0.0, 0usize);
        let mut case_lpips = Vec::with_capacity(cases.len());
        for case in &cases {
            let mut per_result = Vec::new();
            let results = &case.results[ci].1;
            if !results.is_empty() {
                crps += super::holes::hole_crps(results, &case.truth, &case.fill)?;
                nc += 1;
            }
            let d = pairwise_hole_distance(results, &case.fill);
            if d.is_finite() {
                spread += d;
                ns += 1;
            }
            let region = context_region(&case.fill, case.truth.width, case.truth.height);
            for (k, img) in results.iter().enumerate() {
                let s = hole_scores(img, &case.truth, &case.fill, lpips)?;
                on_case(&format!(
                    "{} #{k} {}: hole PSNR {:.2}, LPIPS {}, texture {:.2}, ring {:.2}",
                    case.name,
                    c.label(suite),
                    s.psnr,
                    s.lpips.map_or("–".into(), |v| format!("{v:.3}")),
                    s.texture_ratio,
                    s.ring_ratio
                ));
                psnr += s.psnr;
                ssim += s.ssim;
                if s.texture_ratio > 0.0 && s.texture_ratio.is_finite() {
                    log_texture += s.texture_ratio.ln();
                    nt += 1;
                }
                if s.ring_ratio > 0.0 && s.ring_ratio.is_finite() {
                    log_ring += s.ring_ratio.ln();
                    nr += 1;
                }
                if let Some(l) = s.lpips {
                    lp += l;
                    nl += 1;
                }
                per_result.push(s.lpips);
                crop += crate::restore::psnr(
                    &img.crop(region.x, region.y, region.w, region.h),
                    &case.truth.crop(region.x, region.y, region.w, region.h),
                );
                n += 1;
            }
            case_lpips.push(per_result);
        }
        let k = n.max(1) as f64;
        let geo = |sum: f64, count: usize| {
            if count == 0 {
                f64::NAN
            } else {
                (sum / count as f64).exp()
            }
        };
        rows.push(FillRow {
            label: c.label(suite),
            hole: HoleScores {
                psnr: psnr / k,
                ssim: ssim / k,
                lpips: (nl > 0).then(|| lp / nl as f64),
                texture_ratio: geo(log_texture, nt),
                ring_ratio: geo(log_ring, nr),
            },
            hole_crps: crps / nc.max(1) as f64,
            spread: if ns > 0 { spread / ns as f64 } else { f64::NAN },
            crop_psnr: crop / k,
            secs: timings[ci] / counts[ci].max(1) as f64,
            diverged: diverged[ci],
            cases: cases.len(),
            ess: std::mem::take(&mut ess[ci]),
            case_lpips,
            reference: matches!(
                c,
                Contender::OnPrior(p, MethodChoice::Eps, _) if *p == crate::restore::Prior::default()
            ),
        });
    }
    Ok((rows, cases))
}

/// The region the restoration pipeline works on for this hole (its components' crops).
fn context_region(fill: &[bool], w: usize, h: usize) -> Rect {
    crate::restore::plan::inpaint_regions(fill, w, h)
        .into_iter()
        .reduce(|a, b| a.union(&b))
        .unwrap_or(Rect::new(0, 0, w, h))
}

/// One restoration's effective sample sizes per level, coarsest first, averaged over its
/// regions and draws: `L3 σ 1.000 → 0.010: 14.2 → 1.0`.
fn ess_line(records: &[crate::restore::LevelEss]) -> String {
    ess_by_level(records)
        .iter()
        .rev()
        .map(|l| {
            format!(
                "L{} σ {:.3} → {:.3}: {:.1} → {:.1}",
                l.level, l.sigma_first, l.sigma_last, l.first, l.last
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The effective sample sizes of one pyramid level, averaged over the regions and draws that
/// reached it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EssByLevel {
    /// Level (0: the crop's own size).
    pub level: usize,
    /// Draws (times regions) that sampled the level.
    pub draws: usize,
    /// Mean calls of the patch denoiser per draw.
    pub calls: f64,
    /// Mean noise level of the first call.
    pub sigma_first: f64,
    /// Mean noise level of the last call.
    pub sigma_last: f64,
    /// Mean of the first call's median effective sample size.
    pub first: f64,
    /// Mean of the last call's median effective sample size.
    pub last: f64,
    /// Mean share of query windows at the last call that copy one bank window (ESS < 1.5).
    pub copying: f64,
    /// Share of the first calls that summed the whole bank.
    pub exact_first: f64,
}

/// [`EssByLevel`] for every level in `records`, finest first.
pub fn ess_by_level(records: &[crate::restore::LevelEss]) -> Vec<EssByLevel> {
    let top = records.iter().map(|r| r.level).max().map_or(0, |m| m + 1);
    (0..top)
        .filter_map(|level| {
            let at: Vec<_> = records.iter().filter(|r| r.level == level).collect();
            if at.is_empty() {
                return None;
            }
            let n = at.len() as f64;
            let mean = |f: &dyn Fn(&crate::restore::LevelEss) -> f64| {
                at.iter().map(|r| f(r)).sum::<f64>() / n
            };
            Some(EssByLevel {
                level,
                draws: at.len(),
                calls: mean(&|r| r.calls as f64),
                sigma_first: mean(&|r| r.first.sigma),
                sigma_last: mean(&|r| r.last.sigma),
                first: mean(&|r| f64::from(r.first.median)),
                last: mean(&|r| f64::from(r.last.median)),
                copying: mean(&|r| f64::from(r.last.copying)),
                exact_first: mean(&|r| if r.first.exact { 1.0 } else { 0.0 }),
            })
        })
        .collect()
}

/// The effective-sample-size table of the rows that ran a patch prior, as markdown (empty
/// when none did).
pub fn ess_markdown(rows: &[FillRow]) -> String {
    let mut s = String::new();
    for r in rows.iter().filter(|r| !r.ess.is_empty()) {
        if s.is_empty() {
            s.push_str(
                "| method | level | draws | calls | σ, first → last call | median ESS, first call | median ESS, last call | windows copying one, last call | first call exact |\n|---|---:|---:|---:|---|---:|---:|---:|---:|\n",
            );
        }
        for l in ess_by_level(&r.ess).iter().rev() {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.3} → {:.3} | {:.1} | {:.2} | {:.0}% | {:.0}% |\n",
                r.label,
                l.level,
                l.draws,
                l.calls,
                l.sigma_first,
                l.sigma_last,
                l.first,
                l.last,
                100.0 * l.copying,
                100.0 * l.exact_first
            ));
        }
    }
    s
}

/// The fill table as markdown.
pub fn fill_markdown(rows: &[FillRow]) -> String {
    let mut s = String::from(
        "| method | hole PSNR ↑ | hole SSIM ↑ | hole LPIPS ↓ | texture ratio: truth (1 = natural) | texture ratio: ring | sample spread | hole CRPS ↓ | crop PSNR ↑ | s / image | diverged |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let num = |v: f64, digits: usize| {
        if v.is_finite() {
            format!("{v:.digits$}")
        } else {
            "–".into()
        }
    };
    for r in rows {
        if r.diverged == r.cases {
            s.push_str(&format!(
                "| {} | – | – | – | – | – | – | – | – | – | {}/{} |\n",
                r.label, r.diverged, r.cases
            ));
            continue;
        }
        s.push_str(&format!(
            "| {} | {:.2} | {:.3} | {} | {} | {} | {} | {:.4} | {:.2} | {:.1} | {}/{} |\n",
            r.label,
            r.hole.psnr,
            r.hole.ssim,
            r.hole.lpips.map_or("–".into(), |v| format!("{v:.3}")),
            num(r.hole.texture_ratio, 2),
            num(r.hole.ring_ratio, 2),
            num(r.spread, 3),
            r.hole_crps,
            r.crop_psnr,
            r.secs,
            r.diverged,
            r.cases
        ));
    }
    s
}

/// A picture of every case: per row, the truth, the measurement, then each contender's images,
/// all cropped around the hole (its box plus half its size on every side) and resized to `tile`.
pub fn fill_picture(cases: &[FillCase], tile: usize) -> Result<Vec<u8>> {
    // A diverged run has no images: a black tile per missing sample keeps the columns aligned.
    let per_contender: Vec<usize> = (0..cases.first().map_or(0, |c| c.results.len()))
        .map(|ci| {
            cases
                .iter()
                .map(|c| c.results.get(ci).map_or(0, |r| r.1.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let black = RgbImage {
        width: tile,
        height: tile,
        data: vec![0.0; tile * tile * 3],
    };
    let mut tiles = Vec::new();
    let mut cols = 0;
    for case in cases {
        let (w, h) = (case.truth.width, case.truth.height);
        let b = hole_box(&case.fill, w).unwrap_or(Rect::new(0, 0, w, h));
        let m = b.w.max(b.h) / 2;
        let r = crate::restore::plan::expand(b, m, w, h);
        let side = r.w.max(r.h).min(w).min(h);
        let r = crate::restore::plan::expand(
            Rect::new(r.x + r.w / 2, r.y + r.h / 2, 1, 1),
            side / 2,
            w,
            h,
        );
        let cut = |img: &RgbImage| {
            crate::restore::resize::bilinear(&img.crop(r.x, r.y, r.w, r.h), tile, tile)
        };
        let mut row = vec![cut(&case.truth), cut(&case.y)];
        for (ci, (_, imgs)) in case.results.iter().enumerate() {
            row.extend(imgs.iter().map(&cut));
            let want = per_contender.get(ci).copied().unwrap_or(0);
            row.extend((imgs.len()..want).map(|_| black.clone()));
        }
        cols = cols.max(row.len());
        tiles.push(row);
    }
    let flat: Vec<RgbImage> = tiles
        .into_iter()
        .flat_map(|mut row| {
            while row.len() < cols {
                row.push(RgbImage {
                    width: tile,
                    height: tile,
                    data: vec![1.0; tile * tile * 3],
                });
            }
            row
        })
        .collect();
    mosaic(&flat.iter().collect::<Vec<_>>(), cols, 4)
}

/// Deblurring or super-resolution of one crop: what each contender made.
pub struct RestoreCase {
    /// The clean crop.
    pub truth: RgbImage,
    /// The measurement, shown at the truth's size (the blurry photo, or the small photo
    /// upsampled by nearest neighbour).
    pub shown: RgbImage,
    /// Per contender label, its images.
    pub results: Vec<(String, Vec<RgbImage>)>,
}

/// Mean PSNR and LPIPS of one contender.
#[derive(Debug, Clone)]
pub struct RestoreRow {
    /// Contender.
    pub label: String,
    /// Mean PSNR (dB).
    pub psnr: f64,
    /// Mean LPIPS (AlexNet), when measured.
    pub lpips: Option<f64>,
}

/// Runs deblurring (`Degradation::Deblur`) or super-resolution on 256-pixel crops: the product's
/// EPS samples and posterior mean, against the measurement itself (blur), a tuned Wiener filter
/// (blur) and bicubic upsampling (SR).
pub fn restore_suite(
    suite: &Suite<'_>,
    crops: &[RgbImage],
    deg: &Degradation,
    samples: usize,
    on_case: &mut dyn FnMut(&str),
) -> Result<(Vec<RestoreRow>, Vec<RestoreCase>)> {
    let Suite {
        models,
        sigma_y,
        seed,
        lpips,
        steps,
        solver,
        churn,
        ..
    } = *suite;
    let mut cases = Vec::new();
    let sims = crops
        .iter()
        .enumerate()
        .map(|(i, c)| crate::restore::simulate(c, deg, sigma_y, seed.wrapping_add(i as u64)))
        .collect::<Result<Vec<_>>>()?;
    // Tune Wiener's ε on these very crops (an oracle choice, favourable to the reference).
    let wiener_eps = match deg {
        Degradation::Deblur(spec) => {
            let pairs: Vec<_> = sims.iter().map(|s| (&s.y, &s.truth)).collect();
            Some(best_wiener(&pairs, &spec.kernel()?)?.0)
        }
        _ => None,
    };
    for (i, sim) in sims.iter().enumerate() {
        on_case(&format!("crop {}/{}", i + 1, sims.len()));
        let mut results = Vec::new();
        let shown = match deg {
            Degradation::Deblur(spec) => {
                results.push(("blurry input".to_string(), vec![sim.y.clone()]));
                if let Some(eps) = wiener_eps {
                    results.push((
                        format!("Wiener (ε = {eps})"),
                        vec![wiener_deconvolve(&sim.y, &spec.kernel()?, eps)?],
                    ));
                }
                sim.y.clone()
            }
            Degradation::SuperRes { factor } => {
                results.push((
                    "bicubic".to_string(),
                    vec![bicubic_upsample(&sim.y, *factor)],
                ));
                crate::restore::resize::nearest(&sim.y, sim.truth.width, sim.truth.height)
            }
            Degradation::Inpaint { .. } => {
                return Err(Error::Unsupported(
                    "use the fill suite for inpainting".into(),
                ));
            }
        };
        let network = crate::restore::Prior::Network;
        let mut runs = Vec::new();
        for &prior in suite.restore_priors {
            // Super-resolution and deblurring also run on the photo's own patches (a
            // cross-scale bank).
            if prior == network
                || matches!(deg, Degradation::SuperRes { .. } | Degradation::Deblur(_))
            {
                runs.push((prior, MethodChoice::EpsMean, 1));
                runs.push((prior, MethodChoice::Eps, samples));
            }
        }
        for (prior, m, n) in runs {
            let settings = Settings {
                method: m,
                sigma_y,
                steps,
                solver,
                churn,
                prior,
                patch: suite.patch,
                sr_on_patches: true,
                deblur_on_patches: Some(suite.deblur),
                ..Settings::default()
            };
            let seeds: Vec<u64> = (0..n as u64).map(|s| seed.wrapping_add(s)).collect();
            let out = restore(models, None, &sim.y, deg, &settings, &seeds, &mut |_| {
                sampler::Flow::Continue
            })?;
            let samples = out.samples.into_iter().map(Pixels::into_rgb).collect();
            let contender = if prior == network {
                Contender::Method(m, n)
            } else {
                Contender::OnPrior(prior, m, n)
            };
            results.push((contender.label(suite), samples));
        }
        cases.push(RestoreCase {
            truth: sim.truth.clone(),
            shown,
            results,
        });
    }
    let mut rows = Vec::new();
    let labels: Vec<String> = cases
        .first()
        .map(|c| c.results.iter().map(|(l, _)| l.clone()).collect())
        .unwrap_or_default();
    for (k, label) in labels.iter().enumerate() {
        let (mut p, mut l, mut n, mut nl) = (0.0, 0.0, 0usize, 0usize);
        for case in &cases {
            for img in &case.results[k].1 {
                p += crate::restore::psnr(img, &case.truth);
                if let Some(net) = lpips {
                    l += super::lpips::photo_distance(net, img, &case.truth)?;
                    nl += 1;
                }
                n += 1;
            }
        }
        rows.push(RestoreRow {
            label: label.clone(),
            psnr: p / n.max(1) as f64,
            lpips: (nl > 0).then(|| l / nl as f64),
        });
    }
    Ok((rows, cases))
}

/// A deblur/SR table as markdown.
pub fn restore_markdown(rows: &[RestoreRow]) -> String {
    let mut s = String::from("| method | PSNR ↑ | LPIPS ↓ |\n|---|---:|---:|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2} | {} |\n",
            r.label,
            r.psnr,
            r.lpips.map_or("–".into(), |v| format!("{v:.3}"))
        ));
    }
    s
}

/// A picture of deblur/SR cases: per row the truth, the measurement, then every contender's
/// first image, the central `tile × tile` pixels at full resolution.
pub fn restore_picture(cases: &[RestoreCase], tile: usize) -> Result<Vec<u8>> {
    let mut flat = Vec::new();
    let mut cols = 0;
    for case in cases {
        let (w, h) = (case.truth.width, case.truth.height);
        let t = tile.min(w).min(h);
        let (x, y) = ((w - t) / 2, (h - t) / 2);
        let mut row = vec![case.truth.crop(x, y, t, t), case.shown.crop(x, y, t, t)];
        for (_, imgs) in &case.results {
            if let Some(first) = imgs.first() {
                row.push(first.crop(x, y, t, t));
            }
        }
        cols = row.len();
        flat.extend(row);
    }
    mosaic(&flat.iter().collect::<Vec<_>>(), cols, 4)
}

/// Validation crops at photo scale: `per_photo` squares of `size` pixels from each photo, on a
/// regular grid inside it.
pub fn photo_crops(photos: &[(String, RgbImage)], per_photo: usize, size: usize) -> Vec<RgbImage> {
    let mut out = Vec::new();
    for (_, p) in photos {
        if p.width < size || p.height < size {
            continue;
        }
        for k in 0..per_photo {
            let fx = (2 * k + 1) as f64 / (2 * per_photo) as f64;
            let fy = if k % 2 == 0 { 0.35 } else { 0.65 };
            let x = ((p.width - size) as f64 * fx).round() as usize;
            let y = ((p.height - size) as f64 * fy).round() as usize;
            out.push(p.crop(x, y, size, size));
        }
    }
    out
}

/// Gaussian blur used by the deblurring part (σ = 2 px).
pub fn diagnose_blur() -> Degradation {
    Degradation::Deblur(BlurSpec::Gaussian { sigma: 2.0 })
}

/// One row of the hole curve: how well each network denoises the *hidden* pixels of a masked
/// crop at one noise level. Each entry is (hole PSNR in dB, texture ratio of the estimate in the
/// hole against the truth).
#[derive(Debug, Clone, Copy)]
pub struct HoleCurveRow {
    /// Noise level.
    pub sigma: f64,
    /// Hole PSNR of the noisy input `x_t`.
    pub input: f64,
    /// The prior's `D(x_t, σ)`, which ignores the observed pixels' lower noise.
    pub prior: Option<(f64, f64)>,
    /// The EPS network's `D_θ(μ*, obs, σ)`, the denoiser the EPS sampler calls.
    pub eps: Option<(f64, f64)>,
    /// The EPS network's starting point, the Gaussian denoiser centred on the classical
    /// observation (`F = 0`: `c_skip μ* + (1 − c_skip) obs`); the network should do better.
    pub gaussian: (f64, f64),
}

/// Crop `b` of `truth` with its object-sized hole (10–25% of the crop, seeded by `b`): the hole,
/// the clean crop and the masked problem with `σ_y` noise on the observed pixels.
fn hole_case(
    truth: &Tensor,
    b: usize,
    sigma_y: f64,
    seed: u64,
) -> Result<(Vec<bool>, Tensor, Problem)> {
    let (_, _, h, w) = truth.dims4()?;
    let mut rng = StdRng::seed_from_u64(seed ^ ((b as u64 + 1) * 0x2545_F491));
    let fill = object_mask(w, h, (0.1, 0.25), &mut rng);
    let observed: Vec<f32> = fill.iter().map(|f| if *f { 0.0 } else { 1.0 }).collect();
    let mask = Tensor::from_vec(observed, (1, 1, h, w), truth.device())?;
    let x0 = truth.narrow(0, b, 1)?;
    let problem = Problem::simulate(
        std::sync::Arc::new(Mask::new(&mask)?),
        &x0,
        sigma_y,
        seed ^ b as u64,
    )?;
    Ok((fill, x0, problem))
}

/// The hole curve: on each crop of `truth` (`[N, 3, H, W]` in `[-1, 1]`) an object-sized hole
/// (10–25% of the crop) with `y` the observed pixels plus `σ_y` noise; at every σ, `x_t = x0 + σε`
/// and both networks' estimates scored on the hole. This is the denoiser the EPS sampler sees at
/// each of its steps: a network that leaves noise in the hole at low σ leaves it in every sample.
pub fn hole_curve(
    truth: &Tensor,
    sigmas: &[f64],
    prior: Option<&Network>,
    eps: Option<&Network>,
    sigma_y: f64,
    seed: u64,
) -> Result<Vec<HoleCurveRow>> {
    let (n, _, h, w) = truth.dims4()?;
    let noisy = noisy_inputs(truth, sigmas, seed)?;
    let mut acc = vec![[0.0f64; 7]; sigmas.len()];
    for b in 0..n {
        let (fill, _, problem) = hole_case(truth, b, sigma_y, seed)?;
        let clean = from_tensor(truth, b)?;
        let inner = super::holes::erode(&fill, w, h, 2);
        let truth_energy = laplacian_energy(&clean, &inner);
        let score = |x: &Tensor| -> Result<(f64, f64)> {
            let img = from_tensor(&x.clamp(-1.0, 1.0)?, 0)?;
            Ok((
                super::holes::hole_psnr(&img, &clean, &fill)?,
                laplacian_energy(&img, &inner) / truth_energy.max(1e-12),
            ))
        };
        for (k, (&s, x)) in sigmas.iter().zip(&noisy).enumerate() {
            let x_t = x.narrow(0, b, 1)?;
            acc[k][0] += score(&x_t)?.0;
            if let Some(p) = prior {
                let (q, t) = score(&Denoiser::denoise(p, &x_t, s)?)?;
                acc[k][1] += q;
                acc[k][2] += t;
            }
            let mu = problem.pivot(&x_t, Interpolant::edm(s))?;
            if let Some(e) = eps {
                let (q, t) = score(&PosteriorDenoiser::denoise(e, &mu, &problem, s)?)?;
                acc[k][3] += q;
                acc[k][4] += t;
            }
            let sd = eps.map_or(0.5, |e| e.inner().config().sigma_data);
            let var = problem.pivot_variance(Interpolant::edm(s))?;
            let skip = (var.affine(1.0, sd * sd)?.recip()? * (sd * sd))?;
            let obs = problem.observation()?;
            let gauss = (obs + (mu - obs)?.broadcast_mul(&skip)?)?;
            let (q, t) = score(&gauss)?;
            acc[k][5] += q;
            acc[k][6] += t;
        }
    }
    let k = n.max(1) as f64;
    Ok(sigmas
        .iter()
        .zip(acc)
        .map(|(&sigma, a)| HoleCurveRow {
            sigma,
            input: a[0] / k,
            prior: prior.map(|_| (a[1] / k, a[2] / k)),
            eps: eps.map(|_| (a[3] / k, a[4] / k)),
            gaussian: (a[5] / k, a[6] / k),
        })
        .collect())
}

/// A picture of the hole curve on the first `n` crops: the truth, then for each σ of `show` rows
/// of `x_t`, the prior's estimate and the EPS network's (the hole is where they differ from the
/// truth most).
pub fn hole_curve_picture(
    truth: &Tensor,
    show: &[f64],
    prior: Option<&Network>,
    eps: Option<&Network>,
    sigma_y: f64,
    seed: u64,
    n: usize,
) -> Result<Vec<u8>> {
    let count = truth.dim(0)?;
    let n = n.min(count);
    let noisy = noisy_inputs(truth, show, seed)?;
    let mut rows: Vec<Vec<Tensor>> = vec![Vec::new(); 1 + 3 * show.len()];
    for b in 0..n {
        let (_, x0, problem) = hole_case(truth, b, sigma_y, seed)?;
        rows[0].push(x0.clone());
        for (k, (&s, x)) in show.iter().zip(&noisy).enumerate() {
            let x_t = x.narrow(0, b, 1)?;
            let grey = x_t.zeros_like()?;
            rows[1 + 3 * k].push(x_t.clone());
            rows[2 + 3 * k].push(match prior {
                Some(p) => Denoiser::denoise(p, &x_t, s)?,
                None => grey.clone(),
            });
            rows[3 + 3 * k].push(match eps {
                Some(e) => {
                    let mu = problem.pivot(&x_t, Interpolant::edm(s))?;
                    PosteriorDenoiser::denoise(e, &mu, &problem, s)?
                }
                None => grey,
            });
        }
    }
    let all: Vec<Tensor> = rows.into_iter().flatten().collect();
    grid_png(&Tensor::cat(&all, 0)?.clamp(-1.0, 1.0)?, n)
}

/// The hole curve as markdown.
pub fn hole_curve_markdown(rows: &[HoleCurveRow]) -> String {
    let f =
        |v: Option<(f64, f64)>| v.map_or("– | –".into(), |(p, t)| format!("{p:.2} | {t:.2}"));
    let mut s = String::from(
        "| σ ([-1, 1]) | noisy input | prior: hole PSNR | prior: texture ratio | EPS: hole PSNR | EPS: texture ratio | centred Gaussian (F = 0): hole PSNR | texture ratio |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.2} | {} | {} | {} |\n",
            r.sigma,
            r.input,
            f(r.prior),
            f(r.eps),
            f(Some(r.gaussian))
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prior::patch::EssRecord;
    use crate::restore::LevelEss;

    fn record(sigma: f64, median: f32, copying: f32, exact: bool) -> EssRecord {
        EssRecord {
            sigma,
            median,
            copying,
            exact,
        }
    }

    fn level(level: usize, first: EssRecord, last: EssRecord, calls: usize) -> LevelEss {
        LevelEss {
            level,
            levels: 2,
            first,
            last,
            calls,
        }
    }

    fn row(label: &str, ess: Vec<LevelEss>) -> FillRow {
        FillRow {
            label: label.into(),
            hole: HoleScores {
                psnr: 20.0,
                ssim: 0.6,
                lpips: None,
                texture_ratio: 1.0,
                ring_ratio: 1.0,
            },
            hole_crps: 0.1,
            spread: f64::NAN,
            crop_psnr: 25.0,
            secs: 1.0,
            diverged: 0,
            cases: 1,
            ess,
            case_lpips: Vec::new(),
            reference: false,
        }
    }

    /// Result by result: a two-sample method pairs sample with sample, a one-result method is
    /// set against each of the reference's samples, and unmeasured or diverged results drop
    /// out of the pairs.
    #[test]
    fn results_are_compared_pair_by_pair() {
        let reference = vec![
            vec![Some(0.20), Some(0.30)],
            vec![Some(0.40), Some(0.10)],
            vec![Some(0.50), None],
        ];
        let sampler = vec![
            vec![Some(0.10), Some(0.35)],
            vec![Some(0.40), Some(0.05)],
            vec![],
        ];
        let Some(p) = paired_lpips(&sampler, &reference) else {
            panic!("pairs expected");
        };
        // Differences −0.10, +0.05, 0, −0.05.
        assert_eq!((p.pairs, p.lower, p.higher), (4, 2, 1));
        assert!((p.mean_difference - (-0.025)).abs() < 1e-12, "{p:?}");
        let sd = ((0.075f64.powi(2) + 0.075f64.powi(2) + 0.025f64.powi(2) + 0.025f64.powi(2))
            / 3.0)
            .sqrt();
        assert!((p.standard_error - sd / 2.0).abs() < 1e-12, "{p:?}");
        let single = vec![vec![Some(0.25)], vec![Some(0.45)], vec![Some(0.60)]];
        let Some(q) = paired_lpips(&single, &reference) else {
            panic!("pairs expected");
        };
        // 0.25 against 0.20 and 0.30, 0.45 against 0.40 and 0.10, 0.60 against 0.50.
        assert_eq!((q.pairs, q.lower, q.higher), (5, 1, 4));
        assert!(paired_lpips(&[vec![None]], &[vec![Some(0.2)]]).is_none());

        let mut rows = vec![
            row("patches", Vec::new()),
            row("network", Vec::new()),
            row("biharmonic", Vec::new()),
        ];
        rows[0].reference = true;
        rows[0].case_lpips = reference;
        rows[1].case_lpips = sampler;
        let table = paired_markdown(&rows);
        assert!(table.contains("against patches"), "{table}");
        assert!(
            table.contains("| network | 4 | 2 | 1 | -0.0250 | 0.0323 |"),
            "{table}"
        );
        // No LPIPS, no row; no reference, no table.
        assert!(!table.contains("biharmonic"), "{table}");
        rows[0].reference = false;
        assert!(paired_markdown(&rows).is_empty());
    }

    /// Each level is averaged over the draws that reached it; the table has one row per level
    /// of each method that ran a patch prior, coarsest first, and leaves the others out.
    #[test]
    fn the_ess_table_averages_each_level_over_its_draws() {
        // (level, first: σ, median, copying, exact; last: median, copying; calls)
        let draws: Vec<LevelEss> = [
            (1, 1.4, 3.0, 0.2, true, 1.0, 1.0, 10),
            (0, 0.28, 6.0, 0.4, false, 1.0, 0.9, 8),
            (1, 1.4, 5.0, 0.1, true, 1.0, 1.0, 10),
            (0, 0.28, 2.0, 0.5, false, 3.0, 0.7, 6),
        ]
        .into_iter()
        .map(
            |(l, sigma, median, copying, exact, last, last_copying, calls)| {
                let end = if l == 1 { 0.003 } else { 0.014 };
                level(
                    l,
                    record(sigma, median, copying, exact),
                    record(end, last, last_copying, false),
                    calls,
                )
            },
        )
        .collect();
        let by = ess_by_level(&draws);
        assert_eq!(by.len(), 2);
        let (finest, coarsest) = (by[0], by[1]);
        assert_eq!((finest.level, coarsest.level), (0, 1));
        assert_eq!((finest.draws, coarsest.draws), (2, 2));
        assert!((coarsest.first - 4.0).abs() < 1e-9);
        assert!((coarsest.exact_first - 1.0).abs() < 1e-9);
        assert!((finest.last - 2.0).abs() < 1e-9);
        assert!((finest.copying - 0.8).abs() < 1e-6);
        assert!((finest.calls - 7.0).abs() < 1e-9);
        let table = ess_markdown(&[row("patches", draws), row("network", Vec::new())]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].starts_with(
                "| patches | 1 | 2 | 10.0 | 1.400 → 0.003 | 4.0 | 1.00 | 100% | 100% |"
            ),
            "{table}"
        );
        assert!(
            lines[3]
                .starts_with("| patches | 0 | 2 | 7.0 | 0.280 → 0.014 | 4.0 | 2.00 | 80% | 0% |"),
            "{table}"
        );
        assert!(!table.contains("network"));
        assert!(ess_markdown(&[row("network", Vec::new())]).is_empty());
    }
}
