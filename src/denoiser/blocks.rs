//! Building blocks of the U-Net, on channels-last activations `[B, H, W, C]`: noise embedding,
//! residual blocks modulated by the noise level, resampling, self-attention and pixel
//! (un)shuffling.
//!
//! There is no normalisation layer: the EDM preconditioning already gives the network inputs of
//! unit variance at every noise level, every residual branch ends in a zero-initialised
//! convolution (each block starts as the identity), and without spatial statistics the network
//! behaves the same on a 64-pixel training crop and on a 1024-pixel photo, and on a hole as on
//! the pixels around it.

use candle_core::{D, Module as _, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

use super::conv::Conv;
use super::fused::{film_silu, silu};
use super::profile;
use crate::Result;

/// Highest frequency of the noise-level features, in radians per unit of `c_noise = ln(σ)/4`:
/// `c_noise` spans about 2.7 over the sampler's range, so the fastest feature turns a few
/// times across it and the slowest is nearly linear.
const MAX_FREQUENCY: f32 = 8.0;

/// Sinusoidal features of the (per-sample) EDM noise input `c_noise = ln(σ)/4`, then a 2-layer
/// MLP.
#[derive(Debug, Clone)]
pub struct NoiseEmbedding {
    freqs: usize,
    fc1: Linear,
    fc2: Linear,
}

impl NoiseEmbedding {
    /// `dim` output features from `dim/2` sine–cosine pairs.
    pub fn new(dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            freqs: dim / 2,
            fc1: linear(dim, dim, vb.pp("fc1"))?,
            fc2: linear(dim, dim, vb.pp("fc2"))?,
        })
    }

    /// `c_noise`: `[B]` → `[B, dim]`.
    pub fn forward(&self, c_noise: &Tensor) -> Result<Tensor> {
        let device = c_noise.device();
        // Geometric frequencies from MAX_FREQUENCY down to MAX_FREQUENCY / 10⁴.
        let f: Vec<f32> = (0..self.freqs)
            .map(|k| {
                MAX_FREQUENCY * (-(k as f32) / (self.freqs.max(2) - 1) as f32 * 10000f32.ln()).exp()
            })
            .collect();
        let f = Tensor::new(f.as_slice(), device)?.to_dtype(c_noise.dtype())?;
        let args = c_noise.unsqueeze(1)?.broadcast_mul(&f.unsqueeze(0)?)?;
        let feats = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
        let h = candle_nn::ops::silu(&self.fc1.forward(&feats)?)?;
        Ok(candle_nn::ops::silu(&self.fc2.forward(&h)?)?)
    }
}

/// Residual block: `x + conv(SiLU(conv(SiLU(x))·(1 + scale) + shift))`, with the scale and
/// shift predicted from the noise embedding, and a 1×1 projection of `x` when channels change.
/// The second convolution starts at zero (named `out`, so the trainer knows).
#[derive(Debug, Clone)]
pub struct ResBlock {
    conv1: Conv,
    emb: Linear,
    out: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    /// A block from `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, emb_dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        let skip = if cin == cout {
            None
        } else {
            Some(Conv::new(cin, cout, 1, 1, 0, vb.pp("skip"))?)
        };
        Ok(Self {
            conv1: Conv::new(cin, cout, 3, 1, 1, vb.pp("conv1"))?,
            emb: linear(emb_dim, 2 * cout, vb.pp("emb"))?,
            out: Conv::new(cout, cout, 3, 1, 1, vb.pp("out"))?,
            skip,
        })
    }

    /// `x`: `[B, H, W, cin]`, `emb`: `[B, emb_dim]`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(x)?)?;
        let ss = self.emb.forward(emb)?;
        let c = ss.dim(D::Minus1)? / 2;
        let (scale, shift) = (ss.narrow(1, 0, c)?, ss.narrow(1, c, c)?);
        let h = self.out.forward(&film_silu(&h, &scale, &shift)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        let bytes = 3.0 * profile::bytes(&h);
        profile::timed(
            "residual add",
            || profile::shape(&h),
            0.0,
            bytes,
            || Ok((skip + &h)?),
        )
    }
}

/// Multi-head self-attention over all pixels of the coarsest level, with unit-RMS queries and
/// keys (stable without a normalisation layer) and a zero-initialised output projection
/// (`out`): colour and structure from anywhere in the image reach every pixel.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    /// Attention over `c` channels in heads of `head_dim` channels (`c` must divide evenly).
    pub fn new(c: usize, head_dim: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self {
            qkv: linear(c, 3 * c, vb.pp("qkv"))?,
            out: linear(c, c, vb.pp("out"))?,
            heads: (c / head_dim.max(1)).max(1),
        })
    }

    /// `x`: `[B, H, W, C]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let n = (b * h * w) as f64;
        // q, k, v and out projections, then the two products over all pixel pairs.
        let flops = 2.0 * n * (4 * c * c) as f64 + 4.0 * n * (h * w * c) as f64;
        let bytes = 2.0 * profile::bytes(x);
        profile::timed(
            "attention",
            || profile::shape(x),
            flops,
            bytes,
            || self.forward_inner(x),
        )
    }

    fn forward_inner(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let (n, nh) = (h * w, self.heads);
        let d = c / nh;
        let qkv = self
            .qkv
            .forward(&x.reshape((b, n, c))?)?
            .reshape((b, n, 3, nh, d))?
            .permute((2, 0, 3, 1, 4))?; // [3, B, heads, N, d]
        let unit = |t: Tensor| -> Result<Tensor> {
            let t = t.contiguous()?;
            let rms = (t.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?;
            Ok(t.broadcast_div(&rms)?)
        };
        let q = unit(qkv.get(0)?)?;
        let k = unit(qkv.get(1)?)?;
        let v = qkv.get(2)?.contiguous()?;
        let logits = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        // The composed softmax: candle's fused `softmax_last_dim` has no gradient.
        let attn = candle_nn::ops::softmax(&logits, D::Minus1)?;
        let o = attn.matmul(&v)?.permute((0, 2, 1, 3))?.reshape((b, n, c))?;
        Ok((x + self.out.forward(&o)?.reshape((b, h, w, c))?)?)
    }
}

/// A 2×2 stride-2 convolution: halves height and width, changes the channel count.
#[derive(Debug, Clone)]
pub struct Downsample(Conv);

impl Downsample {
    /// From `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self(Conv::new(cin, cout, 2, 2, 0, vb.pp("conv"))?))
    }

    /// `[B, H, W, cin]` → `[B, H/2, W/2, cout]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// Nearest-neighbour ×2 then a 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample(Conv);

impl Upsample {
    /// From `cin` to `cout` channels.
    pub fn new(cin: usize, cout: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self(Conv::new(cin, cout, 3, 1, 1, vb.pp("conv"))?))
    }

    /// `[B, H, W, cin]` → `[B, 2H, 2W, cout]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let bytes = 5.0 * profile::bytes(x);
        let up = profile::timed(
            "upsample ×2",
            || profile::shape(x),
            0.0,
            bytes,
            || {
                x.reshape((b, h, 1, w, 1, c))?
                    .broadcast_as((b, h, 2, w, 2, c))?
                    .reshape((b, 2 * h, 2 * w, c))
            },
        )?;
        self.0.forward(&up)
    }
}

/// `[B, H, W, C]` → `[B, H/r, W/r, C·r²]`; channel `c·r² + i·r + j` holds pixel `(i, j)` of
/// each `r × r` block of channel `c`.
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, h, w, c) = x.dims4()?;
    Ok(x.reshape((b, h / r, r, w / r, r, c))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((b, h / r, w / r, c * r * r))?)
}

/// The inverse of [`pixel_unshuffle`].
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, h, w, crr) = x.dims4()?;
    let c = crr / (r * r);
    Ok(x.reshape((b, h, w, c, r, r))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, h * r, w * r, c))?)
}

/// `[B, C, H, W]` → `[B, H, W, C]` (contiguous).
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 2, 3, 1))?.contiguous()?)
}

/// `[B, H, W, C]` → `[B, C, H, W]` (contiguous).
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shuffle_round_trips_and_keeps_blocks_together() -> Result<()> {
        // Channels-first 1×2×4×6 ramp, moved to channels-last.
        let x = Tensor::arange(0f32, 2.0 * 4.0 * 6.0, &Device::Cpu)?.reshape((1, 2, 4, 6))?;
        let u = to_channels_first(&pixel_unshuffle(&to_channels_last(&x)?, 2)?)?;
        assert_eq!(u.dims(), &[1, 8, 2, 3]);
        // Channel 1 of the unshuffled image = pixel (0, 1) of each 2×2 block of channel 0.
        assert_eq!(
            u.get(0)?.get(1)?.flatten_all()?.to_vec1::<f32>()?,
            vec![1., 3., 5., 13., 15., 17.]
        );
        let back = to_channels_first(&pixel_shuffle(&to_channels_last(&u)?, 2)?)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }
}
