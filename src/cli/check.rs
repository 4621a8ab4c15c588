//! `eps-studio check-posterior`: the exact-posterior table.

use anyhow::Context as _;

use crate::eval::posterior_check::{CheckConfig, CheckOperator, patch_prior_check, run_check};

/// Arguments of `eps-studio check-posterior`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Samples per method (and per exact reference set).
    #[arg(long, default_value_t = 1000)]
    pub samples: usize,
    /// Image side of the prior (images are 1 × size × size; size must be even for ×2 SR).
    #[arg(long, default_value_t = 8)]
    pub size: usize,
    /// Mixture components.
    #[arg(long, default_value_t = 3)]
    pub components: usize,
    /// Measurement noise σ_y (images in [-1, 1]).
    #[arg(long, default_value_t = 0.05)]
    pub sigma_y: f64,
    /// Independent runs per method (each against its own exact reference set).
    #[arg(long, default_value_t = 4)]
    pub runs: usize,
    /// Seed for prior, ground truth, measurement and samplers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Only these operators (repeatable): mask, sr2, blur.
    #[arg(long = "operator", value_parser = parse_operator)]
    pub operators: Vec<CheckOperator>,
}

fn parse_operator(s: &str) -> Result<CheckOperator, String> {
    match s {
        "mask" => Ok(CheckOperator::RandomMask),
        "sr2" => Ok(CheckOperator::SuperResolution2),
        "blur" => Ok(CheckOperator::GaussianBlur),
        other => Err(format!("unknown operator '{other}'; use mask, sr2 or blur")),
    }
}

/// Runs `eps-studio check-posterior`.
pub fn run(args: &CheckArgs) -> anyhow::Result<()> {
    use super::bench::check_range;
    check_range("--size", args.size, 2, 64)?;
    check_range("--components", args.components, 1, 64)?;
    check_range("--samples", args.samples, 2, 100_000)?;
    check_range("--runs", args.runs, 1, 100)?;
    if !(args.sigma_y > 0.0 && args.sigma_y <= 1.0) {
        anyhow::bail!("invalid --sigma-y {}: use a value in (0, 1]", args.sigma_y);
    }
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
    let mut on_row = |row: &crate::eval::posterior_check::CheckRow| {
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
    };
    let mut report = run_check(&cfg, &mut on_row).context("the exact-posterior check failed")?;
    if args.operators.is_empty() || args.operators.contains(&CheckOperator::RandomMask) {
        report.operators.push(
            patch_prior_check(&cfg, &mut on_row)
                .context("the exact-posterior check of the patch prior failed")?,
        );
    }
    println!("{}", report.to_markdown());
    Ok(())
}
