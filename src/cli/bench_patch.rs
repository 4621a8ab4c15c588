//! `eps-studio bench --patch`: the patch prior's fills against their speed and memory targets,
//! every number from one run.
//!
//! - A 256-pixel crop of a validation photo with an object-sized hole: one EPS sample and the
//!   instant preview (the posterior mean), medians of `--repeats`.
//! - Cost against hole and photo size: three holes × two photo sizes, one sample each.
//! - Deblurring a 384 × 256 photo on patches against the network, one sample each.
//! - A 24-megapixel JPEG with one 400×300 hole filled at its own resolution through `restore`
//!   (the command line's path, in this process): seconds and peak resident memory.

use std::time::Instant;

use anyhow::Context as _;
use rand::SeedableRng as _;

use super::bench::BenchArgs;
use crate::photo::RgbImage;
use crate::restore::{self, Degradation, Models, Prior, Settings};
use crate::sampler::Flow;

/// A photo of `w × h`: a validation photo of the pack resized (bilinear), or a synthetic
/// photo-like picture when there is no pack.
fn test_photo(args: &BenchArgs, w: usize, h: usize) -> RgbImage {
    if let Ok(set) = crate::train::data::PhotoSet::load(&args.data)
        && let Some((_, img)) = set
            .named_split(crate::train::data::Split::Validation)
            .into_iter()
            .find(|(n, _)| n.contains("aitzgorri"))
            .or_else(|| {
                set.named_split(crate::train::data::Split::Validation)
                    .into_iter()
                    .next()
            })
    {
        let (iw, ih) = img.dimensions();
        let rgb = RgbImage {
            width: iw as usize,
            height: ih as usize,
            data: img.as_raw().iter().map(|&v| f32::from(v) / 255.0).collect(),
        };
        return crate::restore::resize::bilinear(&rgb, w, h);
    }
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let t = ((x / 7 + y / 11) % 5) as f32 / 5.0;
            let i = (y * w + x) * 3;
            img.data[i] = 0.3 + 0.4 * x as f32 / w as f32 + 0.1 * t;
            img.data[i + 1] = 0.5 + 0.2 * (y as f32 / 23.0).sin();
            img.data[i + 2] = 0.2 + 0.3 * t;
        }
    }
    img
}

/// An elliptic hole of `hw × hh` centred in a `w × h` photo.
fn ellipse(w: usize, h: usize, hw: usize, hh: usize) -> Vec<bool> {
    let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
    let (a, b) = (hw as f64 / 2.0, hh as f64 / 2.0);
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64 + 0.5, (i / w) as f64 + 0.5);
            ((x - cx) / a).powi(2) + ((y - cy) / b).powi(2) <= 1.0
        })
        .collect()
}

fn time_fill(
    y: &RgbImage,
    fill: &[bool],
    method: crate::restore::MethodChoice,
    seed: u64,
) -> anyhow::Result<f64> {
    time_fill_with(y, fill, method, seed, true)
}

/// [`time_fill`], with the layout made at two depths or only at the deepest
/// ([`crate::prior::patch::PyramidConfig::choose_depth`]).
fn time_fill_with(
    y: &RgbImage,
    fill: &[bool],
    method: crate::restore::MethodChoice,
    seed: u64,
    choose_depth: bool,
) -> anyhow::Result<f64> {
    let models = Models::new(None, None, candle_core::Device::Cpu);
    let mut patch = Settings::default().patch;
    patch.choose_depth = choose_depth;
    // The posterior mean is timed as the app's instant preview.
    let settings = Settings {
        method,
        prior: Prior::Patch,
        preview: method == crate::restore::MethodChoice::EpsMean,
        patch,
        ..Settings::default()
    };
    let t = Instant::now();
    restore::restore(
        &models,
        None,
        y,
        &Degradation::inpaint(fill.to_vec()),
        &settings,
        &[seed],
        &mut |_| Flow::Continue,
    )?;
    Ok(t.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `eps-studio bench --patch`.
pub fn patch_report(args: &BenchArgs) -> anyhow::Result<()> {
    use crate::restore::MethodChoice;
    let mut report = String::new();
    // 1. The 256-pixel crop.
    let crop = test_photo(args, 256, 256);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let fill = crate::eval::holes::object_mask(256, 256, (0.10, 0.15), &mut rng);
    let hidden = fill.iter().filter(|f| **f).count();
    let repeats = args.repeats.max(1);
    // With and without the second layout, alternating, so both see the same machine.
    let mut both = Vec::with_capacity(repeats);
    let mut one = Vec::with_capacity(repeats);
    for k in 0..repeats {
        both.push(time_fill_with(
            &crop,
            &fill,
            MethodChoice::Eps,
            k as u64,
            true,
        )?);
        one.push(time_fill_with(
            &crop,
            &fill,
            MethodChoice::Eps,
            k as u64,
            false,
        )?);
    }
    let (sample, one_depth) = (median(both), median(one));
    let preview = median(
        (0..repeats)
            .map(|k| time_fill(&crop, &fill, MethodChoice::EpsMean, k as u64))
            .collect::<anyhow::Result<Vec<_>>>()?,
    );
    eprintln!(
        "256-px crop: sample {sample:.2} s (one depth {one_depth:.2} s), preview {preview:.2} s"
    );
    report.push_str(&format!(
        "A 256×256 crop with an object-sized hole ({hidden} pixels, {:.0}% of the crop), default settings, {} threads, median of {repeats}:\n\n\
         | | seconds | target | ratio to target |\n|---|---:|---:|---:|\n\
         | one EPS sample | {sample:.2} | 3 | {:.2} |\n\
         | one EPS sample laid out at the deepest level only (`--one-depth`) | {one_depth:.2} | – | {:.2} of the default's time |\n\
         | instant preview (posterior mean) | {preview:.2} | 0.3 | {:.2} |\n\n",
        100.0 * hidden as f64 / 65536.0,
        rayon::current_num_threads(),
        sample / 3.0,
        one_depth / sample,
        preview / 0.3
    ));
    // 2. Cost against hole and photo size.
    let mut rows = Vec::new();
    for (pw, ph) in [(1200_usize, 800_usize), (6000, 4000)] {
        let photo = test_photo(args, pw, ph);
        for (hw, hh) in [(100_usize, 75_usize), (200, 150), (400, 300)] {
            let fill = ellipse(pw, ph, hw, hh);
            let secs = time_fill(&photo, &fill, MethodChoice::Eps, 0)?;
            eprintln!("{pw}×{ph}, hole {hw}×{hh}: {secs:.2} s");
            rows.push(format!(
                "| {:.1} MP | {hw}×{hh} | {secs:.2} |",
                (pw * ph) as f64 / 1e6
            ));
        }
    }
    report.push_str(&format!(
        "One sample against photo and hole size (elliptic holes in the photo's middle, filled at the photo's own resolution):\n\n\
         | photo | hole | seconds |\n|---|---|---:|\n{}\n\n",
        rows.join("\n")
    ));
    // 3. Deblurring on patches against the network.
    report.push_str(&deblur_rows(args)?);
    // 4. The 24-megapixel JPEG through `restore`.
    report.push_str(&big_photo(args)?);
    super::bench::write_report(args, "The patch prior's fills: speed and memory", &report)
}

/// One deblurring sample of a 384 × 256 photo (Gaussian σ = 2, two tiles) on the photo's own
/// patches (the default, and with 16 nearest windows instead of 8) and on the EPS network, the
/// variants alternating, medians of `--repeats`, with each one's PSNR.
fn deblur_rows(args: &BenchArgs) -> anyhow::Result<String> {
    use crate::restore::BlurSpec;
    let truth = test_photo(args, 384, 256);
    let deg = Degradation::Deblur(BlurSpec::Gaussian { sigma: 2.0 });
    let sim = restore::simulate(&truth, &deg, 0.05, 0)?;
    let none = Models::new(None, None, candle_core::Device::Cpu);
    let network = Models::locate(args.eps.parent())
        .and_then(|f| Models::load(&f, &candle_core::Device::Cpu))
        .map_err(|e| eprintln!("note: the network's row is skipped: {e}"))
        .ok();
    let k16 = crate::prior::patch::DeblurConfig {
        k: 16,
        ..Default::default()
    };
    let variants: Vec<(&str, &Models, Settings)> = [
        (
            "the photo's own patches (the default: 8 nearest windows)",
            Some(&none),
            Settings::default(),
        ),
        (
            "the photo's own patches, 16 nearest windows",
            Some(&none),
            Settings {
                deblur_on_patches: Some(k16),
                ..Settings::default()
            },
        ),
        (
            "the EPS network (`--prior network`)",
            network.as_ref(),
            Settings {
                prior: Prior::Network,
                ..Settings::default()
            },
        ),
    ]
    .into_iter()
    .filter_map(|(name, models, settings)| models.map(|m| (name, m, settings)))
    .collect();
    let repeats = args.repeats.max(1);
    let mut times = vec![Vec::new(); variants.len()];
    let mut scores = vec![0.0; variants.len()];
    for _ in 0..repeats {
        for (i, (name, models, settings)) in variants.iter().enumerate() {
            let t = Instant::now();
            let out = restore::restore(models, None, &sim.y, &deg, settings, &[0], &mut |_| {
                Flow::Continue
            })?;
            times[i].push(t.elapsed().as_secs_f64());
            scores[i] = restore::psnr(&*out.samples[0].rgb(), &sim.truth);
            eprintln!(
                "deblur, {name}: {:.2} s, {:.2} dB",
                times[i].last().unwrap_or(&0.0),
                scores[i]
            );
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    let base = medians.last().copied().filter(|_| network.is_some());
    let rows: Vec<String> = variants
        .iter()
        .zip(&medians)
        .zip(&scores)
        .map(|(((name, _, _), secs), psnr)| {
            let ratio = base.map_or("–".into(), |b| format!("{:.2}", secs / b));
            format!("| {name} | {secs:.2} | {ratio} | {psnr:.2} |")
        })
        .collect();
    Ok(format!(
        "Deblurring a 384×256 photo blurred with a Gaussian of σ = 2 px (σ_y = 0.05, two tiles, one 10-step sample, on the CPU; the blurry photo scores {:.2} dB), the variants alternating, median of {repeats}:\n\n\
         | prior | seconds | × the network | PSNR dB |\n|---|---:|---:|---:|\n{}\n\n",
        restore::psnr(&sim.y, &sim.truth),
        rows.join("\n")
    ))
}

/// Seconds and peak memory of `restore --prior patch` on a 24-megapixel JPEG with a 400×300
/// hole.
fn big_photo(args: &BenchArgs) -> anyhow::Result<String> {
    let status = super::bench::proc_status;
    let reset_peak = super::bench::reset_peak_memory;
    let (w, h) = (6000_usize, 4000_usize);
    let dir = std::env::temp_dir().join(format!("eps-bench-patch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let photo = dir.join("photo.jpg");
    let mask = dir.join("mask.png");
    {
        let img = test_photo(args, w, h);
        image::RgbImage::from_raw(w as u32, h as u32, img.to_rgb8())
            .context("building the test photo")?
            .save(&photo)
            .context("writing the test photo")?;
    }
    let fill = ellipse(w, h, 400, 300);
    image::GrayImage::from_fn(w as u32, h as u32, |x, y| {
        image::Luma([if fill[y as usize * w + x as usize] {
            255
        } else {
            0
        }])
    })
    .save(&mask)
    .context("writing the test mask")?;
    drop(fill);
    let mut rows = String::new();
    for samples in [1, 4] {
        let out = dir.join(format!("out-{samples}"));
        let measured = reset_peak();
        let before = status("VmRSS:").unwrap_or(0);
        let t = Instant::now();
        super::restore::run(&super::restore::RestoreArgs::bench_fill(
            photo.clone(),
            mask.clone(),
            "patch",
            None,
            samples,
            out,
        ))?;
        let secs = t.elapsed().as_secs_f64();
        let peak = status("VmHWM:").unwrap_or(0);
        eprintln!(
            "24 MP JPEG, 400×300 hole, {samples} sample(s): {secs:.1} s, peak {:.2} GB",
            peak as f64 / 1e9
        );
        let memory = if measured {
            format!(
                "{:.2} | {:.2} | {:.2}",
                peak as f64 / 1e9,
                peak as f64 / 1e9,
                before as f64 / 1e9
            )
        } else {
            "not measured (needs Linux's /proc/self) | – | –".into()
        };
        rows.push_str(&format!(
            "| {samples} | {secs:.1} | {:.2} | {memory} |\n",
            secs / (30.0 * samples as f64),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "`restore --prior patch --samples N` on a {w}×{h} JPEG with one 400×300 hole at the photo's own resolution, in this process (decode, fill, the mean and uncertainty map, encode and save included). Targets: 30 s a sample, 1 GB:\n\n\
         | samples | seconds | seconds / (30 s × samples) | peak GB | peak / 1 GB | resident before GB |\n|---:|---:|---:|---:|---:|---:|\n{rows}"
    ))
}
