//! Circular convolution `A x = k ⊛ x`, diagonal in the 2-D Fourier basis (eps-method.md §3):
//! `A x = IFFT(K̂ X)`, `Aᵀ z = IFFT(conj(K̂) Z)`, and `AᵀA` has eigenvalue `|K̂|²` per frequency,
//! so every solve is one division per frequency. Exact only for circular convolution: pad real
//! photos with [`crate::inverse::pad::reflect_pad`] first and crop after.

use candle_core::Tensor;
use rayon::prelude::*;
use rustfft::num_complex::Complex64;

use super::fft::Fft2;
use super::kernel::Kernel;
use super::{
    Dims4, LinearOperator, OperatorKind, Structure, check_prox_weights, dims4, from_host_f64,
    prox_gains, to_host_f64,
};
use crate::{Error, Result};

/// Circular blur of `h × w` images with a fixed kernel.
#[derive(Debug, Clone)]
pub struct Blur {
    kernel: Kernel,
    fft: Fft2,
    /// `K̂`, the DFT of the kernel rolled so its centre sits at pixel (0, 0).
    khat: Vec<Complex64>,
    /// `|K̂|²`: the eigenvalues of `AᵀA`.
    gram: Vec<f64>,
    label: String,
}

impl Blur {
    /// A blur of `h × w` images by `kernel`; fails when the kernel does not fit the image.
    pub fn new(kernel: Kernel, h: usize, w: usize) -> Result<Self> {
        let (kh, kw) = (kernel.height(), kernel.width());
        if kh > h || kw > w {
            return Err(Error::KernelTooLarge {
                kernel_h: kh,
                kernel_w: kw,
                image_h: h,
                image_w: w,
            });
        }
        let (ch, cw) = kernel.centre();
        let mut rolled = vec![0.0; h * w];
        for r in 0..kh {
            for c in 0..kw {
                let rr = (r + h - ch) % h;
                let cc = (c + w - cw) % w;
                rolled[rr * w + cc] += kernel.values()[r * kw + c];
            }
        }
        let fft = Fft2::new(h, w);
        let khat = fft.forward_real(&rolled);
        let gram = khat.iter().map(Complex64::norm_sqr).collect();
        let label = format!("blur {kh}×{kw} on {h}×{w}");
        Ok(Self {
            kernel,
            fft,
            khat,
            gram,
            label,
        })
    }

    /// Sets the display name (e.g. `"Gaussian blur σ=2"`).
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The kernel.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Image size `(h, w)` this operator acts on.
    pub fn image_size(&self) -> (usize, usize) {
        (self.fft.height(), self.fft.width())
    }

    /// `|K̂|²` per frequency (row-major), the eigenvalues of `AᵀA`.
    pub fn gram_eigenvalues(&self) -> &[f64] {
        &self.gram
    }

    /// `K̂` per frequency (row-major): the eigenvalues of `A` in the Fourier basis.
    pub fn kernel_spectrum(&self) -> &[Complex64] {
        &self.khat
    }

    /// `conj(K̂)·Ŷ`, the spectrum of `Aᵀy` for one `h × w` measurement plane (row-major).
    pub fn adjoint_spectrum(&self, y_plane: &[f64]) -> Vec<Complex64> {
        let mut s = self.fft.forward_real(y_plane);
        for (v, k) in s.iter_mut().zip(&self.khat) {
            *v *= k.conj();
        }
        s
    }

    fn check(&self, x: &Tensor, context: &str) -> Result<Dims4> {
        let d = dims4(x, context)?;
        let (h, w) = self.image_size();
        if (d.2, d.3) != (h, w) {
            return Err(Error::shape(
                context,
                format!("{h}×{w} image"),
                format!("{}×{}", d.2, d.3),
            ));
        }
        Ok(d)
    }

    /// Applies a per-frequency multiplier to every plane of `x`.
    fn filter(
        &self,
        x: &Tensor,
        context: &str,
        gain: &(dyn Fn(usize) -> Complex64 + Sync),
    ) -> Result<Tensor> {
        let dims = self.check(x, context)?;
        let plane = dims.2 * dims.3;
        let mut host = to_host_f64(x)?;
        host.par_chunks_mut(plane).for_each(|p| {
            let mut spec = self.fft.forward_real(p);
            for (i, s) in spec.iter_mut().enumerate() {
                *s *= gain(i);
            }
            p.copy_from_slice(&self.fft.inverse_real(spec));
        });
        from_host_f64(host, dims, x)
    }
}

impl LinearOperator for Blur {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn kind(&self) -> OperatorKind {
        OperatorKind::Blur
    }

    fn structure(&self) -> Structure<'_> {
        Structure::Blur(self)
    }

    fn measurement_dims(&self, image: Dims4) -> Result<Dims4> {
        let (h, w) = self.image_size();
        if (image.2, image.3) != (h, w) {
            return Err(Error::shape(
                "blur input",
                format!("{h}×{w} image"),
                format!("{}×{}", image.2, image.3),
            ));
        }
        Ok(image)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.filter(x, "blur A x", &|i| self.khat[i])
    }

    fn adjoint(&self, y: &Tensor) -> Result<Tensor> {
        self.filter(y, "blur Aᵀ y", &|i| self.khat[i].conj())
    }

    fn is_structured(&self) -> bool {
        true
    }

    fn gram_function_diagonal(
        &self,
        f: &dyn Fn(f64) -> f64,
        (h, w): (usize, usize),
    ) -> Result<Tensor> {
        if (h, w) != self.image_size() {
            return Err(Error::shape(
                "blur diagonal",
                format!("{}×{} image", self.image_size().0, self.image_size().1),
                format!("{h}×{w}"),
            ));
        }
        // A circulant f(AᵀA) has the mean of its eigenvalues on the whole diagonal.
        let d = self.gram.iter().map(|&e| f(e)).sum::<f64>() / self.gram.len().max(1) as f64;
        Ok(Tensor::full(
            d as f32,
            (1, 1, h, w),
            &candle_core::Device::Cpu,
        )?)
    }

    fn spectral(&self, x: &Tensor, f: &dyn Fn(f64) -> f64) -> Result<Tensor> {
        let gains: Vec<Complex64> = self
            .gram
            .iter()
            .map(|&e| Complex64::new(f(e), 0.0))
            .collect();
        self.filter(x, "blur f(AᵀA) x", &|i| gains[i])
    }

    /// Fused proximal map: two forward FFTs and one inverse per plane.
    fn prox(&self, z: &Tensor, y: &Tensor, p: f64, q: f64) -> Result<Tensor> {
        check_prox_weights(p, q)?;
        let zd = self.check(z, "blur prox z")?;
        let yd = self.check(y, "blur prox y")?;
        if zd.1 != yd.1 {
            return Err(Error::shape("blur prox channels", zd.1, yd.1));
        }
        let b = zd.0.max(yd.0);
        super::check_batch("blur prox z", zd.0, b)?;
        super::check_batch("blur prox y", yd.0, b)?;
        let (c, plane) = (zd.1, zd.2 * zd.3);
        let gains: Vec<(f64, f64)> = self.gram.iter().map(|&e| prox_gains(e, p, q)).collect();
        let y_host = to_host_f64(y)?;
        // Aᵀy in the Fourier domain, once per measurement plane (shared when y has batch 1).
        let aty_hat: Vec<Vec<Complex64>> = y_host
            .par_chunks(plane)
            .map(|yp| self.adjoint_spectrum(yp))
            .collect();
        let z_host = to_host_f64(z)?;
        let mut out = vec![0.0; b * c * plane];
        out.par_chunks_mut(plane).enumerate().for_each(|(idx, o)| {
            let (bi, ci) = (idx / c, idx % c);
            let zb = if zd.0 == 1 { 0 } else { bi };
            let yb = if yd.0 == 1 { 0 } else { bi };
            let zp = &z_host[(zb * c + ci) * plane..][..plane];
            let mut spec = self.fft.forward_real(zp);
            let aty = &aty_hat[yb * c + ci];
            for (i, s) in spec.iter_mut().enumerate() {
                let (gz, gy) = gains[i];
                *s = *s * gz + aty[i] * gy;
            }
            o.copy_from_slice(&self.fft.inverse_real(spec));
        });
        from_host_f64(out, (b, c, zd.2, zd.3), z)
    }

    /// The Wiener filter `(KᵀK + ε)⁻¹Kᵀy` with `ε = max(10 σ_y², 10⁻³)`: close to the best
    /// constant-ε filter measured on photos (`eps-studio diagnose --parts deblur`).
    fn observation(&self, y: &Tensor, sigma_y: f64) -> Result<Tensor> {
        self.check(y, "blur observation")?;
        self.regularized_inverse(y, (10.0 * sigma_y * sigma_y).max(1e-3))
    }
}
