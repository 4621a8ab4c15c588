//! What the app remembers between runs (eframe persistence).

use std::path::PathBuf;

use crate::backend::BackendChoice;
use crate::restore::MethodChoice;
use crate::restore::{BlurSpec, Degradation, Prior, Settings};

/// The kind of problem being solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OperatorChoice {
    /// Paint what should go.
    Inpaint,
    /// Undo a blur.
    Deblur,
    /// Enlarge a small photo.
    SuperRes,
}

/// The blur family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BlurKind {
    /// Gaussian (out of focus).
    Gaussian,
    /// Linear motion (camera shake).
    Motion,
}

/// How results are saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SaveChoice {
    /// The input's format.
    SameAsInput,
    /// PNG.
    Png,
    /// JPEG at the chosen quality.
    Jpeg,
}

/// Every user setting.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// Problem kind.
    pub operator: OperatorChoice,
    /// Blur family.
    pub blur_kind: BlurKind,
    /// Gaussian σ in pixels.
    pub blur_sigma: f64,
    /// Motion length in pixels.
    pub motion_length: f64,
    /// Motion angle in degrees.
    pub motion_angle: f64,
    /// Super-resolution factor.
    pub sr_factor: usize,
    /// Degrade the loaded photo first and compare against it.
    pub simulate: bool,
    /// Sampling method.
    pub method: MethodChoice,
    /// The prior EPS fills holes with.
    pub prior: Prior,
    /// Whether a fill from the photo's own patches may also use them turned by 180°.
    pub turn: crate::prior::patch::pyramid::Turn,
    /// Sampler steps (NFE for EPS).
    pub steps: usize,
    /// Measurement noise σ_y.
    pub sigma_y: f64,
    /// First seed.
    pub seed: u64,
    /// Samples per restoration.
    pub samples: usize,
    /// Longest side the network sees at once.
    pub work_side: usize,
    /// Show the instant posterior-mean preview while painting.
    pub live_preview: bool,
    /// Brush radius in photo pixels.
    pub brush_radius: f32,
    /// Save format.
    pub save_format: SaveChoice,
    /// JPEG quality.
    pub jpeg_quality: u8,
    /// The folder of the last opened or saved file.
    pub last_folder: Option<PathBuf>,
    /// Compute backend.
    pub backend: BackendChoice,
}

impl Default for AppSettings {
    fn default() -> Self {
        Self {
            operator: OperatorChoice::Inpaint,
            blur_kind: BlurKind::Gaussian,
            blur_sigma: 1.5,
            motion_length: 11.0,
            motion_angle: 45.0,
            sr_factor: 2,
            simulate: false,
            method: MethodChoice::Eps,
            prior: Prior::default(),
            turn: Default::default(),
            steps: MethodChoice::Eps.default_steps(),
            sigma_y: 0.05,
            seed: 0,
            samples: 2,
            work_side: 256,
            live_preview: true,
            brush_radius: 12.0,
            save_format: SaveChoice::SameAsInput,
            jpeg_quality: 92,
            last_folder: None,
            backend: BackendChoice::Auto,
        }
    }
}

impl AppSettings {
    /// Brings every value into the range its control allows (and so within [`crate::limits`]):
    /// remembered settings come from a file that may be old, edited or damaged, and a NaN or a
    /// million samples must not reach a run.
    pub fn sanitize(&mut self) {
        let d = Self::default();
        let float = |v: f64, lo: f64, hi: f64, default: f64| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                default
            }
        };
        self.blur_sigma = float(self.blur_sigma, 0.3, 5.0, d.blur_sigma);
        self.motion_length = float(self.motion_length, 3.0, 31.0, d.motion_length);
        self.motion_angle = float(self.motion_angle, 0.0, 180.0, d.motion_angle);
        if !crate::limits::SR_FACTORS.contains(&self.sr_factor) {
            self.sr_factor = d.sr_factor;
        }
        self.steps = self.steps.clamp(1, crate::limits::MAX_STEPS);
        self.sigma_y = float(self.sigma_y, 0.0, 0.3, d.sigma_y);
        self.samples = self.samples.clamp(1, 16);
        self.work_side = self.work_side.clamp(64, crate::limits::WORK_SIDE.1);
        self.brush_radius = if self.brush_radius.is_finite() {
            self.brush_radius.clamp(1.0, 300.0)
        } else {
            d.brush_radius
        };
        self.jpeg_quality = self.jpeg_quality.clamp(50, 100);
    }

    /// The blur the settings describe.
    pub fn blur(&self) -> BlurSpec {
        match self.blur_kind {
            BlurKind::Gaussian => BlurSpec::Gaussian {
                sigma: self.blur_sigma,
            },
            BlurKind::Motion => BlurSpec::Motion {
                length: self.motion_length,
                angle_deg: self.motion_angle,
            },
        }
    }

    /// The degradation `method` solves for a photo with the given hole and keep-out area
    /// (inpainting only). The keep-out area goes along only where the fill takes one
    /// ([`Settings::takes_keep_out`]); the others run without it.
    pub fn degradation(
        &self,
        hole: &[bool],
        keep_out: &[bool],
        method: MethodChoice,
    ) -> Degradation {
        match self.operator {
            OperatorChoice::Inpaint => Degradation::Inpaint {
                fill: hole.to_vec(),
                keep_out: if keep_out.iter().any(|&k| k)
                    && self.restore_settings(method).takes_keep_out()
                {
                    keep_out.to_vec()
                } else {
                    Vec::new()
                },
            },
            OperatorChoice::Deblur => Degradation::Deblur(self.blur()),
            OperatorChoice::SuperRes => Degradation::SuperRes {
                factor: self.sr_factor,
            },
        }
    }

    /// Restoration settings for `method`.
    pub fn restore_settings(&self, method: MethodChoice) -> Settings {
        let mut settings = Settings {
            method,
            steps: (method == self.method && method != MethodChoice::EpsMean)
                .then_some(self.steps.max(1)),
            sigma_y: self.sigma_y,
            work_side: self.work_side,
            prior: self.prior,
            ..Settings::default()
        };
        settings.patch.turn = self.turn;
        settings
    }
}
