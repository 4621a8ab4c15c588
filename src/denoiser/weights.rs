//! Weight files: safetensors with the architecture in the metadata, validated on load (every name,
//! shape and dtype), written atomically.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::config::UNetConfig;
use super::unet::EdmDenoiser;
use crate::{Error, Result};

const KEY_FORMAT: &str = "eps_studio.format";
const KEY_KIND: &str = "eps_studio.kind";
const KEY_CONFIG: &str = "eps_studio.config";
/// Version 2: channels-last U-Net without normalisation layers, per-pixel preconditioning and a
/// noise-level input channel for EPS. Version 1 files (GroupNorm U-Net) are refused by name.
const FORMAT: &str = "2";

/// What a weight file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// The unconditional prior denoiser `D(x, σ)`.
    Prior,
    /// The EPS posterior denoiser `D_θ(μ*, obs, σ)`.
    Eps,
}

impl ModelKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Prior => "prior",
            Self::Eps => "eps",
        }
    }
}

/// A network's weights with its architecture and free-form notes (training step, data, …).
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// Prior or EPS.
    pub kind: ModelKind,
    /// The architecture.
    pub config: UNetConfig,
    /// Parameters by name.
    pub tensors: HashMap<String, Tensor>,
    /// Extra metadata stored with the weights.
    pub notes: BTreeMap<String, String>,
}

/// Parameter names and shapes of the network `cfg` describes.
pub fn expected_shapes(cfg: &UNetConfig) -> Result<BTreeMap<String, Vec<usize>>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    EdmDenoiser::new(vb, cfg)?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Unsupported("parameter map lock poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect())
}

impl ModelFile {
    /// Reads and validates a weight file.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes =
            crate::fsutil::read_bounded("weight file", path, crate::limits::MAX_WEIGHT_FILE_BYTES)?;
        Self::from_bytes(&bytes, device).map_err(|e| match e {
            Error::Io { .. } => e,
            other => Error::InvalidParameter {
                name: "weight file",
                value: path.display().to_string(),
                reason: format!("{other}; re-export it or use the weights shipped in assets/"),
            },
        })
    }

    /// Parses and validates a weight file held in memory.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Self> {
        let corrupt =
            |why: String| Error::Unsupported(format!("not a valid EPS Studio weight file: {why}"));
        let (_, header) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get(KEY_FORMAT).map(String::as_str) {
            Some(FORMAT) => {}
            Some("1") => {
                return Err(corrupt(format!(
                    "format version 1 holds the earlier GroupNorm network, which this version no longer runs (expected version {FORMAT}); use the weights shipped in assets/ or retrain"
                )));
            }
            Some(other) => {
                return Err(corrupt(format!(
                    "format version {other}, expected {FORMAT}"
                )));
            }
            None => {
                return Err(corrupt(
                    "no eps_studio metadata (is this another program's safetensors file?)".into(),
                ));
            }
        }
        let kind = match meta.get(KEY_KIND).map(String::as_str) {
            Some("prior") => ModelKind::Prior,
            Some("eps") => ModelKind::Eps,
            other => return Err(corrupt(format!("unknown model kind {other:?}"))),
        };
        let config: UNetConfig =
            serde_json::from_str(meta.get(KEY_CONFIG).map_or("", String::as_str))
                .map_err(|e| corrupt(format!("bad architecture description: {e}")))?;
        config.validate()?;
        if (kind == ModelKind::Eps) != (config.cond_channels > 0) {
            return Err(corrupt(format!(
                "kind {} disagrees with {} conditioning channels",
                kind.as_str(),
                config.cond_channels
            )));
        }
        let raw = candle_core::safetensors::load_buffer(bytes, device)
            .map_err(|e| corrupt(e.to_string()))?;
        // Files store half precision (see `to_bytes`); the networks compute in f32.
        let tensors = validate(&config, raw)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let notes = meta
            .into_iter()
            .filter(|(k, _)| ![KEY_FORMAT, KEY_KIND, KEY_CONFIG].contains(&k.as_str()))
            .collect();
        Ok(Self {
            kind,
            config,
            tensors,
            notes,
        })
    }

    /// Serialises to safetensors bytes with the architecture in the metadata. Weights are stored
    /// in IEEE half precision (f16: 11 significant bits, relative rounding ≤ 2⁻¹¹), which halves
    /// the file and moves a denoised image by less than 10⁻³ of its range (tests/denoiser.rs);
    /// training keeps f32 in its checkpoints.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self.notes.clone().into_iter().collect();
        meta.insert(KEY_FORMAT.into(), FORMAT.into());
        meta.insert(KEY_KIND.into(), self.kind.as_str().into());
        meta.insert(
            KEY_CONFIG.into(),
            serde_json::to_string(&self.config).map_err(|e| Error::Unsupported(e.to_string()))?,
        );
        let cpu: BTreeMap<String, Tensor> = self
            .tensors
            .iter()
            .map(|(k, v)| {
                let v = v.to_device(&Device::Cpu)?;
                let v = if v.dtype().is_float() {
                    v.to_dtype(DType::F16)?
                } else {
                    v
                };
                Ok((k.clone(), v.contiguous()?))
            })
            .collect::<Result<_>>()?;
        safetensors::serialize(cpu.iter(), Some(meta))
            .map_err(|e| Error::Unsupported(format!("cannot serialise weights: {e}")))
    }

    /// Writes the file atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, &self.to_bytes()?)
    }

    /// Builds the network on `device`.
    pub fn build(&self, device: &Device) -> Result<EdmDenoiser> {
        let ts = self
            .tensors
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_device(device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        EdmDenoiser::new(
            VarBuilder::from_tensors(ts, DType::F32, device),
            &self.config,
        )
    }

    /// The EPS network initialised from an unconditional one: identical weights, and the input
    /// convolution widened with zero weights for the observation and noise-level channels, so at
    /// step 0 the EPS network computes the prior denoiser at μ* (eps-method.md §4) — exactly so
    /// where `Σ*` is isotropic, and with the per-pixel preconditioning where it is not.
    pub fn widen_to_eps(&self) -> Result<Self> {
        if self.kind != ModelKind::Prior {
            return Err(Error::Unsupported(
                "only an unconditional network can be widened to EPS".into(),
            ));
        }
        let config = self.config.with_condition();
        let mut tensors = self.tensors.clone();
        // Every layer that reads the input gets zero weights for the new channels, appended last:
        // the unshuffled input convolution (r² per channel) and the full-resolution head.
        let r2 = config.unshuffle * config.unshuffle;
        let mut widen = |name: &str, extra_channels: usize| -> Result<()> {
            let w = tensors
                .get(name)
                .ok_or_else(|| Error::Unsupported(format!("weights lack {name}")))?;
            let (out, _, kh, kw) = w.dims4()?;
            let extra = Tensor::zeros((out, extra_channels, kh, kw), w.dtype(), w.device())?;
            let widened = Tensor::cat(&[w, &extra], 1)?;
            tensors.insert(name.into(), widened);
            Ok(())
        };
        widen("input.weight", config.cond_channels * r2)?;
        if config.head > 0 {
            widen("head.conv1.weight", config.cond_channels)?;
        }
        // Centred on the observation, the network starts with F = 0: exactly the Gaussian
        // denoiser around the classical reconstruction (see `super::unet`).
        if config.obs_base {
            let last: &[&str] = if config.head > 0 {
                &[
                    "output.weight",
                    "output.bias",
                    "head.out.weight",
                    "head.out.bias",
                ]
            } else {
                &["output.weight", "output.bias"]
            };
            for name in last {
                let w = tensors
                    .get(*name)
                    .ok_or_else(|| Error::Unsupported(format!("weights lack {name}")))?;
                let zero = w.zeros_like()?;
                tensors.insert((*name).into(), zero);
            }
        }
        let mut notes = self.notes.clone();
        notes.insert(
            "eps_studio.initialised_from".into(),
            "unconditional prior network".into(),
        );
        Ok(Self {
            kind: ModelKind::Eps,
            config,
            tensors,
            notes,
        })
    }

    /// The same network with a full-resolution head of `channels` channels added (see
    /// [`UNetConfig::head`]): its first layer drawn from `seed` (LeCun normal), its last layer
    /// zero, so the grown network computes exactly what this one does until it trains further.
    pub fn with_head(&self, channels: usize, seed: u64) -> Result<Self> {
        use rand::SeedableRng as _;
        use rand_distr::{Distribution as _, StandardNormal};
        if self.config.head != 0 {
            return Err(Error::Unsupported(format!(
                "the network already has a {}-channel head",
                self.config.head
            )));
        }
        let config = UNetConfig {
            head: channels,
            ..self.config.clone()
        };
        config.validate()?;
        let c = config.image_channels;
        let cin = 2 * c + config.cond_channels + 1;
        let device = self
            .tensors
            .values()
            .next()
            .map_or(Device::Cpu, |t| t.device().clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let std = (1.0 / (cin * 9) as f64).sqrt();
        let w: Vec<f32> = (0..channels * cin * 9)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * std) as f32
            })
            .collect();
        let mut tensors = self.tensors.clone();
        tensors.insert(
            "head.conv1.weight".into(),
            Tensor::from_vec(w, (channels, cin, 3, 3), &device)?,
        );
        tensors.insert(
            "head.conv1.bias".into(),
            Tensor::zeros(channels, DType::F32, &device)?,
        );
        tensors.insert(
            "head.out.weight".into(),
            Tensor::zeros((c, channels, 3, 3), DType::F32, &device)?,
        );
        tensors.insert(
            "head.out.bias".into(),
            Tensor::zeros(c, DType::F32, &device)?,
        );
        let mut notes = self.notes.clone();
        notes.insert(
            "eps_studio.head_added".into(),
            format!("{channels}-channel full-resolution head added to a trained network"),
        );
        Ok(Self {
            kind: self.kind,
            config,
            tensors,
            notes,
        })
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(Tensor::elem_count).sum()
    }
}

/// Checks names, shapes and dtypes against the architecture; returns the tensors in f32.
fn validate(cfg: &UNetConfig, raw: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let expected = expected_shapes(cfg)?;
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match raw.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.dims() != shape.as_slice() => {
                problems.push(format!(
                    "{name} has shape {:?}, expected {shape:?}",
                    t.dims()
                ));
            }
            Some(t)
                if !matches!(
                    t.dtype(),
                    DType::F32 | DType::F16 | DType::BF16 | DType::F64
                ) =>
            {
                problems.push(format!(
                    "{name} has dtype {:?}, expected a float type",
                    t.dtype()
                ));
            }
            Some(_) => {}
        }
    }
    for name in raw.keys().filter(|n| !expected.contains_key(*n)) {
        problems.push(format!("unexpected {name}"));
    }
    if !problems.is_empty() {
        problems.sort();
        let shown = problems
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        let more = problems.len().saturating_sub(5);
        return Err(Error::Unsupported(format!(
            "weights do not match the architecture: {shown}{}",
            if more > 0 {
                format!(" (and {more} more)")
            } else {
                String::new()
            }
        )));
    }
    raw.into_iter()
        .map(|(k, v)| {
            let v = v.to_dtype(DType::F32)?;
            crate::inverse::ensure_finite(&v, &format!("weight {k}"))?;
            Ok((k, v))
        })
        .collect()
}
