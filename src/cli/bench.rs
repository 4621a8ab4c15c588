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
    /// Markdown file to write the results to (a new file unless --overwrite).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace --out when it exists.
    #[arg(long)]
    pub overwrite: bool,
    /// Instead of the step costs: the pivot and the sampler update of every operator on the CPU
    /// and on the wgpu device (any adapter, software ones included), next to one network call.
    #[arg(long)]
    pub pivot: bool,
    /// Instead of the step costs: LPIPS (AlexNet, VGG16) of one image pair at 64 and 256 px.
    #[arg(long)]
    pub metrics: bool,
    /// Instead of the step costs: painting on a large photo's mask (overlay refresh, undo
    /// steps), at `--mask-size`.
    #[arg(long)]
    pub mask: bool,
    /// Instead of the step costs: training throughput (prior stage, 16 crops of 64²) of the CPU
    /// model and of the earlier network's shape (×4 stem, 64/96/128/128 channels), each with the
    /// GEMM-backed convolutions and fused activations and with candle's own operations.
    #[arg(long)]
    pub train: bool,
    /// Instead of the step costs: peak memory of `restore` on a `--mask-size` JPEG with one
    /// 150-pixel hole, for 1, 2 and 4 samples, against the 1 GB target (Linux).
    #[arg(long)]
    pub memory: bool,
    /// Instead of the step costs: the patch prior's fills (a 256-pixel crop's sample and
    /// preview, cost against hole and photo size, a 24-megapixel photo's time and peak memory).
    #[arg(long)]
    pub patch: bool,
    /// Instead of the step costs: one forward pass of each network (at --size) timed operation
    /// by operation, against candle's matrix product measured in the same run.
    #[arg(long)]
    pub profile: bool,
    /// Photo pack for `--train` and `--patch` (synthetic photos when absent).
    #[arg(long, default_value = "data/photos.pack")]
    pub data: PathBuf,
    /// Mask size `WIDTHxHEIGHT` for `--mask`.
    #[arg(long, default_value = "6000x4000", value_parser = parse_size)]
    pub mask_size: (usize, usize),
    /// Where the networks run for the step costs (the other reports run on the CPU).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Image sides for `--pivot`.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    pub pivot_sizes: Vec<usize>,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let bad = || {
        format!("expected WIDTHxHEIGHT with both between 1 and 20000, e.g. 6000x4000; got {s:?}")
    };
    let (w, h) = s.split_once(['x', '×']).ok_or_else(bad)?;
    let (w, h): (usize, usize) = (
        w.trim().parse().map_err(|_| bad())?,
        h.trim().parse().map_err(|_| bad())?,
    );
    if !(1..=20_000).contains(&w) || !(1..=20_000).contains(&h) {
        return Err(bad());
    }
    Ok((w, h))
}

/// Runs `eps-studio bench`.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    check_range("--size", args.size, 8, 4096)?;
    check_range("--batch", args.batch, 1, 64)?;
    check_range("--repeats", args.repeats, 1, 1000)?;
    if args.pivot_sizes.iter().any(|s| !(8..=4096).contains(s)) {
        anyhow::bail!(
            "invalid --pivot-sizes {:?}: every size must be 8 to 4096 pixels",
            args.pivot_sizes
        );
    }
    if let Some(out) = &args.out {
        crate::fsutil::check_output_file(out, args.overwrite)?;
    }
    if args.mask {
        return mask_report(args);
    }
    if args.train {
        return train_report(args);
    }
    if args.memory {
        return memory_report(args);
    }
    if args.patch {
        return super::bench_patch::patch_report(args);
    }
    if args.profile {
        return super::bench_profile::profile_report(args);
    }
    use crate::eval::bench::{forward_time, model_size, restoration_time, step_costs};
    use crate::inverse::TaskSpec;
    use std::sync::Arc;
    let device = args.device.device()?;
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
    if args.pivot {
        return pivot_report(args, &eps, &eps_src);
    }
    if args.metrics {
        return metrics_report(args);
    }
    let n = args.size;
    let mut lines = vec![format!(
        "networks on {}: prior = {prior_src}, EPS = {eps_src}",
        args.device.name()
    )];
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
    let fwd = forward_time(&prior, args.batch, n, args.repeats, &device)?;
    let fwd_eps = {
        device.synchronize()?;
        let t = std::time::Instant::now();
        let x =
            candle_core::Tensor::zeros((args.batch, 3, n, n), candle_core::DType::F32, &device)?;
        let s = candle_core::Tensor::full(1.0f64, args.batch, &device)?;
        let cond = crate::denoiser::Conditioning {
            obs: x.clone(),
            variance: candle_core::Tensor::ones((1, 1, n, n), candle_core::DType::F32, &device)?,
        };
        eps.inner().forward_padded(&x, &s, Some(&cond))?;
        device.synchronize()?;
        t.elapsed().as_secs_f64()
    };
    lines.push(format!(
        "forward pass, {}×{n}×{n}: prior {fwd:.3} s, EPS {fwd_eps:.3} s (single run)",
        args.batch
    ));
    // Arithmetic rate of the network alone, at a batch that fills a GPU.
    let wide = if device.is_cuda() { 16 } else { args.batch };
    let fwd_wide = if wide == args.batch {
        fwd
    } else {
        forward_time(&prior, wide, n, args.repeats, &device)?
    };
    let flops = prior.inner().config().flops(n, n) as f64 * wide as f64;
    lines.push(format!(
        "forward pass, {wide}×{n}×{n}: {fwd_wide:.3} s, {:.2} TFLOP/s (convolution, linear and \
         attention FLOPs, f32 storage{})",
        flops / fwd_wide / 1e12,
        if device.is_cuda() {
            ", TF32 products"
        } else {
            ""
        }
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
    let first = x0.narrow(0, 0, 1)?;
    let fresh = || crate::inverse::Problem::simulate(op.clone(), &first, 0.05, 1);
    // The EPS network's observation image (the biharmonic fill of the hole): made once per
    // photo and mask, and part of each end-to-end row below (each on a fresh problem).
    let problem = fresh()?;
    let t = std::time::Instant::now();
    problem.observation()?;
    let obs_secs = t.elapsed().as_secs_f64();
    table.push_str(&format!(
        "| {n}×{n} box inpainting: the observation image alone (once per photo and mask) | {obs_secs:.3} | |\n"
    ));
    // A batch of 16 samples where a GPU runs them in parallel; on the CPU the app's default of
    // four (one batch of four through every layer).
    let sample_counts: &[usize] = if device.is_cuda() { &[1, 16] } else { &[1, 4] };
    for &samples in sample_counts {
        let (secs, nfe) = restoration_time(&eps, &fresh()?, samples)?;
        table.push_str(&format!(
            "| {n}×{n} box inpainting, EPS {nfe} NFE, {samples} sample(s), end to end | {secs:.3} | |\n"
        ));
    }
    let report = format!("{}\n\n{table}", lines.join("  \n"));
    write_report(args, "Benchmarks", &report)
}

pub(super) fn write_report(args: &BenchArgs, title: &str, report: &str) -> anyhow::Result<()> {
    println!("{report}");
    if let Some(out) = &args.out {
        let command: Vec<String> = std::env::args().collect();
        let text = format!(
            "# {title}\n\nMachine: {} CPU cores. Command:\n\n```\n{}\n```\n\n{report}",
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            command.join(" ")
        );
        crate::fsutil::write(out, text.as_bytes(), args.overwrite)?;
    }
    Ok(())
}

/// Refuses a count outside `lo..=hi`, naming the option and the range.
pub(crate) fn check_range(option: &str, value: usize, lo: usize, hi: usize) -> anyhow::Result<()> {
    if !(lo..=hi).contains(&value) {
        anyhow::bail!("invalid {option} {value}: use {lo} to {hi}");
    }
    Ok(())
}

/// `eps-studio bench --pivot`: the pivot and the update on the CPU and on wgpu.
fn pivot_report(
    args: &BenchArgs,
    eps: &crate::denoiser::Network,
    eps_src: &str,
) -> anyhow::Result<()> {
    use crate::backend::{AdapterPolicy, GpuContext};
    let ctx = match GpuContext::acquire(AdapterPolicy::Any) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("note: {e}; timing the CPU only");
            None
        }
    };
    let adapter = ctx.as_ref().map_or_else(
        || "none".to_owned(),
        |c| {
            let kind = if c.is_software() {
                "a software rasteriser on the CPU, not a GPU"
            } else {
                "a GPU"
            };
            format!("{} — {kind}", c.adapter_name())
        },
    );
    let rows = crate::eval::bench::pivot_costs(eps, ctx.as_ref(), &args.pivot_sizes, args.repeats)?;
    let opt = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.5}"));
    let ratio = |v: Option<f64>, n: f64| {
        v.map_or_else(|| "–".to_owned(), |v| format!("{:.2}%", 100.0 * v / n))
    };
    let mut table = String::from(
        "| operator | side | CPU pivot (s) | wgpu pivot (s) | wgpu pivot + read-back (s) | CPU pivot ÷ network call | wgpu pivot + read-back ÷ network call | CPU update (s) | wgpu update (s) | EPS network call, CPU (s) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {:.5} | {} | {} | {:.2}% | {} | {:.5} | {} | {:.3} |\n",
            r.operator,
            r.size,
            r.cpu_pivot,
            opt(r.gpu_pivot),
            opt(r.gpu_pivot_readback),
            100.0 * r.cpu_pivot / r.network_step,
            ratio(r.gpu_pivot_readback, r.network_step),
            r.cpu_update,
            opt(r.gpu_update),
            r.network_step
        ));
    }
    let report = format!(
        "EPS network: {eps_src}  \nwgpu adapter: {adapter}  \nBatch 1, 3 channels; medians of {} runs. \"Update\" is one DPM-Solver++(2M) step (three-term linear combination).\n\n{table}",
        args.repeats.max(1)
    );
    write_report(args, "Pivot benchmarks: CPU and wgpu", &report)
}

/// `eps-studio bench --mask`: painting on a large photo's mask.
/// `eps-studio bench --memory`: the CLI's own restore path in this process, its peak resident
/// memory read from the kernel (VmHWM, reset between runs through /proc/self/clear_refs).
fn memory_report(args: &BenchArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let status = proc_status;
    let reset_peak = reset_peak_memory;
    if status("VmHWM:").is_none() || !reset_peak() {
        anyhow::bail!("bench --memory reads the peak from /proc/self (Linux only)");
    }
    let (w, h) = args.mask_size;
    let dir = std::env::temp_dir().join(format!("eps-bench-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let photo = dir.join("photo.jpg");
    let mask = dir.join("mask.png");
    // A photo-like 8-bit picture and a 150-pixel disc, written without float copies.
    image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
        image::Rgb([
            (x * 255 / w as u32) as u8,
            (y * 255 / h as u32) as u8,
            (((x / 37 + y / 53) % 7) * 36) as u8,
        ])
    })
    .save(&photo)
    .context("writing the test photo")?;
    let (cx, cy) = (w as i64 / 2, h as i64 / 2);
    image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
        let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
        image::Luma([if dx * dx + dy * dy <= 75 * 75 { 255 } else { 0 }])
    })
    .save(&mask)
    .context("writing the test mask")?;
    let mut rows = Vec::new();
    for samples in [1_usize, 2, 4] {
        let out = dir.join(format!("out-{samples}"));
        reset_peak();
        let before = status("VmRSS:").unwrap_or(0);
        super::restore::run(&super::restore::RestoreArgs::bench_fill(
            photo.clone(),
            mask.clone(),
            "network",
            Some(4),
            samples,
            out.clone(),
        ))?;
        let peak = status("VmHWM:").unwrap_or(0);
        let fill = crate::photo::load_mask(&mask, w, h)?;
        let estimate = crate::restore::Estimate::new(
            (w, h),
            crate::photo::Depth::U8,
            &crate::restore::Degradation::inpaint(fill),
            &crate::restore::Settings::default(),
            samples,
        );
        rows.push(format!(
            "| {samples} | {:.0} | {:.0} | {:.0} | {:.2} |",
            peak as f64 / 1e6,
            before as f64 / 1e6,
            estimate.bytes as f64 / 1e6,
            peak as f64 / 1e9
        ));
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "Peak resident memory of `restore` (the command line's own path, in this process) on a \
         {w}×{h} JPEG with one 150-pixel hole. Target: ≤ 1 GB.\n\n\
         | samples | peak MB | resident before MB | estimate MB | peak / 1 GB |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    write_report(args, "Memory on a big photo", &report)
}

#[cfg(not(feature = "gui"))]
fn mask_report(_args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "bench --mask measures the app's mask editing; this build has no app (gui feature)"
    )
}

#[cfg(feature = "gui")]
fn mask_report(args: &BenchArgs) -> anyhow::Result<()> {
    let (w, h) = args.mask_size;
    let c = crate::app::bench_mask_editing(w, h, args.repeats.max(5));
    let [tw, th] = c.texture;
    let full_copy = c.history_steps * w * h;
    let report = format!(
        "Mask {w}×{h} ({:.1} MP), overlay texture {tw}×{th}; medians. CPU work only (the renderer's upload is not timed).\n\n\
         | | value |\n|---|---:|\n\
         | painted frame, overlay refreshed where the stroke landed (s) | {:.6} |\n\
         | texture pixels uploaded for it | {} ({:.2}% of the texture) |\n\
         | painted frame, whole overlay rebuilt (s) | {:.6} |\n\
         | rebuilt ÷ refreshed | {:.0}× |\n\
         | recording one undo step (s) | {:.4} |\n\
         | {} undo steps of strokes (bytes) | {} |\n\
         | the same as full mask copies, one byte per pixel (bytes) | {} |\n",
        (w * h) as f64 / 1e6,
        c.stroke_frame,
        c.stroke_upload_px,
        100.0 * c.stroke_upload_px as f64 / (tw * th) as f64,
        c.rebuild_frame,
        c.rebuild_frame / c.stroke_frame.max(1e-9),
        c.checkpoint,
        c.history_steps,
        c.history_bytes,
        full_copy,
    );
    write_report(args, "Mask editing benchmark", &report)
}

/// `eps-studio bench --train`: training throughput, the GEMM path against candle's operations.
fn train_report(args: &BenchArgs) -> anyhow::Result<()> {
    // As `train` does (src/heap.rs).
    crate::heap::keep_large_blocks();
    use crate::train::data::{PhotoSet, Split};
    let photos = if args.data.exists() {
        PhotoSet::load(&args.data)?
    } else {
        // Smooth synthetic photos: throughput does not depend on content.
        let make = |k: u32| {
            image::RgbImage::from_fn(256, 256, |x, y| {
                image::Rgb([(x + 40 * k) as u8, (y * 2) as u8, ((x ^ y) + k) as u8])
            })
        };
        PhotoSet::from_images(vec![
            ("synthetic__a".into(), Split::Train, make(0)),
            ("synthetic__b".into(), Split::Validation, make(1)),
        ])
    };
    let earlier = UNetConfig {
        unshuffle: 4,
        channels: vec![64, 96, 128, 128],
        mid_blocks: 1,
        attention: false,
        head: 0,
        ..UNetConfig::default()
    };
    let (batch, crop, steps) = (16, 64, args.repeats.max(5));
    let mut rows = String::from(
        "| network | GFLOP per 64² crop | candle ops (s / step) | ours (s / step) | speed-up | images / s (ours) |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, cfg) in [
        ("shipped CPU model", UNetConfig::default()),
        ("the earlier network's shape (×4 stem)", earlier),
    ] {
        eprintln!("training {name} for {steps} steps, twice…");
        let reference =
            crate::eval::bench::training_step_time(&cfg, &photos, batch, crop, steps, true)?;
        let ours =
            crate::eval::bench::training_step_time(&cfg, &photos, batch, crop, steps, false)?;
        rows.push_str(&format!(
            "| {name} | {:.2} | {reference:.3} | {ours:.3} | {:.2}× | {:.1} |\n",
            cfg.flops(crop, crop) as f64 / 1e9,
            reference / ours,
            batch as f64 / ours
        ));
    }
    let report = format!(
        "Prior-stage training steps of {batch} crops of {crop}×{crop}, median of {steps} steps after two warm-up steps, on this machine's CPU. *candle ops*: candle's own conv2d (direct-loop backward) and composed activations; *ours*: channels-last im2col + GEMM convolutions and fused activations (`src/denoiser/conv.rs`, `fused.rs`). Both compute the same losses up to float rounding.\n\n{rows}"
    );
    write_report(args, "Training throughput", &report)
}

/// `eps-studio bench --metrics`: the cost of LPIPS on one image pair.
fn metrics_report(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::eval::lpips::{Backbone, Lpips};
    let device = candle_core::Device::Cpu;
    let mut table = String::from(
        "| metric | side | seconds per pair (median) | evaluation features per 100 crops × 4 samples (s) |\n|---|---:|---:|---:|\n",
    );
    for backbone in [Backbone::Alex, Backbone::Vgg] {
        let net = match Lpips::locate_and_load(backbone, &device) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("note: skipping {}: {e}", backbone.label());
                continue;
            }
        };
        for side in [64, 256] {
            let noise = |seed| {
                crate::noise::SeededNoise::new(&[seed])
                    .normal((3, side, side), candle_core::DType::F32, &device)
                    .and_then(|t| Ok(t.affine(0.5, 0.0)?))
            };
            let (a, b) = (noise(1)?, noise(2)?);
            net.distance(&a, &b)?;
            let mut times = Vec::new();
            for _ in 0..args.repeats.max(1) {
                let t = std::time::Instant::now();
                net.distance(&a, &b)?;
                times.push(t.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            // The evaluation computes features of every sample and, once per crop, of its truth.
            let per_eval = if side == 64 {
                format!("{:.1}", median / 2.0 * (400.0 + 100.0))
            } else {
                "–".to_owned()
            };
            table.push_str(&format!(
                "| {} | {side} | {median:.4} | {per_eval} |\n",
                backbone.label()
            ));
        }
    }
    let report = format!(
        "LPIPS v0.1 between two images (two backbone passes and the heads), batch 1, medians of {} runs.\n\n{table}",
        args.repeats.max(1)
    );
    write_report(args, "Metric benchmarks", &report)
}

/// A `/proc/self/status` field in bytes (`VmRSS:`, `VmHWM:`), where the kernel offers it.
pub(super) fn proc_status(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// Resets the process's peak resident memory (VmHWM); `false` where that is not possible.
pub(super) fn reset_peak_memory() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
