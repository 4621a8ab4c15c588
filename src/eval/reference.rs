//! Classical restorations that a learned method has to beat, used as reference rows by
//! `eps-studio diagnose` and by the quality tests (never offered as product features):
//!
//! - [`biharmonic_fill`]: smooth inpainting, `Δ²u = 0` inside the hole with the photo as the
//!   boundary (the least-squares minimiser of the discrete Laplacian's energy; scikit-image's
//!   `inpaint_biharmonic` solves the same equation).
//! - [`wiener_deconvolve`]: `(KᵀK + ε)⁻¹Kᵀy` with reflect padding, the regularised inverse a
//!   photographer's sharpening tool approximates; [`best_wiener`] tunes ε against the truth.
//! - [`bicubic_upsample`]: Keys' cubic convolution (a = −0.5), pixel centres aligned.

use std::sync::Arc;

use crate::inverse::classical::{bicubic_plane, biharmonic_plane};
use crate::inverse::pad::{Padding, crop, reflect_pad};
use crate::inverse::{Blur, Kernel, LinearOperator};
use crate::photo::RgbImage;
use crate::restore::{from_tensor, to_tensor};
use crate::{Error, Result};

/// Fills the pixels where `fill` is true so that the result is biharmonic there (smoothest
/// continuation of the surroundings, per channel, see
/// [`crate::inverse::classical::biharmonic_plane`]); every other pixel is returned unchanged.
pub fn biharmonic_fill(img: &RgbImage, fill: &[bool]) -> Result<RgbImage> {
    let (w, h) = (img.width, img.height);
    if fill.len() != w * h {
        return Err(Error::shape("fill mask", w * h, fill.len()));
    }
    if w < 3 || h < 3 {
        return Err(Error::invalid(
            "image size",
            format!("{w}×{h}"),
            "the biharmonic fill needs at least 3×3 pixels",
        ));
    }
    if fill.iter().all(|&f| f) {
        return Err(Error::invalid(
            "mask",
            "everything",
            "a fill needs some known pixels around the hole",
        ));
    }
    let mut out = img.clone();
    for c in 0..3 {
        let plane: Vec<f64> = (0..w * h).map(|i| f64::from(img.data[i * 3 + c])).collect();
        let solved = biharmonic_plane(&plane, fill, w, h);
        for (i, v) in solved.into_iter().enumerate() {
            if fill[i] {
                out.data[i * 3 + c] = v as f32;
            }
        }
    }
    Ok(out)
}

/// `(KᵀK + ε I)⁻¹ Kᵀ y`: Wiener deconvolution with a constant noise-to-signal ratio `eps`, on
/// the photo reflect-padded by the kernel size (as the restoration pipeline pads).
pub fn wiener_deconvolve(y: &RgbImage, kernel: &Kernel, eps: f64) -> Result<RgbImage> {
    let p = kernel.height().max(kernel.width());
    let pad = Padding::uniform(p);
    let device = candle_core::Device::Cpu;
    let yp = reflect_pad(&to_tensor(y, &device)?, pad)?;
    let (_, _, ph, pw) = yp.dims4()?;
    let op: Arc<dyn LinearOperator> = Arc::new(Blur::new(kernel.clone(), ph, pw)?);
    let x = crop(&op.regularized_inverse(&yp, eps)?, pad)?.clamp(-1.0, 1.0)?;
    from_tensor(&x, 0)
}

/// The Wiener regularisations [`best_wiener`] tries.
pub const WIENER_EPS: [f64; 9] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0];

/// The ε of [`WIENER_EPS`] with the best mean PSNR over `(blurry, truth)` pairs, and that mean:
/// an oracle-tuned classical reference (favourable to the reference).
pub fn best_wiener(pairs: &[(&RgbImage, &RgbImage)], kernel: &Kernel) -> Result<(f64, f64)> {
    let mut best = (WIENER_EPS[0], f64::NEG_INFINITY);
    for &eps in &WIENER_EPS {
        let mut total = 0.0;
        for (y, truth) in pairs {
            total += crate::restore::psnr(&wiener_deconvolve(y, kernel, eps)?, truth);
        }
        let mean = total / pairs.len().max(1) as f64;
        if mean > best.1 {
            best = (eps, mean);
        }
    }
    Ok(best)
}

/// Bicubic upsampling by an integer `factor` (see
/// [`crate::inverse::classical::bicubic_plane`]), clipped to `[0, 1]`.
pub fn bicubic_upsample(y: &RgbImage, factor: usize) -> RgbImage {
    let (w, h) = (y.width, y.height);
    let mut out = RgbImage::new(w * factor, h * factor);
    for c in 0..3 {
        let plane: Vec<f64> = (0..w * h).map(|i| f64::from(y.data[i * 3 + c])).collect();
        for (i, v) in bicubic_plane(&plane, w, h, factor).into_iter().enumerate() {
            out.data[i * 3 + c] = (v as f32).clamp(0.0, 1.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: usize, h: usize, f: impl Fn(f64, f64) -> f64) -> RgbImage {
        let mut img = RgbImage::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let v = f(x as f64, y as f64) as f32;
                img.data[(y * w + x) * 3..(y * w + x) * 3 + 3].fill(v);
            }
        }
        img
    }

    /// Quadratics are biharmonic: a hole in one is filled back exactly.
    #[test]
    fn biharmonic_fill_restores_a_quadratic_exactly() -> Result<()> {
        let (w, h) = (48, 40);
        let truth = ramp(w, h, |x, y| {
            0.2 + 0.01 * x + 0.004 * y + 0.0002 * (x - 20.0) * (y - 15.0)
        });
        let fill: Vec<bool> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (10..34).contains(&x) && (8..30).contains(&y)
            })
            .collect();
        let mut holed = truth.clone();
        for (i, &f) in fill.iter().enumerate() {
            if f {
                holed.data[i * 3..i * 3 + 3].fill(0.9);
            }
        }
        let filled = biharmonic_fill(&holed, &fill)?;
        let err = filled
            .data
            .iter()
            .zip(&truth.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max error {err}");
        Ok(())
    }

    /// Holes that reach the border or a corner are filled within the range of what surrounds
    /// them (the fill is smooth; it never runs off to values the photo does not have).
    #[test]
    fn holes_at_the_border_stay_within_the_photos_range() -> Result<()> {
        let (w, h) = (64, 48);
        let truth = ramp(w, h, |x, y| {
            0.4 * (x * 0.21).sin() * (y * 0.13).cos() + 0.1 * (x * 0.05 + y * 0.07).sin()
        });
        let holes: [&dyn Fn(usize, usize) -> bool; 3] = [
            &|x, y| x < 20 && (10..30).contains(&y),
            &|x, y| x + y < 30,
            &|x, y| y + 12 >= h && (5..60).contains(&x) || (x + 6 >= w),
        ];
        for (k, hole) in holes.iter().enumerate() {
            let fill: Vec<bool> = (0..w * h).map(|i| hole(i % w, i / w)).collect();
            let filled = biharmonic_fill(&truth, &fill)?;
            let (lo, hi) = filled
                .data
                .iter()
                .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
            assert!(
                lo > -1.0 && hi < 1.0,
                "hole {k}: fill ranges over [{lo}, {hi}], the photo over [-0.5, 0.5]"
            );
        }
        Ok(())
    }

    #[test]
    fn bicubic_keeps_constants_and_linear_ramps() {
        let img = ramp(12, 10, |x, y| 0.1 + 0.02 * x + 0.03 * y);
        let up = bicubic_upsample(&img, 4);
        // Away from the clamped edges, a linear ramp is reproduced exactly.
        for oy in 8..32 {
            for ox in 8..40 {
                let (sx, sy) = ((ox as f64 + 0.5) / 4.0 - 0.5, (oy as f64 + 0.5) / 4.0 - 0.5);
                let want = 0.1 + 0.02 * sx + 0.03 * sy;
                let got = f64::from(up.pixel(ox, oy)[0]);
                assert!((got - want).abs() < 1e-5, "({ox}, {oy}): {got} vs {want}");
            }
        }
    }
}
