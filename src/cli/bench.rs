//! `eps-studio bench`: speed of the network and of one sampler step per method.

use std::path::PathBuf;

use crate::denoiser::{ModelFile, UNetConfig};

/// Arguments of `eps-studio bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Unconditional network (random weights of the default architecture when the file is absent).
    #[arg(long, default_value = "assets/prior.safetensors")]
    pub prior: PathBuf,
    /// EPS network (likewise).
    #[arg(long, default_value = "assets/eps.safetensors")]
    pub eps: PathBuf,
    /// Image side.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Images per step.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed repetitions (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Markdown file to write the results to.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `eps-studio bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::eval::bench::{forward_time, model_size, restoration_time, step_costs};
    use crate::inverse::TaskSpec;
    use std::sync::Arc;
    let device = candle_core::Device::Cpu;
    let load = |p: &PathBuf,
                cfg: UNetConfig,
                kind: crate::denoiser::ModelKind|
     -> anyhow::Result<(crate::denoiser::Network, String)> {
        if p.exists() {
            let f = ModelFile::load(p, &device)?;
            Ok((
                crate::denoiser::Network::new(f.build(&device)?),
                p.display().to_string(),
            ))
        } else {
            let vm = candle_nn::VarMap::new();
            let net = crate::denoiser::EdmDenoiser::new(
                candle_nn::VarBuilder::from_varmap(&vm, candle_core::DType::F32, &device),
                &cfg,
            )?;
            let _ = kind;
            Ok((
                crate::denoiser::Network::new(net),
                format!("random weights ({} absent)", p.display()),
            ))
        }
    };
    let (prior, prior_src) = load(
        &args.prior,
        UNetConfig::default(),
        crate::denoiser::ModelKind::Prior,
    )?;
    let (eps, eps_src) = load(
        &args.eps,
        UNetConfig::default().with_condition(),
        crate::denoiser::ModelKind::Eps,
    )?;
    let n = args.size;
    let mut lines = vec![format!("networks: prior = {prior_src}, EPS = {eps_src}")];
    for (name, cfg) in [
        ("prior", prior.inner().config().clone()),
        ("EPS", eps.inner().config().clone()),
    ] {
        let (params, flops) = model_size(&cfg, n)?;
        lines.push(format!(
            "{name} network: {:.2} M parameters, {:.2} GFLOP per {n}×{n} image",
            params as f64 / 1e6,
            flops as f64 / 1e9
        ));
    }
    let fwd = forward_time(&prior, args.batch, n, args.repeats)?;
    let fwd_eps = {
        let t = std::time::Instant::now();
        let x =
            candle_core::Tensor::zeros((args.batch, 3, n, n), candle_core::DType::F32, &device)?;
        let s = candle_core::Tensor::full(1.0f64, args.batch, &device)?;
        eps.inner().forward_padded(&x, &s, Some(&x))?;
        t.elapsed().as_secs_f64()
    };
    lines.push(format!(
        "forward pass, {}×{n}×{n}: prior {fwd:.3} s, EPS {fwd_eps:.3} s (single run)",
        args.batch
    ));
    let mut table = String::from("| measurement | seconds | × bare step |\n|---|---:|---:|\n");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let x0 = candle_core::Tensor::zeros((args.batch, 3, n, n), candle_core::DType::F32, &device)?;
    for (label, task) in [
        ("inpaint 70%", TaskSpec::RandomInpaint { hidden: 0.7 }),
        ("Gaussian deblur", TaskSpec::GaussianDeblur { sigma: 2.0 }),
        ("SR ×4", TaskSpec::SuperResolution { factor: 4 }),
    ] {
        let op = task.operator(n, n, &mut rng)?;
        let problem = crate::inverse::Problem::simulate(Arc::clone(&op), &x0, 0.05, 1)?;
        for r in step_costs(
            &prior,
            &eps,
            &problem,
            args.repeats,
            &format!("{n}×{n}×{} {label}", args.batch),
        )? {
            table.push_str(&format!(
                "| {} | {:.4} | {} |\n",
                r.what,
                r.secs,
                r.ratio.map(|v| format!("{v:.3}")).unwrap_or_default()
            ));
        }
    }
    let op = TaskSpec::BoxInpaint.operator(n, n, &mut rng)?;
    let problem = crate::inverse::Problem::simulate(op, &x0.narrow(0, 0, 1)?, 0.05, 1)?;
    let (secs, nfe) = restoration_time(&eps, &problem, 1)?;
    table.push_str(&format!(
        "| {n}×{n} box inpainting, EPS {nfe} NFE, 1 sample, end to end | {secs:.3} | |\n"
    ));
    let report = format!("{}\n\n{table}", lines.join("  \n"));
    println!("{report}");
    if let Some(out) = &args.out {
        let command: Vec<String> = std::env::args().collect();
        let text = format!(
            "# Benchmarks\n\nMachine: {} CPU cores. Command:\n\n```\n{}\n```\n\n{report}",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            command.join(" ")
        );
        crate::fsutil::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}
