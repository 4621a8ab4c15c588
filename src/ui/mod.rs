//! Drawing the app: one function per area, each taking `&mut egui::Ui`.

mod canvas;
mod panels;

use eframe::egui;

use crate::app::{EpsApp, Layer, Tool, ViewMode};
use crate::worker::JobKind;

pub use canvas::canvas_ui;
pub use panels::{gallery_ui, progress_ui, settings_ui};

/// The whole window.
pub fn app_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    shortcuts(ui.ctx(), app);
    egui::Panel::top("menu").show(ui, |ui| menu_ui(ui, app));
    if !app.notices.is_empty() {
        egui::Panel::top("notices").show(ui, |ui| notices_ui(ui, app));
    }
    egui::Panel::bottom("progress").show(ui, |ui| progress_ui(ui, app));
    egui::Panel::left("settings")
        .resizable(true)
        .default_size(250.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| settings_ui(ui, app));
        });
    egui::Panel::right("gallery")
        .resizable(true)
        .default_size(220.0)
        .show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| gallery_ui(ui, app));
        });
    egui::CentralPanel::default().show(ui, |ui| canvas_ui(ui, app));
    large_photo_ui(ui, app);
    long_job_ui(ui, app);
}

fn shortcuts(ctx: &egui::Context, app: &mut EpsApp) {
    use egui::{Key, KeyboardShortcut, Modifiers};
    let typing = ctx.egui_wants_keyboard_input();
    let pressed =
        |m: Modifiers, k: Key| ctx.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(m, k)));
    if pressed(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
        && let Some(m) = app.masks.as_mut()
    {
        m.redo();
    }
    if pressed(Modifiers::COMMAND, Key::Z)
        && let Some(m) = app.masks.as_mut()
    {
        m.undo();
    }
    if pressed(Modifiers::COMMAND, Key::O) {
        open_dialog(app);
    }
    if pressed(Modifiers::COMMAND | Modifiers::SHIFT, Key::S) {
        save_as_dialog(app);
    }
    if pressed(Modifiers::COMMAND, Key::S) {
        app.quick_save();
    }
    if pressed(Modifiers::COMMAND, Key::Enter) {
        app.start(JobKind::Restore);
    }
    if typing {
        return;
    }
    if pressed(Modifiers::NONE, Key::Escape) {
        app.cancel();
    }
    if pressed(Modifiers::NONE, Key::B) {
        app.tool = Tool::Brush;
    }
    if pressed(Modifiers::NONE, Key::E) {
        app.tool = Tool::Eraser;
    }
    if pressed(Modifiers::NONE, Key::R) {
        app.tool = Tool::Rectangle;
    }
    if pressed(Modifiers::NONE, Key::H) {
        app.layer = Layer::Hole;
    }
    if pressed(Modifiers::NONE, Key::K) {
        app.layer = Layer::KeepOut;
    }
    if pressed(Modifiers::NONE, Key::OpenBracket) {
        app.settings.brush_radius = (app.settings.brush_radius / 1.25).max(1.0);
    }
    if pressed(Modifiers::NONE, Key::CloseBracket) {
        app.settings.brush_radius = (app.settings.brush_radius * 1.25).min(500.0);
    }
    if pressed(Modifiers::NONE, Key::F) {
        app.view.fit_pending = true;
    }
    if pressed(Modifiers::NONE, Key::Num1) {
        app.view.zoom = 1.0;
    }
    if pressed(Modifiers::SHIFT, Key::R) {
        app.start(JobKind::Resample);
    }
    if pressed(Modifiers::NONE, Key::O) {
        app.mask_outline = !app.mask_outline;
    }
}

/// Opens the native file dialog; when none is available, points at the other ways in.
pub fn open_dialog(app: &mut EpsApp) {
    let mut dialog = rfd::FileDialog::new()
        .set_title("Open a photo")
        .add_filter("Photos", &["jpg", "jpeg", "png", "webp", "tif", "tiff"]);
    if let Some(dir) = &app.settings.last_folder {
        dialog = dialog.set_directory(dir);
    }
    match dialog.pick_file() {
        Some(path) => app.open_path(&path),
        None => app.info(
            "No photo chosen. If no file dialog appeared, drop the photo onto the window or type its path in File > Open path.",
        ),
    }
}

fn save_as_dialog(app: &mut EpsApp) {
    if !app.has_results() {
        app.error("Nothing to save yet: run Restore first.");
        return;
    }
    let format = app.save_format();
    let suggested = app.default_save_path("restored", format.extension());
    let mut dialog = rfd::FileDialog::new()
        .set_title("Save the chosen sample")
        .add_filter("PNG", &["png"])
        .add_filter("JPEG", &["jpg", "jpeg"])
        .add_filter("WebP", &["webp"])
        .add_filter("TIFF", &["tif", "tiff"]);
    if let Some(dir) = suggested.parent() {
        dialog = dialog.set_directory(dir);
    }
    if let Some(name) = suggested.file_name() {
        dialog = dialog.set_file_name(name.to_string_lossy());
    }
    match dialog.save_file() {
        Some(path) => {
            app.save_result_to(&path);
        }
        None => app.info("Not saved. Without a file dialog, File > Save next to photo (Ctrl+S) saves under a new name."),
    }
}

fn menu_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            if ui.button("Open…  (Ctrl+O)").clicked() {
                open_dialog(app);
            }
            ui.horizontal(|ui| {
                ui.label("Open path:");
                let edit = ui.text_edit_singleline(&mut app.path_input);
                let go = ui.button("Open").clicked()
                    || (edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter)));
                if go && !app.path_input.trim().is_empty() {
                    let p = std::path::PathBuf::from(app.path_input.trim());
                    app.open_path(&p);
                }
            });
            ui.separator();
            if ui
                .add_enabled(
                    app.has_results(),
                    egui::Button::new("Save next to photo  (Ctrl+S)"),
                )
                .clicked()
            {
                app.quick_save();
            }
            if ui
                .add_enabled(
                    app.has_results(),
                    egui::Button::new("Save as…  (Ctrl+Shift+S)"),
                )
                .clicked()
            {
                save_as_dialog(app);
            }
            if ui
                .add_enabled(
                    app.has_results(),
                    egui::Button::new("Save all samples, mean and uncertainty"),
                )
                .clicked()
            {
                app.save_all();
            }
            ui.separator();
            // On the mask being painted.
            let (which, file_name) = match app.layer {
                Layer::Hole => ("mask", "mask.png"),
                Layer::KeepOut => ("keep-out mask", "keep-out.png"),
            };
            if ui
                .add_enabled(
                    app.masks.is_some(),
                    egui::Button::new(format!("Import {which}…")),
                )
                .clicked()
                && let Some(path) = rfd::FileDialog::new()
                    .add_filter("Mask", &["png"])
                    .pick_file()
            {
                app.import_mask(&path);
            }
            if ui
                .add_enabled(
                    app.masks.is_some(),
                    egui::Button::new(format!("Export {which}…")),
                )
                .clicked()
                && let Some(path) = rfd::FileDialog::new()
                    .add_filter("PNG", &["png"])
                    .set_file_name(file_name)
                    .save_file()
            {
                app.export_mask(&path);
            }
            ui.separator();
            if ui.button("Quit").clicked() {
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            }
        });
        ui.menu_button("Edit", |ui| {
            let (can_undo, can_redo) = app
                .masks
                .as_ref()
                .map_or((false, false), |m| (m.can_undo(), m.can_redo()));
            if ui
                .add_enabled(can_undo, egui::Button::new("Undo  (Ctrl+Z)"))
                .clicked()
                && let Some(m) = app.masks.as_mut()
            {
                m.undo();
            }
            if ui
                .add_enabled(can_redo, egui::Button::new("Redo  (Ctrl+Shift+Z)"))
                .clicked()
                && let Some(m) = app.masks.as_mut()
            {
                m.redo();
            }
            ui.separator();
            // On the mask being painted.
            let layer = app.layer;
            if ui
                .add_enabled(
                    app.masks.is_some(),
                    egui::Button::new(format!("Clear {}", layer.label())),
                )
                .clicked()
                && let Some(m) = app.masks.as_mut()
            {
                m.clear(layer);
            }
            if ui
                .add_enabled(
                    app.masks.is_some(),
                    egui::Button::new(format!("Invert {}", layer.label())),
                )
                .clicked()
                && let Some(m) = app.masks.as_mut()
            {
                m.invert(layer);
            }
        });
        ui.menu_button("View", |ui| {
            if ui.button("Fit  (F)").clicked() {
                app.view.fit_pending = true;
            }
            if ui.button("100%  (1)").clicked() {
                app.view.zoom = 1.0;
            }
            ui.checkbox(&mut app.mask_outline, "Mask as outline over a fill  (O)")
                .on_hover_text("Once a preview or result exists, draw only the mask's edge so the fill underneath shows");
        });
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            ui.label(format!("backend: {} · {}", app.backend, app.models_status));
        });
    });
}

fn notices_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    let mut dismiss = None;
    for (i, n) in app.notices.iter().enumerate() {
        ui.horizontal(|ui| {
            if ui.small_button("x").on_hover_text("Dismiss").clicked() {
                dismiss = Some(i);
            }
            let text = egui::RichText::new(&n.text);
            if n.error {
                ui.colored_label(ui.visuals().error_fg_color, text);
            } else {
                ui.label(text);
            }
        });
    }
    if let Some(i) = dismiss {
        app.notices.remove(i);
    }
}

fn long_job_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    let Some((_, question)) = &app.long_job else {
        return;
    };
    let question = question.clone();
    let mut answer = None;
    egui::Modal::new(egui::Id::unique("long-job")).show(ui.ctx(), |ui| {
        ui.heading("A long restoration");
        ui.label(question);
        ui.horizontal(|ui| {
            if ui.button("Start it").clicked() {
                answer = Some(true);
            }
            if ui.button("Not now").clicked() {
                answer = Some(false);
            }
        });
    });
    if let Some(start) = answer {
        app.answer_long_job(start);
    }
}

fn large_photo_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    let Some(large) = &app.large_photo else {
        return;
    };
    let (w, h) = (large.photo.width(), large.photo.height());
    let mut choice = None;
    egui::Modal::new(egui::Id::unique("large-photo")).show(ui.ctx(), |ui| {
        ui.heading("A large photo");
        ui.label(format!(
            "This photo is {w}×{h} ({:.0} megapixels). Inpainting works on crops around what you paint, so the full size is fine for small repairs; deblurring and super-resolution of the whole photo will be slow on this computer.",
            (w * h) as f64 / 1e6
        ));
        ui.horizontal(|ui| {
            if ui.button("Keep full size").clicked() {
                choice = Some(false);
            }
            if ui.button(format!("Work on a {} px copy", crate::app::LARGE_SIDE / 2)).clicked() {
                choice = Some(true);
            }
        });
    });
    if let Some(downscale) = choice {
        app.resolve_large_photo(downscale);
    }
}

/// Which view modes make sense now.
pub fn available_modes(app: &EpsApp) -> Vec<(ViewMode, &'static str)> {
    let mut modes = vec![
        (ViewMode::Result, "Result"),
        (ViewMode::Measurement, "Measurement"),
    ];
    if app.has_results() {
        modes.extend([
            (ViewMode::SideBySide, "Side by side"),
            (ViewMode::Mean, "Mean"),
            (ViewMode::Uncertainty, "Uncertainty"),
            (ViewMode::Residual, "Residual"),
        ]);
    }
    if app.settings.simulate {
        modes.push((ViewMode::Truth, "Ground truth"));
    }
    modes
}
