//! Restoring a whole photo: the network works on crops around each hole (inpainting) or on
//! overlapping tiles (deblurring, super-resolution) at its working size, and the results are
//! pasted back — only filled pixels for inpainting, so every other pixel stays bit-exact.
//!
//! Shared by the desktop app's worker and the headless `restore` command. No UI here.

pub mod degrade;
pub mod heat;
pub mod method;
pub mod models;
mod patch_fill;
pub mod plan;
pub mod resize;

use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::backend::{GpuArithmetic, GpuContext};
use crate::inverse::pad::{Padding, crop, reflect_pad};
use crate::inverse::{AvgPoolSr, Blur, LinearOperator, Mask, Problem, TaskSpec};
use crate::photo::{Depth, Pixels, Raster, RgbImage};
use crate::sampler::{self, Flow, Method, StepInfo, eps};
use crate::{Error, Result};

pub use degrade::{BlurSpec, Degradation, Simulated, simulate};
pub use method::MethodChoice;
pub use models::Models;
pub use plan::Rect;

/// How to restore.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// The sampling method.
    pub method: MethodChoice,
    /// Sampler steps; `None` keeps the method's documented default (EPS: 10).
    pub steps: Option<usize>,
    /// The EPS sampler's ODE solver; `None` keeps its default (Euler). Other methods ignore it.
    pub solver: Option<sampler::Solver>,
    /// The EPS sampler's total churn `S_churn` ([`eps::Churn`]); `None` keeps its default.
    /// Other methods ignore it.
    pub churn: Option<f64>,
    /// Measurement noise σ_y in the network's `[-1, 1]` units.
    pub sigma_y: f64,
    /// Longest side the network sees at once: larger holes are worked on downscaled, larger
    /// photos in tiles of this size.
    pub work_side: usize,
    /// The prior the EPS methods denoise with.
    pub prior: Prior,
    /// The patch prior's settings (with [`Prior::Patch`]).
    pub patch: crate::prior::patch::PyramidConfig,
    /// A preview while the user paints: the patch prior's posterior mean from quick
    /// low-resolution draws ([`crate::prior::patch::PyramidConfig::for_preview`]) instead of
    /// full ones. The network's mean is one call either way.
    pub preview: bool,
    /// Super-resolution on the photo's own patches ([`crate::prior::patch::PatchSr`]) instead of
    /// the network when the prior has no network. Off by default and not offered in the app or
    /// on the command line: `diagnose --parts sr` compares it with the network, and on clean
    /// photos it loses thin structures and adds a block grid (docs/patch-prior.md).
    pub sr_on_patches: bool,
    /// Deblurring on the photo's own patches ([`crate::prior::patch::PatchDeblur`], with these
    /// settings) when the prior uses patches and the method is EPS
    /// ([`Self::deblurs_on_patches`]); `None` deblurs with the network whatever the prior. On
    /// by default: it wins the deblurring table and the pictures (docs/patch-prior.md). The
    /// instant preview of a deblur stays the network's one-call mean.
    pub deblur_on_patches: Option<crate::prior::patch::DeblurConfig>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            method: MethodChoice::Eps,
            steps: None,
            solver: None,
            churn: None,
            sigma_y: 0.05,
            work_side: 256,
            prior: Prior::Patch,
            patch: crate::prior::patch::PyramidConfig::default(),
            preview: false,
            sr_on_patches: false,
            deblur_on_patches: Some(crate::prior::patch::DeblurConfig::default()),
        }
    }
}

/// The prior the EPS methods fill holes and deblur with (super-resolution always uses the
/// network; the hybrids deblur on the patches alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Prior {
    /// The trained EPS network.
    Network,
    /// The photo's own patches (inpainting only; training-free), coarse to fine up to the
    /// photo's resolution ([`crate::prior::patch`]), from the hole's surroundings carried in
    /// along their edges. The default: it leads the fill table against every method but the
    /// layout hybrid, which it matches sample by sample, and where a hole hid an object it
    /// fills in the background instead of growing the object back (`docs/patch-prior.md`, "Which prior is the default").
    #[default]
    Patch,
    /// The patches, with the network's one-call posterior mean as the coarse layout.
    PatchOnNetworkMean,
    /// The network at the coarsest level above [`crate::prior::patch::PyramidConfig::switch_sigma`],
    /// the patches below it and at every finer level.
    NetworkThenPatch,
    /// The network's and the patches' estimates fused pixel by pixel by their posterior
    /// variances at the coarsest level ([`crate::prior::patch::fuse`]), the patches alone at
    /// the finer levels.
    Fused,
}

impl Prior {
    /// Every prior, default first.
    pub const ALL: [Self; 5] = [
        Self::Patch,
        Self::Network,
        Self::PatchOnNetworkMean,
        Self::NetworkThenPatch,
        Self::Fused,
    ];

    /// Parses `network`, `patch`, `patch-layout`, `network-patch` or `fused`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Patch => "patch",
            Self::PatchOnNetworkMean => "patch-layout",
            Self::NetworkThenPatch => "network-patch",
            Self::Fused => "fused",
        }
    }

    /// The name shown to users.
    pub fn label(self) -> &'static str {
        match self {
            Self::Network => "trained network",
            Self::Patch => "photo's own patches",
            Self::PatchOnNetworkMean => "patches on the network's layout",
            Self::NetworkThenPatch => "network, then patches",
            Self::Fused => "network and patches fused by their variances",
        }
    }

    /// Whether the prior uses the photo's patches (inpainting only).
    pub fn uses_patches(self) -> bool {
        self != Self::Network
    }

    /// Whether the prior needs the EPS network.
    pub fn uses_network(self) -> bool {
        matches!(
            self,
            Self::Network | Self::PatchOnNetworkMean | Self::NetworkThenPatch | Self::Fused
        )
    }
}

impl Settings {
    /// Checks steps, the EPS sampler, working size and σ_y against [`crate::limits`], and the
    /// patch prior's settings.
    pub fn validate(&self) -> Result<()> {
        if let Some(steps) = self.steps {
            crate::limits::steps(steps)?;
        }
        self.patch.validate()?;
        if let Method::Eps(c) = self.method.method(&TaskSpec::BrushInpaint) {
            self.eps_overrides(c).validate()?;
        }
        crate::limits::work_side(self.work_side)?;
        crate::limits::sigma_y(self.sigma_y)?;
        Ok(())
    }

    /// [`Self::validate`]d settings with σ_y raised to [`crate::limits::SIGMA_Y_FLOOR`] when it is
    /// below it, and the note that says so.
    pub fn checked(&self) -> Result<(Self, Option<String>)> {
        self.validate()?;
        let (sigma_y, note) = crate::limits::sigma_y(self.sigma_y)?;
        Ok((Self { sigma_y, ..*self }, note))
    }

    /// [`Self::checked`] for `degradation`: motion deblurring also raises σ_y to
    /// [`crate::limits::MOTION_SIGMA_Y_FLOOR`]. Returns the notes that say what was raised.
    pub fn checked_for(&self, degradation: &Degradation) -> Result<(Self, Vec<String>)> {
        let (mut out, note) = self.checked()?;
        let mut notes: Vec<String> = note.into_iter().collect();
        if matches!(degradation, Degradation::Deblur(BlurSpec::Motion { .. })) {
            let (sigma_y, note) = crate::limits::motion_sigma_y(out.sigma_y);
            out.sigma_y = sigma_y;
            notes.extend(note);
        }
        Ok((out, notes))
    }

    /// `c` with this solver and churn, where they are set.
    fn eps_overrides(&self, mut c: eps::EpsConfig) -> eps::EpsConfig {
        if let Some(solver) = self.solver {
            c.solver = solver;
            if solver == sampler::Solver::DpmSolver2m {
                // The multistep solver takes no churn; only an explicit churn is an error.
                c.churn = eps::Churn::NONE;
            }
        }
        if let Some(s_churn) = self.churn {
            c.churn.s_churn = s_churn;
        }
        c
    }

    /// Whether restoring `degradation` with these settings needs the networks: everything but
    /// a fill (EPS, DDNM+, DiffPIR), EPS deblurring ([`Self::deblurs_on_patches`]) or EPS
    /// super-resolution on the photo's own patches does.
    pub fn needs_network(&self, degradation: &Degradation) -> bool {
        let patches_only = self.prior.uses_patches() && !self.prior.uses_network();
        let eps = matches!(self.method, MethodChoice::Eps | MethodChoice::EpsMean);
        match degradation {
            Degradation::Inpaint { .. } => {
                let on_patches =
                    eps || matches!(self.method, MethodChoice::Ddnm | MethodChoice::Diffpir);
                !(patches_only && on_patches)
            }
            Degradation::SuperRes { .. } => !(patches_only && eps && self.sr_on_patches),
            Degradation::Deblur(_) => !self.deblurs_on_patches(degradation),
        }
    }

    /// Whether `degradation` is a deblur that runs on the photo's own patches: an EPS method
    /// with a prior that uses patches (the hybrids too: their network part is a fill's
    /// layout), [`Self::deblur_on_patches`] set, and not the instant preview (which is the
    /// network's one-call mean: a mean on patches is 24 calls).
    pub fn deblurs_on_patches(&self, degradation: &Degradation) -> bool {
        matches!(degradation, Degradation::Deblur(_))
            && matches!(self.method, MethodChoice::Eps | MethodChoice::EpsMean)
            && self.prior.uses_patches()
            && self.deblur_on_patches.is_some()
            && !self.preview
    }

    /// Whether these settings fill from the photo's own patches, so that a keep-out area
    /// applies: EPS (or its one-call mean) with any prior made of them, and DDNM+ and DiffPIR
    /// on the patches alone (with a hybrid prior they run on the network).
    pub fn takes_keep_out(&self) -> bool {
        self.prior.uses_patches()
            && match self.method {
                MethodChoice::Eps | MethodChoice::EpsMean => true,
                MethodChoice::Ddnm | MethodChoice::Diffpir => !self.prior.uses_network(),
                MethodChoice::Dps | MethodChoice::Pigdm => false,
            }
    }

    /// Refuses a `w × h` photo these settings cannot restore `degradation` on beyond
    /// [`Degradation::validate`]: one too small for a deblurring bank of its own patches, or a
    /// keep-out area with a prior or method that does not take one.
    pub fn check_size(&self, (w, h): (usize, usize), degradation: &Degradation) -> Result<()> {
        if self.deblurs_on_patches(degradation)
            && let (Degradation::Deblur(spec), Some(cfg)) = (degradation, self.deblur_on_patches)
        {
            patch_fill::check_deblur_size((w, h), &spec.kernel()?, cfg)?;
        }
        if let Degradation::Inpaint { keep_out, .. } = degradation
            && keep_out.iter().any(|&k| k)
            && !self.takes_keep_out()
        {
            return Err(Error::invalid(
                "keep-out area",
                format!(
                    "with the {} prior and {}",
                    self.prior.name(),
                    self.method.label()
                ),
                "only fills made of the photo's own patches take a keep-out area (method eps or eps-mean with prior patch, patch-layout, network-patch or fused; ddnm or diffpir with prior patch); drop the keep-out mask or choose one of those",
            ));
        }
        Ok(())
    }

    /// The sampler method for `degradation`, with the step, solver and churn overrides applied.
    pub fn sampler_method(&self, degradation: &Degradation) -> Method {
        let task = match degradation {
            Degradation::Inpaint { .. } => TaskSpec::BrushInpaint,
            Degradation::Deblur(BlurSpec::Gaussian { sigma }) => {
                TaskSpec::GaussianDeblur { sigma: *sigma }
            }
            Degradation::Deblur(BlurSpec::Motion { length, angle_deg }) => TaskSpec::MotionDeblur {
                length: *length,
                angle: *angle_deg,
            },
            Degradation::SuperRes { factor } => TaskSpec::SuperResolution { factor: *factor },
        };
        let mut method = self.method.method(&task);
        if let Method::Eps(c) = &mut method {
            *c = self.eps_overrides(*c);
        }
        if let Some(s) = self.steps {
            match &mut method {
                Method::Eps(c) => c.steps = s,
                Method::PosteriorMean(_) => {}
                Method::Dps(c) => c.steps = s,
                Method::Ddnm(c) => c.steps = s,
                Method::Pigdm(c) => c.steps = s,
                Method::Diffpir(c) => c.steps = s,
            }
        }
        method
    }
}

/// How far a restoration is: which region, which step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepCount {
    /// Region (crop or tile) being worked on, 0-based.
    pub region: usize,
    /// Number of regions.
    pub regions: usize,
    /// Step within the region (1-based; 0 before the first).
    pub step: usize,
    /// Steps per region.
    pub n_steps: usize,
    /// Which of the region's layouts is being drawn (1-based) and how many: a fill from the
    /// photo's patches may draw each sample twice, at two depths, and keep one; the live view
    /// then starts again from a coarse layout.
    pub layout: (usize, usize),
}

impl StepCount {
    /// Before the first step of a one-region run.
    pub const START: Self = Self {
        region: 0,
        regions: 1,
        step: 0,
        n_steps: 1,
        layout: (1, 1),
    };

    /// Fraction done over all regions.
    pub fn fraction(&self) -> f64 {
        (self.region as f64 + self.step as f64 / self.n_steps.max(1) as f64)
            / self.regions.max(1) as f64
    }

    /// Steps still to run, over all regions.
    pub fn steps_left(&self) -> usize {
        self.regions.saturating_sub(self.region + 1) * self.n_steps
            + self.n_steps.saturating_sub(self.step)
    }
}

impl std::fmt::Display for StepCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {}/{}", self.step, self.n_steps)?;
        if self.layout.1 > 1 {
            write!(f, " · layout {} of {}", self.layout.0, self.layout.1)?;
        }
        write!(f, " · region {}/{}", self.region + 1, self.regions)
    }
}

/// Progress of a restoration, reported after every sampler step.
#[derive(Debug)]
pub struct Progress<'a> {
    /// How far it is.
    pub at: StepCount,
    /// Where the preview goes, in output pixels.
    pub rect: Rect,
    /// The current estimate of the first sample over `rect`, already composited (inpainting
    /// keeps the photo's pixels outside the mask).
    pub preview: &'a RgbImage,
}

/// The measurement residual `A x̂ − y` of one sample, on the measurement's pixel grid.
///
/// Kept only over the worked regions: a small hole in a 24-megapixel photo has a residual the
/// size of the hole's crop, not of the photo.
#[derive(Debug, Clone)]
pub struct Residual {
    /// Grid width.
    pub width: usize,
    /// Grid height.
    pub height: usize,
    /// Per-pixel residual magnitude (RMS over channels, `[-1, 1]` units) over each worked
    /// rectangle, row-major; NaN where nothing is measured (hidden pixels). Rectangles do not
    /// overlap; outside them nothing was measured.
    pub patches: Vec<(Rect, Vec<f32>)>,
    /// RMS over measured pixels: a faithful sample sits near σ_y.
    pub rms: f64,
}

impl Residual {
    /// The whole grid, NaN where nothing was measured (`width × height` floats).
    pub fn map(&self) -> Vec<f32> {
        let mut map = vec![f32::NAN; self.width * self.height];
        for (r, values) in &self.patches {
            for row in 0..r.h {
                let start = (r.y + row) * self.width + r.x;
                map[start..start + r.w].copy_from_slice(&values[row * r.w..(row + 1) * r.w]);
            }
        }
        map
    }
}

/// The posterior's per-pixel variance as a prior estimated it (the patch prior's closed-form
/// posterior variance, [`crate::prior::patch::pyramid::FillOutput::variance`]), in `[0, 1]`
/// pixel units averaged over channels, over the regions it covers; elsewhere (known pixels) the
/// posterior does not vary.
///
/// With it the uncertainty map needs no spread between samples, so one sample (or the quick
/// mean) already has one, and a few samples give a steadier one than their sample variance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VarianceMap {
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// Per region, its variance row by row.
    pub regions: Vec<(Rect, Vec<f32>)>,
    /// The samples the estimate averages over (for [`Self::merge`]).
    pub samples: usize,
}

impl VarianceMap {
    /// The variance at pixel `(x, y)`: that of the last region covering it, 0 outside them.
    pub fn at(&self, x: usize, y: usize) -> f32 {
        self.regions
            .iter()
            .rev()
            .find(|(r, _)| x >= r.x && x < r.x + r.w && y >= r.y && y < r.bottom())
            .map_or(0.0, |(r, v)| v[(y - r.y) * r.w + (x - r.x)])
    }

    /// Folds in the estimate of more samples of the same problem (a resample): the average
    /// weighted by samples where the regions agree; otherwise `other` replaces this one.
    pub fn merge(&mut self, other: &Self) {
        let same = self.width == other.width
            && self.height == other.height
            && self.regions.len() == other.regions.len()
            && self
                .regions
                .iter()
                .zip(&other.regions)
                .all(|(a, b)| a.0 == b.0);
        if !same {
            *self = other.clone();
            return;
        }
        let (n, m) = (self.samples as f32, other.samples as f32);
        let total = (n + m).max(1.0);
        for ((_, a), (_, b)) in self.regions.iter_mut().zip(&other.regions) {
            for (va, vb) in a.iter_mut().zip(b) {
                *va = (*va * n + vb * m) / total;
            }
        }
        self.samples += other.samples;
    }
}

/// The result of a restoration.
#[derive(Debug, Clone)]
pub struct Restoration {
    /// One image per seed, at output resolution, in the measurement's own storage (the bit
    /// depth of a photo, floats for a simulated measurement).
    pub samples: Vec<Pixels>,
    /// The residual of each sample.
    pub residuals: Vec<Residual>,
    /// The seeds, in sample order.
    pub seeds: Vec<u64>,
    /// Network evaluations per region.
    pub nfe: usize,
    /// Regions worked on.
    pub regions: usize,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Where the sampler's arithmetic ran, e.g. `"CPU"` or `"wgpu: … (Vulkan)"`.
    pub backend: String,
    /// Things the user should know about the run (a GPU failure and the fallback to the CPU).
    pub notices: Vec<String>,
    /// The GPU failed during the run and the CPU finished it; later runs should not use the GPU.
    pub fell_back_to_cpu: bool,
    /// LPIPS (AlexNet) of each sample against the truth, when one is known (simulate mode) and
    /// the caller computed it ([`crate::eval::lpips::photo_distance`]); empty otherwise.
    pub lpips: Vec<f64>,
    /// The posterior variance the prior computed in closed form (the patch prior), which the
    /// uncertainty map then shows ([`mean_and_uncertainty`]); `None`: the map is the spread
    /// between the samples.
    pub variance: Option<VarianceMap>,
    /// How many bank windows the patch posterior spread its weight over, per pyramid level of
    /// every region and draw ([`LevelEss`]); empty when no patch prior ran.
    pub patch_ess: Vec<LevelEss>,
    /// Per region of a patch fill, whether its banks held the photo turned by 180° too;
    /// empty when no patch pyramid ran.
    pub patch_turns: Vec<TurnChoice>,
}

/// Whether a region's patch banks held the photo's windows turned by 180° too
/// ([`crate::prior::patch::pyramid::Turn`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnChoice {
    /// Whether they did.
    pub turned: bool,
    /// The ratio the automatic choice judged by ([`crate::prior::patch::pyramid::turn_ratio`]),
    /// where it ran.
    pub ratio: Option<f64>,
}

impl std::fmt::Display for TurnChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.turned {
            "turned windows"
        } else {
            "no turned windows"
        })?;
        if let Some(r) = self.ratio {
            write!(f, " (ratio {r:.2})")?;
        }
        Ok(())
    }
}

/// The effective sample size of the patch posterior over one pyramid level of one draw: per
/// call, the median over query windows of `1 / Σ w²` (1: the window copies one bank window;
/// the number of windows weighed, 16 for the field, the whole bank for exact sums: a blur of
/// them all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LevelEss {
    /// Level (0: the crop's own size, each next one half as big).
    pub level: usize,
    /// Levels of that draw.
    pub levels: usize,
    /// The level's first call (its highest noise level).
    pub first: crate::prior::patch::EssRecord,
    /// The level's last call (its lowest noise level).
    pub last: crate::prior::patch::EssRecord,
    /// Calls of the patch denoiser at the level.
    pub calls: usize,
}

impl LevelEss {
    /// One summary per level from a draw's records in call order (`(level, record)`, each
    /// level's calls together, as [`crate::prior::patch::pyramid::FillOutput::ess`] holds
    /// them), given the draw's number of levels.
    pub fn per_level(
        records: &[(usize, crate::prior::patch::EssRecord)],
        levels: usize,
    ) -> Vec<Self> {
        let mut out: Vec<Self> = Vec::new();
        for &(level, r) in records {
            match out.last_mut() {
                Some(l) if l.level == level => {
                    l.last = r;
                    l.calls += 1;
                }
                _ => out.push(Self {
                    level,
                    levels,
                    first: r,
                    last: r,
                    calls: 1,
                }),
            }
        }
        out
    }
}

/// What a restoration will cost, estimated from its sizes before any work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Regions (crops around holes, or tiles) worked on one after another.
    pub regions: usize,
    /// Network calls over all regions (each call denoises every sample at once).
    pub network_calls: usize,
    /// Peak memory, in bytes: whole-photo buffers plus the working batch.
    pub bytes: u64,
    /// Network work: pixels the networks see over all calls, regions and samples, a
    /// backward pass counted as two forward passes (DPS, ΠGDM).
    pub network_pixels: u64,
    /// Seconds of the patch prior's deblurring denoiser (on the CPU whatever the backend), at
    /// [`PATCH_DEBLUR_SECS_PER_MEGAPIXEL`] a call and [`PATCH_DEBLUR_SETUP_SECS_PER_MEGAPIXEL`]
    /// a sample (or a mean's draw); 0 for everything else.
    pub patch_seconds: f64,
}

/// Seconds the patch prior's deblurring denoiser takes per million working pixels and call on
/// 2 CPU cores, beyond [`PATCH_DEBLUR_SETUP_SECS_PER_MEGAPIXEL`] (measured on ladybird.jpg,
/// 384 × 240 in two tiles, one sample of 1, 2, 5 and 10 calls: 2.6, 3.4, 5.3 and 8.5 s).
pub const PATCH_DEBLUR_SECS_PER_MEGAPIXEL: f64 = 5.5;

/// Seconds per million working pixels, once per sample (and per draw of a mean), for the bank
/// and the first call's search from a random field, on 2 CPU cores (the same measurement).
pub const PATCH_DEBLUR_SETUP_SECS_PER_MEGAPIXEL: f64 = 16.0;

impl Estimate {
    /// Estimates the job `degradation` on a `w × h` measurement stored in `depth` with
    /// `samples` samples. Call after the inputs are validated.
    pub fn new(
        (w, h): (usize, usize),
        depth: Depth,
        degradation: &Degradation,
        settings: &Settings,
        samples: usize,
    ) -> Self {
        let patches_only = !settings.needs_network(degradation);
        let rects = match degradation {
            // The patch prior's crops: the hole with its own (capped) context.
            Degradation::Inpaint { fill, .. } if patches_only => {
                plan::inpaint_regions_with(fill, w, h, |a, b| settings.patch.context_margin(a, b))
            }
            _ => regions(w, h, degradation, settings),
        };
        let regions = rects.len();
        let method = settings.sampler_method(degradation);
        // A fill on the photo's own patches calls no network.
        let nfe = if patches_only {
            0
        } else {
            method.network_calls()
        };
        let (out_w, out_h) = degradation.output_size(w, h);
        let out_px = (out_w * out_h) as u64;
        let y_px = (w * h) as u64;
        let rgb = 3 * depth.bytes() as u64;
        // Whole-photo buffers, in bytes: the photo (`rgb` per pixel) and, for inpainting, each
        // sample in the photo's storage with its residual over the regions only; tiles add
        // float sums and weights (16 per output pixel) and residual sums (8 per measured pixel)
        // per sample until they are stored. Then the mean (`rgb`), the spread (4) and its heat
        // map (3), made one after the other when saving.
        let worked: u64 = rects.iter().map(|r| (r.w * r.h) as u64).sum();
        let per_sample = match degradation {
            Degradation::Inpaint { .. } => out_px * rgb + worked.min(y_px) * 4,
            _ => out_px * (rgb + 16) + y_px * 8,
        };
        let photo = y_px * rgb + per_sample * samples as u64 + out_px * (rgb + 7);
        // The working batch: about 1 KiB of activations per working pixel and sample for a
        // forward pass (measured peak of the shipped network), four times that with a backward
        // pass (DPS, ΠGDM).
        let side = settings.work_side as u64;
        let per_px = if method.uses_gradients() { 4096 } else { 1024 };
        let working = if settings.deblurs_on_patches(degradation) {
            // Deblurring on patches, one draw at a time per tile: up to five `Q × 3p²` float
            // matrices (about 3 KB per working pixel at p = 7; since the estimate works on the
            // raw windows three are live at once) and the bank of the tile's context (its
            // windows raw and whitened: about 1.8 KB per context pixel). An upper bound now:
            // two samples of a 384 × 240 photo in two tiles, 0.47 GB estimated, 0.27 GB peak
            // (0.48 GB before the estimate worked on the raw windows).
            rects
                .iter()
                .map(|r| {
                    let pad = 2 * 30;
                    let tile = ((r.w + pad) * (r.h + pad)) as u64;
                    let m = r.w.max(r.h) / 2;
                    let context = ((r.w + 2 * m).min(w) * (r.h + 2 * m).min(h)) as u64;
                    tile * 3072 + context * 1843
                })
                .max()
                .unwrap_or(0)
        } else if patches_only {
            // The patch prior works on the largest crop at the photo's own resolution, a few
            // draws at a time: about 256 bytes per pixel and draw in flight (the sampler's
            // planes, the nearest-neighbour field, the estimates) and 128 per pixel for the bank
            // and its cleaning (measured: 0.71 GB peak for two samples of a 1.35-megapixel
            // crop, photo included).
            let crop = rects.iter().map(|r| (r.w * r.h) as u64).max().unwrap_or(0);
            let in_flight = samples.min(patch_fill::BATCH) as u64;
            crop * (256 * in_flight + 128)
        } else {
            samples as u64 * side * side * per_px
        };
        // Each region is worked on at its output size, scaled down to the working side.
        let factor = match degradation {
            Degradation::SuperRes { factor } => *factor as u64,
            _ => 1,
        };
        let region_pixels: u64 = rects
            .iter()
            .map(|r| {
                let (w, h) = (r.w as u64 * factor, r.h as u64 * factor);
                let scale = (side as f64 / w.max(h).max(1) as f64).min(1.0);
                (w as f64 * scale).ceil() as u64 * (h as f64 * scale).ceil() as u64
            })
            .sum();
        let passes = if method.uses_gradients() { 3 } else { 1 };
        // Deblurring on patches: every sample's calls one after another, a mean 4 draws of 6.
        let (draws, calls) = match method {
            _ if !settings.deblurs_on_patches(degradation) => (0, 0),
            Method::PosteriorMean(_) => (MEAN_DRAWS.0 * samples, MEAN_DRAWS.1),
            _ => (samples, method.network_calls()),
        };
        Self {
            regions,
            network_calls: regions * nfe,
            bytes: photo + working,
            network_pixels: region_pixels * (nfe * samples * passes) as u64,
            patch_seconds: region_pixels as f64 / 1e6
                * draws as f64
                * (PATCH_DEBLUR_SETUP_SECS_PER_MEGAPIXEL
                    + calls as f64 * PATCH_DEBLUR_SECS_PER_MEGAPIXEL),
        }
    }

    /// Seconds the job should take at `secs_per_megapixel` network seconds per million pixels
    /// ([`Models::seconds_per_megapixel`]); the sampler's own arithmetic is a few per cent more.
    pub fn seconds(&self, secs_per_megapixel: f64) -> f64 {
        self.network_pixels as f64 / 1e6 * secs_per_megapixel + self.patch_seconds
    }

    /// Refuses a job that needs more memory than the machine has available.
    pub fn check_memory(&self) -> Result<()> {
        let Some(available) = available_memory() else {
            return Ok(());
        };
        if self.bytes > available {
            return Err(Error::invalid(
                "job size",
                format!("about {:.1} GB", self.bytes as f64 / 1e9),
                format!(
                    "more memory than this machine has free ({:.1} GB); ask for fewer samples, a smaller working size or a smaller photo",
                    available as f64 / 1e9
                ),
            ));
        }
        Ok(())
    }
}

/// Memory the system can give without swapping (Linux `MemAvailable`); `None` where unknown.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What doing nothing gives at the output size: the measurement as it is (grey holes, the blurry
/// photo) or, for super-resolution, its pixels repeated.
pub fn unrestored(y: &RgbImage, degradation: &Degradation) -> RgbImage {
    match degradation {
        Degradation::SuperRes { factor } => resize::nearest(y, y.width * factor, y.height * factor),
        _ => y.clone(),
    }
}

/// How far below doing nothing ([`unrestored`]) a simulated restoration may score before it is
/// called garbage, in dB. Within this margin it is reported with a warning.
pub const GARBAGE_MARGIN_DB: f64 = 1.0;

/// Judges a simulated restoration against doing nothing ([`unrestored`]): `Ok(None)` when it
/// scores at least as well, `Ok(Some(warning))` when it is slightly worse, and an error when it is
/// worse by more than [`GARBAGE_MARGIN_DB`] — a result clearly worse than its own input is
/// garbage, however well it fits the measurement (a blur hides exactly what goes wrong), and must
/// not be reported as a success.
pub fn check_beats_doing_nothing(restored_psnr: f64, nothing_psnr: f64) -> Result<Option<String>> {
    if restored_psnr.is_finite() && restored_psnr >= nothing_psnr {
        return Ok(None);
    }
    if restored_psnr.is_finite() && restored_psnr >= nothing_psnr - GARBAGE_MARGIN_DB {
        return Ok(Some(format!(
            "the restoration scores {restored_psnr:.2} dB, slightly below the {nothing_psnr:.2} dB of the unrestored measurement; more steps or another method may do better"
        )));
    }
    Err(Error::invalid(
        "restoration",
        format!("PSNR {restored_psnr:.2} dB"),
        format!(
            "is more than {GARBAGE_MARGIN_DB} dB below the {nothing_psnr:.2} dB of the unrestored measurement; try a larger σ_y or another method"
        ),
    ))
}

/// PSNR in dB of a result against the truth (both `[0, 1]`, clipped as a saved file would be);
/// NaN when the sizes differ.
pub fn psnr(x: &dyn Raster, truth: &dyn Raster) -> f64 {
    if (x.width(), x.height()) != (truth.width(), truth.height()) {
        return f64::NAN;
    }
    let n = x.width() * x.height() * 3;
    if n == 0 {
        return f64::NAN;
    }
    let clip = |img: &dyn Raster, i: usize| f64::from(img.value(i).clamp(0.0, 1.0));
    let sum: f64 = (0..n).map(|i| (clip(x, i) - clip(truth, i)).powi(2)).sum();
    -10.0 * (sum / n as f64).log10()
}

/// The mean of a set of samples of one size (stored like the first sample) and their
/// uncertainty map ([`uncertainty`]). `None` for no samples or mixed sizes.
pub fn mean_and_uncertainty(
    samples: &[&Pixels],
    variance: Option<&VarianceMap>,
) -> Option<(Pixels, Pixels, f32)> {
    let mean = posterior_mean(samples)?;
    let (map, full_scale) = uncertainty(samples, variance)?;
    Some((mean, map, full_scale))
}

/// The samples' sizes, if they all have one.
fn common_size(samples: &[&Pixels]) -> Option<(usize, usize)> {
    let first = samples.first()?;
    let (w, h) = (first.width(), first.height());
    samples
        .iter()
        .all(|s| (s.width(), s.height()) == (w, h))
        .then_some((w, h))
}

/// The mean of a set of samples of one size, stored like the first sample; `None` for no
/// samples or mixed sizes. A pixel at a time: no float copy of a whole image.
pub fn posterior_mean(samples: &[&Pixels]) -> Option<Pixels> {
    let (w, h) = common_size(samples)?;
    let n = samples.len() as f32;
    let mut mean = Pixels::new(w, h, samples[0].depth());
    for k in 0..w * h * 3 {
        mean.set(k, samples.iter().map(|s| s.value(k)).sum::<f32>() / n);
    }
    Some(mean)
}

/// The samples' uncertainty map: the per-pixel posterior standard deviation (averaged over
/// channels) as an 8-bit heat map ([`heat`]) whose top colour is the largest std, returned too.
/// The std is the prior's own where it gave a [`VarianceMap`] of the samples' size, else the
/// spread between the samples. `None` for no samples or mixed sizes.
///
/// Two passes over the samples, a pixel at a time: no full-size std plane (a 24-megapixel
/// photo's would be 96 MB). The app makes the mean and this map one after the other, so a big
/// photo never holds both.
pub fn uncertainty(samples: &[&Pixels], variance: Option<&VarianceMap>) -> Option<(Pixels, f32)> {
    let (w, h) = common_size(samples)?;
    let variance = variance.filter(|v| (v.width, v.height) == (w, h));
    let n = samples.len() as f32;
    let std_at = |i: usize| -> f32 {
        if let Some(v) = variance {
            return v.at(i % w, i / w).max(0.0).sqrt();
        }
        if samples.len() < 2 {
            return 0.0;
        }
        let mut spread = 0.0_f32;
        for c in 0..3 {
            let k = i * 3 + c;
            let m = samples.iter().map(|s| s.value(k)).sum::<f32>() / n;
            spread += samples
                .iter()
                .map(|s| (s.value(k) - m).powi(2))
                .sum::<f32>();
        }
        (spread / (3.0 * (n - 1.0))).sqrt()
    };
    let full_scale = (0..w * h).map(std_at).fold(0.0_f32, f32::max);
    let scale = 1.0 / full_scale.max(1e-6);
    let mut colours = Vec::with_capacity(w * h * 3);
    for i in 0..w * h {
        colours.extend(heat::colour(std_at(i) * scale).map(crate::photo::to_u8));
    }
    let map = Pixels::U8 {
        width: w,
        height: h,
        data: colours,
    };
    Some((map, full_scale))
}

/// `[0, 1]` interleaved to a `[1, 3, h, w]` tensor in `[-1, 1]`.
pub fn to_tensor(x: &RgbImage, device: &Device) -> Result<Tensor> {
    let (w, h) = (x.width, x.height);
    let mut planar = vec![0.0_f32; w * h * 3];
    for i in 0..w * h {
        for c in 0..3 {
            planar[c * w * h + i] = x.data[i * 3 + c] * 2.0 - 1.0;
        }
    }
    Ok(Tensor::from_vec(planar, (1, 3, h, w), device)?)
}

/// Image `b` of a `[B, 3, h, w]` tensor in `[-1, 1]` back to `[0, 1]` interleaved (unclipped).
pub fn from_tensor(t: &Tensor, b: usize) -> Result<RgbImage> {
    let (_, c, h, w) = t.dims4()?;
    if c != 3 {
        return Err(Error::shape("image channels", 3, c));
    }
    let planar = t
        .narrow(0, b, 1)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut data = vec![0.0_f32; w * h * 3];
    for i in 0..w * h {
        for k in 0..3 {
            data[i * 3 + k] = (planar[k * w * h + i] + 1.0) * 0.5;
        }
    }
    RgbImage::from_data(w, h, data)
}

/// One region's worth of work: its problem at working scale and how to bring results back.
struct Job {
    problem: Problem,
    /// Output-space rectangle the region covers.
    out_rect: Rect,
    /// Measurement-space rectangle (equal to `out_rect` except for super-resolution).
    y_rect: Rect,
    /// Padding added around the working image (blur), removed before pasting.
    pad: Padding,
}

/// Restores `y` (the photo as measured, `[0, 1]`) under `degradation`, one sample per seed.
/// `observer` sees every step and may cancel.
///
/// The networks run on `models`' device. With `gpu`, the EPS sampler keeps its state and does the
/// pivot and its updates in the wgpu compute shaders (baselines stay on the networks' device).
/// Any GPU failure — on the wgpu context or on CUDA — reruns the affected work on the CPU and adds
/// a notice; it never ends the run or returns a wrong image.
pub fn restore(
    models: &Models,
    gpu: Option<&GpuContext>,
    y: &dyn Raster,
    degradation: &Degradation,
    settings: &Settings,
    seeds: &[u64],
    observer: &mut dyn FnMut(&Progress<'_>) -> Flow,
) -> Result<Restoration> {
    let first = restore_on(models, gpu, y, degradation, settings, seeds, observer);
    let on_cuda = matches!(models.device(), Device::Cuda(_));
    match first {
        Err(e) if on_cuda && is_device_failure(&e) => {
            let Some(folder) = models.folder() else {
                return Err(e);
            };
            let cpu = Models::load(folder, &Device::Cpu)?;
            let mut out = restore_on(&cpu, None, y, degradation, settings, seeds, observer)?;
            out.notices.insert(
                0,
                format!("CUDA failed ({e}); this restoration ran on the CPU instead."),
            );
            out.fell_back_to_cpu = true;
            Ok(out)
        }
        other => other,
    }
}

/// Whether an error came from the compute device rather than from the input or the user.
fn is_device_failure(e: &Error) -> bool {
    matches!(
        e,
        Error::Gpu(_) | Error::Candle(_) | Error::NonFinite { .. }
    )
}

fn restore_on(
    models: &Models,
    gpu: Option<&GpuContext>,
    y: &dyn Raster,
    degradation: &Degradation,
    settings: &Settings,
    seeds: &[u64],
    observer: &mut dyn FnMut(&Progress<'_>) -> Flow,
) -> Result<Restoration> {
    let started = Instant::now();
    validate(y, degradation, settings, seeds)?;
    let (settings, floor_notes) = settings.checked_for(degradation)?;
    let settings = &settings;
    let method = settings.sampler_method(degradation);
    if settings.prior.uses_patches()
        && let Degradation::Inpaint { fill, keep_out } = degradation
        && (method.needs_posterior_denoiser()
            || (!settings.prior.uses_network()
                && matches!(method, Method::Ddnm(_) | Method::Diffpir(_))))
    {
        let masks = patch_fill::FillMasks { fill, keep_out };
        let mut out = patch_fill::restore(models, y, masks, settings, &method, seeds, observer)?;
        out.notices.splice(0..0, floor_notes);
        out.seconds = started.elapsed().as_secs_f64();
        return Ok(out);
    }
    // Super-resolution or deblurring on the photo's own patches: EPS with a cross-scale
    // patch prior.
    let on_patches = settings.prior.uses_patches()
        && !settings.prior.uses_network()
        && method.needs_posterior_denoiser();
    let patch_sr = match degradation {
        Degradation::SuperRes { factor } if on_patches && settings.sr_on_patches => {
            Some(PatchTask::SuperRes(*factor))
        }
        Degradation::Deblur(spec) if settings.deblurs_on_patches(degradation) => settings
            .deblur_on_patches
            .map(|cfg| spec.kernel().map(|k| PatchTask::Deblur(k, cfg)))
            .transpose()?,
        _ => None,
    };
    let denoisers = if patch_sr.is_some() {
        sampler::Denoisers::default()
    } else {
        models.denoisers(&method)?
    };
    let device = if patch_sr.is_some() {
        Device::Cpu
    } else {
        models.device().clone()
    };
    let (out_w, out_h) = degradation.output_size(y.width(), y.height());
    let regions = regions(y.width(), y.height(), degradation, settings);
    let n_regions = regions.len();
    let mut gpu = gpu.filter(|_| method.needs_posterior_denoiser() && patch_sr.is_none());
    let mut notices = floor_notes;

    let mut acc: Vec<Accumulator> = seeds
        .iter()
        .map(|_| Accumulator::new(out_w, out_h, y, degradation))
        .collect();
    let mut nfe = 0;
    let mut fell_back_to_cpu = false;
    for (index, region) in regions.iter().enumerate() {
        let job = build_job(y, degradation, settings, *region, &device)?;
        let mut observe = |info: &StepInfo<'_>| -> Flow {
            // A failed preview must not stop the run; the final result is checked.
            let Ok(preview) = working_to_output(info.x0_hat, 0, &job)
                .map(|p| composite_preview(p, y, degradation, &job))
            else {
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
                rect: job.out_rect,
                preview: &preview,
            })
        };
        let mut out = None;
        if let Some(ctx) = gpu {
            match sample_on_gpu(ctx, &method, denoisers, &job.problem, seeds, &mut observe) {
                Ok(o) => out = Some(o),
                Err(e) if is_device_failure(&e) => {
                    fell_back_to_cpu = true;
                    notices.push(format!(
                        "The GPU failed ({e}); this restoration continued on the CPU."
                    ));
                    gpu = None;
                }
                Err(Error::Unsupported(_)) => gpu = None,
                Err(e) => return Err(e),
            }
        }
        let out = match (out, &patch_sr) {
            (Some(o), _) => o,
            (None, Some(task)) => {
                let denoiser: Box<dyn sampler::PosteriorDenoiser> = match task {
                    PatchTask::SuperRes(factor) => {
                        Box::new(patch_fill::super_resolver(y, *region, *factor, settings)?)
                    }
                    PatchTask::Deblur(kernel, cfg) => {
                        let (_, h, w) = job.problem.image_chw();
                        Box::new(patch_fill::deblurrer(y, *region, kernel, *cfg, (w, h))?)
                    }
                };
                let on_patches = sampler::Denoisers {
                    prior: None,
                    posterior: Some(denoiser.as_ref()),
                };
                match (task, &method) {
                    // A one-call mean is meaningless for a nearest-windows prior at σmax
                    // (it keeps 16 windows of a flat posterior): the mean is the average of
                    // quick draws, as for fills.
                    (PatchTask::Deblur(..), Method::PosteriorMean(_)) => mean_of_draws(
                        settings,
                        degradation,
                        on_patches,
                        &job.problem,
                        seeds,
                        &mut observe,
                    )?,
                    _ => sampler::sample(&method, on_patches, &job.problem, seeds, &mut observe)?,
                }
            }
            (None, None) => sampler::sample(&method, denoisers, &job.problem, seeds, &mut observe)?,
        };
        nfe = out.nfe;
        let residual = job.problem.residual(&out.samples.to_device(&device)?)?;
        for (b, a) in acc.iter_mut().enumerate() {
            let patch = working_to_output(&out.samples, b, &job)?;
            let r = residual_patch(&residual, b, &job)?;
            a.add(&patch, &r, degradation, &job, settings);
        }
    }
    let mut samples = Vec::with_capacity(seeds.len());
    let mut residuals = Vec::with_capacity(seeds.len());
    for a in acc {
        let (s, r) = a.finish();
        samples.push(s);
        residuals.push(r);
    }
    let backend = match (gpu, &device) {
        (Some(ctx), _) => format!("wgpu: {}", ctx.adapter_name()),
        (None, Device::Cuda(_)) => "CUDA".into(),
        (None, _) => "CPU".into(),
    };
    Ok(Restoration {
        samples,
        residuals,
        seeds: seeds.to_vec(),
        nfe,
        regions: n_regions,
        seconds: started.elapsed().as_secs_f64(),
        backend,
        fell_back_to_cpu,
        lpips: Vec::new(),
        notices,
        variance: None,
        patch_ess: Vec::new(),
        patch_turns: Vec::new(),
    })
}

/// Draws averaged into the posterior mean on a patch prior, and their sampler steps.
const MEAN_DRAWS: (usize, usize) = (4, 6);

/// Per seed, the average of [`MEAN_DRAWS`] quick EPS draws: the posterior mean of a
/// restoration on the photo's own patches.
fn mean_of_draws(
    settings: &Settings,
    degradation: &Degradation,
    denoisers: sampler::Denoisers<'_>,
    problem: &crate::inverse::Problem,
    seeds: &[u64],
    observe: &mut dyn FnMut(&StepInfo<'_>) -> Flow,
) -> Result<sampler::SampleOutput> {
    let (draws, steps) = MEAN_DRAWS;
    let quick = Settings {
        method: MethodChoice::Eps,
        steps: Some(steps),
        ..*settings
    };
    let method = quick.sampler_method(degradation);
    let mut means = Vec::with_capacity(seeds.len());
    let (mut nfe, mut taken) = (0, 0);
    for &seed in seeds {
        let draw_seeds: Vec<u64> = (0..draws as u64)
            .map(|j| seed.wrapping_add(j.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
            .collect();
        let out = sampler::sample(&method, denoisers, problem, &draw_seeds, observe)?;
        nfe += out.nfe;
        taken = out.steps;
        means.push(out.samples.mean_keepdim(0)?);
    }
    Ok(sampler::SampleOutput {
        samples: Tensor::cat(&means, 0)?,
        nfe,
        steps: taken,
    })
}

/// A restoration on the photo's own patches other than a fill.
enum PatchTask {
    /// Super-resolution by this factor ([`crate::prior::patch::PatchSr`]).
    SuperRes(usize),
    /// Deblurring by this kernel ([`crate::prior::patch::PatchDeblur`]).
    Deblur(crate::inverse::Kernel, crate::prior::patch::DeblurConfig),
}

/// The EPS methods with their arithmetic on the wgpu context.
fn sample_on_gpu(
    ctx: &GpuContext,
    method: &Method,
    denoisers: sampler::Denoisers<'_>,
    problem: &crate::inverse::Problem,
    seeds: &[u64],
    observe: &mut dyn FnMut(&StepInfo<'_>) -> Flow,
) -> Result<sampler::SampleOutput> {
    let posterior = denoisers
        .posterior
        .ok_or_else(|| Error::Unsupported("the EPS network is not loaded".into()))?;
    let mut arith = GpuArithmetic::new(ctx, problem, seeds.len())?;
    match method {
        Method::Eps(cfg) => eps::sample_with(&mut arith, posterior, problem, seeds, cfg, observe),
        Method::PosteriorMean(cfg) => {
            eps::posterior_mean_with(&mut arith, posterior, problem, seeds, cfg, observe)
        }
        other => Err(Error::Unsupported(format!(
            "{} has no GPU arithmetic",
            other.name()
        ))),
    }
}

fn validate(
    y: &dyn Raster,
    degradation: &Degradation,
    settings: &Settings,
    seeds: &[u64],
) -> Result<()> {
    if y.width() == 0 || y.height() == 0 {
        return Err(Error::invalid(
            "image size",
            format!("{}×{}", y.width(), y.height()),
            "the image has no pixels",
        ));
    }
    crate::limits::samples(seeds.len())?;
    settings.validate()?;
    degradation.validate(y.width(), y.height())?;
    settings.check_size((y.width(), y.height()), degradation)?;
    if !y.all_finite() {
        return Err(Error::NonFinite {
            what: "the photo".into(),
        });
    }
    Ok(())
}

/// The regions to work on, in the coordinates of a `w × h` measurement.
fn regions(w: usize, h: usize, degradation: &Degradation, settings: &Settings) -> Vec<Rect> {
    match (degradation, tiling(degradation, settings)) {
        (Degradation::Inpaint { fill, .. }, _) => plan::inpaint_regions(fill, w, h),
        (_, Some((tile, overlap))) => plan::tiles(w, h, tile, overlap),
        (_, None) => vec![Rect::new(0, 0, w, h)],
    }
}

/// Tile side and overlap, in measurement pixels, for the tiled problems (deblurring and
/// super-resolution; the output tile of SR ×s is s times larger); `None` for inpainting. The
/// overlap is also the width of the cross-fade between neighbouring tiles.
fn tiling(degradation: &Degradation, settings: &Settings) -> Option<(usize, usize)> {
    let side = settings.work_side;
    match degradation {
        Degradation::Inpaint { .. } => None,
        Degradation::Deblur(_) => Some((side, side / 8)),
        Degradation::SuperRes { factor } => {
            let t = (side / factor).max(8);
            Some((t, (t / 8).max(2)))
        }
    }
}

fn build_job(
    y: &dyn Raster,
    degradation: &Degradation,
    settings: &Settings,
    region: Rect,
    device: &Device,
) -> Result<Job> {
    let crop_y = y.crop_rgb(region.x, region.y, region.w, region.h);
    let none = Padding::default();
    match degradation {
        Degradation::Inpaint { fill, .. } => {
            let scale = (settings.work_side as f64 / region.w.max(region.h) as f64).min(1.0);
            let ww = ((region.w as f64 * scale).round() as usize).max(1);
            let wh = ((region.h as f64 * scale).round() as usize).max(1);
            let fill_crop: Vec<bool> = (region.y..region.bottom())
                .flat_map(|r| {
                    fill[r * y.width() + region.x..r * y.width() + region.right()]
                        .iter()
                        .copied()
                })
                .collect();
            let fill_work = resize::mask_any(&fill_crop, region.w, region.h, ww, wh);
            let y_work = resize::area(&crop_y, ww, wh);
            let observed: Vec<f32> = fill_work
                .iter()
                .map(|&f| if f { 0.0 } else { 1.0 })
                .collect();
            let mask = Tensor::from_vec(observed, (1, 1, wh, ww), device)?;
            let op: Arc<dyn LinearOperator> = Arc::new(Mask::new(&mask)?);
            let y_t = to_tensor(&y_work, device)?.broadcast_mul(&mask)?;
            Ok(Job {
                problem: Problem::new(op, &y_t, settings.sigma_y, (3, wh, ww))?,
                out_rect: region,
                y_rect: region,
                pad: none,
            })
        }
        Degradation::Deblur(spec) => {
            let k = spec.kernel()?;
            // Mirror the tile so the circular operator sees no wrap-around edge.
            let p = k.height().max(k.width());
            let pad = Padding::uniform(p);
            let y_t = reflect_pad(&to_tensor(&crop_y, device)?, pad)?;
            let (ph, pw) = (region.h + 2 * p, region.w + 2 * p);
            let op: Arc<dyn LinearOperator> =
                Arc::new(Blur::new(k, ph, pw)?.with_label(spec.label()));
            Ok(Job {
                problem: Problem::new(op, &y_t, settings.sigma_y, (3, ph, pw))?,
                out_rect: region,
                y_rect: region,
                pad,
            })
        }
        Degradation::SuperRes { factor } => {
            let op: Arc<dyn LinearOperator> = Arc::new(AvgPoolSr::new(*factor)?);
            let y_t = to_tensor(&crop_y, device)?;
            Ok(Job {
                problem: Problem::new(
                    op,
                    &y_t,
                    settings.sigma_y,
                    (3, region.h * factor, region.w * factor),
                )?,
                out_rect: region.scaled(*factor),
                y_rect: region,
                pad: none,
            })
        }
    }
}

/// Sample `b` of a working-scale batch, unpadded and resized to its output rectangle.
fn working_to_output(x: &Tensor, b: usize, job: &Job) -> Result<RgbImage> {
    let x = if job.pad == Padding::default() {
        x.clone()
    } else {
        crop(x, job.pad)?
    };
    let img = from_tensor(&x, b)?;
    Ok(resize::bilinear(&img, job.out_rect.w, job.out_rect.h))
}

/// The preview patch as the user should see it: inpainting keeps the photo outside the mask.
fn composite_preview(
    mut patch: RgbImage,
    y: &dyn Raster,
    degradation: &Degradation,
    job: &Job,
) -> RgbImage {
    if let Degradation::Inpaint { fill, .. } = degradation {
        let r = job.out_rect;
        for row in 0..r.h {
            for col in 0..r.w {
                let i = (r.y + row) * y.width() + r.x + col;
                if !fill[i] {
                    let o = (row * r.w + col) * 3;
                    for c in 0..3 {
                        patch.data[o + c] = y.value(i * 3 + c);
                    }
                }
            }
        }
    }
    patch
}

/// Per-pixel residual magnitude of sample `b` over the job's measurement rectangle; for
/// inpainting it is measured at working scale and resized, hidden pixels are NaN.
fn residual_patch(residual: &Tensor, b: usize, job: &Job) -> Result<Vec<f32>> {
    let r = if job.pad == Padding::default() {
        residual.clone()
    } else {
        crop(residual, job.pad)?
    };
    let img = from_tensor(&r, b)?; // (r + 1) / 2: undo below
    let (w, h) = (img.width, img.height);
    let mut mag: Vec<f32> = (0..w * h)
        .map(|i| {
            let s: f32 = (0..3)
                .map(|c| (img.data[i * 3 + c] * 2.0 - 1.0).powi(2))
                .sum();
            (s / 3.0).sqrt()
        })
        .collect();
    if (w, h) != (job.y_rect.w, job.y_rect.h) {
        // Inpainting at reduced scale: nearest lookup onto the photo grid.
        let (tw, th) = (job.y_rect.w, job.y_rect.h);
        mag = (0..tw * th)
            .map(|i| {
                let (x, y) = (i % tw, i / tw);
                mag[(y * h / th).min(h - 1) * w + (x * w / tw).min(w - 1)]
            })
            .collect();
    }
    Ok(mag)
}

/// Blends region results into full-size images.
struct Accumulator {
    kind: Assembly,
    out_w: usize,
    out_h: usize,
    y_w: usize,
    y_h: usize,
}

/// How a sample is assembled.
enum Assembly {
    /// Inpainting changes only the holes, and regions never overlap: the sample starts as a
    /// copy of the photo in its own storage, the holes are written in, and the residual is kept
    /// per region. A 24-megapixel JPEG costs 72 MB per sample.
    Holes {
        out: Pixels,
        residual: Vec<(Rect, Vec<f32>)>,
    },
    /// Tiles overlap and cross-fade: weighted float sums and their weights until the end.
    Tiles {
        depth: Depth,
        out: Vec<f32>,
        weight: Vec<f32>,
        res_sum: Vec<f32>,
        res_weight: Vec<f32>,
    },
}

impl Accumulator {
    fn new(out_w: usize, out_h: usize, y: &dyn Raster, degradation: &Degradation) -> Self {
        let (y_w, y_h) = (y.width(), y.height());
        let kind = if matches!(degradation, Degradation::Inpaint { .. }) {
            Assembly::Holes {
                out: y.to_pixels(),
                residual: Vec::new(),
            }
        } else {
            Assembly::Tiles {
                depth: y.depth(),
                out: vec![0.0; out_w * out_h * 3],
                weight: vec![0.0; out_w * out_h],
                res_sum: vec![0.0; y_w * y_h],
                res_weight: vec![0.0; y_w * y_h],
            }
        };
        Self {
            kind,
            out_w,
            out_h,
            y_w,
            y_h,
        }
    }

    fn add(
        &mut self,
        patch: &RgbImage,
        residual: &[f32],
        degradation: &Degradation,
        job: &Job,
        settings: &Settings,
    ) {
        let r = job.out_rect;
        let q = job.y_rect;
        match (&mut self.kind, degradation) {
            (Assembly::Holes { .. }, Degradation::Inpaint { fill, .. }) => {
                self.add_hole(patch, residual, fill, r);
            }
            (
                Assembly::Tiles {
                    out,
                    weight,
                    res_sum,
                    res_weight,
                    ..
                },
                _,
            ) => {
                // Cross-fade widths in measurement pixels and in output pixels.
                let ramp_y = tiling(degradation, settings).map_or(0, |(_, overlap)| overlap);
                let ramp = match degradation {
                    Degradation::SuperRes { factor } => ramp_y * factor,
                    _ => ramp_y,
                };
                for row in 0..r.h {
                    for col in 0..r.w {
                        let (x, yy) = (r.x + col, r.y + row);
                        let i = yy * self.out_w + x;
                        let w = plan::feather(&r, x, yy, ramp, self.out_w, self.out_h);
                        let o = (row * r.w + col) * 3;
                        for c in 0..3 {
                            out[i * 3 + c] += w * patch.data[o + c];
                        }
                        weight[i] += w;
                    }
                }
                for row in 0..q.h {
                    for col in 0..q.w {
                        let (x, yy) = (q.x + col, q.y + row);
                        let i = yy * self.y_w + x;
                        let v = residual[row * q.w + col];
                        let w = plan::feather(&q, x, yy, ramp_y, self.y_w, self.y_h);
                        res_sum[i] += w * v * v;
                        res_weight[i] += w;
                    }
                }
            }
            // An inpainting accumulator is only made for inpainting.
            (Assembly::Holes { .. }, _) => {}
        }
    }

    /// Writes the hidden pixels of `r` from `patch` (`r`'s size) and keeps the residual over
    /// the observed ones.
    fn add_hole(&mut self, patch: &RgbImage, residual: &[f32], fill: &[bool], r: Rect) {
        let Assembly::Holes { out, residual: res } = &mut self.kind else {
            return;
        };
        // Only hidden pixels take the sample; the residual is measured elsewhere.
        for row in 0..r.h {
            for col in 0..r.w {
                let i = (r.y + row) * self.out_w + r.x + col;
                if fill[i] {
                    let o = (row * r.w + col) * 3;
                    for c in 0..3 {
                        out.set(i * 3 + c, patch.data[o + c]);
                    }
                }
            }
        }
        let values = (0..r.w * r.h)
            .map(|k| {
                let i = (r.y + k / r.w) * self.y_w + r.x + k % r.w;
                if fill[i] { f32::NAN } else { residual[k].abs() }
            })
            .collect();
        res.push((r, values));
    }

    fn finish(self) -> (Pixels, Residual) {
        let (image, patches) = match self.kind {
            // Holes were written in place and clamped; every other pixel is the photo,
            // bit-exact.
            Assembly::Holes { out, residual } => (out, residual),
            Assembly::Tiles {
                depth,
                mut out,
                weight,
                res_sum,
                res_weight,
            } => {
                for (i, &w) in weight.iter().enumerate() {
                    if w > 0.0 {
                        for c in 0..3 {
                            out[i * 3 + c] = (out[i * 3 + c] / w).clamp(0.0, 1.0);
                        }
                    }
                }
                drop(weight);
                let rgb = RgbImage {
                    width: self.out_w,
                    height: self.out_h,
                    data: out,
                };
                let map = res_sum
                    .iter()
                    .zip(&res_weight)
                    .map(|(&s, &w)| if w > 0.0 { (s / w).sqrt() } else { f32::NAN })
                    .collect();
                (
                    Pixels::quantised(rgb, depth),
                    vec![(Rect::new(0, 0, self.y_w, self.y_h), map)],
                )
            }
        };
        let (sum, n) = patches
            .iter()
            .flat_map(|(_, values)| values)
            .filter(|v| v.is_finite())
            .fold((0.0_f64, 0_usize), |(s, n), &v| {
                (s + f64::from(v * v), n + 1)
            });
        let rms = if n > 0 { (sum / n as f64).sqrt() } else { 0.0 };
        (
            image,
            Residual {
                width: self.y_w,
                height: self.y_h,
                patches,
                rms,
            },
        )
    }
}

/// A duration for people: `"40 s"`, `"3 min"`, `"1.5 h"`.
pub fn human_duration(secs: f64) -> String {
    if secs < 90.0 {
        format!("{:.0} s", secs.max(1.0))
    } else if secs < 90.0 * 60.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// σ_y = 0 is raised to the networks' floor for every operator, and further to the motion
    /// floor for motion deblurring only, with a note for each step.
    #[test]
    fn sigma_y_floors_follow_the_operator() -> Result<()> {
        let settings = Settings {
            sigma_y: 0.0,
            ..Settings::default()
        };
        let motion = Degradation::Deblur(BlurSpec::Motion {
            length: 9.0,
            angle_deg: 30.0,
        });
        let (s, notes) = settings.checked_for(&motion)?;
        assert_eq!(s.sigma_y, crate::limits::MOTION_SIGMA_Y_FLOOR);
        assert_eq!(notes.len(), 2, "{notes:?}");
        let gaussian = Degradation::Deblur(BlurSpec::Gaussian { sigma: 2.0 });
        let (s, notes) = settings.checked_for(&gaussian)?;
        assert_eq!(s.sigma_y, crate::limits::SIGMA_Y_FLOOR);
        assert_eq!(notes.len(), 1, "{notes:?}");
        Ok(())
    }

    /// The mean and uncertainty read samples in any storage and keep the first one's; a
    /// residual kept per region draws as the whole grid with nothing measured elsewhere.
    #[test]
    fn statistics_and_residuals_work_on_stored_samples() {
        let a = Pixels::U8 {
            width: 2,
            height: 1,
            data: vec![0, 255, 100, 50, 50, 50],
        };
        let b = Pixels::U8 {
            width: 2,
            height: 1,
            data: vec![255, 255, 100, 50, 50, 50],
        };
        let Some((mean, uncertainty, full)) = mean_and_uncertainty(&[&a, &b], None) else {
            panic!("two samples of one size have a mean");
        };
        assert_eq!(mean.depth(), Depth::U8);
        assert_eq!(mean.as_u8(), Some(&[128_u8, 255, 100, 50, 50, 50][..]));
        // One channel differs by 1: std = sqrt((0.5² · 2) / (3 · 1)), the top of the map.
        assert!((full - (0.5_f32 / 3.0).sqrt()).abs() < 1e-6, "{full}");
        let top = heat::colour(1.0).map(crate::photo::to_u8);
        let bottom = heat::colour(0.0).map(crate::photo::to_u8);
        assert_eq!(uncertainty.as_u8(), Some(&[top, bottom].concat()[..]));
        let c = Pixels::new(1, 1, Depth::U8);
        assert!(
            mean_and_uncertainty(&[&a, &c], None).is_none(),
            "mixed sizes"
        );

        // A prior's own variance replaces the spread, even for one sample; merging weighs by
        // samples.
        let mut v = VarianceMap {
            width: 2,
            height: 1,
            regions: vec![(Rect::new(1, 0, 1, 1), vec![0.04])],
            samples: 1,
        };
        v.merge(&VarianceMap {
            regions: vec![(Rect::new(1, 0, 1, 1), vec![0.16])],
            samples: 3,
            ..v.clone()
        });
        assert!(
            (v.at(1, 0) - 0.13).abs() < 1e-6 && v.at(0, 0) == 0.0,
            "{v:?}"
        );
        let Some((_, uncertainty, full)) = mean_and_uncertainty(&[&a], Some(&v)) else {
            panic!("one sample has a mean");
        };
        assert!((full - 0.13_f32.sqrt()).abs() < 1e-6, "{full}");
        assert_eq!(uncertainty.as_u8(), Some(&[bottom, top].concat()[..]));

        let residual = Residual {
            width: 4,
            height: 3,
            patches: vec![(Rect::new(1, 1, 2, 2), vec![0.1, f32::NAN, 0.2, 0.3])],
            rms: 0.0,
        };
        let map = residual.map();
        assert_eq!(map.len(), 12);
        assert_eq!((map[5], map[9], map[10]), (0.1, 0.2, 0.3));
        assert!(map[6].is_nan() && map[0].is_nan() && map[11].is_nan());
    }

    #[test]
    fn garbage_is_never_a_success() {
        assert!(check_beats_doing_nothing(25.0, 20.0).is_ok_and(|w| w.is_none()));
        assert!(check_beats_doing_nothing(19.5, 20.0).is_ok_and(|w| w.is_some()));
        let e = check_beats_doing_nothing(4.8, 18.9)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("below the 18.90 dB"), "{e}");
        assert!(check_beats_doing_nothing(f64::NAN, 18.9).is_err());
    }

    #[test]
    fn the_estimate_grows_with_samples_and_photo_size() {
        let s = Settings {
            prior: Prior::Network,
            ..Settings::default()
        };
        let mut fill = vec![false; 6000 * 4000];
        fill[2000 * 6000 + 3000] = true;
        let small_fill = fill.clone();
        let small = Estimate::new(
            (6000, 4000),
            Depth::U8,
            &Degradation::inpaint(fill.clone()),
            &s,
            1,
        );
        let many = Estimate::new((6000, 4000), Depth::U8, &Degradation::inpaint(fill), &s, 64);
        assert_eq!(small.regions, 1);
        assert_eq!(small.network_calls, MethodChoice::Eps.default_steps());
        assert!(many.bytes > 10 * small.bytes);
        // The photo's own patches call no network.
        let patches = Estimate::new(
            (6000, 4000),
            Depth::U8,
            &Degradation::inpaint(small_fill.clone()),
            &Settings::default(),
            1,
        );
        assert_eq!(patches.network_calls, 0);
        let tiles = Estimate::new(
            (1000, 1000),
            Depth::U8,
            &Degradation::Deblur(BlurSpec::Gaussian { sigma: 2.0 }),
            &s,
            1,
        );
        assert!(tiles.regions > 1);
    }

    #[test]
    fn the_time_estimate_counts_the_pixels_the_networks_see() {
        let s = Settings {
            prior: Prior::Network,
            ..Settings::default()
        };
        let deblur = Degradation::Deblur(BlurSpec::Gaussian { sigma: 2.0 });
        let one = Estimate::new((256, 256), Depth::U8, &deblur, &s, 1);
        assert_eq!(one.regions, 1);
        assert_eq!(
            one.network_pixels,
            256 * 256 * MethodChoice::Eps.default_steps() as u64
        );
        assert_eq!(
            Estimate::new((256, 256), Depth::U8, &deblur, &s, 4).network_pixels,
            4 * one.network_pixels
        );
        // ΠGDM differentiates through the network: a backward pass counts twice.
        let pigdm = Settings {
            method: MethodChoice::Pigdm,
            steps: Some(MethodChoice::Eps.default_steps()),
            ..Settings::default()
        };
        assert_eq!(
            Estimate::new((256, 256), Depth::U8, &deblur, &pigdm, 1).network_pixels,
            3 * one.network_pixels
        );
        // SR ×4 works at the output size: a 64×64 photo is 256×256 of network work.
        let sr = Estimate::new(
            (64, 64),
            Depth::U8,
            &Degradation::SuperRes { factor: 4 },
            &s,
            1,
        );
        assert_eq!(sr.network_pixels, one.network_pixels);
        // A small hole is worked on as a crop around it, not the whole photo.
        let mut fill = vec![false; 6000 * 4000];
        fill[2000 * 6000 + 3000] = true;
        let hole = Estimate::new((6000, 4000), Depth::U8, &Degradation::inpaint(fill), &s, 1);
        assert!(hole.network_pixels <= one.network_pixels, "{hole:?}");
        let nfe = MethodChoice::Eps.default_steps() as f64;
        assert!((one.seconds(0.5) - 0.5 * 256.0 * 256.0 * nfe / 1e6).abs() < 1e-9);
        assert_eq!(one.patch_seconds, 0.0);
        // Deblurring on the photo's own patches (the default) calls no network; its time is
        // the patch denoiser's per sample and call, a mean 4 draws of 6 calls; the preview is
        // the network's one call.
        let patches = Estimate::new((256, 256), Depth::U8, &deblur, &Settings::default(), 1);
        assert_eq!((patches.network_pixels, patches.network_calls), (0, 0));
        let per_call = 256.0 * 256.0 / 1e6 * PATCH_DEBLUR_SECS_PER_MEGAPIXEL;
        let setup = 256.0 * 256.0 / 1e6 * PATCH_DEBLUR_SETUP_SECS_PER_MEGAPIXEL;
        assert!((patches.patch_seconds - setup - nfe * per_call).abs() < 1e-9);
        assert!((patches.seconds(0.5) - patches.patch_seconds).abs() < 1e-12);
        let mean = Settings {
            method: MethodChoice::EpsMean,
            ..Settings::default()
        };
        let on_patches = Estimate::new((256, 256), Depth::U8, &deblur, &mean, 2);
        assert!((on_patches.patch_seconds - 8.0 * (setup + 6.0 * per_call)).abs() < 1e-9);
        let preview = Estimate::new(
            (256, 256),
            Depth::U8,
            &deblur,
            &Settings {
                preview: true,
                ..mean
            },
            1,
        );
        assert_eq!(
            (preview.network_pixels, preview.patch_seconds),
            (256 * 256, 0.0)
        );
        assert_eq!(human_duration(40.0), "40 s");
        assert_eq!(human_duration(600.0), "10 min");
        assert_eq!(human_duration(5400.0), "1.5 h");
    }

    #[test]
    fn step_counts_add_up_over_regions() {
        let at = StepCount {
            region: 1,
            regions: 3,
            step: 5,
            n_steps: 20,
            layout: (1, 1),
        };
        assert!((at.fraction() - 1.25 / 3.0).abs() < 1e-12);
        assert_eq!(at.steps_left(), 20 + 15);
        assert_eq!(at.to_string(), "step 5/20 · region 2/3");
        let second = StepCount {
            layout: (2, 2),
            ..at
        };
        assert_eq!(second.to_string(), "step 5/20 · layout 2 of 2 · region 2/3");
        let done = StepCount {
            region: 2,
            step: 20,
            ..at
        };
        assert_eq!((done.fraction(), done.steps_left()), (1.0, 0));
        assert_eq!(
            (StepCount::START.fraction(), StepCount::START.steps_left()),
            (0.0, 1)
        );
    }
}
