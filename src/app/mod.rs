//! The EPS Studio desktop app: the state, the eframe glue, and what happens between frames.
//! Drawing lives in [`crate::ui`]; sampling on the [`crate::worker`] thread.

pub mod document;
pub mod files;
mod logic;
mod overlay;
pub mod settings;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use crate::photo::{Photo, Pixels};
use crate::restore::{self, Degradation, Models, Residual, StepCount};
use crate::worker::{JobKind, Worker};

pub use document::{Autosave, Layer, MaskLayer, Masks};
pub use logic::LARGE_SIDE;
pub use overlay::{MaskEditingCosts, MaskStyle, bench_mask_editing, layer_colour};
pub use settings::{AppSettings, BlurKind, OperatorChoice, SaveChoice};

/// Textures are kept at most this many pixels on a side (the photo itself keeps full resolution).
pub const DISPLAY_MAX_SIDE: usize = 2048;

/// Jobs estimated to take longer than this (seconds) are started only after the user agrees.
pub const LONG_JOB_SECS: f64 = 600.0;

/// How the app is started.
#[derive(Default)]
pub struct AppOptions {
    /// A photo to open at start.
    pub open: Option<PathBuf>,
    /// The weights folder (default: the shipped assets).
    pub weights: Option<PathBuf>,
    /// Networks to use instead of loading files (tests).
    pub models: Option<Models>,
    /// Where the open document autosaves (default: the app's data folder; `None` there disables).
    pub autosave_dir: Option<PathBuf>,
    /// Ignore remembered settings (tests).
    pub fresh_settings: bool,
}

/// Painting and viewing tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// Round brush adds to the mask.
    Brush,
    /// Round brush removes from the mask.
    Eraser,
    /// Drag a rectangle to add to the mask.
    Rectangle,
}

/// What the canvas shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewMode {
    /// The chosen sample (or the one forming).
    Result,
    /// The measurement `y` (the photo as given, or as simulated).
    Measurement,
    /// The mean of the samples.
    Mean,
    /// Per-pixel standard deviation of the samples.
    Uncertainty,
    /// `|A x̂ − y|` of the chosen sample.
    Residual,
    /// Measurement and result next to each other.
    SideBySide,
    /// The clean photo (simulate mode only).
    Truth,
}

/// Canvas zoom and pan; `screen = origin + zoom · image`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Screen points per output pixel.
    pub zoom: f32,
    /// Screen position of the image's top-left corner, relative to the canvas.
    pub offset: egui::Vec2,
    /// Fit the image to the canvas on the next frame.
    pub fit_pending: bool,
}

/// A texture and the image size it shows.
pub struct Shown {
    /// The texture.
    pub texture: egui::TextureHandle,
    /// Width in image pixels the texture represents.
    pub width: usize,
    /// Height in image pixels.
    pub height: usize,
}

/// One posterior sample in the gallery.
pub struct SampleView {
    /// Its seed.
    pub seed: u64,
    /// The image at output resolution, in the photo's bit depth (shared with saves in
    /// flight).
    pub image: Arc<Pixels>,
    /// Its measurement residual.
    pub residual: Residual,
    /// PSNR against the truth (simulate mode).
    pub psnr: Option<f64>,
    /// LPIPS (AlexNet) against the truth (simulate mode), computed on the sampler thread.
    pub lpips: Option<f64>,
    /// Thumbnail and display texture.
    pub texture: Option<egui::TextureHandle>,
}

/// What a run explains and how: shared by the job in flight and its results.
#[derive(Clone)]
pub struct Problem {
    /// The measurement.
    pub y: Arc<Pixels>,
    /// The operator.
    pub degradation: Arc<Degradation>,
    /// σ_y.
    pub sigma_y: f64,
    /// Method label.
    pub method: String,
}

/// The finished results of the current problem.
pub struct Results {
    /// What the samples explain.
    pub problem: Problem,
    /// NFE per region.
    pub nfe: usize,
    /// The samples.
    pub samples: Vec<SampleView>,
    /// Chosen sample.
    pub selected: usize,
    /// Mean PSNR (simulate mode).
    pub mean_psnr: Option<f64>,
    /// Textures for the mean, uncertainty and residual views.
    pub mean_texture: Option<Shown>,
    /// Uncertainty heat map.
    pub std_texture: Option<Shown>,
    /// Residual heat map of the chosen sample.
    pub residual_texture: Option<(usize, Shown)>,
    /// Seconds the last run took.
    pub seconds: f64,
    /// The prior's closed-form posterior variance, merged over the runs (resamples).
    pub variance: Option<restore::VarianceMap>,
}

/// A job in flight.
pub struct Running {
    /// Job id.
    pub id: u64,
    /// Its purpose.
    pub kind: JobKind,
    /// How far it is.
    pub at: StepCount,
    /// Smoothed seconds per step.
    pub step_secs: f64,
    /// When it was sent.
    pub started: Instant,
    /// What it explains.
    pub problem: Problem,
    /// The picture forming, at display scale.
    pub canvas: egui::ColorImage,
    /// Its texture.
    pub texture: Option<egui::TextureHandle>,
    /// Steps arrived since the texture was last uploaded.
    pub canvas_dirty: bool,
    /// The display scale of `canvas` (display px per output px).
    pub scale: f32,
}

/// A message in the window.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The text.
    pub text: String,
    /// Whether it is an error.
    pub error: bool,
}

/// A large photo waiting for the user's choice.
pub struct LargePhoto {
    /// The photo as loaded.
    pub photo: Photo,
}

/// The app.
pub struct EpsApp {
    /// Remembered settings.
    pub settings: AppSettings,
    /// The open photo.
    pub photo: Option<Photo>,
    /// The masks (inpainting): the hole and the keep-out area.
    pub masks: Option<Masks>,
    /// The mask the tools paint on.
    pub layer: Layer,
    /// Current tool.
    pub tool: Tool,
    /// Canvas view.
    pub view: View,
    /// What the canvas shows.
    pub mode: ViewMode,
    /// A/B wipe between measurement (left) and result (right), 0–1; `None` = off.
    pub wipe: Option<f32>,
    /// Results of the last restoration.
    pub results: Option<Results>,
    /// The job in flight.
    pub running: Option<Running>,
    /// The last instant preview (posterior mean), shown until a restoration replaces it.
    pub preview: Option<Shown>,
    /// Messages shown at the top.
    pub notices: Vec<Notice>,
    /// Networks status line.
    pub models_status: String,
    /// Active compute backend.
    pub backend: String,
    /// Whether the networks are ready.
    pub models_ready: bool,
    /// Whether the networks' load has not answered yet (ready or failed).
    pub models_loading: bool,
    /// A photo too large to work on comfortably, waiting for the user's choice.
    pub large_photo: Option<LargePhoto>,
    /// A job estimated to take longer than [`LONG_JOB_SECS`], waiting for the user's go-ahead,
    /// with the question to ask.
    pub long_job: Option<(JobKind, String)>,
    /// Seconds per million pixels of one network call where the networks run now (measured
    /// by the sampler thread); `None` until known.
    pub secs_per_megapixel: Option<f64>,
    /// The path typed into the "open" field (when no native dialog is available).
    pub path_input: String,
    /// Time spent in the last `ui` call, and the worst while sampling.
    pub frame_ms: f32,
    /// Worst UI frame time while a job ran.
    pub worst_frame_ms_sampling: f32,
    /// The mask changed since the shown results were made (the canvas shows the mask again).
    pub mask_edited: bool,
    /// Draw the mask as an outline once a fill is there to see under it (`O` toggles).
    pub mask_outline: bool,
    /// The canvas rectangle of the last frame (screen points).
    pub last_canvas: egui::Rect,
    /// Leave out timings, which change from run to run (snapshot tests).
    pub hide_timings: bool,
    /// The photo being read on the file thread.
    pub opening: Option<PathBuf>,
    /// Texture pixels uploaded in the current frame, and the most in one frame while a job ran:
    /// what a frame costs, counted rather than timed.
    pub frame_upload_px: usize,
    /// The most texture pixels uploaded in one frame while a job ran.
    pub worst_upload_px_sampling: usize,

    worker: Worker,
    files: files::FileThread,
    /// Output names promised to queued saves, so the next save picks another.
    reserved: std::collections::HashSet<PathBuf>,
    autosave: Option<Autosave>,
    photo_texture: Option<Shown>,
    measurement: Option<(u64, Arc<Pixels>, Option<Arc<Pixels>>)>,
    measurement_texture: Option<(u64, Shown)>,
    truth_texture: Option<(u64, Shown)>,
    mask_texture: Option<overlay::MaskOverlay>,
    keep_out_texture: Option<overlay::MaskOverlay>,
    preview_due: Option<Instant>,
    autosave_due: Option<Instant>,
    stroke_last: Option<egui::Pos2>,
    rect_start: Option<egui::Pos2>,
    seen_revision: u64,
    settings_key: u64,
    next_seed: u64,
    /// The estimate of the restoration the settings describe, and the key it was made for.
    estimate: Option<(u64, Option<restore::Estimate>)>,
    ctx: egui::Context,
}

impl EpsApp {
    /// Builds the app (eframe calls this once the window exists).
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let ctx = cc.egui_ctx.clone();
        let mut settings: AppSettings = if options.fresh_settings {
            AppSettings::default()
        } else {
            cc.storage
                .and_then(|s| eframe::get_value(s, eframe::APP_KEY))
                .unwrap_or_default()
        };
        settings.sanitize();
        let waker_ctx = ctx.clone();
        let preloaded = options.models.is_some();
        let backend = settings.backend;
        let worker = Worker::spawn(
            options.models,
            options.weights.clone(),
            backend,
            move || {
                waker_ctx.request_repaint();
            },
        )
        .unwrap_or_else(|e| panic!("cannot start the sampler thread: {e}"));
        let files_ctx = ctx.clone();
        let files = files::FileThread::spawn(move || files_ctx.request_repaint())
            .unwrap_or_else(|e| panic!("cannot start the file thread: {e}"));
        let autosave_dir = options
            .autosave_dir
            .or_else(|| eframe::storage_dir("eps-studio").map(|d| d.join("autosave")));
        let mut app = Self {
            settings,
            photo: None,
            masks: None,
            layer: Layer::Hole,
            tool: Tool::Brush,
            view: View {
                zoom: 1.0,
                offset: egui::Vec2::ZERO,
                fit_pending: true,
            },
            mode: ViewMode::Result,
            wipe: None,
            results: None,
            running: None,
            preview: None,
            notices: Vec::new(),
            models_status: if preloaded {
                "networks ready".into()
            } else {
                "loading networks…".into()
            },
            backend: format!("{}…", backend.label()),
            models_ready: preloaded,
            models_loading: !preloaded,
            large_photo: None,
            long_job: None,
            secs_per_megapixel: None,
            path_input: String::new(),
            frame_ms: 0.0,
            worst_frame_ms_sampling: 0.0,
            mask_edited: false,
            last_canvas: egui::Rect::NOTHING,
            hide_timings: false,
            opening: None,
            frame_upload_px: 0,
            worst_upload_px_sampling: 0,
            worker,
            files,
            reserved: std::collections::HashSet::new(),
            autosave: autosave_dir.map(Autosave::new),
            photo_texture: None,
            measurement: None,
            measurement_texture: None,
            truth_texture: None,
            mask_texture: None,
            keep_out_texture: None,
            mask_outline: true,
            preview_due: None,
            autosave_due: None,
            stroke_last: None,
            rect_start: None,
            seen_revision: 0,
            settings_key: 0,
            next_seed: 0,
            estimate: None,
            ctx,
        };
        if let Some(path) = options.open {
            app.open_path(&path);
        } else if let Some(autosave) = app.autosave.clone() {
            app.files
                .run(move || files::FileDone::Reopened(autosave.load()));
        }
        app
    }

    /// Switches the compute backend (the worker answers with the one it could use).
    pub fn set_backend(&mut self, choice: crate::backend::BackendChoice) {
        self.settings.backend = choice;
        self.backend = format!("{}…", choice.label());
        self.worker.send(crate::worker::Command::SetBackend(choice));
    }

    /// Adds an informational message.
    pub fn info(&mut self, text: impl Into<String>) {
        self.notify(Notice {
            text: text.into(),
            error: false,
        });
    }

    /// Adds an error message.
    pub fn error(&mut self, text: impl Into<String>) {
        self.notify(Notice {
            text: text.into(),
            error: true,
        });
    }

    /// Shows `notice`, unless it is already the last one shown.
    fn notify(&mut self, notice: Notice) {
        if self.notices.last() == Some(&notice) {
            return;
        }
        self.notices.push(notice);
        if self.notices.len() > 4 {
            self.notices.remove(0);
        }
    }

    /// Output size of the current problem (SR makes it larger than the photo).
    pub fn output_size(&self) -> Option<(usize, usize)> {
        let p = self.photo.as_ref()?;
        Some(match self.settings.operator {
            OperatorChoice::SuperRes if !self.settings.simulate => (
                p.width() * self.settings.sr_factor,
                p.height() * self.settings.sr_factor,
            ),
            OperatorChoice::SuperRes => {
                let f = self.settings.sr_factor;
                (p.width() / f * f, p.height() / f * f)
            }
            _ => (p.width(), p.height()),
        })
    }

    /// Whether a restoration (not a preview) is running.
    pub fn is_restoring(&self) -> bool {
        self.running
            .as_ref()
            .is_some_and(|r| r.kind != JobKind::Preview)
    }

    /// The uncertainty and residual displays need results.
    pub fn has_results(&self) -> bool {
        self.results.as_ref().is_some_and(|r| !r.samples.is_empty())
    }

    /// Screen-space rectangle of the output image on the canvas `canvas`.
    pub fn image_rect(&self, canvas: egui::Rect) -> Option<egui::Rect> {
        let (w, h) = self.output_size()?;
        Some(egui::Rect::from_min_size(
            canvas.min + self.view.offset,
            egui::vec2(w as f32, h as f32) * self.view.zoom,
        ))
    }

    /// Output-pixel position of a screen point.
    pub fn image_from_screen(&self, canvas: egui::Rect, screen: egui::Pos2) -> egui::Pos2 {
        ((screen - canvas.min - self.view.offset) / self.view.zoom).to_pos2()
    }

    /// The networks' folder is given as a status line.
    pub fn autosave_dir(&self) -> Option<&std::path::Path> {
        self.autosave.as_ref().map(Autosave::dir)
    }

    fn schedule_autosave(&mut self) {
        self.autosave_due = Some(Instant::now() + Duration::from_millis(800));
    }
}

impl eframe::App for EpsApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.frame_upload_px = 0;
        self.drain_files();
        self.drain_updates(ctx);
        self.handle_dropped_files(ctx);
        self.tick(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let started = Instant::now();
        crate::ui::app_ui(ui, self);
        self.frame_ms = started.elapsed().as_secs_f32() * 1000.0;
        if self.running.is_some() {
            self.worst_frame_ms_sampling = self.worst_frame_ms_sampling.max(self.frame_ms);
            self.worst_upload_px_sampling = self.worst_upload_px_sampling.max(self.frame_upload_px);
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, eframe::APP_KEY, &self.settings);
        self.write_autosave();
    }
}
