//! The `eps-studio` command line: argument parsing and one module per subcommand. Errors become
//! `anyhow` errors with context here, at the edge.

pub mod bench;
pub mod check;
pub mod data;
pub mod eval;
pub mod train;

use clap::{Parser, Subcommand};

/// EPS Studio: restore photographs by exact posterior sampling.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// The subcommand.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prove the samplers on a Gaussian-mixture prior whose posterior is known exactly: prints
    /// operator × method × NFE × MMD² to exact samples × mean error × variance ratio × seconds.
    CheckPosterior(check::CheckArgs),
    /// Pack a folder of photos (from scripts/fetch-photos.sh) into one compact training file with
    /// a deterministic train/validation split.
    Data(data::DataArgs),
    /// Train the unconditional denoiser (stage prior) or fine-tune it into the EPS network
    /// (stage eps). Resumes from OUT/checkpoint when present.
    Train(train::TrainArgs),
    /// Benchmark EPS against the baselines on validation crops: PSNR, SSIM, pixel MMD², pixel CRPS,
    /// NFE and seconds, as a markdown table.
    Eval(eval::EvalArgs),
    /// Measure speed: one forward pass, per-step cost of EPS/DPS/ΠGDM relative to a bare denoiser
    /// step (ratios from one run), and a full 20-NFE restoration.
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::CheckPosterior(args)) => check::run(args),
        Some(Command::Data(args)) => data::run(args),
        Some(Command::Train(args)) => train::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        None => {
            use clap::CommandFactory as _;
            Cli::command().print_help()?;
            Ok(())
        }
    }
}
