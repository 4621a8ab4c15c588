//! What a photographer relies on, measured on the shipped weights and the shipped sample photos
//! (both validation photos, never trained on), each against a reference the method must beat:
//!
//! - a fill of an object-sized hole (the default prior: the photo's own patches) has the photo's
//!   texture (texture ratio in [0.5, 2]: not noise, not a smear), and the posterior mean fills
//!   the hole better than the classical biharmonic fill;
//! - motion deblurring asked for at σ_y = 0 is not ringing: it beats the blurry photo;
//! - deblurring beats the blurry photo itself and a tuned Wiener filter, super-resolution beats
//!   bicubic upsampling.
#![allow(clippy::unwrap_used)]

use eps_studio::eval::holes::{hole_scores, object_mask};
use eps_studio::eval::reference::{best_wiener, bicubic_upsample, biharmonic_fill};
use eps_studio::photo::RgbImage;
use eps_studio::restore::MethodChoice;
use eps_studio::restore::{self, BlurSpec, Degradation, Models, Settings};
use eps_studio::sampler::Flow;
use rand::SeedableRng as _;

const SIGMA_Y: f64 = 0.05;

fn models() -> Models {
    let folder = Models::locate(None).unwrap();
    Models::load(&folder, &candle_core::Device::Cpu).unwrap()
}

fn sample_photo(name: &str) -> RgbImage {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/samples")
        .join(name);
    eps_studio::photo::load(&path)
        .unwrap()
        .pixels
        .rgb()
        .into_owned()
}

fn run(
    models: &Models,
    y: &RgbImage,
    deg: &Degradation,
    m: MethodChoice,
    seeds: &[u64],
) -> Vec<RgbImage> {
    run_with(models, y, deg, m, seeds, SIGMA_Y)
}

fn run_with(
    models: &Models,
    y: &RgbImage,
    deg: &Degradation,
    m: MethodChoice,
    seeds: &[u64],
    sigma_y: f64,
) -> Vec<RgbImage> {
    let settings = Settings {
        method: m,
        sigma_y,
        ..Settings::default()
    };
    restore::restore(models, None, y, deg, &settings, seeds, &mut |_| {
        Flow::Continue
    })
    .unwrap()
    .samples
    .into_iter()
    .map(eps_studio::photo::Pixels::into_rgb)
    .collect()
}

/// Fills on the default prior (the photo's own patches), over three object-sized holes in each
/// sample photo: the posterior mean beats the biharmonic fill's hole PSNR on average over the
/// holes (one hole may hide what neither can know: a mean that continues the flower above it
/// loses to a smooth guess where the truth is plain background), and the samples carry the
/// photo's texture (geometric-mean texture ratio in [0.5, 2]: not noise, not a smear).
#[test]
fn fills_have_the_photos_texture_and_the_mean_beats_a_classical_fill() {
    let models = models();
    let (mut mean_psnr, mut classical_psnr, mut log_texture) = (0.0, 0.0, 0.0);
    let (mut holes, mut samples) = (0, 0);
    for (name, seed) in [("ladybird.jpg", 3u64), ("cups.jpg", 4)] {
        let truth = sample_photo(name);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for hole in 0..3 {
            let fill = object_mask(truth.width, truth.height, (0.03, 0.04), &mut rng);
            let deg = Degradation::inpaint(fill.clone());
            let sim = restore::simulate(&truth, &deg, SIGMA_Y, seed).unwrap();
            let classical = hole_scores(
                &biharmonic_fill(&sim.y, &fill).unwrap(),
                &truth,
                &fill,
                None,
            )
            .unwrap();
            let mean = &run(&models, &sim.y, &deg, MethodChoice::EpsMean, &[seed])[0];
            let mean_scores = hole_scores(mean, &truth, &fill, None).unwrap();
            eprintln!(
                "{name} #{hole}: hole PSNR mean {:.2} dB, biharmonic {:.2} dB",
                mean_scores.psnr, classical.psnr
            );
            mean_psnr += mean_scores.psnr;
            classical_psnr += classical.psnr;
            holes += 1;
            for (k, s) in run(
                &models,
                &sim.y,
                &deg,
                MethodChoice::Eps,
                &[seed, seed + 100],
            )
            .iter()
            .enumerate()
            {
                let scores = hole_scores(s, &truth, &fill, None).unwrap();
                eprintln!(
                    "{name} #{hole}: sample {k} texture ratio {:.2}, hole PSNR {:.2} dB",
                    scores.texture_ratio, scores.psnr
                );
                assert!(
                    scores.texture_ratio.is_finite() && scores.texture_ratio > 0.0,
                    "{name} #{hole}: sample {k} has no texture at all"
                );
                log_texture += scores.texture_ratio.ln();
                samples += 1;
            }
        }
    }
    let (mean_psnr, classical_psnr) = (mean_psnr / holes as f64, classical_psnr / holes as f64);
    let texture = (log_texture / samples as f64).exp();
    eprintln!(
        "over {holes} holes: mean {mean_psnr:.2} dB, biharmonic {classical_psnr:.2} dB; \
         samples' texture ratio {texture:.2}"
    );
    assert!(
        mean_psnr > classical_psnr,
        "the posterior mean fills holes worse ({mean_psnr:.2} dB) than the biharmonic fill ({classical_psnr:.2} dB)"
    );
    assert!(
        (0.5..=2.0).contains(&texture),
        "the samples' texture ratio is {texture:.2} (1 = the photo's; ≫ 1 noise, ≪ 1 smear)"
    );
}

/// Deblurring (Gaussian σ = 2 px, σ_y = 0.05): every posterior sample must beat both the blurry
/// photo and the best Wiener deconvolution (the ε that scores best on this very photo, an oracle
/// choice no user has); the one-call posterior mean must beat the blurry photo.
#[test]
fn deblurred_samples_beat_the_blurry_photo_and_a_tuned_wiener_filter() {
    let models = models();
    let truth = sample_photo("cups.jpg");
    let spec = BlurSpec::Gaussian { sigma: 2.0 };
    let blur = Degradation::Deblur(spec);
    let sim = restore::simulate(&truth, &blur, SIGMA_Y, 1).unwrap();
    let blurry = restore::psnr(&sim.y, &sim.truth);
    let kernel = spec.kernel().unwrap();
    let (_, wiener) = best_wiener(&[(&sim.y, &sim.truth)], &kernel).unwrap();
    let reference = blurry.max(wiener);
    let mean = restore::psnr(
        &run(&models, &sim.y, &blur, MethodChoice::EpsMean, &[1])[0],
        &sim.truth,
    );
    let samples: Vec<f64> = run(&models, &sim.y, &blur, MethodChoice::Eps, &[1, 2])
        .iter()
        .map(|x| restore::psnr(x, &sim.truth))
        .collect();
    eprintln!(
        "deblur: posterior mean {mean:.2} dB, samples {samples:.2?} dB, blurry photo {blurry:.2} dB, \
         Wiener {wiener:.2} dB"
    );
    assert!(
        mean > blurry,
        "the deblurred mean ({mean:.2} dB) is worse than the blurry photo ({blurry:.2} dB)"
    );
    for (k, p) in samples.iter().enumerate() {
        assert!(
            *p > reference,
            "deblurred sample {k} ({p:.2} dB) is worse than the blurry photo ({blurry:.2} dB) or \
             the Wiener filter ({wiener:.2} dB)"
        );
    }
}

/// Motion deblurring asked for at σ_y = 0 (a noise-free measurement): the request is raised to
/// the motion floor with a note, and the sample beats the blurry photo instead of filling with
/// stripes along the blur's near-zero frequencies (19.6 dB against the blurry photo's 29.1 dB
/// before the floor, on a crop of Foggy-Trees).
#[test]
fn motion_deblurring_at_zero_noise_beats_the_blurry_photo() {
    let models = models();
    let truth = sample_photo("cups.jpg");
    let blur = Degradation::Deblur(BlurSpec::Motion {
        length: 9.0,
        angle_deg: 30.0,
    });
    let sim = restore::simulate(&truth, &blur, 0.0, 1).unwrap();
    let blurry = restore::psnr(&sim.y, &sim.truth);
    let sample = restore::psnr(
        &run_with(&models, &sim.y, &blur, MethodChoice::Eps, &[1], 0.0)[0],
        &sim.truth,
    );
    eprintln!("motion deblur at σ_y = 0: sample {sample:.2} dB, blurry photo {blurry:.2} dB");
    assert!(
        sample > blurry,
        "motion deblurring at σ_y = 0 ({sample:.2} dB) is worse than the blurry photo ({blurry:.2} dB)"
    );
}

#[test]
#[ignore = "issue 12 is open: the shipped EPS mean super-resolves cups.jpg ×4 at 21.1 dB against bicubic's 21.3 dB; run with --ignored"]
fn super_resolution_beats_bicubic() {
    let models = models();
    let truth = sample_photo("cups.jpg");
    let sr = Degradation::SuperRes { factor: 4 };
    let sim = restore::simulate(&truth, &sr, SIGMA_Y, 2).unwrap();
    let bicubic = restore::psnr(&bicubic_upsample(&sim.y, 4), &sim.truth);
    let mean = restore::psnr(
        &run(&models, &sim.y, &sr, MethodChoice::EpsMean, &[2])[0],
        &sim.truth,
    );
    eprintln!("SR ×4: posterior mean {mean:.2} dB, bicubic {bicubic:.2} dB");
    assert!(
        mean > bicubic,
        "super-resolution ({mean:.2} dB) is worse than bicubic ({bicubic:.2} dB)"
    );
}

/// Deblurring on the photo's own patches (the default): with no network, its samples and its
/// mean (the average of quick draws) beat the blurry photo, and the samples explain the
/// measurement (re-blurred, they sit within the noise of the blurry photo); a photo too small
/// for one window of its shrunk copy is refused with a message naming the network prior.
#[test]
fn deblurring_on_patches_beats_the_blurry_photo_and_explains_it() {
    let full = sample_photo("cups.jpg");
    let truth = full.crop(128, 56, 128, 128);
    let spec = BlurSpec::Gaussian { sigma: 2.0 };
    let blur = Degradation::Deblur(spec);
    let sim = restore::simulate(&truth, &blur, SIGMA_Y, 3).unwrap();
    let blurry = restore::psnr(&sim.y, &sim.truth);
    let models = Models::new(None, None, candle_core::Device::Cpu);
    let mut scores = Vec::new();
    for (m, seeds) in [
        (MethodChoice::EpsMean, vec![1]),
        (MethodChoice::Eps, vec![1, 2]),
    ] {
        let settings = Settings {
            method: m,
            sigma_y: SIGMA_Y,
            ..Settings::default()
        };
        assert!(!settings.needs_network(&blur));
        let out = restore::restore(&models, None, &sim.y, &blur, &settings, &seeds, &mut |_| {
            Flow::Continue
        })
        .unwrap();
        for (x, r) in out.samples.iter().zip(&out.residuals) {
            let x = x.rgb().into_owned();
            assert!(x.data.iter().all(|v| v.is_finite()));
            assert!(
                r.rms < 1.5 * SIGMA_Y,
                "{m:?}: residual rms {} against σ_y {SIGMA_Y}",
                r.rms
            );
            scores.push((m, restore::psnr(&x, &sim.truth)));
        }
    }
    eprintln!("deblur on patches: {scores:.2?} dB, blurry {blurry:.2} dB");
    for (m, p) in scores {
        assert!(
            p > blurry + 0.5,
            "{m:?} on patches ({p:.2} dB) is not better than the blurry photo ({blurry:.2} dB)"
        );
    }
    // Motion blur: a sample on patches beats the blurry photo too (on ladybird.jpg the
    // network's sample fell below it: docs/patch-prior.md).
    let motion = Degradation::Deblur(BlurSpec::Motion {
        length: 9.0,
        angle_deg: 30.0,
    });
    let sim = restore::simulate(&truth, &motion, SIGMA_Y, 4).unwrap();
    let blurry = restore::psnr(&sim.y, &sim.truth);
    let out = restore::restore(
        &models,
        None,
        &sim.y,
        &motion,
        &Settings::default(),
        &[5],
        &mut |_| Flow::Continue,
    )
    .unwrap();
    let p = restore::psnr(&*out.samples[0].rgb(), &sim.truth);
    eprintln!("motion deblur on patches: {p:.2} dB, blurry {blurry:.2} dB");
    assert!(
        p > blurry + 0.5,
        "motion deblurring on patches ({p:.2} dB) is not better than the blurry photo ({blurry:.2} dB)"
    );
    assert!(
        out.residuals[0].rms < 1.5 * SIGMA_Y,
        "{}",
        out.residuals[0].rms
    );

    let tiny = full.crop(0, 0, 12, 12);
    let settings = Settings::default();
    let slight = Degradation::Deblur(BlurSpec::Gaussian { sigma: 0.5 });
    let e = restore::restore(&models, None, &tiny, &slight, &settings, &[0], &mut |_| {
        Flow::Continue
    })
    .expect_err("a 12×12 photo shrunk twice has no 7×7 window")
    .to_string();
    assert!(e.contains("12×12") && e.contains("--prior network"), "{e}");
}
