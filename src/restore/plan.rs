//! Where the network works on a large photo: crops around each mask component (inpainting) and
//! overlapping tiles (deblurring, super-resolution), with the blending weights that paste them back.

/// An axis-aligned pixel rectangle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    /// Left column.
    pub x: usize,
    /// Top row.
    pub y: usize,
    /// Width.
    pub w: usize,
    /// Height.
    pub h: usize,
}

impl Rect {
    /// A rectangle from its corner and size.
    pub fn new(x: usize, y: usize, w: usize, h: usize) -> Self {
        Self { x, y, w, h }
    }

    /// One past the right column.
    pub fn right(&self) -> usize {
        self.x + self.w
    }

    /// One past the bottom row.
    pub fn bottom(&self) -> usize {
        self.y + self.h
    }

    /// Whether the two rectangles share a pixel.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.x < other.right()
            && other.x < self.right()
            && self.y < other.bottom()
            && other.y < self.bottom()
    }

    /// The smallest rectangle holding both.
    pub fn union(&self, other: &Self) -> Self {
        let x = self.x.min(other.x);
        let y = self.y.min(other.y);
        Self::new(
            x,
            y,
            self.right().max(other.right()) - x,
            self.bottom().max(other.bottom()) - y,
        )
    }

    /// Multiplies every coordinate by `s`.
    pub fn scaled(&self, s: usize) -> Self {
        Self::new(self.x * s, self.y * s, self.w * s, self.h * s)
    }
}

/// The bounding boxes of the 8-connected components of `fill` (`width × height`, row-major).
pub fn components(fill: &[bool], width: usize, height: usize) -> Vec<Rect> {
    let mut seen = vec![false; fill.len()];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..fill.len() {
        if !fill[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
            for dy in -1_isize..=1 {
                for dx in -1_isize..=1 {
                    let (nx, ny) = (x as isize + dx, y as isize + dy);
                    if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                        continue;
                    }
                    let j = ny as usize * width + nx as usize;
                    if fill[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        boxes.push(Rect::new(x0, y0, x1 - x0 + 1, y1 - y0 + 1));
    }
    boxes
}

/// Grows `r` by `margin` on every side, shifting it inward at the photo's edges so it keeps its
/// size where the photo allows (the context a hole at an edge needs lies on the inner side).
pub fn expand(r: Rect, margin: usize, width: usize, height: usize) -> Rect {
    let axis = |start: usize, len: usize, limit: usize| -> (usize, usize) {
        let want = (len + 2 * margin).min(limit);
        let centre = start as isize + len as isize / 2;
        let lo = (centre - want as isize / 2).clamp(0, (limit - want) as isize) as usize;
        (lo, want)
    };
    let (x, w) = axis(r.x, r.w, width);
    let (y, h) = axis(r.y, r.h, height);
    Rect::new(x, y, w, h)
}

/// The context margin around a hole of size `w × h`: half its longer side, between 16 and 128
/// pixels (enough surroundings for the network to continue textures and lines into the hole).
pub fn context_margin(w: usize, h: usize) -> usize {
    (w.max(h) / 2).clamp(16, 128)
}

/// Crops for inpainting: one per mask component with its context margin; crops that overlap are
/// merged so no pixel is filled twice.
pub fn inpaint_regions(fill: &[bool], width: usize, height: usize) -> Vec<Rect> {
    inpaint_regions_with(fill, width, height, context_margin)
}

/// [`inpaint_regions`] with another context margin for a component of size `w × h`.
pub fn inpaint_regions_with(
    fill: &[bool],
    width: usize,
    height: usize,
    margin: impl Fn(usize, usize) -> usize,
) -> Vec<Rect> {
    let mut regions: Vec<Rect> = components(fill, width, height)
        .into_iter()
        .map(|c| expand(c, margin(c.w, c.h), width, height))
        .collect();
    loop {
        let mut merged = false;
        'outer: for i in 0..regions.len() {
            for j in i + 1..regions.len() {
                if regions[i].overlaps(&regions[j]) {
                    let u = regions[i].union(&regions[j]);
                    regions[i] = u;
                    regions.swap_remove(j);
                    merged = true;
                    break 'outer;
                }
            }
        }
        if !merged {
            break;
        }
    }
    regions.sort_by_key(|r| (r.y, r.x));
    regions
}

/// Overlapping tiles covering `width × height`: each at most `tile` on a side, neighbours sharing
/// `overlap` pixels. One tile when the image fits.
pub fn tiles(width: usize, height: usize, tile: usize, overlap: usize) -> Vec<Rect> {
    let starts = |len: usize| -> Vec<(usize, usize)> {
        if len <= tile {
            return vec![(0, len)];
        }
        let stride = tile.saturating_sub(overlap).max(1);
        let n = (len - overlap).div_ceil(stride).max(1);
        // Spread the tiles evenly so every overlap is at least `overlap`.
        (0..n)
            .map(|i| {
                let start = if n == 1 {
                    0
                } else {
                    i * (len - tile) / (n - 1)
                };
                (start, tile)
            })
            .collect()
    };
    let mut out = Vec::new();
    for (y, h) in starts(height) {
        for (x, w) in starts(width) {
            out.push(Rect::new(x, y, w, h));
        }
    }
    out
}

/// Blending weight of pixel `(x, y)` inside tile `r` of an image `width × height`: a linear ramp
/// over `ramp` pixels at every tile edge that is not an image edge, so overlapping tiles
/// cross-fade and the seams disappear.
pub fn feather(r: &Rect, x: usize, y: usize, ramp: usize, width: usize, height: usize) -> f32 {
    if ramp == 0 {
        return 1.0;
    }
    let edge = |d: usize, at_border: bool| -> f32 {
        if at_border {
            1.0
        } else {
            ((d as f32 + 0.5) / ramp as f32).min(1.0)
        }
    };
    let left = edge(x - r.x, r.x == 0);
    let right = edge(r.right() - 1 - x, r.right() == width);
    let top = edge(y - r.y, r.y == 0);
    let bottom = edge(r.bottom() - 1 - y, r.bottom() == height);
    left.min(right).min(top).min(bottom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_found_with_their_boxes() {
        let (w, h) = (10, 6);
        let mut fill = vec![false; w * h];
        fill[w + 1] = true;
        fill[2 * w + 2] = true; // diagonal neighbour: same component
        fill[4 * w + 8] = true;
        let c = components(&fill, w, h);
        assert_eq!(c, vec![Rect::new(1, 1, 2, 2), Rect::new(8, 4, 1, 1)]);
    }

    #[test]
    fn expand_shifts_inward_at_edges() {
        let r = expand(Rect::new(0, 0, 4, 4), 10, 100, 100);
        assert_eq!(r, Rect::new(0, 0, 24, 24));
        let r = expand(Rect::new(96, 50, 4, 4), 10, 100, 100);
        assert_eq!((r.right(), r.w), (100, 24));
        let r = expand(Rect::new(0, 0, 4, 4), 10, 12, 8);
        assert_eq!(r, Rect::new(0, 0, 12, 8));
    }

    #[test]
    fn close_holes_share_one_region() {
        let (w, h) = (200, 100);
        let mut fill = vec![false; w * h];
        fill[50 * w + 50] = true;
        fill[50 * w + 60] = true;
        fill[50 * w + 190] = true;
        let r = inpaint_regions(&fill, w, h);
        // 50 and 60 are within each other's 16 px context: one region; 190 is far: its own.
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].x <= 50 && r[0].right() > 60, "{r:?}");
        let mut fill = vec![false; 1000 * 100];
        fill[50 * 1000 + 20] = true;
        fill[50 * 1000 + 900] = true;
        assert_eq!(inpaint_regions(&fill, 1000, 100).len(), 2);
    }

    #[test]
    fn tiles_cover_with_overlap() {
        for (len, tile, overlap) in [
            (1000, 256, 32),
            (300, 256, 32),
            (256, 256, 32),
            (257, 256, 64),
        ] {
            let t = tiles(len, 10, tile, overlap);
            let mut covered = vec![0; len];
            for r in &t {
                assert!(r.w <= tile && r.right() <= len);
                covered[r.x..r.right()].iter_mut().for_each(|c| *c += 1);
            }
            assert!(covered.iter().all(|&c| c > 0), "{len} {tile}");
            for pair in t.windows(2) {
                assert!(pair[0].right() >= pair[1].x + overlap, "{pair:?}");
            }
        }
    }

    #[test]
    fn feather_is_one_at_image_borders_and_ramps_inside() {
        let r = Rect::new(0, 0, 100, 100);
        assert_eq!(feather(&r, 0, 0, 16, 200, 100), 1.0);
        assert!(feather(&r, 99, 50, 16, 200, 100) < 0.1);
        assert_eq!(feather(&r, 50, 99, 16, 200, 100), 1.0);
    }
}
