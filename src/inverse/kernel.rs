//! Blur kernels: Gaussian, linear motion, and arbitrary kernels (from values or a grayscale image).
//!
//! A kernel is non-negative and sums to one. Its centre is pixel `(h/2, w/2)` (integer division),
//! which [`crate::inverse::Blur`] rolls to the origin, so odd-sized symmetric kernels do not shift
//! the image.

use std::path::Path;

use crate::{Error, Result};

/// A normalised, non-negative 2-D blur kernel in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    h: usize,
    w: usize,
    data: Vec<f64>,
}

impl Kernel {
    /// A kernel from raw values (row-major `h × w`), normalised to sum to one.
    pub fn from_values(h: usize, w: usize, data: Vec<f64>) -> Result<Self> {
        if h == 0 || w == 0 {
            return Err(Error::invalid(
                "kernel size",
                format!("{h}×{w}"),
                "a kernel needs at least one pixel",
            ));
        }
        if data.len() != h * w {
            return Err(Error::shape("kernel values", h * w, data.len()));
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "blur kernel".into(),
            });
        }
        if data.iter().any(|&v| v < 0.0) {
            return Err(Error::invalid(
                "blur kernel",
                "negative values",
                "blur kernels must be non-negative",
            ));
        }
        let sum: f64 = data.iter().sum();
        if sum <= 0.0 {
            return Err(Error::invalid(
                "blur kernel",
                "all zero",
                "a blur kernel needs some positive weight",
            ));
        }
        Ok(Self {
            h,
            w,
            data: data.into_iter().map(|v| v / sum).collect(),
        })
    }

    /// An isotropic Gaussian with standard deviation `sigma` pixels on an odd `size × size` grid.
    pub fn gaussian(sigma: f64, size: usize) -> Result<Self> {
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(Error::invalid(
                "Gaussian σ",
                sigma,
                "must be a positive number of pixels",
            ));
        }
        if size.is_multiple_of(2) {
            return Err(Error::invalid(
                "Gaussian kernel size",
                size,
                "must be odd so the kernel has a centre pixel",
            ));
        }
        let c = (size / 2) as f64;
        let mut data = Vec::with_capacity(size * size);
        for r in 0..size {
            for col in 0..size {
                let d2 = (r as f64 - c).powi(2) + (col as f64 - c).powi(2);
                data.push((-d2 / (2.0 * sigma * sigma)).exp());
            }
        }
        Self::from_values(size, size, data)
    }

    /// The Gaussian size used when none is given: odd and covering ±3σ.
    pub fn gaussian_default_size(sigma: f64) -> usize {
        let half = (3.0 * sigma).ceil().max(1.0) as usize;
        2 * half + 1
    }

    /// Linear motion blur: a line segment `length` pixels long at `angle_deg` degrees
    /// (counter-clockwise from the x axis), anti-aliased, on the smallest odd square grid that
    /// holds it.
    pub fn motion(length: f64, angle_deg: f64) -> Result<Self> {
        if !(length >= 1.0 && length.is_finite()) {
            return Err(Error::invalid(
                "motion length",
                length,
                "must be at least 1 pixel",
            ));
        }
        if !angle_deg.is_finite() {
            return Err(Error::invalid(
                "motion angle",
                angle_deg,
                "must be a finite number of degrees",
            ));
        }
        let size = {
            let s = length.ceil() as usize;
            if s.is_multiple_of(2) { s + 1 } else { s }
        };
        let c = (size / 2) as f64;
        let theta = angle_deg.to_radians();
        let (dx, dy) = (theta.cos(), -theta.sin()); // image rows grow downwards
        let mut data = vec![0.0; size * size];
        // Dense samples along the segment, splatted bilinearly: an anti-aliased line of even weight.
        let n = (length * 16.0).ceil() as usize + 1;
        for i in 0..n {
            let t = if n == 1 {
                0.0
            } else {
                (i as f64 / (n - 1) as f64 - 0.5) * (length - 1.0)
            };
            let (x, y) = (c + t * dx, c + t * dy);
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            for (oy, wy) in [(0.0, 1.0 - fy), (1.0, fy)] {
                for (ox, wx) in [(0.0, 1.0 - fx), (1.0, fx)] {
                    let (px, py) = (x0 + ox, y0 + oy);
                    if px >= 0.0 && py >= 0.0 && (px as usize) < size && (py as usize) < size {
                        data[py as usize * size + px as usize] += wx * wy;
                    }
                }
            }
        }
        Self::from_values(size, size, data)
    }

    /// A kernel from a grayscale (or colour, converted to luma) image file, normalised.
    pub fn from_image_file(path: &Path) -> Result<Self> {
        let img = image::open(path)
            .map_err(|source| Error::Image {
                path: path.to_owned(),
                source,
            })?
            .into_luma16();
        let (w, h) = img.dimensions();
        Self::from_values(h as usize, w as usize, img.into_raw().into_iter().map(|v| f64::from(v) / 65535.0).collect())
            .map_err(|e| match e {
                Error::InvalidParameter { reason, .. } => Error::invalid(
                    "blur kernel file",
                    path.display(),
                    format!("{reason}; the file should be a grayscale image of the kernel, bright where the blur spreads light"),
                ),
                other => other,
            })
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.h
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.w
    }

    /// Row-major values (sum to one).
    pub fn values(&self) -> &[f64] {
        &self.data
    }

    /// Centre pixel `(row, col)`.
    pub fn centre(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }

    /// The kernel flipped in both axes (the kernel of the adjoint convolution).
    pub fn flipped(&self) -> Self {
        Self {
            h: self.h,
            w: self.w,
            data: self.data.iter().rev().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_is_normalised_and_symmetric() -> Result<()> {
        let k = Kernel::gaussian(0.75, 11)?;
        let sum: f64 = k.values().iter().sum();
        assert!((sum - 1.0).abs() < 1e-12);
        assert_eq!(k, k.flipped());
        let max = k.values().iter().copied().fold(0.0, f64::max);
        assert_eq!(k.values()[5 * 11 + 5], max, "peak at the centre");
        Ok(())
    }

    #[test]
    fn motion_kernel_follows_its_angle() -> Result<()> {
        let h = Kernel::motion(9.0, 0.0)?;
        assert_eq!(h.height(), 9);
        // Horizontal: all weight on the middle row.
        let middle: f64 = h.values()[4 * 9..5 * 9].iter().sum();
        assert!(
            (middle - 1.0).abs() < 1e-9,
            "horizontal line mass on middle row {middle}"
        );
        let v = Kernel::motion(9.0, 90.0)?;
        let column: f64 = (0..9).map(|r| v.values()[r * 9 + 4]).sum();
        assert!(
            (column - 1.0).abs() < 1e-6,
            "vertical line mass on middle column {column}"
        );
        Ok(())
    }

    #[test]
    fn bad_kernels_are_rejected() {
        assert!(Kernel::gaussian(-1.0, 5).is_err());
        assert!(Kernel::gaussian(1.0, 4).is_err());
        assert!(Kernel::motion(0.5, 0.0).is_err());
        assert!(Kernel::from_values(2, 2, vec![0.0; 4]).is_err());
        assert!(Kernel::from_values(2, 2, vec![1.0, f64::NAN, 0.0, 0.0]).is_err());
        assert!(Kernel::from_values(2, 2, vec![1.0, -0.5, 0.0, 0.0]).is_err());
        assert!(Kernel::from_values(2, 2, vec![1.0; 3]).is_err());
    }
}
