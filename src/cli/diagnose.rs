//! `eps-studio diagnose`: denoising curve, unconditional samples, fills on object-sized holes,
//! deblurring and super-resolution at photo scale — tables in markdown and pictures in PNG
//! (see [`crate::eval::diagnose`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use candle_core::Device;

use crate::eval::diagnose::{self as dg, Contender};
use crate::photo::RgbImage;
use crate::restore::MethodChoice;
use crate::restore::{Degradation, Models};
use crate::train::data::{PhotoSet, Split, grid_crops};

/// Arguments of `eps-studio diagnose`.
#[derive(clap::Args, Debug)]
pub struct DiagnoseArgs {
    /// Parts to run (comma-separated): curve, holes, samples, fills, deblur, sr; or "all".
    #[arg(long, default_value = "all")]
    pub parts: String,
    /// Photo pack (its validation split is used).
    #[arg(long, default_value = "data/photos.pack")]
    pub data: PathBuf,
    /// Folder with prior.safetensors and eps.safetensors (default: the shipped assets/).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The unconditional network alone (instead of --weights; parts that need the EPS network
    /// are skipped unless --eps is given too).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    /// The EPS network alone (instead of --weights).
    #[arg(long)]
    pub eps: Option<PathBuf>,
    /// Folder for the tables and pictures.
    #[arg(long, default_value = "docs/diagnose")]
    pub out: PathBuf,
    /// Validation crops of the denoising curve.
    #[arg(long, default_value_t = 32)]
    pub crops: usize,
    /// Side of the denoising-curve crops.
    #[arg(long, default_value_t = 128)]
    pub crop_size: usize,
    /// Object-sized masks per validation photo in the fill part.
    #[arg(long, default_value_t = 1)]
    pub masks_per_photo: usize,
    /// Fill only the validation photos whose names contain one of these (comma-separated); each
    /// keeps the masks and noise it gets in the full run.
    #[arg(long)]
    pub photos: Option<String>,
    /// Contenders of the fill part (comma-separated: eps, eps-mean, ddnm, pigdm, diffpir, dps,
    /// biharmonic, exemplar; PRIOR:METHOD runs a method on another prior, e.g. patch:eps,
    /// patch:eps-mean, patch-layout:eps, network-patch:eps, fused:eps; patch:preview is the app's instant
    /// preview while painting).
    #[arg(long, default_value = "eps,eps-mean,ddnm,pigdm,biharmonic")]
    pub fill_methods: String,
    /// Posterior samples per case for EPS.
    #[arg(long, default_value_t = 2)]
    pub samples: usize,
    /// 256-pixel crops per validation photo in the deblur and SR parts.
    #[arg(long, default_value_t = 2)]
    pub crops_per_photo: usize,
    /// Measurement noise σ_y.
    #[arg(long, default_value_t = 0.05)]
    pub sigma_y: f64,
    /// Also write the clean and noisy curve crops as .npy files here, for scripts/cbm3d.py.
    #[arg(long)]
    pub export_noisy: Option<PathBuf>,
    /// CBM3D results (JSON from scripts/cbm3d.py) to show next to the curve.
    #[arg(long, default_value = "docs/diagnose/cbm3d.json")]
    pub cbm3d: PathBuf,
    /// Sampler steps of the fill, deblur and SR parts (default: each method's own).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The EPS sampler's ODE solver: euler, heun or dpm2m (default: euler).
    #[arg(long)]
    pub solver: Option<String>,
    /// The EPS sampler's total churn S_churn (EDM): 0 is the deterministic ODE; per step σ rises by min(S_churn / steps, √2 − 1) (default: 4).
    #[arg(long)]
    pub churn: Option<f64>,
    /// Seed of masks, noise and samplers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Side of each picture tile in fills.png.
    #[arg(long, default_value_t = 160)]
    pub tile: usize,
    /// The patch prior's settings (patch-eps and patch-mean contenders).
    #[command(flatten)]
    pub patch: super::PatchArgs,
    /// Priors of the deblur and SR parts (comma-separated): network, patch.
    #[arg(long, default_value = "network,patch")]
    pub restore_priors: String,
    /// Deblurring on patches: how many times the bank's copy of the photo is shrunk (default:
    /// chosen from the blur's radius).
    #[arg(long)]
    pub deblur_scale: Option<usize>,
    /// Deblurring on patches: also every shrink factor from 2 up to the chosen one.
    #[arg(long)]
    pub deblur_finer: bool,
    /// Deblurring on patches: width of the kernel along what the blur keeps, in units of σ_y.
    #[arg(long)]
    pub deblur_measured_width: Option<f64>,
    /// Deblurring on patches: PatchMatch sweeps on the first call and on every later one
    /// (FIRST,LATER).
    #[arg(long)]
    pub deblur_sweeps: Option<String>,
    /// Deblurring on patches: patch side (odd).
    #[arg(long)]
    pub deblur_patch: Option<usize>,
    /// Deblurring on patches: nearest bank windows per query.
    #[arg(long)]
    pub deblur_k: Option<usize>,
    /// Deblurring on patches: KDE bandwidth τ.
    #[arg(long)]
    pub deblur_tau: Option<f64>,
}

fn to_photo_rgb(img: &image::RgbImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage {
        width: w as usize,
        height: h as usize,
        data: img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect(),
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::fsutil::write_atomic(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn section(title: &str, intro: &str, body: &str) -> String {
    let command: Vec<String> = std::env::args().collect();
    format!(
        "## {title}\n\n{intro}\n\n```\n{}\n```\n\n{body}",
        command.join(" ")
    )
}

/// Runs `eps-studio diagnose`.
pub fn run(args: &DiagnoseArgs) -> anyhow::Result<()> {
    let all = ["curve", "holes", "samples", "fills", "deblur", "sr"];
    let parts: Vec<&str> = if args.parts == "all" {
        all.to_vec()
    } else {
        args.parts.split(',').map(str::trim).collect()
    };
    if let Some(bad) = parts.iter().find(|p| !all.contains(p)) {
        anyhow::bail!("unknown part '{bad}'; use {} or all", all.join(", "));
    }
    let contenders: Vec<Contender> = args
        .fill_methods
        .split(',')
        .map(|m| match m.trim() {
            "biharmonic" => Ok(Contender::Biharmonic),
            "exemplar" => Ok(Contender::Exemplar),
            other if other.contains(':') => {
                let (p, m) = other.split_once(':').unwrap_or_default();
                let prior = crate::restore::Prior::parse(p).ok_or_else(|| {
                    anyhow::anyhow!("unknown prior '{p}'; use network, patch, patch-layout, network-patch or fused")
                })?;
                if m == "preview" {
                    anyhow::ensure!(
                        prior == crate::restore::Prior::Patch,
                        "the instant preview runs on the photo's own patches: use patch:preview"
                    );
                    return Ok(Contender::Preview(prior));
                }
                let method = MethodChoice::parse(m)
                    .ok_or_else(|| anyhow::anyhow!("unknown method '{m}' in '{other}'"))?;
                let n = if method == MethodChoice::Eps { args.samples } else { 1 };
                Ok(Contender::OnPrior(prior, method, n))
            }
            other => MethodChoice::parse(other)
                .map(|c| {
                    let n = if c == MethodChoice::Eps { args.samples } else { 1 };
                    Contender::Method(c, n)
                })
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown method '{other}'; use eps, eps-mean, ddnm, pigdm, diffpir, dps, biharmonic"
                    )
                }),
        })
        .collect::<anyhow::Result<_>>()?;
    // Steps, solver and churn, checked together.
    let solver = super::parse_solver(args.solver.as_deref())?;
    crate::restore::Settings {
        steps: args.steps,
        solver,
        churn: args.churn,
        ..Default::default()
    }
    .validate()?;
    anyhow::ensure!(
        args.crops > 0 && args.crop_size >= 32,
        "use --crops ≥ 1 and --crop-size ≥ 32"
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let device = Device::Cpu;
    let models = if args.prior.is_some() || args.eps.is_some() {
        let load = |p: &Option<PathBuf>| -> anyhow::Result<Option<crate::denoiser::Network>> {
            p.as_ref()
                .map(|p| {
                    let f = crate::denoiser::ModelFile::load(p, &device)
                        .with_context(|| format!("cannot load {}", p.display()))?;
                    Ok(crate::denoiser::Network::new(f.build(&device)?))
                })
                .transpose()
        };
        Models::new(load(&args.prior)?, load(&args.eps)?, device.clone())
    } else {
        let folder = Models::locate(args.weights.as_deref())?;
        Models::load(&folder, &device)
            .with_context(|| format!("cannot load the networks from {}", folder.display()))?
    };
    let photos = PhotoSet::load(&args.data).context("cannot load the photo pack")?;
    let val: Vec<(String, RgbImage)> = photos
        .named_split(Split::Validation)
        .into_iter()
        .map(|(n, i)| (n.to_owned(), to_photo_rgb(i)))
        .collect();
    anyhow::ensure!(!val.is_empty(), "the photo pack has no validation photos");
    if let Some(list) = args.photos.as_deref() {
        anyhow::ensure!(
            val.iter()
                .any(|(n, _)| list.split(',').any(|p| n.contains(p.trim()))),
            "--photos {list}: no validation photo's name holds any of these; the names are {}",
            val.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let lpips =
        crate::eval::lpips::Lpips::locate_and_load(crate::eval::lpips::Backbone::Alex, &device)
            .map_err(|e| eprintln!("note: no LPIPS column: {e}"))
            .ok();
    let prior = models.prior();
    let eps = models.eps();
    let restore_priors = {
        let mut v = Vec::new();
        for p in args
            .restore_priors
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            v.push(match p {
                "network" => crate::restore::Prior::Network,
                "patch" => crate::restore::Prior::Patch,
                other => anyhow::bail!(
                    "unknown prior '{other}' in --restore-priors; use network or patch"
                ),
            });
        }
        v
    };
    let suite = dg::Suite {
        models: &models,
        sigma_y: args.sigma_y,
        seed: args.seed,
        lpips: lpips.as_ref(),
        steps: args.steps,
        solver,
        churn: args.churn,
        patch: args.patch.config()?,
        restore_priors: &restore_priors,
        deblur: {
            let d = crate::prior::patch::DeblurConfig::default();
            crate::prior::patch::DeblurConfig {
                patch: crate::prior::patch::PatchConfig {
                    patch: args.deblur_patch.unwrap_or(d.patch.patch),
                    tau: args.deblur_tau.unwrap_or(d.patch.tau),
                    ..d.patch
                },
                scale: args.deblur_scale.or(d.scale),
                finer: args.deblur_finer || d.finer,
                measured_width: args.deblur_measured_width.unwrap_or(d.measured_width),
                k: args.deblur_k.unwrap_or(d.k),
                sweeps: match &args.deblur_sweeps {
                    None => d.sweeps,
                    Some(v) => {
                        let parts: Vec<usize> = v
                            .split(',')
                            .map(|x| x.trim().parse::<usize>())
                            .collect::<std::result::Result<_, _>>()
                            .map_err(|_| {
                                anyhow::anyhow!("--deblur-sweeps '{v}': use FIRST,LATER")
                            })?;
                        match parts[..] {
                            [a, b] => (a, b),
                            _ => anyhow::bail!("--deblur-sweeps '{v}': use FIRST,LATER"),
                        }
                    }
                },
                ..d
            }
        },
    };

    // The validation crops of the curve and hole parts: `--crops` of `--crop-size`, spread over
    // the validation photos.
    let curve_crops = || -> anyhow::Result<candle_core::Tensor> {
        let val_refs = photos.split(Split::Validation);
        let per = args.crops.div_ceil(val_refs.len());
        Ok(
            grid_crops(&val_refs, per, args.crop_size, 1.0, &device)?.narrow(
                0,
                0,
                args.crops.min(per * val_refs.len()),
            )?,
        )
    };
    if parts.contains(&"curve") {
        let truth = curve_crops()?;
        let noisy = dg::noisy_inputs(&truth, &dg::CURVE_SIGMAS, args.seed)?;
        if let Some(dir) = &args.export_noisy {
            std::fs::create_dir_all(dir)?;
            dg::write_npy(&dir.join("clean.npy"), &truth)?;
            for (s, x) in dg::CURVE_SIGMAS.iter().zip(&noisy) {
                if dg::CBM3D_SIGMAS.contains(s) {
                    dg::write_npy(&dir.join(format!("noisy-{s}.npy")), x)?;
                }
            }
            write(
                &dir.join("fingerprint.txt"),
                dg::fingerprint(&truth)?.as_bytes(),
            )?;
        }
        eprintln!("denoising curve on {} crops…", truth.dim(0)?);
        let mut rows = dg::denoising_curve(&truth, &noisy, &dg::CURVE_SIGMAS, prior, eps, 8)?;
        let cbm3d = if args.cbm3d.exists() {
            dg::read_cbm3d(&args.cbm3d, &truth)?
        } else {
            None
        };
        match &cbm3d {
            Some(values) => {
                for r in &mut rows {
                    r.cbm3d = values
                        .iter()
                        .find(|(s, _)| (s - r.sigma).abs() < 1e-9)
                        .map(|(_, p)| *p);
                }
            }
            None => eprintln!(
                "note: no CBM3D column ({} missing or made on other crops; run with --export-noisy DIR, then scripts/cbm3d.py DIR {})",
                args.cbm3d.display(),
                args.cbm3d.display()
            ),
        }
        let table = dg::curve_markdown(&rows);
        println!("{table}");
        let mut pictures = String::new();
        if let Some(p) = prior {
            let png = dg::denoise_picture(&truth, &noisy, &dg::CURVE_SIGMAS, &[0.1, 0.5], p, 8)?;
            write(&args.out.join("denoise.png"), &png)?;
            pictures = "\n![the prior denoising](denoise.png)\n\nRows: clean crops; noisy at σ = 0.1; the prior's estimate; noisy at σ = 0.5; the prior's estimate.\n".into();
        }
        write(
            &args.out.join("curve.md"),
            section(
                "Denoising curve",
                &format!(
                    "PSNR (dB) of `D(x0 + σε, σ)` on {} validation crops of {s}×{s} at photo scale (the 1024-pixel pack), one noise draw per crop and σ, the same noisy inputs for every column. The EPS network denoises with nothing observed.",
                    truth.dim(0)?,
                    s = args.crop_size
                ),
                &format!("{table}{pictures}"),
            )
            .as_bytes(),
        )?;
    }

    if parts.contains(&"holes") {
        let truth = curve_crops()?;
        eprintln!("hole curve on {} crops…", truth.dim(0)?);
        let rows = dg::hole_curve(
            &truth,
            &dg::CURVE_SIGMAS,
            prior,
            eps,
            args.sigma_y,
            args.seed,
        )?;
        let table = dg::hole_curve_markdown(&rows);
        println!("{table}");
        let show = [80.0, 5.0, 0.5, 0.1];
        let png = dg::hole_curve_picture(&truth, &show, prior, eps, args.sigma_y, args.seed, 8)?;
        write(&args.out.join("holes.png"), &png)?;
        let table = format!(
            "{table}\n![denoising inside a hole](holes.png)\n\nRows: clean crops; then at σ = 80, 5, 0.5 and 0.1: `x_t`, the prior's estimate, the EPS network's estimate.\n"
        );
        write(
            &args.out.join("holes.md"),
            section(
                "Denoising inside a hole",
                &format!(
                    "The denoiser each EPS sampler step calls, scored on the hidden pixels only: {} validation crops of {s}×{s}, each with an object-sized hole (10–25% of the crop) and the rest observed with σ_y = {}; `x_t = x0 + σε`. The prior sees `x_t` alone; the EPS network sees the pivot `μ*`, the observation and diag(Σ*). Texture ratio: mean squared Laplacian of the estimate in the hole (eroded by 2 px) over the truth's; an MMSE estimate at high σ is smoother than the truth (≪ 1), a ratio above 1 is noise left in.",
                    truth.dim(0)?,
                    args.sigma_y,
                    s = args.crop_size
                ),
                &table,
            )
            .as_bytes(),
        )?;
    }

    if parts.contains(&"samples") {
        let net = prior.context("the samples part needs the prior network")?;
        let mut text = String::new();
        for (size, n) in [(128usize, 8usize), (256, 4)] {
            eprintln!("unconditional samples at {size}×{size}…");
            let cfg = suite.eps_config();
            let x = dg::prior_samples(net, n, size, &cfg, args.seed)?;
            let png = dg::grid_png(&x, 4)?;
            write(&args.out.join(format!("samples-{size}.png")), &png)?;
            let val_refs = photos.split(Split::Validation);
            let real = grid_crops(&val_refs, 2, size, 1.0, &device)?;
            let ratio = dg::batch_texture(&x)? / dg::batch_texture(&real)?;
            text.push_str(&format!(
                "![unconditional prior samples, {size}×{size}](samples-{size}.png)\n\n{n} samples at {size}×{size} ({}, {} steps). Texture ratio against {} validation crops of the same size: **{ratio:.2}** (1 = natural).\n\n",
                cfg.name(),
                cfg.steps,
                real.dim(0)?
            ));
        }
        write(
            &args.out.join("samples.md"),
            section(
                "Unconditional prior samples",
                "Samples of the prior alone, everything hidden.",
                &text,
            )
            .as_bytes(),
        )?;
    }

    let contenders: Vec<Contender> = contenders
        .into_iter()
        .filter(|c| {
            let needs_eps = matches!(
                c,
                Contender::Method(MethodChoice::Eps | MethodChoice::EpsMean, _)
            );
            let ok = match c {
                Contender::Biharmonic | Contender::Exemplar => true,
                Contender::OnPrior(p, ..) | Contender::Preview(p) => {
                    !p.uses_network() || eps.is_some()
                }
                Contender::Method(..) if needs_eps => eps.is_some(),
                Contender::Method(..) => prior.is_some(),
            };
            if !ok && parts.contains(&"fills") {
                eprintln!(
                    "note: {} left out of the fills (its network is not loaded)",
                    c.label(&suite)
                );
            }
            ok
        })
        .collect();
    if parts.contains(&"fills") {
        let photos512: Vec<(String, RgbImage)> = val
            .iter()
            .map(|(n, p)| (n.clone(), dg::fit_long_side(p, 512)))
            .collect();
        let (rows, cases) = dg::fill_suite(
            &suite,
            &photos512,
            args.masks_per_photo,
            &|name: &str| {
                args.photos
                    .as_deref()
                    .is_none_or(|list| list.split(',').any(|p| name.contains(p.trim())))
            },
            &contenders,
            &mut |what| eprintln!("fill: {what}"),
        )?;
        let mut table = dg::fill_markdown(&rows);
        let paired = dg::paired_markdown(&rows);
        if !paired.is_empty() {
            table = format!("{table}\n{paired}");
        }
        println!("{table}");
        let ess = dg::ess_markdown(&rows);
        let ess = if ess.is_empty() {
            ess
        } else {
            println!("{ess}");
            format!(
                "\nHow many bank windows the patch posterior weighs, per pyramid level (0: the crop's own size, each next level half as big), averaged over holes and draws: per call the median over query windows of the effective sample size `1 / Σ w²` (1: the window copies one bank window; the field weighs its 16 nearest, exact sums the whole bank). A flat posterior at the first call and about 1 at the last is a sampler that starts from a blend and ends copying.\n\n{ess}"
            )
        };
        write(
            &args.out.join("fills.png"),
            &dg::fill_picture(&cases, args.tile.clamp(32, 1024))?,
        )?;
        let mut columns = vec!["truth".to_string(), "measurement".to_string()];
        for c in &contenders {
            let n = match c {
                Contender::Method(_, n) | Contender::OnPrior(_, _, n) => *n,
                Contender::Preview(_) | Contender::Biharmonic | Contender::Exemplar => 1,
            };
            for k in 0..n {
                columns.push(if n > 1 {
                    format!("{} sample {}", c.label(&suite), k + 1)
                } else {
                    c.label(&suite)
                });
            }
        }
        write(
            &args.out.join("fills.md"),
            section(
                "Fills of object-sized holes",
                &format!(
                    "{} validation photos at 512 pixels (long side), {} brush mask(s) each covering 2–5% of the photo, σ_y = {}; every method goes through the app's restoration path (a crop around the hole with context, working size 256). Scores on the hole only; LPIPS on its bounding box (≥ 64 px); texture ratio = mean squared Laplacian inside the hole eroded by 2 px, result over truth.",
                    cases.len() / args.masks_per_photo.max(1),
                    args.masks_per_photo,
                    args.sigma_y
                ),
                &format!(
                    "{table}{ess}\n![fills: {}](fills.png)\n\nColumns: {}.\n",
                    columns.join(", "),
                    columns.join(" · ")
                ),
            )
            .as_bytes(),
        )?;
    }

    for (part, deg, title) in [
        (
            "deblur",
            dg::diagnose_blur(),
            "Deblurring (Gaussian σ = 2 px)",
        ),
        (
            "sr",
            Degradation::SuperRes { factor: 4 },
            "Super-resolution ×4",
        ),
    ] {
        if !parts.contains(&part) {
            continue;
        }
        if eps.is_none() {
            eprintln!("note: the {part} part needs the EPS network; skipped");
            continue;
        }
        let crops = dg::photo_crops(&val, args.crops_per_photo, 256);
        let (rows, cases) = dg::restore_suite(&suite, &crops, &deg, args.samples, &mut |what| {
            eprintln!("{part}: {what}");
        })?;
        let table = dg::restore_markdown(&rows);
        println!("{table}");
        write(
            &args.out.join(format!("{part}.png")),
            &dg::restore_picture(&cases, 128)?,
        )?;
        let columns: Vec<String> = ["truth".to_string(), "measurement".to_string()]
            .into_iter()
            .chain(cases.first().map_or(Vec::new(), |c| {
                c.results.iter().map(|(l, _)| l.clone()).collect()
            }))
            .collect();
        write(
            &args.out.join(format!("{part}.md")),
            section(
                title,
                &format!(
                    "{} crops of 256×256 from the validation photos at photo scale (the 1024-pixel pack), σ_y = {}, through the app's restoration path.{}",
                    crops.len(),
                    args.sigma_y,
                    if part == "deblur" {
                        " The rows on the photo's own patches are what `restore --blur` and the app do by default (docs/patch-prior.md: the bank is the photo's copy shrunk ×2; the mean is the average of 4 draws of 6 steps); the other EPS rows are the trained network (`--prior network`)."
                    } else {
                        ""
                    }
                ),
                &format!(
                    "{table}\n![{part}]({part}.png)\n\nCentral 128×128 pixels; columns: {}.\n",
                    columns.join(" · ")
                ),
            )
            .as_bytes(),
        )?;
    }
    Ok(())
}
