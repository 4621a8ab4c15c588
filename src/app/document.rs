//! The open document: the photo, the painted masks (the hole and the keep-out area) with one
//! undo history, and the autosave that keeps painted work safe across a crash.

use std::path::{Path, PathBuf};

use crate::photo::{self, Photo};

/// Undo steps kept.
pub const UNDO_DEPTH: usize = 40;

/// A rectangle of mask pixels, half-open: `x0..x1 × y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelRect {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// One past the last column.
    pub x1: usize,
    /// One past the last row.
    pub y1: usize,
}

impl PixelRect {
    /// The smallest rectangle holding both.
    fn union(self, other: Self) -> Self {
        Self {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

/// What changed in a mask since a view last asked ([`MaskLayer::take_changed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskChange {
    /// Nothing.
    Nothing,
    /// Only pixels inside this rectangle.
    Region(PixelRect),
    /// Possibly every pixel (undo, redo, invert, clear, import).
    Everything,
}

impl MaskChange {
    fn add(&mut self, rect: PixelRect) {
        *self = match *self {
            Self::Nothing => Self::Region(rect),
            Self::Region(r) => Self::Region(r.union(rect)),
            Self::Everything => Self::Everything,
        };
    }
}

/// One undo step: a whole mask, stored as run lengths (a painted mask is a few runs per row, so a
/// 24-megapixel mask with a dozen strokes takes kilobytes) or bit-packed when that is smaller
/// (noise-like masks). A step never takes more than one bit per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Snapshot {
    /// Alternating run lengths, starting with a (possibly empty) run of `false`.
    Runs(Vec<u32>),
    /// One bit per pixel, least significant bit first.
    Bits(Vec<u64>),
}

impl Snapshot {
    fn encode(fill: &[bool]) -> Self {
        let words = fill.len().div_ceil(64);
        // Runs cost 4 bytes each, bits 8 bytes per 64 pixels: stop counting runs once they
        // would be the larger.
        let max_runs = 2 * words;
        if u32::try_from(fill.len()).is_ok() {
            let mut runs = Vec::new();
            let (mut at, mut value) = (0, false);
            while at < fill.len() && runs.len() < max_runs {
                let len = fill[at..]
                    .iter()
                    .position(|&f| f != value)
                    .unwrap_or(fill.len() - at);
                runs.push(len as u32);
                at += len;
                value = !value;
            }
            if at == fill.len() {
                return Self::Runs(runs);
            }
        }
        let mut bits = vec![0u64; words];
        for (i, _) in fill.iter().enumerate().filter(|(_, f)| **f) {
            bits[i / 64] |= 1 << (i % 64);
        }
        Self::Bits(bits)
    }

    fn decode(&self, len: usize) -> Vec<bool> {
        match self {
            Self::Runs(runs) => {
                let mut fill = Vec::with_capacity(len);
                let mut value = false;
                for &run in runs {
                    fill.resize(fill.len() + run as usize, value);
                    value = !value;
                }
                debug_assert_eq!(fill.len(), len);
                fill.resize(len, false);
                fill
            }
            Self::Bits(bits) => (0..len)
                .map(|i| (bits[i / 64] >> (i % 64)) & 1 == 1)
                .collect(),
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        match self {
            Self::Runs(r) => r.len() * size_of::<u32>(),
            Self::Bits(b) => b.len() * size_of::<u64>(),
        }
    }
}

/// An inpainting mask (`true` = fill) with undo and redo.
#[derive(Debug, Clone)]
pub struct MaskLayer {
    /// Width in photo pixels.
    pub width: usize,
    /// Height in photo pixels.
    pub height: usize,
    fill: Vec<bool>,
    /// Pixels of `fill` that are set, kept up to date by every edit: the panels ask for it
    /// every frame, and a 24-megapixel mask should not be counted that often.
    painted: usize,
    undo: Vec<Snapshot>,
    redo: Vec<Snapshot>,
    /// Bumped on every change, so views know when to refresh.
    pub revision: u64,
    changed: MaskChange,
}

impl MaskLayer {
    /// An empty mask.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            fill: vec![false; width * height],
            painted: 0,
            undo: Vec::new(),
            redo: Vec::new(),
            revision: 0,
            changed: MaskChange::Everything,
        }
    }

    /// The mask, row-major.
    pub fn fill(&self) -> &[bool] {
        &self.fill
    }

    /// Number of pixels to fill.
    pub fn count(&self) -> usize {
        self.painted
    }

    /// Whether nothing is painted.
    pub fn is_empty(&self) -> bool {
        self.painted == 0
    }

    /// What changed since the last call (a new mask counts as [`MaskChange::Everything`]), so a
    /// view can refresh only that part.
    pub fn take_changed(&mut self) -> MaskChange {
        std::mem::replace(&mut self.changed, MaskChange::Nothing)
    }

    fn changed_everything(&mut self) {
        self.painted = self.fill.iter().filter(|&&f| f).count();
        self.changed = MaskChange::Everything;
        self.revision += 1;
    }

    /// Records the current mask as an undo step (call before an edit begins).
    pub fn checkpoint(&mut self) {
        self.undo.push(Snapshot::encode(&self.fill));
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

    /// Undo steps held.
    pub fn undo_steps(&self) -> usize {
        self.undo.len()
    }

    /// Bytes held by the undo and redo steps.
    pub fn history_bytes(&self) -> usize {
        self.undo
            .iter()
            .chain(&self.redo)
            .map(Snapshot::bytes)
            .sum()
    }

    /// Restores the previous mask; the mask stays visible.
    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(prev) => {
                self.redo.push(Snapshot::encode(&self.fill));
                self.fill = prev.decode(self.fill.len());
                self.changed_everything();
                true
            }
            None => false,
        }
    }

    /// Re-applies an undone edit.
    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(next) => {
                self.undo.push(Snapshot::encode(&self.fill));
                self.fill = next.decode(self.fill.len());
                self.changed_everything();
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
        let (fill, w, painted) = (&mut self.fill, self.width, &mut self.painted);
        let mut touched: Option<PixelRect> = None;
        crate::inverse::masks::segment_pixels(
            self.height,
            self.width,
            centre(a),
            centre(b),
            f64::from(radius.max(0.5)),
            |i| {
                if fill[i] != value {
                    fill[i] = value;
                    if value {
                        *painted += 1;
                    } else {
                        *painted -= 1;
                    }
                    let (x, y) = (i % w, i / w);
                    let px = PixelRect {
                        x0: x,
                        y0: y,
                        x1: x + 1,
                        y1: y + 1,
                    };
                    touched = Some(touched.map_or(px, |t| t.union(px)));
                }
            },
        );
        if let Some(rect) = touched {
            self.changed.add(rect);
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
            let row = &mut self.fill[y * self.width + x0..y * self.width + x1];
            let set = row.iter().filter(|&&f| f).count();
            self.painted = self.painted - set + if value { row.len() } else { 0 };
            row.fill(value);
        }
        if x0 < x1 && y0 < y1 {
            self.changed.add(PixelRect { x0, y0, x1, y1 });
        }
        self.revision += 1;
    }

    /// Clears the mask (an undo step).
    pub fn clear(&mut self) {
        self.checkpoint();
        self.fill.fill(false);
        self.changed_everything();
    }

    /// Inverts the mask (an undo step).
    pub fn invert(&mut self) {
        self.checkpoint();
        self.fill.iter_mut().for_each(|f| *f = !*f);
        self.changed_everything();
    }

    /// Replaces the mask (an undo step), e.g. after importing a mask file.
    pub fn replace(&mut self, fill: Vec<bool>) {
        debug_assert_eq!(fill.len(), self.width * self.height);
        self.checkpoint();
        self.fill = fill;
        self.changed_everything();
    }

    /// Forgets the redo steps (an edit of the document's other mask made them stale).
    fn drop_redo(&mut self) {
        self.redo.clear();
    }
}

/// Which of a document's two masks the brush paints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layer {
    /// What should go: the hole the fill paints over.
    #[default]
    Hole,
    /// Where the fill must not copy from (a repeated object, say). Only fills made of the
    /// photo's own patches use it.
    KeepOut,
}

impl Layer {
    /// The name in menus and messages.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hole => "hole",
            Self::KeepOut => "keep-out area",
        }
    }
}

/// A document's two masks, the hole and the keep-out area, with one undo history across both:
/// Ctrl+Z undoes the last edit, whichever mask it was on.
///
/// Every edit goes through [`Masks::checkpoint`] (or the whole-mask edits here), so the order
/// of the edits is known.
#[derive(Debug, Clone)]
pub struct Masks {
    hole: MaskLayer,
    keep_out: MaskLayer,
    /// The mask of each undo step, oldest first: only steps both masks can still go back
    /// through, so every state undo reaches is one the user saw.
    undo: Vec<Layer>,
    /// The mask of each redo step, the next one last.
    redo: Vec<Layer>,
}

impl Masks {
    /// Two empty masks.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            hole: MaskLayer::new(width, height),
            keep_out: MaskLayer::new(width, height),
            undo: Vec::new(),
            redo: Vec::new(),
        }
    }

    /// The hole (`true` = fill).
    pub fn hole(&self) -> &MaskLayer {
        &self.hole
    }

    /// The keep-out area (`true` = the fill copies nothing from here).
    pub fn keep_out(&self) -> &MaskLayer {
        &self.keep_out
    }

    /// One of the masks.
    pub fn layer(&self, layer: Layer) -> &MaskLayer {
        match layer {
            Layer::Hole => &self.hole,
            Layer::KeepOut => &self.keep_out,
        }
    }

    /// One of the masks, to paint on after [`Self::checkpoint`] (and to refresh views of).
    pub fn layer_mut(&mut self, layer: Layer) -> &mut MaskLayer {
        match layer {
            Layer::Hole => &mut self.hole,
            Layer::KeepOut => &mut self.keep_out,
        }
    }

    /// Bumped whenever either mask changes.
    pub fn revision(&self) -> u64 {
        self.hole.revision + self.keep_out.revision
    }

    /// Records an undo step of `layer` (call before an edit of it begins).
    pub fn checkpoint(&mut self, layer: Layer) {
        self.layer_mut(layer).checkpoint();
        self.record(layer);
    }

    /// Notes that `layer` just took an undo step: the redo steps of both masks are stale now.
    fn record(&mut self, layer: Layer) {
        self.undo.push(layer);
        self.redo.clear();
        self.hole.drop_redo();
        self.keep_out.drop_redo();
        self.forget_unreachable();
    }

    /// A mask keeps its newest [`UNDO_DEPTH`] steps. Once one of them is forgotten, the steps
    /// before it cannot be gone back through either (undoing the other mask alone would show
    /// a state that never was): they are dropped from the history.
    fn forget_unreachable(&mut self) {
        let mut left = [self.hole.undo_steps(), self.keep_out.undo_steps()];
        let mut reachable = 0;
        for &layer in self.undo.iter().rev() {
            let n = match layer {
                Layer::Hole => &mut left[0],
                Layer::KeepOut => &mut left[1],
            };
            if *n == 0 {
                break;
            }
            *n -= 1;
            reachable += 1;
        }
        self.undo.drain(..self.undo.len() - reachable);
    }

    /// Whether there is something to undo.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Whether there is something to redo.
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Undoes the last edit of either mask.
    pub fn undo(&mut self) -> bool {
        match self.undo.pop() {
            Some(layer) if self.layer_mut(layer).undo() => {
                self.redo.push(layer);
                true
            }
            _ => false,
        }
    }

    /// Re-applies the last undone edit.
    pub fn redo(&mut self) -> bool {
        match self.redo.pop() {
            Some(layer) if self.layer_mut(layer).redo() => {
                self.undo.push(layer);
                true
            }
            _ => false,
        }
    }

    /// Clears one mask (an undo step).
    pub fn clear(&mut self, layer: Layer) {
        self.layer_mut(layer).clear();
        self.record(layer);
    }

    /// Inverts one mask (an undo step).
    pub fn invert(&mut self, layer: Layer) {
        self.layer_mut(layer).invert();
        self.record(layer);
    }

    /// Replaces one mask (an undo step), e.g. after importing a mask file.
    pub fn replace(&mut self, layer: Layer, fill: Vec<bool>) {
        self.layer_mut(layer).replace(fill);
        self.record(layer);
    }
}

/// What autosave keeps: enough to reopen the document where it was left.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AutosaveRecord {
    /// The photo's path.
    pub photo: PathBuf,
    /// The hole's mask file next to this record.
    pub mask: Option<String>,
    /// The keep-out area's mask file next to this record (records from before it had one
    /// have none).
    #[serde(default)]
    pub keep_out: Option<String>,
}

/// A document as autosave brought it back.
#[derive(Debug)]
pub struct Reopened {
    /// The photo.
    pub photo: Photo,
    /// The hole, when one was painted.
    pub hole: Option<Vec<bool>>,
    /// The keep-out area, when one was painted.
    pub keep_out: Option<Vec<bool>>,
}

/// Autosave files in `dir`: `document.json`, `mask.png` and `keep-out.png`, each written
/// atomically.
#[derive(Debug, Clone)]
pub struct Autosave {
    dir: PathBuf,
}

/// The file names next to the record.
const HOLE_FILE: &str = "mask.png";
const KEEP_OUT_FILE: &str = "keep-out.png";

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
    pub fn save(&self, photo_path: &Path, masks: &Masks) -> crate::Result<()> {
        let (w, h) = (masks.hole().width, masks.hole().height);
        self.save_fill(
            photo_path,
            masks.hole().fill(),
            masks.keep_out().fill(),
            w,
            h,
        )
    }

    /// Saves the document from copies of the masks' pixels (for the file thread).
    pub fn save_fill(
        &self,
        photo_path: &Path,
        hole: &[bool],
        keep_out: &[bool],
        width: usize,
        height: usize,
    ) -> crate::Result<()> {
        let write = |fill: &[bool], name: &str| -> crate::Result<Option<String>> {
            if !fill.iter().any(|&f| f) {
                return Ok(None);
            }
            let png = photo::mask_png(fill, width, height)?;
            crate::fsutil::write_atomic(&self.dir.join(name), &png)?;
            Ok(Some(name.to_owned()))
        };
        let record = AutosaveRecord {
            photo: photo_path.to_owned(),
            mask: write(hole, HOLE_FILE)?,
            keep_out: write(keep_out, KEEP_OUT_FILE)?,
        };
        let json = serde_json::to_vec_pretty(&record).map_err(|e| {
            crate::Error::Unsupported(format!("cannot write the autosave record: {e}"))
        })?;
        crate::fsutil::write_atomic(&self.dir.join("document.json"), &json)
    }

    /// Forgets the document (after the user closes it on purpose).
    pub fn clear(&self) {
        for name in ["document.json", HOLE_FILE, KEEP_OUT_FILE] {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
    }

    /// The saved document, if one exists and its photo still loads. A mask file that is
    /// missing or damaged is left out; the photo and the other mask still come back.
    pub fn load(&self) -> Option<Reopened> {
        let bytes = crate::fsutil::read_bounded(
            "autosave record",
            &self.dir.join("document.json"),
            crate::limits::MAX_SETTINGS_FILE_BYTES,
        )
        .ok()?;
        let record: AutosaveRecord = serde_json::from_slice(&bytes).ok()?;
        let photo = photo::load(&record.photo).ok()?;
        let mask = |name: Option<String>| {
            name.and_then(|m| {
                photo::load_mask(&self.dir.join(m), photo.width(), photo.height()).ok()
            })
        };
        let (hole, keep_out) = (mask(record.mask), mask(record.keep_out));
        Some(Reopened {
            photo,
            hole,
            keep_out,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    /// One history across the hole and the keep-out area: undo walks back through the edits
    /// in the order they were made, whichever mask each was on, and redo walks forward.
    #[test]
    fn one_undo_history_across_both_masks() {
        let mut m = Masks::new(30, 20);
        let stroke = |m: &mut Masks, layer, y: f32| {
            m.checkpoint(layer);
            m.layer_mut(layer)
                .paint_segment((2.0, y), (20.0, y), 1.5, true);
        };
        stroke(&mut m, Layer::Hole, 3.0);
        stroke(&mut m, Layer::KeepOut, 10.0);
        stroke(&mut m, Layer::Hole, 16.0);
        let counts = |m: &Masks| (m.hole().count(), m.keep_out().count());
        let (h2, k1) = counts(&m);
        assert!(h2 > 0 && k1 > 0);
        let revision = m.revision();
        assert!(m.undo());
        assert!(m.revision() > revision, "an undo is a change views see");
        let (h1, k) = counts(&m);
        assert!(h1 < h2 && h1 > 0);
        assert_eq!(k, k1, "the last edit was the hole's");
        assert!(m.undo());
        assert_eq!(counts(&m), (h1, 0), "then the keep-out stroke");
        assert!(m.undo());
        assert_eq!(counts(&m), (0, 0));
        assert!(!m.undo() && !m.can_undo());
        assert!(m.redo() && m.redo());
        assert_eq!(counts(&m), (h1, k1));
        // A new edit makes the redo steps of both masks stale.
        m.clear(Layer::KeepOut);
        assert!(!m.can_redo() && !m.redo());
        assert_eq!(counts(&m), (h1, 0));
        assert!(m.undo());
        assert_eq!(counts(&m), (h1, k1), "clearing is one step");
        m.invert(Layer::Hole);
        assert_eq!(m.hole().count(), 30 * 20 - h1);
        m.replace(Layer::KeepOut, vec![true; 600]);
        assert!(m.undo() && m.undo());
        assert_eq!(counts(&m), (h1, k1));
    }

    /// Beyond [`UNDO_DEPTH`] steps a mask forgets its oldest; undo then goes back through
    /// exactly the states the user saw, in order, as far as both masks reach, and stops there.
    #[test]
    fn the_shared_history_stays_in_step_with_each_mask() {
        let mut m = Masks::new(64, 8);
        let mut expected = Vec::new();
        for k in 0..(5 * UNDO_DEPTH) {
            let layer = if k % 7 < 5 {
                Layer::Hole
            } else {
                Layer::KeepOut
            };
            expected.push((m.hole().fill().to_vec(), m.keep_out().fill().to_vec()));
            m.checkpoint(layer);
            let x = (k % 60) as f32;
            m.layer_mut(layer)
                .paint_segment((x, 1.0), (x + 1.0, 6.0), 0.7, k % 3 != 0);
        }
        let held = m.undo.len();
        assert!(
            (UNDO_DEPTH..=2 * UNDO_DEPTH).contains(&held),
            "{held} steps held"
        );
        for _ in 0..held {
            let (hole, keep_out) = expected.pop().unwrap();
            assert!(m.undo());
            assert_eq!(m.hole().fill(), hole.as_slice());
            assert_eq!(m.keep_out().fill(), keep_out.as_slice());
        }
        assert!(!m.undo() && !m.can_undo());
    }

    #[test]
    fn autosave_keeps_both_masks_and_reads_old_records() {
        let dir = tempfile::tempdir().unwrap();
        let photo_path = dir.path().join("p.png");
        let img = crate::photo::RgbImage::from_data(8, 6, vec![0.5; 8 * 6 * 3]).unwrap();
        photo::save(
            &photo::SaveImage::plain(&img),
            &photo_path,
            photo::SaveFormat::Png,
            false,
        )
        .unwrap();
        let autosave = Autosave::new(dir.path().join("autosave"));
        std::fs::create_dir_all(autosave.dir()).unwrap();
        let mut m = Masks::new(8, 6);
        m.layer_mut(Layer::Hole)
            .fill_rect((1.0, 1.0), (3.0, 3.0), true);
        autosave.save(&photo_path, &m).unwrap();
        let back = autosave.load().unwrap();
        assert_eq!(back.hole.as_deref(), Some(m.hole().fill()));
        assert_eq!(back.keep_out, None, "no keep-out area painted");
        m.layer_mut(Layer::KeepOut)
            .fill_rect((5.0, 2.0), (8.0, 6.0), true);
        autosave.save(&photo_path, &m).unwrap();
        let back = autosave.load().unwrap();
        assert_eq!(back.hole.as_deref(), Some(m.hole().fill()));
        assert_eq!(back.keep_out.as_deref(), Some(m.keep_out().fill()));
        // A record written before keep-out areas existed.
        let old = format!(
            r#"{{"photo": {:?}, "mask": "mask.png"}}"#,
            photo_path.display().to_string()
        );
        std::fs::write(autosave.dir().join("document.json"), old).unwrap();
        let back = autosave.load().unwrap();
        assert_eq!(back.hole.as_deref(), Some(m.hole().fill()));
        assert_eq!(back.keep_out, None);
        // A damaged keep-out file loses that mask only.
        autosave.save(&photo_path, &m).unwrap();
        std::fs::write(autosave.dir().join(KEEP_OUT_FILE), b"not a png").unwrap();
        let back = autosave.load().unwrap();
        assert_eq!(back.hole.as_deref(), Some(m.hole().fill()));
        assert_eq!(back.keep_out, None);
    }

    /// The painted count the panels show every frame follows every kind of edit.
    #[test]
    fn the_painted_count_follows_every_edit() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut m = MaskLayer::new(57, 43);
        for k in 0..200 {
            let mut point = || (rng.random_range(-5.0..62.0), rng.random_range(-5.0..48.0));
            let (a, b) = (point(), point());
            match k % 9 {
                0 => m.fill_rect(a, b, true),
                1 => m.fill_rect(a, b, false),
                2 => m.invert(),
                3 => {
                    m.undo();
                }
                4 => {
                    m.redo();
                }
                5 if k % 5 == 0 => m.clear(),
                _ => {
                    m.checkpoint();
                    m.paint_segment(a, b, rng.random_range(0.5..6.0), k % 3 != 0);
                }
            }
            let truth = m.fill().iter().filter(|&&f| f).count();
            assert_eq!(m.count(), truth, "after edit {k}");
            assert_eq!(m.is_empty(), truth == 0);
        }
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

    #[test]
    fn snapshots_round_trip_and_stay_small() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let noise: Vec<bool> = (0..10_007).map(|_| rng.random_bool(0.5)).collect();
        let mut strokes = MaskLayer::new(101, 99);
        strokes.paint_segment((3.0, 4.0), (90.0, 80.0), 6.0, true);
        strokes.fill_rect((0.0, 0.0), (101.0, 2.0), true);
        let cases = [
            Vec::new(),
            vec![false; 1000],
            vec![true; 1000],
            vec![true; 63],
            noise,
            strokes.fill().to_vec(),
        ];
        for fill in &cases {
            let snap = Snapshot::encode(fill);
            assert_eq!(&snap.decode(fill.len()), fill);
            assert!(
                snap.bytes() <= fill.len().div_ceil(64) * 8 + 4,
                "{} bytes for {} pixels",
                snap.bytes(),
                fill.len()
            );
        }
        assert!(matches!(Snapshot::encode(&cases[4]), Snapshot::Bits(_)));
        assert!(matches!(Snapshot::encode(&cases[5]), Snapshot::Runs(_)));
    }

    #[test]
    fn history_of_a_large_mask_is_kilobytes() {
        // 24 megapixels, a full undo history of strokes: one byte per pixel per step would be
        // close to a gigabyte.
        let mut m = MaskLayer::new(6000, 4000);
        for k in 0..(UNDO_DEPTH + 5) {
            m.checkpoint();
            let y = 100.0 + 80.0 * k as f32;
            m.paint_segment((200.0, y), (5800.0, y + 50.0), 30.0, true);
        }
        assert_eq!(m.undo.len(), UNDO_DEPTH);
        assert!(m.history_bytes() < 4 << 20, "{} bytes", m.history_bytes());
        let last = m.fill().to_vec();
        assert!(m.undo());
        assert!(m.count() < last.iter().filter(|&&f| f).count());
        assert!(m.redo());
        assert_eq!(m.fill(), last.as_slice());
    }

    #[test]
    fn changes_are_tracked_as_regions() {
        let mut m = MaskLayer::new(50, 40);
        assert_eq!(m.take_changed(), MaskChange::Everything);
        assert_eq!(m.take_changed(), MaskChange::Nothing);
        m.paint_segment((10.5, 10.5), (20.5, 10.5), 2.0, true);
        let MaskChange::Region(r) = m.take_changed() else {
            panic!("a stroke changes a region")
        };
        // Every painted pixel lies inside the region, and the region is tight.
        for y in 0..m.height {
            for x in 0..m.width {
                if m.fill()[y * m.width + x] {
                    assert!((r.x0..r.x1).contains(&x) && (r.y0..r.y1).contains(&y));
                }
            }
        }
        assert_eq!((r.x0, r.x1, r.y0, r.y1), (8, 23, 8, 13));
        // Painting where it is already painted changes nothing.
        let revision = m.revision;
        m.paint_segment((12.5, 10.5), (14.5, 10.5), 1.0, true);
        assert_eq!(
            (m.take_changed(), m.revision),
            (MaskChange::Nothing, revision)
        );
        m.fill_rect((40.0, 30.0), (45.0, 35.0), true);
        m.paint_segment((2.5, 2.5), (2.5, 2.5), 0.5, true);
        assert_eq!(
            m.take_changed(),
            MaskChange::Region(PixelRect {
                x0: 2,
                y0: 2,
                x1: 45,
                y1: 35
            })
        );
        m.invert();
        assert_eq!(m.take_changed(), MaskChange::Everything);
    }
}
