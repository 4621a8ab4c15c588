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
use batch::{Batch, eps_batch, prior_batch, training_task};
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
    /// Images per step.
    pub batch: usize,
    /// Crop side in pixels (a multiple of the network's size multiple).
    pub crop: usize,
    /// Largest scale jitter: crops cover `crop × s` pixels of the photo, `s ∈ [1, max_scale]`.
    pub max_scale: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// EMA decay per step.
    pub ema_decay: f64,
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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            stage: Stage::Prior,
            model: UNetConfig::default(),
            steps: 3000,
            batch: 16,
            crop: 64,
            max_scale: 3.0,
            lr: 5e-4,
            warmup: 200,
            ema_decay: 0.999,
            clip: 1.0,
            seed: 0,
            checkpoint_every: 250,
            val_every: 100,
            val_crops_per_photo: 8,
            sigma_y_range: (0.01, 0.1),
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
    let d = net.forward(&batch.input, &batch.sigma, batch.obs.as_ref())?;
    let w = loss_weights(&batch.sigma, net.config().sigma_data, d.dtype())?;
    Ok((d - &batch.x0)?.sqr()?.broadcast_mul(&w)?.mean_all()?)
}

fn step_rng(seed: u64, step: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn make_batch(
    stage: Stage,
    x0: &Tensor,
    rng: &mut StdRng,
    sigma_y_range: (f64, f64),
) -> Result<Batch> {
    match stage {
        Stage::Prior => prior_batch(x0, rng),
        Stage::Eps => eps_batch(x0, rng, sigma_y_range, &mut |r| training_task(r)),
    }
}

/// Deterministic initialisation from the seed: convolution and linear weights ~ N(0, 1/fan_in)
/// (LeCun normal), biases 0, normalisation scales 1, and the output convolution 0 so the network
/// starts as `D(x, σ) = c_skip x`.
fn initialise(vars: &[(String, Var)], seed: u64) -> Result<()> {
    use rand_distr::{Distribution as _, StandardNormal};
    for (name, var) in vars {
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.starts_with("output.") || name.ends_with(".bias") {
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
        (Stage::Eps, Some(m)) if m.kind == ModelKind::Prior => Some(m.widen_to_eps()?),
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
    if cfg.crop == 0 || !cfg.crop.is_multiple_of(m) {
        return Err(Error::invalid(
            "crop",
            cfg.crop,
            format!("must be a positive multiple of {m} for this network"),
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
    let mut ema = Ema::new(&vars, cfg.ema_decay);

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
        let x0 = grid_crops(&val_photos, cfg.val_crops_per_photo, cfg.crop, 2.0, device)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x7661_6c69_6461_7465);
        let n = x0.dim(0)?;
        (0..n)
            .step_by(16)
            .map(|i| {
                make_batch(
                    cfg.stage,
                    &x0.narrow(0, i, 16.min(n - i))?,
                    &mut rng,
                    cfg.sigma_y_range,
                )
            })
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

    let checkpoint =
        |step: usize, wall: f64, ema: &Ema, adam: &Adam, history: &[LossPoint]| -> Result<()> {
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
    for step in start..cfg.steps {
        let t0 = Instant::now();
        let mut rng = step_rng(cfg.seed, step);
        let x0 = random_crops(
            &train_photos,
            cfg.batch,
            cfg.crop,
            cfg.max_scale,
            &mut rng,
            device,
        )?;
        let batch = make_batch(cfg.stage, &x0, &mut rng, cfg.sigma_y_range)?;
        let loss = batch_loss(&net, &batch)?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(Error::NonFinite {
                what: format!("the training loss at step {}", step + 1),
            });
        }
        let grads = loss.backward()?;
        let lr = cfg.lr * ((step + 1) as f64 / cfg.warmup.max(1) as f64).min(1.0);
        let grad_norm = adam.step(&grads, lr, cfg.clip)?;
        ema.update(&vars)?;
        let done = step + 1;
        let val = if done % cfg.val_every == 0 || done == cfg.steps {
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
        if done % cfg.checkpoint_every == 0 || done == cfg.steps {
            csv.flush().map_err(|source| Error::Io {
                path: files.csv(),
                source,
            })?;
            checkpoint(done, wall_secs, &ema, &adam, &history)?;
        }
    }

    let final_val = history.iter().rev().find_map(|p| p.val);
    let mut notes = start_file.map(|f| f.notes).unwrap_or_default();
    let stage = match cfg.stage {
        Stage::Prior => "prior",
        Stage::Eps => "eps",
    };
    notes.insert(format!("eps_studio.{stage}.steps"), cfg.steps.to_string());
    notes.insert(
        format!("eps_studio.{stage}.wall_secs"),
        format!("{wall_secs:.0}"),
    );
    notes.insert(
        format!("eps_studio.{stage}.batch"),
        format!("{} × {}²", cfg.batch, cfg.crop),
    );
    if let Some(v) = final_val {
        notes.insert(format!("eps_studio.{stage}.val_loss"), format!("{v:.5}"));
    }
    let file = ModelFile {
        kind: match cfg.stage {
            Stage::Prior => ModelKind::Prior,
            Stage::Eps => ModelKind::Eps,
        },
        config: model,
        tensors: ema.weights().clone(),
        notes,
    };
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
