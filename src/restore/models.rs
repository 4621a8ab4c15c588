//! The shipped networks: where they are found and how they are loaded.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::denoiser::{ModelFile, ModelKind, Network};
use crate::sampler::{Denoisers, Method};
use crate::{Error, Result};

/// File name of the unconditional network inside a weights folder.
pub const PRIOR_FILE: &str = "prior.safetensors";
/// File name of the EPS network inside a weights folder.
pub const EPS_FILE: &str = "eps.safetensors";
/// Environment variable naming a weights folder.
pub const WEIGHTS_ENV: &str = "EPS_STUDIO_WEIGHTS";

/// The unconditional and EPS networks, either of which may be missing.
#[derive(Debug, Clone)]
pub struct Models {
    prior: Option<Network>,
    eps: Option<Network>,
    device: Device,
    folder: Option<PathBuf>,
}

impl Models {
    /// Networks given directly (tests, custom set-ups).
    pub fn new(prior: Option<Network>, eps: Option<Network>, device: Device) -> Self {
        Self {
            prior,
            eps,
            device,
            folder: None,
        }
    }

    /// Loads `prior.safetensors` and `eps.safetensors` from `folder`. Both must be present and
    /// valid; the error names the file and what to do.
    pub fn load(folder: &Path, device: &Device) -> Result<Self> {
        let load = |name: &str, want: ModelKind| -> Result<Network> {
            let path = folder.join(name);
            if !path.exists() {
                return Err(Error::invalid(
                    "weights",
                    path.display(),
                    format!(
                        "missing; point --weights (or {WEIGHTS_ENV}) at a folder holding {PRIOR_FILE} and {EPS_FILE}, such as the project's assets/"
                    ),
                ));
            }
            let file = ModelFile::load(&path, device)?;
            if file.kind != want {
                return Err(Error::invalid(
                    "weights",
                    path.display(),
                    format!(
                        "holds a {:?} network where a {want:?} network was expected",
                        file.kind
                    ),
                ));
            }
            Ok(Network::new(file.build(device)?))
        };
        Ok(Self {
            prior: Some(load(PRIOR_FILE, ModelKind::Prior)?),
            eps: Some(load(EPS_FILE, ModelKind::Eps)?),
            device: device.clone(),
            folder: Some(folder.to_owned()),
        })
    }

    /// The weights folder to use: `explicit`, else `$EPS_STUDIO_WEIGHTS`, else `assets/` next to
    /// the executable or in the source tree it was built from.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
        if let Some(p) = explicit {
            return Ok(p.to_owned());
        }
        if let Some(p) = std::env::var_os(WEIGHTS_ENV) {
            return Ok(PathBuf::from(p));
        }
        let mut candidates = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            candidates.push(dir.join("assets"));
            // target/{debug,release}/ inside a source checkout.
            candidates.push(dir.join("../../assets"));
            candidates.push(dir.join("../../../assets"));
        }
        candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"));
        candidates
            .into_iter()
            .find(|d| d.join(EPS_FILE).exists())
            .map(|d| d.canonicalize().unwrap_or(d))
            .ok_or_else(|| {
                Error::invalid(
                    "weights",
                    "not found",
                    format!(
                        "no folder with {EPS_FILE} next to the program or in its source tree; pass --weights DIR or set {WEIGHTS_ENV}"
                    ),
                )
            })
    }

    /// The unconditional network, if loaded.
    pub fn prior(&self) -> Option<&Network> {
        self.prior.as_ref()
    }

    /// The EPS network, if loaded.
    pub fn eps(&self) -> Option<&Network> {
        self.eps.as_ref()
    }

    /// Seconds one network call takes per million pixels on this device, timed on a 128×128
    /// image (the EPS network where loaded, the prior otherwise; the second of two calls, so
    /// start-up costs are left out).
    pub fn seconds_per_megapixel(&self) -> Result<f64> {
        use candle_core::{DType, Tensor};
        let net = self
            .eps
            .as_ref()
            .or(self.prior.as_ref())
            .ok_or_else(|| Error::Unsupported("no network loaded".into()))?
            .inner();
        let n = 128;
        let x = Tensor::zeros((1, 3, n, n), DType::F32, &self.device)?;
        let sigma = Tensor::ones(1, DType::F64, &self.device)?;
        let cond = if net.config().cond_channels > 0 {
            Some(crate::denoiser::Conditioning {
                obs: x.clone(),
                variance: Tensor::ones((1, 1, n, n), DType::F32, &self.device)?,
            })
        } else {
            None
        };
        let mut secs = 0.0;
        for _ in 0..2 {
            self.device.synchronize()?;
            let t = std::time::Instant::now();
            net.forward_padded(&x, &sigma, cond.as_ref())?;
            self.device.synchronize()?;
            secs = t.elapsed().as_secs_f64();
        }
        Ok(secs / (n * n) as f64 * 1e6)
    }

    /// The device the networks run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The folder the networks came from.
    pub fn folder(&self) -> Option<&Path> {
        self.folder.as_deref()
    }

    /// The denoisers `method` needs, or an error naming the missing one.
    pub fn denoisers(&self, method: &Method) -> Result<Denoisers<'_>> {
        let d = Denoisers {
            prior: self
                .prior
                .as_ref()
                .map(|n| n as &dyn crate::sampler::Denoiser),
            posterior: self
                .eps
                .as_ref()
                .map(|n| n as &dyn crate::sampler::PosteriorDenoiser),
        };
        if method.needs_posterior_denoiser() && d.posterior.is_none() {
            return Err(Error::Unsupported(format!(
                "{} needs the EPS network ({EPS_FILE}), which is not loaded",
                method.name()
            )));
        }
        if !method.needs_posterior_denoiser() && d.prior.is_none() {
            return Err(Error::Unsupported(format!(
                "{} needs the unconditional network ({PRIOR_FILE}), which is not loaded",
                method.name()
            )));
        }
        Ok(d)
    }
}
