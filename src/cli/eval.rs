//! `eps-studio eval`: the restoration benchmark table.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::denoiser::ModelFile;
use crate::train::data::PhotoSet;

/// Arguments of `eps-studio eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Photo pack (its validation split is used).
    #[arg(long, default_value = "data/photos.pack")]
    pub data: PathBuf,
    /// Unconditional network (for the baselines).
    #[arg(long, default_value = "assets/prior.safetensors")]
    pub prior: PathBuf,
    /// EPS network.
    #[arg(long, default_value = "assets/eps.safetensors")]
    pub eps: PathBuf,
    /// Validation crops.
    #[arg(long, default_value_t = 100)]
    pub images: usize,
    /// Posterior samples per crop.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Crop side in pixels.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Photo pixels per crop pixel (crops cover size × scale pixels of the photo).
    #[arg(long, default_value_t = 2.0)]
    pub scale: f64,
    /// Tasks (comma-separated names from the evaluation suite, or "all").
    #[arg(long, default_value = "all")]
    pub tasks: String,
    /// Methods (comma-separated: eps, eps-mean, dps, pigdm, ddnm, diffpir; or "all").
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// Measurement noise σ_y.
    #[arg(long, default_value_t = 0.05)]
    pub sigma_y: f64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Crops per sampler call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Markdown file to write the table to (with the command that produced it).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Append to --out (which may exist).
    #[arg(long)]
    pub append: bool,
    /// Replace --out when it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Heading of the section written to --out.
    #[arg(long, default_value = "Results")]
    pub title: String,
    /// Where the networks run.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Pixel metrics only: leave out LPIPS and the VGG16-feature metrics (FD, KID, MMD², CRPS).
    #[arg(long)]
    pub no_features: bool,
}

/// Runs `eps-studio eval`.
pub fn run(args: &EvalArgs) -> anyhow::Result<()> {
    use crate::eval::restoration::{EvalConfig, MethodChoice, evaluate, to_markdown};
    use crate::inverse::TaskSpec;
    use crate::train::data::{Split, grid_crops};
    if let Some(out) = &args.out {
        crate::fsutil::check_output_file(out, args.append || args.overwrite)?;
    }
    super::bench::check_range("--batch", args.batch, 1, 64)?;
    let device = args.device.device()?;
    let suite = TaskSpec::evaluation_suite();
    let tasks: Vec<(String, TaskSpec)> = if args.tasks == "all" {
        suite.iter().map(|(n, t)| ((*n).to_owned(), *t)).collect()
    } else {
        args.tasks
            .split(',')
            .map(|name| {
                suite
                    .iter()
                    .find(|(n, _)| *n == name.trim())
                    .map(|(n, t)| ((*n).to_owned(), *t))
                    .ok_or_else(|| {
                        let known: Vec<&str> = suite.iter().map(|(n, _)| *n).collect();
                        anyhow::anyhow!("unknown task '{name}'; known: {}", known.join(", "))
                    })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let methods: Vec<MethodChoice> = if args.methods == "all" {
        MethodChoice::ALL.to_vec()
    } else {
        args.methods
            .split(',')
            .map(|m| {
                MethodChoice::parse(m.trim()).ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown method '{m}'; use eps, eps-mean, dps, pigdm, ddnm, diffpir"
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let photos = PhotoSet::load(&args.data).context("cannot load the photo pack")?;
    let val = photos.split(Split::Validation);
    anyhow::ensure!(!val.is_empty(), "the photo pack has no validation photos");
    let per_photo = args.images.div_ceil(val.len());
    let truth = grid_crops(&val, per_photo, args.size, args.scale, &device)?.narrow(
        0,
        0,
        args.images.min(per_photo * val.len()),
    )?;
    let needs_prior = methods
        .iter()
        .any(|m| !matches!(m, MethodChoice::Eps | MethodChoice::EpsMean));
    let needs_eps = methods
        .iter()
        .any(|m| matches!(m, MethodChoice::Eps | MethodChoice::EpsMean));
    let load = |p: &PathBuf| -> anyhow::Result<crate::denoiser::Network> {
        let f =
            ModelFile::load(p, &device).with_context(|| format!("cannot load {}", p.display()))?;
        Ok(crate::denoiser::Network::new(f.build(&device)?))
    };
    let prior = needs_prior.then(|| load(&args.prior)).transpose()?;
    let eps = needs_eps.then(|| load(&args.eps)).transpose()?;
    let cfg = EvalConfig {
        size: args.size,
        samples: args.samples,
        sigma_y: args.sigma_y,
        seed: args.seed,
        tasks,
        methods,
        images_per_batch: args.batch,
        features: feature_nets(args.no_features, &device),
    };
    eprintln!(
        "evaluating {} crops of {}×{} × {} samples, σ_y = {}",
        truth.dim(0)?,
        args.size,
        args.size,
        args.samples,
        args.sigma_y
    );
    let denoisers = crate::sampler::Denoisers {
        prior: prior.as_ref().map(|p| p as &dyn crate::sampler::Denoiser),
        posterior: eps
            .as_ref()
            .map(|p| p as &dyn crate::sampler::PosteriorDenoiser),
    };
    let rows = evaluate(&cfg, &truth, denoisers, &mut |r| {
        eprintln!(
            "  {:<18} {:<14} NFE {:>3}  PSNR {:>6.2}  SSIM {:.3}  MMD² {:>9.2e}  CRPS {:.4}  LPIPS-Alex {}  LPIPS-VGG {}  FD-VGG {}  {:.3} s/sample",
            r.task,
            r.method,
            r.nfe,
            r.psnr,
            r.ssim,
            r.mmd,
            r.crps,
            r.features
                .lpips_alex
                .map_or("–".into(), |v| format!("{v:.3}")),
            r.features
                .lpips_vgg
                .map_or("–".into(), |v| format!("{v:.3}")),
            r.features.fd_vgg.map_or("–".into(), |v| format!("{v:.3}")),
            r.secs_per_sample
        );
    })?;
    let mut table = to_markdown(&rows);
    if rows.iter().any(|r| r.hole.is_some()) {
        table.push_str(&format!(
            "\nOn the hole only (inpainting tasks; LPIPS on the hole's bounding box, at least 64 px; texture ratio = mean squared Laplacian inside the hole eroded by 2 px, sample over truth):\n\n{}",
            crate::eval::restoration::holes_markdown(&rows)
        ));
    }
    println!("{table}");
    if let Some(out) = &args.out {
        let command: Vec<String> = std::env::args().collect();
        let section = format!(
            "## {}

{} validation crops of {}×{} (photo scale {}), {} samples each, σ_y = {}, seed {}.

```
{}
```

{table}
",
            args.title,
            truth.dim(0)?,
            args.size,
            args.size,
            args.scale,
            args.samples,
            args.sigma_y,
            args.seed,
            command.join(" ")
        );
        let text = if args.append {
            format!(
                "{}
{section}",
                std::fs::read_to_string(out).unwrap_or_default().trim_end()
            )
        } else {
            section
        };
        crate::fsutil::write(out, text.as_bytes(), args.append || args.overwrite)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The LPIPS networks the evaluation can find; a missing one drops its columns with a note.
fn feature_nets(skip: bool, device: &candle_core::Device) -> crate::eval::restoration::FeatureNets {
    use crate::eval::lpips::{Backbone, Lpips};
    let mut nets = crate::eval::restoration::FeatureNets::default();
    if skip {
        return nets;
    }
    let load = |b: Backbone| match Lpips::locate_and_load(b, device) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("note: no {} columns: {e}", b.label());
            None
        }
    };
    nets.alex = load(Backbone::Alex);
    nets.vgg = load(Backbone::Vgg);
    nets
}
