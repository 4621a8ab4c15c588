//! The sampling methods a user (or a benchmark) chooses between, with their documented
//! defaults per task.

use crate::inverse::TaskSpec;
use crate::sampler::{DdnmConfig, DiffpirConfig, DpsConfig, EpsConfig, Method, PigdmConfig};

/// Which sampling method to run: EPS, its one-call mean, or a training-free baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MethodChoice {
    /// EPS with the default sampler (10 NFE).
    Eps,
    /// EPS one-call posterior mean.
    EpsMean,
    /// DPS with its documented NFE and ζ′.
    Dps,
    /// ΠGDM.
    Pigdm,
    /// DDNM+.
    Ddnm,
    /// DiffPIR.
    Diffpir,
}

impl MethodChoice {
    /// All methods, EPS first.
    pub const ALL: [Self; 6] = [
        Self::Eps,
        Self::EpsMean,
        Self::Dps,
        Self::Pigdm,
        Self::Ddnm,
        Self::Diffpir,
    ];

    /// The sampler method with its documented defaults for `task`.
    pub fn method(self, task: &TaskSpec) -> Method {
        let t = task.sampler_task();
        match self {
            Self::Eps => Method::Eps(EpsConfig::default()),
            Self::EpsMean => Method::PosteriorMean(Default::default()),
            Self::Dps => Method::Dps(DpsConfig::for_task(t)),
            Self::Pigdm => Method::Pigdm(PigdmConfig::default()),
            Self::Ddnm => Method::Ddnm(DdnmConfig::default()),
            Self::Diffpir => Method::Diffpir(DiffpirConfig::for_task(t)),
        }
    }

    /// The name shown to users.
    pub fn label(self) -> &'static str {
        match self {
            Self::Eps => "EPS (exact posterior)",
            Self::EpsMean => "EPS posterior mean (1 NFE)",
            Self::Dps => "DPS",
            Self::Pigdm => "ΠGDM",
            Self::Ddnm => "DDNM+",
            Self::Diffpir => "DiffPIR",
        }
    }

    /// The documented number of sampler steps (0 for the one-call mean).
    pub fn default_steps(self) -> usize {
        match self {
            Self::Eps => EpsConfig::default().steps,
            Self::EpsMean => 0,
            Self::Dps => 250,
            Self::Pigdm | Self::Ddnm | Self::Diffpir => 100,
        }
    }

    /// Parses `eps`, `eps-mean`, `dps`, `pigdm`, `ddnm`, `diffpir`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "eps" => Self::Eps,
            "eps-mean" => Self::EpsMean,
            "dps" => Self::Dps,
            "pigdm" => Self::Pigdm,
            "ddnm" => Self::Ddnm,
            "diffpir" => Self::Diffpir,
            _ => return None,
        })
    }
}
