//! Random inpainting masks for training and evaluation (1 = observed, 0 = to fill), after the
//! paper's operator distribution (eps-method.md §4) and LaMa's free-form brush strokes, and
//! their growth by a margin ([`dilate`]).

use rand::Rng;

/// A random pixel mask hiding each pixel with probability `hidden`.
pub fn random_pixels(h: usize, w: usize, hidden: f64, rng: &mut impl Rng) -> Vec<f32> {
    (0..h * w)
        .map(|_| {
            if rng.random_bool(hidden.clamp(0.0, 1.0)) {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// One hidden box with sides `U[H/4, H/2] × U[W/4, W/2]`, at least `H/16` from the border.
pub fn random_box(h: usize, w: usize, rng: &mut impl Rng) -> Vec<f32> {
    let (mh, mw) = (h / 16, w / 16);
    let bh = rng.random_range(h / 4..=h / 2).max(1);
    let bw = rng.random_range(w / 4..=w / 2).max(1);
    let top = rng.random_range(mh..=(h - mh - bh).max(mh));
    let left = rng.random_range(mw..=(w - mw - bw).max(mw));
    let mut m = vec![1.0; h * w];
    for r in top..(top + bh).min(h) {
        for c in left..(left + bw).min(w) {
            m[r * w + c] = 0.0;
        }
    }
    m
}

/// One hidden box with sides `U[H/16, H/2] × U[W/16, W/2]` anywhere in the image: small objects
/// as well as large ones.
pub fn box_of_any_size(h: usize, w: usize, rng: &mut impl Rng) -> Vec<f32> {
    let bh = rng.random_range((h / 16).max(1)..=(h / 2).max(1));
    let bw = rng.random_range((w / 16).max(1)..=(w / 2).max(1));
    let top = rng.random_range(0..=h - bh);
    let left = rng.random_range(0..=w - bw);
    let mut m = vec![1.0; h * w];
    for r in top..top + bh {
        m[r * w + left..r * w + left + bw].fill(0.0);
    }
    m
}

/// Stroke width class of [`brush_strokes`] (LaMa's thin / medium / thick irregular masks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrushWidth {
    /// 3–6% of the image side.
    Thin,
    /// 6–12% of the image side.
    Medium,
    /// 12–22% of the image side.
    Thick,
}

impl BrushWidth {
    /// One of the three at random.
    pub fn random(rng: &mut impl Rng) -> Self {
        match rng.random_range(0..3) {
            0 => Self::Thin,
            1 => Self::Medium,
            _ => Self::Thick,
        }
    }

    fn range(self) -> (f64, f64) {
        match self {
            Self::Thin => (0.03, 0.06),
            Self::Medium => (0.06, 0.12),
            Self::Thick => (0.12, 0.22),
        }
    }
}

/// Free-form brush strokes: 1–4 polylines of 2–6 segments with random turns, drawn with a round
/// brush, stopping once about `max_hidden` of the image is covered.
pub fn brush_strokes(
    h: usize,
    w: usize,
    width: BrushWidth,
    max_hidden: f64,
    rng: &mut impl Rng,
) -> Vec<f32> {
    let side = h.min(w) as f64;
    let (lo, hi) = width.range();
    let mut m = vec![1.0f32; h * w];
    let hidden = |m: &[f32]| m.iter().filter(|v| **v == 0.0).count() as f64 / m.len() as f64;
    let strokes = rng.random_range(1..=4);
    for _ in 0..strokes {
        let radius = (rng.random_range(lo..hi) * side / 2.0).max(0.75);
        let (mut x, mut y) = (
            rng.random_range(0.0..w as f64),
            rng.random_range(0.0..h as f64),
        );
        let mut angle = rng.random_range(0.0..std::f64::consts::TAU);
        for _ in 0..rng.random_range(2..=6) {
            angle += rng.random_range(-1.2..1.2);
            let len = rng.random_range(0.15..0.4) * side;
            let (nx, ny) = (
                (x + len * angle.cos()).clamp(0.0, w as f64 - 1.0),
                (y + len * angle.sin()).clamp(0.0, h as f64 - 1.0),
            );
            paint_segment(&mut m, h, w, (x, y), (nx, ny), radius);
            (x, y) = (nx, ny);
            if hidden(&m) >= max_hidden {
                return m;
            }
        }
    }
    m
}

/// Hides every pixel centre within `radius` of the segment `a–b`.
pub fn paint_segment(m: &mut [f32], h: usize, w: usize, a: (f64, f64), b: (f64, f64), radius: f64) {
    segment_pixels(h, w, a, b, radius, |i| m[i] = 0.0);
}

/// Calls `visit` with the row-major index of every pixel of an `h × w` grid whose centre
/// (integer coordinates) lies within `radius` of the segment `a–b`: a round brush stroke.
pub fn segment_pixels(
    h: usize,
    w: usize,
    a: (f64, f64),
    b: (f64, f64),
    radius: f64,
    mut visit: impl FnMut(usize),
) {
    if h == 0 || w == 0 {
        return;
    }
    let (x0, x1) = (
        (a.0.min(b.0) - radius).floor().max(0.0) as usize,
        (a.0.max(b.0) + radius).ceil().min(w as f64 - 1.0) as usize,
    );
    let (y0, y1) = (
        (a.1.min(b.1) - radius).floor().max(0.0) as usize,
        (a.1.max(b.1) + radius).ceil().min(h as f64 - 1.0) as usize,
    );
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    for r in y0..=y1 {
        for c in x0..=x1 {
            let (px, py) = (c as f64, r as f64);
            let t = if len2 > 0.0 {
                (((px - a.0) * dx + (py - a.1) * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (qx, qy) = (a.0 + t * dx, a.1 + t * dy);
            if (px - qx).powi(2) + (py - qy).powi(2) <= radius * radius {
                visit(r * w + c);
            }
        }
    }
}

/// `fill` grown by `r` pixels (a pixel is set when any pixel within the `(2r+1)²` square
/// around it is), separably.
pub fn dilate(fill: &[bool], width: usize, height: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; fill.len()];
    for y in 0..height {
        for x in 0..width {
            let (a, b) = (x.saturating_sub(r), (x + r).min(width - 1));
            rows[y * width + x] = fill[y * width + a..=y * width + b].iter().any(|&f| f);
        }
    }
    let mut out = vec![false; fill.len()];
    for y in 0..height {
        let (a, b) = (y.saturating_sub(r), (y + r).min(height - 1));
        for x in 0..width {
            out[y * width + x] = (a..=b).any(|yy| rows[yy * width + x]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;

    fn hidden(m: &[f32]) -> f64 {
        m.iter().filter(|v| **v == 0.0).count() as f64 / m.len() as f64
    }

    #[test]
    fn masks_hide_what_they_promise() {
        let mut rng = StdRng::seed_from_u64(1);
        let p = random_pixels(64, 64, 0.7, &mut rng);
        assert!((hidden(&p) - 0.7).abs() < 0.03);
        for _ in 0..50 {
            let b = random_box(64, 64, &mut rng);
            let f = hidden(&b);
            assert!(
                (1.0 / 16.0 - 1e-9..=0.25 + 1e-9).contains(&f),
                "box hides {f}"
            );
            assert!(
                (0..64).all(|i| b[i] == 1.0 && b[i * 64] == 1.0),
                "box touches the border margin"
            );
            for width in [BrushWidth::Thin, BrushWidth::Medium, BrushWidth::Thick] {
                let s = brush_strokes(64, 64, width, 0.5, &mut rng);
                assert!(
                    hidden(&s) > 0.0 && hidden(&s) < 0.75,
                    "{width:?} hides {}",
                    hidden(&s)
                );
            }
        }
    }
}
