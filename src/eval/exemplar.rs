//! The classical exemplar fill a photographer uses today (GIMP's Resynthesizer, content-aware
//! fill), built from the same PatchMatch code as the patch prior: Wexler, Shechtman & Irani's
//! EM completion (TPAMI 2007) in the multi-scale form of Newson et al. (IPOL 2017).
//!
//! Per hole, on the same crop and pyramid as the patch prior's fills, with the same clean bank:
//! the coarsest level starts from the biharmonic fill; then, at every level, a few EM rounds —
//! (E) each window touching the hole finds its nearest known window under the plain sum of
//! squared differences (PatchMatch, the field kept between rounds), (M) each hole pixel becomes
//! the average of what the overlapping matches say it is — and the result and the field go up to
//! the next level. A reference row for `eps-studio diagnose`, not a product feature.

use crate::photo::{Raster, RgbImage};
use crate::prior::patch::denoise::{PatchConfig, PatchDenoiser, Search};
use crate::prior::patch::pyramid::{self, PyramidConfig};
use crate::prior::patch::search::{Field, FieldSearch};
use crate::prior::patch::{Bank, Plane, Transforms};
use crate::restore::plan;
use crate::{Error, Result};

/// Settings of the exemplar fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExemplarConfig {
    /// Patch side.
    pub patch: usize,
    /// EM rounds at the coarsest level.
    pub coarse_rounds: usize,
    /// EM rounds at every finer level.
    pub fine_rounds: usize,
    /// The pyramid halves until the hole's longer side is at most this.
    pub coarse_hole: usize,
}

impl Default for ExemplarConfig {
    fn default() -> Self {
        Self {
            patch: 9,
            coarse_rounds: 20,
            fine_rounds: 8,
            coarse_hole: 16,
        }
    }
}

/// Fills the holes of `y` (`true` in `fill`) by exemplar EM completion, one crop per hole with
/// the restoration pipeline's context margin; pixels outside the holes are returned unchanged.
pub fn exemplar_fill(y: &RgbImage, fill: &[bool], cfg: &ExemplarConfig) -> Result<RgbImage> {
    let (w, h) = (y.width, y.height);
    if fill.len() != w * h {
        return Err(Error::shape("fill mask", w * h, fill.len()));
    }
    let mut out = y.clone();
    let margin = PyramidConfig::default();
    for r in plan::inpaint_regions_with(fill, w, h, |a, b| margin.context_margin(a, b)) {
        let rgb = y.crop_rgb(r.x, r.y, r.w, r.h);
        let plane = Plane {
            width: r.w,
            height: r.h,
            channels: 3,
            data: rgb.data.iter().map(|v| v * 2.0 - 1.0).collect(),
        };
        let hole: Vec<bool> = (r.y..r.bottom())
            .flat_map(|row| fill[row * w + r.x..row * w + r.right()].iter().copied())
            .collect();
        let filled = fill_crop(&plane, &hole, cfg)?;
        for row in 0..r.h {
            for col in 0..r.w {
                let i = (r.y + row) * w + r.x + col;
                if fill[i] {
                    let o = (row * r.w + col) * 3;
                    for c in 0..3 {
                        out.data[i * 3 + c] = ((filled.data[o + c] + 1.0) * 0.5).clamp(0.0, 1.0);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn fill_crop(y: &Plane, hole: &[bool], cfg: &ExemplarConfig) -> Result<Plane> {
    let pcfg = PyramidConfig {
        coarse_hole: cfg.coarse_hole,
        patch: PatchConfig {
            patch: cfg.patch,
            // τ = 0 and one neighbour: each window takes its best match whole.
            tau: 0.0,
            tau_per_sigma: 0.0,
            window: f64::INFINITY,
            search: Search::Field(FieldSearch {
                k: 1,
                sweeps: 2,
                random_draws: 2,
                radius: None,
            }),
            shift: 0.0,
        },
        ..PyramidConfig::default()
    };
    let levels = pyramid::levels(y, hole, 0.0, &pcfg);
    let noise = crate::prior::patch::clean::estimate_noise(y, hole);
    let mut x: Option<Plane> = None;
    let mut previous: Option<PatchDenoiser> = None;
    for (li, level) in levels.iter().enumerate().rev() {
        let level_noise = noise / f64::from(1 << li);
        let source = if level_noise > pyramid::CLEAN_BELOW {
            crate::prior::patch::clean::nl_means(&level.y, &level.hole, level_noise, 7)
        } else {
            level.y.clone()
        };
        let bank = Bank::new(&source, &level.hole, cfg.patch, Transforms::MIRROR)?;
        let d = PatchDenoiser::new(
            bank,
            pcfg.patch,
            (level.y.width, level.y.height),
            Some(&level.hole),
        )?;
        let mut current = match &x {
            None => {
                let rgb = RgbImage {
                    width: source.width,
                    height: source.height,
                    data: source.data.iter().map(|v| (v + 1.0) * 0.5).collect(),
                };
                let b = super::reference::biharmonic_fill(&rgb, &level.hole)?;
                Plane {
                    data: b.data.iter().map(|v| v * 2.0 - 1.0).collect(),
                    ..source.clone()
                }
            }
            Some(coarse) => {
                let up = pyramid::upsample(coarse, level.y.width, level.y.height);
                let mut cur = source.clone();
                for (i, &f) in level.hole.iter().enumerate() {
                    if f {
                        let c = cur.channels;
                        cur.data[i * c..(i + 1) * c].copy_from_slice(&up.data[i * c..(i + 1) * c]);
                    }
                }
                cur
            }
        };
        if let Some(prev) = &previous
            && let Some(f) = prev.field(0)
        {
            d.set_field(
                0,
                Field::upsampled(
                    &f,
                    prev.queries(),
                    prev.bank(),
                    d.queries(),
                    d.bank(),
                    li as u64,
                ),
            );
        }
        let flat = vec![1.0_f32; level.y.width * level.y.height];
        let rounds = if x.is_none() {
            cfg.coarse_rounds
        } else {
            cfg.fine_rounds
        };
        for _ in 0..rounds {
            let est = d.estimate(&current, &flat, 1.0, 0)?;
            for (i, &f) in level.hole.iter().enumerate() {
                if f {
                    let c = current.channels;
                    current.data[i * c..(i + 1) * c]
                        .copy_from_slice(&est.mean.data[i * c..(i + 1) * c]);
                }
            }
        }
        x = Some(current);
        previous = Some(d);
    }
    x.ok_or_else(|| Error::invalid("exemplar fill", 0, "no level"))
}
