//! The plain-data messages between the UI thread and the sampler thread.

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::BackendChoice;
use crate::photo::{Pixels, RgbImage};
use crate::restore::{Degradation, Rect, Restoration, Settings, StepCount};

/// Why a job runs; decides how its result is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// The instant posterior-mean preview while painting.
    Preview,
    /// A full restoration (replaces the gallery).
    Restore,
    /// More samples with new seeds (added to the gallery).
    Resample,
}

/// One restoration to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// Increasing id; a cancel names the newest id it covers.
    pub id: u64,
    /// What the result is for.
    pub kind: JobKind,
    /// The measured photo.
    pub y: Arc<Pixels>,
    /// The operator.
    pub degradation: Arc<Degradation>,
    /// Method and its settings.
    pub settings: Settings,
    /// One sample per seed.
    pub seeds: Vec<u64>,
    /// The clean photo in simulate mode: each sample is then scored with LPIPS against it.
    pub truth: Option<Arc<Pixels>>,
}

/// UI → worker.
#[derive(Debug)]
pub enum Command {
    /// Load (or reload) the networks from a folder (`None`: the shipped weights).
    LoadModels(Option<PathBuf>),
    /// Choose the compute backend (reloading the networks when their device changes).
    SetBackend(BackendChoice),
    /// Run a job (after any running one finishes or is cancelled).
    Run(Box<Job>),
}

/// Worker → UI.
#[derive(Debug)]
pub enum Update {
    /// The networks are ready.
    ModelsLoaded {
        /// Where they came from.
        folder: String,
        /// Compute backend in words.
        backend: String,
    },
    /// The networks could not be loaded.
    ModelsFailed(String),
    /// How fast the networks run where they are now, for time estimates
    /// ([`crate::restore::Estimate::seconds`]).
    Speed {
        /// Seconds per million pixels of one network call.
        secs_per_megapixel: f64,
    },
    /// The compute backend in use changed.
    BackendChanged {
        /// The backend in words.
        backend: String,
        /// Why a faster or the requested backend was not used, if it was not.
        notes: Vec<String>,
    },
    /// A job started.
    Started {
        /// Job id.
        id: u64,
    },
    /// A step finished; `preview` is the current estimate over `rect` (output pixels).
    Step {
        /// Job id.
        id: u64,
        /// How far the job is.
        at: StepCount,
        /// Where the preview goes.
        rect: Rect,
        /// The estimate of the first sample over `rect`.
        preview: RgbImage,
        /// Seconds the last step took.
        step_secs: f64,
    },
    /// A job finished.
    Finished {
        /// Job id.
        id: u64,
        /// The samples and their residuals.
        restoration: Restoration,
    },
    /// A job was cancelled.
    Cancelled {
        /// Job id.
        id: u64,
    },
    /// A job failed; the message says what to do.
    Failed {
        /// Job id.
        id: u64,
        /// What went wrong.
        message: String,
    },
}
