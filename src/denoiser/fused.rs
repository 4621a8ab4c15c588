//! Fused element-wise layers with one-pass gradients, on channels-last f32 CPU tensors.
//!
//! candle builds SiLU's gradient and a broadcast scale-and-shift from several separate tensor
//! operations, each a full pass over memory with broadcast indexing. Fused, a residual block's
//! activations take one pass forward and one backward. Off the CPU (or in another dtype) the same
//! functions fall back to candle's composed operations, with identical results up to rounding
//! (`tests/denoiser.rs`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

/// Elements per parallel piece of an element-wise pass.
const PIECE: usize = 1 << 14;

/// `e^x` to about one unit in the last place, in straight-line arithmetic that the compiler
/// vectorises (the library `exp` is a call per element, which made SiLU the slowest
/// element-wise pass). Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6
/// polynomial for `e^r`, and `2^n` written into the exponent bits. Inputs are clamped to
/// `[-87.3, 88.3]`, where the result stays a normal, finite `f32`.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    // n as an integer, read from the rounded sum's low bits (`as i32` would not vectorise).
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    er * f32::from_bits((ni.wrapping_add(127) as u32) << 23)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX2 where present),
/// chosen at run time: the element-wise loops below vectorise 8 lanes wide instead of the
/// baseline's 4. Multiply and add stay separate instructions on every path, so results do not
/// depend on the CPU.
fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => match l.contiguous_offsets() {
            Some((a, b)) => Ok(&v[a..b]),
            None => candle_core::bail!("{what}: the input must be contiguous"),
        },
        _ => candle_core::bail!("{what}: only f32 is supported"),
    }
}

fn fusable(ts: &[&Tensor]) -> bool {
    !super::conv::reference_ops()
        && ts
            .iter()
            .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `x·sigmoid(x)`.
struct Silu;

/// `g·(σ(x) + x·σ(x)·(1 − σ(x)))`: the gradient of [`Silu`] at `x` for the upstream `g`.
struct SiluGrad;

impl CustomOp1 for Silu {
    fn name(&self) -> &'static str {
        "fused-silu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "silu")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(PIECE)
            .zip(x.par_chunks(PIECE))
            .for_each(|(o, x)| {
                simd(|| {
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = v * sigmoid(v);
                    }
                });
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.contiguous()?
                .apply_op2_no_bwd(&grad.contiguous()?, &SiluGrad)?,
        ))
    }
}

impl CustomOp2 for SiluGrad {
    fn name(&self) -> &'static str {
        "fused-silu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "silu grad")?;
        let g = slice(s2, l2, "silu grad")?;
        if x.len() != g.len() {
            candle_core::bail!("silu grad: {:?} against {:?}", l1.shape(), l2.shape());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(PIECE)
            .zip(x.par_chunks(PIECE).zip(g.par_chunks(PIECE)))
            .for_each(|(o, (x, g))| {
                simd(|| {
                    for ((o, &v), &g) in o.iter_mut().zip(x).zip(g) {
                        let s = sigmoid(v);
                        *o = g * s * (1.0 + v * (1.0 - s));
                    }
                });
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// SiLU, `x·sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    use super::profile;
    let bytes = 2.0 * profile::bytes(x);
    profile::timed("SiLU", || profile::shape(x), 0.0, bytes, || silu_inner(x))
}

fn silu_inner(x: &Tensor) -> Result<Tensor> {
    if fusable(&[x]) {
        Ok(x.contiguous()?.apply_op1(Silu)?)
    } else {
        Ok(candle_nn::ops::silu(x)?)
    }
}

/// `silu(h·(1 + scale) + shift)` for `h`: `[B, H, W, C]` and `scale`, `shift`: `[B, C]`.
struct FilmSilu;

/// The gradients of [`FilmSilu`] packed in one buffer: `dh` (like `h`), then `dscale` and
/// `dshift` (`[B, C]` each).
struct FilmSiluGrad;

fn film_dims(h: &Layout, s: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (b, hh, w, c) = h.shape().dims4()?;
    if s.shape().dims() != [b, c] {
        candle_core::bail!("film: scale {:?} does not fit {:?}", s.shape(), h.shape());
    }
    Ok((b, hh * w, c))
}

impl CustomOp3 for FilmSilu {
    fn name(&self) -> &'static str {
        "fused-film-silu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = slice(s1, l1, "film")?;
        let scale = slice(s2, l2, "film scale")?;
        let shift = slice(s3, l3, "film shift")?;
        let (_, n, c) = film_dims(l1, l2)?;
        film_dims(l1, l3)?;
        let mut out = vec![0f32; h.len()];
        out.par_chunks_mut(n * c)
            .zip(h.par_chunks(n * c))
            .enumerate()
            .for_each(|(b, (o, h))| {
                let (sc, sh) = (&scale[b * c..(b + 1) * c], &shift[b * c..(b + 1) * c]);
                simd(|| {
                    for (o, h) in o.chunks_mut(c).zip(h.chunks(c)) {
                        for (((o, &h), &sc), &sh) in o.iter_mut().zip(h).zip(sc).zip(sh) {
                            let z = h * (1.0 + sc) + sh;
                            *o = z * sigmoid(z);
                        }
                    }
                });
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        scale: &Tensor,
        shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, hh, w, c) = h.dims4()?;
        let n = b * hh * w * c;
        // Pack (h, grad) side by side so one op sees both; scale and shift in a second input.
        let hg = Tensor::cat(&[h.flatten_all()?, grad.contiguous()?.flatten_all()?], 0)?;
        let ss = Tensor::stack(&[scale.contiguous()?, shift.contiguous()?], 0)?;
        let packed = hg.apply_op2_no_bwd(&ss, &FilmSiluGrad)?;
        let dh = packed.narrow(0, 0, n)?.reshape((b, hh, w, c))?;
        let dscale = packed.narrow(0, n, b * c)?.reshape((b, c))?;
        let dshift = packed.narrow(0, n + b * c, b * c)?.reshape((b, c))?;
        Ok((Some(dh), Some(dscale), Some(dshift)))
    }
}

impl CustomOp2 for FilmSiluGrad {
    fn name(&self) -> &'static str {
        "fused-film-silu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let hg = slice(s1, l1, "film grad")?;
        let ss = slice(s2, l2, "film grad")?;
        let (_, b, c) = l2.shape().dims3()?;
        let n = hg.len() / 2;
        let (h, g) = hg.split_at(n);
        let (scale, shift) = ss.split_at(b * c);
        let per = n / b.max(1);
        let mut out = vec![0f32; n + 2 * b * c];
        let (dh, dss) = out.split_at_mut(n);
        // Per image: dh, and the sums over pixels for dscale and dshift.
        let sums: Vec<(Vec<f32>, Vec<f32>)> = dh
            .par_chunks_mut(per)
            .zip(h.par_chunks(per).zip(g.par_chunks(per)))
            .enumerate()
            .map(|(bi, (dh, (h, g)))| {
                let (sc, sh) = (&scale[bi * c..(bi + 1) * c], &shift[bi * c..(bi + 1) * c]);
                let (mut ds, mut dt) = (vec![0f32; c], vec![0f32; c]);
                simd(|| {
                    let (sc, sh) = (&sc[..c], &sh[..c]);
                    let (ds, dt) = (&mut ds[..c], &mut dt[..c]);
                    for ((dh, h), g) in dh.chunks_mut(c).zip(h.chunks(c)).zip(g.chunks(c)) {
                        // Equal lengths, stated once, so the loop runs without bounds checks.
                        let (dh, h, g) = (&mut dh[..c], &h[..c], &g[..c]);
                        for k in 0..c {
                            let z = h[k] * (1.0 + sc[k]) + sh[k];
                            let s = sigmoid(z);
                            let dz = g[k] * s * (1.0 + z * (1.0 - s));
                            dh[k] = dz * (1.0 + sc[k]);
                            ds[k] += dz * h[k];
                            dt[k] += dz;
                        }
                    }
                });
                (ds, dt)
            })
            .collect();
        let (dscale, dshift) = dss.split_at_mut(b * c);
        for (bi, (ds, dt)) in sums.into_iter().enumerate() {
            dscale[bi * c..(bi + 1) * c].copy_from_slice(&ds);
            dshift[bi * c..(bi + 1) * c].copy_from_slice(&dt);
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * b * c)))
    }
}

/// `silu(h·(1 + scale) + shift)`: a residual block's noise-level modulation and activation, for
/// `h`: `[B, H, W, C]` and `scale`, `shift`: `[B, C]`.
pub fn film_silu(h: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    use super::profile;
    let bytes = 2.0 * profile::bytes(h);
    profile::timed(
        "FiLM + SiLU",
        || profile::shape(h),
        0.0,
        bytes,
        || film_silu_inner(h, scale, shift),
    )
}

fn film_silu_inner(h: &Tensor, scale: &Tensor, shift: &Tensor) -> Result<Tensor> {
    if fusable(&[h, scale, shift]) {
        return Ok(h.contiguous()?.apply_op3(
            &scale.contiguous()?,
            &shift.contiguous()?,
            FilmSilu,
        )?);
    }
    let (b, _, _, c) = h.dims4()?;
    let scale = scale.reshape((b, 1, 1, c))?;
    let shift = shift.reshape((b, 1, 1, c))?;
    Ok(candle_nn::ops::silu(
        &h.broadcast_mul(&(scale + 1.0)?)?.broadcast_add(&shift)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::exp;

    #[test]
    fn exp_is_within_two_ulp_of_the_library_exp_over_the_clamped_range() {
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.3 + (88.3 + 87.3) * i as f64 / 2_000_000.0;
            let x = x as f32;
            let truth = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(got.is_finite() && got > 0.0, "exp({x}) = {got}");
            worst = worst.max(((got - truth) / truth).abs());
        }
        // One f32 unit in the last place is 2⁻²³ ≈ 1.19e-7 relative, at most.
        assert!(worst < 2.0 * 1.19e-7, "worst relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) >= 0.0 && exp(-1e4) < 1e-37);
        assert!(exp(1e4).is_finite());
    }
}
