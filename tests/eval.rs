//! The restoration benchmark and the speed measurements, on tiny random networks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use eps_studio::denoiser::{EdmDenoiser, Network, UNetConfig};
use eps_studio::eval::bench::{model_size, step_costs};
use eps_studio::eval::restoration::{EvalConfig, MethodChoice, evaluate, to_markdown};
use eps_studio::inverse::{Problem, TaskSpec};
use eps_studio::sampler::{Denoiser, Denoisers, PosteriorDenoiser};

fn net(cfg: &UNetConfig) -> Network {
    let vm = VarMap::new();
    Network::new(
        EdmDenoiser::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), cfg).unwrap(),
    )
}

#[test]
fn benchmark_scores_every_task_and_method_reproducibly() {
    let prior = net(&UNetConfig::tiny());
    let eps = net(&UNetConfig::tiny().with_condition());
    let denoisers = Denoisers {
        prior: Some(&prior as &dyn Denoiser),
        posterior: Some(&eps as &dyn PosteriorDenoiser),
    };
    let truth = randn((2, 3, 16, 16), 1)
        .affine(0.3, 0.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let cfg = EvalConfig {
        size: 16,
        samples: 2,
        images_per_batch: 2,
        tasks: vec![
            ("box".into(), TaskSpec::BoxInpaint),
            (
                "motion".into(),
                TaskSpec::MotionDeblur {
                    length: 5.0,
                    angle: 30.0,
                },
            ),
        ],
        ..EvalConfig::default()
    };
    let rows = evaluate(&cfg, &truth, denoisers, &mut |_| {}).unwrap();
    assert_eq!(rows.len(), 2 * MethodChoice::ALL.len());
    let nfe: Vec<usize> = rows.iter().take(6).map(|r| r.nfe).collect();
    assert_eq!(
        nfe,
        vec![MethodChoice::Eps.default_steps(), 1, 250, 100, 100, 100]
    );
    for r in &rows {
        assert!(
            r.psnr.is_finite() && r.ssim.is_finite() && r.crps.is_finite() && r.mmd.is_finite(),
            "{r:?}"
        );
        assert_eq!(r.images, 2);
    }
    let again = evaluate(&cfg, &truth, denoisers, &mut |_| {}).unwrap();
    for (a, b) in rows.iter().zip(&again) {
        assert_eq!(
            (a.psnr, a.crps),
            (b.psnr, b.crps),
            "{} {} not reproducible",
            a.task,
            a.method
        );
    }
    let md = to_markdown(&rows);
    assert_eq!(md.lines().count(), 2 + rows.len());
    for task in ["box", "motion"] {
        let group: String = md
            .lines()
            .filter(|l| l.starts_with(&format!("| {task} ")))
            .collect();
        // At least one best PSNR and one best CRPS, each wrapped in a pair of "**" (ties all marked).
        assert!(group.matches("**").count() >= 4, "{task}: {group}");
    }
}

#[test]
fn step_costs_are_reported_against_the_bare_step() {
    let prior = net(&UNetConfig::tiny());
    let eps = net(&UNetConfig::tiny().with_condition());
    let x0 = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let op = TaskSpec::GaussianDeblur { sigma: 1.0 }
        .operator(16, 16, &mut rng)
        .unwrap();
    let problem = Problem::simulate(Arc::clone(&op), &x0, 0.05, 1).unwrap();
    let rows = step_costs(&prior, &eps, &problem, 2, "t").unwrap();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0].ratio, Some(1.0));
    // The last row is the pivot overhead: EPS step over the EPS network's own step.
    let overhead = rows[6].ratio.unwrap();
    assert!(overhead.is_finite() && overhead > 0.0, "{overhead}");
    assert!((rows[6].secs - rows[1].secs).abs() < 1e-12);
    assert!(rows.iter().all(|r| r.secs > 0.0));
    // The FLOP count against one made independently from the weight shapes: every convolution
    // costs 2·C_out·C_in·k² per output pixel, at the resolution its name places it.
    let cfg = UNetConfig {
        attention: false,
        ..UNetConfig::default()
    };
    let (params, flops) = model_size(&cfg, 256).unwrap();
    let shapes = eps_studio::denoiser::weights::expected_shapes(&cfg).unwrap();
    assert_eq!(
        params,
        shapes
            .values()
            .map(|s| s.iter().product::<usize>())
            .sum::<usize>()
    );
    let top = 256 / cfg.unshuffle;
    let levels = cfg.channels.len();
    let mut convs = 0u64;
    for (name, shape) in &shapes {
        if shape.len() != 4 {
            continue;
        }
        let parts: Vec<&str> = name.split('.').collect();
        let level = |k: usize| parts[k].parse::<usize>().unwrap();
        if parts[0] == "head" {
            // The full-resolution head works on the image's own pixels.
            convs += 2 * (shape.iter().product::<usize>() * 256 * 256) as u64;
            continue;
        }
        let out_level = match parts[0] {
            "input" | "output" => 0,
            "down" | "up" => level(1),
            "downsample" => level(1) + 1,
            "upsample" => level(1) - 1,
            "mid" => levels - 1,
            other => panic!("unexpected layer {other}"),
        };
        let side = top >> out_level;
        convs += 2 * (shape.iter().product::<usize>() * side * side) as u64;
    }
    assert_eq!(flops, convs);
    // And attention adds its projections and products on top.
    assert!(model_size(&UNetConfig::default(), 256).unwrap().1 > flops);
}

/// The perceptual and VGG-feature columns: zero for perfect samples, positive for noisy ones.
#[test]
fn feature_scores_are_zero_for_the_truth_and_grow_with_noise() {
    use eps_studio::eval::lpips::{Backbone, Lpips};
    use eps_studio::eval::restoration::{FeatureNets, feature_scores};
    let load = |b: Backbone| match Lpips::locate_and_load(b, &Device::Cpu) {
        Ok(n) => Some(n),
        Err(e) => {
            assert!(
                std::env::var("EPS_REQUIRE_LPIPS").as_deref() != Ok("1"),
                "EPS_REQUIRE_LPIPS=1 but: {e}"
            );
            eprintln!("without {}: {e}", b.label());
            None
        }
    };
    let nets = FeatureNets {
        alex: load(Backbone::Alex),
        vgg: load(Backbone::Vgg),
    };
    let (n, s) = (3, 2);
    let truth = randn((n, 3, 64, 64), 3)
        .affine(0.4, 0.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let perfect = truth
        .unsqueeze(1)
        .unwrap()
        .broadcast_as((n, s, 3, 64, 64))
        .unwrap()
        .reshape((n * s, 3, 64, 64))
        .unwrap();
    let noise = randn((n * s, 3, 64, 64), 4)
        .affine(0.3, 0.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let noisy = (&perfect + noise).unwrap();
    let exact = feature_scores(&nets, &perfect, &truth, s).unwrap();
    let worse = feature_scores(&nets, &noisy, &truth, s).unwrap();
    eprintln!("exact {exact:?}\nnoisy {worse:?}");
    if nets.alex.is_some() {
        assert!(exact.lpips_alex.unwrap().abs() < 1e-6, "{exact:?}");
        assert!(worse.lpips_alex.unwrap() > 0.01, "{worse:?}");
    }
    if nets.vgg.is_some() {
        assert!(exact.lpips_vgg.unwrap().abs() < 1e-6 && exact.crps_vgg.unwrap().abs() < 1e-9);
        assert!(worse.lpips_vgg.unwrap() > 0.05 && worse.crps_vgg.unwrap() > 0.0);
        // Duplicated truths are not the truths' own Gaussian fit (the covariance normalisation
        // differs), so FD is small, not zero; noise moves it far more.
        assert!(
            worse.fd_vgg.unwrap() > 10.0 * exact.fd_vgg.unwrap(),
            "{exact:?} {worse:?}"
        );
        assert!(worse.kid_vgg.unwrap().is_finite() && worse.mmd_vgg.unwrap().is_finite());
    }
}

/// The hole curve scores the network the EPS sampler calls: an EPS network that is exactly its
/// starting point (a widened prior, output layers zeroed) scores exactly as the centred Gaussian
/// column, and every column is a finite PSNR above the noisy input's at high σ.
#[test]
fn hole_curve_scores_the_denoiser_the_sampler_calls() {
    use eps_studio::denoiser::{ModelFile, ModelKind};
    use eps_studio::eval::diagnose::hole_curve;
    let cfg = UNetConfig::tiny();
    let varmap = VarMap::new();
    EdmDenoiser::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let prior_file = ModelFile {
        kind: ModelKind::Prior,
        config: cfg,
        tensors,
        notes: Default::default(),
    };
    let eps = Network::new(
        prior_file
            .widen_to_eps()
            .unwrap()
            .build(&Device::Cpu)
            .unwrap(),
    );
    let prior = Network::new(prior_file.build(&Device::Cpu).unwrap());
    // Smooth crops with structure: gradients and a bump, in [-1, 1].
    let (n, h, w) = (3usize, 32usize, 32usize);
    let data: Vec<f32> = (0..n * 3 * h * w)
        .map(|i| {
            let (b, c, y, x) = (i / (3 * h * w), (i / (h * w)) % 3, (i / w) % h, i % w);
            0.6 * ((x as f32 / 7.0 + b as f32).sin() * (y as f32 / 9.0 + c as f32).cos())
        })
        .collect();
    let truth = Tensor::from_vec(data, (n, 3, h, w), &Device::Cpu).unwrap();
    let rows = hole_curve(&truth, &[0.1, 5.0, 80.0], Some(&prior), Some(&eps), 0.05, 3).unwrap();
    for r in &rows {
        let (e, g) = (r.eps.unwrap(), r.gaussian);
        assert!(
            (e.0 - g.0).abs() < 1e-3,
            "σ = {}: the starting EPS network scores {} dB, its Gaussian {} dB",
            r.sigma,
            e.0,
            g.0
        );
        assert!(r.prior.unwrap().0.is_finite() && e.1.is_finite());
        if r.sigma > 1.0 {
            assert!(
                e.0 > r.input + 5.0,
                "σ = {}: {e:?} vs input {}",
                r.sigma,
                r.input
            );
        }
    }
}
