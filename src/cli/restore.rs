//! `eps-studio restore`: restore one photo from the terminal, for batch use and for tests.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::backend::{BackendChoice, Compute};
use crate::noise::consecutive_seeds;
use crate::photo::{self, Raster, SaveFormat, SaveImage};
use crate::restore::MethodChoice;
use crate::restore::{self, BlurSpec, Degradation, Models, Settings};
use crate::sampler::Flow;

/// Arguments of `eps-studio restore`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("operator").required(true).args(["mask", "blur", "sr"])))]
pub struct RestoreArgs {
    /// The photo (JPEG, PNG, WebP or TIFF).
    #[arg(long)]
    pub input: PathBuf,
    /// Inpaint: a mask image of the same size, white where the photo should be filled.
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Inpaint: a second mask of the same size, white where the fill must not copy from (a
    /// distinctive object next to the hole that should not be repeated). Its pixels still
    /// guide the fill at the hole's edge. Needs a fill made of the photo's patches: EPS or its
    /// mean with a patch prior, or DDNM+ or DiffPIR with `--prior patch`.
    #[arg(long)]
    pub keep_out: Option<PathBuf>,
    /// Deblur: gaussian:SIGMA or motion:LENGTH,ANGLE (pixels, degrees).
    #[arg(long)]
    pub blur: Option<String>,
    /// Super-resolution factor (2, 4 or 8): the output is this many times larger.
    #[arg(long)]
    pub sr: Option<usize>,
    /// Degrade the input with the chosen operator first and score the result against it.
    #[arg(long)]
    pub simulate: bool,
    /// Method: eps, eps-mean, dps, pigdm, ddnm or diffpir.
    #[arg(long, default_value = "eps")]
    pub method: String,
    /// The prior EPS fills holes and deblurs with: patch (the photo's own patches, at the photo's
    /// resolution, no network; for deblurring a copy of the photo shrunk until the blur is under
    /// a pixel, on the CPU), network (the trained EPS network), patch-layout (patches on the
    /// network's one-call mean), network-patch (the network at high noise, patches below) or
    /// fused (the network's and the patches' estimates fused by their variances at the coarsest
    /// level); the hybrids deblur on the patches alone. DDNM+ and DiffPIR fill with it too;
    /// super-resolution and the other methods always use the network.
    #[arg(long, default_value = "patch")]
    pub prior: String,
    /// Sampler steps (default: the method's own; EPS uses 10).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The EPS sampler's ODE solver: euler, heun or dpm2m (default: euler).
    #[arg(long)]
    pub solver: Option<String>,
    /// The EPS sampler's total churn S_churn (EDM): 0 is the deterministic ODE; per step σ rises by min(S_churn / steps, √2 − 1) (default: 4).
    #[arg(long)]
    pub churn: Option<f64>,
    /// Posterior samples to draw.
    #[arg(long, default_value_t = 4)]
    pub samples: usize,
    /// Seed of the first sample (sample i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Measurement noise σ_y (in [-1, 1] pixel units).
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    pub sigma_y: f64,
    /// Longest side the network works on at once.
    #[arg(long, default_value_t = 256)]
    pub work_side: usize,
    /// Folder with prior.safetensors and eps.safetensors (default: the shipped assets/).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Output folder (created if needed; existing files are never replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Output format: same (as the input), png, jpg, webp or tif.
    #[arg(long, default_value = "same")]
    pub format: String,
    /// JPEG quality.
    #[arg(long, default_value_t = 92)]
    pub quality: u8,
    /// Compute backend: auto (CUDA, then a real GPU through wgpu, then the CPU), cpu, wgpu or
    /// cuda.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// The patch prior's settings.
    #[command(flatten)]
    pub patch: super::PatchArgs,
}

impl RestoreArgs {
    /// The command line's defaults for filling `mask` in `input` on the CPU, as the memory and
    /// patch benchmarks run it (with `prior` and, for the network, `steps`).
    pub(super) fn bench_fill(
        input: PathBuf,
        mask: PathBuf,
        prior: &str,
        steps: Option<usize>,
        samples: usize,
        out: PathBuf,
    ) -> Self {
        Self {
            input,
            mask: Some(mask),
            keep_out: None,
            blur: None,
            sr: None,
            simulate: false,
            method: "eps".into(),
            prior: prior.into(),
            steps,
            solver: None,
            churn: None,
            samples,
            seed: 0,
            sigma_y: 0.05,
            work_side: 256,
            weights: None,
            out,
            format: "same".into(),
            quality: 92,
            backend: crate::backend::BackendChoice::Cpu,
            patch: super::PatchArgs::default(),
        }
    }
}

/// Runs `eps-studio restore`.
///
/// Everything that can be checked is checked before any work, in this order: the parameters,
/// the output folder, the photo and mask files (regular files of bounded size), the degradation
/// against the photo's size, the memory the job needs, and the weight files.
pub fn run(args: &RestoreArgs) -> anyhow::Result<()> {
    // Parameters alone.
    let method = MethodChoice::parse(&args.method).with_context(|| {
        format!(
            "unknown method '{}'; use eps, eps-mean, dps, pigdm, ddnm or diffpir",
            args.method
        )
    })?;
    let prior = restore::Prior::parse(&args.prior).with_context(|| {
        format!(
            "unknown prior '{}'; use patch, network, patch-layout, network-patch or fused",
            args.prior
        )
    })?;
    crate::limits::samples(args.samples)?;
    if args.keep_out.is_some() && args.mask.is_none() {
        anyhow::bail!(
            "--keep-out goes with --mask: it marks where a fill must not copy from; deblurring and super-resolution copy from the whole photo"
        );
    }
    let blur = args.blur.as_deref().map(BlurSpec::parse).transpose()?;
    if let Some(factor) = args.sr {
        crate::limits::sr_factor(factor)?;
    }
    if !(1..=100).contains(&args.quality) {
        anyhow::bail!("invalid JPEG quality = {}: use 1 to 100", args.quality);
    }
    let requested = Settings {
        method,
        steps: args.steps,
        solver: super::parse_solver(args.solver.as_deref())?,
        churn: args.churn,
        sigma_y: args.sigma_y,
        work_side: args.work_side,
        prior,
        patch: args.patch.config()?,
        preview: false,
        sr_on_patches: false,
        deblur_on_patches: Some(crate::prior::patch::DeblurConfig::default()),
    };
    requested.validate()?;
    crate::fsutil::prepare_output_dir(&args.out)?;

    // Files.
    let input = photo::load(&args.input)?;
    let degradation = if let Some(mask) = &args.mask {
        let keep_out = match &args.keep_out {
            Some(path) => photo::load_mask(path, input.width(), input.height())
                .with_context(|| format!("reading the keep-out mask {}", path.display()))?,
            None => Vec::new(),
        };
        Degradation::Inpaint {
            fill: photo::load_mask(mask, input.width(), input.height())
                .with_context(|| format!("reading the mask {}", mask.display()))?,
            keep_out,
        }
    } else if let Some(blur) = blur {
        Degradation::Deblur(blur)
    } else if let Some(factor) = args.sr {
        Degradation::SuperRes { factor }
    } else {
        anyhow::bail!("choose an operator: --mask, --blur or --sr");
    };
    let format = match args.format.as_str() {
        "same" => SaveFormat::same_as(&input, args.quality),
        other => SaveFormat::from_path(Path::new(&format!("x.{other}")), args.quality)
            .with_context(|| format!("unknown --format '{other}'"))?,
    };

    // The job against the photo, before degrading it or loading the networks.
    let (w, h) = if args.simulate {
        degradation.validate_simulation(input.width(), input.height())?;
        match &degradation {
            Degradation::SuperRes { factor } => (input.width() / factor, input.height() / factor),
            _ => (input.width(), input.height()),
        }
    } else {
        degradation.validate(input.width(), input.height())?;
        (input.width(), input.height())
    };
    // A simulated measurement is floats; a photo stays in its own bit depth.
    let depth = if args.simulate {
        photo::Depth::F32
    } else {
        input.pixels.depth()
    };
    let (settings, floor_notes) = requested.checked_for(&degradation)?;
    settings.check_size((w, h), &degradation)?;
    for note in floor_notes {
        eprintln!("note: {note}");
    }
    let estimate = restore::Estimate::new((w, h), depth, &degradation, &settings, args.samples);
    estimate.check_memory()?;

    // The measurement gets the noise asked for; the restoration assumes at least the floor.
    // Without --simulate the photo itself is the measurement (borrowed: no second copy).
    let simulated = if args.simulate {
        Some(restore::simulate(
            &input.pixels.rgb(),
            &degradation,
            args.sigma_y,
            args.seed,
        )?)
    } else {
        None
    };
    let y: &dyn Raster = simulated
        .as_ref()
        .map_or(&*input.pixels as &dyn Raster, |s| &s.y);
    let truth: Option<&photo::RgbImage> = simulated.as_ref().map(|s| &s.truth);

    let method = settings.sampler_method(&degradation);
    // The patch prior fills holes with no network (unless a hybrid asks for it).
    let patches_only = !settings.needs_network(&degradation);
    let (compute, notes) = if patches_only {
        let asked = matches!(args.backend, BackendChoice::Wgpu | BackendChoice::Cuda);
        let note = asked.then(|| {
            format!(
                "the photo's own patches run on the CPU; the {} backend serves the network prior (--prior network)",
                args.backend.label()
            )
        });
        (Compute::cpu(), note.into_iter().collect())
    } else {
        Compute::select(args.backend)
    };
    for note in notes {
        eprintln!("note: {note}");
    }
    let models = if patches_only {
        Models::new(None, None, candle_core::Device::Cpu)
    } else {
        let folder = Models::locate(args.weights.as_deref())?;
        Models::load(&folder, compute.device())
            .with_context(|| format!("loading the networks from {}", folder.display()))?
    };
    let seeds = consecutive_seeds(args.seed, args.samples);
    if patches_only {
        // Only deblurring's time is estimated (a fill's depends on the hole's texture).
        let duration = if estimate.patch_seconds > 0.0 {
            format!(
                ", about {} on 2 cores",
                restore::human_duration(estimate.patch_seconds)
            )
        } else {
            String::new()
        };
        eprintln!(
            "{} on the photo's own patches, {}×{} ({}), {} sample(s): {} region(s), about {:.2} GB{duration}",
            method.name(),
            y.width(),
            y.height(),
            degradation.label(),
            seeds.len(),
            estimate.regions,
            estimate.bytes as f64 / 1e9
        );
    } else {
        let duration = models
            .seconds_per_megapixel()
            .map(|rate| {
                format!(
                    ", about {}",
                    restore::human_duration(estimate.seconds(rate))
                )
            })
            .unwrap_or_default();
        eprintln!(
            "{} on {}×{} ({}), {} sample(s), backend {}: {} region(s), {} network calls, about {:.2} GB{duration}",
            method.name(),
            y.width(),
            y.height(),
            degradation.label(),
            seeds.len(),
            compute.label(),
            estimate.regions,
            estimate.network_calls,
            estimate.bytes as f64 / 1e9
        );
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {percent:>3}%  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut result = restore::restore(
        &models,
        compute.gpu(),
        y,
        &degradation,
        &settings,
        &seeds,
        &mut |p| {
            bar.set_position((p.at.fraction() * 1000.0) as u64);
            bar.set_message(p.at.to_string());
            Flow::Continue
        },
    )?;
    bar.finish_and_clear();
    for notice in &result.notices {
        eprintln!("note: {notice}");
    }
    let calls = if patches_only {
        "calls of the patch prior"
    } else {
        "network calls"
    };
    eprintln!(
        "done in {:.1} s on {} ({} {calls} per region, {} region(s))",
        result.seconds, result.backend, result.nfe, result.regions
    );
    for (i, turn) in result.patch_turns.iter().enumerate() {
        eprintln!("region {}: {turn}", i + 1);
    }

    // Room for ".measurement-NN.webp" after the photo's name.
    let stem = photo::stem_of(Some(&args.input));
    let stem = crate::fsutil::fit_stem(&stem, 32).to_owned();
    let save = |image: &SaveImage<'_>, name: String, fmt: SaveFormat| -> anyhow::Result<PathBuf> {
        let path = photo::free_path(&args.out, &name, fmt.extension());
        photo::save(image, &path, fmt, false)?;
        Ok(path)
    };
    let lpips_net = truth.as_ref().and_then(|_| {
        crate::eval::lpips::Lpips::locate_and_load(
            crate::eval::lpips::Backbone::Alex,
            &candle_core::Device::Cpu,
        )
        .map_err(|e| eprintln!("note: no LPIPS column: {e}"))
        .ok()
    });
    println!(
        "| sample | seed | residual RMS (σ_y = {:.3}) | PSNR | LPIPS | file |",
        settings.sigma_y
    );
    println!("|---|---|---|---|---|---|");
    for (i, (s, r)) in result.samples.iter().zip(&result.residuals).enumerate() {
        // Alpha follows the output only when it has the input's size (SaveImage::like).
        let path = save(
            &SaveImage::like(s, &input),
            format!("{stem}.sample-{}", result.seeds[i]),
            format,
        )?;
        let psnr = truth
            .as_ref()
            .map(|t| restore::psnr(s, t))
            .map_or_else(|| "–".to_owned(), |p| format!("{p:.2} dB"));
        let lpips = match (&lpips_net, &truth) {
            // A metric that cannot be computed must not stop the remaining files being saved.
            (Some(net), Some(t)) => crate::eval::lpips::photo_distance(net, s, t)
                .map_or_else(|e| format!("– ({e})"), |v| format!("{v:.3}")),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} | {:.4} | {psnr} | {lpips} | {} |",
            i + 1,
            result.seeds[i],
            r.rms,
            path.display()
        );
    }
    // Residual maps are printed above; the mean and its spread are built one after the other,
    // each dropped once saved, so a big photo holds at most one extra full-size buffer.
    result.residuals.clear();
    let mut mean_psnr = None;
    let images: Vec<&photo::Pixels> = result.samples.iter().collect();
    // One sample with no variance map is its own mean, with no spread: no copy.
    let single = images.len() == 1 && result.variance.is_none();
    if let Some(first) = images.first().copied() {
        // The mean, then the map: each dropped once saved.
        let mean_path = {
            let mean = if single {
                None
            } else {
                Some(
                    restore::posterior_mean(&images)
                        .ok_or_else(|| anyhow::anyhow!("the samples differ in size"))?,
                )
            };
            let mean = mean.as_ref().unwrap_or(first);
            mean_psnr = truth.map(|t| restore::psnr(mean, t));
            save(
                &SaveImage::like(mean, &input),
                format!("{stem}.mean"),
                format,
            )?
        };
        let (heat, max_std) = if single {
            let n = first.width() * first.height();
            let flat = restore::heat::colour(0.0).map(photo::to_u8);
            let heat = photo::Pixels::U8 {
                width: first.width(),
                height: first.height(),
                data: flat.repeat(n),
            };
            (heat, 0.0)
        } else {
            restore::uncertainty(&images, result.variance.as_ref())
                .ok_or_else(|| anyhow::anyhow!("the samples differ in size"))?
        };
        let std_path = save(
            &SaveImage::plain(&heat),
            format!("{stem}.std"),
            SaveFormat::Png,
        )?;
        let psnr = mean_psnr
            .map(|p| format!(", PSNR {p:.2} dB"))
            .unwrap_or_default();
        println!(
            "mean: {}{psnr}; uncertainty (std, full scale {max_std:.3}): {}",
            mean_path.display(),
            std_path.display()
        );
    }
    drop(images);
    result.samples.clear();
    if let Some(simulated) = &simulated {
        let y = &simulated.y;
        let path = save(
            &SaveImage::plain(y),
            format!("{stem}.measurement"),
            SaveFormat::Png,
        )?;
        println!("simulated measurement: {}", path.display());
        // What doing little would score, so a restoration can be judged against it.
        if let Some(t) = truth {
            let (what, img) = match &degradation {
                restore::Degradation::Inpaint { fill, .. } => (
                    "biharmonic fill (classical)",
                    crate::eval::reference::biharmonic_fill(y, fill)?,
                ),
                restore::Degradation::Deblur(_) => ("the blurry measurement itself", y.clone()),
                restore::Degradation::SuperRes { factor } => (
                    "bicubic upsampling",
                    crate::eval::reference::bicubic_upsample(y, *factor),
                ),
            };
            println!("reference: {what}, PSNR {:.2} dB", restore::psnr(&img, t));
            let nothing = restore::psnr(&restore::unrestored(y, &degradation), t);
            println!("doing nothing (the measurement as it is): PSNR {nothing:.2} dB");
            if let Some(p) = mean_psnr {
                let warning = restore::check_beats_doing_nothing(p, nothing).context(
                    "the restoration failed its check; its files are kept for inspection",
                )?;
                if let Some(w) = warning {
                    eprintln!("warning: {w}");
                }
            }
        }
    }
    println!(
        "{} region(s), {} NFE each, {:.1} s",
        result.regions, result.nfe, result.seconds
    );
    Ok(())
}
