//! Images in the layout the patch prior reads (channels last) and the bank of known patches.
//!
//! A bank entry is a `p × p` window of one *source* image: the photo's known pixels, its mirror
//! image, the photo turned by 180°, optionally a coarser copy. Every transform of the photo is stored as an image of its
//! own, so a mirrored patch is an ordinary window of the mirrored image: distances always read
//! rows of `p·C` contiguous floats, and a PatchMatch offset means the same in every source.

use crate::{Error, Result};
use std::sync::Arc;

/// An image in `[-1, 1]`, channels last (`[H, W, C]`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Plane {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel.
    pub channels: usize,
    /// `height · width · channels` values.
    pub data: Vec<f32>,
}

impl Plane {
    /// A deterministic `w × h × c` test image with values spread over `[-1, 1]`.
    #[cfg(test)]
    pub(crate) fn ramp(w: usize, h: usize, c: usize) -> Self {
        let data = (0..w * h * c)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        Self {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    /// A plane of zeros.
    pub fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![0.0; width * height * channels],
        }
    }

    /// A plane from its values, checked against its size.
    pub fn from_data(width: usize, height: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != width * height * channels {
            return Err(Error::shape(
                "plane",
                format!(
                    "{width}×{height}×{channels} = {}",
                    width * height * channels
                ),
                data.len(),
            ));
        }
        Ok(Self {
            width,
            height,
            channels,
            data,
        })
    }

    /// Image `b` of a `[B, C, H, W]` slice (channels first) as a plane.
    pub fn from_chw(chw: &[f32], (c, h, w): (usize, usize, usize)) -> Self {
        let mut data = vec![0.0; c * h * w];
        for ch in 0..c {
            for i in 0..h * w {
                data[i * c + ch] = chw[ch * h * w + i];
            }
        }
        Self {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }

    /// The values channels first (`[C, H, W]`).
    pub fn to_chw(&self) -> Vec<f32> {
        let (c, n) = (self.channels, self.width * self.height);
        let mut out = vec![0.0; c * n];
        for i in 0..n {
            for ch in 0..c {
                out[ch * n + i] = self.data[i * c + ch];
            }
        }
        out
    }

    /// The image turned by 180° (rows and columns reversed).
    pub fn turned(&self) -> Self {
        let c = self.channels;
        let n = self.width * self.height;
        let mut data = vec![0.0; self.data.len()];
        for (i, px) in self.data.chunks_exact(c).enumerate() {
            let d = (n - 1 - i) * c;
            data[d..d + c].copy_from_slice(px);
        }
        Self {
            data,
            ..self.clone()
        }
    }

    /// The mirror image (columns reversed).
    pub fn mirrored(&self) -> Self {
        let (w, c) = (self.width, self.channels);
        let mut data = vec![0.0; self.data.len()];
        for y in 0..self.height {
            for x in 0..w {
                let (s, d) = ((y * w + x) * c, (y * w + (w - 1 - x)) * c);
                data[d..d + c].copy_from_slice(&self.data[s..s + c]);
            }
        }
        Self {
            data,
            ..self.clone()
        }
    }

    /// Row `dy` of the `p`-wide window at top-left `(x, y)`: `p · C` values.
    #[inline]
    pub fn row(&self, x: usize, y: usize, dy: usize, p: usize) -> &[f32] {
        let s = ((y + dy) * self.width + x) * self.channels;
        &self.data[s..s + p * self.channels]
    }
}

/// A bank entry: the window of source `source` with top-left corner `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// Index of the source image.
    pub source: u16,
    /// Top row.
    pub y: u16,
    /// Left column.
    pub x: u16,
}

/// One source image of a bank and where its windows may start.
#[derive(Debug, Clone)]
pub struct Source {
    /// The image (known pixels; the rest is never read through a valid window), shared with
    /// whoever made it ([`Bank::shared`]) rather than copied.
    pub image: Arc<Plane>,
    /// Per top-left position (`(W − p + 1) × (H − p + 1)`, row-major): whether the window lies
    /// wholly in known pixels.
    pub valid: Vec<bool>,
    /// Valid positions across.
    pub cols: usize,
    /// Valid positions down.
    pub rows: usize,
    /// Whether the image is the mirror image of the photo (columns reversed).
    pub mirrored: bool,
    /// Whether the image is the photo turned by 180° (rows and columns reversed).
    pub turned: bool,
}

impl Source {
    /// Whether the window at `(x, y)` may be used (inside the image and wholly known).
    #[inline]
    pub fn is_valid(&self, x: isize, y: isize) -> bool {
        x >= 0
            && y >= 0
            && (x as usize) < self.cols
            && (y as usize) < self.rows
            && self.valid[y as usize * self.cols + x as usize]
    }
}

/// Every `p × p` window of known pixels of one or more source images: the samples of the
/// empirical patch prior.
#[derive(Debug, Clone)]
pub struct Bank {
    /// Patch side (odd).
    pub patch: usize,
    /// The source images.
    pub sources: Vec<Source>,
    /// Every valid window, in source order.
    pub entries: Vec<Entry>,
}

/// Which transforms of a source image the bank holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transforms {
    /// Also the mirror image (columns reversed).
    pub mirror: bool,
    /// Also the image turned by 180° (rows and columns reversed): the other end of a
    /// symmetric shape (an ellipse's, a shadow's) as a window the photo does not hold.
    pub turn: bool,
}

impl Transforms {
    /// The photo's windows as they are.
    pub const NONE: Self = Self {
        mirror: false,
        turn: false,
    };

    /// The photo's windows and their mirror images.
    pub const MIRROR: Self = Self {
        mirror: true,
        turn: false,
    };
}

impl Bank {
    /// The bank of `image`'s windows that contain no pixel of `hole` (`true` = unknown), with the
    /// transforms asked for. A window that touched the hole would hold pixels the measurement
    /// does not have, and a query over the hole would find itself in it.
    pub fn new(image: &Plane, hole: &[bool], patch: usize, transforms: Transforms) -> Result<Self> {
        Self::from_sources(&[(image, hole)], patch, transforms)
    }

    /// [`Self::new`] on an image the bank shares instead of copying (a prepared level's
    /// cleaned pixels, read by every draw).
    pub fn shared(
        image: &Arc<Plane>,
        hole: &[bool],
        patch: usize,
        transforms: Transforms,
    ) -> Result<Self> {
        Self::build(vec![(Arc::clone(image), hole)], patch, transforms)
    }

    /// A bank over several images (a photo and coarser copies of it), each with its hole.
    pub fn from_sources(
        images: &[(&Plane, &[bool])],
        patch: usize,
        transforms: Transforms,
    ) -> Result<Self> {
        let images = images
            .iter()
            .map(|&(image, hole)| (Arc::new(image.clone()), hole))
            .collect();
        Self::build(images, patch, transforms)
    }

    fn build(
        images: Vec<(Arc<Plane>, &[bool])>,
        patch: usize,
        transforms: Transforms,
    ) -> Result<Self> {
        if patch == 0 || patch.is_multiple_of(2) {
            return Err(Error::invalid(
                "patch size",
                patch,
                "must be odd and at least 1",
            ));
        }
        let mut sources = Vec::new();
        for (image, hole) in images {
            if hole.len() != image.width * image.height {
                return Err(Error::shape(
                    "bank hole mask",
                    image.width * image.height,
                    hole.len(),
                ));
            }
            if image.width < patch || image.height < patch {
                continue;
            }
            let valid = valid_windows(hole, image.width, image.height, patch);
            let (cols, rows) = (image.width - patch + 1, image.height - patch + 1);
            sources.push(Source {
                image: Arc::clone(&image),
                valid: valid.clone(),
                cols,
                rows,
                mirrored: false,
                turned: false,
            });
            if transforms.mirror {
                // Position x of the mirror is position cols − 1 − x of the image.
                let mirrored: Vec<bool> = (0..rows * cols)
                    .map(|i| valid[(i / cols) * cols + cols - 1 - i % cols])
                    .collect();
                sources.push(Source {
                    image: Arc::new(image.mirrored()),
                    valid: mirrored,
                    cols,
                    rows,
                    mirrored: true,
                    turned: false,
                });
            }
            if transforms.turn {
                // Position (x, y) of the turned image is position (cols − 1 − x, rows − 1 − y).
                let turned: Vec<bool> = valid.iter().rev().copied().collect();
                sources.push(Source {
                    image: Arc::new(image.turned()),
                    valid: turned,
                    cols,
                    rows,
                    mirrored: false,
                    turned: true,
                });
            }
        }
        if sources.len() > usize::from(u16::MAX) {
            return Err(Error::invalid(
                "bank sources",
                sources.len(),
                "too many source images",
            ));
        }
        let mut entries = Vec::new();
        for (s, src) in sources.iter().enumerate() {
            if src.image.width > usize::from(u16::MAX) || src.image.height > usize::from(u16::MAX) {
                return Err(Error::invalid(
                    "bank image",
                    format!("{}×{}", src.image.width, src.image.height),
                    "a side above 65 535 pixels",
                ));
            }
            for y in 0..src.rows {
                for x in 0..src.cols {
                    if src.valid[y * src.cols + x] {
                        entries.push(Entry {
                            source: s as u16,
                            y: y as u16,
                            x: x as u16,
                        });
                    }
                }
            }
        }
        Ok(Self {
            patch,
            sources,
            entries,
        })
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the bank holds no patch.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Values per patch (`p² · C`).
    pub fn dim(&self) -> usize {
        let c = self.sources.first().map_or(0, |s| s.image.channels);
        self.patch * self.patch * c
    }

    /// Whether `e` is a window the bank holds.
    #[inline]
    pub fn is_valid(&self, e: Entry) -> bool {
        self.sources
            .get(usize::from(e.source))
            .is_some_and(|s| s.is_valid(e.x as isize, e.y as isize))
    }

    /// Row `dy` of entry `e`'s window.
    #[inline]
    pub fn row(&self, e: Entry, dy: usize) -> &[f32] {
        self.sources[usize::from(e.source)].image.row(
            usize::from(e.x),
            usize::from(e.y),
            dy,
            self.patch,
        )
    }

    /// The patch of `e` as one vector (`(dy, dx, c)` order).
    pub fn patch_values(&self, e: Entry) -> Vec<f32> {
        (0..self.patch)
            .flat_map(|dy| self.row(e, dy).iter().copied())
            .collect()
    }
}

/// Per top-left position of a `p × p` window over a `w × h` image: whether it holds no hole
/// pixel. Summed-area table, so any patch size costs the same.
pub fn valid_windows(hole: &[bool], w: usize, h: usize, p: usize) -> Vec<bool> {
    if w < p || h < p {
        return Vec::new();
    }
    let mut sat = vec![0u32; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0u32;
        for x in 0..w {
            row += u32::from(hole[y * w + x]);
            sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
        }
    }
    let (cols, rows) = (w - p + 1, h - p + 1);
    let mut out = vec![false; cols * rows];
    for y in 0..rows {
        for x in 0..cols {
            let s = sat[(y + p) * (w + 1) + x + p] + sat[y * (w + 1) + x]
                - sat[y * (w + 1) + x + p]
                - sat[(y + p) * (w + 1) + x];
            out[y * cols + x] = s == 0;
        }
    }
    out
}
