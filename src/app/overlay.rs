//! The mask overlay: a translucent texture over the photo where the mask fills, or only its
//! outline once a fill preview sits underneath (so the preview can be seen while painting). A
//! brush stroke re-uploads only the rectangle it touched, so painting on a large photo costs what
//! the brush covers, not a whole 2048-pixel texture per frame.

use eframe::egui;

use super::document::{Layer, MaskChange, MaskLayer, PixelRect};
use super::logic::display_size;
use super::{DISPLAY_MAX_SIDE, Shown};

/// How the mask is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskStyle {
    /// Translucent colour over every masked pixel.
    #[default]
    Fill,
    /// An opaque line along the mask's edge, the inside left clear.
    Outline,
}

/// The colour a mask is drawn in (its outline; its fill is this, translucent): the hole red,
/// the keep-out area blue.
pub fn layer_colour(layer: Layer) -> egui::Color32 {
    match layer {
        Layer::Hole => egui::Color32::from_rgb(255, 40, 90),
        Layer::KeepOut => egui::Color32::from_rgb(40, 150, 255),
    }
}

/// The overlay's colour where the mask fills.
fn fill_colour(layer: Layer) -> egui::Color32 {
    let c = layer_colour(layer);
    egui::Color32::from_rgba_unmultiplied(c.r(), c.g(), c.b(), 120)
}

/// Texture pixels within this distance (in texture pixels, square neighbourhood) of an unmasked
/// one draw the outline: two pixels, so it stays visible when the view shrinks the texture.
const OUTLINE_WIDTH: usize = 2;

/// The texture pixels `rect` (texture coordinates) of `mask` shown at `size`; each texture pixel
/// shows the mask pixel its top-left corner falls on.
fn overlay_pixels(
    mask: &MaskLayer,
    layer: Layer,
    size: [usize; 2],
    rect: PixelRect,
    style: MaskStyle,
) -> egui::ColorImage {
    let (w, h) = (mask.width, mask.height);
    let [dw, dh] = size;
    let fill = mask.fill();
    let sample = |x: usize, y: usize| fill[(y * h / dh).min(h - 1) * w + (x * w / dw).min(w - 1)];
    let (rw, rh) = (rect.x1 - rect.x0, rect.y1 - rect.y0);
    let mut pixels = vec![egui::Color32::TRANSPARENT; rw * rh];
    for (row, y) in pixels.chunks_exact_mut(rw.max(1)).zip(rect.y0..rect.y1) {
        for (px, x) in row.iter_mut().zip(rect.x0..rect.x1) {
            if !sample(x, y) {
                continue;
            }
            *px = match style {
                MaskStyle::Fill => fill_colour(layer),
                MaskStyle::Outline => {
                    let r = OUTLINE_WIDTH;
                    let edge = x < r
                        || y < r
                        || x + r >= dw
                        || y + r >= dh
                        || (y - r..=y + r).any(|yy| (x - r..=x + r).any(|xx| !sample(xx, yy)));
                    if edge {
                        layer_colour(layer)
                    } else {
                        continue;
                    }
                }
            };
        }
    }
    egui::ColorImage::new([rw, rh], pixels)
}

/// The texture pixels showing a change to mask pixels `r`: every texture pixel whose sample
/// (`x · w / dw`) lands in `r`, or `None` when none does.
fn texture_rect(r: PixelRect, (w, h): (usize, usize), [dw, dh]: [usize; 2]) -> Option<PixelRect> {
    // floor(x · w / dw) ≥ x0  ⇔  x ≥ ⌈x0 · dw / w⌉, and the same for the end.
    let rect = PixelRect {
        x0: (r.x0 * dw).div_ceil(w),
        y0: (r.y0 * dh).div_ceil(h),
        x1: (r.x1 * dw).div_ceil(w).min(dw),
        y1: (r.y1 * dh).div_ceil(h).min(dh),
    };
    (rect.x0 < rect.x1 && rect.y0 < rect.y1).then_some(rect)
}

/// The overlay texture of one mask.
pub struct MaskOverlay {
    /// The texture, for drawing.
    pub shown: Shown,
    layer: Layer,
    size: [usize; 2],
    style: MaskStyle,
}

impl MaskOverlay {
    /// Uploads the whole mask, drawn in `layer`'s colour.
    pub fn new(ctx: &egui::Context, mask: &mut MaskLayer, layer: Layer) -> Self {
        mask.take_changed();
        let (size, _) = display_size(mask.width, mask.height, DISPLAY_MAX_SIDE);
        let style = MaskStyle::default();
        let image = overlay_pixels(mask, layer, size, Self::whole(size), style);
        let name = match layer {
            Layer::Hole => "mask",
            Layer::KeepOut => "keep-out",
        };
        Self {
            shown: Shown {
                texture: ctx.load_texture(name, image, egui::TextureOptions::NEAREST),
                width: mask.width,
                height: mask.height,
            },
            layer,
            size,
            style,
        }
    }

    fn whole([dw, dh]: [usize; 2]) -> PixelRect {
        PixelRect {
            x0: 0,
            y0: 0,
            x1: dw,
            y1: dh,
        }
    }

    /// The style the texture currently shows.
    #[cfg(test)]
    pub fn style(&self) -> MaskStyle {
        self.style
    }

    /// Brings the texture up to date with what changed in `mask` since the last call, drawn in
    /// `style` (a change of style redraws everything).
    pub fn refresh(&mut self, mask: &mut MaskLayer, style: MaskStyle) {
        debug_assert_eq!(
            (self.shown.width, self.shown.height),
            (mask.width, mask.height)
        );
        if style != self.style {
            self.style = style;
            mask.take_changed();
            self.rebuild(mask);
            return;
        }
        match mask.take_changed() {
            MaskChange::Nothing => {}
            MaskChange::Region(r) => {
                if let Some(rect) = texture_rect(r, (mask.width, mask.height), self.size) {
                    // An outline also changes just outside what was painted.
                    let rect = match style {
                        MaskStyle::Fill => rect,
                        MaskStyle::Outline => PixelRect {
                            x0: rect.x0.saturating_sub(OUTLINE_WIDTH),
                            y0: rect.y0.saturating_sub(OUTLINE_WIDTH),
                            x1: (rect.x1 + OUTLINE_WIDTH).min(self.size[0]),
                            y1: (rect.y1 + OUTLINE_WIDTH).min(self.size[1]),
                        },
                    };
                    let patch = overlay_pixels(mask, self.layer, self.size, rect, style);
                    self.shown.texture.set_partial(
                        [rect.x0, rect.y0],
                        patch,
                        egui::TextureOptions::NEAREST,
                    );
                }
            }
            MaskChange::Everything => self.rebuild(mask),
        }
    }

    /// Uploads the whole texture again.
    fn rebuild(&mut self, mask: &MaskLayer) {
        let image = overlay_pixels(
            mask,
            self.layer,
            self.size,
            Self::whole(self.size),
            self.style,
        );
        self.shown.texture.set(image, egui::TextureOptions::NEAREST);
    }
}

/// What painting costs on one large mask ([`bench_mask_editing`]).
#[derive(Debug, Clone)]
pub struct MaskEditingCosts {
    /// Mask size.
    pub width: usize,
    /// Mask size.
    pub height: usize,
    /// Overlay texture size.
    pub texture: [usize; 2],
    /// One painted frame (a 10-pixel brush segment) and its overlay refresh, median seconds.
    pub stroke_frame: f64,
    /// Texture pixels uploaded for that frame.
    pub stroke_upload_px: usize,
    /// The same frame with the whole overlay rebuilt and uploaded, median seconds.
    pub rebuild_frame: f64,
    /// One undo step recorded (at the start of a stroke), median seconds.
    pub checkpoint: f64,
    /// Bytes held by a full undo history of strokes.
    pub history_bytes: usize,
    /// Undo steps in that history.
    pub history_steps: usize,
}

/// Measures painting on a `width × height` mask: a brush segment with the overlay refreshed
/// where it landed against a whole rebuild, recording an undo step, and what a full undo
/// history of strokes holds. CPU work only: the renderer's upload is not timed.
pub fn bench_mask_editing(width: usize, height: usize, repeats: usize) -> MaskEditingCosts {
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let ctx = egui::Context::default();
    let mut mask = MaskLayer::new(width, height);
    let mut overlay = MaskOverlay::new(&ctx, &mut mask, Layer::Hole);
    ctx.tex_manager().write().take_delta().clear(); // the first, whole upload
    let (w, h) = (width as f32, height as f32);
    let radius = w.max(h) / 150.0;
    let segment = |k: usize| {
        let x = 0.1 * w + (10 * k) as f32 % (0.8 * w);
        let y = 0.2 * h + 0.6 * h * ((k / 50) % 7) as f32 / 7.0;
        ((x, y), (x + 10.0, y + 3.0))
    };
    let repeats = repeats.max(1);
    let (mut stroke, mut rebuild, mut checkpoint) = (Vec::new(), Vec::new(), Vec::new());
    let mut stroke_upload_px = 0;
    for k in 0..repeats * 10 {
        let (a, b) = segment(k);
        let t = std::time::Instant::now();
        mask.paint_segment(a, b, radius, true);
        overlay.refresh(&mut mask, MaskStyle::Fill);
        stroke.push(t.elapsed().as_secs_f64());
        let mut delta = ctx.tex_manager().write().take_delta();
        stroke_upload_px = stroke_upload_px.max(
            delta
                .set
                .values()
                .flatten()
                .map(|d| d.image.size()[0] * d.image.size()[1])
                .sum(),
        );
        delta.clear();
    }
    for k in 0..repeats {
        let (a, b) = segment(k);
        let t = std::time::Instant::now();
        mask.paint_segment(a, b, radius, false);
        overlay.rebuild(&mask);
        mask.take_changed();
        rebuild.push(t.elapsed().as_secs_f64());
        ctx.tex_manager().write().take_delta().clear();
        let t = std::time::Instant::now();
        mask.checkpoint();
        checkpoint.push(t.elapsed().as_secs_f64());
    }
    // A full history: one undo step per stroke, each stroke a few segments.
    let mut history = MaskLayer::new(width, height);
    for k in 0..super::document::UNDO_DEPTH {
        history.checkpoint();
        for s in 0..20 {
            let (a, b) = segment(k * 50 + s);
            history.paint_segment(a, b, radius, true);
        }
    }
    MaskEditingCosts {
        width,
        height,
        texture: overlay.size,
        stroke_frame: median(stroke),
        stroke_upload_px,
        rebuild_frame: median(rebuild),
        checkpoint: median(checkpoint),
        history_bytes: history.history_bytes(),
        history_steps: history.undo_steps(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rand::{Rng as _, SeedableRng as _};

    /// Applies the uploads egui queued for the overlay's texture to `image` (what a renderer
    /// would do), and returns the number of pixels uploaded.
    fn apply_uploads(
        ctx: &egui::Context,
        overlay: &MaskOverlay,
        image: &mut Option<egui::ColorImage>,
    ) -> usize {
        let mut delta = ctx.tex_manager().write().take_delta();
        let mut uploaded = 0;
        let mine = delta.set.remove(&overlay.shown.texture.id());
        delta.clear(); // the font atlas
        for d in mine.into_iter().flatten() {
            let egui::ImageData::Color(patch) = d.image;
            uploaded += patch.pixels.len();
            match d.pos {
                None => *image = Some((*patch).clone()),
                Some([px, py]) => {
                    let img = image.as_mut().unwrap();
                    let [pw, _] = patch.size;
                    for (i, c) in patch.pixels.iter().enumerate() {
                        let (x, y) = (px + i % pw, py + i / pw);
                        img.pixels[y * img.size[0] + x] = *c;
                    }
                }
            }
        }
        uploaded
    }

    #[test]
    fn partial_uploads_equal_a_full_rebuild() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Shown at full size, and shrunk to 2048 on the long side (non-integer scale); filled
        // and outlined.
        for ((w, h), style) in [
            ((300, 200), MaskStyle::Fill),
            ((3001, 1999), MaskStyle::Fill),
            ((300, 200), MaskStyle::Outline),
            ((3001, 1999), MaskStyle::Outline),
        ] {
            let ctx = egui::Context::default();
            let mut mask = MaskLayer::new(w, h);
            let mut overlay = MaskOverlay::new(&ctx, &mut mask, Layer::Hole);
            let mut shown = None;
            let full = apply_uploads(&ctx, &overlay, &mut shown);
            assert_eq!(full, overlay.size[0] * overlay.size[1]);
            overlay.refresh(&mut mask, style);
            apply_uploads(&ctx, &overlay, &mut shown);
            assert_eq!(overlay.style(), style);
            for k in 0..30 {
                let point = |rng: &mut rand::rngs::StdRng| {
                    (
                        rng.random_range(-20.0..w as f32 + 20.0),
                        rng.random_range(-20.0..h as f32 + 20.0),
                    )
                };
                let (a, b) = (point(&mut rng), point(&mut rng));
                let radius = rng.random_range(0.5..(w as f32 / 40.0));
                match k % 6 {
                    5 => mask.fill_rect(a, b, k % 4 != 0),
                    _ => mask.paint_segment(a, b, radius, k % 3 != 0),
                }
                if k == 20 {
                    mask.checkpoint();
                    mask.invert();
                }
                if k == 21 {
                    mask.undo();
                }
                overlay.refresh(&mut mask, style);
                let uploaded = apply_uploads(&ctx, &overlay, &mut shown);
                if !matches!(k, 20 | 21) {
                    assert!(uploaded < full, "stroke {k} uploaded the whole texture");
                }
                let expected = overlay_pixels(
                    &mask,
                    Layer::Hole,
                    overlay.size,
                    MaskOverlay::whole(overlay.size),
                    style,
                );
                assert!(
                    shown.as_ref().unwrap().pixels == expected.pixels,
                    "{w}×{h} {style:?}: the texture differs from the mask after edit {k}"
                );
            }
            // Nothing changed: nothing uploaded.
            overlay.refresh(&mut mask, style);
            assert_eq!(apply_uploads(&ctx, &overlay, &mut shown), 0);
        }
    }

    /// The outline leaves the inside of a painted region clear (the preview shows through) and
    /// marks its edge.
    #[test]
    fn the_outline_shows_the_edge_and_leaves_the_inside_clear() {
        let mut mask = MaskLayer::new(100, 80);
        mask.fill_rect((20.0, 20.0), (60.0, 50.0), true);
        let size = [100, 80];
        let whole = MaskOverlay::whole(size);
        let img = overlay_pixels(&mask, Layer::KeepOut, size, whole, MaskStyle::Outline);
        let at = |x: usize, y: usize| img.pixels[y * 100 + x];
        assert_eq!(at(40, 35), egui::Color32::TRANSPARENT, "inside");
        assert_eq!(at(5, 5), egui::Color32::TRANSPARENT, "outside");
        let fill = mask.fill();
        let first = (0..100 * 80).find(|&i| fill[i]).unwrap_or(0);
        assert_eq!(
            at(first % 100, first / 100),
            layer_colour(Layer::KeepOut),
            "edge"
        );
        let filled = overlay_pixels(&mask, Layer::Hole, size, whole, MaskStyle::Fill);
        assert_eq!(filled.pixels[35 * 100 + 40], fill_colour(Layer::Hole));
        assert_ne!(
            layer_colour(Layer::Hole),
            layer_colour(Layer::KeepOut),
            "the two masks are told apart on screen"
        );
    }

    #[test]
    fn the_mask_benchmark_measures_partial_uploads_and_a_compact_history() {
        let c = bench_mask_editing(3000, 2000, 1);
        assert_eq!(c.texture, [2048, 1365]);
        assert!(
            c.stroke_upload_px > 0 && c.stroke_upload_px < 2048 * 1365 / 100,
            "{} px uploaded for one brush segment",
            c.stroke_upload_px
        );
        assert_eq!(c.history_steps, crate::app::document::UNDO_DEPTH);
        assert!(c.history_bytes < c.history_steps * 3000 * 2000 / 8);
        assert!(c.stroke_frame.is_finite() && c.rebuild_frame.is_finite());
    }

    #[test]
    fn a_change_between_samples_uploads_nothing() {
        // 4096 → 2048: texture pixel x shows mask pixel 2x, so a change to odd columns only is
        // invisible at this zoom.
        let r = PixelRect {
            x0: 5,
            y0: 4,
            x1: 6,
            y1: 7,
        };
        assert_eq!(texture_rect(r, (4096, 4096), [2048, 2048]), None);
        let r = PixelRect { x0: 4, ..r };
        assert_eq!(
            texture_rect(r, (4096, 4096), [2048, 2048]),
            Some(PixelRect {
                x0: 2,
                y0: 2,
                x1: 3,
                y1: 4
            })
        );
    }
}
