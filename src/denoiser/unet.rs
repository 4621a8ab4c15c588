//! The U-Net `F_θ` and its EDM preconditioning (Karras et al. 2022; eps-method.md §4):
//! `D(x, σ) = c_skip x + c_out F(c_in x, c_noise)` with `c_skip = σ_d²/(σ²+σ_d²)`,
//! `c_out = σσ_d/√(σ²+σ_d²)`, `c_in = 1/√(σ²+σ_d²)`, `c_noise = ln(σ)/4`.
//!
//! For EPS the input widens from 3 to 6 channels, `[μ*, obs]` (eps-method.md §4): `x = μ*` is
//! preconditioned as above and `obs` (already in image range) is appended unscaled.

use candle_core::{DType, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, GroupNorm, Module as _, VarBuilder, conv2d, group_norm};

use super::blocks::{
    Downsample, NoiseEmbedding, ResBlock, Upsample, pixel_shuffle, pixel_unshuffle,
};
use super::config::UNetConfig;
use crate::{Error, Result};

/// The raw network `F_θ(x, c_noise)`.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    embed: NoiseEmbedding,
    input: Conv2d,
    down: Vec<Vec<ResBlock>>,
    downsample: Vec<Downsample>,
    mid: Vec<ResBlock>,
    up: Vec<Vec<ResBlock>>,
    upsample: Vec<Upsample>,
    out_norm: GroupNorm,
    output: Conv2d,
}

impl UNet {
    /// Builds the network; parameter names mirror the module structure (`down.0.1.conv1.weight`).
    pub fn new(vb: VarBuilder<'_>, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let r2 = cfg.unshuffle * cfg.unshuffle;
        let conv3 = |cin: usize, cout: usize, vb: VarBuilder<'_>| -> Result<Conv2d> {
            let c = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            Ok(conv2d(cin, cout, 3, c, vb)?)
        };
        let (g, e) = (cfg.groups, cfg.emb_dim);
        let c0 = cfg.channels[0];
        let input = conv3(
            (cfg.image_channels + cfg.cond_channels) * r2,
            c0,
            vb.pp("input"),
        )?;
        // One skip per level, taken after the level's blocks (before down-sampling).
        let mut skips = Vec::new();
        let mut c = c0;
        let (mut down, mut downsample) = (Vec::new(), Vec::new());
        for (l, &ch) in cfg.channels.iter().enumerate() {
            let vbl = vb.pp("down").pp(l);
            let mut blocks = Vec::new();
            for b in 0..cfg.blocks {
                blocks.push(ResBlock::new(c, ch, g, e, vbl.pp(b))?);
                c = ch;
            }
            down.push(blocks);
            skips.push(c);
            if l + 1 < cfg.channels.len() {
                downsample.push(Downsample::new(c, vb.pp("downsample").pp(l))?);
            }
        }
        let mid = (0..cfg.mid_blocks)
            .map(|b| ResBlock::new(c, c, g, e, vb.pp("mid").pp(b)))
            .collect::<Result<Vec<_>>>()?;
        let (mut up, mut upsample) = (Vec::new(), Vec::new());
        for (l, &ch) in cfg.channels.iter().enumerate().rev() {
            let vbl = vb.pp("up").pp(l);
            let mut blocks = Vec::new();
            let s = skips
                .pop()
                .ok_or_else(|| Error::Unsupported("U-Net skip bookkeeping".into()))?;
            for b in 0..cfg.blocks {
                let cin = if b == 0 { c + s } else { c };
                blocks.push(ResBlock::new(cin, ch, g, e, vbl.pp(b))?);
                c = ch;
            }
            up.push(blocks);
            if l > 0 {
                upsample.push(Upsample::new(c, vb.pp("upsample").pp(l))?);
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed: NoiseEmbedding::new(e, vb.pp("embed"))?,
            input,
            down,
            downsample,
            mid,
            up,
            upsample,
            out_norm: group_norm(g, c, 1e-5, vb.pp("out_norm"))?,
            output: conv3(c, cfg.image_channels * r2, vb.pp("output"))?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// `F(x, c_noise)` for `x`: `[B, C_in, H, W]` with H, W multiples of
    /// [`UNetConfig::size_multiple`], and `c_noise`: `[B]`.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor) -> Result<Tensor> {
        let emb = self.embed.forward(c_noise)?;
        let mut h = self
            .input
            .forward(&pixel_unshuffle(x, self.cfg.unshuffle)?)?;
        let mut skips = Vec::new();
        for (l, blocks) in self.down.iter().enumerate() {
            for block in blocks {
                h = block.forward(&h, &emb)?;
            }
            skips.push(h.clone());
            if let Some(ds) = self.downsample.get(l) {
                h = ds.forward(&h)?;
            }
        }
        for block in &self.mid {
            h = block.forward(&h, &emb)?;
        }
        for (i, blocks) in self.up.iter().enumerate() {
            let s = skips
                .pop()
                .ok_or_else(|| Error::Unsupported("U-Net skip bookkeeping".into()))?;
            h = Tensor::cat(&[&h, &s], 1)?;
            for block in blocks {
                h = block.forward(&h, &emb)?;
            }
            if let Some(us) = self.upsample.get(i) {
                h = us.forward(&h)?;
            }
        }
        let h = self
            .output
            .forward(&candle_nn::ops::silu(&self.out_norm.forward(&h)?)?)?;
        pixel_shuffle(&h, self.cfg.unshuffle)
    }
}

/// The EDM-preconditioned denoiser around a [`UNet`].
#[derive(Debug, Clone)]
pub struct EdmDenoiser {
    net: UNet,
}

/// Per-sample EDM coefficients, each `[B, 1, 1, 1]`.
struct Precond {
    skip: Tensor,
    out: Tensor,
    input: Tensor,
    noise: Tensor,
}

impl EdmDenoiser {
    /// Builds the network under `vb`.
    pub fn new(vb: VarBuilder<'_>, cfg: &UNetConfig) -> Result<Self> {
        Ok(Self {
            net: UNet::new(vb, cfg)?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        self.net.config()
    }

    /// Whether the network takes an observation image next to μ* (an EPS network).
    pub fn is_conditional(&self) -> bool {
        self.net.config().cond_channels > 0
    }

    fn precond(&self, sigma: &Tensor, dtype: DType) -> Result<Precond> {
        let sd = self.net.config().sigma_data;
        let s: Vec<f64> = sigma.to_dtype(DType::F64)?.to_vec1()?;
        if let Some(bad) = s.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
            return Err(Error::invalid(
                "σ",
                bad,
                "the denoiser needs a positive, finite noise level",
            ));
        }
        let dev = sigma.device();
        let col = |f: &dyn Fn(f64) -> f64| -> Result<Tensor> {
            let v: Vec<f64> = s.iter().map(|&x| f(x)).collect();
            Ok(Tensor::from_vec(v, (s.len(), 1, 1, 1), dev)?.to_dtype(dtype)?)
        };
        let d2 = sd * sd;
        Ok(Precond {
            skip: col(&|x| d2 / (x * x + d2))?,
            out: col(&|x| x * sd / (x * x + d2).sqrt())?,
            input: col(&|x| 1.0 / (x * x + d2).sqrt())?,
            noise: Tensor::from_vec(
                s.iter().map(|x| x.ln() / 4.0).collect::<Vec<_>>(),
                s.len(),
                dev,
            )?
            .to_dtype(dtype)?,
        })
    }

    /// `D(x, σ)` with a per-sample noise level `sigma`: `[B]`, and, for an EPS network, the
    /// observation image `obs` (`[B or 1, C, H, W]`). H and W must be multiples of the network's
    /// size multiple (use [`Self::forward_padded`] otherwise).
    pub fn forward(&self, x: &Tensor, sigma: &Tensor, obs: Option<&Tensor>) -> Result<Tensor> {
        let cfg = self.net.config();
        let (b, c, h, w) = x.dims4()?;
        if c != cfg.image_channels {
            return Err(Error::shape(
                "denoiser input",
                format!("{} channels", cfg.image_channels),
                c,
            ));
        }
        let m = cfg.size_multiple();
        if h % m != 0 || w % m != 0 {
            return Err(Error::shape(
                "denoiser input",
                format!("height and width multiples of {m}"),
                format!("{h}×{w}"),
            ));
        }
        if sigma.dims() != [b] {
            return Err(Error::shape(
                "noise levels",
                format!("[{b}]"),
                format!("{:?}", sigma.dims()),
            ));
        }
        let p = self.precond(sigma, x.dtype())?;
        let scaled = x.broadcast_mul(&p.input)?;
        let input = match (cfg.cond_channels, obs) {
            (0, None) => scaled,
            (0, Some(_)) => {
                return Err(Error::Unsupported(
                    "an unconditional network takes no observation".into(),
                ));
            }
            (_, None) => {
                return Err(Error::Unsupported(
                    "an EPS network needs the observation image".into(),
                ));
            }
            (k, Some(o)) => {
                let (ob, oc, oh, ow) = o.dims4()?;
                if oc != k || (oh, ow) != (h, w) || (ob != b && ob != 1) {
                    return Err(Error::shape(
                        "observation",
                        format!("[{b}, {k}, {h}, {w}]"),
                        format!("{:?}", o.dims()),
                    ));
                }
                let o = o.to_dtype(x.dtype())?.broadcast_as((b, k, h, w))?;
                Tensor::cat(&[&scaled, &o], 1)?
            }
        };
        let f = self.net.forward(&input, &p.noise)?;
        Ok((x.broadcast_mul(&p.skip)? + f.broadcast_mul(&p.out)?)?)
    }

    /// [`Self::forward`] for any H and W: reflect-pads up to the size multiple and crops back.
    pub fn forward_padded(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        obs: Option<&Tensor>,
    ) -> Result<Tensor> {
        use crate::inverse::pad::{crop, padding_to_multiple, reflect_pad};
        let (_, _, h, w) = x.dims4()?;
        let pad = padding_to_multiple(h, w, self.net.config().size_multiple());
        if pad == Default::default() {
            return self.forward(x, sigma, obs);
        }
        let xp = reflect_pad(x, pad)?;
        let op = obs.map(|o| reflect_pad(o, pad)).transpose()?;
        crop(&self.forward(&xp, sigma, op.as_ref())?, pad)
    }
}
