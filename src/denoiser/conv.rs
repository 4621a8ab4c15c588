//! Convolutions on channels-last (`[B, H, W, C]`) activations, fast on the CPU in both passes.
//!
//! A `k × k` convolution is `im2col(x) · W`: every output pixel becomes one row of `k²·C`
//! input values and the whole layer one matrix product with the weight laid out as
//! `[k·k·C_in, C_out]`. Channels-last makes that product tall and thin (pixels × channels), the
//! shape candle's GEMM runs fastest, and its output is already channels-last. The unfolding is a
//! custom op whose gradient is the matching fold (`col2im`); the product and its two gradients
//! are candle's matrix products. candle's own CPU `conv2d` computes its backward pass without
//! GEMM (a direct-loop transposed convolution), which made training several times slower.
//!
//! Without gradients (sampling), the unfolding goes in bands of output pixels into one buffer
//! reused for every band, and each band's product is written by the `gemm` kernels straight
//! into the layer's output: no large buffer, no allocation per band, no copy of the product
//! (docs/bench.md has the profile that found them); the bands run across the batch's images.
//! Off the CPU the layer uses candle's `conv2d` on a channels-first view.
//! All paths equal `conv2d` up to float rounding (`tests/denoiser.rs`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use super::profile;
use crate::Result;

/// Unfolded elements per band when sampling without gradients (16 MiB of f32).
const BAND_ELEMENTS: usize = 4 << 20;

/// Output columns below which a sampling convolution's product runs on a zero-padded weight.
const NARROW: usize = 16;

/// When set, convolutions and the fused activations use candle's own operations instead (same
/// results up to rounding): the reference `eps-studio bench --train` measures the speed-up
/// against. Off unless a benchmark turns it on.
static REFERENCE_OPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Switches every convolution and fused activation to candle's own operations (`true`) or back
/// to the GEMM-backed and fused ones (`false`, the default). For benchmarks.
pub fn use_reference_ops(on: bool) {
    REFERENCE_OPS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether [`use_reference_ops`] is on.
pub fn reference_ops() -> bool {
    REFERENCE_OPS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Geometry of a square-kernel convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    k: usize,
    stride: usize,
    pad: usize,
}

impl Geometry {
    fn out_len(&self, len: usize) -> usize {
        (len + 2 * self.pad).saturating_sub(self.k) / self.stride + 1
    }

    /// Source index along one axis of output position `o` and tap `t`, if inside `0..len`.
    fn source(&self, o: usize, t: usize, len: usize) -> Option<usize> {
        (o * self.stride + t)
            .checked_sub(self.pad)
            .filter(|&i| i < len)
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => match l.contiguous_offsets() {
            Some((a, b)) => Ok(&v[a..b]),
            None => candle_core::bail!("{what}: the input must be contiguous"),
        },
        _ => candle_core::bail!("{what}: only f32 is supported"),
    }
}

/// Writes the unfolded rows of output pixels `first..` of one image (`src`: `[H, W, C]`): row
/// `p` holds, for each tap `(ky, kx)`, the `C` channels of the source pixel (zero outside the
/// image), then a 1 that multiplies the bias row of the weight.
fn unfold_rows(
    g: Geometry,
    src: &[f32],
    (h, w, c): (usize, usize, usize),
    ow: usize,
    first: usize,
    rows: &mut [f32],
) {
    let row_len = g.k * g.k * c + 1;
    for (p, row) in rows.chunks_mut(row_len).enumerate() {
        row[row_len - 1] = 1.0;
        let (oy, ox) = ((first + p) / ow, (first + p) % ow);
        for ky in 0..g.k {
            let iy = g.source(oy, ky, h);
            for kx in 0..g.k {
                let dst = &mut row[(ky * g.k + kx) * c..(ky * g.k + kx + 1) * c];
                match (iy, g.source(ox, kx, w)) {
                    (Some(iy), Some(ix)) => {
                        dst.copy_from_slice(&src[(iy * w + ix) * c..(iy * w + ix + 1) * c]);
                    }
                    _ => dst.fill(0.0),
                }
            }
        }
    }
}

/// Unfolds `[B, H, W, C]` into `[B·Ho·Wo, k·k·C + 1]` (see [`unfold_rows`]).
struct Im2col {
    g: Geometry,
}

/// The adjoint of [`Im2col`]: adds every unfolded entry back onto the pixel it came from.
struct Col2im {
    g: Geometry,
    dims: (usize, usize, usize, usize),
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "im2col")?;
        let (b, h, w, c) = l.shape().dims4()?;
        let (oh, ow) = (self.g.out_len(h), self.g.out_len(w));
        let row_len = self.g.k * self.g.k * c + 1;
        let mut out = vec![0f32; b * oh * ow * row_len];
        // Parallel over images and bands of output rows.
        let band = oh.div_ceil(8).max(1) * ow;
        out.par_chunks_mut(oh * ow * row_len)
            .zip(x.par_chunks(h * w * c))
            .for_each(|(dst, src)| {
                dst.par_chunks_mut(band * row_len)
                    .enumerate()
                    .for_each(|(i, rows)| {
                        unfold_rows(self.g, src, (h, w, c), ow, i * band, rows);
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from((b * oh * ow, row_len))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let op = Col2im {
            g: self.g,
            dims: arg.dims4()?,
        };
        Ok(Some(grad.contiguous()?.apply_op1(op)?))
    }
}

impl CustomOp1 for Col2im {
    fn name(&self) -> &'static str {
        "col2im-nhwc"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let cols = f32_slice(s, l, "col2im")?;
        let (b, h, w, c) = self.dims;
        let g = self.g;
        let (oh, ow) = (g.out_len(h), g.out_len(w));
        let row_len = g.k * g.k * c + 1;
        if l.shape().dims() != [b * oh * ow, row_len] {
            candle_core::bail!("col2im: {:?} does not unfold {:?}", l.shape(), self.dims);
        }
        let mut out = vec![0f32; b * h * w * c];
        out.par_chunks_mut(h * w * c)
            .zip(cols.par_chunks(oh * ow * row_len))
            .for_each(|(dst, src)| {
                // Gather per destination row so threads never write the same pixel: output row
                // iy receives from the output rows oy with oy·s + ky − p = iy.
                dst.par_chunks_mut(w * c)
                    .enumerate()
                    .for_each(|(iy, line)| {
                        for ky in 0..g.k {
                            let Some(num) = (iy + g.pad).checked_sub(ky) else {
                                continue;
                            };
                            if num % g.stride != 0 || num / g.stride >= oh {
                                continue;
                            }
                            let oy = num / g.stride;
                            for ox in 0..ow {
                                let row =
                                    &src[(oy * ow + ox) * row_len..(oy * ow + ox + 1) * row_len];
                                for kx in 0..g.k {
                                    let Some(ix) = g.source(ox, kx, w) else {
                                        continue;
                                    };
                                    let from = &row[(ky * g.k + kx) * c..(ky * g.k + kx + 1) * c];
                                    for (d, v) in line[ix * c..(ix + 1) * c].iter_mut().zip(from) {
                                        *d += v;
                                    }
                                }
                            }
                        }
                    });
            });
        Ok((CpuStorage::F32(out), Shape::from(self.dims)))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1(Im2col { g: self.g })?))
    }
}

/// `dst = lhs · rhs` for row-major `lhs` `[m, k]`, `rhs` `[k, n]` and `dst` `[m, n]`, with the
/// matrix-product kernels candle itself multiplies with (the `gemm` crate), on rayon's threads.
pub(crate) fn product(lhs: &[f32], rhs: &[f32], dst: &mut [f32], (m, k, n): (usize, usize, usize)) {
    assert!(lhs.len() == m * k, "product: lhs does not hold {m}×{k}");
    product_rows(lhs, k, rhs, dst, (m, k, n), false);
}

/// `dst (+)= lhs · rhs` where row `i` of `lhs` is `lhs[i·row_step .. i·row_step + k]`: rows may
/// overlap (`row_step < k`), which is how a 3×3 convolution reads three neighbouring pixels'
/// channels as one row straight from the padded image. With `accumulate` the product is added
/// to `dst`, else it replaces it.
fn product_rows(
    lhs: &[f32],
    row_step: usize,
    rhs: &[f32],
    dst: &mut [f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) {
    assert!(
        m > 0
            && row_step > 0
            && lhs.len() >= (m - 1) * row_step + k
            && rhs.len() == k * n
            && dst.len() == m * n,
        "product: slices do not match {m}×{k} (row step {row_step}) · {k}×{n}"
    );
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every row `i < m` of `lhs` lies inside the slice (its last element is at
    // (m−1)·row_step + k − 1 < lhs.len(), checked above); `rhs` and `dst` hold exactly k·n and
    // m·n values, row-major with the strides given; `dst` is a unique borrow and overlaps
    // neither input (overlapping *rows of lhs* are only read). With `read_dst` false and alpha
    // 0 every element of `dst` is written; with it true, alpha 1 adds to what `dst` holds.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            1,
            row_step as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            if accumulate { 1.0f32 } else { 0.0f32 },
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The whole convolution without gradients, unfolded band by band (`[B, H, W, C]` and the
/// weight with its bias row, `[k·k·C + 1, C_out]`).
struct BandedConv {
    g: Geometry,
}

impl CustomOp2 for BandedConv {
    fn name(&self) -> &'static str {
        "banded-conv-nhwc"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "conv")?;
        let wt = f32_slice(s2, l2, "conv weight")?;
        let (b, h, w, c) = l1.shape().dims4()?;
        let (row_len, cout) = l2.shape().dims2()?;
        let g = self.g;
        if row_len != g.k * g.k * c + 1 {
            candle_core::bail!("conv: weight {:?} does not fit {c} channels", l2.shape());
        }
        let (oh, ow) = (g.out_len(h), g.out_len(w));
        let band = (BAND_ELEMENTS / row_len).clamp(1, b * oh * ow);
        let mut out = vec![0f32; b * oh * ow * cout];
        // One band buffer for the whole layer, and each band's product written straight into
        // the layer's output: no allocation per band and no copy of the product.
        let mut rows = vec![0f32; band * row_len];
        // Products with fewer than NARROW output columns (the full-resolution head's 3 and 12)
        // leave the GEMM's tiles mostly empty: they run on a weight padded with zero columns
        // into a band buffer, and the real columns are copied out.
        let mut padded = (cout < NARROW).then(|| {
            let mut p = vec![0f32; row_len * NARROW];
            for (dst, src) in p.chunks_mut(NARROW).zip(wt.chunks(cout)) {
                dst[..cout].copy_from_slice(src);
            }
            (p, vec![0f32; band * NARROW])
        });
        let (mut t_unfold, mut t_gemm) = (0.0, 0.0);
        // Bands run over the output pixels of the whole batch, so a batch of small images
        // (the coarse levels, or four samples at once) makes tall products instead of one
        // short product per image.
        let (per_image, total) = (oh * ow, b * oh * ow);
        let mut first = 0;
        while first < total {
            let n = band.min(total - first);
            let chunk = &mut rows[..n * row_len];
            let t = profile::start();
            let piece = n.div_ceil(rayon::current_num_threads().max(1) * 2).max(1);
            chunk
                .par_chunks_mut(piece * row_len)
                .enumerate()
                .for_each(|(i, part)| {
                    // A piece may span images: unfold it image by image.
                    let mut at = first + i * piece;
                    let mut part = part;
                    while !part.is_empty() {
                        let (img, p) = (at / per_image, at % per_image);
                        let take = (per_image - p).min(part.len() / row_len);
                        let (now, rest) = part.split_at_mut(take * row_len);
                        let src = &x[img * h * w * c..(img + 1) * h * w * c];
                        unfold_rows(g, src, (h, w, c), ow, p, now);
                        part = rest;
                        at += take;
                    }
                });
            t_unfold += profile::since(t);
            let t = profile::start();
            let dst = &mut out[first * cout..(first + n) * cout];
            match padded.as_mut() {
                Some((wide, buf)) => {
                    let buf = &mut buf[..n * NARROW];
                    product(chunk, wide, buf, (n, row_len, NARROW));
                    for (d, s) in dst.chunks_mut(cout).zip(buf.chunks(NARROW)) {
                        d.copy_from_slice(&s[..cout]);
                    }
                }
                None => product(chunk, wt, dst, (n, row_len, cout)),
            }
            t_gemm += profile::since(t);
            first += n;
        }
        if profile::enabled() {
            let detail = || format!("{c} → {cout} @ {oh}×{ow}");
            let (pixels, f) = ((b * oh * ow) as f64, 4.0);
            let unfolded = pixels * row_len as f64 * f;
            profile::record(
                "· im2col",
                detail,
                t_unfold,
                0.0,
                (b * h * w * c) as f64 * f + unfolded,
            );
            let flops = 2.0 * pixels * row_len as f64 * cout as f64;
            let gemm_bytes = unfolded + (row_len * cout) as f64 * f + pixels * cout as f64 * f;
            profile::record("· GEMM", detail, t_gemm, flops, gemm_bytes);
        }
        Ok((CpuStorage::F32(out), Shape::from((b, oh, ow, cout))))
    }
}

impl Conv {
    /// The weight as the product multiplies it: `[k·k·C_in + 1, C_out]`, contiguous, the bias as
    /// the last row (zeros without one). Trainable parameters change every step and are laid
    /// out anew on each call (with gradients flowing back to them); fixed ones once.
    fn product_weight(&self, c: usize, cout: usize) -> Result<Tensor> {
        let k = self.g.k;
        let fixed =
            !self.weight.is_variable() && self.bias.as_ref().is_none_or(|b| !b.is_variable());
        if fixed && let Some(wt) = self.product_weight.get() {
            return Ok(wt.clone());
        }
        // [C_out, C_in, k, k] → [k, k, C_in, C_out] → [k·k·C_in, C_out], then the bias row.
        let wt = self
            .weight
            .permute((2, 3, 1, 0))?
            .reshape((k * k * c, cout))?;
        let bias = match &self.bias {
            Some(bias) => bias.reshape((1, cout))?,
            None => Tensor::zeros((1, cout), DType::F32, self.weight.device())?,
        };
        let wt = Tensor::cat(&[&wt, &bias], 0)?.contiguous()?;
        if fixed {
            // A concurrent first call may have set it already: either copy is the same.
            let _ = self.product_weight.set(wt.clone());
        }
        Ok(wt)
    }
}

/// A square-kernel 2-D convolution with bias on `[B, H, W, C]` activations. Parameters are
/// stored as candle-nn's `Conv2d` stores them (`weight` `[C_out, C_in, k, k]`, `bias`
/// `[C_out]`).
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    bias: Option<Tensor>,
    g: Geometry,
    /// The weight laid out for the product, `[k·k·C_in + 1, C_out]` with the bias as its last
    /// row, made on the first forward pass of fixed (non-trainable) parameters and kept: the
    /// re-layout copied every weight of the network once per call.
    product_weight: std::sync::Arc<std::sync::OnceLock<Tensor>>,
}

impl Conv {
    /// A `k × k` convolution from `cin` to `cout` channels with the given stride and zero
    /// padding (the trainer initialises every weight itself).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let bound = 1.0 / ((cin * k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((cout, cin, k, k), "weight", init)?,
            bias: Some(vb.get_with_hints(cout, "bias", Init::Const(0.0))?),
            g: Geometry { k, stride, pad },
            product_weight: Default::default(),
        })
    }

    /// A convolution from existing tensors (`weight` `[C_out, C_in, k, k]`).
    pub fn from_parts(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (_, _, k, k2) = weight.dims4()?;
        if k != k2 {
            return Err(crate::Error::shape(
                "convolution kernel",
                "square",
                format!("{k}×{k2}"),
            ));
        }
        Ok(Self {
            weight,
            bias,
            g: Geometry { k, stride, pad },
            product_weight: Default::default(),
        })
    }

    /// `x`: `[B, H, W, C_in]` → `[B, Ho, Wo, C_out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !profile::enabled() {
            return self.forward_inner(x);
        }
        let (b, h, w, c) = x.dims4()?;
        let g = self.g;
        let (oh, ow) = (g.out_len(h), g.out_len(w));
        let cout = self.weight.dim(0)?;
        let pixels = (b * oh * ow) as f64;
        let flops = 2.0 * pixels * (g.k * g.k * c) as f64 * cout as f64;
        let bytes =
            4.0 * ((b * h * w * c) as f64 + pixels * cout as f64 + (g.k * g.k * c * cout) as f64);
        let kind = match (g.k, g.stride) {
            (1, _) => "conv 1×1",
            (3, 1) => "conv 3×3",
            (3, _) => "conv 3×3 stride 2",
            (2, 2) => "conv 2×2 stride 2",
            _ => "conv other",
        };
        profile::timed(
            kind,
            || format!("{c} → {cout} @ {oh}×{ow}"),
            flops,
            bytes,
            || self.forward_inner(x),
        )
    }

    fn forward_inner(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let g = self.g;
        let (oh, ow) = (g.out_len(h), g.out_len(w));
        let cout = self.weight.dim(0)?;
        if !(x.device().is_cpu() && x.dtype() == DType::F32) || reference_ops() {
            let y = x
                .permute((0, 3, 1, 2))?
                .conv2d(&self.weight, g.pad, g.stride, 1, 1)?
                .permute((0, 2, 3, 1))?;
            return Ok(match &self.bias {
                Some(bias) => y.broadcast_add(bias)?,
                None => y,
            });
        }
        let x = x.contiguous()?;
        let wt = self.product_weight(c, cout)?;
        let tracked = x.track_op() || wt.track_op();
        if g.k == 1 && g.stride == 1 && g.pad == 0 {
            let y = x
                .reshape((b * h * w, c))?
                .matmul(&wt.narrow(0, 0, c)?)?
                .broadcast_add(&wt.narrow(0, c, 1)?)?;
            return Ok(y.reshape((b, oh, ow, cout))?);
        }
        Ok(if tracked {
            x.apply_op1(Im2col { g })?
                .matmul(&wt)?
                .reshape((b, oh, ow, cout))?
        } else {
            x.apply_op2_no_bwd(&wt, &BandedConv { g })?
        })
    }
}
