//! Coarse-to-fine EPS fills with the patch prior, up to the photo's own pixels.
//!
//! The hole's crop is halved until the hole's long side is at most `coarse_hole` pixels, or
//! until a coarser level would hold fewer than `layout_windows` windows of known pixels. At the
//! coarsest level the EPS sampler starts from a layout (the hole's surroundings carried in
//! along their edges, or the network's one-call mean) with noise `coarse_start` added, or from
//! pure noise at σmax; at every finer level it starts from the coarser sample, upsampled
//! through its PatchMatch field (each query window takes the finer version of its match), with
//! noise `fine.schedule.sigma_max` added, and runs down to `sigma_min` with the finer bank.
//! Each level is an ordinary EPS run on that level's mask problem (its `y` the area-averaged
//! photo, its `σ_y` halved per level as averaging four pixels halves independent noise), so the
//! pivot and the sampler are the product's own. The field of each sample goes down the levels
//! with it (Qiu, Kutulakos, Lindell 2026; Wexler, Shechtman, Irani 2007); below the coarsest
//! level it only searches near the matches it brought ([`PyramidConfig::fine_radius`]). Every
//! level but the finest carries one more channel, the spread of the finest pixels under each of
//! its pixels ([`detail_channels`]), so that a coarse match also says what detail lies below it.

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::bank::{Bank, Plane, Transforms};
use super::denoise::{EssRecord, PatchConfig, PatchDenoiser};
use super::search::Field;
use crate::inverse::{Mask, Problem};
use crate::sampler::schedule::EdmSchedule;
use crate::sampler::{EpsConfig, Flow, PosteriorDenoiser, StepInfo, eps};
use crate::{Error, Result};

/// Settings of a coarse-to-fine fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PyramidConfig {
    /// The patch prior at every level.
    pub patch: PatchConfig,
    /// Levels halve until the hole's longer side is at most this many pixels (or a coarser
    /// level would have too few windows of known pixels): the scale at which the layout is
    /// made.
    pub coarse_hole: usize,
    /// Most levels (1: the fill at the crop's own size only).
    pub max_levels: usize,
    /// Fewest windows of known pixels a coarser level's bank may have: fewer and the pyramid
    /// stops at the finer level, where there are more ([`MIN_WINDOWS`] at the least).
    /// 1024 by default: a 3088 × 2056 photo with a 392 × 672 hole and 320 px of context went
    /// down to a 13 × 21 hole with 216 windows, whose samples raised the meadow below the hole
    /// into it as a flat-topped mound; from the level above it (2 568 windows) the meadow's edge
    /// runs on. Smaller holes, with two hole sizes of context around them, mostly keep
    /// thousands of windows down to a 16-pixel hole (24 validation holes: LPIPS 0.232 → 0.231).
    pub layout_windows: usize,
    /// A coarser level's pixel is known when at least this fraction of the crop's pixels under
    /// it are (its value is their mean), and a hole pixel otherwise. 1: any hole pixel below
    /// makes it a hole, so the hole grows by up to a pixel per level and thin known structure
    /// next to it (a shadow's edge) is gone at the coarsest level. 1 by default: 0.5 and 0.25
    /// keep that structure and gain 0.4–0.5 dB of hole PSNR over 24 holes, but LPIPS is 0.003
    /// worse and a meadow below a forest gets a brown block of the forest's floor
    /// (docs/patch-prior.md).
    pub known_fraction: f64,
    /// Where positive, the KDE's τ at every coarser level rises to this multiple of the ring's
    /// contrast ([`ring_spread`]: the standard deviation of the known pixels within half a
    /// patch of the hole) where that is larger. A wider kernel there lets the windows over the
    /// hole's edge continue high-contrast surroundings instead of copying the ring exactly: at
    /// 0.04 the stripes' grey patch went from 7–10 of 16 samples to none, at the same score
    /// over the 24 holes it was tuned on, but 24 other holes lost (LPIPS 0.279 against 0.274,
    /// the stripes' own among them; docs/patch-prior.md). 0 (the default): τ is the same at
    /// every level.
    pub ring_tau: f64,
    /// How far (pixels) each finer level's field searches around the matches it starts with:
    /// the finer versions of the coarser level's matches. No draws from the whole bank there,
    /// so a finer level adds the detail of the layout its coarser level chose instead of
    /// finding other windows far away (0: search the whole bank at every level). 4 by default:
    /// of 16 samples of a stripes hole, 9 had a grey patch copied from the far, fine stripes
    /// with the whole bank and none at 4; over 24 holes the same LPIPS (0.232 against 0.231) at
    /// 0.2 dB less hole PSNR and more of the surroundings' texture (docs/patch-prior.md).
    pub fine_radius: usize,
    /// The sampler of the coarsest level, from pure noise.
    pub coarse: EpsConfig,
    /// The sampler of every finer level; its schedule's `sigma_max` is the starting noise,
    /// 0.2 by default. 0.4 scores a little better on 24 holes of 512-pixel photos (LPIPS
    /// 0.230 against 0.232, 24 other holes 0.270 against 0.276) but softens a 6 MP fill at
    /// 100%: its middle levels average more windows and the foliage loses its leaves
    /// (docs/patch-prior.md). A level with strong detail of its own starts from up to twice
    /// as much ([`Self::fine_detail`]); the mean's draws start from twice as much again
    /// ([`Self::for_mean`]).
    pub fine: EpsConfig,
    /// Where positive, a finer level whose own detail is stronger than this starts from
    /// proportionally more noise, at most twice `fine.schedule.sigma_max`. A level's detail is
    /// the RMS of what it adds to the upsampled coarser level over its known pixels, after the
    /// bank's cleaning ([`level_detail`]): a restart redraws about as much as the level
    /// carries. 0.054 by default, the strongest detail of the 6 MP fill's levels
    /// (docs/patch-prior.md), whose foliage a start of 0.3 at every level softened, so that
    /// fill is unchanged; 24 holes of 512-pixel photos, whose detail is mostly stronger, gain
    /// 0.16 dB of hole PSNR and lower CRPS at the same LPIPS (24 other holes: 0.21 dB and
    /// 0.003 LPIPS). 0: every finer level starts from `fine.schedule.sigma_max`.
    pub fine_detail: f64,
    /// Strength of the bank's cleaning: non-local means at this multiple of the estimated noise
    /// (less keeps more texture and more noise). 0.85 by default: at 1 the fills had 0.42 of
    /// the texture around the hole, at 0.7 they carried noise (texture 1.66 of the truth's).
    pub clean_strength: f64,
    /// Mirror images in the bank. Off by default: flipped windows offer structure at the wrong
    /// orientation (shading, perspective), and leaving them out scored better on every
    /// measure (docs/patch-prior.md).
    pub mirror: bool,
    /// Whether the banks also hold the photo turned by 180° ([`Turn`]).
    pub turn: Turn,
    /// Denoise the bank's source pixels at the photo's estimated noise level first.
    pub clean_bank: bool,
    /// Where the coarsest level starts: `None` from pure noise at σmax; `Some(σ)` from the
    /// layout ([`Layout`]) with noise σ added, sampling from σ down.
    pub coarse_start: Option<f64>,
    /// How the patches' own layout ([`Layout::Smooth`]) continues the hole's surroundings.
    /// Coherence transport by default (with [`Self::coarse_start`] 0.5): it carries a straight
    /// edge that the hole hides straight through it, where the biharmonic fill blends it into a
    /// ramp that the patches then bend. On the fill tables it ties with the biharmonic fill
    /// (144 paired results on three sets of 24 holes: LPIPS +0.004 ± 0.003; 8 holes: −0.008 ±
    /// 0.006, lower on 14 of 16), and on the two holes where the biharmonic start went wrong it
    /// wins: the bamboo trunk's edge has a bump in 3–4 of 16 samples against about 9 (LPIPS
    /// 0.208 → 0.186), the stripes a grey blob in 1 of 16 against 3 (docs/patch-prior.md).
    pub smooth: Smooth,
    /// How a finer level's starting image is made from the coarser sample.
    pub upsampling: Upsampling,
    /// With a network guide ([`Guide::above`]), the noise level below which the patches take
    /// over the coarsest level.
    pub switch_sigma: f64,
    /// Context around a hole, as a fraction of its longer side (at least 16 pixels): the
    /// bank's source.
    pub context: f64,
    /// Most context around a hole, in pixels: the crop (and with it time and memory) grows
    /// with the hole, not the photo, and a big hole in a big photo does not take half of it.
    pub max_context: usize,
    /// Samples averaged into the posterior mean ([`Self::for_mean`], [`Self::for_preview`]).
    pub mean_draws: usize,
    /// Weight of the coarser levels' detail channel (0: none). Every level but the finest
    /// sampled gets a fourth channel: the standard deviation of the finest level's pixels
    /// within each of its pixels (what the averaging removed), times this weight. Patches then
    /// match on what lies below them as well as on their colours, so a coarse sample that
    /// puts grey into the hole copies grey that carries the right detail at the finer levels
    /// (fine stripes or foliage, not a flat wall of the same mean colour). 2 by default: on 24
    /// holes LPIPS 0.239 → 0.232 at the same PSNR (0.5: 0.233, 4: 0.241 and 0.3 dB less).
    pub detail_weight: f64,
    /// Levels whose hole is larger than this (longer side, pixels) are left out: the draw is
    /// made at the finest level within it and brought to the crop's size bilinearly (the instant
    /// preview's draws, whose mean is smooth anyway). `None` samples every level.
    pub stop_above: Option<usize>,
    /// Lay every sample out twice, at the coarsest level and one level finer (the pyramid one
    /// level shallower), and keep the one whose finest windows over the hole lie nearer the
    /// bank's windows (Wexler's coherence). Which depth suits a hole cannot be told before
    /// sampling: a structure mostly hidden at the coarsest level (a shadow whose visible parts
    /// are slivers there) is kept one level finer, while bands crossing the whole hole need the
    /// deepest layout. Only where the pyramid has three levels or more and reached
    /// [`Self::coarse_hole`] (not where it stopped above it for want of windows: a big hole in
    /// a big photo, whose 6 MP fill had softer foliage with the second layout); about 1.75
    /// times the time of one pass. On by default: 24 holes of 512-pixel photos, hole PSNR / LPIPS / CRPS
    /// 19.88 / 0.232 / 0.0682 → 20.36 / 0.226 / 0.0646 (24 other holes 19.17 / 0.272 / 0.0709
    /// → 19.58 / 0.267 / 0.0622), the mean 20.54 → 21.05 dB, and a clock's shadow that the
    /// deepest layout cut with a pale band is continued (docs/patch-prior.md). Off for the
    /// instant preview ([`Self::for_preview`]).
    pub choose_depth: bool,
}

impl PyramidConfig {
    /// The noise a finer level whose own detail is `detail` ([`level_detail`]) starts from:
    /// `fine.schedule.sigma_max`, raised in proportion where `detail` is above
    /// [`Self::fine_detail`], to at most twice that and at most [`MAX_FINE_SIGMA`].
    pub fn fine_start(&self, detail: f64) -> f64 {
        let base = self.fine.schedule.sigma_max;
        if self.fine_detail > 0.0 && detail.is_finite() {
            (base * (detail / self.fine_detail).clamp(1.0, 2.0)).min(MAX_FINE_SIGMA.max(base))
        } else {
            base
        }
    }

    /// The sampler whose draws are averaged into the posterior mean: fewer steps at the
    /// coarsest level and four per finer level (the finer levels mostly copy the finer
    /// versions of the coarse matches), each finer level started from
    /// [`Self::MEAN_FINE_SIGMA`] times the samples' noise (at most [`MAX_FINE_SIGMA`]). Draws
    /// that redraw more of their detail differ more, and their average is nearer the posterior
    /// mean; the softness this costs a single draw, the average has anyway. 24 holes, hole
    /// PSNR / LPIPS: 19.90 / 0.248 → 20.32 / 0.238 (24 other holes 19.38 / 0.269 → 19.73 /
    /// 0.263; three times: 20.41 / 0.241 and 19.80 / 0.264).
    pub fn for_mean(&self) -> Self {
        let mut out = *self;
        out.coarse.steps = self.coarse.steps.min(6);
        out.fine.steps = self.fine.steps.min(4);
        out.fine.schedule.sigma_max =
            (self.fine.schedule.sigma_max * Self::MEAN_FINE_SIGMA).min(MAX_FINE_SIGMA);
        out
    }

    /// How many times the samples' starting noise the mean's draws start each finer level
    /// from ([`Self::for_mean`]).
    pub const MEAN_FINE_SIGMA: f64 = 2.0;

    /// The instant preview's sampler: [`Self::for_mean`] with four steps at the coarsest level
    /// and two per finer level, and no level whose hole is larger than [`Self::PREVIEW_HOLE`]:
    /// the draw is made there and brought to the crop's size bilinearly (the mean is smooth
    /// anyway). Four coarse steps instead of six: 24 holes, 19.29 → 19.45 dB at the same LPIPS
    /// (0.320, 0.321), 0.26–0.29 → 0.23 s on `bench --patch`'s crop.
    pub fn for_preview(&self) -> Self {
        let mut out = self.for_mean();
        out.coarse.steps = self.coarse.steps.min(4);
        out.fine.steps = self.fine.steps.min(2);
        out.stop_above = Some(Self::PREVIEW_HOLE);
        out.choose_depth = false;
        out
    }

    /// Hole size (longer side, pixels) at the finest level the instant preview samples.
    pub const PREVIEW_HOLE: usize = 48;

    /// The context margin around a hole of `w × h` pixels.
    pub fn context_margin(&self, w: usize, h: usize) -> usize {
        ((w.max(h) as f64 * self.context).round() as usize)
            .min(self.max_context)
            .max(16)
    }
}

/// Whether the banks also hold the photo's windows turned by 180° ([`Transforms::turn`]):
/// the other end of a symmetric shape, a window the photo does not hold where the hole hides
/// one end of a shadow or of a round object. Where the photo has an up and a down (light from
/// above, sky over ground, shading on bands) turned windows bring structure the wrong way up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Turn {
    /// The photo's windows as they are.
    Never,
    /// Always the turned windows too.
    Always,
    /// The turned windows too where the known windows around the hole at the coarsest level
    /// match turned windows about as closely as unturned ones ([`turn_ratio`] below
    /// [`TURN_BELOW`]): the photo looks the same either way up there.
    #[default]
    Auto,
}

impl Turn {
    /// The choices, for menus and messages.
    pub const ALL: [Self; 3] = [Self::Auto, Self::Never, Self::Always];

    /// The name on the command line and in the app.
    pub fn name(self) -> &'static str {
        match self {
            Self::Never => "never",
            Self::Always => "always",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Turn {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        by_name(&Self::ALL, Self::name, "turned windows", s)
    }
}

/// The choice among `all` whose `name` is `s`, or an error for the parameter `what` that
/// lists the names (in the order of `all`, the default first).
fn by_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &'static str,
    s: &str,
) -> Result<T> {
    all.iter().copied().find(|&t| name(t) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&t| name(t)).collect();
        let list = match names.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => names.concat(),
        };
        Error::invalid(what, s, format!("use {list}"))
    })
}

/// How the coarsest level's first guess continues the hole's surroundings into it
/// ([`Layout::Smooth`]), before noise is added and the patches sample from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Smooth {
    /// The biharmonic fill: smooth, edges blended into their neighbours.
    Biharmonic,
    /// Coherence transport ([`super::transport`]): every hole pixel averages the known and
    /// already filled pixels around it along the edge direction read from the known pixels
    /// nearby. The default ([`PyramidConfig::smooth`]).
    #[default]
    Transport,
}

impl Smooth {
    /// The choices, for messages.
    pub const ALL: [Self; 2] = [Self::Transport, Self::Biharmonic];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Biharmonic => "biharmonic",
        }
    }
}

impl std::str::FromStr for Smooth {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        by_name(&Self::ALL, Self::name, "layout", s)
    }
}

/// [`Turn::Auto`] turns the windows where [`turn_ratio`] is below this. The ratio sorts the
/// holes of 8 validation photos by photo: 0.89–1.16 on the clock's shadow, the blurred garden
/// and the ladybird's leaves (where turned windows lowered the hole LPIPS on 9, 10 and 7 of
/// 12 samples), 1.18–1.73 on bamboo trunks and grey stripes (where they raised it by 0.04 and
/// 0.08 on average), more on cups, a forest edge and mountains. Set on two sets of 24 holes,
/// checked on a third (docs/patch-prior.md).
pub const TURN_BELOW: f64 = 1.17;

/// How much nearer the known windows around a hole lie to the photo's other unturned windows
/// than to its turned ones. For every window of `source` that is wholly known (no pixel of
/// `banned`) and whose centre lies within a window of a banned pixel: the squared distance
/// (over the first `colours` channels) to the nearest turned window, divided by that to the
/// nearest unturned one, neither overlapping it; the median over those windows. About 1
/// where the photo looks alike either way up around the hole; `None` where no window is
/// near the hole or the bank has no other window.
pub fn turn_ratio(source: &Plane, banned: &[bool], patch: usize, colours: usize) -> Option<f64> {
    use rayon::prelude::*;
    let (w, h, c) = (source.width, source.height, source.channels);
    let colours = colours.min(c);
    if w < patch || h < patch || banned.len() != w * h || colours == 0 {
        return None;
    }
    let valid = super::bank::valid_windows(banned, w, h, patch);
    let (cols, rows) = (w - patch + 1, h - patch + 1);
    let near = crate::inverse::masks::dilate(banned, w, h, patch);
    let r = patch / 2;
    let corners: Vec<(usize, usize)> = (0..rows * cols)
        .filter(|&i| valid[i])
        .map(|i| (i % cols, i / cols))
        .collect();
    // Every window's colours as one contiguous vector, row by row, and the same window turned
    // (its pixels in reverse order): distances then read two runs of memory.
    let row_len = patch * colours;
    let dim = patch * row_len;
    let mut plain = vec![0.0_f32; corners.len() * dim];
    for (v, &(x, y)) in plain.chunks_exact_mut(dim).zip(&corners) {
        for dy in 0..patch {
            for dx in 0..patch {
                let s = ((y + dy) * w + x + dx) * c;
                let d = (dy * patch + dx) * colours;
                v[d..d + colours].copy_from_slice(&source.data[s..s + colours]);
            }
        }
    }
    let turned: Vec<f32> = plain
        .chunks_exact(dim)
        .flat_map(|v| v.chunks_exact(colours).rev().flatten().copied())
        .collect();
    // The squared distance between `a` and `b`, or some value above `bound` once it is passed.
    let distance = |a: &[f32], b: &[f32], bound: f32| -> f32 {
        let mut acc = 0.0_f32;
        for (ra, rb) in a.chunks_exact(row_len).zip(b.chunks_exact(row_len)) {
            acc += ra
                .iter()
                .zip(rb)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f32>();
            if acc > bound {
                break;
            }
        }
        acc
    };
    // The windows sorted by their mean value, which turning leaves alone: `dim (ā − b̄)²` is at
    // most `|a − b|²`, so a query's search walks out from its own mean in both directions and
    // stops where that bound passes both of its best distances (an exact search).
    let means: Vec<f32> = plain
        .chunks_exact(dim)
        .map(|v| v.iter().sum::<f32>() / dim as f32)
        .collect();
    let mut order: Vec<usize> = (0..corners.len()).collect();
    order.sort_by(|&a, &b| means[a].total_cmp(&means[b]));
    let sorted_means: Vec<f32> = order.iter().map(|&j| means[j]).collect();
    let mut ratios: Vec<f64> = (0..corners.len())
        .into_par_iter()
        .filter(|&i| {
            let (x, y) = corners[i];
            near[(y + r) * w + x + r]
        })
        .filter_map(|i| {
            let q = corners[i];
            let a = &plain[i * dim..(i + 1) * dim];
            let (mut best, mut best_turned) = (f32::INFINITY, f32::INFINITY);
            let visit = |j: usize, best: &mut f32, best_turned: &mut f32| {
                let b = corners[j];
                if b.0.abs_diff(q.0) < patch && b.1.abs_diff(q.1) < patch {
                    return;
                }
                *best = best.min(distance(a, &plain[j * dim..(j + 1) * dim], *best));
                *best_turned =
                    best_turned.min(distance(a, &turned[j * dim..(j + 1) * dim], *best_turned));
            };
            let start = sorted_means.partition_point(|&m| m < means[i]);
            let (mut down, mut up) = (start, start);
            loop {
                let bound = |k: usize| dim as f32 * (sorted_means[k] - means[i]).powi(2);
                // Slightly below the bound, so that rounding never ends a walk too soon.
                let limit = best.max(best_turned) * 1.0001 + 1e-6;
                let go_down = down > 0 && bound(down - 1) <= limit;
                let go_up = up < order.len() && bound(up) <= limit;
                if !go_down && !go_up {
                    break;
                }
                if go_up {
                    visit(order[up], &mut best, &mut best_turned);
                    up += 1;
                }
                if go_down {
                    down -= 1;
                    visit(order[down], &mut best, &mut best_turned);
                }
            }
            // A floor of 1e-4 (a hundredth of a level per value, squared, over a window) keeps
            // flat windows, which match both ways almost exactly, at a ratio near 1.
            best.is_finite()
                .then(|| f64::from((best_turned + 1e-4) / (best + 1e-4)))
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(ratios[ratios.len() / 2])
}

/// How a coarser sample becomes the starting image of the next finer level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsampling {
    /// Bilinear interpolation: smooth; the finer level has to make all of its detail.
    Bilinear,
    /// The coarser level's nearest-neighbour field, moved to the finer level, copies the finer
    /// versions of the same patches (exemplar EM's upsampling): the texture the coarser sample
    /// chose comes with its detail.
    Field,
}

/// What guides the coarsest level besides the patches.
#[derive(Clone)]
pub struct Guide<'a> {
    /// The first guess the coarsest level starts from (with [`PyramidConfig::coarse_start`]).
    pub layout: Layout,
    /// Another posterior denoiser (the EPS network) that denoises the coarsest level at noise
    /// levels above the given σ, the patches below it.
    pub above: Option<(&'a dyn PosteriorDenoiser, f64)>,
    /// Another posterior denoiser (the EPS network) whose estimate is fused with the patches'
    /// at every noise level of the coarsest level, pixel by pixel by their posterior variances
    /// ([`super::fuse`]); the finer levels use the patches alone.
    pub fuse: Option<&'a dyn PosteriorDenoiser>,
}

impl Guide<'_> {
    /// The patches alone, from their own smooth layout ([`PyramidConfig::smooth`]).
    pub fn patches() -> Self {
        Self {
            layout: Layout::Smooth,
            above: None,
            fuse: None,
        }
    }
}

/// Hutchinson probes per call for the network's variance in a fused prior (each costs one
/// more network call).
pub const FUSE_PROBES: usize = 1;

/// A denoiser of colours on a level that also carries the detail channel: it denoises the
/// leading `colours` channels under its own problem (the level's colours) and passes the
/// others through unchanged.
struct ColoursOnly<'a> {
    inner: &'a dyn PosteriorDenoiser,
    problem: Problem,
    colours: usize,
}

impl PosteriorDenoiser for ColoursOnly<'_> {
    fn denoise(&self, mu: &Tensor, _: &Problem, sigma: f64) -> Result<Tensor> {
        let c = mu.dim(1)?;
        if c <= self.colours {
            return self.inner.denoise(mu, &self.problem, sigma);
        }
        let colours = self
            .inner
            .denoise(&mu.narrow(1, 0, self.colours)?, &self.problem, sigma)?;
        let rest = mu.narrow(1, self.colours, c - self.colours)?;
        Ok(Tensor::cat(&[&colours, &rest], 1)?)
    }
}

/// The network above a noise level, the patches below.
struct Switch<'a> {
    high: &'a dyn PosteriorDenoiser,
    low: &'a PatchDenoiser,
    sigma: f64,
}

impl PosteriorDenoiser for Switch<'_> {
    fn denoise(&self, mu: &Tensor, problem: &Problem, sigma: f64) -> Result<Tensor> {
        if sigma > self.sigma {
            self.high.denoise(mu, problem, sigma)
        } else {
            PosteriorDenoiser::denoise(self.low, mu, problem, sigma)
        }
    }
}

/// A smooth first guess of the hole at the coarsest level.
#[derive(Debug, Clone)]
pub enum Layout {
    /// The hole's surroundings continued into it, as [`PyramidConfig::smooth`] says.
    Smooth,
    /// An image at the crop's own size (`[-1, 1]`), e.g. the network's posterior mean.
    Image(Plane),
}

/// A plane's hole filled from its surroundings, the way `smooth` says: the coarsest level's
/// first guess ([`Layout::Smooth`]). Edge directions are read from the first `colours`
/// channels.
pub fn smooth_fill(y: &Plane, hole: &[bool], colours: usize, smooth: Smooth) -> Plane {
    match smooth {
        Smooth::Transport => super::transport::coherence_transport(
            y,
            hole,
            colours,
            &super::transport::TransportConfig::default(),
        ),
        Smooth::Biharmonic => biharmonic(y, hole),
    }
}

/// The biharmonic fill of a plane's hole, per channel.
pub fn biharmonic(y: &Plane, hole: &[bool]) -> Plane {
    let (w, h, c) = (y.width, y.height, y.channels);
    let mut out = y.clone();
    for ch in 0..c {
        let plane: Vec<f64> = (0..w * h).map(|i| f64::from(y.data[i * c + ch])).collect();
        let solved = crate::inverse::classical::biharmonic_plane(&plane, hole, w, h);
        for (i, v) in solved.into_iter().enumerate() {
            out.data[i * c + ch] = v as f32;
        }
    }
    out
}

/// Area-downscales a plane to `w × h` (pixel blocks averaged with fractional coverage).
pub fn shrink(src: &Plane, w: usize, h: usize) -> Plane {
    if (w, h) == (src.width, src.height) {
        return src.clone();
    }
    let rgb = crate::photo::RgbImage {
        width: src.width,
        height: src.height,
        data: src.data.clone(),
    };
    let small = crate::restore::resize::area(&rgb, w, h);
    Plane {
        width: w,
        height: h,
        channels: src.channels,
        data: small.data,
    }
}

impl Default for PyramidConfig {
    fn default() -> Self {
        Self {
            patch: PatchConfig::default(),
            coarse_hole: 16,
            max_levels: 6,
            layout_windows: 1024,
            known_fraction: 1.0,
            ring_tau: 0.0,
            fine_radius: 4,
            coarse: EpsConfig::default(),
            fine: EpsConfig {
                steps: 8,
                schedule: EdmSchedule {
                    sigma_max: 0.2,
                    sigma_min: 0.01,
                    rho: 3.0,
                },
                ..EpsConfig::default()
            },
            mirror: false,
            turn: Turn::default(),
            clean_strength: 0.85,
            clean_bank: true,
            coarse_start: Some(0.5),
            smooth: Smooth::default(),
            upsampling: Upsampling::Field,
            switch_sigma: 0.5,
            context: 2.0,
            max_context: 320,
            mean_draws: 4,
            detail_weight: 2.0,
            fine_detail: 0.054,
            stop_above: None,
            choose_depth: true,
        }
    }
}

impl PyramidConfig {
    /// Checks every setting.
    pub fn validate(&self) -> Result<()> {
        self.patch.validate()?;
        self.coarse.validate()?;
        self.fine.validate()?;
        if self.max_levels == 0 {
            return Err(Error::invalid(
                "pyramid levels",
                self.max_levels,
                "there must be at least one level",
            ));
        }
        if !(self.clean_strength.is_finite() && (0.0..=4.0).contains(&self.clean_strength)) {
            return Err(Error::invalid(
                "bank cleaning strength",
                self.clean_strength,
                "use 0 to 4 (times the estimated noise; 0.85 is the default)",
            ));
        }
        if !(self.detail_weight.is_finite() && (0.0..=16.0).contains(&self.detail_weight)) {
            return Err(Error::invalid(
                "detail weight",
                self.detail_weight,
                "use 0 to 16 (0: no detail channel)",
            ));
        }
        if self.layout_windows < MIN_WINDOWS {
            return Err(Error::invalid(
                "layout windows",
                self.layout_windows,
                format!(
                    "use {MIN_WINDOWS} or more (1024 is the default; more lays out holes at finer levels)"
                ),
            ));
        }
        if !(self.known_fraction > 0.0 && self.known_fraction <= 1.0) {
            return Err(Error::invalid(
                "known fraction",
                self.known_fraction,
                "use more than 0 and at most 1 (1 is the default: any hole pixel below makes a coarser pixel a hole)",
            ));
        }
        let (start, end) = (self.fine.schedule.sigma_max, self.fine.schedule.sigma_min);
        if !(end > 0.0 && start > end && start <= MAX_FINE_SIGMA) {
            return Err(Error::invalid(
                "fine sigma",
                if start.abs() < 1e6 {
                    format!("{start}")
                } else {
                    format!("{start:e}")
                },
                format!(
                    "use more than the finer levels' last noise level {end} and at most \
                     {MAX_FINE_SIGMA} (0.2 is the default; the mean's draws start from twice \
                     as much)"
                ),
            ));
        }
        if !(self.fine_detail.is_finite() && (0.0..=1.0).contains(&self.fine_detail)) {
            return Err(Error::invalid(
                "fine detail",
                self.fine_detail,
                "use 0 to 1 (0.054 is the default; 0 starts every finer level from the fine sigma)",
            ));
        }
        if self.fine_radius > MAX_FINE_RADIUS {
            return Err(Error::invalid(
                "fine radius",
                self.fine_radius,
                format!(
                    "use 0 to {MAX_FINE_RADIUS} pixels (4 is the default; 0 searches the whole bank at every level)"
                ),
            ));
        }
        if !(self.ring_tau.is_finite() && (0.0..=1.0).contains(&self.ring_tau)) {
            return Err(Error::invalid(
                "ring τ",
                self.ring_tau,
                "use 0 to 1 (times the ring's standard deviation; 0, the default, keeps τ the same at every level)",
            ));
        }
        if !(self.context.is_finite() && (0.0..=16.0).contains(&self.context)) {
            return Err(Error::invalid(
                "patch context",
                self.context,
                "use 0 to 16 (times the hole's longer side; 2 is the default)",
            ));
        }
        Ok(())
    }
}

/// One level of the pyramid: the measured crop at that size and its hole.
#[derive(Debug, Clone)]
pub struct Level {
    /// The measurement, `[-1, 1]`, hole pixels 0.
    pub y: Plane,
    /// `true` where the pixel is to be filled.
    pub hole: Vec<bool>,
    /// The measurement noise at this level.
    pub sigma_y: f64,
}

/// The levels for a crop, finest (the crop itself) first.
pub fn levels(y: &Plane, hole: &[bool], sigma_y: f64, cfg: &PyramidConfig) -> Vec<Level> {
    build_levels(y, hole, None, sigma_y, cfg).0
}

/// [`levels`], with a keep-out area (`true`: no bank window may touch it; one value per pixel)
/// or none; also returns, per level, the pixels no bank window may touch: the level's hole and
/// the area, grown by the halving (a coarse pixel is kept out when any pixel under it is).
pub fn levels_keeping_out(
    y: &Plane,
    hole: &[bool],
    keep_out: Option<&[bool]>,
    sigma_y: f64,
    cfg: &PyramidConfig,
) -> Result<(Vec<Level>, Vec<Vec<bool>>)> {
    for (what, mask) in [("hole mask", Some(hole)), ("keep-out mask", keep_out)] {
        if let Some(m) = mask
            && m.len() != y.width * y.height
        {
            return Err(Error::shape(what, y.width * y.height, m.len()));
        }
    }
    Ok(build_levels(y, hole, keep_out, sigma_y, cfg))
}

/// [`levels_keeping_out`] on masks of the plane's size.
fn build_levels(
    y: &Plane,
    hole: &[bool],
    keep_out: Option<&[bool]>,
    sigma_y: f64,
    cfg: &PyramidConfig,
) -> (Vec<Level>, Vec<Vec<bool>>) {
    let union = |hole: &[bool], out: Option<&Vec<bool>>| -> Vec<bool> {
        match out {
            Some(o) => hole.iter().zip(o).map(|(&a, &b)| a || b).collect(),
            None => hole.to_vec(),
        }
    };
    let mut area = keep_out.map(<[bool]>::to_vec);
    let mut banned = vec![union(hole, area.as_ref())];
    let mut out = vec![Level {
        y: y.clone(),
        hole: hole.to_vec(),
        sigma_y,
    }];
    let mut sums = Sums::new(y, hole);
    while out.len() < cfg.max_levels {
        let last = &out[out.len() - 1];
        let (hole_w, hole_h) = hole_extent(&last.hole, last.y.width);
        if hole_w.max(hole_h) <= cfg.coarse_hole {
            break;
        }
        let (w, h) = (last.y.width.div_ceil(2), last.y.height.div_ceil(2));
        if w.min(h) < cfg.patch.patch * 2 {
            break;
        }
        let next_sums = sums.half();
        let (next_y, next_hole) = next_sums.level(cfg.known_fraction);
        let next_area = area
            .as_ref()
            .map(|a| half_any(a, last.y.width, last.y.height));
        let next_banned = union(&next_hole, next_area.as_ref());
        // A coarser level lays out the hole from its own windows of known pixels: with a few
        // hundred (a thin ring of context around a big hole, hardly wider than a window) its
        // prior knows too few layouts, and the finer level, with more, makes the layout
        // instead.
        let windows = super::bank::valid_windows(&next_banned, w, h, cfg.patch.patch)
            .into_iter()
            .filter(|&v| v)
            .count();
        if windows < cfg.layout_windows.max(MIN_WINDOWS) {
            break;
        }
        out.push(Level {
            y: next_y,
            hole: next_hole,
            sigma_y: last.sigma_y / 2.0,
        });
        banned.push(next_banned);
        area = next_area;
        sums = next_sums;
    }
    (out, banned)
}

/// `mask` (`w × h`) halved as the levels are (`⌈w/2⌉ × ⌈h/2⌉`): a pixel is set when any of
/// the pixels under it is.
fn half_any(mask: &[bool], w: usize, h: usize) -> Vec<bool> {
    let (hw, hh) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![false; hw * hh];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                out[(y / 2) * hw + x / 2] = true;
            }
        }
    }
    out
}

/// A crop's known pixels summed over the finest pixels each coarser pixel covers: per pixel the
/// mean of `y · known` and the fraction of known finest pixels, halved level by level from
/// the finest, so a coarse pixel's value is the mean of the known finest pixels under it.
#[derive(Debug, Clone)]
struct Sums {
    width: usize,
    height: usize,
    channels: usize,
    sum: Vec<f32>,
    known: Vec<f32>,
}

impl Sums {
    fn new(y: &Plane, hole: &[bool]) -> Self {
        let c = y.channels;
        let known: Vec<f32> = hole.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
        let sum = y
            .data
            .iter()
            .enumerate()
            .map(|(i, v)| v * known[i / c])
            .collect();
        Self {
            width: y.width,
            height: y.height,
            channels: c,
            sum,
            known,
        }
    }

    /// Each 2 × 2 block averaged (a block at an odd edge averages what it has).
    fn half(&self) -> Self {
        let (w, h, c) = (
            self.width.div_ceil(2),
            self.height.div_ceil(2),
            self.channels,
        );
        let mut sum = vec![0.0_f32; w * h * c];
        let mut known = vec![0.0_f32; w * h];
        for oy in 0..h {
            for ox in 0..w {
                let o = oy * w + ox;
                let mut n = 0.0_f32;
                for sy in 2 * oy..(2 * oy + 2).min(self.height) {
                    for sx in 2 * ox..(2 * ox + 2).min(self.width) {
                        let i = sy * self.width + sx;
                        known[o] += self.known[i];
                        for ch in 0..c {
                            sum[o * c + ch] += self.sum[i * c + ch];
                        }
                        n += 1.0;
                    }
                }
                known[o] /= n;
                for ch in 0..c {
                    sum[o * c + ch] /= n;
                }
            }
        }
        Self {
            width: w,
            height: h,
            channels: c,
            sum,
            known,
        }
    }

    /// The level's measurement and hole: a pixel is known when at least `min_known` of the
    /// finest pixels under it are, and then it is their mean; hole pixels are 0.
    fn level(&self, min_known: f64) -> (Plane, Vec<bool>) {
        let c = self.channels;
        let threshold = (min_known as f32 - 1e-4).max(1e-4);
        let hole: Vec<bool> = self.known.iter().map(|&k| k < threshold).collect();
        let mut y = Plane::zeros(self.width, self.height, c);
        for (i, &f) in hole.iter().enumerate() {
            if !f {
                for ch in 0..c {
                    y.data[i * c + ch] = self.sum[i * c + ch] / self.known[i];
                }
            }
        }
        (y, hole)
    }
}

/// The contrast of the ring around a hole: the standard deviation (averaged over the first
/// `colours` channels) of the known pixels of `y` within `radius` pixels of a hole pixel (in
/// either direction, as a window reaches). 0 where there is no hole or no known pixel near it.
pub fn ring_spread(y: &Plane, hole: &[bool], colours: usize, radius: usize) -> f64 {
    let (w, h, c) = (y.width, y.height, y.channels);
    let colours = colours.min(c);
    if hole.len() != w * h || colours == 0 {
        return 0.0;
    }
    let near = crate::inverse::masks::dilate(hole, w, h, radius);
    let (mut n, mut s1, mut s2) = (0.0_f64, vec![0.0_f64; colours], vec![0.0_f64; colours]);
    for (i, (&is_near, &in_hole)) in near.iter().zip(hole).enumerate() {
        if is_near && !in_hole {
            n += 1.0;
            for ch in 0..colours {
                let v = f64::from(y.data[i * c + ch]);
                s1[ch] += v;
                s2[ch] += v * v;
            }
        }
    }
    if n == 0.0 {
        return 0.0;
    }
    let var = (0..colours)
        .map(|ch| (s2[ch] / n - (s1[ch] / n).powi(2)).max(0.0))
        .sum::<f64>()
        / colours as f64;
    var.sqrt()
}

/// The patch settings of level `index` (0 the finest) of `levels`: τ raised to `ring_tau` times
/// the ring's contrast on the coarser levels ([`PyramidConfig::ring_tau`]), and the field
/// searched within [`PyramidConfig::fine_radius`] of its matches on every level but the
/// coarsest (which lays out the hole from the whole bank).
pub fn level_patch_config(
    cfg: &PyramidConfig,
    index: usize,
    levels: usize,
    level: &Level,
    colours: usize,
) -> PatchConfig {
    let mut patch = cfg.patch;
    if index > 0 && cfg.ring_tau > 0.0 {
        let spread = ring_spread(&level.y, &level.hole, colours, cfg.patch.patch / 2);
        patch.tau = patch.tau.max(cfg.ring_tau * spread);
    }
    if index + 1 < levels && cfg.fine_radius > 0 {
        patch.search = patch.search.local(cfg.fine_radius);
    }
    patch
}

/// What a level adds to its coarser level: the RMS over its known pixels and colour channels of
/// `fine` minus `coarser` upsampled to its size (both the banks' cleaned pixels; a detail
/// channel after the colours is left out).
pub fn level_detail(fine: &Plane, coarser: &Plane, hole: &[bool]) -> f64 {
    let colours = fine.channels.min(coarser.channels).min(3);
    let up = upsample(&leading_channels(coarser, colours), fine.width, fine.height);
    let (mut sum, mut n) = (0.0f64, 0usize);
    for (p, _) in hole.iter().enumerate().filter(|&(_, &h)| !h) {
        for c in 0..colours {
            let d = f64::from(fine.data[p * fine.channels + c] - up.data[p * colours + c]);
            sum += d * d;
        }
        n += colours;
    }
    if n == 0 { 0.0 } else { (sum / n as f64).sqrt() }
}

/// Largest start of the finer levels (`fine.schedule.sigma_max`): above it a finer level
/// forgets its coarser sample (the coarsest level starts its layout from σ = 1).
pub const MAX_FINE_SIGMA: f64 = 1.0;

/// Largest [`PyramidConfig::fine_radius`]: beyond a few hundred pixels a finer level's search
/// is the whole bank's anyway (0 says so directly).
pub const MAX_FINE_RADIUS: usize = 1024;

/// Fewest windows of known pixels a crop's bank may have ([`crate::restore`] refuses a mask
/// that leaves fewer).
pub const MIN_WINDOWS: usize = 64;

/// Width and height of the bounding box of a hole (0 × 0 when empty).
pub fn hole_extent(hole: &[bool], width: usize) -> (usize, usize) {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, _) in hole.iter().enumerate().filter(|(_, h)| **h) {
        let (x, y) = (i % width, i / width);
        x0 = x0.min(x);
        y0 = y0.min(y);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if x0 == usize::MAX {
        (0, 0)
    } else {
        (x1 - x0 + 1, y1 - y0 + 1)
    }
}

/// Bilinear resampling of a plane to `w × h` (pixel centres aligned).
pub fn upsample(src: &Plane, w: usize, h: usize) -> Plane {
    let c = src.channels;
    let mut out = Plane::zeros(w, h, c);
    let (sx, sy) = (src.width as f64 / w as f64, src.height as f64 / h as f64);
    for oy in 0..h {
        let fy = ((oy as f64 + 0.5) * sy - 0.5).clamp(0.0, (src.height - 1) as f64);
        let (y0, ty) = (fy.floor() as usize, (fy - fy.floor()) as f32);
        let y1 = (y0 + 1).min(src.height - 1);
        for ox in 0..w {
            let fx = ((ox as f64 + 0.5) * sx - 0.5).clamp(0.0, (src.width - 1) as f64);
            let (x0, tx) = (fx.floor() as usize, (fx - fx.floor()) as f32);
            let x1 = (x0 + 1).min(src.width - 1);
            for ch in 0..c {
                let v = |x: usize, y: usize| src.data[(y * src.width + x) * c + ch];
                let top = v(x0, y0) * (1.0 - tx) + v(x1, y0) * tx;
                let bottom = v(x0, y1) * (1.0 - tx) + v(x1, y1) * tx;
                out.data[(oy * w + ox) * c + ch] = top * (1.0 - ty) + bottom * ty;
            }
        }
    }
    out
}

/// What a fill reports after each sampler step.
#[derive(Debug)]
pub struct FillStep<'a> {
    /// Level being sampled (0 = the crop's own size).
    pub level: usize,
    /// Levels in all.
    pub levels: usize,
    /// Steps done over all levels.
    pub step: usize,
    /// Steps over all levels.
    pub n_steps: usize,
    /// Which layout is being drawn, 1-based, and how many ([`PyramidConfig::choose_depth`]:
    /// the second starts again from its coarse layout, one level finer).
    pub layout: (usize, usize),
    /// The current estimate at this level, `[B, C, h, w]`.
    pub x0_hat: &'a Tensor,
}

/// The result of a fill.
#[derive(Debug, Clone)]
pub struct FillOutput {
    /// One sample per seed at the crop's size, `[B, C, H, W]` in `[-1, 1]`.
    pub samples: Tensor,
    /// Per sample, the levels it went through: all of them, or one fewer where the layout
    /// made one level finer was the more coherent ([`PyramidConfig::choose_depth`]).
    pub depths: Vec<usize>,
    /// Per sample, the coherence of the deepest pass and of the pass laid out one level finer:
    /// the mean squared distance (per value, `[-1, 1]` units) of the finest level's windows over
    /// the hole to their best bank matches; `None` where the pass did not run or has no field.
    pub coherence: Vec<[Option<f64>; 2]>,
    /// Denoiser calls over all levels and passes.
    pub calls: usize,
    /// Per level (0 = finest) and call, the effective-sample-size record, of the pass the
    /// first sample was kept from (its `depths` levels).
    pub ess: Vec<(usize, EssRecord)>,
    /// Query windows per level.
    pub queries: Vec<usize>,
    /// Bank patches per level.
    pub bank: Vec<usize>,
    /// Seconds per level (bank, search and sampling), both passes where the layout was made
    /// at two depths.
    pub seconds: Vec<f64>,
    /// The posterior's per-pixel variance at the crop's size, `[-1, 1]` units averaged over
    /// channels, 0 at known pixels; `None` where that call was not the patch denoiser's.
    ///
    /// By the law of total variance, `Var[x0 | y] = E[Var(x0 | x_t, y)] + Var(E[x0 | x_t, y])`
    /// over the sampler's state `x_t` at the first call of the finest level sampled: the
    /// denoiser's closed-form variance there, averaged over the seeds, plus the spread of its
    /// means between them. One seed gives the first term (the detail the finest level can still
    /// choose); more seeds add the layout's spread. Bilinear to the crop's size when the finest
    /// level sampled is coarser (the quick mean).
    pub variance: Option<Vec<f32>>,
    /// What [`Self::variance`] is made from, so that draws made in several fills combine
    /// ([`variance_map`]).
    pub first_call: Option<FirstCall>,
}

/// The patch denoiser's first call at the finest level sampled: its means `[B, C, h, w]` and
/// per-draw variances (`h · w` each, averaged over channels).
#[derive(Debug, Clone)]
pub struct FirstCall {
    /// `E[x0 | x_t, y]` per draw.
    pub means: Tensor,
    /// `Var[x0 | x_t, y]` per draw and pixel.
    pub variances: Vec<Vec<f32>>,
}

/// [`FillOutput::variance`] over the draws of several fills of one crop `width × height` with
/// `hole`: the law of total variance over all of them, brought to the crop's size.
pub fn variance_map(
    calls: &[FirstCall],
    width: usize,
    height: usize,
    hole: &[bool],
) -> Result<Option<Vec<f32>>> {
    if calls.is_empty() {
        return Ok(None);
    }
    let means: Vec<&Tensor> = calls.iter().map(|c| &c.means).collect();
    let means = Tensor::cat(&means, 0)?;
    let variances: Vec<Vec<f32>> = calls.iter().flat_map(|c| c.variances.clone()).collect();
    let (_, _, vh, vw) = means.dims4()?;
    let coarse = Plane {
        width: vw,
        height: vh,
        channels: 1,
        data: total_variance(&means, &variances)?,
    };
    let mut full = upsample(&coarse, width, height).data;
    for (v, &f) in full.iter_mut().zip(hole) {
        *v = if f { v.max(0.0) } else { 0.0 };
    }
    Ok(Some(full))
}

/// The law-of-total-variance estimate of [`FillOutput::variance`] at one level from the first
/// call's means (`[B, C, h, w]`) and per-seed variances (`h · w` each).
fn total_variance(means: &Tensor, variances: &[Vec<f32>]) -> Result<Vec<f32>> {
    let (b, c, h, w) = means.dims4()?;
    let n = h * w;
    if variances.len() != b || variances.iter().any(|v| v.len() != n) {
        return Err(Error::shape(
            "first-call variances",
            b * n,
            variances.iter().map(Vec::len).sum::<usize>(),
        ));
    }
    let flat = means.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0.0_f32; n];
    for v in variances {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x / b as f32;
        }
    }
    if b > 1 {
        for ch in 0..c {
            for (p, o) in out.iter_mut().enumerate() {
                let at = |k: usize| flat[(k * c + ch) * n + p];
                let mean = (0..b).map(at).sum::<f32>() / b as f32;
                let ss: f32 = (0..b).map(|k| (at(k) - mean).powi(2)).sum();
                *o += ss / ((b - 1) * c) as f32;
            }
        }
    }
    Ok(out)
}

fn level_seeds(seeds: &[u64], level: usize) -> Vec<u64> {
    seeds
        .iter()
        .map(|s| s ^ (level as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect()
}

/// The mask problem of one level: its known pixels observed with its `σ_y`.
pub fn level_problem(level: &Level, device: &Device) -> Result<Problem> {
    let (w, h, c) = (level.y.width, level.y.height, level.y.channels);
    let observed: Vec<f32> = level
        .hole
        .iter()
        .map(|&f| if f { 0.0 } else { 1.0 })
        .collect();
    let mask = Tensor::from_vec(observed, (1, 1, h, w), device)?;
    let y = Tensor::from_vec(level.y.to_chw(), (1, c, h, w), device)?.broadcast_mul(&mask)?;
    Problem::new(Arc::new(Mask::new(&mask)?), &y, level.sigma_y, (c, h, w))
}

/// Noise (in `[-1, 1]` units; half an 8-bit level) below which the bank is used as it is.
pub const CLEAN_BELOW: f64 = 0.004;

/// The patch denoiser of one level: its bank from the level's known pixels outside any
/// keep-out area (`keep_out`, the level's size), its queries the windows touching the hole.
/// Turned windows only with [`Turn::Always`]: [`Turn::Auto`] judges at a pyramid's coarsest
/// level, which a single level does not have.
///
/// `noise` is the noise level of the level's known pixels: above [`CLEAN_BELOW`] they are
/// denoised before they become the bank ([`super::clean`]).
pub fn level_denoiser(
    level: &Level,
    keep_out: Option<&[bool]>,
    cfg: &PyramidConfig,
    noise: f64,
) -> Result<PatchDenoiser> {
    let source = Arc::new(bank_source(level, cfg, noise));
    let turned = cfg.turn == Turn::Always;
    match keep_out {
        Some(area) => {
            if area.len() != level.hole.len() {
                return Err(Error::invalid(
                    "keep-out mask",
                    format!("{} pixels", area.len()),
                    format!("the level has {} pixels", level.hole.len()),
                ));
            }
            let banned: Vec<bool> = level.hole.iter().zip(area).map(|(&h, &k)| h || k).collect();
            denoiser_on(level, &source, &banned, cfg, turned)
        }
        None => denoiser_on(level, &source, &level.hole, cfg, turned),
    }
}

/// The pixels a level's bank is made of: its known pixels, denoised when `noise` is above
/// [`CLEAN_BELOW`].
pub fn bank_source(level: &Level, cfg: &PyramidConfig, noise: f64) -> Plane {
    if cfg.clean_bank && noise > CLEAN_BELOW {
        super::clean::nl_means(&level.y, &level.hole, noise * cfg.clean_strength, 7)
    } else {
        level.y.clone()
    }
}

/// The patch denoiser of one level with its bank made of `source`'s windows (shared, not
/// copied) that touch no pixel of `banned` (the level's hole, and any keep-out area), and
/// their turned copies where `turned`.
fn denoiser_on(
    level: &Level,
    source: &Arc<Plane>,
    banned: &[bool],
    cfg: &PyramidConfig,
    turned: bool,
) -> Result<PatchDenoiser> {
    let bank = Bank::shared(
        source,
        banned,
        cfg.patch.patch,
        Transforms {
            mirror: cfg.mirror,
            turn: turned,
        },
    )?;
    PatchDenoiser::new(
        bank,
        cfg.patch,
        (level.y.width, level.y.height),
        Some(&level.hole),
    )
}

/// Per level (the first is `finest`'s own, then each half the size, as [`levels`] makes them):
/// the standard deviation of `finest`'s known pixels within each pixel of the level, averaged
/// over channels; 0 at hole pixels. The first level's is all 0 (a pixel hides nothing).
pub fn detail_channels(
    finest: &Plane,
    hole: &[bool],
    n_levels: usize,
    min_known: f64,
) -> Vec<Vec<f32>> {
    let c = finest.channels;
    // Each pixel's values and their squares, summed together so that the holes and the known
    // fractions are halved once.
    let both = Plane {
        width: finest.width,
        height: finest.height,
        channels: 2 * c,
        data: finest
            .data
            .chunks_exact(c)
            .flat_map(|px| px.iter().copied().chain(px.iter().map(|v| v * v)))
            .collect(),
    };
    let mut sums = Sums::new(&both, hole);
    let mut out = vec![vec![0.0; finest.width * finest.height]];
    for _ in 1..n_levels {
        sums = sums.half();
        let (m, level_hole) = sums.level(min_known);
        out.push(
            m.data
                .chunks_exact(2 * c)
                .zip(&level_hole)
                .map(|(px, &in_hole)| {
                    if in_hole {
                        return 0.0;
                    }
                    let var: f32 = (0..c).map(|ch| px[c + ch] - px[ch].powi(2)).sum();
                    (var / c as f32).max(0.0).sqrt()
                })
                .collect(),
        );
    }
    out
}

/// `plane` with `extra` (one value per pixel) times `weight` as one more channel.
fn with_channel(plane: &Plane, extra: &[f32], weight: f32) -> Plane {
    let c = plane.channels;
    let mut data = Vec::with_capacity(plane.width * plane.height * (c + 1));
    for (px, e) in plane.data.chunks_exact(c).zip(extra) {
        data.extend_from_slice(px);
        data.push(e * weight);
    }
    Plane {
        width: plane.width,
        height: plane.height,
        channels: c + 1,
        data,
    }
}

/// The first `c` channels of `plane`.
fn leading_channels(plane: &Plane, c: usize) -> Plane {
    if plane.channels == c {
        return plane.clone();
    }
    Plane {
        width: plane.width,
        height: plane.height,
        channels: c,
        data: plane
            .data
            .chunks_exact(plane.channels)
            .flat_map(|px| px[..c].iter().copied())
            .collect(),
    }
}

/// What every draw of one crop shares: its levels (with their detail channels) and the pixels
/// of their banks, cleaned once (the costliest part of a level's setup) for all the draws.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The crop and its hole where the quick draws left its own size out (otherwise they are
    /// the finest level's, not held twice).
    crop: Option<(Plane, Vec<bool>)>,
    cfg: PyramidConfig,
    levels: Vec<Level>,
    /// Per level, the pixels no bank window may touch (the hole and any keep-out area).
    banned: Vec<Vec<bool>>,
    sources: Vec<Arc<Plane>>,
    /// Whether the banks hold the turned windows too ([`Turn`]).
    turned: bool,
    /// [`turn_ratio`] at the coarsest level, where [`Turn::Auto`] computed it.
    turn_ratio: Option<f64>,
    detail: bool,
    /// Per level, its own detail ([`level_detail`]; the coarsest level has none).
    level_detail: Vec<f64>,
}

impl Prepared {
    /// The levels of `y` (a crop in `[-1, 1]`, hole pixels ignored) and their banks' pixels,
    /// for draws with `cfg` and `guide`.
    pub fn new(
        y: &Plane,
        hole: &[bool],
        sigma_y: f64,
        cfg: &PyramidConfig,
        guide: &Guide<'_>,
    ) -> Result<Self> {
        Self::keeping_out(y, hole, None, sigma_y, cfg, guide)
    }

    /// [`Self::new`] with a keep-out area (`true` where no bank window may reach, at any
    /// level): the fill copies nothing from it, while its pixels stay measurements that the
    /// windows over the hole's edge are conditioned on.
    pub fn keeping_out(
        y: &Plane,
        hole: &[bool],
        keep_out: Option<&[bool]>,
        sigma_y: f64,
        cfg: &PyramidConfig,
        guide: &Guide<'_>,
    ) -> Result<Self> {
        cfg.validate()?;
        let (mut levels, mut banned) = levels_keeping_out(y, hole, keep_out, sigma_y, cfg)?;
        let mut noise = super::clean::estimate_noise(y, hole);
        // The quick draws stop at the level where the hole is small enough.
        if let Some(limit) = cfg.stop_above {
            let skip = levels
                .iter()
                .take_while(|l| {
                    let (hw, hh) = hole_extent(&l.hole, l.y.width);
                    hw.max(hh) > limit
                })
                .count()
                .min(levels.len() - 1);
            levels.drain(..skip);
            banned.drain(..skip);
            noise /= f64::from(1u32 << skip.min(31));
        }
        let n_levels = levels.len();
        let mut sources: Vec<Plane> = levels
            .iter()
            .enumerate()
            .map(|(li, l)| bank_source(l, cfg, noise / f64::from(1u32 << li.min(31))))
            .collect();
        // Judged on the colours at the coarsest level, before the detail channel is added:
        // the same level (and answer) for the samples, the mean and the preview, whose
        // pyramids differ only in their finest levels.
        let (turned, turn_ratio) = match cfg.turn {
            Turn::Never => (false, None),
            Turn::Always => (true, None),
            Turn::Auto => {
                let top = n_levels - 1;
                let ratio = turn_ratio(&sources[top], &banned[top], cfg.patch.patch, 3);
                (ratio.is_some_and(|r| r < TURN_BELOW), ratio)
            }
        };
        let level_detail = (0..n_levels)
            .map(|li| match sources.get(li + 1) {
                Some(coarser) => level_detail(&sources[li], coarser, &levels[li].hole),
                None => 0.0,
            })
            .collect();
        // The network guide sees colours only.
        // The network that denoises whole levels above a σ reads colours only; a fused one
        // is given the colours and leaves the detail channel to the patches.
        let detail = cfg.detail_weight > 0.0 && guide.above.is_none() && n_levels > 1;
        if detail {
            let channels =
                detail_channels(&sources[0], &levels[0].hole, n_levels, cfg.known_fraction);
            let weight = cfg.detail_weight as f32;
            for (li, d) in channels.iter().enumerate().skip(1) {
                levels[li].y = with_channel(&levels[li].y, d, weight);
                sources[li] = with_channel(&sources[li], d, weight);
            }
        }
        let crop = (levels[0].y.width, levels[0].y.height) != (y.width, y.height);
        let sources = sources.into_iter().map(Arc::new).collect();
        Ok(Self {
            crop: crop.then(|| (y.clone(), hole.to_vec())),
            cfg: *cfg,
            levels,
            banned,
            sources,
            turned,
            turn_ratio,
            detail,
            level_detail,
        })
    }

    /// Whether the banks hold the photo's windows turned by 180° too ([`Turn`]).
    pub fn turned(&self) -> bool {
        self.turned
    }

    /// [`turn_ratio`] at the coarsest level, where [`Turn::Auto`] computed it.
    pub fn turn_ratio(&self) -> Option<f64> {
        self.turn_ratio
    }
}

/// What the levels of one fill share while they run: the observer and the counts it reports.
struct Run<'o> {
    done: usize,
    calls: usize,
    n_steps: usize,
    /// Layouts drawn per sample (2 where the depth is chosen).
    layouts: usize,
    queries: Vec<usize>,
    bank: Vec<usize>,
    seconds: Vec<f64>,
    observer: &'o mut dyn FnMut(&FillStep<'_>) -> Flow,
}

/// One pass down the pyramid: its samples at the finest level and what that level's first call
/// and last fields say about them.
struct Chain {
    samples: Tensor,
    /// Levels sampled, the coarsest first.
    levels: usize,
    ess: Vec<(usize, EssRecord)>,
    first_call: Option<(Tensor, Vec<Vec<f32>>)>,
    /// Per sample, the mean squared distance of the finest level's windows over the hole to
    /// their best bank matches ([`coherence`]); `None` where a sample has no field.
    coherence: Vec<Option<f64>>,
}

/// The seed the pass laid out one level finer draws with, for a sample of seed `seed`
/// ([`PyramidConfig::choose_depth`]): a fill of one level fewer with this seed and
/// `choose_depth` off makes that pass's sample.
pub fn shallow_seed(seed: u64) -> u64 {
    seed ^ 0xA076_1D64_78BD_642F
}

/// Samples the levels from `top` (laid out there, from the layout or from noise) down to the
/// finest. `chain` tells the passes' seeds apart (0 for the deepest, 1 for one level finer).
fn run_levels(
    prepared: &Prepared,
    seeds: &[u64],
    chain: u64,
    guide: &Guide<'_>,
    top: usize,
    colours: usize,
    run: &mut Run<'_>,
) -> Result<Chain> {
    let Prepared {
        cfg,
        levels,
        banned,
        sources,
        level_detail,
        turned,
        ..
    } = prepared;
    let device = Device::Cpu;
    let n_levels = levels.len();
    let mut x: Option<Tensor> = None;
    let mut previous: Option<PatchDenoiser> = None;
    let mut first_call: Option<(Tensor, Vec<Vec<f32>>)> = None;
    let mut ess = Vec::new();
    let chain_seeds: Vec<u64> = seeds
        .iter()
        .map(|&s| if chain == 0 { s } else { shallow_seed(s) })
        .collect();
    for (li, level) in levels.iter().enumerate().take(top + 1).rev() {
        let started = std::time::Instant::now();
        let problem = level_problem(level, &device)?;
        let level_cfg = PyramidConfig {
            patch: level_patch_config(cfg, li, top + 1, level, colours),
            ..*cfg
        };
        let d = denoiser_on(level, &sources[li], &banned[li], &level_cfg, *turned)?;
        // The fused prior fuses at the coarsest level, where the layout is made; the finer
        // levels refine it from the patches alone.
        let net_colours = match guide.fuse.filter(|_| x.is_none()) {
            Some(net) => {
                let colour_level = Level {
                    y: leading_channels(&level.y, colours),
                    hole: level.hole.clone(),
                    sigma_y: level.sigma_y,
                };
                Some(ColoursOnly {
                    inner: net,
                    problem: level_problem(&colour_level, &device)?,
                    colours,
                })
            }
            None => None,
        };
        let network_variance = net_colours
            .as_ref()
            .map(|net| super::fuse::JacobianVariance {
                inner: net,
                probes: FUSE_PROBES,
                seeds: chain_seeds
                    .iter()
                    .map(|s| s ^ (li as u64).wrapping_mul(0x9E37))
                    .collect(),
                channels: Some(colours),
            });
        let fused = network_variance.as_ref().map(|nv| {
            let mut f = super::fuse::Fused::new(&d, nv);
            f.fused_channels = Some(colours);
            f
        });
        // The denoiser every call of this level goes through.
        let level_d: &dyn PosteriorDenoiser = match &fused {
            Some(f) => f,
            None => &d,
        };
        run.queries[li] = d.queries().len();
        run.bank[li] = d.bank().len();
        if let Some(prev) = &previous {
            for (slot, &s) in chain_seeds.iter().enumerate() {
                if let Some(f) = prev.field(slot) {
                    let seed = s ^ li as u64;
                    d.set_field(
                        slot,
                        Field::upsampled(
                            &f,
                            prev.queries(),
                            prev.bank(),
                            d.queries(),
                            d.bank(),
                            seed,
                        ),
                    );
                }
            }
        }
        let seeds_l = level_seeds(&chain_seeds, li);
        let done = run.done;
        let n_steps = run.n_steps;
        let layout = (chain as usize + 1, run.layouts);
        let observer = &mut *run.observer;
        let mut observe = |info: &StepInfo<'_>| {
            if li == 0 && info.step == 1 {
                let v: Option<Vec<Vec<f32>>> = (0..seeds.len())
                    .map(|slot| match &fused {
                        Some(f) => f.last_variance(slot),
                        None => d.last_variance(slot),
                    })
                    .collect();
                first_call = v.map(|v| (info.x0_hat.clone(), v));
            }
            // The observer sees the colours, not the detail channel.
            let shown = match info.x0_hat.dim(1) {
                Ok(c) if c > colours => info.x0_hat.narrow(1, 0, colours).ok(),
                _ => None,
            };
            observer(&FillStep {
                level: li,
                levels: n_levels,
                step: done + info.step,
                n_steps,
                layout,
                x0_hat: shown.as_ref().unwrap_or(info.x0_hat),
            })
        };
        let switch = guide.above.map(|(high, sigma)| Switch {
            high,
            low: &d,
            sigma,
        });
        let coarse: &dyn PosteriorDenoiser = match &switch {
            Some(s) => s,
            None => level_d,
        };
        let out = match (&x, cfg.coarse_start) {
            (None, None) => eps::sample(coarse, &problem, &seeds_l, &cfg.coarse, &mut observe)?,
            (None, Some(sigma)) => {
                let first = match &guide.layout {
                    Layout::Smooth => smooth_fill(&level.y, &level.hole, colours, cfg.smooth),
                    Layout::Image(img) if level.y.channels > img.channels => {
                        // The layout's colours, the detail channel's biharmonic fill.
                        let colour = shrink(img, level.y.width, level.y.height);
                        let smooth = biharmonic(&level.y, &level.hole);
                        let extra: Vec<f32> = smooth
                            .data
                            .chunks_exact(smooth.channels)
                            .map(|px| px[smooth.channels - 1])
                            .collect();
                        with_channel(&colour, &extra, 1.0)
                    }
                    Layout::Image(img) => shrink(img, level.y.width, level.y.height),
                };
                let one = first.to_chw();
                let (c, w, h) = (first.channels, first.width, first.height);
                let batch: Vec<f32> = (0..seeds.len()).flat_map(|_| one.iter().copied()).collect();
                let start = Tensor::from_vec(batch, (seeds.len(), c, h, w), &device)?;
                let cfg_l = EpsConfig {
                    schedule: EdmSchedule {
                        sigma_max: sigma,
                        ..cfg.coarse.schedule
                    },
                    ..cfg.coarse
                };
                eps::sample_from(coarse, &problem, &start, &seeds_l, &cfg_l, &mut observe)?
            }
            (Some(coarse), _) => {
                let (b, cc, ch, cw) = coarse.dims4()?;
                let (w, h, c) = (level.y.width, level.y.height, level.y.channels);
                if cc < c {
                    return Err(Error::shape("coarser level's channels", c, cc));
                }
                let flat = coarse.flatten_all()?.to_vec1::<f32>()?;
                let per = cc * ch * cw;
                let mut up = Vec::with_capacity(b * c * w * h);
                for i in 0..b {
                    let plane = Plane::from_chw(&flat[i * per..(i + 1) * per], (cc, ch, cw));
                    let smooth = upsample(&leading_channels(&plane, c), w, h);
                    let start = match (cfg.upsampling, d.field(i)) {
                        (Upsampling::Field, Some(field)) => d.render(&field, &smooth)?,
                        _ => smooth,
                    };
                    up.extend(start.to_chw());
                }
                let start = Tensor::from_vec(up, (b, c, h, w), &device)?;
                let mut fine = cfg.fine;
                fine.schedule.sigma_max = cfg.fine_start(level_detail[li]);
                eps::sample_from(level_d, &problem, &start, &seeds_l, &fine, &mut observe)?
            }
        };
        run.done += out.steps;
        run.calls += out.nfe;
        ess.extend(d.ess_log().into_iter().map(|r| (li, r)));
        x = Some(out.samples);
        previous = Some(d);
        run.seconds[li] += started.elapsed().as_secs_f64();
    }
    let samples = x.ok_or_else(|| Error::invalid("pyramid", 0, "no level to sample"))?;
    let coherence = match &previous {
        Some(d) => {
            let (b, c, h, w) = samples.dims4()?;
            let flat = samples.flatten_all()?.to_vec1::<f32>()?;
            let per = c * h * w;
            (0..b)
                .map(|i| {
                    let plane = Plane::from_chw(&flat[i * per..(i + 1) * per], (c, h, w));
                    d.field(i).map(|f| coherence(d, &f, &plane))
                })
                .collect()
        }
        None => vec![None; seeds.len()],
    };
    Ok(Chain {
        samples,
        levels: top + 1,
        ess,
        first_call,
        coherence,
    })
}

/// The mean squared distance (per value) between each query window of `d` in `image` and its
/// best match in `field`: how far the image is from being made of the bank's windows
/// (Wexler, Shechtman, Irani 2007), a seam or a smear no window holds counting against it.
fn coherence(d: &PatchDenoiser, field: &Field, image: &Plane) -> f64 {
    let q = d.queries();
    let p = q.patch;
    if field.k == 0 || field.entries.len() < q.len() * field.k || q.is_empty() {
        return f64::INFINITY;
    }
    let mut sum = 0.0f64;
    for (qi, &(x0, y0)) in q.corners.iter().enumerate() {
        let e = field.entries[qi * field.k];
        for dy in 0..p {
            let a = image.row(x0 as usize, y0 as usize + dy, 0, p);
            for (u, v) in a.iter().zip(d.bank().row(e, dy)) {
                sum += f64::from((u - v) * (u - v));
            }
        }
    }
    sum / (q.len() * p * p * image.channels) as f64
}

/// The samples a fill keeps, with where each was laid out.
struct Picked {
    samples: Tensor,
    coherence: Vec<[Option<f64>; 2]>,
    first_call: Option<(Tensor, Vec<Vec<f32>>)>,
    /// Per sample, the levels it went through.
    depths: Vec<usize>,
    /// The effective-sample-size records of the pass the first sample was kept from.
    ess: Vec<(usize, EssRecord)>,
}

impl From<Chain> for Picked {
    fn from(c: Chain) -> Self {
        Self {
            depths: vec![c.levels; c.coherence.len()],
            coherence: c.coherence.iter().map(|&d| [d, None]).collect(),
            samples: c.samples,
            first_call: c.first_call,
            ess: c.ess,
        }
    }
}

/// Per sample, the more coherent of two passes ([`coherence`]; the first where either cannot
/// be measured, or they tie): the samples and their first calls, slot by slot.
fn pick_coherent(deep: Chain, shallow: Chain) -> Result<Picked> {
    let picks: Vec<bool> = deep
        .coherence
        .iter()
        .zip(&shallow.coherence)
        .map(|(a, b)| matches!((a, b), (Some(a), Some(b)) if b < a))
        .collect();
    let take = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        let rows: Vec<Tensor> = picks
            .iter()
            .enumerate()
            .map(|(i, &p)| (if p { b } else { a }).narrow(0, i, 1))
            .collect::<std::result::Result<_, _>>()?;
        Ok(Tensor::cat(&rows, 0)?)
    };
    let samples = take(&deep.samples, &shallow.samples)?;
    let first_call = match (deep.first_call, shallow.first_call) {
        (Some((ma, va)), Some((mb, vb))) => {
            let variances = picks
                .iter()
                .zip(va.into_iter().zip(vb))
                .map(|(&p, (a, b))| if p { b } else { a })
                .collect();
            Some((take(&ma, &mb)?, variances))
        }
        _ => None,
    };
    let depths = picks
        .iter()
        .map(|&p| if p { shallow.levels } else { deep.levels })
        .collect();
    let ess = if picks.first() == Some(&true) {
        shallow.ess
    } else {
        deep.ess
    };
    let coherence = deep
        .coherence
        .iter()
        .zip(&shallow.coherence)
        .map(|(&a, &b)| [a, b])
        .collect();
    Ok(Picked {
        samples,
        coherence,
        first_call,
        depths,
        ess,
    })
}

/// Fills the hole of `y` (a crop in `[-1, 1]`, hole pixels ignored) coarse to fine, one sample
/// per seed. `observer` sees every step and may cancel.
pub fn fill(
    y: &Plane,
    hole: &[bool],
    sigma_y: f64,
    seeds: &[u64],
    cfg: &PyramidConfig,
    guide: &Guide<'_>,
    observer: &mut dyn FnMut(&FillStep<'_>) -> Flow,
) -> Result<FillOutput> {
    let prepared = Prepared::new(y, hole, sigma_y, cfg, guide)?;
    fill_prepared(&prepared, seeds, guide, observer)
}

/// [`fill`] on a crop prepared once for several calls (the draws of a mean, or samples made
/// one at a time): the same output as [`fill`] with the settings it was prepared with.
pub fn fill_prepared(
    prepared: &Prepared,
    seeds: &[u64],
    guide: &Guide<'_>,
    observer: &mut dyn FnMut(&FillStep<'_>) -> Flow,
) -> Result<FillOutput> {
    if prepared.detail && guide.above.is_some() {
        return Err(Error::invalid(
            "pyramid guide",
            "the network above a noise level",
            "the crop was prepared with detail channels, which the network does not read; prepare it with this guide",
        ));
    }
    let Prepared {
        crop, cfg, levels, ..
    } = prepared;
    let (y, hole) = match crop {
        Some((y, hole)) => (y, hole.as_slice()),
        None => (&levels[0].y, levels[0].hole.as_slice()),
    };
    let n_levels = levels.len();
    let colours = y.channels;
    // A second layout one level finer: only where that level is itself coarser than the crop,
    // and where the pyramid reached the layout's scale. Where it stopped above it for want of
    // windows of known pixels (a big hole in a big photo), its coarsest level is already the
    // finer layout.
    let reached = levels.last().is_some_and(|l| {
        let (w, h) = hole_extent(&l.hole, l.y.width);
        w.max(h) <= cfg.coarse_hole
    });
    let choose = cfg.choose_depth && n_levels >= 3 && reached;
    let chain_steps = |top: usize| cfg.coarse.steps + top * cfg.fine.steps;
    let n_steps = chain_steps(n_levels - 1) + if choose { chain_steps(n_levels - 2) } else { 0 };
    let mut run = Run {
        done: 0,
        calls: 0,
        n_steps,
        layouts: if choose { 2 } else { 1 },
        queries: vec![0; n_levels],
        bank: vec![0; n_levels],
        seconds: vec![0.0; n_levels],
        observer,
    };
    let deep = run_levels(prepared, seeds, 0, guide, n_levels - 1, colours, &mut run)?;
    let Picked {
        mut samples,
        coherence,
        first_call,
        depths,
        ess,
    } = if choose {
        let shallow = run_levels(prepared, seeds, 1, guide, n_levels - 2, colours, &mut run)?;
        pick_coherent(deep, shallow)?
    } else {
        deep.into()
    };
    let Run {
        calls,
        queries,
        bank,
        seconds,
        ..
    } = run;
    let device = Device::Cpu;
    let first_call = first_call.map(|(means, variances)| FirstCall { means, variances });
    let variance = variance_map(first_call.as_slice(), y.width, y.height, hole)?;
    let (b, c, sh, sw) = samples.dims4()?;
    if (sw, sh) != (y.width, y.height) {
        // Bilinear to the crop's size; the known pixels are the crop's own.
        let flat = samples.flatten_all()?.to_vec1::<f32>()?;
        let per = c * sh * sw;
        let mut up = Vec::with_capacity(b * c * y.width * y.height);
        for i in 0..b {
            let plane = Plane::from_chw(&flat[i * per..(i + 1) * per], (c, sh, sw));
            let mut full = upsample(&plane, y.width, y.height);
            for (p, &f) in hole.iter().enumerate() {
                if !f {
                    full.data[p * c..(p + 1) * c].copy_from_slice(&y.data[p * c..(p + 1) * c]);
                }
            }
            up.extend(full.to_chw());
        }
        samples = Tensor::from_vec(up, (b, c, y.height, y.width), &device)?;
    }
    Ok(FillOutput {
        samples,
        depths,
        coherence,
        calls,
        ess,
        queries,
        bank,
        seconds,
        variance,
        first_call,
    })
}
