//! Inpainting with the photo's own patches: each hole's crop is filled coarse to fine at the
//! photo's own resolution ([`crate::prior::patch::pyramid`]), and only the hole's pixels are
//! pasted back. Super-resolution on the photo's own patches takes its denoiser from here too
//! ([`super_resolver`]).

use candle_core::Tensor;

use super::{
    Accumulator, Degradation, Models, Prior, Progress, Rect, Restoration, Settings, StepCount,
    VarianceMap, plan,
};
use crate::photo::{Raster, RgbImage};
use crate::prior::patch::{
    DeblurConfig, PatchConfig, PatchDeblur, PatchSr, Plane, clean, deblur, pyramid,
};
use crate::sampler::{Flow, Method, PosteriorDenoiser, PosteriorMeanConfig};
use crate::{Error, Result};

/// A crop of the photo as a plane in `[-1, 1]`.
fn crop_plane(y: &dyn Raster, r: Rect) -> Plane {
    let rgb = y.crop_rgb(r.x, r.y, r.w, r.h);
    Plane {
        width: r.w,
        height: r.h,
        channels: 3,
        data: rgb.data.iter().map(|v| v * 2.0 - 1.0).collect(),
    }
}

/// The crops for the holes of `fill`, with the patch prior's context; each must leave enough
/// windows of known pixels outside `keep_out` (empty: none) to copy from, checked before any
/// work.
fn checked_regions(
    fill: &[bool],
    keep_out: &[bool],
    w: usize,
    h: usize,
    cfg: &pyramid::PyramidConfig,
) -> Result<Vec<Rect>> {
    let regions = plan::inpaint_regions_with(fill, w, h, |a, b| cfg.context_margin(a, b));
    for region in &regions {
        let hole = region_hole(fill, w, *region);
        let p = cfg.patch.patch;
        let count = |banned: &[bool]| {
            crate::prior::patch::bank::valid_windows(banned, region.w, region.h, p)
                .into_iter()
                .filter(|&v| v)
                .count()
        };
        let windows = count(&hole);
        let place = format!(
            "{}×{} region at ({}, {})",
            region.w, region.h, region.x, region.y
        );
        if windows < pyramid::MIN_WINDOWS {
            return Err(Error::invalid(
                "mask",
                place,
                format!(
                    "leaves {windows} windows of {p}×{p} known pixels around the hole, and the patch prior copies from at least {}; paint a smaller mask, or choose the network prior",
                    pyramid::MIN_WINDOWS
                ),
            ));
        }
        if let Some(area) = region_keep_out(keep_out, w, *region) {
            let banned: Vec<bool> = hole.iter().zip(&area).map(|(&a, &b)| a || b).collect();
            let left = count(&banned);
            if left < pyramid::MIN_WINDOWS {
                return Err(Error::invalid(
                    "keep-out area",
                    place,
                    format!(
                        "leaves {left} windows of {p}×{p} pixels to copy from around the hole (of {windows} without it), and the patch prior copies from at least {}; paint a smaller keep-out area",
                        pyramid::MIN_WINDOWS
                    ),
                ));
            }
        }
    }
    Ok(regions)
}

/// The part of the keep-out area (`width` wide; empty: none) inside `r`, or `None` where it
/// marks nothing there.
fn region_keep_out(keep_out: &[bool], width: usize, r: Rect) -> Option<Vec<bool>> {
    if keep_out.is_empty() {
        return None;
    }
    let area = region_hole(keep_out, width, r);
    area.iter().any(|&k| k).then_some(area)
}

/// Image 0 of a crop-sized estimate, resized to the region and with the photo's own pixels
/// outside the hole: what the user sees while it forms.
fn composited(x: &Tensor, y: &dyn Raster, fill: &[bool], region: Rect) -> Result<RgbImage> {
    let img = image(x, 0)?;
    let w = y.width();
    let mut preview = super::resize::bilinear(&img, region.w, region.h);
    for row in 0..region.h {
        for col in 0..region.w {
            let i = (region.y + row) * w + region.x + col;
            if !fill[i] {
                let o = (row * region.w + col) * 3;
                for c in 0..3 {
                    preview.data[o + c] = y.value(i * 3 + c);
                }
            }
        }
    }
    Ok(preview)
}

/// The residual of a filled crop on its observed pixels, RMS over channels (`[-1, 1]` units).
fn residual(patch: &RgbImage, y: &dyn Raster, region: Rect) -> Vec<f32> {
    let w = y.width();
    (0..region.w * region.h)
        .map(|k| {
            let i = (region.y + k / region.w) * w + region.x + k % region.w;
            let s: f32 = (0..3)
                .map(|c| 2.0 * (patch.data[k * 3 + c] - y.value(i * 3 + c)))
                .map(|d| d * d)
                .sum();
            (s / 3.0).sqrt()
        })
        .collect()
}

/// DDNM+ and DiffPIR on the patch prior: the baseline's own sampler at the crop's resolution
/// with the patch denoiser as its unconditional `D(x, σ)` (the same prior EPS samples, so
/// the comparison stays same-backbone).
fn baseline(
    y: &dyn Raster,
    FillMasks { fill, keep_out }: FillMasks<'_>,
    settings: &Settings,
    method: &Method,
    seeds: &[u64],
    observer: &mut dyn FnMut(&Progress<'_>) -> Flow,
) -> Result<Restoration> {
    let cfg = settings.patch;
    let (w, h) = (y.width(), y.height());
    let regions = checked_regions(fill, keep_out, w, h, &cfg)?;
    let n_regions = regions.len();
    let mut acc: Vec<Accumulator> = seeds
        .iter()
        .map(|_| Accumulator::new(w, h, y, &Degradation::inpaint(Vec::new())))
        .collect();
    let mut nfe = 0;
    let mut patch_ess = Vec::new();
    for (index, region) in regions.iter().enumerate() {
        let plane = crop_plane(y, *region);
        let hole = region_hole(fill, w, *region);
        let level = pyramid::Level {
            y: plane,
            hole,
            sigma_y: settings.sigma_y,
        };
        let noise = crate::prior::patch::clean::estimate_noise(&level.y, &level.hole);
        let area = region_keep_out(keep_out, w, *region);
        let d = pyramid::level_denoiser(&level, area.as_deref(), &cfg, noise)?;
        let problem = pyramid::level_problem(&level, &candle_core::Device::Cpu)?;
        let denoisers = crate::sampler::Denoisers {
            prior: Some(&d),
            posterior: None,
        };
        let mut observe = |info: &crate::sampler::StepInfo<'_>| -> Flow {
            let Ok(preview) = composited(info.x0_hat, y, fill, *region) else {
                return Flow::Continue;
            };
            observer(&Progress {
                at: StepCount {
                    region: index,
                    regions: n_regions,
                    step: info.step,
                    n_steps: info.n_steps,
                    layout: (1, 1),
                },
                rect: *region,
                preview: &preview,
            })
        };
        let out = crate::sampler::sample(method, denoisers, &problem, seeds, &mut observe)?;
        crate::inverse::ensure_finite(&out.samples, "the patch fill")?;
        nfe = out.nfe;
        let records: Vec<_> = d.ess_log().into_iter().map(|r| (0, r)).collect();
        patch_ess.extend(super::LevelEss::per_level(&records, 1));
        for (b, a) in acc.iter_mut().enumerate() {
            let patch = image(&out.samples, b)?;
            a.add_hole(&patch, &residual(&patch, y, *region), fill, *region);
        }
    }
    let (samples, residuals) = acc.into_iter().map(Accumulator::finish).unzip();
    Ok(Restoration {
        samples,
        residuals,
        seeds: seeds.to_vec(),
        nfe,
        regions: n_regions,
        seconds: 0.0,
        backend: "CPU (patch prior)".into(),
        notices: Vec::new(),
        fell_back_to_cpu: false,
        lpips: Vec::new(),
        variance: None,
        patch_ess,
        patch_turns: Vec::new(),
    })
}

/// The part of the fill mask (`width` wide) inside `r`.
fn region_hole(fill: &[bool], width: usize, r: Rect) -> Vec<bool> {
    (r.y..r.bottom())
        .flat_map(|row| {
            fill[row * width + r.x..row * width + r.right()]
                .iter()
                .copied()
        })
        .collect()
}

/// Image `b` of `[B, 3, h, w]` in `[-1, 1]` as an image in `[0, 1]` (unclipped).
fn image(x: &Tensor, b: usize) -> Result<RgbImage> {
    super::from_tensor(x, b)
}

/// Draws that go through the pyramid together (see [`restore`]).
pub(super) const BATCH: usize = 1;

/// What a fill fills, and where it must not copy from.
#[derive(Debug, Clone, Copy)]
pub(super) struct FillMasks<'a> {
    /// `true`: pixels to fill, one per photo pixel.
    pub fill: &'a [bool],
    /// `true`: pixels no bank window may touch, one per photo pixel; empty for none.
    pub keep_out: &'a [bool],
}

/// Restores the holes of `y` with the patch prior.
pub(super) fn restore(
    models: &Models,
    y: &dyn Raster,
    masks: FillMasks<'_>,
    settings: &Settings,
    method: &Method,
    seeds: &[u64],
    observer: &mut dyn FnMut(&Progress<'_>) -> Flow,
) -> Result<Restoration> {
    let FillMasks { fill, keep_out } = masks;
    let cfg = match method {
        Method::Eps(c) => {
            // The coarsest level runs the EPS sampler asked for, where it was asked for.
            let mut p = settings.patch;
            if settings.steps.is_some() {
                p.coarse.steps = c.steps;
            }
            if settings.solver.is_some() || settings.churn.is_some() {
                p.coarse.solver = c.solver;
                p.coarse.churn = c.churn;
            }
            p
        }
        Method::PosteriorMean(_) if settings.preview => settings.patch.for_preview(),
        Method::PosteriorMean(_) => settings.patch.for_mean(),
        Method::Ddnm(_) | Method::Diffpir(_) => {
            return baseline(y, masks, settings, method, seeds, observer);
        }
        other => {
            return Err(Error::Unsupported(format!(
                "{} differentiates through its denoiser, which the patch prior does not offer; use EPS, DDNM+ or DiffPIR, or the network prior",
                other.name()
            )));
        }
    };
    let network = if settings.prior.uses_network() {
        Some(models.eps().ok_or_else(|| {
            Error::Unsupported(format!(
                "the {} prior needs the EPS network, which is not loaded",
                settings.prior.name()
            ))
        })?)
    } else {
        None
    };
    let (w, h) = (y.width(), y.height());
    let regions = checked_regions(fill, keep_out, w, h, &cfg)?;
    let n_regions = regions.len();
    let degradation = Degradation::inpaint(Vec::new());
    let mut acc: Vec<Accumulator> = seeds
        .iter()
        .map(|_| Accumulator::new(w, h, y, &degradation))
        .collect();
    let mut calls = 0;
    let mut patch_ess = Vec::new();
    let mut patch_turns = Vec::new();
    let mut variance = Some(VarianceMap {
        width: w,
        height: h,
        regions: Vec::with_capacity(n_regions),
        samples: seeds.len(),
    });
    for (index, region) in regions.iter().enumerate() {
        let plane = crop_plane(y, *region);
        let hole = region_hole(fill, w, *region);
        let mut observe = |step: &pyramid::FillStep<'_>| -> Flow {
            let Ok(preview) = composited(step.x0_hat, y, fill, *region) else {
                return Flow::Continue;
            };
            observer(&Progress {
                at: StepCount {
                    region: index,
                    regions: n_regions,
                    step: step.step,
                    n_steps: step.n_steps,
                    layout: step.layout,
                },
                rect: *region,
                preview: &preview,
            })
        };
        let guide = match (settings.prior, network) {
            (Prior::PatchOnNetworkMean, Some(net)) => pyramid::Guide {
                layout: pyramid::Layout::Image(network_mean(net, y, fill, settings, *region)?),
                above: None,
                fuse: None,
            },
            (Prior::NetworkThenPatch, Some(net)) => pyramid::Guide {
                layout: pyramid::Layout::Smooth,
                above: Some((net as &dyn PosteriorDenoiser, cfg.switch_sigma)),
                fuse: None,
            },
            (Prior::Fused, Some(net)) => pyramid::Guide {
                layout: pyramid::Layout::Smooth,
                above: None,
                fuse: Some(net as &dyn PosteriorDenoiser),
            },
            _ => pyramid::Guide::patches(),
        };
        let cfg = if settings.prior == Prior::NetworkThenPatch {
            // The network makes the layout from pure noise.
            pyramid::PyramidConfig {
                coarse_start: None,
                ..cfg
            }
        } else {
            cfg
        };
        // The mean is the average of `mean_draws` quick samples per seed.
        let draws = if matches!(method, Method::PosteriorMean(_)) {
            cfg.mean_draws.max(1)
        } else {
            1
        };
        let run_seeds: Vec<u64> = seeds
            .iter()
            .flat_map(|&s| {
                (0..draws as u64).map(move |k| {
                    if draws == 1 {
                        s
                    } else {
                        s.wrapping_mul(0x9E37_79B9).wrapping_add(k) ^ 0x6D65_616E
                    }
                })
            })
            .collect();
        // The levels and their cleaned banks are the same for every draw: made once.
        let area = region_keep_out(keep_out, w, *region);
        let prepared = pyramid::Prepared::keeping_out(
            &plane,
            &hole,
            area.as_deref(),
            settings.sigma_y,
            &cfg,
            &guide,
        )?;
        patch_turns.push(super::TurnChoice {
            turned: prepared.turned(),
            ratio: prepared.turn_ratio(),
        });
        // The draws go through the pyramid one at a time: each holds planes and a field at the
        // crop's size, so the peak does not grow with the samples asked for (the work inside a
        // draw is parallel already). The instant preview's draws stop at a small level and go
        // through it together (one matrix product for all; the same draws as one at a time).
        let batch = if settings.preview {
            run_seeds.len().max(1)
        } else {
            BATCH
        };
        let n_chunks = run_seeds.len().div_ceil(batch);
        let mut draws_made: Vec<RgbImage> = Vec::with_capacity(run_seeds.len());
        let mut first_calls = Vec::with_capacity(n_chunks);
        let mut var_ok = true;
        for (ci, chunk) in run_seeds.chunks(batch).enumerate() {
            let mut observe_chunk = |st: &pyramid::FillStep<'_>| -> Flow {
                observe(&pyramid::FillStep {
                    level: st.level,
                    levels: st.levels,
                    step: ci * st.n_steps + st.step,
                    n_steps: n_chunks * st.n_steps,
                    layout: st.layout,
                    x0_hat: st.x0_hat,
                })
            };
            let out = pyramid::fill_prepared(&prepared, chunk, &guide, &mut observe_chunk)?;
            crate::inverse::ensure_finite(&out.samples, "the patch fill")?;
            calls = out.calls;
            let depth = out.depths.first().copied().unwrap_or(out.queries.len());
            patch_ess.extend(super::LevelEss::per_level(&out.ess, depth));
            // The variance map needs every draw's first call (the law of total variance).
            match out.first_call {
                Some(c) => first_calls.push(c),
                None => var_ok = false,
            }
            for b in 0..chunk.len() {
                draws_made.push(image(&out.samples, b)?);
            }
        }
        // [-1, 1] units to [0, 1]; a region without one leaves the map to the samples' spread.
        let map = if var_ok {
            pyramid::variance_map(&first_calls, plane.width, plane.height, &hole)?
        } else {
            None
        };
        drop(first_calls);
        match (&mut variance, map) {
            (Some(map), Some(v)) => map
                .regions
                .push((*region, v.into_iter().map(|x| x / 4.0).collect())),
            _ => variance = None,
        }
        for (b, a) in acc.iter_mut().enumerate() {
            let mut patch = draws_made[b * draws].clone();
            for more in &draws_made[b * draws + 1..(b + 1) * draws] {
                for (p, m) in patch.data.iter_mut().zip(&more.data) {
                    *p += m;
                }
            }
            for p in &mut patch.data {
                *p /= draws as f32;
            }
            a.add_hole(&patch, &residual(&patch, y, *region), fill, *region);
        }
    }
    let mut samples = Vec::with_capacity(seeds.len());
    let mut residuals = Vec::with_capacity(seeds.len());
    for a in acc {
        let (s, r) = a.finish();
        samples.push(s);
        residuals.push(r);
    }
    Ok(Restoration {
        samples,
        residuals,
        seeds: seeds.to_vec(),
        nfe: calls,
        regions: n_regions,
        seconds: 0.0,
        backend: "CPU (patch prior)".into(),
        notices: Vec::new(),
        fell_back_to_cpu: false,
        lpips: Vec::new(),
        variance,
        patch_ess,
        patch_turns,
    })
}

/// The EPS network's one-call posterior mean over `region`, at the crop's own size in `[-1, 1]`.
fn network_mean(
    net: &crate::denoiser::Network,
    y: &dyn Raster,
    fill: &[bool],
    settings: &Settings,
    region: Rect,
) -> Result<Plane> {
    let degradation = Degradation::inpaint(fill.to_vec());
    let device = candle_core::Device::Cpu;
    let job = super::build_job(y, &degradation, settings, region, &device)?;
    let out = crate::sampler::eps::posterior_mean(
        net,
        &job.problem,
        &[0],
        &PosteriorMeanConfig::default(),
        &mut crate::sampler::ignore_progress,
    )?;
    let img = super::working_to_output(&out.samples, 0, &job)?;
    Ok(Plane {
        width: img.width,
        height: img.height,
        channels: 3,
        data: img.data.iter().map(|v| v * 2.0 - 1.0).collect(),
    })
}

/// Patch side, in blocks, of super-resolution ×`factor` on the photo's own patches: about ten
/// output pixels (5 blocks at ×2, 3 at ×4, 1 at ×8), odd.
pub fn sr_patch(factor: usize) -> usize {
    let blocks = 10_usize.div_ceil(factor.max(1)).max(1);
    if blocks.is_multiple_of(2) {
        blocks - 1
    } else {
        blocks
    }
}

/// The measurement around `region` (half the region's longer side of context on every side),
/// cleaned by non-local means at `strength` times its estimated noise (`None`: as it is): the
/// source of a cross-scale bank.
fn cleaned_context(y: &dyn Raster, region: Rect, strength: Option<f64>) -> Plane {
    let margin = region.w.max(region.h) / 2;
    let (x0, y0) = (
        region.x.saturating_sub(margin),
        region.y.saturating_sub(margin),
    );
    let x1 = (region.x + region.w + margin).min(y.width());
    let y1 = (region.y + region.h + margin).min(y.height());
    let plane = crop_plane(y, Rect::new(x0, y0, x1 - x0, y1 - y0));
    let known = vec![false; plane.width * plane.height];
    let noise = clean::estimate_noise(&plane, &known);
    match strength {
        Some(k) if noise > pyramid::CLEAN_BELOW => clean::nl_means(&plane, &known, noise * k, 7),
        _ => plane,
    }
}

/// The posterior denoiser of super-resolution ×`factor` for `region` (measurement pixels) on
/// the photo's own patches: the bank from the measurement around the region (half the
/// region's longer side of context on every side), cleaned as the fill's bank is.
pub fn super_resolver(
    y: &dyn Raster,
    region: Rect,
    factor: usize,
    settings: &Settings,
) -> Result<PatchSr> {
    let cfg = &settings.patch;
    let exemplars = cleaned_context(y, region, cfg.clean_bank.then_some(cfg.clean_strength));
    let patch = PatchConfig {
        patch: sr_patch(factor),
        window: f64::INFINITY,
        ..cfg.patch
    };
    PatchSr::new(
        &exemplars,
        factor,
        patch,
        (region.w * factor, region.h * factor),
    )
}

/// The posterior denoiser of deblurring by `kernel` for `region` (measurement pixels) on the
/// photo's own patches, for working images of `size` (the region with its mirrored margin):
/// the bank from the measurement around the region (half the region's longer side of context
/// on every side), cleaned as the fill's bank is, shrunk so the blur is under a pixel there.
pub fn deblurrer(
    y: &dyn Raster,
    region: Rect,
    kernel: &crate::inverse::Kernel,
    cfg: DeblurConfig,
    size: (usize, usize),
) -> Result<PatchDeblur> {
    let exemplars = cleaned_context(y, region, Some(1.0));
    PatchDeblur::new(&exemplars, deblur_scale(kernel, cfg), cfg, size)
}

/// The factor the deblurring bank's copy of the photo is shrunk by for `kernel`.
fn deblur_scale(kernel: &crate::inverse::Kernel, cfg: DeblurConfig) -> usize {
    cfg.scale
        .unwrap_or_else(|| deblur::bank_scale(deblur::kernel_radius(kernel)))
        .max(1)
}

/// Refuses a photo too small for a deblurring bank under `kernel`: its shrunk copy must hold
/// at least one patch.
pub fn check_deblur_size(
    (w, h): (usize, usize),
    kernel: &crate::inverse::Kernel,
    cfg: DeblurConfig,
) -> Result<()> {
    let need = cfg.patch.patch * deblur_scale(kernel, cfg);
    if w < need || h < need {
        return Err(Error::invalid(
            "photo size for deblurring from its own patches",
            format!("{w}×{h}"),
            format!(
                "needs at least {need}×{need} pixels for this blur; choose the trained network \
                 as the prior (restore --prior network, or Prior in the app)"
            ),
        ));
    }
    Ok(())
}
