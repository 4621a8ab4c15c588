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
    /// denoiser; for the EPS posterior denoiser the observation image and one channel with the
    /// per-pixel noise level of the pivot (`image_channels + 1`).
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
    /// Self-attention over the coarsest level (after the first middle block).
    pub attention: bool,
    /// Channels per attention head.
    pub head_dim: usize,
    /// Channels of the full-resolution head (0: none): two 3×3 convolutions at the image's own
    /// resolution that refine the U-Net's output from the input pixels and the noise level, so
    /// pixel-level detail never has to pass through the unshuffled levels.
    #[serde(default)]
    pub head: usize,
    /// Width of the noise-level embedding.
    pub emb_dim: usize,
    /// EPS only: precondition every pixel by its own pivot noise level `diag(Σ*)` (see
    /// [`super::unet`]); `false` uses the sampler's σ for every pixel, as EDM does (ablation).
    #[serde(default = "yes")]
    pub pixel_precond: bool,
    /// EPS only: the preconditioning's data prior is centred on the observation image (the
    /// classical reconstruction of `x0` from `y`) instead of 0, so the denoiser is
    /// `c_skip μ* + (1 − c_skip) obs + c_out F` (see [`super::unet`]).
    #[serde(default)]
    pub obs_base: bool,
    /// The image input is the Gaussian (linear MMSE) estimate of `x0` — `c_skip x`, plus
    /// `(1 − c_skip) obs` when centred on the observation — divided by σ_d, instead of EDM's
    /// `c_in x` (see [`super::unet`]). The same information and, as σ → 0, the same input; but
    /// its noise is at most σ_d/2 and falls as 1/σ above σ_d, where `c_in x` is unit-variance
    /// noise at every high σ. On for new networks; weight files without the field are EDM's.
    #[serde(default)]
    pub wiener_input: bool,
    /// Data standard deviation σ_data of the EDM preconditioning (0.5 for images in [-1, 1]).
    pub sigma_data: f64,
}

impl Default for UNetConfig {
    /// The CPU model (`eps-studio bench` gives its size and speed).
    fn default() -> Self {
        Self {
            image_channels: 3,
            cond_channels: 0,
            unshuffle: 2,
            channels: vec![64, 96, 128, 192],
            blocks: 1,
            mid_blocks: 2,
            attention: true,
            head_dim: 32,
            head: 32,
            emb_dim: 128,
            pixel_precond: true,
            obs_base: false,
            wiener_input: true,
            sigma_data: 0.5,
        }
    }
}

fn yes() -> bool {
    true
}

impl UNetConfig {
    /// A tiny configuration for smoke tests.
    pub fn tiny() -> Self {
        Self {
            unshuffle: 2,
            channels: vec![16, 24],
            mid_blocks: 1,
            head_dim: 8,
            head: 8,
            emb_dim: 32,
            ..Self::default()
        }
    }

    /// The same architecture as an EPS posterior denoiser: the observation image and the
    /// per-pixel noise level of the pivot next to μ*.
    #[must_use]
    pub fn with_condition(&self) -> Self {
        Self {
            cond_channels: self.image_channels + 1,
            obs_base: true,
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
        if self.cond_channels != 0 && self.cond_channels != self.image_channels + 1 {
            return bad(
                "conditioning channels",
                self.cond_channels.to_string(),
                "must be 0 (prior) or the image channels + 1 (EPS: observation and noise level)",
            );
        }
        if self.obs_base && self.cond_channels == 0 {
            return bad(
                "obs_base",
                "true".into(),
                "only an EPS network (with an observation) can centre on the observation",
            );
        }
        if self.unshuffle == 0 || self.unshuffle > 8 {
            return bad("unshuffle", self.unshuffle.to_string(), "must be 1 to 8");
        }
        if self.channels.is_empty() || self.channels.len() > 8 {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "need one to eight levels",
            );
        }
        if self.channels.iter().any(|c| *c == 0 || *c > 4096) {
            return bad(
                "channels",
                format!("{:?}", self.channels),
                "every level needs 1 to 4096 channels",
            );
        }
        if self.blocks > 16 || self.mid_blocks > 16 {
            return bad(
                "blocks",
                format!("{}/{}", self.blocks, self.mid_blocks),
                "at most 16 blocks per level",
            );
        }
        let bottom = self.channels[self.channels.len() - 1];
        if self.attention && (self.head_dim == 0 || !bottom.is_multiple_of(self.head_dim)) {
            return bad(
                "head_dim",
                self.head_dim.to_string(),
                "must divide the coarsest level's channels",
            );
        }
        if self.head > 1024 {
            return bad("head", self.head.to_string(), "at most 1024 channels");
        }
        if self.emb_dim < 4 || !self.emb_dim.is_multiple_of(2) || self.emb_dim > 4096 {
            return bad(
                "emb_dim",
                self.emb_dim.to_string(),
                "must be even and between 4 and 4096",
            );
        }
        let weights = self.weight_count();
        if weights > crate::limits::MAX_PARAMETERS {
            return bad(
                "architecture",
                format!("{:.0} M weights", weights as f64 / 1e6),
                &format!(
                    "more than the {} M EPS Studio loads",
                    crate::limits::MAX_PARAMETERS / 1_000_000
                ),
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

    /// Multiply–accumulate operations ×2 (FLOPs) of the convolutions, linear layers and
    /// attention products for one `h × w` image; activations are not counted.
    pub fn flops(&self, h: usize, w: usize) -> u64 {
        self.cost(h, w, false)
    }

    /// The convolution and projection weights the architecture declares (biases, embeddings
    /// and attention products aside), computed from the description alone, so a weight file
    /// claiming an absurd network is refused before anything is allocated.
    pub fn weight_count(&self) -> u64 {
        self.cost(1, 1, true) / 2
    }

    /// FLOPs for an `h × w` image, or with `weights_only` twice the weight count (every layer
    /// at one pixel, no attention products).
    fn cost(&self, h: usize, w: usize, weights_only: bool) -> u64 {
        let one = |px: usize| if weights_only { 1 } else { px as u64 };
        let conv = |cin: usize, cout: usize, k: usize, px: usize| {
            2 * (cin as u64) * (cout as u64) * (k * k) as u64 * one(px)
        };
        let res = |cin: usize, cout: usize, px: usize| {
            conv(cin, cout, 3, px)
                + conv(cout, cout, 3, px)
                + if cin == cout {
                    0
                } else {
                    conv(cin, cout, 1, px)
                }
        };
        let r = self.unshuffle;
        let mut px = (h / r) * (w / r);
        let cin = (self.image_channels + self.cond_channels) * r * r;
        let mut c = self.channels[0];
        let mut total = conv(cin, c, 3, px);
        let mut skips = Vec::new();
        for (level, &ch) in self.channels.iter().enumerate() {
            for _ in 0..self.blocks {
                total += res(c, ch, px);
                c = ch;
            }
            skips.push(c);
            if let Some(&next) = self.channels.get(level + 1) {
                px /= 4;
                total += conv(c, next, 2, px);
                c = next;
            }
        }
        for b in 0..self.mid_blocks {
            total += res(c, c, px);
            if b == 0 && self.attention {
                // qkv and out projections, q·kᵀ and attn·v.
                total += 2 * 4 * (c * c) as u64 * one(px);
                if !weights_only {
                    total += 2 * 2 * (px * px * c) as u64;
                }
            }
        }
        for (level, &ch) in self.channels.iter().enumerate().rev() {
            let s = skips.pop().unwrap_or(0);
            for b in 0..self.blocks.max(1) {
                total += res(if b == 0 { c + s } else { c }, ch, px);
                c = ch;
            }
            if level > 0 {
                px *= 4;
                let prev = self.channels[level - 1];
                total += conv(c, prev, 3, px);
                c = prev;
            }
        }
        total += conv(c, self.image_channels * r * r, 3, px);
        if self.head > 0 {
            let full = if weights_only { 1 } else { h * w };
            let cin = 2 * self.image_channels + self.cond_channels + 1;
            total += conv(cin, self.head, 3, full) + conv(self.head, self.image_channels, 3, full);
        }
        total
    }
}
