//! Training (`eps-studio train`): stage 1 fits the unconditional denoiser with the EDM loss;
//! stage 2 fine-tunes it into the amortised EPS posterior denoiser on pivots (eps-method.md §4).
//!
//! Everything needed to continue is checkpointed — weights, EMA, Adam moments, step — and every
//! step's randomness is derived from `(seed, step)`, so an interrupted run resumes exactly where it
//! stopped. Each checkpoint file holds one kind of tensor (≤ 16 MiB for the CPU model).

pub mod batch;
pub mod data;
pub mod optim;
pub mod plot;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::denoiser::{EdmDenoiser, ModelFile, ModelKind, UNetConfig};
use crate::{Error, Result};
use batch::{Batch, NoiseLevels, eps_batch, prior_batch, training_task};
use data::{PhotoSet, Split, grid_crops, random_crops};
use optim::{Adam, Ema};
use plot::{LossPoint, loss_svg};

/// Which network is trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The unconditional prior denoiser.
    Prior,
    /// The EPS posterior denoiser, fine-tuned from the prior.
    Eps,
}

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Stage.
    pub stage: Stage,
    /// Architecture (the prior stage; the EPS stage takes it from the initial weights).
    pub model: UNetConfig,
    /// Total optimiser steps.
    pub steps: usize,
    /// Images per step at the base crop side.
    pub batch: usize,
    /// Base crop side in pixels (a multiple of the network's size multiple); also the side of
    /// the validation crops.
    pub crop: usize,
    /// Larger crops mixed in, as `(side, probability)`: a step draws one side (the base side
    /// with the remaining probability) and scales the batch by `(crop/side)²` (at least one
    /// image), so every step sees about the same number of pixels (Patch Diffusion, inverted:
    /// the network learns structure at the scale the app works at).
    pub crop_mix: Vec<(usize, f64)>,
    /// Largest scale jitter: crops cover `crop × s` pixels of the photo, `s ∈ [1, max_scale]`.
    pub max_scale: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// After this many steps the learning rate decays as `lr/√(t/lr_decay)` (EDM2's
    /// inverse-square-root schedule, which a continued run extends without a restart); 0 keeps
    /// it constant.
    pub lr_decay: usize,
    /// Relative width σ_rel of the power-function EMA of the weights (EDM2).
    pub ema_rel: f64,
    /// Noise-level distribution.
    pub noise: NoiseLevels,
    /// EPS stage: per-pixel preconditioning from the pivot's noise (`false`: the sampler's σ
    /// for every pixel, an ablation).
    pub pixel_precond: bool,
    /// Global gradient-norm clip.
    pub clip: f64,
    /// Seed of all randomness.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between validation losses.
    pub val_every: usize,
    /// Validation crops per validation photo.
    pub val_crops_per_photo: usize,
    /// σ_y range (log-uniform) of the EPS stage.
    pub sigma_y_range: (f64, f64),
    /// Wall-clock budget of this invocation in seconds: the run stops after the step that
    /// passes it, validates and checkpoints (a resumed run goes on from there). `None`: all steps.
    #[serde(default)]
    pub max_secs: Option<f64>,
    /// Also checkpoint whenever this many seconds have passed since the last checkpoint, so a
    /// killed run loses at most that much work.
    #[serde(default)]
    pub checkpoint_secs: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            stage: Stage::Prior,
            model: UNetConfig::default(),
            steps: 3000,
            batch: 16,
            crop: 64,
            crop_mix: vec![(128, 0.3), (256, 0.15)],
            max_scale: 2.0,
            lr: 4e-4,
            warmup: 500,
            lr_decay: 4000,
            ema_rel: 0.1,
            noise: NoiseLevels::default(),
            pixel_precond: true,
            clip: 1.0,
            seed: 0,
            checkpoint_every: 250,
            val_every: 100,
            val_crops_per_photo: 8,
            sigma_y_range: (0.01, 0.1),
            max_secs: None,
            checkpoint_secs: None,
        }
    }
}

/// One logged step.
#[derive(Debug, Clone, Copy)]
pub struct StepLog {
    /// Step just completed (1-based).
    pub step: usize,
    /// Loss of the step's batch.
    pub train_loss: f64,
    /// Validation loss of the EMA weights, when measured.
    pub val_loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall-clock seconds of the step.
    pub step_secs: f64,
    /// Images in the step's batch.
    pub images: usize,
    /// Their side in pixels.
    pub side: usize,
    /// Where the step's time went.
    pub timing: StepTiming,
}

/// Seconds of one training step by phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTiming {
    /// Crops and the batch: noise, operators, pivots.
    pub data: f64,
    /// Network forward pass and loss.
    pub forward: f64,
    /// Backward pass.
    pub backward: f64,
    /// Optimiser and EMA.
    pub update: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    config: TrainConfig,
    step: usize,
    wall_secs: f64,
}

/// EDM loss weight `λ(σ) = (σ² + σ_d²)/(σ σ_d)²`, so every noise level contributes equally at
/// initialisation.
fn loss_weights(sigma: &Tensor, sigma_data: f64, dtype: DType) -> Result<Tensor> {
    let s: Vec<f64> = sigma.to_vec1()?;
    let d2 = sigma_data * sigma_data;
    let w: Vec<f64> = s.iter().map(|x| (x * x + d2) / (x * x * d2)).collect();
    Ok(Tensor::from_vec(w, (s.len(), 1, 1, 1), sigma.device())?.to_dtype(dtype)?)
}

/// The weighted denoising loss of `net` on `batch` (mean over pixels and images).
pub fn batch_loss(net: &EdmDenoiser, batch: &Batch) -> Result<Tensor> {
    let d = net.forward(&batch.input, &batch.sigma, batch.cond.as_ref())?;
    let w = loss_weights(&batch.sigma, net.config().sigma_data, d.dtype())?;
    Ok((d - &batch.x0)?.sqr()?.broadcast_mul(&w)?.mean_all()?)
}

fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn make_batch(cfg: &TrainConfig, x0: &Tensor, rng: &mut StdRng) -> Result<Batch> {
    match cfg.stage {
        Stage::Prior => prior_batch(x0, &cfg.noise, rng),
        Stage::Eps => eps_batch(x0, rng, &cfg.noise, cfg.sigma_y_range, &mut |r| {
            training_task(r)
        }),
    }
}

/// The crop side and batch of one step: a side from the crop mix, the batch scaled to keep
/// about `batch × crop²` pixels.
fn step_shape(cfg: &TrainConfig, rng: &mut StdRng) -> (usize, usize) {
    use rand::Rng as _;
    let u: f64 = rng.random();
    let mut acc = 0.0;
    for &(side, p) in &cfg.crop_mix {
        acc += p;
        if u < acc {
            let scale = (cfg.crop as f64 / side as f64).powi(2);
            return (side, ((cfg.batch as f64 * scale).round() as usize).max(1));
        }
    }
    (cfg.crop, cfg.batch)
}

/// The learning rate of update `step` (0-based): linear warm-up, then constant until
/// `lr_decay`, then `lr/√(t/lr_decay)`.
pub fn learning_rate(cfg: &TrainConfig, step: usize) -> f64 {
    let t = (step + 1) as f64;
    let warm = (t / cfg.warmup.max(1) as f64).min(1.0);
    let decay = if cfg.lr_decay > 0 {
        1.0 / (t / cfg.lr_decay as f64).max(1.0).sqrt()
    } else {
        1.0
    };
    cfg.lr * warm * decay
}

/// Writes the batch of training step `step` as pictures, for checking the pipeline end to end,
/// and returns a summary of its value ranges and noise levels: `clean.png` (the crops),
/// `input.png` (what the network's `x` input is: `x_t` for the prior, `μ*` for EPS, clipped
/// to the image range), and for EPS `observation.png` and `noise-level.png` (the pivot's
/// per-pixel noise level, black σ ≤ 0.002 to white σ ≥ 80, log scale).
pub fn dump_batch(cfg: &TrainConfig, photos: &PhotoSet, step: usize, dir: &Path) -> Result<String> {
    let train_photos = photos.split(Split::Train);
    if train_photos.is_empty() {
        return Err(Error::invalid(
            "photos",
            "no training photos",
            "the pack has no training split",
        ));
    }
    let mut rng = step_rng(cfg.seed, step);
    let (side, images) = step_shape(cfg, &mut rng);
    let x0 = random_crops(
        &train_photos,
        images,
        side,
        cfg.max_scale,
        &mut rng,
        &Device::Cpu,
    )?;
    let batch = make_batch(cfg, &x0, &mut rng)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_owned(),
        source,
    })?;
    let cols = images.min(8);
    let save = |name: &str, t: &Tensor| -> Result<()> {
        let png = crate::eval::diagnose::grid_png(&t.clamp(-1.0, 1.0)?, cols)?;
        crate::fsutil::write_atomic(&dir.join(name), &png)
    };
    let range = |t: &Tensor| -> Result<(f32, f32)> {
        let v: Vec<f32> = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        Ok(v.iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
                (a.min(x), b.max(x))
            }))
    };
    save("clean.png", &batch.x0)?;
    save("input.png", &batch.input)?;
    let sigmas: Vec<f64> = batch.sigma.to_vec1()?;
    let mut text = format!(
        "step {step}: {images} crops of {side}×{side}\nσ: {}\nclean range {:?}, input range {:?}\n",
        sigmas
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(" "),
        range(&batch.x0)?,
        range(&batch.input)?
    );
    if let Some(c) = &batch.cond {
        save("observation.png", &c.obs)?;
        let level = c
            .variance
            .clamp(1e-12, f64::MAX)?
            .log()?
            .affine(0.5, 0.0)?
            .affine(
                2.0 / (80f64.ln() - 0.002f64.ln()),
                -(80f64.ln() + 0.002f64.ln()) / (80f64.ln() - 0.002f64.ln()),
            )?
            .repeat((1, 3, 1, 1))?;
        save("noise-level.png", &level)?;
        text.push_str(&format!(
            "observation range {:?}, pivot σ range {:?}\n",
            range(&c.obs)?,
            {
                let (a, b) = range(&c.variance)?;
                (a.sqrt(), b.sqrt())
            }
        ));
    }
    Ok(text)
}

/// Deterministic initialisation from the seed: convolution and linear weights ~ N(0, 1/fan_in)
/// (LeCun normal), biases 0, and zero for the layers that end a residual branch or the network.
fn initialise(vars: &[(String, Var)], seed: u64) -> Result<()> {
    use rand_distr::{Distribution as _, StandardNormal};
    for (name, var) in vars {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        // The output convolution and the last layer of every residual branch (`….out.…`) start
        // at zero: the network starts as D(x, σ) = c_skip x and every block as the identity.
        let zero = name.starts_with("output.") || name.contains(".out.") || name.ends_with(".bias");
        let values: Vec<f32> = if zero {
            vec![0.0; n]
        } else if dims.len() == 1 {
            vec![1.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let mut rng = StdRng::seed_from_u64(
                seed ^ name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                }),
            );
            let std = (1.0 / fan_in.max(1) as f64).sqrt();
            (0..n)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (z * std) as f32
                })
                .collect()
        };
        var.set(&Tensor::from_vec(values, dims, var.device())?)?;
    }
    Ok(())
}

/// Where a run keeps its files.
struct RunFiles {
    dir: PathBuf,
}

impl RunFiles {
    fn checkpoint(&self, part: &str) -> PathBuf {
        self.dir
            .join("checkpoint")
            .join(format!("{part}.safetensors"))
    }
    fn state(&self) -> PathBuf {
        self.dir.join("checkpoint").join("state.json")
    }
    fn csv(&self) -> PathBuf {
        self.dir.join("loss.csv")
    }
    fn svg(&self) -> PathBuf {
        self.dir.join("loss.svg")
    }
    fn final_weights(&self) -> PathBuf {
        self.dir.join("final.safetensors")
    }
    fn latest_weights(&self) -> PathBuf {
        self.dir.join("latest.safetensors")
    }
}

fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>, step: usize) -> Result<()> {
    let cpu: std::collections::BTreeMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let meta = HashMap::from([("eps_studio.step".to_owned(), step.to_string())]);
    let bytes = safetensors::serialize(cpu.iter(), Some(meta))
        .map_err(|e| Error::Unsupported(format!("cannot write checkpoint: {e}")))?;
    crate::fsutil::write_atomic(path, &bytes)
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = crate::fsutil::read(path)?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| {
        Error::invalid(
            "checkpoint",
            path.display(),
            format!("{e}; delete the checkpoint folder to restart the run"),
        )
    })
}

/// Trains `cfg.stage` on `photos`, writing checkpoints, `loss.csv`, `loss.svg` and finally
/// `final.safetensors` (EMA weights) under `out`. Resumes from `out/checkpoint` when present.
/// `init` is required for the EPS stage (an unconditional network, widened with zero weights).
pub fn train(
    cfg: &TrainConfig,
    photos: &PhotoSet,
    out: &Path,
    init: Option<&ModelFile>,
    device: &Device,
    on_log: &mut dyn FnMut(&StepLog),
) -> Result<ModelFile> {
    let files = RunFiles {
        dir: out.to_owned(),
    };
    let start_file = match (cfg.stage, init) {
        (Stage::Prior, Some(m)) if m.kind == ModelKind::Prior => Some(m.clone()),
        (Stage::Prior, None) => None,
        (Stage::Eps, Some(m)) if m.kind == ModelKind::Prior => {
            let mut widened = m.widen_to_eps()?;
            widened.config.pixel_precond = cfg.pixel_precond;
            Some(widened)
        }
        (Stage::Eps, Some(m)) => Some(m.clone()),
        (Stage::Eps, None) => {
            return Err(Error::invalid(
                "--init",
                "missing",
                "the EPS stage starts from the unconditional network: pass --init PRIOR.safetensors",
            ));
        }
        (Stage::Prior, Some(_)) => {
            return Err(Error::invalid(
                "--init",
                "an EPS network",
                "the prior stage continues from an unconditional network",
            ));
        }
    };
    let model = start_file
        .as_ref()
        .map_or_else(|| cfg.model.clone(), |m| m.config.clone());
    let m = model.size_multiple();
    for side in std::iter::once(cfg.crop).chain(cfg.crop_mix.iter().map(|(s, _)| *s)) {
        if side == 0 || !side.is_multiple_of(m) {
            return Err(Error::invalid(
                "crop",
                side,
                format!("must be a positive multiple of {m} for this network"),
            ));
        }
    }
    let mix: f64 = cfg.crop_mix.iter().map(|(_, p)| p).sum();
    if cfg.crop_mix.iter().any(|(_, p)| p.is_nan() || *p < 0.0) || mix > 1.0 + 1e-9 {
        return Err(Error::invalid(
            "crop mix",
            format!("{:?}", cfg.crop_mix),
            "probabilities must be ≥ 0 and sum to at most 1",
        ));
    }
    if cfg.batch == 0 || cfg.steps == 0 {
        return Err(Error::invalid(
            "batch/steps",
            format!("{}/{}", cfg.batch, cfg.steps),
            "must be positive",
        ));
    }
    let train_photos = photos.split(Split::Train);
    if train_photos.is_empty() {
        return Err(Error::invalid(
            "photos",
            "no training photos",
            "the pack has no training split",
        ));
    }

    let varmap = VarMap::new();
    let net = EdmDenoiser::new(VarBuilder::from_varmap(&varmap, DType::F32, device), &model)?;
    let vars: Vec<(String, Var)> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Unsupported("parameter map lock poisoned".into()))?;
        let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let set_all = |weights: &HashMap<String, Tensor>| -> Result<()> {
        for (name, var) in &vars {
            let t = weights
                .get(name)
                .ok_or_else(|| Error::Unsupported(format!("weights lack {name}")))?;
            var.set(&t.to_device(device)?.to_dtype(DType::F32)?)?;
        }
        Ok(())
    };
    match &start_file {
        Some(f) => set_all(&f.tensors)?,
        None => initialise(&vars, cfg.seed)?,
    }
    let mut adam = Adam::new(vars.clone(), cfg.lr)?;
    let mut ema = Ema::new(&vars, cfg.ema_rel)?;

    // Resume.
    let mut start = 0;
    let mut wall_secs = 0.0;
    if files.state().exists() {
        let state: CheckpointState = serde_json::from_slice(&crate::fsutil::read(&files.state())?)
            .map_err(|e| {
                Error::invalid("checkpoint state", files.state().display(), e.to_string())
            })?;
        if state.config.stage != cfg.stage || state.config.model != model {
            return Err(Error::invalid(
                "output folder",
                out.display(),
                "holds a checkpoint of a different stage or architecture; choose another --out",
            ));
        }
        set_all(&load_tensors(&files.checkpoint("params"), device)?)?;
        ema.restore(load_tensors(&files.checkpoint("ema"), device)?);
        let mut moments = load_tensors(&files.checkpoint("adam_m"), device)?;
        moments.extend(load_tensors(&files.checkpoint("adam_v"), device)?);
        adam.restore(&moments, state.step)?;
        start = state.step;
        wall_secs = state.wall_secs;
    }
    let mut history = truncate_history(&files.csv(), start)?;

    // A fixed validation batch: same crops, tasks, noise and σ at every evaluation.
    let val_photos = photos.split(Split::Validation);
    let val_batches = if val_photos.is_empty() {
        Vec::new()
    } else {
        let x0 = grid_crops(&val_photos, cfg.val_crops_per_photo, cfg.crop, 1.0, device)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x7661_6c69_6461_7465);
        let n = x0.dim(0)?;
        (0..n)
            .step_by(16)
            .map(|i| make_batch(cfg, &x0.narrow(0, i, 16.min(n - i))?, &mut rng))
            .collect::<Result<Vec<_>>>()?
    };
    let val_loss = |weights: &HashMap<String, Tensor>| -> Result<Option<f64>> {
        if val_batches.is_empty() {
            return Ok(None);
        }
        let net = EdmDenoiser::new(
            VarBuilder::from_tensors(weights.clone(), DType::F32, device),
            &model,
        )?;
        let mut total = 0.0;
        for b in &val_batches {
            total += batch_loss(&net, b)?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok(Some(total / val_batches.len() as f64))
    };

    let base_notes = start_file
        .as_ref()
        .map(|f| f.notes.clone())
        .unwrap_or_default();
    let stage_name = match cfg.stage {
        Stage::Prior => "prior",
        Stage::Eps => "eps",
    };
    // A run that continues a network of the same stage adds to its steps and wall time, and
    // its recipe says what was added.
    let earlier = |key: &str| {
        base_notes
            .get(&format!("eps_studio.{stage_name}.{key}"))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let (earlier_steps, earlier_wall) = (
        earlier("steps").map_or(0, |v| v as usize),
        earlier("wall_secs").unwrap_or(0.0),
    );
    let earlier_recipe = base_notes
        .get(&format!("eps_studio.{stage_name}.recipe"))
        .cloned()
        .unwrap_or_else(|| format!("{earlier_steps} steps"));
    // The EMA weights as a weight file, with the run's notes.
    let weight_file =
        |ema: &Ema, step: usize, wall: f64, history: &[LossPoint]| -> Result<ModelFile> {
            let mut notes = base_notes.clone();
            notes.insert(
                format!("eps_studio.{stage_name}.steps"),
                (earlier_steps + step).to_string(),
            );
            notes.insert(
                format!("eps_studio.{stage_name}.wall_secs"),
                format!("{:.0}", earlier_wall + wall),
            );
            if earlier_steps > 0 {
                notes.insert(
                    format!("eps_studio.{stage_name}.recipe"),
                    format!("{earlier_recipe}; then {step} steps at lr {:e}", cfg.lr),
                );
            }
            notes.insert(
                format!("eps_studio.{stage_name}.batch"),
                format!(
                    "{} × {}² (crop mix {:?})",
                    cfg.batch, cfg.crop, cfg.crop_mix
                ),
            );
            if let Some(v) = history.iter().rev().find_map(|p| p.val) {
                notes.insert(
                    format!("eps_studio.{stage_name}.val_loss"),
                    format!("{v:.5}"),
                );
            }
            Ok(ModelFile {
                kind: match cfg.stage {
                    Stage::Prior => ModelKind::Prior,
                    Stage::Eps => ModelKind::Eps,
                },
                config: model.clone(),
                tensors: ema.weights().clone(),
                notes,
            })
        };
    let step_of = |history: &[LossPoint]| history.last().map_or(0, |p| p.step);
    let checkpoint =
        |step: usize, wall: f64, ema: &Ema, adam: &Adam, history: &[LossPoint]| -> Result<()> {
            // The averaged weights so far, usable as they are (evaluation, a run cut short).
            weight_file(ema, step, wall, history)?.save(&files.latest_weights())?;
            let params: HashMap<String, Tensor> = vars
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect();
            save_tensors(&files.checkpoint("params"), &params, step)?;
            save_tensors(&files.checkpoint("ema"), ema.weights(), step)?;
            let state = adam.state();
            let (m, v): (HashMap<_, _>, HashMap<_, _>) =
                state.into_iter().partition(|(k, _)| k.starts_with("m."));
            save_tensors(&files.checkpoint("adam_m"), &m, step)?;
            save_tensors(&files.checkpoint("adam_v"), &v, step)?;
            let st = CheckpointState {
                config: TrainConfig {
                    model: model.clone(),
                    ..cfg.clone()
                },
                step,
                wall_secs: wall,
            };
            crate::fsutil::write_atomic(
                &files.state(),
                &serde_json::to_vec_pretty(&st).map_err(|e| Error::Unsupported(e.to_string()))?,
            )?;
            let title = format!("{:?} stage: EDM-weighted loss", cfg.stage);
            crate::fsutil::write_atomic(
                &files.svg(),
                loss_svg(history, &title, 720.0, 400.0).as_bytes(),
            )
        };

    let mut csv = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(files.csv())
        .map_err(|source| Error::Io {
            path: files.csv(),
            source,
        })?;
    let csv_err = |source| Error::Io {
        path: files.csv(),
        source,
    };
    if start == 0 {
        let v = val_loss(ema.weights())?;
        history.push(LossPoint {
            step: 0,
            train: f64::NAN,
            val: v,
        });
        writeln!(
            csv,
            "0,NaN,{},,,",
            v.map(|v| v.to_string()).unwrap_or_default()
        )
        .map_err(csv_err)?;
    }
    let began = Instant::now();
    let mut last_checkpoint = Instant::now();
    for step in start..cfg.steps {
        let t0 = Instant::now();
        let mut rng = step_rng(cfg.seed, step);
        let (side, images) = step_shape(cfg, &mut rng);
        let x0 = random_crops(&train_photos, images, side, cfg.max_scale, &mut rng, device)?;
        let batch = make_batch(cfg, &x0, &mut rng)?;
        let t_data = t0.elapsed().as_secs_f64();
        let loss = batch_loss(&net, &batch)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let t_forward = t0.elapsed().as_secs_f64();
        if !loss_value.is_finite() {
            return Err(Error::NonFinite {
                what: format!("the training loss at step {}", step + 1),
            });
        }
        let grads = loss.backward()?;
        let t_backward = t0.elapsed().as_secs_f64();
        let lr = learning_rate(cfg, step);
        let grad_norm = adam.step(&grads, lr, cfg.clip)?;
        ema.update(&vars, step + 1)?;
        let timing = StepTiming {
            data: t_data,
            forward: t_forward - t_data,
            backward: t_backward - t_forward,
            update: t0.elapsed().as_secs_f64() - t_backward,
        };
        let done = step + 1;
        let out_of_time = cfg
            .max_secs
            .is_some_and(|budget| began.elapsed().as_secs_f64() >= budget);
        let val = if done % cfg.val_every == 0 || done == cfg.steps || out_of_time {
            val_loss(ema.weights())?
        } else {
            None
        };
        let step_secs = t0.elapsed().as_secs_f64();
        wall_secs += step_secs;
        let log = StepLog {
            step: done,
            train_loss: loss_value,
            val_loss: val,
            lr,
            grad_norm,
            step_secs,
            images,
            side,
            timing,
        };
        history.push(LossPoint {
            step: done,
            train: loss_value,
            val,
        });
        writeln!(
            csv,
            "{done},{loss_value},{},{lr},{grad_norm},{step_secs}",
            val.map(|v| v.to_string()).unwrap_or_default()
        )
        .map_err(|source| Error::Io {
            path: files.csv(),
            source,
        })?;
        on_log(&log);
        let time_for_checkpoint = cfg
            .checkpoint_secs
            .is_some_and(|every| last_checkpoint.elapsed().as_secs_f64() >= every);
        if done % cfg.checkpoint_every == 0
            || done == cfg.steps
            || out_of_time
            || time_for_checkpoint
        {
            last_checkpoint = Instant::now();
            csv.flush().map_err(|source| Error::Io {
                path: files.csv(),
                source,
            })?;
            checkpoint(done, wall_secs, &ema, &adam, &history)?;
        }
        if out_of_time {
            break;
        }
    }

    let file = weight_file(&ema, step_of(&history), wall_secs, &history)?;
    file.save(&files.final_weights())?;
    Ok(file)
}

/// Keeps the rows of `loss.csv` up to step `upto` (a resumed run drops rows written after its
/// checkpoint) and returns them as points; writes the header to a new file.
fn truncate_history(path: &Path, upto: usize) -> Result<Vec<LossPoint>> {
    const HEADER: &str = "step,train_loss,val_loss,lr,grad_norm,step_secs";
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut kept = vec![HEADER.to_owned()];
    let mut points = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let Some(step) = f.first().and_then(|v| v.parse::<usize>().ok()) else {
            continue;
        };
        if step > upto {
            break;
        }
        let train = f
            .get(1)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        let val = f.get(2).and_then(|v| v.parse::<f64>().ok());
        points.push(LossPoint { step, train, val });
        kept.push(line.to_owned());
    }
    kept.push(String::new());
    crate::fsutil::write_atomic(path, kept.join("\n").as_bytes())?;
    Ok(points)
}
