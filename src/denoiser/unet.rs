//! The U-Net `F_θ` and its EDM preconditioning (Karras et al. 2022; eps-method.md §4):
//! `D(x, σ) = c_skip x + c_out F(c_in x, c_noise)` with `c_skip = σ_d²/(σ²+σ_d²)`,
//! `c_out = σσ_d/√(σ²+σ_d²)`, `c_in = 1/√(σ²+σ_d²)`, `c_noise = ln(σ)/4`.
//!
//! **Per-pixel preconditioning (EPS).** The pivot is `μ* ~ N(x0, Σ*)`: its noise is not
//! isotropic. For a mask, `Σ*` is diagonal — about σ_y² on observed pixels, σ² on hidden ones —
//! so one scalar `c_in` from σ would scale the observed pixels by ≈ 1/σ (1/80 at the first step)
//! and hide exactly the context the network needs. The EPS network therefore uses the same
//! three coefficients per pixel, from `s² = diag(Σ*)`: observed pixels reach it at unit scale
//! and pass through (`c_skip ≈ 1`), hidden ones are denoised as usual. When `Σ*` is isotropic
//! (`s = σ` everywhere) this is exactly the scalar preconditioning; for blur and
//! super-resolution `diag(Σ*)` is constant, one effective noise level.
//!
//! The EPS input is `[c_in μ*, obs, ln(s)/4]`: the observation image — a classical
//! reconstruction of `x0` from `y` alone (the biharmonic fill of a hole, a Wiener
//! deconvolution, bicubic upsampling; [`crate::inverse::Problem::observation`]) — and the
//! per-pixel noise level, so an observed mid-grey pixel and a hidden pixel never look alike.
//!
//! **Wiener input** (`wiener_input`). EDM feeds the network `c_in x`, which at high σ is
//! unit-variance noise with a signal of σ_d/σ in it: a network must learn to ignore its own
//! input there, and a partly trained one passes some of that noise to `F` — blotches in the
//! one-call mean, noise left in every sample, an input Jacobian that makes ΠGDM's guidance
//! diverge. With `wiener_input` the input is instead the Gaussian estimate of `x0`,
//! `(c_skip x + (1 − c_skip) base) / σ_d` (`base` = the observation for an EPS network centred on
//! it, 0 for the prior): an invertible per-σ map of the same `x`, equal to `c_in x` as σ → 0, whose
//! noise `c_skip σ / σ_d` is at most 1/2 (at σ = σ_d) and falls as 1/σ above it. At σ = 80 the
//! network sees the observation with noise of 0.006 rather than noise with a trace of signal.
//!
//! **Centred on the observation** (`obs_base`). EDM's `c_skip` is the optimal linear denoiser
//! for data `~ N(0, σ_d²)`. An EPS network knows more than 0 about each pixel before it looks:
//! the observation image. Centring that Gaussian on it gives
//! `D = c_skip μ* + (1 − c_skip) obs + c_out F(…)`: a hole at σ = 80 starts from the classical
//! fill rather than from grey, and `F` learns what the classical reconstruction misses. An EPS
//! network widened from a prior starts with `F = 0` (its output layers zeroed), i.e. exactly this
//! Gaussian denoiser, so fine-tuning starts at the classical reference and improves on it.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{
    Attention, Downsample, NoiseEmbedding, ResBlock, Upsample, pixel_shuffle, pixel_unshuffle,
    to_channels_first, to_channels_last,
};
use super::config::UNetConfig;
use super::conv::Conv;
use crate::{Error, Result};

/// Smallest per-pixel noise level the preconditioning uses (σ_y = 0 would give 0).
const MIN_PIXEL_SIGMA: f64 = 1e-4;

/// The raw network `F_θ(x, c_noise)`, channels-first in and out.
#[derive(Debug, Clone)]
pub struct UNet {
    cfg: UNetConfig,
    embed: NoiseEmbedding,
    input: Conv,
    down: Vec<Vec<ResBlock>>,
    downsample: Vec<Downsample>,
    mid: Vec<ResBlock>,
    attention: Option<Attention>,
    up: Vec<Vec<ResBlock>>,
    upsample: Vec<Upsample>,
    output: Conv,
    head: Option<(Conv, Conv)>,
}

impl UNet {
    /// Builds the network; parameter names mirror the module structure (`down.0.1.conv1.weight`).
    pub fn new(vb: VarBuilder<'_>, cfg: &UNetConfig) -> Result<Self> {
        cfg.validate()?;
        let r2 = cfg.unshuffle * cfg.unshuffle;
        let e = cfg.emb_dim;
        let c0 = cfg.channels[0];
        let input = Conv::new(
            (cfg.image_channels + cfg.cond_channels) * r2,
            c0,
            3,
            1,
            1,
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
                blocks.push(ResBlock::new(c, ch, e, vbl.pp(b))?);
                c = ch;
            }
            down.push(blocks);
            skips.push(c);
            if let Some(&next) = cfg.channels.get(l + 1) {
                downsample.push(Downsample::new(c, next, vb.pp("downsample").pp(l))?);
                c = next;
            }
        }
        let mid = (0..cfg.mid_blocks)
            .map(|b| ResBlock::new(c, c, e, vb.pp("mid").pp(b)))
            .collect::<Result<Vec<_>>>()?;
        let attention = cfg
            .attention
            .then(|| Attention::new(c, cfg.head_dim, vb.pp("attention")))
            .transpose()?;
        let (mut up, mut upsample) = (Vec::new(), Vec::new());
        for (l, &ch) in cfg.channels.iter().enumerate().rev() {
            let vbl = vb.pp("up").pp(l);
            let mut blocks = Vec::new();
            let s = skips
                .pop()
                .ok_or_else(|| Error::Unsupported("U-Net skip bookkeeping".into()))?;
            for b in 0..cfg.blocks.max(1) {
                let cin = if b == 0 { c + s } else { c };
                blocks.push(ResBlock::new(cin, ch, e, vbl.pp(b))?);
                c = ch;
            }
            up.push(blocks);
            if l > 0 {
                let prev = cfg.channels[l - 1];
                upsample.push(Upsample::new(c, prev, vb.pp("upsample").pp(l))?);
                c = prev;
            }
        }
        Ok(Self {
            cfg: cfg.clone(),
            embed: NoiseEmbedding::new(e, vb.pp("embed"))?,
            input,
            down,
            downsample,
            mid,
            attention,
            up,
            upsample,
            output: Conv::new(c, cfg.image_channels * r2, 3, 1, 1, vb.pp("output"))?,
            head: (cfg.head > 0)
                .then(|| -> Result<(Conv, Conv)> {
                    let cin = 2 * cfg.image_channels + cfg.cond_channels + 1;
                    Ok((
                        Conv::new(cin, cfg.head, 3, 1, 1, vb.pp("head").pp("conv1"))?,
                        Conv::new(
                            cfg.head,
                            cfg.image_channels,
                            3,
                            1,
                            1,
                            vb.pp("head").pp("out"),
                        )?,
                    ))
                })
                .transpose()?,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// `F(x, c_noise)` for `x`: `[B, C_in, H, W]` with H, W multiples of
    /// [`UNetConfig::size_multiple`], and `c_noise`: `[B]`.
    pub fn forward(&self, x: &Tensor, c_noise: &Tensor) -> Result<Tensor> {
        use super::profile;
        let emb = profile::timed("noise embedding", String::new, 0.0, 0.0, || {
            self.embed.forward(c_noise)
        })?;
        let bytes = 2.0 * profile::bytes(x);
        let x = profile::timed(
            "layout",
            || "to channels last".into(),
            0.0,
            bytes,
            || to_channels_last(x),
        )?;
        let unshuffled = profile::timed(
            "layout",
            || "pixel unshuffle".into(),
            0.0,
            bytes,
            || pixel_unshuffle(&x, self.cfg.unshuffle),
        )?;
        let mut h = self.input.forward(&unshuffled)?;
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
        for (b, block) in self.mid.iter().enumerate() {
            h = block.forward(&h, &emb)?;
            if let (0, Some(attn)) = (b, &self.attention) {
                h = attn.forward(&h)?;
            }
        }
        if self.mid.is_empty()
            && let Some(attn) = &self.attention
        {
            h = attn.forward(&h)?;
        }
        for (i, blocks) in self.up.iter().enumerate() {
            let s = skips
                .pop()
                .ok_or_else(|| Error::Unsupported("U-Net skip bookkeeping".into()))?;
            let bytes = 2.0 * (profile::bytes(&h) + profile::bytes(&s));
            h = profile::timed(
                "layout",
                || "skip concatenation".into(),
                0.0,
                bytes,
                || Tensor::cat(&[&h, &s], 3),
            )?;
            for block in blocks {
                h = block.forward(&h, &emb)?;
            }
            if let Some(us) = self.upsample.get(i) {
                h = us.forward(&h)?;
            }
        }
        let h = self.output.forward(&super::fused::silu(&h)?)?;
        let bytes = 2.0 * profile::bytes(&h);
        let mut f = profile::timed(
            "layout",
            || "pixel shuffle".into(),
            0.0,
            bytes,
            || pixel_shuffle(&h, self.cfg.unshuffle),
        )?;
        if let Some((conv1, out)) = &self.head {
            // [coarse estimate, c_noise, input]: the input last, so an EPS network widened from
            // a prior keeps its channel order with the new conditioning channels at the end. The
            // noise level lets the head pass pixel detail at low σ and block it at high σ.
            let (b, hh, ww, _) = f.dims4()?;
            let level = c_noise
                .reshape((b, 1, 1, 1))?
                .broadcast_as((b, hh, ww, 1))?
                .to_dtype(f.dtype())?;
            let bytes = 2.0 * (profile::bytes(&f) + profile::bytes(&x));
            let joined = profile::timed(
                "layout",
                || "head concatenation".into(),
                0.0,
                bytes,
                || Tensor::cat(&[&f, &level, &x], 3),
            )?;
            let z = conv1.forward(&joined)?;
            let o = out.forward(&super::fused::silu(&z)?)?;
            let bytes = 3.0 * profile::bytes(&f);
            f = profile::timed(
                "residual add",
                || profile::shape(&f),
                0.0,
                bytes,
                || &f + &o,
            )?;
        }
        let bytes = 2.0 * profile::bytes(&f);
        profile::timed(
            "layout",
            || "to channels first".into(),
            0.0,
            bytes,
            || to_channels_first(&f),
        )
    }
}

/// What an EPS network sees next to the pivot μ*.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// The observation image `[B or 1, C, H, W]` (masked `y`, nearest-upsampled `y` or blurred
    /// `y`).
    pub obs: Tensor,
    /// `diag(Σ*)`, the per-pixel variance of the pivot's noise, `[B or 1, 1, H, W]`.
    pub variance: Tensor,
}

impl Conditioning {
    /// Reflect-pads both images (see [`crate::inverse::pad::reflect_pad`]).
    fn padded(&self, pad: crate::inverse::pad::Padding) -> Result<Self> {
        use crate::inverse::pad::reflect_pad;
        Ok(Self {
            obs: reflect_pad(&self.obs, pad)?,
            variance: reflect_pad(&self.variance, pad)?,
        })
    }
}

/// The EDM-preconditioned denoiser around a [`UNet`].
#[derive(Debug, Clone)]
pub struct EdmDenoiser {
    net: UNet,
}

/// EDM coefficients, each `[B, 1, 1, 1]` (scalar σ) or `[B, 1, H, W]` (per pixel).
struct Precond {
    skip: Tensor,
    out: Tensor,
    input: Tensor,
}

impl Precond {
    /// The coefficients for noise variances `var` (any shape), `σ_d` = `sd`.
    fn from_variance(var: &Tensor, sd: f64) -> Result<Self> {
        let var = var.to_dtype(DType::F32)?;
        let var = var.clamp(MIN_PIXEL_SIGMA * MIN_PIXEL_SIGMA, f64::MAX)?;
        let total = (&var + sd * sd)?; // s² + σ_d²
        let root = total.sqrt()?;
        Ok(Self {
            skip: total.recip()?.affine(sd * sd, 0.0)?,
            out: var.sqrt()?.div(&root)?.affine(sd, 0.0)?,
            input: root.recip()?,
        })
    }
}

impl Precond {
    /// The network's image input: EDM's `c_in x`, or with `wiener_input` the Gaussian estimate
    /// `(c_skip x + (1 − c_skip) base) / σ_d` (`base` the observation, or 0).
    fn image_input(&self, x: &Tensor, base: Option<&Tensor>, cfg: &UNetConfig) -> Result<Tensor> {
        let dtype = x.dtype();
        if !cfg.wiener_input {
            return Ok(x.broadcast_mul(&self.input.to_dtype(dtype)?)?);
        }
        let scale = 1.0 / cfg.sigma_data;
        let skip = self.skip.to_dtype(dtype)?;
        let estimate = x.broadcast_mul(&skip)?;
        let estimate = match base {
            Some(base) => (estimate + base.broadcast_mul(&skip.affine(-1.0, 1.0)?)?)?,
            None => estimate,
        };
        Ok(estimate.affine(scale, 0.0)?)
    }
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

    /// The per-sample noise levels as f64 values, checked.
    fn noise_levels(sigma: &Tensor) -> Result<Vec<f64>> {
        let s: Vec<f64> = sigma.to_dtype(DType::F64)?.to_vec1()?;
        if let Some(bad) = s.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
            return Err(Error::invalid(
                "σ",
                bad,
                "the denoiser needs a positive, finite noise level",
            ));
        }
        Ok(s)
    }

    /// `D(x, σ)` with a per-sample noise level `sigma`: `[B]`, and, for an EPS network, the
    /// conditioning. H and W must be multiples of the network's size multiple (use
    /// [`Self::forward_padded`] otherwise).
    pub fn forward(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        cond: Option<&Conditioning>,
    ) -> Result<Tensor> {
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
        let s = Self::noise_levels(sigma)?;
        let dev = x.device();
        let dtype = x.dtype();
        let c_noise = Tensor::from_vec(
            s.iter().map(|v| (v.ln() / 4.0) as f32).collect::<Vec<_>>(),
            b,
            dev,
        )?
        .to_dtype(dtype)?;
        let sd = cfg.sigma_data;
        let mut base = None;
        let (p, input) = match (cfg.cond_channels, cond) {
            (0, None) => {
                let var = Tensor::from_vec(
                    s.iter().map(|v| (v * v) as f32).collect::<Vec<_>>(),
                    (b, 1, 1, 1),
                    dev,
                )?;
                let p = Precond::from_variance(&var, sd)?;
                let scaled = p.image_input(x, None, cfg)?;
                (p, scaled)
            }
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
            (k, Some(cond)) => {
                let k_obs = k - 1;
                let (ob, oc, oh, ow) = cond.obs.dims4()?;
                if oc != k_obs || (oh, ow) != (h, w) || (ob != b && ob != 1) {
                    return Err(Error::shape(
                        "observation",
                        format!("[{b}, {k_obs}, {h}, {w}]"),
                        format!("{:?}", cond.obs.dims()),
                    ));
                }
                let (vb, vc, vh, vw) = cond.variance.dims4()?;
                if vc != 1 || (vh, vw) != (h, w) || (vb != b && vb != 1) {
                    return Err(Error::shape(
                        "pivot variance",
                        format!("[{b}, 1, {h}, {w}]"),
                        format!("{:?}", cond.variance.dims()),
                    ));
                }
                let var = if cfg.pixel_precond {
                    cond.variance.broadcast_as((b, 1, h, w))?
                } else {
                    // Ablation: every pixel at the sampler's σ, as in EDM.
                    Tensor::from_vec(
                        s.iter().map(|v| (v * v) as f32).collect::<Vec<_>>(),
                        (b, 1, 1, 1),
                        dev,
                    )?
                    .broadcast_as((b, 1, h, w))?
                };
                let p = Precond::from_variance(&var, sd)?;
                let obs = cond.obs.to_dtype(dtype)?.broadcast_as((b, k_obs, h, w))?;
                let scaled = p.image_input(x, cfg.obs_base.then_some(&obs), cfg)?;
                if cfg.obs_base {
                    let weight = p.skip.affine(-1.0, 1.0)?.to_dtype(dtype)?;
                    base = Some(obs.broadcast_mul(&weight)?);
                }
                // ln(s)/4 = ln(s²)/8, on the scale of c_noise.
                let level = var
                    .to_dtype(DType::F32)?
                    .clamp(MIN_PIXEL_SIGMA * MIN_PIXEL_SIGMA, f64::MAX)?
                    .log()?
                    .affine(0.125, 0.0)?
                    .to_dtype(dtype)?;
                (p, Tensor::cat(&[&scaled, &obs, &level], 1)?)
            }
        };
        let f = self.net.forward(&input, &c_noise)?;
        let d = (x.broadcast_mul(&p.skip.to_dtype(dtype)?)?
            + f.broadcast_mul(&p.out.to_dtype(dtype)?)?)?;
        Ok(match base {
            Some(base) => (d + base)?,
            None => d,
        })
    }

    /// [`Self::forward`] for any H and W: reflect-pads up to the size multiple and crops back.
    pub fn forward_padded(
        &self,
        x: &Tensor,
        sigma: &Tensor,
        cond: Option<&Conditioning>,
    ) -> Result<Tensor> {
        use crate::inverse::pad::{crop, padding_to_multiple, reflect_pad};
        let (_, _, h, w) = x.dims4()?;
        let pad = padding_to_multiple(h, w, self.net.config().size_multiple());
        if pad == Default::default() {
            return self.forward(x, sigma, cond);
        }
        let xp = reflect_pad(x, pad)?;
        let cp = cond.map(|c| c.padded(pad)).transpose()?;
        crop(&self.forward(&xp, sigma, cp.as_ref())?, pad)
    }
}

/// A tensor of per-sample noise levels `[B]` (f64) on `device`.
pub fn sigma_tensor(sigmas: &[f64], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_vec(sigmas.to_vec(), sigmas.len(), device)?)
}
