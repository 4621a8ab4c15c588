//! The open document: the photo, the painted mask with undo/redo, and the autosave that keeps
//! painted work safe across a crash.

use std::path::{Path, PathBuf};

use crate::photo::{self, Photo};

/// Undo steps kept (each is one full mask snapshot).
const UNDO_DEPTH: usize = 40;

/// An inpainting mask (`true` = fill) with undo and redo.
#[derive(Debug, Clone)]
pub struct MaskLayer {
    /// Width in photo pixels.
    pub width: usize,
    /// Height in photo pixels.
    pub height: usize,
    fill: Vec<bool>,
    undo: Vec<Vec<bool>>,
    redo: Vec<Vec<bool>>,
    /// Bumped on every change, so views know when to refresh.
    pub revision: u64,
}

impl MaskLayer {
    /// An empty mask.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            fill: vec![false; width * height],
            undo: Vec::new(),
            redo: Vec::new(),
            revision: 0,
        }
    }

    /// The mask, row-major.
    pub fn fill(&self) -> &[bool] {
        &self.fill
    }

    /// Number of pixels to fill.
    pub fn count(&self) -> usize {
        self.fill.iter().filter(|&&f| f).count()
    }

    /// Whether nothing is painted.
    pub fn is_empty(&self) -> bool {
        !self.fill.iter().any(|&f| f)
    }

    /// Records the current mask as an undo step (call before an edit begins).
    pub fn checkpoint(&mut self) {
        self.undo.push(self.fill.clone());
        if self.undo.len() > UNDO_DEPTH {
            self.undo.remove(0);
        }
        self.redo.clear();
    }

    /// Whether there is something to undo.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Whether there is something to redo.
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Restores the previous mask; the mask stays visible.
    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(std::mem::replace(&mut self.fill, prev));
                self.revision += 1;
                true
            }
            None => false,
        }
    }

    /// Re-applies an undone edit.
    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(std::mem::replace(&mut self.fill, next));
                self.revision += 1;
                true
            }
            None => false,
        }
    }

    /// Paints (or erases, `value = false`) a round brush along the segment `a → b` (image
    /// pixels, where pixel `(x, y)` covers `[x, x + 1) × [y, y + 1)`).
    pub fn paint_segment(&mut self, a: (f32, f32), b: (f32, f32), radius: f32, value: bool) {
        // The rasteriser puts pixel centres at integer coordinates.
        let centre = |p: (f32, f32)| (f64::from(p.0) - 0.5, f64::from(p.1) - 0.5);
        let fill = &mut self.fill;
        let mut changed = false;
        crate::inverse::masks::segment_pixels(
            self.height,
            self.width,
            centre(a),
            centre(b),
            f64::from(radius.max(0.5)),
            |i| {
                changed |= fill[i] != value;
                fill[i] = value;
            },
        );
        if changed {
            self.revision += 1;
        }
    }

    /// Fills (or clears) a rectangle given by two corners in image pixels.
    pub fn fill_rect(&mut self, a: (f32, f32), b: (f32, f32), value: bool) {
        let clamp_x = |v: f32| (v.max(0.0) as usize).min(self.width);
        let clamp_y = |v: f32| (v.max(0.0) as usize).min(self.height);
        let (x0, x1) = (clamp_x(a.0.min(b.0)), clamp_x(a.0.max(b.0).ceil()));
        let (y0, y1) = (clamp_y(a.1.min(b.1)), clamp_y(a.1.max(b.1).ceil()));
        for y in y0..y1 {
            self.fill[y * self.width + x0..y * self.width + x1].fill(value);
        }
        self.revision += 1;
    }

    /// Clears the mask (an undo step).
    pub fn clear(&mut self) {
        self.checkpoint();
        self.fill.fill(false);
        self.revision += 1;
    }

    /// Inverts the mask (an undo step).
    pub fn invert(&mut self) {
        self.checkpoint();
        self.fill.iter_mut().for_each(|f| *f = !*f);
        self.revision += 1;
    }

    /// Replaces the mask (an undo step), e.g. after importing a mask file.
    pub fn replace(&mut self, fill: Vec<bool>) {
        debug_assert_eq!(fill.len(), self.width * self.height);
        self.checkpoint();
        self.fill = fill;
        self.revision += 1;
    }
}

/// What autosave keeps: enough to reopen the document where it was left.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AutosaveRecord {
    /// The photo's path.
    pub photo: PathBuf,
    /// The mask file next to this record.
    pub mask: Option<String>,
}

/// Autosave files in `dir`: `document.json` and `mask.png`, each written atomically.
#[derive(Debug, Clone)]
pub struct Autosave {
    dir: PathBuf,
}

impl Autosave {
    /// Autosave into `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves the document.
    pub fn save(&self, photo_path: &Path, mask: &MaskLayer) -> crate::Result<()> {
        let mask_name = if mask.is_empty() {
            None
        } else {
            let png = photo::mask_png(mask.fill(), mask.width, mask.height)?;
            crate::fsutil::write_atomic(&self.dir.join("mask.png"), &png)?;
            Some("mask.png".to_owned())
        };
        let record = AutosaveRecord {
            photo: photo_path.to_owned(),
            mask: mask_name,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| {
            crate::Error::Unsupported(format!("cannot write the autosave record: {e}"))
        })?;
        crate::fsutil::write_atomic(&self.dir.join("document.json"), &json)
    }

    /// Forgets the document (after the user closes it on purpose).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(self.dir.join("document.json"));
        let _ = std::fs::remove_file(self.dir.join("mask.png"));
    }

    /// The saved document, if one exists and its photo still loads.
    pub fn load(&self) -> Option<(Photo, Option<Vec<bool>>)> {
        let bytes = std::fs::read(self.dir.join("document.json")).ok()?;
        let record: AutosaveRecord = serde_json::from_slice(&bytes).ok()?;
        let photo = photo::load(&record.photo).ok()?;
        let mask = record
            .mask
            .and_then(|m| photo::load_mask(&self.dir.join(m), photo.width(), photo.height()).ok());
        Some((photo, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undo_redo_round_trip_keeps_the_mask() {
        let mut m = MaskLayer::new(20, 10);
        m.checkpoint();
        m.paint_segment((2.0, 2.0), (10.0, 2.0), 1.5, true);
        let painted = m.fill().to_vec();
        assert!(m.count() > 10);
        m.checkpoint();
        m.paint_segment((4.0, 2.0), (6.0, 2.0), 1.5, false);
        assert!(m.count() < painted.iter().filter(|&&b| b).count());
        assert!(m.undo());
        assert_eq!(m.fill(), painted.as_slice());
        assert!(m.undo());
        assert!(m.is_empty());
        assert!(!m.undo());
        assert!(m.redo());
        assert_eq!(m.fill(), painted.as_slice());
    }

    #[test]
    fn rect_invert_clear() {
        let mut m = MaskLayer::new(10, 10);
        m.fill_rect((2.0, 3.0), (5.0, 6.0), true);
        assert_eq!(m.count(), 9);
        m.invert();
        assert_eq!(m.count(), 91);
        m.clear();
        assert!(m.is_empty());
        assert!(m.undo());
        assert_eq!(m.count(), 91);
    }
}
