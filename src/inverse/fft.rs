//! 2-D complex FFT of `H × W` planes (rows, then columns through a transpose), built on rustfft.

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

/// Planned forward and inverse transforms for one plane size.
#[derive(Clone)]
pub struct Fft2 {
    h: usize,
    w: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
}

impl std::fmt::Debug for Fft2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fft2({}×{})", self.h, self.w)
    }
}

impl Fft2 {
    /// Plans transforms for `h × w` planes.
    pub fn new(h: usize, w: usize) -> Self {
        let mut planner = FftPlanner::new();
        Self {
            h,
            w,
            row_fwd: planner.plan_fft_forward(w),
            row_inv: planner.plan_fft_inverse(w),
            col_fwd: planner.plan_fft_forward(h),
            col_inv: planner.plan_fft_inverse(h),
        }
    }

    /// Plane height.
    pub fn height(&self) -> usize {
        self.h
    }

    /// Plane width.
    pub fn width(&self) -> usize {
        self.w
    }

    /// In-place unnormalised forward DFT of a row-major `h × w` plane.
    pub fn forward(&self, plane: &mut [Complex64]) {
        self.run(plane, &*self.row_fwd, &*self.col_fwd);
    }

    /// In-place inverse DFT, normalised by `1/(h w)` so `inverse(forward(x)) = x`.
    pub fn inverse(&self, plane: &mut [Complex64]) {
        self.run(plane, &*self.row_inv, &*self.col_inv);
        let scale = 1.0 / (self.h * self.w) as f64;
        for v in plane.iter_mut() {
            *v *= scale;
        }
    }

    fn run(&self, plane: &mut [Complex64], rows: &dyn Fft<f64>, cols: &dyn Fft<f64>) {
        debug_assert_eq!(plane.len(), self.h * self.w);
        rows.process(plane);
        let mut t = transpose(plane, self.h, self.w);
        cols.process(&mut t);
        let back = transpose(&t, self.w, self.h);
        plane.copy_from_slice(&back);
    }

    /// Forward DFT of a real plane.
    pub fn forward_real(&self, plane: &[f64]) -> Vec<Complex64> {
        let mut c: Vec<Complex64> = plane.iter().map(|&v| Complex64::new(v, 0.0)).collect();
        self.forward(&mut c);
        c
    }

    /// Inverse DFT, keeping the real part (the imaginary part is round-off for Hermitian input).
    pub fn inverse_real(&self, mut spectrum: Vec<Complex64>) -> Vec<f64> {
        self.inverse(&mut spectrum);
        spectrum.into_iter().map(|c| c.re).collect()
    }
}

fn transpose(src: &[Complex64], rows: usize, cols: usize) -> Vec<Complex64> {
    let mut dst = vec![Complex64::new(0.0, 0.0); src.len()];
    for r in 0..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_matches_naive_dft() {
        let (h, w) = (3, 5);
        let x: Vec<f64> = (0..h * w).map(|i| ((i * 7 % 11) as f64).sin()).collect();
        let fft = Fft2::new(h, w);
        let spec = fft.forward_real(&x);
        // Naive 2-D DFT: X[u,v] = Σ x[r,c] exp(-2πi (u r / h + v c / w)).
        for u in 0..h {
            for v in 0..w {
                let mut acc = Complex64::new(0.0, 0.0);
                for r in 0..h {
                    for c in 0..w {
                        let phase = -2.0
                            * std::f64::consts::PI
                            * ((u * r) as f64 / h as f64 + (v * c) as f64 / w as f64);
                        acc += Complex64::from_polar(x[r * w + c], phase);
                    }
                }
                assert!((acc - spec[u * w + v]).norm() < 1e-9);
            }
        }
        let back = fft.inverse_real(spec);
        for (a, b) in x.iter().zip(&back) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
