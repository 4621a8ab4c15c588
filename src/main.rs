//! The `eps-studio` command line.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use eps_studio::eval::posterior_check::{CheckConfig, CheckOperator, run_check};

/// EPS Studio: restore photographs by exact posterior sampling.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prove the samplers on a Gaussian-mixture prior whose posterior is known exactly: prints
    /// operator × method × NFE × MMD² to exact samples × mean error × variance ratio × seconds.
    CheckPosterior(CheckArgs),
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    /// Samples per method (and per exact reference set).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Image side of the prior (images are 1 × size × size; size must be even for ×2 SR).
    #[arg(long, default_value_t = 8)]
    size: usize,
    /// Mixture components.
    #[arg(long, default_value_t = 3)]
    components: usize,
    /// Measurement noise σ_y (images in [-1, 1]).
    #[arg(long, default_value_t = 0.05)]
    sigma_y: f64,
    /// Independent runs per method (each against its own exact reference set).
    #[arg(long, default_value_t = 4)]
    runs: usize,
    /// Seed for prior, ground truth, measurement and samplers.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only these operators (repeatable): mask, sr2, blur.
    #[arg(long = "operator", value_parser = parse_operator)]
    operators: Vec<CheckOperator>,
}

fn parse_operator(s: &str) -> Result<CheckOperator, String> {
    match s {
        "mask" => Ok(CheckOperator::RandomMask),
        "sr2" => Ok(CheckOperator::SuperResolution2),
        "blur" => Ok(CheckOperator::GaussianBlur),
        other => Err(format!("unknown operator '{other}'; use mask, sr2 or blur")),
    }
}

fn check_posterior(args: &CheckArgs) -> anyhow::Result<()> {
    let cfg = CheckConfig {
        chw: (1, args.size, args.size),
        components: args.components,
        samples: args.samples,
        sigma_y: args.sigma_y,
        seed: args.seed,
        runs: args.runs,
        operators: if args.operators.is_empty() {
            CheckOperator::ALL.to_vec()
        } else {
            args.operators.clone()
        },
        ..CheckConfig::default()
    };
    eprintln!(
        "exact-posterior check: {}×{} images, {} components, {} runs × {} samples per method, σ_y = {}",
        args.size, args.size, args.components, args.runs, args.samples, args.sigma_y
    );
    let report = run_check(&cfg, &mut |row| {
        eprintln!(
            "  {:<28} {:<26} NFE {:>4}  MMD² {:>10.2e}  mean err {:.4}  var ratio {:.3}  {:.2} s",
            row.operator,
            row.method,
            row.nfe,
            row.mmd2,
            row.mean_error,
            row.variance_ratio,
            row.seconds
        );
    })
    .context("the exact-posterior check failed")?;
    println!("{}", report.to_markdown());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::CheckPosterior(args)) => check_posterior(args),
        None => {
            use clap::CommandFactory as _;
            Cli::command().print_help().context("cannot print help")
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
