//! `eps-studio train`: the two training stages.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::ValueEnum;

use crate::denoiser::{ModelFile, UNetConfig};
use crate::train::data::PhotoSet;
use crate::train::{Stage, TrainConfig};

/// Which network to train.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StageArg {
    /// The unconditional denoiser.
    Prior,
    /// The EPS fine-tune.
    Eps,
}

/// Architecture of a new network.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModelSize {
    /// The shipped CPU model.
    Cpu,
    /// The CPU model without the attention block (ablation).
    CpuNoAttention,
    /// The CPU model with a ×4 pixel-unshuffle stem and the FLOPs moved to wider levels
    /// (ablation: the earlier network's stem).
    CpuX4,
    /// A tiny model for smoke tests.
    Tiny,
}

impl ModelSize {
    /// The architecture.
    pub fn config(self) -> UNetConfig {
        match self {
            Self::Cpu => UNetConfig::default(),
            Self::CpuNoAttention => UNetConfig {
                attention: false,
                ..UNetConfig::default()
            },
            Self::CpuX4 => UNetConfig {
                unshuffle: 4,
                channels: vec![128, 192, 256],
                ..UNetConfig::default()
            },
            Self::Tiny => UNetConfig::tiny(),
        }
    }
}

fn parse_crop_mix(s: &str) -> anyhow::Result<Vec<(usize, f64)>> {
    if s == "none" {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|part| {
            let (side, p) = part.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("crop mix '{part}': write SIDE:PROBABILITY, e.g. 128:0.3")
            })?;
            Ok((side.trim().parse()?, p.trim().parse()?))
        })
        .collect()
}

/// Arguments of `eps-studio train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Photo pack from `eps-studio data`.
    #[arg(long, default_value = "data/photos.pack")]
    pub data: PathBuf,
    /// Which network to train.
    #[arg(long, value_enum)]
    pub stage: StageArg,
    /// Output folder (checkpoints, loss.csv, loss.svg, final.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Initial weights: required for the EPS stage (the unconditional network).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Architecture of a new prior network.
    #[arg(long, value_enum, default_value = "cpu")]
    pub model: ModelSize,
    /// Total optimiser steps.
    #[arg(long, default_value_t = 3000)]
    pub steps: usize,
    /// Images per step at the base crop side.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Base crop side in pixels (and the validation crops' side).
    #[arg(long, default_value_t = 64)]
    pub crop: usize,
    /// Larger crops mixed in, SIDE:PROBABILITY pairs (the batch shrinks to keep the pixels per
    /// step), or "none".
    #[arg(long, default_value = "128:0.3,256:0.15")]
    pub crop_mix: String,
    /// Largest scale jitter (crops cover up to this many photo pixels per crop pixel).
    #[arg(long, default_value_t = 2.0)]
    pub max_scale: f64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 500)]
    pub warmup: usize,
    /// Steps after which the learning rate decays as 1/√t (0: constant).
    #[arg(long, default_value_t = 4000)]
    pub lr_decay: usize,
    /// Relative width of the power-function EMA.
    #[arg(long, default_value_t = 0.1)]
    pub ema_rel: f64,
    /// Mean of ln σ of the noise-level distribution.
    #[arg(long, default_value_t = -0.8, allow_hyphen_values = true)]
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    #[arg(long, default_value_t = 1.6)]
    pub p_std: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Steps between validation losses.
    #[arg(long, default_value_t = 100)]
    pub val_every: usize,
    /// Add the full-resolution head (of the --model's width) to an --init network that has
    /// none; the grown network starts out computing exactly what the initial one does.
    #[arg(long)]
    pub add_head: bool,
    /// EPS stage: precondition with the sampler's σ for every pixel instead of the pivot's own
    /// per-pixel noise level (ablation).
    #[arg(long)]
    pub scalar_precond: bool,
    /// Switch an --init network that reads EDM's c_in·x to the Wiener input (the Gaussian
    /// estimate of x0, docs/training.md §3.5); new networks always use it.
    #[arg(long)]
    pub wiener_input: bool,
    /// Instead of training, write the batch of step 0 as pictures into this folder and print
    /// its value ranges and noise levels (a pipeline check).
    #[arg(long)]
    pub dump_batch: Option<PathBuf>,
    /// Where the network trains.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Wall-clock budget in minutes: stop after the step that passes it, with a validation
    /// loss and a checkpoint (run again with the same --out to go on).
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Also checkpoint every this many minutes, so a killed run loses at most that much.
    #[arg(long)]
    pub checkpoint_minutes: Option<f64>,
}

/// Runs `eps-studio train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    crate::heap::keep_large_blocks();
    for (option, value) in [
        ("--minutes", args.minutes),
        ("--checkpoint-minutes", args.checkpoint_minutes),
    ] {
        if let Some(m) = value
            && !(m.is_finite() && m > 0.0 && m <= 7.0 * 24.0 * 60.0)
        {
            anyhow::bail!("invalid {option} {m}: use a positive number of minutes, at most a week");
        }
    }
    let device = args.device.device()?;
    let photos = PhotoSet::load(&args.data).context("cannot load the photo pack")?;
    let mut init = args
        .init
        .as_ref()
        .map(|p| ModelFile::load(p, &device))
        .transpose()
        .context("cannot load the initial weights")?;
    if args.add_head {
        let file = init
            .take()
            .context("--add-head grows the --init network; pass --init")?;
        init = Some(file.with_head(args.model.config().head, args.seed)?);
    }
    if args.wiener_input
        && let Some(file) = init.as_mut()
    {
        file.config.wiener_input = true;
    }
    let cfg = TrainConfig {
        stage: match args.stage {
            StageArg::Prior => Stage::Prior,
            StageArg::Eps => Stage::Eps,
        },
        model: args.model.config(),
        steps: args.steps,
        batch: args.batch,
        crop: args.crop,
        crop_mix: parse_crop_mix(&args.crop_mix)?,
        max_scale: args.max_scale,
        lr: args.lr,
        warmup: args.warmup,
        lr_decay: args.lr_decay,
        ema_rel: args.ema_rel,
        noise: crate::train::batch::NoiseLevels {
            p_mean: args.p_mean,
            p_std: args.p_std,
            at_max: match args.stage {
                StageArg::Prior => 0.02,
                StageArg::Eps => 0.05,
            },
            ..Default::default()
        },
        pixel_precond: !args.scalar_precond,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        val_every: args.val_every,
        max_secs: args.minutes.map(|m| m * 60.0),
        checkpoint_secs: args.checkpoint_minutes.map(|m| m * 60.0),
        ..TrainConfig::default()
    };
    if let Some(dir) = &args.dump_batch {
        let summary = crate::train::dump_batch(&cfg, &photos, 0, dir)?;
        print!("{summary}");
        println!("pictures in {}", dir.display());
        return Ok(());
    }
    let arch = init.as_ref().map_or_else(
        || cfg.model.clone(),
        |m| match cfg.stage {
            Stage::Eps if m.config.cond_channels == 0 => m.config.with_condition(),
            _ => m.config.clone(),
        },
    );
    let (params, flops) = crate::eval::bench::model_size(&arch, cfg.crop)?;
    eprintln!(
        "network: {:.2} M parameters, {:.3} GFLOP per {c}×{c} crop forward, {:.1} GFLOP per 256×256; training on {}",
        params as f64 / 1e6,
        flops as f64 / 1e9,
        arch.flops(256, 256) as f64 / 1e9,
        device_name(&device),
        c = cfg.crop,
    );
    // Throughput over the whole run: images, pixels, seconds and each phase's seconds.
    let mut totals = Throughput::default();
    let started = std::time::Instant::now();
    let total = cfg.steps;
    let file = crate::train::train(
        &cfg,
        &photos,
        &args.out,
        init.as_ref(),
        &device,
        &mut |log| {
            totals.add(log);
            if log.step % 10 == 0 || log.val_loss.is_some() || log.step == total {
                let val = log
                    .val_loss
                    .map(|v| format!("  val {v:.4}"))
                    .unwrap_or_default();
                let t = &log.timing;
                eprintln!(
                    "step {:>6}/{total}  loss {:.4}{val}  lr {:.1e}  |g| {:.2}  {:.2} s/step  {}×{}²  {:.1} img/s {:.0} kpx/s  (data {:.0}% fwd {:.0}% bwd {:.0}% update {:.0}%)",
                    log.step,
                    log.train_loss,
                    log.lr,
                    log.grad_norm,
                    log.step_secs,
                    log.images,
                    log.side,
                    log.images as f64 / log.step_secs,
                    (log.images * log.side * log.side) as f64 / 1e3 / log.step_secs,
                    100.0 * t.data / log.step_secs,
                    100.0 * t.forward / log.step_secs,
                    100.0 * t.backward / log.step_secs,
                    100.0 * t.update / log.step_secs,
                );
            }
        },
    )
    .context("training failed")?;
    eprintln!("{}", totals.summary(&device));
    println!(
        "wrote {} ({} parameters) in {:.0} s",
        args.out.join("final.safetensors").display(),
        file.parameter_count(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn device_name(device: &candle_core::Device) -> &'static str {
    match device {
        candle_core::Device::Cpu => "the CPU",
        candle_core::Device::Cuda(_) => "CUDA",
        candle_core::Device::Metal(_) => "Metal",
    }
}

/// Sums over the steps of one invocation, for the throughput line at the end.
#[derive(Default)]
struct Throughput {
    steps: usize,
    images: usize,
    pixels: f64,
    secs: f64,
    phases: crate::train::StepTiming,
}

impl Throughput {
    fn add(&mut self, log: &crate::train::StepLog) {
        self.steps += 1;
        self.images += log.images;
        self.pixels += (log.images * log.side * log.side) as f64;
        self.secs += log.step_secs;
        self.phases.data += log.timing.data;
        self.phases.forward += log.timing.forward;
        self.phases.backward += log.timing.backward;
        self.phases.update += log.timing.update;
    }

    /// One line: `throughput on CUDA: 1234.5 images/s (64² equivalents 3456.7/s) over N steps;
    /// data and host copies 5%, forward 30%, backward 55%, update and EMA 10%`.
    fn summary(&self, device: &candle_core::Device) -> String {
        if self.steps == 0 || self.secs <= 0.0 {
            return "throughput: no steps run (the run was already complete)".into();
        }
        let p = |v: f64| 100.0 * v / self.secs;
        format!(
            "throughput on {}: {:.1} images/s ({:.1} 64² crops/s) over {} steps in {:.0} s; \
             data and host copies {:.0}%, forward {:.0}%, backward {:.0}%, update and EMA {:.0}%",
            device_name(device),
            self.images as f64 / self.secs,
            self.pixels / 4096.0 / self.secs,
            self.steps,
            self.secs,
            p(self.phases.data),
            p(self.phases.forward),
            p(self.phases.backward),
            p(self.phases.update),
        )
    }
}
