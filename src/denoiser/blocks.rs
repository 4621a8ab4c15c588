//! Building blocks of the U-Net: noise embedding, residual blocks with adaptive GroupNorm,
//! resampling and pixel (un)shuffling.

use candle_core::{D, Module as _, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Linear, VarBuilder, conv2d, group_norm, linear};

use crate::Result;

/// Sinusoidal features of the (per-sample) EDM noise input `c_noise = ln(σ)/4`, then a 2-layer MLP.
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
        // Frequencies 10000^(-k/freqs), as in transformer position encodings (EDM's "positional").
        let f: Vec<f32> = (0..self.freqs)
            .map(|k| (-(k as f32) / self.freqs as f32 * 10000f32.ln()).exp() * 100.0)
            .collect();
        let f = Tensor::new(f.as_slice(), device)?.to_dtype(c_noise.dtype())?;
        let args = c_noise.unsqueeze(1)?.broadcast_mul(&f.unsqueeze(0)?)?;
        let feats = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
        let h = candle_nn::ops::silu(&self.fc1.forward(&feats)?)?;
        Ok(candle_nn::ops::silu(&self.fc2.forward(&h)?)?)
    }
}

fn conv3(cin: usize, cout: usize, stride: usize, vb: VarBuilder<'_>) -> Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: 1,
        stride,
        ..Default::default()
    };
    Ok(conv2d(cin, cout, 3, cfg, vb)?)
}

/// Pre-activation residual block: `GN → SiLU → conv → GN·(1+scale)+shift → SiLU → conv`, with the
/// scale and shift predicted from the noise embedding, and a 1×1 skip when channels change.
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    emb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlock {
    /// A block from `cin` to `cout` channels.
    pub fn new(
        cin: usize,
        cout: usize,
        groups: usize,
        emb_dim: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self> {
        let skip = if cin == cout {
            None
        } else {
            Some(conv2d(
                cin,
                cout,
                1,
                Conv2dConfig::default(),
                vb.pp("skip"),
            )?)
        };
        Ok(Self {
            norm1: group_norm(groups_for(groups, cin), cin, 1e-5, vb.pp("norm1"))?,
            conv1: conv3(cin, cout, 1, vb.pp("conv1"))?,
            emb: linear(emb_dim, 2 * cout, vb.pp("emb"))?,
            norm2: group_norm(groups, cout, 1e-5, vb.pp("norm2"))?,
            conv2: conv3(cout, cout, 1, vb.pp("conv2"))?,
            skip,
        })
    }

    /// `x`: `[B, cin, H, W]`, `emb`: `[B, emb_dim]`.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self
            .conv1
            .forward(&candle_nn::ops::silu(&self.norm1.forward(x)?)?)?;
        let ss = self
            .emb
            .forward(emb)?
            .unsqueeze(D::Minus1)?
            .unsqueeze(D::Minus1)?;
        let c = ss.dim(1)? / 2;
        let (scale, shift) = (ss.narrow(1, 0, c)?, ss.narrow(1, c, c)?);
        let h = self
            .norm2
            .forward(&h)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        let h = self.conv2.forward(&candle_nn::ops::silu(&h)?)?;
        let skip = match &self.skip {
            Some(s) => s.forward(x)?,
            None => x.clone(),
        };
        Ok(((skip + h)? * std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// Concatenated skip inputs can have channel counts the configured groups do not divide; use the
/// largest divisor of `channels` not above `groups`.
fn groups_for(groups: usize, channels: usize) -> usize {
    (1..=groups)
        .rev()
        .find(|g| channels.is_multiple_of(*g))
        .unwrap_or(1)
}

/// Stride-2 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Downsample(Conv2d);

impl Downsample {
    /// Keeps the channel count.
    pub fn new(c: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self(conv3(c, c, 2, vb.pp("conv"))?))
    }

    /// Halves height and width.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.0.forward(x)?)
    }
}

/// Nearest-neighbour ×2 then a 3×3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample(Conv2d);

impl Upsample {
    /// Keeps the channel count.
    pub fn new(c: usize, vb: VarBuilder<'_>) -> Result<Self> {
        Ok(Self(conv3(c, c, 1, vb.pp("conv"))?))
    }

    /// Doubles height and width.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        Ok(self.0.forward(&x.upsample_nearest2d(2 * h, 2 * w)?)?)
    }
}

/// `[B, C, H, W]` → `[B, C·r², H/r, W/r]`; channel `c·r² + i·r + j` holds pixel `(i, j)` of each
/// `r × r` block of channel `c`.
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, c, h, w) = x.dims4()?;
    Ok(x.reshape((b, c, h / r, r, w / r, r))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((b, c * r * r, h / r, w / r))?)
}

/// The inverse of [`pixel_unshuffle`].
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    if r == 1 {
        return Ok(x.clone());
    }
    let (b, crr, h, w) = x.dims4()?;
    let c = crr / (r * r);
    Ok(x.reshape((b, c, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, c, h * r, w * r))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shuffle_round_trips_and_keeps_blocks_together() -> Result<()> {
        let x = Tensor::arange(0f32, 2.0 * 4.0 * 6.0, &Device::Cpu)?.reshape((1, 2, 4, 6))?;
        let u = pixel_unshuffle(&x, 2)?;
        assert_eq!(u.dims(), &[1, 8, 2, 3]);
        // Channel 1 of the unshuffled image = pixel (0, 1) of each 2×2 block of channel 0.
        assert_eq!(
            u.get(0)?.get(1)?.flatten_all()?.to_vec1::<f32>()?,
            vec![1., 3., 5., 13., 15., 17.]
        );
        let back = pixel_shuffle(&u, 2)?;
        assert_eq!(
            back.flatten_all()?.to_vec1::<f32>()?,
            x.flatten_all()?.to_vec1::<f32>()?
        );
        Ok(())
    }

    #[test]
    fn group_count_adapts_to_concatenated_channels() {
        assert_eq!(groups_for(8, 48), 8);
        assert_eq!(groups_for(8, 48 + 96), 8);
        assert_eq!(groups_for(8, 20), 5);
        assert_eq!(groups_for(8, 7), 7);
    }
}
