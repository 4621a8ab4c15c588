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
    /// A tiny model for smoke tests.
    Tiny,
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
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Crop side in pixels.
    #[arg(long, default_value_t = 64)]
    pub crop: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4)]
    pub lr: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Steps between checkpoints.
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: usize,
    /// Steps between validation losses.
    #[arg(long, default_value_t = 100)]
    pub val_every: usize,
}

/// Runs `eps-studio train`.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let device = candle_core::Device::Cpu;
    let photos = PhotoSet::load(&args.data).context("cannot load the photo pack")?;
    let init = args
        .init
        .as_ref()
        .map(|p| ModelFile::load(p, &device))
        .transpose()
        .context("cannot load the initial weights")?;
    let cfg = TrainConfig {
        stage: match args.stage {
            StageArg::Prior => Stage::Prior,
            StageArg::Eps => Stage::Eps,
        },
        model: match args.model {
            ModelSize::Cpu => UNetConfig::default(),
            ModelSize::Tiny => UNetConfig::tiny(),
        },
        steps: args.steps,
        batch: args.batch,
        crop: args.crop,
        lr: args.lr,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        val_every: args.val_every,
        ..TrainConfig::default()
    };
    let started = std::time::Instant::now();
    let total = cfg.steps;
    let file = crate::train::train(
        &cfg,
        &photos,
        &args.out,
        init.as_ref(),
        &device,
        &mut |log| {
            if log.step % 10 == 0 || log.val_loss.is_some() || log.step == total {
                let val = log
                    .val_loss
                    .map(|v| format!("  val {v:.4}"))
                    .unwrap_or_default();
                eprintln!(
                    "step {:>6}/{total}  loss {:.4}{val}  lr {:.1e}  |g| {:.2}  {:.2} s/step",
                    log.step, log.train_loss, log.lr, log.grad_norm, log.step_secs
                );
            }
        },
    )
    .context("training failed")?;
    println!(
        "wrote {} ({} parameters) in {:.0} s",
        args.out.join("final.safetensors").display(),
        file.parameter_count(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
