//! What happens between frames: opening photos, starting and cancelling jobs, draining the
//! worker's updates, autosave, saving results.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eframe::egui;

use super::overlay::{MaskOverlay, MaskStyle};
use super::{
    DISPLAY_MAX_SIDE, EpsApp, LargePhoto, Layer, MaskLayer, Masks, OperatorChoice, Problem,
    Results, Running, SampleView, SaveChoice, Shown, ViewMode,
};
use crate::photo::{self, Photo, Pixels, Raster, RgbImage, SaveFormat, SaveImage};
use crate::restore::MethodChoice;
use crate::restore::{self, Degradation, resize};
use crate::worker::{Command, Job, JobKind, Update};

use super::files::FileDone;

/// Photos with a longer side than this get the "downscale or keep" question.
pub const LARGE_SIDE: usize = 6000;

/// Debounce of the instant preview after an edit.
const PREVIEW_DELAY: Duration = Duration::from_millis(300);

/// How the message of a failed instant preview begins.
const PREVIEW_FAILED: &str = "The preview failed: ";

/// Updates handled per frame at most, so a burst never stalls the UI.
const UPDATES_PER_FRAME: usize = 16;

/// Photos are smoothed when shrunk but shown as crisp pixels when zoomed in, so a restoration
/// can be inspected pixel by pixel.
pub const PHOTO_TEXTURE: egui::TextureOptions = egui::TextureOptions {
    magnification: egui::TextureFilter::Nearest,
    ..egui::TextureOptions::LINEAR
};

/// The display size of a `w × h` image shown at most `max_side` pixels on a side, and its
/// scale (display pixels per image pixel).
pub fn display_size(w: usize, h: usize, max_side: usize) -> ([usize; 2], f32) {
    let scale = (max_side as f32 / w.max(h) as f32).min(1.0);
    let side = |n: usize| ((n as f32 * scale).round() as usize).max(1);
    ([side(w), side(h)], scale)
}

/// An `egui` image at display scale.
pub fn color_image(img: &dyn Raster, max_side: usize) -> (egui::ColorImage, f32) {
    let ([w, h], scale) = display_size(img.width(), img.height(), max_side);
    if scale < 1.0 {
        let small = resize::area(img, w, h);
        return (egui::ColorImage::from_rgb([w, h], &small.to_rgb8()), scale);
    }
    let bytes: Vec<u8> = match img.as_u8() {
        Some(bytes) => bytes.to_vec(),
        None => (0..img.width() * img.height() * 3)
            .map(|i| photo::to_u8(img.value(i)))
            .collect(),
    };
    (
        egui::ColorImage::from_rgb([img.width(), img.height()], &bytes),
        scale,
    )
}

/// A texture of `img` for display.
pub fn shown(ctx: &egui::Context, name: &str, img: &dyn Raster) -> Shown {
    let (ci, _) = color_image(img, DISPLAY_MAX_SIDE);
    Shown {
        texture: ctx.load_texture(name, ci, PHOTO_TEXTURE),
        width: img.width(),
        height: img.height(),
    }
}

impl EpsApp {
    /// Opens a photo file, reporting problems in the window.
    ///
    /// The file is read and decoded on the file thread; the photo replaces the open one when it
    /// arrives ([`Self::opening`] meanwhile), and a file that is not a photo leaves it alone.
    pub fn open_path(&mut self, path: &Path) {
        let path = path.to_owned();
        self.opening = Some(path.clone());
        self.files.run(move || FileDone::Opened {
            result: photo::load(&path),
            path,
        });
    }

    /// Opens a photo given as bytes (drag and drop without a path), decoded on the file thread.
    pub fn open_bytes(&mut self, bytes: &[u8], name: &str) {
        let bytes = bytes.to_vec();
        let path = PathBuf::from(name);
        self.opening = Some(path.clone());
        self.files.run(move || FileDone::Opened {
            result: photo::decode(&bytes, &path),
            path,
        });
    }

    /// Makes `photo` the document, with empty masks; the tools paint the hole.
    pub fn set_photo(&mut self, photo: Photo) {
        self.cancel();
        self.masks = Some(Masks::new(photo.width(), photo.height()));
        self.layer = Layer::Hole;
        self.photo_texture = Some(shown(&self.ctx, "photo", &*photo.pixels));
        self.photo = Some(photo);
        self.results = None;
        self.preview = None;
        self.measurement = None;
        self.measurement_texture = None;
        self.truth_texture = None;
        self.mask_texture = None;
        self.keep_out_texture = None;
        self.view.fit_pending = true;
        self.mode = ViewMode::Result;
        self.mask_edited = false;
        self.seen_revision = 0;
        self.schedule_autosave();
    }

    /// Answers the large-photo question: downscale to `LARGE_SIDE / 2` or keep full size.
    pub fn resolve_large_photo(&mut self, downscale: bool) {
        let Some(LargePhoto { mut photo }) = self.large_photo.take() else {
            return;
        };
        if downscale {
            let target = LARGE_SIDE / 2;
            let s = target as f32 / photo.width().max(photo.height()) as f32;
            let (w, h) = (
                ((photo.width() as f32 * s).round() as usize).max(1),
                ((photo.height() as f32 * s).round() as usize).max(1),
            );
            let depth = photo.pixels.depth();
            photo.pixels = Arc::new(Pixels::quantised(resize::area(&*photo.pixels, w, h), depth));
            photo.alpha = None;
            self.info(format!(
                "Working on a {w}×{h} copy; the original file is untouched."
            ));
        }
        self.set_photo(photo);
    }

    pub(super) fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        if let Some(file) = dropped.first() {
            let path = file.path().to_path_buf();
            if path.exists() {
                self.open_path(&path);
            } else {
                match file.bytes() {
                    Ok(bytes) => self.open_bytes(&bytes, &path.display().to_string()),
                    Err(e) => self.error(format!("Could not read the dropped file: {e}")),
                }
            }
        }
    }

    /// A key for everything the measurement depends on.
    fn problem_key(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let s = &self.settings;
        format!(
            "{:?}{:?}{}{}{}{}{}{}",
            s.operator,
            s.blur_kind,
            s.blur_sigma,
            s.motion_length,
            s.motion_angle,
            s.sr_factor,
            s.simulate,
            s.sigma_y
        )
        .hash(&mut h);
        if s.simulate {
            s.seed.hash(&mut h);
            if s.operator == OperatorChoice::Inpaint {
                self.masks.as_ref().map(|m| m.hole().revision).hash(&mut h);
            }
        }
        if let Some(p) = &self.photo {
            (p.width(), p.height(), p.path.clone()).hash(&mut h);
        }
        h.finish()
    }

    /// The measurement `y` for the current settings and the truth in simulate mode.
    pub fn measurement(&mut self) -> Option<(Arc<Pixels>, Option<Arc<Pixels>>)> {
        let key = self.problem_key();
        if let Some((k, y, t)) = &self.measurement
            && *k == key
        {
            return Some((Arc::clone(y), t.clone()));
        }
        let photo = self.photo.as_ref()?;
        let (y, truth) = if self.settings.simulate {
            let fill = self
                .masks
                .as_ref()
                .map(|m| m.hole().fill().to_vec())
                .unwrap_or_default();
            // What is measured depends on the hole alone.
            let d = self.settings.degradation(&fill, &[], self.settings.method);
            match restore::simulate(
                &photo.pixels.rgb(),
                &d,
                self.settings.sigma_y,
                self.settings.seed,
            ) {
                Ok(s) => (
                    Arc::new(Pixels::F32(s.y)),
                    Some(Arc::new(Pixels::F32(s.truth))),
                ),
                Err(e) => {
                    self.error(format!("Cannot simulate this degradation: {e}"));
                    return None;
                }
            }
        } else {
            // The photo itself, shared: no copy.
            (Arc::clone(&photo.pixels), None)
        };
        self.measurement = Some((key, Arc::clone(&y), truth.clone()));
        Some((y, truth))
    }

    /// The texture of the measurement.
    pub fn measurement_shown(&mut self) -> Option<&Shown> {
        let key = self.problem_key();
        if self
            .measurement_texture
            .as_ref()
            .is_none_or(|(k, _)| *k != key)
        {
            let (y, truth) = self.measurement()?;
            self.measurement_texture = Some((key, shown(&self.ctx, "measurement", &*y)));
            self.truth_texture = truth.map(|t| (key, shown(&self.ctx, "truth", &*t)));
        }
        self.measurement_texture.as_ref().map(|(_, s)| s)
    }

    /// The texture of the clean photo in simulate mode.
    pub fn truth_shown(&mut self) -> Option<&Shown> {
        self.measurement_shown()?;
        self.truth_texture.as_ref().map(|(_, s)| s)
    }

    /// The photo texture.
    pub fn photo_shown(&self) -> Option<&Shown> {
        self.photo_texture.as_ref()
    }

    /// How the mask is drawn now: an outline once a fill (the instant preview or a result) is
    /// there to see under it, unless the user asked for the filled overlay (`O` toggles).
    pub fn mask_style(&self) -> MaskStyle {
        let fill_to_see = self.preview.is_some() || self.has_results();
        if fill_to_see && self.mask_outline {
            MaskStyle::Outline
        } else {
            MaskStyle::Fill
        }
    }

    /// The overlay texture of one mask, brought up to date with it and [`Self::mask_style`].
    pub fn mask_shown(&mut self, layer: Layer) -> Option<&Shown> {
        let style = self.mask_style();
        let mask = self.masks.as_mut()?.layer_mut(layer);
        let texture = match layer {
            Layer::Hole => &mut self.mask_texture,
            Layer::KeepOut => &mut self.keep_out_texture,
        };
        match texture {
            Some(overlay) => overlay.refresh(mask, style),
            None => {
                let mut overlay = MaskOverlay::new(&self.ctx, mask, layer);
                overlay.refresh(mask, style);
                *texture = Some(overlay);
            }
        }
        texture.as_ref().map(|o| &o.shown)
    }

    /// The method a job of `kind` runs: the instant preview is always the one-call mean.
    fn job_method(&self, kind: JobKind) -> MethodChoice {
        if kind == JobKind::Preview {
            MethodChoice::EpsMean
        } else {
            self.settings.method
        }
    }

    /// Whether a keep-out area is painted that the chosen method and prior do not use (only
    /// fills made of the photo's own patches take one): the panel says so.
    pub fn keep_out_ignored(&self) -> bool {
        self.settings.operator == OperatorChoice::Inpaint
            && self
                .masks
                .as_ref()
                .is_some_and(|m| !m.keep_out().is_empty())
            && !self
                .settings
                .restore_settings(self.settings.method)
                .takes_keep_out()
    }

    /// The degradation `method` solves with the current settings, or a message saying what is
    /// missing.
    pub fn degradation(&self, method: MethodChoice) -> Result<Degradation, String> {
        if self.photo.is_none() {
            return Err(
                "Open a photo first (File > Open, Ctrl+O, or drop it on the window).".into(),
            );
        }
        match (&self.settings.operator, &self.masks) {
            (OperatorChoice::Inpaint, Some(m)) => {
                if m.hole().is_empty() {
                    return Err(if m.keep_out().is_empty() {
                        "Paint over what should go first (brush B, rectangle R).".into()
                    } else {
                        "Paint over what should go first: press H for the hole (red), then the brush B or rectangle R. The blue keep-out area only says where the fill must not copy from.".into()
                    });
                }
                Ok(self
                    .settings
                    .degradation(m.hole().fill(), m.keep_out().fill(), method))
            }
            _ => Ok(self.settings.degradation(&[], &[], method)),
        }
    }

    /// Starts a restoration (`JobKind::Restore`) or draws more samples (`JobKind::Resample`).
    /// A job estimated to take longer than [`super::LONG_JOB_SECS`] waits for
    /// [`Self::answer_long_job`].
    pub fn start(&mut self, kind: JobKind) {
        self.start_job(kind, false);
    }

    /// Answers the long-job question: start it or drop it.
    pub fn answer_long_job(&mut self, start: bool) {
        if let Some((kind, _)) = self.long_job.take()
            && start
        {
            self.start_job(kind, true);
        }
    }

    /// What the restoration the settings describe will cost, for the panel: `"about 40 s ·
    /// 0.4 GB"`. Computed again only when the photo, mask or settings change.
    pub fn estimate_label(&mut self) -> Option<String> {
        let estimate = self.job_estimate()?;
        let time = self
            .job_seconds(&estimate)
            .map(|secs| format!("about {} · ", restore::human_duration(secs)))
            .unwrap_or_default();
        let work = if estimate.network_calls == 0 {
            "the photo's own patches".to_owned()
        } else {
            format!("{} network calls", estimate.network_calls)
        };
        Some(format!(
            "{time}{:.1} GB · {work}",
            estimate.bytes as f64 / 1e9
        ))
    }

    /// Seconds `estimate` should take: the networks' part at the rate measured when they were
    /// loaded, plus the patch prior's deblurring; `None` while the network's rate is unknown
    /// and the job calls it (a fill on patches has no estimate of its time).
    fn job_seconds(&self, estimate: &restore::Estimate) -> Option<f64> {
        match self.secs_per_megapixel {
            Some(rate) => Some(estimate.seconds(rate)),
            None if estimate.network_pixels == 0 => {
                Some(estimate.patch_seconds).filter(|&s| s > 0.0)
            }
            None => None,
        }
    }

    /// The estimate of a restoration with the current settings, cached.
    fn job_estimate(&mut self) -> Option<restore::Estimate> {
        let method = self.settings.method;
        let restore_settings = self.settings.restore_settings(method);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            self.problem_key(),
            self.masks.as_ref().map(Masks::revision),
            format!("{restore_settings:?}"),
            self.settings.samples,
        )
            .hash(&mut h);
        let key = h.finish();
        // While a stroke is being painted the last estimate stands: finding the regions of a
        // large photo's mask on every frame would slow the brush.
        let painting = self.stroke_last.is_some() || self.rect_start.is_some();
        if let Some((k, e)) = &self.estimate
            && (*k == key || painting)
        {
            return *e;
        }
        let estimate = self.degradation(method).ok().and_then(|degradation| {
            let photo = self.photo.as_ref()?;
            let (w, h) = (photo.width(), photo.height());
            let (size, depth) = match (&degradation, self.settings.simulate) {
                (Degradation::SuperRes { factor }, true) => {
                    ((w / factor, h / factor), crate::photo::Depth::F32)
                }
                (_, true) => ((w, h), crate::photo::Depth::F32),
                (_, false) => ((w, h), photo.pixels.depth()),
            };
            if size.0 == 0 || size.1 == 0 || degradation.validate(size.0, size.1).is_err() {
                return None;
            }
            Some(restore::Estimate::new(
                size,
                depth,
                &degradation,
                &restore_settings,
                self.settings.samples.max(1),
            ))
        });
        self.estimate = Some((key, estimate));
        estimate
    }

    /// Whether a job of `kind` on `degradation` needs the networks (a fill on the photo's own
    /// patches does not).
    fn needs_network(&self, kind: JobKind, degradation: &Degradation) -> bool {
        let method = self.job_method(kind);
        restore::Settings {
            preview: kind == JobKind::Preview,
            ..self.settings.restore_settings(method)
        }
        .needs_network(degradation)
    }

    fn start_job(&mut self, kind: JobKind, confirmed: bool) {
        // Typed or remembered values outside their controls' ranges never reach a run.
        self.settings.sanitize();
        let method = self.job_method(kind);
        let degradation = match self.degradation(method) {
            Ok(d) => d,
            Err(msg) => {
                self.error(msg);
                return;
            }
        };
        if !self.models_ready && self.needs_network(kind, &degradation) {
            self.error(format!(
                "The networks are not ready: {}",
                self.models_status
            ));
            return;
        }
        let Some((y, truth)) = self.measurement() else {
            return;
        };
        let n = self.settings.samples.max(1);
        let first = match kind {
            JobKind::Resample => self.next_seed,
            _ => self.settings.seed,
        };
        let previous_seed = self.next_seed;
        self.next_seed = first + n as u64;
        let seeds = if kind == JobKind::Preview {
            vec![self.settings.seed]
        } else {
            crate::noise::consecutive_seeds(first, n)
        };
        let truth = truth.filter(|_| kind != JobKind::Preview);
        let estimate = restore::Estimate::new(
            (y.width(), y.height()),
            y.depth(),
            &degradation,
            &restore::Settings {
                preview: kind == JobKind::Preview,
                ..self.settings.restore_settings(method)
            },
            seeds.len(),
        );
        if let Err(e) = estimate.check_memory() {
            self.error(format!("Not started: {e}"));
            return;
        }
        if let Some(secs) = self.job_seconds(&estimate)
            && kind != JobKind::Preview
            && !confirmed
            && secs > super::LONG_JOB_SECS
        {
            // Nothing is drawn yet: the seeds are handed out again when it starts.
            self.next_seed = previous_seed;
            self.long_job = Some((
                kind,
                if estimate.network_calls == 0 {
                    format!(
                        "This restoration will take about {} on the CPU (the photo's own patches over {} region(s), {} sample(s)). Fewer samples or steps or a smaller photo make it faster; the trained network as the prior is faster and less sharp.",
                        restore::human_duration(secs),
                        estimate.regions,
                        seeds.len()
                    )
                } else {
                    format!(
                        "This restoration will take about {} on {} ({} network calls over {} region(s), {} sample(s)). Fewer samples or steps, a smaller working size or a smaller photo make it faster.",
                        restore::human_duration(secs),
                        self.backend,
                        estimate.network_calls,
                        estimate.regions,
                        seeds.len()
                    )
                },
            ));
            return;
        }
        self.send_job(kind, y, truth, degradation, method, seeds);
    }

    fn send_job(
        &mut self,
        kind: JobKind,
        y: Arc<Pixels>,
        truth: Option<Arc<Pixels>>,
        degradation: Degradation,
        method: MethodChoice,
        seeds: Vec<u64>,
    ) {
        self.cancel();
        let settings = restore::Settings {
            preview: kind == JobKind::Preview,
            ..self.settings.restore_settings(method)
        };
        let (out_w, out_h) = degradation.output_size(y.width(), y.height());
        // The picture forming starts from what is known: the photo for inpainting, the
        // measurement stretched to the output size otherwise; made at display size, never as
        // a full-size float copy.
        let ([dw, dh], scale) = display_size(out_w, out_h, DISPLAY_MAX_SIDE);
        let start = if dw <= y.width() {
            resize::area(&*y, dw, dh)
        } else {
            resize::bilinear(&*y, dw, dh)
        };
        let canvas = egui::ColorImage::from_rgb([dw, dh], &start.to_rgb8());
        let id = self.worker.next_id();
        let degradation = Arc::new(degradation);
        self.running = Some(Running {
            id,
            kind,
            at: restore::StepCount::START,
            step_secs: 0.0,
            started: Instant::now(),
            problem: Problem {
                y: Arc::clone(&y),
                degradation: Arc::clone(&degradation),
                sigma_y: settings.sigma_y,
                method: settings.sampler_method(&degradation).name(),
            },
            canvas,
            texture: None,
            canvas_dirty: false,
            scale,
        });
        if kind != JobKind::Preview {
            self.mode = ViewMode::Result;
            self.worst_frame_ms_sampling = 0.0;
        }
        self.worker.send(Command::Run(Box::new(Job {
            id,
            kind,
            y,
            degradation,
            settings,
            seeds,
            truth,
        })));
    }

    /// Cancels the running job; it stops within one step.
    pub fn cancel(&mut self) {
        if let Some(r) = self.running.take() {
            self.worker.cancel_upto(r.id);
        }
    }

    pub(super) fn drain_updates(&mut self, ctx: &egui::Context) {
        for _ in 0..UPDATES_PER_FRAME {
            let Some(update) = self.worker.try_recv() else {
                break;
            };
            self.apply(ctx, update);
        }
        // However many steps arrived, the forming picture is uploaded once per frame.
        if let Some(r) = self.running.as_mut()
            && r.canvas_dirty
        {
            r.canvas_dirty = false;
            let image = r.canvas.clone();
            let px = image.size[0] * image.size[1];
            match &mut r.texture {
                Some(t) => t.set(image, PHOTO_TEXTURE),
                None => r.texture = Some(ctx.load_texture("live", image, PHOTO_TEXTURE)),
            }
            self.frame_upload_px += px;
        }
    }

    /// Applies what the file thread finished: opened photos, saves, the autosave.
    pub(super) fn drain_files(&mut self) {
        while let Some(done) = self.files.try_recv() {
            match done {
                FileDone::Opened { path, result } => {
                    if self.opening.as_ref() == Some(&path) {
                        self.opening = None;
                    }
                    match result {
                        Ok(p) => {
                            if p.path.is_some() {
                                self.settings.last_folder = path.parent().map(Path::to_path_buf);
                            }
                            if p.width().max(p.height()) > LARGE_SIDE {
                                self.large_photo = Some(LargePhoto { photo: p });
                            } else {
                                self.set_photo(p);
                            }
                        }
                        Err(e) => self.error(format!("Could not open the photo: {e}")),
                    }
                }
                FileDone::Saved {
                    message,
                    reserved,
                    folder,
                } => {
                    for r in &reserved {
                        self.reserved.remove(r);
                    }
                    match message {
                        Ok(m) => {
                            if folder.is_some() {
                                self.settings.last_folder = folder;
                            }
                            self.info(m);
                        }
                        Err(m) => self.error(m),
                    }
                }
                FileDone::Autosaved(Ok(())) => {}
                FileDone::Autosaved(Err(e)) => self.error(format!(
                    "Autosave failed ({e}); your work is still open — save the mask with File > Export mask."
                )),
                FileDone::Reopened(Some(reopened)) => {
                    // Only if the user has not opened something meanwhile.
                    if self.photo.is_none() && self.opening.is_none() {
                        let name = reopened
                            .photo
                            .path
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        self.set_photo(reopened.photo);
                        let with_keep_out = reopened.keep_out.is_some();
                        if let Some(masks) = self.masks.as_mut() {
                            for (layer, fill) in [
                                (Layer::Hole, reopened.hole),
                                (Layer::KeepOut, reopened.keep_out),
                            ] {
                                if let Some(fill) = fill {
                                    masks.replace(layer, fill);
                                }
                            }
                        }
                        self.info(if with_keep_out {
                            format!(
                                "Reopened {name} with its mask and keep-out area from your last session."
                            )
                        } else {
                            format!("Reopened {name} with its mask from your last session.")
                        });
                    }
                }
                FileDone::Reopened(None) => {}
            }
        }
    }

    /// Whether file work (opening, saving, autosave) is queued or running.
    pub fn files_busy(&self) -> bool {
        self.files.busy()
    }

    fn apply(&mut self, ctx: &egui::Context, update: Update) {
        let current = self.running.as_ref().map(|r| r.id);
        match update {
            Update::ModelsLoaded { folder, backend } => {
                self.models_ready = true;
                self.models_loading = false;
                self.models_status = format!("networks from {folder}");
                self.backend = backend;
            }
            Update::BackendChanged { backend, notes } => {
                self.backend = backend;
                for note in notes {
                    self.info(format!("Compute: {note}."));
                }
            }
            Update::Speed { secs_per_megapixel } => {
                self.secs_per_megapixel = Some(secs_per_megapixel);
            }
            Update::ModelsFailed(msg) => {
                self.models_ready = false;
                self.models_loading = false;
                self.models_status = "networks missing".into();
                self.error(format!(
                    "Could not load the networks: {msg}. The app keeps working for opening and masking photos; restoring needs the weights."
                ));
            }
            Update::Started { .. } | Update::Cancelled { .. } => {}
            Update::Step {
                id,
                at,
                rect,
                preview,
                step_secs,
            } if Some(id) == current => {
                if let Some(r) = self.running.as_mut() {
                    r.at = at;
                    r.step_secs = if r.step_secs == 0.0 {
                        step_secs
                    } else {
                        0.7 * r.step_secs + 0.3 * step_secs
                    };
                    paste_scaled(&mut r.canvas, r.scale, rect, &preview);
                    r.canvas_dirty = true;
                }
            }
            Update::Finished { id, restoration } if Some(id) == current => {
                if let Some(r) = self.running.take() {
                    self.finish(ctx, r, restoration);
                }
            }
            Update::Failed { id, message } if Some(id) == current => {
                let preview = self
                    .running
                    .take()
                    .is_some_and(|r| r.kind == JobKind::Preview);
                if preview {
                    // Only the latest preview's failure matters: it replaces the one before
                    // rather than pushing every other message away, stroke after stroke.
                    self.notices.retain(|n| !n.text.starts_with(PREVIEW_FAILED));
                    self.error(format!("{PREVIEW_FAILED}{message}"));
                } else {
                    self.error(format!("Restoration failed: {message}"));
                }
            }
            // Updates of jobs that were cancelled or replaced.
            Update::Step { .. } | Update::Finished { .. } | Update::Failed { .. } => {}
        }
    }

    fn finish(&mut self, ctx: &egui::Context, run: Running, restoration: restore::Restoration) {
        for notice in &restoration.notices {
            self.error(notice.clone());
        }
        if run.kind == JobKind::Preview {
            if let Some(s) = restoration.samples.first() {
                self.preview = Some(shown(ctx, "preview", s));
            }
            return;
        }
        let truth = self.measurement.as_ref().and_then(|(_, _, t)| t.clone());
        let lpips = restoration.lpips;
        let variance = restoration.variance;
        let new: Vec<SampleView> = restoration
            .samples
            .into_iter()
            .zip(restoration.residuals)
            .zip(restoration.seeds)
            .enumerate()
            .map(|(i, ((image, residual), seed))| SampleView {
                psnr: truth.as_ref().map(|t| restore::psnr(&image, &**t)),
                lpips: lpips.get(i).copied().filter(|v| v.is_finite()),
                texture: Some(shown(ctx, &format!("sample-{seed}"), &image).texture),
                seed,
                image: Arc::new(image),
                residual,
            })
            .collect();
        let append = run.kind == JobKind::Resample
            && self.results.as_ref().is_some_and(|r| {
                Arc::ptr_eq(&r.problem.y, &run.problem.y)
                    && r.problem.degradation == run.problem.degradation
            });
        if append {
            if let Some(r) = self.results.as_mut() {
                r.selected = r.samples.len();
                r.samples.extend(new);
                r.seconds = restoration.seconds;
                // A map only while every run gave one: otherwise the spread speaks for all.
                match (&mut r.variance, &variance) {
                    (Some(old), Some(v)) => old.merge(v),
                    _ => r.variance = None,
                }
            }
        } else {
            self.results = Some(Results {
                problem: run.problem,
                nfe: restoration.nfe,
                samples: new,
                selected: 0,
                mean_psnr: None,
                mean_texture: None,
                std_texture: None,
                residual_texture: None,
                seconds: restoration.seconds,
                variance,
            });
        }
        self.preview = None;
        self.mask_edited = false;
        self.refresh_statistics(ctx, truth.as_deref());
    }

    fn refresh_statistics(&mut self, ctx: &egui::Context, truth: Option<&Pixels>) {
        let Some(r) = self.results.as_mut() else {
            return;
        };
        let images: Vec<&Pixels> = r.samples.iter().map(|s| &*s.image).collect();
        // The full-size mean and map are shown and scored, then dropped: saving makes them
        // again from the samples, so a big photo does not hold two more images for it.
        if let Some(mean) = restore::posterior_mean(&images) {
            r.mean_psnr = truth.map(|t| restore::psnr(&mean, t));
            r.mean_texture = Some(shown(ctx, "mean", &mean));
        }
        if let Some((heat, _)) = restore::uncertainty(&images, r.variance.as_ref()) {
            r.std_texture = Some(shown(ctx, "uncertainty", &heat));
        }
        r.residual_texture = None;
    }

    /// The residual heat map of the chosen sample (scaled so 3σ_y is full scale).
    pub fn residual_shown(&mut self) -> Option<&Shown> {
        let r = self.results.as_mut()?;
        let sel = r.selected.min(r.samples.len().checked_sub(1)?);
        if r.residual_texture.as_ref().is_none_or(|(s, _)| *s != sel) {
            let res = &r.samples[sel].residual;
            let heat = restore::heat::image(
                &res.map(),
                res.width,
                res.height,
                (3.0 * r.problem.sigma_y as f32).max(1e-3),
            );
            r.residual_texture = Some((sel, shown(&self.ctx, "residual", &heat)));
        }
        r.residual_texture.as_ref().map(|(_, s)| s)
    }

    pub(super) fn tick(&mut self, ctx: &egui::Context) {
        let now = Instant::now();
        // Mask edits and problem changes schedule the instant preview.
        let revision = self.masks.as_ref().map_or(0, Masks::revision);
        let key = self.problem_key();
        if revision != self.seen_revision || key != self.settings_key {
            let problem_changed = key != self.settings_key && self.settings_key != 0;
            if revision != self.seen_revision && self.has_results() {
                self.mask_edited = true;
            }
            self.seen_revision = revision;
            self.settings_key = key;
            if problem_changed && self.operator_changed_output() {
                self.results = None;
            }
            self.preview = None;
            if self.settings.live_preview && self.photo.is_some() {
                self.preview_due = Some(now + PREVIEW_DELAY);
            }
            self.schedule_autosave();
        }
        let painting = self.stroke_last.is_some() || self.rect_start.is_some();
        if let Some(due) = self.preview_due {
            if now >= due && !painting {
                self.preview_due = None;
                let ready = self
                    .degradation(self.job_method(JobKind::Preview))
                    .is_ok_and(|d| self.models_ready || !self.needs_network(JobKind::Preview, &d));
                if !self.is_restoring() && ready {
                    self.start(JobKind::Preview);
                }
            } else {
                ctx.request_repaint_after(due.saturating_duration_since(now));
            }
        }
        if let Some(due) = self.autosave_due {
            if now >= due && !painting {
                self.autosave_due = None;
                self.write_autosave();
            } else {
                ctx.request_repaint_after(
                    due.saturating_duration_since(now)
                        .max(Duration::from_millis(50)),
                );
            }
        }
    }

    fn operator_changed_output(&self) -> bool {
        match (&self.results, self.output_size()) {
            (Some(r), Some((w, h))) => r
                .samples
                .first()
                .is_some_and(|s| (s.image.width(), s.image.height()) != (w, h)),
            _ => false,
        }
    }

    /// Writes the autosave now.
    pub fn write_autosave(&mut self) {
        let (Some(a), Some(photo), Some(masks)) = (&self.autosave, &self.photo, &self.masks) else {
            return;
        };
        let Some(path) = photo.path.clone() else {
            return;
        };
        let (hole, keep_out) = (masks.hole(), masks.keep_out());
        let (w, h) = (hole.width, hole.height);
        let (a, hole, keep_out) = (a.clone(), hole.fill().to_vec(), keep_out.fill().to_vec());
        self.files
            .run(move || FileDone::Autosaved(a.save_fill(&path, &hole, &keep_out, w, h)));
    }

    /// Records the start of an edit of the mask being painted (an undo step).
    pub fn begin_edit(&mut self) {
        let layer = self.layer;
        if let Some(m) = self.masks.as_mut() {
            m.checkpoint(layer);
        }
    }

    /// The mask the tools paint on.
    pub fn painted_mut(&mut self) -> Option<&mut MaskLayer> {
        let layer = self.layer;
        self.masks.as_mut().map(|m| m.layer_mut(layer))
    }

    /// Marks the stroke state (the canvas calls this).
    pub fn set_stroke(&mut self, last: Option<egui::Pos2>, rect_start: Option<egui::Pos2>) {
        self.stroke_last = last;
        self.rect_start = rect_start;
    }

    /// The stroke state.
    pub fn stroke(&self) -> (Option<egui::Pos2>, Option<egui::Pos2>) {
        (self.stroke_last, self.rect_start)
    }

    /// The image shown as "result": the chosen sample, or the forming one.
    pub fn chosen(&self) -> Option<&SampleView> {
        let r = self.results.as_ref()?;
        r.samples.get(r.selected)
    }

    /// The save format for a result.
    pub fn save_format(&self) -> SaveFormat {
        let q = self.settings.jpeg_quality;
        match (self.settings.save_format, &self.photo) {
            (SaveChoice::Png, _) => SaveFormat::Png,
            (SaveChoice::Jpeg, _) => SaveFormat::Jpeg { quality: q },
            (SaveChoice::SameAsInput, Some(p)) => SaveFormat::same_as(p, q),
            (SaveChoice::SameAsInput, None) => SaveFormat::Png,
        }
    }

    /// Where a result is saved by default: next to the photo (or in the last folder), under a
    /// new name; an empty `ext` names a folder.
    pub fn default_save_path(&self, suffix: &str, ext: &str) -> PathBuf {
        let photo_path = self.photo.as_ref().and_then(|p| p.path.clone());
        let dir = photo_path
            .as_ref()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .or_else(|| self.settings.last_folder.clone())
            .unwrap_or_else(|| PathBuf::from("."));
        let stem = photo::stem_of(photo_path.as_deref());
        let stem = crate::fsutil::fit_stem(&stem, suffix.len() + ext.len() + 16).to_owned();
        let first = photo::free_path(&dir, &format!("{stem}.{suffix}"), ext);
        if !self.reserved.contains(&first) {
            return first;
        }
        // Taken by a save still queued: the next free name no queued save holds.
        (2..)
            .map(|i| photo::free_path(&dir, &format!("{stem}.{suffix}-{i}"), ext))
            .find(|p| !self.reserved.contains(p))
            .unwrap_or(first)
    }

    /// Saves the chosen sample to `path` (never over the original photo). Checks the request
    /// here and encodes and writes on the file thread; `true` when the save was queued.
    pub fn save_result_to(&mut self, path: &Path) -> bool {
        let Some(photo) = &self.photo else {
            return false;
        };
        let Some(sample) = self.chosen() else {
            self.error("Nothing to save yet: run Restore first.");
            return false;
        };
        // A dialog may return a bare name: give it the chosen format's extension.
        let path = if path.extension().is_none() {
            path.with_extension(self.save_format().extension())
        } else {
            path.to_owned()
        };
        if self.is_the_photo(&path) {
            self.error(
                "That is the original photo; EPS Studio never overwrites it. Choose another name.",
            );
            return false;
        }
        let format = match SaveFormat::from_path(&path, self.settings.jpeg_quality) {
            Ok(f) => f,
            Err(e) => {
                self.error(format!("Cannot save: {e}"));
                return false;
            }
        };
        let meta = metadata_for(photo, &sample.image);
        let image = sample.image.clone();
        self.reserved.insert(path.clone());
        self.files.run(move || {
            // The save dialog already asked about replacing an existing file.
            let result = photo::save(&SaveImage::like(&image, &meta), &path, format, true);
            FileDone::Saved {
                message: result
                    .map(|()| format!("Saved {}", path.display()))
                    .map_err(|e| format!("Could not save: {e}")),
                folder: path.parent().map(Path::to_path_buf),
                reserved: vec![path],
            }
        });
        true
    }

    /// Saves the chosen sample under a new name next to the photo (written on the file thread).
    pub fn quick_save(&mut self) -> Option<PathBuf> {
        let path = self.default_save_path("restored", self.save_format().extension());
        self.save_result_to(&path).then_some(path)
    }

    /// Saves every sample, the mean and the uncertainty map into a new folder next to the photo
    /// (written on the file thread).
    pub fn save_all(&mut self) -> Option<PathBuf> {
        let photo = self.photo.as_ref()?;
        let Some(results) = &self.results else {
            self.error("Nothing to save yet: run Restore first.");
            return None;
        };
        // Every output of a run has the same size: one set of metadata, without pixels.
        let meta = results
            .samples
            .first()
            .map(|s| metadata_for(photo, &s.image))?;
        let format = self.save_format();
        let dir = self.default_save_path("samples", "");
        let stem = photo::stem_of(photo.path.as_deref());
        let stem = crate::fsutil::fit_stem(&stem, 40).to_owned();
        let samples: Vec<(u64, Arc<Pixels>)> = results
            .samples
            .iter()
            .map(|s| (s.seed, Arc::clone(&s.image)))
            .collect();
        let variance = results.variance.clone();
        let count = samples.len();
        self.reserved.insert(dir.clone());
        let folder = dir.clone();
        self.files.run(move || {
            let result = (|| -> crate::Result<()> {
                crate::fsutil::prepare_output_dir(&dir)?;
                for (seed, image) in &samples {
                    let p = dir.join(format!("{stem}.sample-{seed}.{}", format.extension()));
                    photo::save(&SaveImage::like(&**image, &meta), &p, format, false)?;
                }
                let images: Vec<&Pixels> = samples.iter().map(|(_, s)| &**s).collect();
                // One after the other: a big photo never holds both.
                if let Some(mean) = restore::posterior_mean(&images) {
                    photo::save(
                        &SaveImage::like(&mean, &meta),
                        &dir.join(format!("{stem}.mean.{}", format.extension())),
                        format,
                        false,
                    )?;
                }
                if let Some((heat, _)) = restore::uncertainty(&images, variance.as_ref()) {
                    photo::save(
                        &SaveImage::plain(&heat),
                        &dir.join(format!("{stem}.uncertainty.png")),
                        SaveFormat::Png,
                        false,
                    )?;
                }
                Ok(())
            })();
            FileDone::Saved {
                message: result
                    .map(|()| {
                        format!(
                            "Saved {count} samples, the mean and the uncertainty map in {}",
                            dir.display()
                        )
                    })
                    .map_err(|e| format!("Could not save everything: {e}")),
                folder: None,
                reserved: vec![dir],
            }
        });
        Some(folder)
    }

    /// Whether `path` is the open photo's file, however it is spelt (relative, absolute,
    /// through a link).
    fn is_the_photo(&self, path: &Path) -> bool {
        self.photo
            .as_ref()
            .and_then(|p| p.path.as_deref())
            .is_some_and(|original| original == path || crate::fsutil::is_same_file(original, path))
    }

    /// Writes the mask being painted (the hole or the keep-out area) as a PNG (white = the
    /// mask) on the file thread; `true` when queued.
    pub fn export_mask(&mut self, path: &Path) -> bool {
        if self.is_the_photo(path) {
            self.error(
                "That is the original photo; EPS Studio never overwrites it. Choose another name for the mask.",
            );
            return false;
        }
        let Some(m) = self.masks.as_ref().map(|m| m.layer(self.layer)) else {
            return false;
        };
        let (fill, w, h) = (m.fill().to_vec(), m.width, m.height);
        let path = path.to_owned();
        self.reserved.insert(path.clone());
        self.files.run(move || {
            // The save dialog already asked about replacing an existing file.
            let result = photo::mask_png(&fill, w, h)
                .and_then(|png| crate::fsutil::write_atomic(&path, &png));
            FileDone::Saved {
                message: result
                    .map(|()| format!("Mask saved to {}", path.display()))
                    .map_err(|e| format!("Could not save the mask: {e}")),
                folder: None,
                reserved: vec![path],
            }
        });
        true
    }

    /// Reads a mask PNG of the photo's size (white = the mask) into the mask being painted
    /// (the hole or the keep-out area); one undo step.
    pub fn import_mask(&mut self, path: &Path) -> bool {
        let layer = self.layer;
        let Some(m) = &mut self.masks else {
            self.error("Open a photo before importing a mask.");
            return false;
        };
        let (w, h) = (m.hole().width, m.hole().height);
        match photo::load_mask(path, w, h) {
            Ok(fill) => {
                m.replace(layer, fill);
                self.settings.operator = OperatorChoice::Inpaint;
                true
            }
            Err(e) => {
                self.error(format!("Could not use that mask: {e}"));
                false
            }
        }
    }
}

/// Pastes `patch` (covering `rect` in output pixels) into a display-scale canvas.
fn paste_scaled(canvas: &mut egui::ColorImage, scale: f32, rect: restore::Rect, patch: &RgbImage) {
    let [cw, ch] = canvas.size;
    let x0 = (rect.x as f32 * scale).floor() as usize;
    let y0 = (rect.y as f32 * scale).floor() as usize;
    let x1 = ((rect.right() as f32 * scale).ceil() as usize).min(cw);
    let y1 = ((rect.bottom() as f32 * scale).ceil() as usize).min(ch);
    for y in y0..y1 {
        let sy = (((y as f32 + 0.5) / scale) as usize).clamp(rect.y, rect.bottom() - 1) - rect.y;
        for x in x0..x1 {
            let sx = (((x as f32 + 0.5) / scale) as usize).clamp(rect.x, rect.right() - 1) - rect.x;
            let p = patch.pixel(sx, sy);
            canvas.pixels[y * cw + x] =
                egui::Color32::from_rgb(photo::to_u8(p[0]), photo::to_u8(p[1]), photo::to_u8(p[2]));
        }
    }
}

/// The photo's metadata for a saved image (its pixels shared, not copied): EXIF, ICC and bit
/// depth always, alpha only with an image of the photo's own size.
fn metadata_for(photo: &Photo, image: &dyn Raster) -> Photo {
    let same_size = (image.width(), image.height()) == (photo.width(), photo.height());
    Photo {
        pixels: Arc::clone(&photo.pixels),
        alpha: photo.alpha.clone().filter(|_| same_size),
        path: photo.path.clone(),
        format: photo.format,
        exif: photo.exif.clone(),
        icc: photo.icc.clone(),
        high_bit_depth: photo.high_bit_depth,
    }
}
