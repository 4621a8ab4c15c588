//! `eps-studio selftest`: the checks that a compute device gives the CPU's results and restores
//! and trains as it should. Each check runs on the device asked for and compares with the CPU, or
//! with the measurement, so it tests the device's code path, not today's numbers. The same
//! bodies are the tests of `tests/device.rs` (CPU in `cargo test`; CUDA in a `cuda` build), and
//! `eps-studio selftest --device cuda` runs them on a user's GPU (scripts/gpu-run.sh does).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, ensure};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng as _;

use crate::denoiser::{Conditioning, ModelFile, Network, UNetConfig};
use crate::eval::holes::{hole_scores, object_mask};
use crate::noise::SeededNoise;
use crate::photo::{Raster as _, RgbImage};
use crate::restore::MethodChoice;
use crate::restore::{self, BlurSpec, Degradation, Models, Settings};
use crate::sampler::{Denoiser, Flow};
use crate::train::data::{PhotoSet, Split};
use crate::train::{Stage, TrainConfig, train};

/// One check: its name and its body, which returns what it measured.
pub struct Check {
    /// A name in words, e.g. `"shipped networks agree with the CPU"`.
    pub name: &'static str,
    /// Runs the check on a device; `Ok` carries the measured values in one line.
    pub run: fn(&Device) -> anyhow::Result<String>,
}

/// Every check, cheapest first.
pub const CHECKS: [Check; 4] = [
    Check {
        name: "shipped networks agree with the CPU",
        run: shipped_networks_agree_with_the_cpu,
    },
    Check {
        name: "restorations agree with the CPU and the measurement",
        run: restorations_agree_with_the_cpu_and_the_measurement,
    },
    Check {
        name: "a hole's posterior mean beats a grey fill",
        run: eps_fills_a_hole_better_than_grey,
    },
    Check {
        name: "both training stages run and the loss falls",
        run: training_lowers_the_loss,
    },
];

fn assets() -> anyhow::Result<PathBuf> {
    Ok(Models::locate(None)?)
}

fn network(name: &str, device: &Device) -> anyhow::Result<Network> {
    let file = ModelFile::load(&assets()?.join(name), device)?;
    Ok(Network::new(file.build(device)?))
}

/// A 128×96 crop of a shipped sample photo (a validation photo, never trained on).
fn photo(name: &str) -> anyhow::Result<RgbImage> {
    let path = assets()?.join("samples").join(name);
    let full = crate::photo::load(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .pixels;
    Ok(full.crop_rgb(128, 64, 128, 96))
}

fn max_pixel_diff(a: &RgbImage, b: &RgbImage) -> f32 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> anyhow::Result<f32> {
    let flat = |t: &Tensor| -> anyhow::Result<Vec<f32>> {
        Ok(t.to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?)
    };
    let (a, b) = (flat(a)?, flat(b)?);
    ensure!(a.len() == b.len(), "outputs of different sizes");
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max))
}

/// Both shipped networks give the CPU's denoised image on the device, from the highest noise
/// level the sampler uses down to the lowest (TF32 products on CUDA: within 0.02 of the [-1, 1]
/// range).
pub fn shipped_networks_agree_with_the_cpu(device: &Device) -> anyhow::Result<String> {
    let (n, b) = (64, 2);
    let seeds = [1u64, 2];
    let mut worst = 0.0f32;
    for sigma in [0.05, 1.0, 20.0] {
        let x = |d: &Device| -> anyhow::Result<Tensor> {
            Ok((SeededNoise::new(&seeds).normal((3, n, n), DType::F32, d)? * sigma)?)
        };
        let prior = |d: &Device| -> anyhow::Result<Tensor> {
            Ok(Denoiser::denoise(
                &network("prior.safetensors", d)?,
                &x(d)?,
                sigma,
            )?)
        };
        let diff = max_abs_diff(&prior(device)?, &prior(&Device::Cpu)?)?;
        ensure!(
            diff <= 0.02,
            "prior at σ = {sigma}: the device differs by {diff}"
        );
        worst = worst.max(diff);

        let eps = |d: &Device| -> anyhow::Result<Tensor> {
            let net = network("eps.safetensors", d)?;
            let cond = Conditioning {
                obs: (x(d)? / (1.0 + sigma))?,
                variance: Tensor::full(0.5f32, (1, 1, n, n), d)?,
            };
            let s = Tensor::full(sigma, b, d)?;
            Ok(net.inner().forward_padded(&x(d)?, &s, Some(&cond))?)
        };
        let diff = max_abs_diff(&eps(device)?, &eps(&Device::Cpu)?)?;
        ensure!(
            diff <= 0.02,
            "EPS at σ = {sigma}: the device differs by {diff}"
        );
        worst = worst.max(diff);
    }
    Ok(format!("largest difference from the CPU {worst:.1e}"))
}

fn settings(method: MethodChoice, steps: usize) -> Settings {
    Settings {
        method,
        steps: Some(steps),
        sigma_y: 0.05,
        work_side: 128,
        prior: crate::restore::Prior::Network,
        ..Settings::default()
    }
}

fn restore_on(
    models: &Models,
    y: &RgbImage,
    degradation: &Degradation,
    settings: &Settings,
) -> anyhow::Result<restore::Restoration> {
    Ok(restore::restore(
        models,
        None,
        y,
        degradation,
        settings,
        &[3],
        &mut |_| Flow::Continue,
    )?)
}

fn models(device: &Device) -> anyhow::Result<Models> {
    Ok(Models::load(&assets()?, device)?)
}

/// The deterministic posterior mean (one network call) of a hole and of a blur, and a 20-step
/// EPS sample: on the device without falling back, equal to the CPU's mean within 3/255, and the
/// sample agrees with the measurement outside the hole.
pub fn restorations_agree_with_the_cpu_and_the_measurement(
    device: &Device,
) -> anyhow::Result<String> {
    let truth = photo("cups.jpg")?;
    let (on_device, on_cpu) = (models(device)?, models(&Device::Cpu)?);
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let fill = object_mask(truth.width, truth.height, (0.03, 0.05), &mut rng);
    let mut report = Vec::new();
    for degradation in [
        Degradation::inpaint(fill.clone()),
        Degradation::Deblur(BlurSpec::Gaussian { sigma: 1.5 }),
    ] {
        let sim = restore::simulate(&truth, &degradation, 0.05, 9)?;
        let mean = settings(MethodChoice::EpsMean, 20);
        let got = restore_on(&on_device, &sim.y, &degradation, &mean)?;
        ensure!(
            !got.fell_back_to_cpu,
            "{}: fell back to the CPU: {:?}",
            degradation.label(),
            got.notices
        );
        ensure!(
            !device.is_cuda() || got.backend.starts_with("CUDA"),
            "ran on {}",
            got.backend
        );
        let want = restore_on(&on_cpu, &sim.y, &degradation, &mean)?;
        let d = max_pixel_diff(&got.samples[0].rgb(), &want.samples[0].rgb());
        ensure!(
            d <= 3.0 / 255.0,
            "{}: the device's mean differs from the CPU's by {d}",
            degradation.label()
        );
        report.push(format!(
            "{} mean within {:.2}/255",
            degradation.label(),
            d * 255.0
        ));
    }
    let degradation = Degradation::inpaint(fill.clone());
    let sim = restore::simulate(&truth, &degradation, 0.05, 9)?;
    let got = restore_on(
        &on_device,
        &sim.y,
        &degradation,
        &settings(MethodChoice::Eps, 20),
    )?;
    ensure!(got.nfe == 20, "{} network calls, expected 20", got.nfe);
    let sample = got.samples[0].rgb();
    ensure!(
        sample.data.iter().all(|v| v.is_finite()),
        "non-finite pixels"
    );
    // Outside the hole the sample agrees with the measurement to within its noise: σ_y = 0.05 in
    // the network's [-1, 1] units is 0.025 in [0, 1].
    let (mut sq, mut n) = (0.0f64, 0usize);
    for (i, hidden) in fill.iter().enumerate() {
        if !hidden {
            for c in 0..3 {
                let k = 3 * i + c;
                sq += f64::from(sample.data[k] - sim.y.data[k].clamp(0.0, 1.0)).powi(2);
                n += 1;
            }
        }
    }
    let rms = (sq / n.max(1) as f64).sqrt();
    ensure!(
        rms <= 2.0 * 0.025,
        "outside the hole the sample strays {rms:.4} from the measurement (noise 0.025)"
    );
    report.push(format!(
        "sample {rms:.4} RMS from the measurement outside the hole"
    ));
    Ok(report.join("; "))
}

/// A hole's posterior mean, drawn from its surroundings, is closer to the truth than a flat
/// mid-grey fill: the network sees the photo on this device.
pub fn eps_fills_a_hole_better_than_grey(device: &Device) -> anyhow::Result<String> {
    let truth = photo("ladybird.jpg")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let fill = object_mask(truth.width, truth.height, (0.03, 0.05), &mut rng);
    let degradation = Degradation::inpaint(fill.clone());
    let sim = restore::simulate(&truth, &degradation, 0.05, 2)?;
    let got = restore_on(
        &models(device)?,
        &sim.y,
        &degradation,
        &settings(MethodChoice::EpsMean, 20),
    )?;
    let mut grey = sim.y.clone();
    for (i, hidden) in fill.iter().enumerate() {
        if *hidden {
            grey.data[3 * i..3 * i + 3].fill(0.5);
        }
    }
    let ours = hole_scores(&got.samples[0].rgb(), &truth, &fill, None)?;
    let flat = hole_scores(&grey, &truth, &fill, None)?;
    ensure!(
        ours.psnr > flat.psnr,
        "hole PSNR {:.2} dB, a grey fill {:.2} dB",
        ours.psnr,
        flat.psnr
    );
    Ok(format!(
        "hole PSNR {:.2} dB against {:.2} dB for grey",
        ours.psnr, flat.psnr
    ))
}

/// Smooth synthetic photos: colour gradients with a soft blob (three to train on, one to
/// validate), for training checks that need no photo pack.
pub fn synthetic_photos() -> PhotoSet {
    let make = |k: u32| {
        image::RgbImage::from_fn(96, 96, |x, y| {
            let (fx, fy) = (f64::from(x) / 95.0, f64::from(y) / 95.0);
            let blob =
                (-((fx - 0.3 - 0.1 * f64::from(k)).powi(2) + (fy - 0.6).powi(2)) * 12.0).exp();
            let c = |a: f64| (255.0 * a.clamp(0.0, 1.0)) as u8;
            image::Rgb([
                c(0.2 + 0.6 * fx + 0.3 * blob),
                c(0.3 + 0.4 * fy * f64::from(k % 2)),
                c(0.8 - 0.5 * fx * fy + 0.2 * blob),
            ])
        })
    };
    PhotoSet::from_images(vec![
        ("syn__a".into(), Split::Train, make(0)),
        ("syn__b".into(), Split::Train, make(1)),
        ("syn__c".into(), Split::Train, make(2)),
        ("syn__d".into(), Split::Validation, make(3)),
    ])
}

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "eps-studio-selftest-{what}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny network's training settings that fit a run of seconds: the loss falls within 30
/// steps on [`synthetic_photos`].
pub fn tiny_training(stage: Stage, steps: usize) -> TrainConfig {
    TrainConfig {
        stage,
        model: UNetConfig::tiny(),
        steps,
        batch: 4,
        crop: 32,
        lr: 3e-3,
        warmup: 1,
        ema_rel: 0.2,
        crop_mix: vec![(48, 0.3)],
        lr_decay: 20,
        checkpoint_every: 10,
        val_every: 10,
        val_crops_per_photo: 4,
        seed: 7,
        ..TrainConfig::default()
    }
}

/// Both stages train on the device: the prior's validation loss falls, the EPS stage starts
/// from it and stays finite, and the weights come back as a loadable file.
pub fn training_lowers_the_loss(device: &Device) -> anyhow::Result<String> {
    let dir = Scratch::new("train")?;
    let cfg = tiny_training;
    let photos = synthetic_photos();
    let vals = RefCell::new(Vec::new());
    let prior = train(
        &cfg(Stage::Prior, 30),
        &photos,
        &dir.path().join("prior"),
        None,
        device,
        &mut |log| vals.borrow_mut().extend(log.val_loss),
    )?;
    let vals = vals.into_inner();
    let first_val = std::fs::read_to_string(dir.path().join("prior/loss.csv"))?
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').nth(2).and_then(|v| v.parse::<f64>().ok()))
        .context("loss.csv has no validation loss at step 0")?;
    let last_val = *vals.last().context("no validation loss logged")?;
    ensure!(
        last_val < 0.8 * first_val,
        "validation loss {first_val} → {last_val}"
    );
    let mut finite = true;
    train(
        &cfg(Stage::Eps, 10),
        &photos,
        &dir.path().join("eps"),
        Some(&prior),
        device,
        &mut |log| finite &= log.train_loss.is_finite(),
    )?;
    ensure!(finite, "the EPS stage's loss went non-finite");
    ModelFile::load(&dir.path().join("eps/final.safetensors"), &Device::Cpu)?;
    Ok(format!(
        "prior validation loss {first_val:.4} → {last_val:.4}"
    ))
}
