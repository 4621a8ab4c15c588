//! The canvas: the photo, the mask being painted, the picture forming, and the comparisons.
//! Coordinates: `screen` are egui points, `image` are output pixels.

use eframe::egui;

use crate::app::{EpsApp, Layer, OperatorChoice, Tool, ViewMode, layer_colour};
use crate::worker::JobKind;

/// The canvas with its toolbar.
pub fn canvas_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    toolbar_ui(ui, app);
    let canvas = ui.available_rect_before_wrap();
    app.last_canvas = canvas;
    // A fixed id, not the next automatic one: a stroke stays with the canvas whatever the
    // toolbar above it shows while the button is held.
    ui.advance_cursor_after_rect(canvas);
    let response = ui.interact(
        canvas,
        ui.scope_id().with("canvas"),
        egui::Sense::click_and_drag(),
    );
    let Some((w, h)) = app.output_size() else {
        ui.painter().text(
            canvas.center(),
            egui::Align2::CENTER_CENTER,
            "Drop a photo here, or File > Open (Ctrl+O)",
            egui::FontId::proportional(20.0),
            ui.visuals().weak_text_color(),
        );
        return;
    };
    if app.view.fit_pending && canvas.width() > 1.0 {
        let zoom = (canvas.width() / w as f32).min(canvas.height() / h as f32) * 0.98;
        app.view.zoom = zoom.max(1e-3);
        app.view.offset = (canvas.size() - egui::vec2(w as f32, h as f32) * app.view.zoom) / 2.0;
        app.view.fit_pending = false;
    }
    navigate(ui, app, canvas, &response);
    paint_input(ui, app, canvas, &response);
    draw(ui, app, canvas, &response);
}

fn toolbar_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    // Wrapped: a narrow window puts the view controls on a second row rather than widening
    // the canvas past the window.
    ui.horizontal_wrapped(|ui| {
        if app.settings.operator == OperatorChoice::Inpaint {
            ui.selectable_value(&mut app.layer, Layer::Hole, "Hole (H)")
                .on_hover_text("What should go: the fill paints over it (red).");
            ui.selectable_value(&mut app.layer, Layer::KeepOut, "Keep-out (K)")
                .on_hover_text(
                    "Where the fill must not copy from (blue): a repeated object, a face, a logo. \
                     Used by EPS on the photo's own patches; these pixels stay as they are.",
                );
            ui.separator();
            ui.selectable_value(&mut app.tool, Tool::Brush, "Brush (B)");
            ui.selectable_value(&mut app.tool, Tool::Eraser, "Eraser (E)");
            ui.selectable_value(&mut app.tool, Tool::Rectangle, "Rectangle (R)");
            ui.label(format!("radius {:.0} px", app.settings.brush_radius));
            ui.separator();
        }
        ui.label(format!("zoom {:.0}%", app.view.zoom * 100.0));
        if ui.button("Fit").clicked() {
            app.view.fit_pending = true;
        }
        if ui.button("100%").clicked() {
            app.view.zoom = 1.0;
        }
    });
}

fn navigate(ui: &egui::Ui, app: &mut EpsApp, canvas: egui::Rect, response: &egui::Response) {
    let panning = response.dragged_by(egui::PointerButton::Middle)
        || (ui.input(|i| i.key_down(egui::Key::Space))
            && response.dragged_by(egui::PointerButton::Primary));
    if panning {
        app.view.offset += response.drag_delta();
    }
    if response.hovered() {
        let (scroll, pinch) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = (scroll * 0.002).exp() * pinch;
        if (factor - 1.0).abs() > 1e-4
            && let Some(pointer) = response.hover_pos()
        {
            let before = app.image_from_screen(canvas, pointer);
            app.view.zoom = (app.view.zoom * factor).clamp(0.02, 32.0);
            // Keep the pixel under the pointer in place.
            app.view.offset = pointer - canvas.min - before.to_vec2() * app.view.zoom;
        }
    }
}

fn paint_input(ui: &egui::Ui, app: &mut EpsApp, canvas: egui::Rect, response: &egui::Response) {
    if app.settings.operator != OperatorChoice::Inpaint || app.masks.is_none() {
        return;
    }
    let space = ui.input(|i| i.key_down(egui::Key::Space));
    let primary = response.dragged_by(egui::PointerButton::Primary) && !space;
    let secondary = response.dragged_by(egui::PointerButton::Secondary);
    let pointer = response.interact_pointer_pos().or(response.hover_pos());
    let (last, rect_start) = app.stroke();
    let radius = app.settings.brush_radius;
    let (offset, zoom) = (app.view.offset, app.view.zoom);
    let to_image = move |p: egui::Pos2| {
        let q = ((p - canvas.min - offset) / zoom).to_pos2();
        (q.x, q.y)
    };
    match app.tool {
        Tool::Rectangle if !secondary => {
            if primary && rect_start.is_none() {
                // A drag is recognised only after the pointer moved a little: the rectangle's
                // corner is where the button went down.
                let origin = ui.input(|i| i.pointer.press_origin());
                app.set_stroke(None, origin.or(pointer));
            } else if !primary && let (Some(a), Some(b)) = (rect_start, pointer) {
                app.begin_edit();
                if let Some(m) = app.painted_mut() {
                    m.fill_rect(to_image(a), to_image(b), true);
                }
                app.set_stroke(None, None);
            }
        }
        _ => {
            let erase = secondary || app.tool == Tool::Eraser;
            let down = primary || secondary;
            let clicked = response.clicked() && !space;
            match (down || clicked, pointer) {
                (true, Some(p)) => {
                    let from = match last {
                        Some(l) => l,
                        None => {
                            app.begin_edit();
                            // A drag is recognised only after the pointer moved a little; the
                            // stroke starts where the button went down.
                            ui.input(|i| i.pointer.press_origin()).unwrap_or(p)
                        }
                    };
                    if let Some(m) = app.painted_mut() {
                        m.paint_segment(to_image(from), to_image(p), radius, !erase);
                    }
                    app.set_stroke(if clicked && !down { None } else { Some(p) }, None);
                }
                _ => {
                    if last.is_some() {
                        app.set_stroke(None, None);
                    }
                }
            }
        }
    }
    if app.stroke().0.is_some() || app.stroke().1.is_some() {
        app.mask_edited = true;
    }
}

fn draw(ui: &mut egui::Ui, app: &mut EpsApp, canvas: egui::Rect, response: &egui::Response) {
    let Some(rect) = app.image_rect(canvas) else {
        return;
    };
    let painter = ui.painter_at(canvas);
    painter.rect_filled(canvas, 0.0, ui.visuals().extreme_bg_color);
    let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
    let hold_original = ui.input(|i| i.key_down(egui::Key::Tab));
    let measurement = measurement_id(app);
    let result = result_id(app);
    let mode = if hold_original {
        ViewMode::Measurement
    } else {
        app.mode
    };
    let main = match mode {
        ViewMode::Result | ViewMode::SideBySide => result.or(measurement),
        ViewMode::Measurement => measurement,
        ViewMode::Mean => app
            .results
            .as_ref()
            .and_then(|r| r.mean_texture.as_ref())
            .map(|s| s.texture.id()),
        ViewMode::Uncertainty => app
            .results
            .as_ref()
            .and_then(|r| r.std_texture.as_ref())
            .map(|s| s.texture.id()),
        ViewMode::Residual => app.residual_shown().map(|s| s.texture.id()),
        ViewMode::Truth => app.truth_shown().map(|s| s.texture.id()),
    };
    if mode == ViewMode::SideBySide {
        let gap = 8.0;
        let left = rect.translate(egui::vec2(-(rect.width() + gap) / 2.0, 0.0));
        let right = rect.translate(egui::vec2((rect.width() + gap) / 2.0, 0.0));
        if let Some(m) = measurement {
            painter.image(m, left, uv, egui::Color32::WHITE);
        }
        if let Some(r) = main {
            painter.image(r, right, uv, egui::Color32::WHITE);
        }
        return;
    }
    if let Some(id) = main {
        painter.image(id, rect, uv, egui::Color32::WHITE);
    }
    // A/B wipe: the measurement left of the line, the result right of it.
    if let (Some(w), Some(m), ViewMode::Result) = (app.wipe, measurement, mode) {
        let x = rect.min.x + w * rect.width();
        let left = egui::Rect::from_min_max(rect.min, egui::pos2(x, rect.max.y));
        let left_uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(w, 1.0));
        painter.image(m, left, left_uv, egui::Color32::WHITE);
        painter.line_segment(
            [egui::pos2(x, rect.min.y), egui::pos2(x, rect.max.y)],
            egui::Stroke::new(2.0, egui::Color32::WHITE),
        );
    }
    let show_mask = app.settings.operator == OperatorChoice::Inpaint
        && (mode == ViewMode::Measurement || !app.has_results() || app.mask_edited)
        && !app.is_restoring();
    if show_mask {
        // The keep-out area under the hole: where both are painted, the hole wins.
        for layer in [Layer::KeepOut, Layer::Hole] {
            let painted = app
                .masks
                .as_ref()
                .is_some_and(|m| !m.layer(layer).is_empty());
            if (painted || layer == Layer::Hole)
                && let Some(mask) = app.mask_shown(layer)
            {
                painter.image(mask.texture.id(), rect, uv, egui::Color32::WHITE);
            }
        }
    }
    if let (Some(a), Some(b)) = (app.stroke().1, response.hover_pos()) {
        painter.rect_stroke(
            egui::Rect::from_two_pos(a, b),
            0.0,
            egui::Stroke::new(1.5, layer_colour(app.layer)),
            egui::StrokeKind::Middle,
        );
    }
    if app.settings.operator == OperatorChoice::Inpaint
        && app.tool != Tool::Rectangle
        && let Some(p) = response.hover_pos()
    {
        let r = app.settings.brush_radius * app.view.zoom;
        painter.circle_stroke(p, r, egui::Stroke::new(1.5, egui::Color32::BLACK));
        // The inner ring in the colour of the mask being painted.
        let inner = match app.layer {
            Layer::Hole => egui::Color32::WHITE,
            Layer::KeepOut => layer_colour(Layer::KeepOut),
        };
        painter.circle_stroke(p, r, egui::Stroke::new(0.75, inner));
    }
}

fn measurement_id(app: &mut EpsApp) -> Option<egui::TextureId> {
    if app.settings.simulate {
        app.measurement_shown().map(|s| s.texture.id())
    } else {
        app.photo_shown().map(|s| s.texture.id())
    }
}

fn result_id(app: &EpsApp) -> Option<egui::TextureId> {
    if let Some(r) = &app.running
        && r.kind != JobKind::Preview
        && let Some(t) = &r.texture
    {
        return Some(t.id());
    }
    if !app.mask_edited
        && let Some(s) = app.chosen()
        && let Some(t) = &s.texture
    {
        return Some(t.id());
    }
    if let Some(p) = &app.preview {
        return Some(p.texture.id());
    }
    if let Some(r) = &app.running
        && let Some(t) = &r.texture
    {
        return Some(t.id());
    }
    app.chosen()
        .and_then(|s| s.texture.as_ref())
        .map(egui::TextureHandle::id)
}
