//! Side and bottom panels: the problem and method settings, the sample gallery, progress.

use eframe::egui;

use crate::app::{BlurKind, EpsApp, OperatorChoice, SaveChoice, ViewMode};
use crate::restore::MethodChoice;
use crate::worker::JobKind;

/// The problem, the method and the buttons that run them.
pub fn settings_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    ui.heading("Problem");
    let keep_out_ignored = app.keep_out_ignored();
    let s = &mut app.settings;
    ui.horizontal_wrapped(|ui| {
        ui.selectable_value(&mut s.operator, OperatorChoice::Inpaint, "Inpaint");
        ui.selectable_value(&mut s.operator, OperatorChoice::Deblur, "Deblur");
        ui.selectable_value(
            &mut s.operator,
            OperatorChoice::SuperRes,
            "Super-resolution",
        );
    });
    match s.operator {
        OperatorChoice::Inpaint => {
            ui.label("Paint over what should go: brush (B), eraser (E), rectangle (R); [ and ] change the size. K paints a keep-out area the fill must not copy from, H the hole again.");
            ui.add(
                egui::Slider::new(&mut s.brush_radius, 1.0..=300.0)
                    .logarithmic(true)
                    .text("brush radius"),
            );
        }
        OperatorChoice::Deblur => {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut s.blur_kind, BlurKind::Gaussian, "Gaussian");
                ui.selectable_value(&mut s.blur_kind, BlurKind::Motion, "Motion");
            });
            match s.blur_kind {
                BlurKind::Gaussian => {
                    ui.add(egui::Slider::new(&mut s.blur_sigma, 0.3..=5.0).text("σ (px)"));
                }
                BlurKind::Motion => {
                    ui.add(egui::Slider::new(&mut s.motion_length, 3.0..=31.0).text("length (px)"));
                    ui.add(egui::Slider::new(&mut s.motion_angle, 0.0..=180.0).text("angle (°)"));
                }
            }
            kernel_thumbnail(ui, &s.blur());
        }
        OperatorChoice::SuperRes => {
            ui.horizontal(|ui| {
                for f in [2, 4] {
                    ui.selectable_value(&mut s.sr_factor, f, format!("×{f}"));
                }
            });
            ui.label("The loaded photo is the small image; the result is larger.");
        }
    }
    ui.checkbox(&mut s.simulate, "Simulate: degrade this photo first")
        .on_hover_text("Apply the chosen operator and noise to the photo, restore it, and compare with the original (PSNR).");

    ui.separator();
    ui.heading("Method");
    let before = s.method;
    egui::ComboBox::from_label("method")
        .selected_text(s.method.label())
        .show_ui(ui, |ui| {
            for m in MethodChoice::ALL {
                ui.selectable_value(&mut s.method, m, m.label());
            }
        });
    if s.method != before {
        s.steps = s.method.default_steps().max(1);
    }
    let eps = matches!(s.method, MethodChoice::Eps | MethodChoice::EpsMean);
    if s.operator == OperatorChoice::Inpaint
        && (eps || matches!(s.method, MethodChoice::Ddnm | MethodChoice::Diffpir))
    {
        egui::ComboBox::from_label("prior")
            .selected_text(s.prior.label())
            .show_ui(ui, |ui| {
                for p in crate::restore::Prior::ALL {
                    ui.selectable_value(&mut s.prior, p, p.label());
                }
            })
            .response
            .on_hover_text(
                "What the fill is made of. The photo's own patches: its grain, colour and texture, \
                 sampled exactly with no network, at the photo's own resolution. The trained \
                 network: a prior learned from other photos, at the working size. The hybrids use \
                 the network for the layout and the patches for the detail, or fuse the two \
                 pixel by pixel where each is surer.",
            );
        if s.prior.uses_patches() {
            use crate::prior::patch::pyramid::Turn;
            egui::ComboBox::from_label("turned patches")
                .selected_text(s.turn.name())
                .show_ui(ui, |ui| {
                    for t in Turn::ALL {
                        ui.selectable_value(&mut s.turn, t, t.name());
                    }
                })
                .response
                .on_hover_text(
                    "Also use the photo's patches turned upside down: the other end of a shadow \
                     or a round shape, where the hole hides one end. Auto uses them where the \
                     photo around the hole looks alike either way up, and leaves them out where \
                     it has an up and a down (light from above, sky over ground), which turned \
                     patches would bring in the wrong way up.",
                );
        }
    } else if s.operator == OperatorChoice::Deblur && eps {
        // The hybrids are a fill's layout: a deblur with them runs on the patches alone.
        use crate::restore::Prior;
        let shown = if s.prior.uses_patches() {
            Prior::Patch
        } else {
            Prior::Network
        };
        egui::ComboBox::from_label("prior")
            .selected_text(shown.label())
            .show_ui(ui, |ui| {
                for p in [Prior::Patch, Prior::Network] {
                    if ui.selectable_label(shown == p, p.label()).clicked() {
                        s.prior = p;
                    }
                }
            })
            .response
            .on_hover_text(
                "What the sharp detail comes from. The photo's own patches: a copy of the photo \
                 shrunk until the blur is under a pixel, sampled exactly with no network; clean \
                 and sharp, slower, on the CPU. The trained network: faster, with more grain. \
                 The instant preview is the network's either way.",
            );
    }
    if keep_out_ignored {
        ui.label(
            egui::RichText::new(format!(
                "The keep-out area is not used by {} with {}: only fills made of the photo's own patches take one.",
                s.method.label(),
                s.prior.label()
            ))
            .color(ui.visuals().warn_fg_color),
        );
    }
    if s.method != MethodChoice::EpsMean {
        ui.add(
            egui::Slider::new(&mut s.steps, 1..=1000)
                .logarithmic(true)
                .text("steps (NFE)"),
        );
    }
    ui.add(egui::Slider::new(&mut s.sigma_y, 0.0..=0.3).text("σ_y (noise)"));
    ui.horizontal(|ui| {
        let l = ui.label("seed");
        ui.add(egui::DragValue::new(&mut s.seed)).labelled_by(l.id);
        let l = ui.label("samples");
        ui.add(egui::DragValue::new(&mut s.samples).range(1..=16))
            .labelled_by(l.id);
    });
    ui.add(egui::Slider::new(&mut s.work_side, 64..=1024).text("working size (px)"))
        .on_hover_text(
            "Longest side the network sees at once; larger is slower and uses more memory.",
        );
    ui.checkbox(&mut s.live_preview, "Instant preview while painting");
    let mut backend = s.backend;
    egui::ComboBox::from_label("compute")
        .selected_text(backend.label())
        .show_ui(ui, |ui| {
            for b in crate::backend::BackendChoice::ALL {
                ui.selectable_value(&mut backend, b, b.label());
            }
        })
        .response
        .on_hover_text("Automatic uses CUDA, then a GPU through wgpu (pivot and sampler arithmetic), then the CPU.");
    if backend != app.settings.backend {
        app.set_backend(backend);
    }

    ui.separator();
    let restoring = app.is_restoring();
    ui.horizontal(|ui| {
        if ui
            .add_enabled(!restoring, egui::Button::new("Restore"))
            .on_hover_text("Ctrl+Enter")
            .clicked()
        {
            app.start(JobKind::Restore);
        }
        if ui
            .add_enabled(
                !restoring && app.has_results(),
                egui::Button::new("Resample"),
            )
            .on_hover_text("More samples with new seeds (Shift+R)")
            .clicked()
        {
            app.start(JobKind::Resample);
        }
        if ui
            .add_enabled(app.running.is_some(), egui::Button::new("Cancel"))
            .clicked()
        {
            app.cancel();
        }
    });
    // What Restore will cost (timings change from run to run: left out of snapshots).
    if !app.hide_timings
        && let Some(label) = app.estimate_label()
    {
        ui.label(egui::RichText::new(label).weak())
            .on_hover_text("Estimated from the photo, the mask and the settings, before any work; jobs longer than 10 min ask first, jobs beyond the free memory are refused.");
    }

    ui.separator();
    ui.heading("Export");
    let s = &mut app.settings;
    ui.horizontal(|ui| {
        ui.selectable_value(&mut s.save_format, SaveChoice::SameAsInput, "same as input");
        ui.selectable_value(&mut s.save_format, SaveChoice::Png, "PNG");
        ui.selectable_value(&mut s.save_format, SaveChoice::Jpeg, "JPEG");
    });
    ui.add(egui::Slider::new(&mut s.jpeg_quality, 50..=100).text("JPEG quality"));
}

fn kernel_thumbnail(ui: &mut egui::Ui, blur: &crate::restore::BlurSpec) {
    let Ok(k) = blur.kernel() else {
        return;
    };
    let size = 64.0;
    let (rect, _) = ui.allocate_exact_size(egui::vec2(size, size), egui::Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 2.0, egui::Color32::BLACK);
    let max = k
        .values()
        .iter()
        .copied()
        .fold(0.0_f64, f64::max)
        .max(1e-12);
    let cell = size / k.height().max(k.width()) as f32;
    for r in 0..k.height() {
        for c in 0..k.width() {
            let v = (k.values()[r * k.width() + c] / max) as f32;
            let g = (v.sqrt() * 255.0) as u8;
            let min = rect.min + egui::vec2(c as f32 * cell, r as f32 * cell);
            painter.rect_filled(
                egui::Rect::from_min_size(min, egui::vec2(cell, cell)),
                0.0,
                egui::Color32::from_gray(g),
            );
        }
    }
    ui.label(format!("kernel {}×{}", k.height(), k.width()));
}

/// The samples, their residuals and the comparison controls.
pub fn gallery_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    ui.heading("View");
    let modes = super::available_modes(app);
    ui.horizontal_wrapped(|ui| {
        for (mode, label) in modes {
            ui.selectable_value(&mut app.mode, mode, label);
        }
    });
    let mut wipe_on = app.wipe.is_some();
    if ui
        .checkbox(&mut wipe_on, "A/B wipe (measurement | result)")
        .changed()
    {
        app.wipe = wipe_on.then_some(0.5);
    }
    if let Some(w) = app.wipe.as_mut() {
        ui.add(
            egui::Slider::new(w, 0.0..=1.0)
                .show_value(false)
                .text("wipe"),
        );
    }
    ui.label("Hold Tab to see the measurement.");

    let Some(results) = app.results.as_mut() else {
        ui.separator();
        ui.label("No samples yet. Restore draws posterior samples; each is a plausible answer.");
        return;
    };
    ui.separator();
    ui.heading(format!("Samples ({})", results.samples.len()));
    if app.hide_timings {
        ui.label(format!("{} · {} NFE", results.problem.method, results.nfe));
    } else {
        ui.label(format!(
            "{} · {} NFE · {:.1} s",
            results.problem.method, results.nfe, results.seconds
        ));
    }
    if let Some(p) = results.mean_psnr {
        ui.label(format!("mean PSNR {p:.2} dB"));
    }
    let mut pick = None;
    for (i, s) in results.samples.iter().enumerate() {
        let selected = i == results.selected;
        ui.horizontal(|ui| {
            if let Some(t) = &s.texture {
                let size = t.size_vec2();
                let scale = 64.0 / size.x.max(size.y);
                let resp = ui.add(
                    egui::Image::new((t.id(), size * scale))
                        .alt_text(format!("sample with seed {}", s.seed))
                        .sense(egui::Sense::click()),
                );
                if resp.clicked() {
                    pick = Some(i);
                }
            }
            ui.vertical(|ui| {
                let label = format!("{} seed {}", if selected { ">" } else { " " }, s.seed);
                if ui.selectable_label(selected, label).clicked() {
                    pick = Some(i);
                }
                let ok = s.residual.rms <= 1.5 * results.problem.sigma_y.max(1e-6);
                let text = format!(
                    "residual {:.3} (σ_y {:.3})",
                    s.residual.rms, results.problem.sigma_y
                );
                if ok {
                    ui.label(text);
                } else {
                    ui.colored_label(ui.visuals().warn_fg_color, text)
                        .on_hover_text(
                            "Far above σ_y: this sample does not explain the measurement well.",
                        );
                }
                match (s.psnr, s.lpips) {
                    (Some(p), Some(l)) => {
                        ui.label(format!("PSNR {p:.2} dB · LPIPS {l:.3}"))
                            .on_hover_text("Against the clean photo. LPIPS (AlexNet, v0.1): lower is closer; 0 is identical.");
                    }
                    (Some(p), None) => {
                        ui.label(format!("PSNR {p:.2} dB"));
                    }
                    _ => {}
                }
            });
        });
    }
    if let Some(i) = pick {
        results.selected = i;
        if matches!(app.mode, ViewMode::Mean | ViewMode::Uncertainty) {
            app.mode = ViewMode::Result;
        }
    }
}

/// Progress of the running job, or the status line.
pub fn progress_ui(ui: &mut egui::Ui, app: &mut EpsApp) {
    ui.horizontal(|ui| {
        if let Some(r) = &app.running {
            let eta = r.step_secs * r.at.steps_left() as f64;
            let what = match r.kind {
                JobKind::Preview => "preview",
                JobKind::Restore => "restoring",
                JobKind::Resample => "resampling",
            };
            ui.add(
                egui::ProgressBar::new(r.at.fraction() as f32)
                    .desired_width(260.0)
                    .text(format!("{what}: {}", r.at)),
            );
            ui.label(format!(
                "{:.2} s/step · ETA {:.0} s · {}",
                r.step_secs, eta, r.problem.method
            ));
            if ui.button("Cancel").clicked() {
                app.cancel();
            }
        } else if let Some(p) = &app.photo {
            ui.label(format!(
                "{}×{} · {}",
                p.width(),
                p.height(),
                p.path
                    .as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            if let Some(m) = &app.masks {
                ui.label(format!("mask {} px", m.hole().count()));
                let kept = m.keep_out().count();
                if kept > 0 {
                    ui.label(format!("keep-out {kept} px"));
                }
            }
        } else {
            ui.label("Open a photo: File > Open (Ctrl+O) or drop it on the window.");
        }
        if !app.hide_timings {
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(format!("UI {:.1} ms", app.frame_ms));
            });
        }
    });
}
