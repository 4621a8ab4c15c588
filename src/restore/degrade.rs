//! Degradations at photo resolution: the operator a photographer picks, and "simulate" mode,
//! which degrades a clean photo so a restoration can be scored against the truth.

use rand::SeedableRng as _;
use rand_distr::{Distribution as _, StandardNormal};
use rayon::prelude::*;

use crate::inverse::Kernel;
use crate::photo::RgbImage;
use crate::{Error, Result};

/// A blur the user can undo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlurSpec {
    /// Gaussian blur with standard deviation `sigma` pixels.
    Gaussian {
        /// Standard deviation in pixels.
        sigma: f64,
    },
    /// Linear motion blur.
    Motion {
        /// Length in pixels.
        length: f64,
        /// Direction in degrees.
        angle_deg: f64,
    },
}

impl BlurSpec {
    /// The kernel, after [`Self::validate`] (so it is never larger than 151 × 151).
    pub fn kernel(&self) -> Result<Kernel> {
        self.validate()?;
        match *self {
            Self::Gaussian { sigma } => {
                Kernel::gaussian(sigma, Kernel::gaussian_default_size(sigma).max(3))
            }
            Self::Motion { length, angle_deg } => Kernel::motion(length, angle_deg),
        }
    }

    /// Checks σ, length and angle against [`crate::limits`].
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Gaussian { sigma } => crate::limits::gaussian_sigma(sigma),
            Self::Motion { length, angle_deg } => crate::limits::motion(length, angle_deg),
        }
    }

    /// The kernel's side in pixels, computed without building it (after [`Self::validate`]).
    pub fn kernel_side(&self) -> Result<usize> {
        self.validate()?;
        Ok(match *self {
            Self::Gaussian { sigma } => Kernel::gaussian_default_size(sigma).max(3),
            Self::Motion { length, .. } => {
                let s = length.ceil() as usize;
                if s.is_multiple_of(2) { s + 1 } else { s }
            }
        })
    }

    /// Parses and validates `gaussian:SIGMA` or `motion:LENGTH,ANGLE`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid(
                "blur",
                s,
                "write gaussian:SIGMA (e.g. gaussian:2.0) or motion:LENGTH,ANGLE (e.g. motion:11,45)",
            )
        };
        let (kind, args) = s.split_once(':').ok_or_else(bad)?;
        let nums: Vec<f64> = args
            .split(',')
            .map(|a| a.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad())?;
        let spec = match (kind.trim(), nums.as_slice()) {
            ("gaussian", &[sigma]) => Self::Gaussian { sigma },
            ("motion", &[length, angle_deg]) => Self::Motion { length, angle_deg },
            _ => return Err(bad()),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// A short label, e.g. `"Gaussian σ=2.0"`.
    pub fn label(&self) -> String {
        match *self {
            Self::Gaussian { sigma } => format!("Gaussian blur σ={sigma:.1}"),
            Self::Motion { length, angle_deg } => {
                format!("motion blur {length:.0} px at {angle_deg:.0}°")
            }
        }
    }
}

/// What degraded the photo.
#[derive(Debug, Clone, PartialEq)]
pub enum Degradation {
    /// Pixels to fill (`true`), one per photo pixel.
    Inpaint {
        /// Row-major fill mask.
        fill: Vec<bool>,
        /// Row-major keep-out area (`true`: the fill copies nothing from here), or empty for
        /// none. Its pixels stay measurements; only the patch prior's bank leaves them out.
        keep_out: Vec<bool>,
    },
    /// A blur.
    Deblur(BlurSpec),
    /// Average-pool down-sampling by `factor`; the loaded photo is the small image.
    SuperRes {
        /// 2, 4 or 8.
        factor: usize,
    },
}

impl Degradation {
    /// Inpainting of `fill` (`true`: pixels to fill), with no keep-out area.
    pub fn inpaint(fill: Vec<bool>) -> Self {
        Self::Inpaint {
            fill,
            keep_out: Vec::new(),
        }
    }

    /// Output size for a measurement of `w × h`.
    pub fn output_size(&self, w: usize, h: usize) -> (usize, usize) {
        match self {
            Self::SuperRes { factor } => (w * factor, h * factor),
            _ => (w, h),
        }
    }

    /// Checks the degradation against a measurement of `w × h` without allocating anything large:
    /// the mask's size and that it marks something, the blur kernel fitting inside the photo, the
    /// super-resolution factor.
    pub fn validate(&self, w: usize, h: usize) -> Result<()> {
        match self {
            Self::Inpaint { fill, keep_out } => {
                if fill.len() != w * h {
                    return Err(Error::shape(
                        "inpainting mask",
                        format!("{w}×{h} pixels (the photo's size)"),
                        format!("{} pixels", fill.len()),
                    ));
                }
                if !keep_out.is_empty() && keep_out.len() != w * h {
                    return Err(Error::shape(
                        "keep-out mask",
                        format!("{w}×{h} pixels (the photo's size)"),
                        format!("{} pixels", keep_out.len()),
                    ));
                }
                if !fill.iter().any(|&f| f) {
                    return Err(Error::invalid(
                        "mask",
                        "empty",
                        "paint over what should be filled first",
                    ));
                }
            }
            Self::Deblur(spec) => {
                let side = spec.kernel_side()?;
                if side > w || side > h {
                    return Err(Error::KernelTooLarge {
                        kernel_w: side,
                        kernel_h: side,
                        image_w: w,
                        image_h: h,
                    });
                }
            }
            Self::SuperRes { factor } => crate::limits::sr_factor(*factor)?,
        }
        Ok(())
    }

    /// Checks that [`simulate`] can degrade a clean `w × h` photo, and that the result passes
    /// [`Self::validate`].
    pub fn validate_simulation(&self, w: usize, h: usize) -> Result<()> {
        match self {
            Self::SuperRes { factor } => {
                crate::limits::sr_factor(*factor)?;
                let (sw, sh) = (w / factor, h / factor);
                if sw < 8 || sh < 8 {
                    return Err(Error::invalid(
                        "super-resolution factor",
                        factor,
                        format!(
                            "the photo {w}×{h} would shrink to {sw}×{sh}; simulate with a photo at least {} pixels on each side",
                            8 * factor
                        ),
                    ));
                }
                Ok(())
            }
            // An empty mask simulates nothing to fill, which is fine to show; restoring it is not.
            Self::Inpaint { fill, keep_out }
                if fill.len() == w * h && (keep_out.is_empty() || keep_out.len() == w * h) =>
            {
                Ok(())
            }
            other => other.validate(w, h),
        }
    }

    /// A one-line description.
    pub fn label(&self) -> String {
        match self {
            Self::Inpaint { fill, .. } => {
                let n = fill.iter().filter(|&&f| f).count();
                format!(
                    "inpaint {:.1}% of the photo",
                    100.0 * n as f64 / fill.len().max(1) as f64
                )
            }
            Self::Deblur(b) => b.label(),
            Self::SuperRes { factor } => format!("super-resolution ×{factor}"),
        }
    }
}

/// `k ⊛ x` with mirrored borders, in the same orientation as [`crate::inverse::Blur`]
/// (`y[i, j] = Σ k[r, c] x[i + ch − r, j + cw − c]`). Skips zero taps, so motion kernels are cheap.
pub fn convolve_reflect(x: &RgbImage, kernel: &Kernel) -> RgbImage {
    let (w, h) = (x.width, x.height);
    let (kh, kw) = (kernel.height(), kernel.width());
    let (ch, cw) = kernel.centre();
    let taps: Vec<(isize, isize, f32)> = (0..kh)
        .flat_map(|r| (0..kw).map(move |c| (r, c)))
        .filter_map(|(r, c)| {
            let v = kernel.values()[r * kw + c];
            (v != 0.0).then_some((ch as isize - r as isize, cw as isize - c as isize, v as f32))
        })
        .collect();
    let reflect = |i: isize, n: usize| -> usize {
        if n == 1 {
            return 0;
        }
        let period = 2 * (n as isize - 1);
        let m = i.rem_euclid(period);
        (if m < n as isize { m } else { period - m }) as usize
    };
    let mut out = RgbImage::new(w, h);
    out.data
        .par_chunks_mut(w * 3)
        .enumerate()
        .for_each(|(i, row)| {
            for &(di, dj, v) in &taps {
                let src_row = reflect(i as isize + di, h) * w;
                for j in 0..w {
                    let s = (src_row + reflect(j as isize + dj, w)) * 3;
                    for c in 0..3 {
                        row[j * 3 + c] += v * x.data[s + c];
                    }
                }
            }
        });
    out
}

/// Average-pools by `factor` (the image must divide).
pub fn avg_pool(x: &RgbImage, factor: usize) -> Result<RgbImage> {
    if factor == 0 || !x.width.is_multiple_of(factor) || !x.height.is_multiple_of(factor) {
        return Err(Error::invalid(
            "super-resolution factor",
            factor,
            format!("the image {}×{} must divide by it", x.width, x.height),
        ));
    }
    let (w, h) = (x.width / factor, x.height / factor);
    let mut out = RgbImage::new(w, h);
    let inv = 1.0 / (factor * factor) as f32;
    for y in 0..h {
        for xx in 0..w {
            let mut acc = [0.0_f32; 3];
            for dy in 0..factor {
                for dx in 0..factor {
                    let p = x.pixel(xx * factor + dx, y * factor + dy);
                    for (a, v) in acc.iter_mut().zip(p) {
                        *a += v;
                    }
                }
            }
            let o = (y * w + xx) * 3;
            for (dst, a) in out.data[o..o + 3].iter_mut().zip(acc) {
                *dst = a * inv;
            }
        }
    }
    Ok(out)
}

/// A simulated measurement and the ground truth it came from.
#[derive(Debug, Clone)]
pub struct Simulated {
    /// The degraded photo `y` (in `[0, 1]` units, not clipped: the noise is exactly Gaussian).
    pub y: RgbImage,
    /// The clean photo, cropped to what the degradation can use (SR needs divisible sizes).
    pub truth: RgbImage,
}

/// Degrades a clean photo: `y = A x + σ_y η` with `σ_y` in the network's `[-1, 1]` units
/// (so `σ_y / 2` in `[0, 1]` units). Hidden pixels of an inpainting mask are set to mid-grey.
pub fn simulate(
    x: &RgbImage,
    degradation: &Degradation,
    sigma_y: f64,
    seed: u64,
) -> Result<Simulated> {
    degradation.validate_simulation(x.width, x.height)?;
    let (truth, mut y) = match degradation {
        Degradation::Inpaint { fill, .. } => {
            if fill.len() != x.width * x.height {
                return Err(Error::shape(
                    "inpainting mask",
                    x.width * x.height,
                    fill.len(),
                ));
            }
            (x.clone(), x.clone())
        }
        Degradation::Deblur(spec) => (x.clone(), convolve_reflect(x, &spec.kernel()?)),
        Degradation::SuperRes { factor } => {
            let f = *factor;
            let (w, h) = (x.width / f * f, x.height / f * f);
            if w == 0 || h == 0 {
                return Err(Error::invalid(
                    "super-resolution factor",
                    f,
                    format!(
                        "the photo {}×{} is smaller than one block",
                        x.width, x.height
                    ),
                ));
            }
            let truth = x.crop(0, 0, w, h);
            let y = avg_pool(&truth, f)?;
            (truth, y)
        }
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let scale = (sigma_y / 2.0) as f32;
    for v in &mut y.data {
        let n: f32 = StandardNormal.sample(&mut rng);
        *v += scale * n;
    }
    if let Degradation::Inpaint { fill, .. } = degradation {
        for (i, &f) in fill.iter().enumerate() {
            if f {
                y.data[i * 3..i * 3 + 3].fill(0.5);
            }
        }
    }
    Ok(Simulated { y, truth })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_blurs() -> Result<()> {
        assert_eq!(
            BlurSpec::parse("gaussian:2")?,
            BlurSpec::Gaussian { sigma: 2.0 }
        );
        assert_eq!(
            BlurSpec::parse("motion:11, 45")?,
            BlurSpec::Motion {
                length: 11.0,
                angle_deg: 45.0
            }
        );
        assert!(BlurSpec::parse("box:3").is_err());
        assert!(BlurSpec::parse("gaussian").is_err());
        Ok(())
    }

    #[test]
    fn reflect_convolution_matches_the_circular_operator_inside() -> Result<()> {
        use crate::inverse::{Blur, LinearOperator as _};
        let (w, h) = (24, 20);
        let data: Vec<f32> = (0..w * h * 3)
            .map(|i| ((i * 7919) % 101) as f32 / 100.0)
            .collect();
        let x = RgbImage::from_data(w, h, data)?;
        let k = Kernel::motion(7.0, 30.0)?;
        let ours = convolve_reflect(&x, &k);
        // Planar [1, 3, h, w] for the operator.
        let mut planar = vec![0.0_f32; w * h * 3];
        for i in 0..w * h {
            for c in 0..3 {
                planar[c * w * h + i] = x.data[i * 3 + c];
            }
        }
        let t = candle_core::Tensor::from_vec(planar, (1, 3, h, w), &candle_core::Device::Cpu)?;
        let theirs = Blur::new(k.clone(), h, w)?
            .forward(&t)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (kh, kw) = (k.height(), k.width());
        for y in kh..h - kh {
            for xx in kw..w - kw {
                for c in 0..3 {
                    let a = ours.data[(y * w + xx) * 3 + c];
                    let b = theirs[c * w * h + y * w + xx];
                    assert!((a - b).abs() < 1e-5, "({xx},{y},{c}): {a} vs {b}");
                }
            }
        }
        Ok(())
    }
}
