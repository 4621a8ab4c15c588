//! Network configuration.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Architecture of the U-Net denoiser. The same code builds the small CPU model and larger GPU
/// models; only these numbers change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Colour channels of the image (3).
    pub image_channels: usize,
    /// Extra conditioning channels concatenated to the input: 0 for the unconditional prior
    /// denoiser, 3 for the EPS posterior denoiser (the observation image next to μ*).
    pub cond_channels: usize,
    /// Pixel-unshuffle factor at the input (and pixel-shuffle at the output): the first level
    /// runs at 1/`unshuffle` resolution with `unshuffle²` times the channels, losslessly.
    pub unshuffle: usize,
    /// Channels per resolution level, finest first; each further level halves the resolution.
    pub channels: Vec<usize>,
    /// Residual blocks per level, in the encoder and in the decoder.
    pub blocks: usize,
    /// Residual blocks at the coarsest level, between encoder and decoder.
    pub mid_blocks: usize,
    /// Groups of every GroupNorm (must divide every level's channels).
    pub groups: usize,
    /// Width of the noise-level embedding.
    pub emb_dim: usize,
    /// Data standard deviation σ_data of the EDM preconditioning (0.5 for images in [-1, 1]).
    pub sigma_data: f64,
}

impl Default for UNetConfig {
    /// The CPU model: 3.5 M parameters, 5.0 GFLOP for a 256×256 image (`eps-studio bench`).
    /// Pixel-unshuffling by 4 puts the first level at 1/4 resolution, which is what lets a
    /// 256×256 forward pass fit in about 0.3 s on two CPU cores.
    fn default() -> Self {
        Self {
            image_channels: 3,
            cond_channels: 0,
            unshuffle: 4,
            channels: vec![64, 96, 128, 128],
            blocks: 1,
            mid_blocks: 1,
            groups: 8,
            emb_dim: 128,
            sigma_data: 0.5,
        }
    }
}

impl UNetConfig {
    /// A tiny configuration for smoke tests.
    pub fn tiny() -> Self {
        Self {
            unshuffle: 2,
            channels: vec![16, 24],
            groups: 4,
            emb_dim: 32,
            ..Self::default()
        }
    }

    /// The same architecture with `cond_channels = image_channels`: the EPS posterior denoiser.
    #[must_use]
    pub fn with_condition(&self) -> Self {
        Self {
            cond_channels: self.image_channels,
            ..self.clone()
        }
    }

    /// Input height and width must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        self.unshuffle * (1 << (self.channels.len().saturating_sub(1)))
    }

    /// Fails with a clear message when the configuration cannot build a network.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &'static str, v: String, why: &str| Err(Error::invalid(what, v, why));
        if self.image_channels == 0 {
            return bad("image channels", "0".into(), "need at least one");
        }
        if self.unshuffle == 0 {
            return bad("unshuffle", "0".into(), "must be at least 1");
        }
        if self.channels.is_empty() {
            return bad("channels", "[]".into(), "need at least one level");
        }
        if self.groups == 0
            || self
                .channels
                .iter()
                .any(|c| *c == 0 || c % self.groups != 0)
        {
            return bad(
                "channels",
                format!("{:?} with {} groups", self.channels, self.groups),
                "every level's channels must be a positive multiple of the GroupNorm groups",
            );
        }
        if self.emb_dim < 2 || !self.emb_dim.is_multiple_of(2) {
            return bad(
                "emb_dim",
                self.emb_dim.to_string(),
                "must be even and at least 2",
            );
        }
        if !(self.sigma_data > 0.0 && self.sigma_data.is_finite()) {
            return bad(
                "sigma_data",
                self.sigma_data.to_string(),
                "must be positive",
            );
        }
        Ok(())
    }

    /// Multiply–accumulate operations ×2 (FLOPs) of the convolutions and linear layers for one
    /// `h × w` image; normalisation and activations are not counted.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        let conv =
            |cin: usize, cout: usize, k: usize, px: usize| 2 * (cin * cout * k * k * px) as u64;
        let mut total = 0u64;
        let r = self.unshuffle;
        let mut px = (h / r) * (w / r);
        let cin = (self.image_channels + self.cond_channels) * r * r;
        let c0 = self.channels[0];
        total += conv(cin, c0, 3, px);
        let res = |cin: usize, cout: usize, px: usize| {
            conv(cin, cout, 3, px)
                + conv(cout, cout, 3, px)
                + if cin == cout {
                    0
                } else {
                    conv(cin, cout, 1, px)
                }
        };
        // Encoder: `blocks` residual blocks per level, one skip per level.
        let mut skips = Vec::new();
        let mut c = c0;
        for (level, &ch) in self.channels.iter().enumerate() {
            for _ in 0..self.blocks {
                total += res(c, ch, px);
                c = ch;
            }
            skips.push(c);
            if level + 1 < self.channels.len() {
                total += conv(c, c, 3, px / 4);
                px /= 4;
            }
        }
        for _ in 0..self.mid_blocks {
            total += res(c, c, px);
        }
        // Decoder: the skip is concatenated before the level's first block.
        for (level, &ch) in self.channels.iter().enumerate().rev() {
            let s = skips.pop().unwrap_or(0);
            for b in 0..self.blocks {
                total += res(if b == 0 { c + s } else { c }, ch, px);
                c = ch;
            }
            if level > 0 {
                px *= 4;
                total += conv(c, c, 3, px);
            }
        }
        total + conv(c, self.image_channels * r * r, 3, px)
    }
}
