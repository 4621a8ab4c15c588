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

use crate::inverse::pad::{Padding, crop, reflect_pad};
use crate::inverse::{Blur, Kernel, LinearOperator};
use crate::photo::RgbImage;
use crate::restore::{from_tensor, to_tensor};
use crate::{Error, Result};

/// Conjugate-gradient iterations per pyramid level of [`biharmonic_fill`], and the relative
/// residual at which a level stops early.
const CG_ITERATIONS: usize = 400;
const CG_TOLERANCE: f64 = 1e-7;

/// Fills the pixels where `fill` is true so that the result is biharmonic there (smoothest
/// continuation of the surroundings); every other pixel is returned unchanged.
///
/// Solved per channel by conjugate gradients on the normal equations of
/// `min Σ_p (Δu)(p)²` over the hidden pixels (`p` ranging over interior pixels whose stencil
/// touches the hole), started from the solution at half resolution so large holes converge in a
/// few hundred iterations.
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
        let solved = solve_level(&plane, fill, w, h);
        for (i, v) in solved.into_iter().enumerate() {
            if fill[i] {
                out.data[i * 3 + c] = v as f32;
            }
        }
    }
    Ok(out)
}

/// One channel: a coarse solution as the starting point, then CG at this resolution.
fn solve_level(plane: &[f64], fill: &[bool], w: usize, h: usize) -> Vec<f64> {
    let hidden: Vec<usize> = (0..w * h).filter(|&i| fill[i]).collect();
    let mut u = plane.to_vec();
    // Starting point: the half-resolution solution, or the mean of the known pixels.
    if w >= 12 && h >= 12 && hidden.len() > 64 {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut cplane = vec![0.0; cw * ch];
        let mut cfill = vec![false; cw * ch];
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut s, mut n, mut any_hidden) = (0.0, 0, false);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        if fill[y * w + x] {
                            any_hidden = true;
                        } else {
                            s += plane[y * w + x];
                            n += 1;
                        }
                    }
                }
                cfill[cy * cw + cx] = any_hidden;
                cplane[cy * cw + cx] = if n > 0 { s / n as f64 } else { 0.0 };
            }
        }
        if cfill.iter().any(|&f| !f) {
            let coarse = solve_level(&cplane, &cfill, cw, ch);
            for &i in &hidden {
                let (x, y) = (i % w, i / w);
                u[i] = coarse[(y / 2).min(ch - 1) * cw + (x / 2).min(cw - 1)];
            }
        }
    } else {
        let known: Vec<f64> = (0..w * h).filter(|&i| !fill[i]).map(|i| plane[i]).collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        for &i in &hidden {
            u[i] = mean;
        }
    }
    // Interior pixels whose 5-point stencil touches the hole: the terms of the energy.
    let interior = |i: usize| {
        let (x, y) = (i % w, i / w);
        x > 0 && y > 0 && x + 1 < w && y + 1 < h
    };
    let stencil = |i: usize| [i, i - 1, i + 1, i - w, i + w];
    let mut touches = vec![false; w * h];
    for &i in &hidden {
        let (x, y) = (i % w, i / w);
        for (dx, dy) in [(0i64, 0i64), (-1, 0), (1, 0), (0, -1), (0, 1)] {
            let (nx, ny) = (x as i64 + dx, y as i64 + dy);
            if nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h {
                let j = ny as usize * w + nx as usize;
                if interior(j) {
                    touches[j] = true;
                }
            }
        }
    }
    let terms: Vec<usize> = (0..w * h).filter(|&i| touches[i]).collect();
    let laplacian = |v: &[f64], p: usize| -> f64 {
        let s = stencil(p);
        v[s[1]] + v[s[2]] + v[s[3]] + v[s[4]] - 4.0 * v[s[0]]
    };
    // Gradient of ½Σ(Δu)² with respect to the hidden pixels, scattered into a full image.
    let grad = |v: &[f64], out: &mut [f64]| {
        out.iter_mut().for_each(|o| *o = 0.0);
        for &p in &terms {
            let l = laplacian(v, p);
            let s = stencil(p);
            out[s[0]] -= 4.0 * l;
            for &q in &s[1..] {
                out[q] += l;
            }
        }
    };
    // CG on M z = −g(u0) where M is the (linear) Hessian restricted to the hidden pixels.
    let mut g = vec![0.0; w * h];
    grad(&u, &mut g);
    let mut r: Vec<f64> = hidden.iter().map(|&i| -g[i]).collect();
    let mut d = r.clone();
    let mut rr: f64 = r.iter().map(|v| v * v).sum();
    let start = rr.sqrt().max(1e-30);
    let mut dir = vec![0.0; w * h];
    let mut md = vec![0.0; w * h];
    for _ in 0..CG_ITERATIONS {
        if rr.sqrt() <= CG_TOLERANCE * start {
            break;
        }
        for (k, &i) in hidden.iter().enumerate() {
            dir[i] = d[k];
        }
        grad(&dir, &mut md);
        let dmd: f64 = hidden.iter().enumerate().map(|(k, &i)| d[k] * md[i]).sum();
        if dmd <= 0.0 {
            break;
        }
        let a = rr / dmd;
        for (k, &i) in hidden.iter().enumerate() {
            u[i] += a * d[k];
            r[k] -= a * md[i];
        }
        let rr_new: f64 = r.iter().map(|v| v * v).sum();
        let beta = rr_new / rr;
        for (dk, rk) in d.iter_mut().zip(&r) {
            *dk = rk + beta * *dk;
        }
        rr = rr_new;
    }
    u
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

/// Keys' cubic convolution kernel with a = −0.5 (Catmull–Rom).
fn cubic(t: f64) -> f64 {
    let t = t.abs();
    if t <= 1.0 {
        1.5 * t * t * t - 2.5 * t * t + 1.0
    } else if t < 2.0 {
        -0.5 * t * t * t + 2.5 * t * t - 4.0 * t + 2.0
    } else {
        0.0
    }
}

/// Bicubic upsampling by an integer `factor`: output pixel `o` samples the input at
/// `(o + 0.5)/factor − 0.5`, edges clamped.
pub fn bicubic_upsample(y: &RgbImage, factor: usize) -> RgbImage {
    let (w, h) = (y.width * factor, y.height * factor);
    let taps = |o: usize, n_in: usize| -> [(usize, f64); 4] {
        let src = (o as f64 + 0.5) / factor as f64 - 0.5;
        let base = src.floor();
        let mut t = [(0usize, 0.0f64); 4];
        for (k, tap) in t.iter_mut().enumerate() {
            let i = base as i64 - 1 + k as i64;
            *tap = (i.clamp(0, n_in as i64 - 1) as usize, cubic(src - i as f64));
        }
        t
    };
    let xs: Vec<_> = (0..w).map(|x| taps(x, y.width)).collect();
    let ys: Vec<_> = (0..h).map(|r| taps(r, y.height)).collect();
    let mut out = RgbImage::new(w, h);
    for (oy, yt) in ys.iter().enumerate() {
        for (ox, xt) in xs.iter().enumerate() {
            let mut acc = [0.0f64; 3];
            for &(iy, wy) in yt {
                for &(ix, wx) in xt {
                    let p = y.pixel(ix, iy);
                    for (a, v) in acc.iter_mut().zip(p) {
                        *a += wy * wx * f64::from(v);
                    }
                }
            }
            let o = (oy * w + ox) * 3;
            for (d, a) in out.data[o..o + 3].iter_mut().zip(acc) {
                *d = (a as f32).clamp(0.0, 1.0);
            }
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
