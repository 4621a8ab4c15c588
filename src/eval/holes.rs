//! Scoring a fill where it matters: on the hole. Whole-image numbers are dominated by the known
//! pixels, so a fill made of noise can still score well over a crop.
//!
//! - PSNR and SSIM over the hole's pixels only;
//! - LPIPS on the hole's bounding box (grown to at least 64 pixels, AlexNet's useful minimum);
//! - the **texture ratio**: the mean squared Laplacian inside the hole eroded by 2 pixels, of the
//!   result over that of the truth — 1 for natural texture, ≫ 1 for noise, ≪ 1 for a blur.
//!
//! Also the object-sized brush masks used to score fills: what a photographer paints over a
//! person, a sign or a bird, covering a few percent of the photo.

use rand::Rng;

use super::lpips::Lpips;
use crate::inverse::masks::segment_pixels;
use crate::photo::RgbImage;
use crate::restore::Rect;
use crate::{Error, Result};

/// Smallest side of the box LPIPS compares.
pub const LPIPS_MIN_BOX: usize = 64;

/// Scores of one result on one hole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoleScores {
    /// PSNR (dB) over the hole's pixels.
    pub psnr: f64,
    /// Mean SSIM over windows centred on hole pixels.
    pub ssim: f64,
    /// LPIPS (AlexNet) on the hole's bounding box, when a network was given.
    pub lpips: Option<f64>,
    /// Mean squared Laplacian of the result over that of the truth, inside the eroded hole; NaN
    /// when erosion leaves nothing.
    pub texture_ratio: f64,
    /// Mean squared Laplacian of the result inside the eroded hole over that of the truth in the
    /// ring of known pixels around the hole ([`ring`]): whether the fill looks like its
    /// surroundings (the truth inside a hole is often the object that was removed). NaN when
    /// either is empty.
    pub ring_ratio: f64,
}

/// Inner and outer distance (pixels, square neighbourhood) of the ring around a hole that
/// [`HoleScores::ring_ratio`] compares with.
pub const RING: (usize, usize) = (3, 12);

fn check(a: &RgbImage, b: &RgbImage, fill: &[bool]) -> Result<()> {
    if (a.width, a.height) != (b.width, b.height) || fill.len() != a.width * a.height {
        return Err(Error::shape(
            "hole metric",
            format!("{}×{} images and mask", b.width, b.height),
            format!("{}×{} and {} mask pixels", a.width, a.height, fill.len()),
        ));
    }
    if !fill.iter().any(|&f| f) {
        return Err(Error::invalid(
            "hole",
            "empty",
            "the mask has no pixel to score",
        ));
    }
    Ok(())
}

/// CRPS of a set of results for one hole, per hole value (3 per pixel, in `[0, 1]`), averaged:
/// the fair ensemble estimator for two or more results, the absolute error for one (a point
/// forecast's CRPS). Lower is better; it rewards samples that are both close to the truth and
/// spread as far as the truth is uncertain, so a sampler that damps its spread to look clean
/// and one that adds noise both pay for it.
pub fn hole_crps(results: &[RgbImage], truth: &RgbImage, fill: &[bool]) -> Result<f64> {
    if results.is_empty() {
        return Err(Error::invalid(
            "results",
            0,
            "CRPS needs at least one result",
        ));
    }
    for r in results {
        check(r, truth, fill)?;
    }
    let idx: Vec<usize> = fill
        .iter()
        .enumerate()
        .filter(|(_, f)| **f)
        .flat_map(|(i, _)| [3 * i, 3 * i + 1, 3 * i + 2])
        .collect();
    if idx.is_empty() {
        return Err(Error::invalid("hole", 0, "the mask hides no pixel"));
    }
    let m = results.len();
    let samples =
        nalgebra::DMatrix::from_fn(idx.len(), m, |r, c| f64::from(results[c].data[idx[r]]));
    let z: Vec<f64> = idx.iter().map(|&i| f64::from(truth.data[i])).collect();
    if m == 1 {
        return super::metrics::crps(&samples, &z, super::metrics::CrpsForm::Plain);
    }
    super::metrics::crps(&samples, &z, super::metrics::CrpsForm::Fair)
}

/// The bounding box of the hole.
pub fn hole_box(fill: &[bool], width: usize) -> Option<Rect> {
    let mut b: Option<(usize, usize, usize, usize)> = None;
    for (i, _) in fill.iter().enumerate().filter(|(_, f)| **f) {
        let (x, y) = (i % width, i / width);
        b = Some(match b {
            None => (x, y, x, y),
            Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
        });
    }
    b.map(|(x0, y0, x1, y1)| Rect::new(x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// `fill` shrunk by `r` pixels (a pixel stays when every pixel within the `(2r+1)²` square
/// around it is in the hole and inside the image).
pub fn erode(fill: &[bool], width: usize, height: usize, r: usize) -> Vec<bool> {
    (0..width * height)
        .map(|i| {
            let (x, y) = (i % width, i / width);
            if x < r || y < r || x + r >= width || y + r >= height {
                return false;
            }
            (y - r..=y + r).all(|yy| (x - r..=x + r).all(|xx| fill[yy * width + xx]))
        })
        .collect()
}

pub use crate::inverse::masks::dilate;

/// The known pixels between [`RING`]`.0` and [`RING`]`.1` pixels from the hole.
pub fn ring(fill: &[bool], width: usize, height: usize) -> Vec<bool> {
    let inner = dilate(fill, width, height, RING.0 - 1);
    let outer = dilate(fill, width, height, RING.1);
    outer.iter().zip(&inner).map(|(&o, &i)| o && !i).collect()
}

/// Mean over `pixels` and channels of the squared 4-neighbour Laplacian (pixels at the image
/// border are skipped).
pub fn laplacian_energy(img: &RgbImage, pixels: &[bool]) -> f64 {
    let (w, h) = (img.width, img.height);
    let (mut total, mut n) = (0.0, 0usize);
    for (i, _) in pixels.iter().enumerate().filter(|(_, p)| **p) {
        let (x, y) = (i % w, i / w);
        if x == 0 || y == 0 || x + 1 >= w || y + 1 >= h {
            continue;
        }
        for c in 0..3 {
            let v = |xx: usize, yy: usize| f64::from(img.data[(yy * w + xx) * 3 + c]);
            let l = v(x - 1, y) + v(x + 1, y) + v(x, y - 1) + v(x, y + 1) - 4.0 * v(x, y);
            total += l * l;
            n += 1;
        }
    }
    if n == 0 { f64::NAN } else { total / n as f64 }
}

/// PSNR (dB) over the hole's pixels, values clipped to `[0, 1]`.
pub fn hole_psnr(x: &RgbImage, truth: &RgbImage, fill: &[bool]) -> Result<f64> {
    check(x, truth, fill)?;
    let (mut se, mut n) = (0.0, 0usize);
    for (i, _) in fill.iter().enumerate().filter(|(_, f)| **f) {
        for c in 0..3 {
            let d = f64::from(x.data[i * 3 + c].clamp(0.0, 1.0))
                - f64::from(truth.data[i * 3 + c].clamp(0.0, 1.0));
            se += d * d;
            n += 1;
        }
    }
    Ok(-10.0 * (se / n as f64).log10())
}

/// Mean SSIM (11×11 Gaussian window, σ = 1.5, on `[0, 1]`, as [`super::metrics::ssim`]) over
/// windows centred on hole pixels, averaged over channels; windows are clipped at the border.
pub fn hole_ssim(x: &RgbImage, truth: &RgbImage, fill: &[bool]) -> Result<f64> {
    check(x, truth, fill)?;
    let (w, h) = (x.width, x.height);
    let g: Vec<f64> = (0..11)
        .map(|i| (-((i as f64 - 5.0).powi(2)) / (2.0 * 1.5 * 1.5)).exp())
        .collect();
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let (mut total, mut n) = (0.0, 0usize);
    for (i, _) in fill.iter().enumerate().filter(|(_, f)| **f) {
        let (px, py) = (i % w, i / w);
        for c in 0..3 {
            let (mut sw, mut ma, mut mb, mut aa, mut bb, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
            for (ky, gy) in g.iter().enumerate() {
                let Some(y) = (py + ky).checked_sub(5).filter(|&y| y < h) else {
                    continue;
                };
                for (kx, gx) in g.iter().enumerate() {
                    let Some(xx) = (px + kx).checked_sub(5).filter(|&v| v < w) else {
                        continue;
                    };
                    let k = gy * gx;
                    let a = f64::from(x.data[(y * w + xx) * 3 + c].clamp(0.0, 1.0));
                    let b = f64::from(truth.data[(y * w + xx) * 3 + c].clamp(0.0, 1.0));
                    sw += k;
                    ma += k * a;
                    mb += k * b;
                    aa += k * a * a;
                    bb += k * b * b;
                    ab += k * a * b;
                }
            }
            let (ma, mb) = (ma / sw, mb / sw);
            let (va, vb, cov) = (aa / sw - ma * ma, bb / sw - mb * mb, ab / sw - ma * mb);
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            n += 1;
        }
    }
    Ok(total / n as f64)
}

/// The hole's bounding box grown (about its centre, inside the image) to at least
/// [`LPIPS_MIN_BOX`] on each side where the image allows.
pub fn lpips_box(fill: &[bool], width: usize, height: usize) -> Option<Rect> {
    let b = hole_box(fill, width)?;
    let grow = |start: usize, len: usize, limit: usize| -> (usize, usize) {
        let want = len.max(LPIPS_MIN_BOX).min(limit);
        let centre = start + len / 2;
        let lo = centre.saturating_sub(want / 2).min(limit - want);
        (lo, want)
    };
    let (x, w) = grow(b.x, b.w, width);
    let (y, h) = grow(b.y, b.h, height);
    Some(Rect::new(x, y, w, h))
}

/// Every hole score of `x` against `truth`.
pub fn hole_scores(
    x: &RgbImage,
    truth: &RgbImage,
    fill: &[bool],
    lpips: Option<&Lpips>,
) -> Result<HoleScores> {
    check(x, truth, fill)?;
    let (w, h) = (x.width, x.height);
    let inner = erode(fill, w, h, 2);
    let energy = laplacian_energy(x, &inner);
    let texture_ratio = energy / laplacian_energy(truth, &inner);
    let ring_ratio = energy / laplacian_energy(truth, &ring(fill, w, h));
    let lpips = match (lpips, lpips_box(fill, w, h)) {
        (Some(net), Some(r)) if r.w >= 32 && r.h >= 32 => Some(super::lpips::photo_distance(
            net,
            &x.crop(r.x, r.y, r.w, r.h),
            &truth.crop(r.x, r.y, r.w, r.h),
        )?),
        _ => None,
    };
    Ok(HoleScores {
        psnr: hole_psnr(x, truth, fill)?,
        ssim: hole_ssim(x, truth, fill)?,
        lpips,
        texture_ratio,
        ring_ratio,
    })
}

/// An object-sized brush mask on a `width × height` photo: a few thick round-brush strokes
/// around one spot, as a photographer paints over an object, grown until they cover a fraction
/// drawn from `coverage` (e.g. 2–5%). `true` = to fill.
pub fn object_mask(
    width: usize,
    height: usize,
    coverage: (f64, f64),
    rng: &mut impl Rng,
) -> Vec<bool> {
    let target = rng.random_range(coverage.0..=coverage.1) * (width * height) as f64;
    // The blob's scale follows the area to cover: a brush of about a third of its size,
    // scribbling within about one and a half times its size of one spot.
    let size = target.sqrt();
    let radius = (size * rng.random_range(0.22..0.4)).max(1.0);
    let reach = 0.75 * size;
    let mut fill = vec![false; width * height];
    let mut covered = 0usize;
    // Centre away from the border so the hole has context on every side.
    let margin = |len: usize| (reach + radius).min(len as f64 / 2.0);
    let (mx, my) = (margin(width), margin(height));
    let (cx, cy) = (
        rng.random_range(mx..=(width as f64 - mx).max(mx)),
        rng.random_range(my..=(height as f64 - my).max(my)),
    );
    let (mut x, mut y) = (cx, cy);
    let mut angle = rng.random_range(0.0..std::f64::consts::TAU);
    for _ in 0..200 {
        if covered as f64 >= target {
            break;
        }
        angle += rng.random_range(-1.5..1.5);
        let len = rng.random_range(0.3..1.0) * radius;
        let (nx, ny) = (
            (x + len * angle.cos()).clamp(cx - reach, cx + reach),
            (y + len * angle.sin()).clamp(cy - reach, cy + reach),
        );
        segment_pixels(height, width, (x, y), (nx, ny), radius, |i| {
            if !fill[i] {
                fill[i] = true;
                covered += 1;
            }
        });
        (x, y) = (nx, ny);
    }
    fill
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn noise_image(w: usize, h: usize, amp: f32, seed: u64) -> RgbImage {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut img = RgbImage::new(w, h);
        for v in &mut img.data {
            *v = 0.5 + amp * (rng.random::<f32>() - 0.5);
        }
        img
    }

    #[test]
    fn texture_ratio_tells_noise_from_blur() -> Result<()> {
        let truth = noise_image(40, 40, 0.2, 1);
        let fill: Vec<bool> = (0..1600)
            .map(|i| (10..30).contains(&(i % 40)) && (10..30).contains(&(i / 40)))
            .collect();
        let same = hole_scores(&truth, &truth, &fill, None)?;
        assert!((same.texture_ratio - 1.0).abs() < 1e-12);
        assert!(same.psnr.is_infinite() && (same.ssim - 1.0).abs() < 1e-9);
        let noisy = hole_scores(&noise_image(40, 40, 0.6, 2), &truth, &fill, None)?;
        assert!(noisy.texture_ratio > 4.0, "{}", noisy.texture_ratio);
        let flat = hole_scores(&noise_image(40, 40, 0.0, 3), &truth, &fill, None)?;
        assert!(flat.texture_ratio < 1e-6, "{}", flat.texture_ratio);
        Ok(())
    }

    #[test]
    fn object_masks_cover_what_was_asked_in_one_place() {
        for seed in 0..40 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (w, h) = (512, 340);
            let fill = object_mask(w, h, (0.02, 0.05), &mut rng);
            let frac = fill.iter().filter(|f| **f).count() as f64 / (w * h) as f64;
            assert!((0.02..0.07).contains(&frac), "seed {seed}: {frac}");
            let b = hole_box(&fill, w).unwrap_or_default();
            assert!(b.w < w / 2 && b.h < h / 2 + 40, "seed {seed}: {b:?}");
            assert!(b.x > 0 && b.y > 0 && b.right() < w && b.bottom() < h);
        }
        // Large blobs for training still cover what was asked.
        for seed in 0..20 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let fill = object_mask(128, 128, (0.3, 0.35), &mut rng);
            let frac = fill.iter().filter(|f| **f).count() as f64 / (128.0 * 128.0);
            assert!((0.25..0.45).contains(&frac), "seed {seed}: {frac}");
        }
    }
}
