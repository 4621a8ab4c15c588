//! The wgpu compute backend: every shader validates with naga; the GPU pivot and sampler match
//! the CPU implementation; GPU faults come back as errors.
//!
//! GPU tests need an adapter. Debian's software Vulkan driver (mesa-vulkan-drivers, "llvmpipe")
//! is enough; without any adapter they print why and pass, unless `EPS_REQUIRE_GPU=1` (set by
//! `.ci/run` once the driver is installed), where they fail.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, OnceLock};

use candle_core::{DType, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use eps_studio::Error;
use eps_studio::backend::gpu::{AdapterPolicy, GpuArithmetic, GpuContext, SHADERS};
use eps_studio::denoiser::{EdmDenoiser, Network, UNetConfig};
use eps_studio::inverse::{
    AvgPoolSr, Blur, CgOperator, CgSettings, Interpolant, Kernel, LinearOperator, Problem,
};
use eps_studio::photo::RgbImage;
use eps_studio::prior::gmm::{GaussianMixture, GmmPosteriorOracle};
use eps_studio::restore::MethodChoice;
use eps_studio::restore::{self, BlurSpec, Degradation, Models, Settings};
use eps_studio::sampler::Flow;
use eps_studio::sampler::eps::{self, EpsConfig};
use eps_studio::sampler::{Solver, StepArithmetic, ignore_progress};

/// A fresh context on any adapter, or `None` (with the reason printed) when there is none.
fn acquire() -> Option<GpuContext> {
    match GpuContext::acquire(AdapterPolicy::Any) {
        Ok(ctx) => Some(ctx),
        Err(e) => {
            assert!(
                std::env::var("EPS_REQUIRE_GPU").as_deref() != Ok("1"),
                "EPS_REQUIRE_GPU=1 but no GPU adapter: {e}"
            );
            eprintln!("skipping: {e} (install mesa-vulkan-drivers for a software adapter)");
            None
        }
    }
}

/// One context shared by the read-only tests.
fn shared() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(acquire).as_ref()
}

#[test]
fn every_shader_validates_with_naga() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    files.sort();
    let mut built: Vec<String> = SHADERS.iter().map(|(n, _)| (*n).to_owned()).collect();
    built.sort();
    assert_eq!(
        files, built,
        "every file in shaders/ is built into a pipeline"
    );
    for name in files {
        let source = std::fs::read_to_string(dir.join(&name)).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let entry = module.entry_points.iter().find(|e| e.name == "main");
        let entry = entry.unwrap_or_else(|| panic!("{name} has no `main` entry point"));
        assert_eq!(entry.stage, naga::ShaderStage::Compute, "{name}");
        let size = entry.workgroup_size;
        assert!(
            size == [16, 16, 1] || size == [8, 8, 1],
            "{name}: workgroup size {size:?}"
        );
    }
}

/// Size classes: square powers of two, odd and prime sizes, batch > 1, one and three channels.
const DIMS: [(usize, usize, usize, usize); 5] = [
    (1, 3, 16, 16),
    (2, 3, 15, 21),
    (3, 1, 37, 24),
    (2, 2, 30, 45),
    (1, 3, 64, 96),
];

fn f32_of(t: &Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

/// Largest difference relative to the scale of the data, `max|a − b| / max(1, max|b|)`.
fn relative_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b) / max_abs(b).max(1.0)
}

fn all_operators(dims: (usize, usize, usize, usize)) -> Vec<Arc<dyn LinearOperator>> {
    let mut ops = operators_for(dims);
    if dims.2.is_multiple_of(3) && dims.3.is_multiple_of(3) {
        ops.push(Arc::new(AvgPoolSr::new(3).unwrap()));
    }
    ops
}

#[test]
fn pivot_matches_the_cpu_for_every_operator_and_size() {
    let Some(ctx) = shared() else { return };
    let mut worst: f64 = 0.0;
    for dims in DIMS {
        let (b, c, h, w) = dims;
        for (k, op) in all_operators(dims).into_iter().enumerate() {
            for shared_y in [true, false] {
                let y_batch = if shared_y { 1 } else { b };
                if op.measurement_dims((y_batch, c, h, w)).is_err() {
                    continue; // a per-image mask cannot pair with a shared y
                }
                let y = f32_of(&random_measurement(&*op, (y_batch, c, h, w), 7 + k as u64));
                for sigma_y in [0.0, 0.05] {
                    let problem = Problem::new(Arc::clone(&op), &y, sigma_y, (c, h, w)).unwrap();
                    let mut gpu = GpuArithmetic::new(ctx, &problem, b).unwrap();
                    for (s, sigma) in [0.02, 1.0, 80.0].into_iter().enumerate() {
                        let x0 = randn(dims, 100 + s as u64).affine(0.5, 0.0).unwrap();
                        let x_t = f32_of(
                            &(x0 + randn(dims, 200 + s as u64).affine(sigma, 0.0).unwrap())
                                .unwrap(),
                        );
                        let interp = Interpolant::edm(sigma);
                        let cpu = problem.pivot(&x_t, interp).unwrap();
                        let held = gpu.load(&x_t).unwrap();
                        let got = gpu.pivot(&held, interp).unwrap();
                        let d = relative_diff(&got, &cpu);
                        worst = worst.max(d);
                        assert!(
                            d < 1e-4,
                            "{} on {dims:?}, y batch {y_batch}, σ_y {sigma_y}, σ {sigma}: relative difference {d:.2e}",
                            op.name()
                        );
                    }
                }
            }
        }
    }
    eprintln!("worst GPU–CPU pivot difference (relative to the data's scale): {worst:.2e}");
}

#[test]
fn linear_combinations_and_transfers_match() {
    let Some(ctx) = shared() else { return };
    let dims = (2, 3, 15, 21);
    let op: Arc<dyn LinearOperator> = Arc::new(AvgPoolSr::new(3).unwrap());
    let y = f32_of(&random_measurement(&*op, dims, 1));
    let problem = Problem::new(op, &y, 0.0, (3, 15, 21)).unwrap();
    let mut gpu = GpuArithmetic::new(ctx, &problem, 2).unwrap();
    let xs: Vec<Tensor> = (0..4).map(|i| f32_of(&randn(dims, 40 + i))).collect();
    let held: Vec<_> = xs.iter().map(|x| gpu.load(x).unwrap()).collect();
    assert_eq!(
        max_abs_diff(&gpu.read(&held[2]).unwrap(), &xs[2]),
        0.0,
        "load/read round trip"
    );
    let coefficients = [0.75, -1.5, 2.0, 1e-3];
    for n in 1..=4 {
        let terms: Vec<(f64, &_)> = coefficients.iter().copied().zip(&held).take(n).collect();
        let got = gpu.combine(&terms).unwrap();
        let mut want = xs[0].affine(coefficients[0], 0.0).unwrap();
        for i in 1..n {
            want = (want + xs[i].affine(coefficients[i], 0.0).unwrap()).unwrap();
        }
        let d = max_abs_diff(&gpu.read(&got).unwrap(), &want);
        assert!(d < 1e-5, "{n} terms: {d:.2e}");
    }
    assert!(gpu.combine(&[]).is_err());
    // Buffers go back to the pool: many more steps allocate nothing new.
    let before = gpu.buffers_allocated();
    for _ in 0..20 {
        let t = gpu.combine(&[(1.0, &held[0]), (0.5, &held[1])]).unwrap();
        drop(t);
    }
    assert!(gpu.buffers_allocated() <= before + 1);
}

/// The whole EPS sampler, GPU arithmetic against CPU arithmetic, on the exact Gaussian-mixture
/// posterior denoiser (so the network is not part of the comparison).
#[test]
fn eps_sampler_matches_the_cpu_for_every_solver() {
    let Some(ctx) = shared() else { return };
    let chw = (1, 6, 6);
    let prior = Arc::new(GaussianMixture::synthetic(chw, 3, 5).unwrap());
    let ops: Vec<Arc<dyn LinearOperator>> = vec![
        Arc::new(random_mask((1, 1, 6, 6), 0.5, 3)),
        Arc::new(AvgPoolSr::new(2).unwrap()),
        Arc::new(Blur::new(Kernel::gaussian(1.0, 5).unwrap(), 6, 6).unwrap()),
    ];
    let seeds = [11, 12];
    for op in ops {
        let like = Tensor::zeros((1, 1, 6, 6), DType::F32, &candle_core::Device::Cpu).unwrap();
        let x0 = prior.sample_tensor(1, 9, &like).unwrap();
        let problem = Problem::simulate(Arc::clone(&op), &x0, 0.05, 4).unwrap();
        let oracle = GmmPosteriorOracle::new(Arc::clone(&prior), &problem).unwrap();
        let churned = |solver| EpsConfig {
            steps: 12,
            solver,
            ..EpsConfig::default()
        };
        for cfg in [
            EpsConfig::ode(12, Solver::Euler),
            EpsConfig::ode(12, Solver::Heun),
            EpsConfig::ode(12, Solver::DpmSolver2m),
            churned(Solver::Euler),
            churned(Solver::Heun),
        ] {
            let cpu = eps::sample(&oracle, &problem, &seeds, &cfg, &mut ignore_progress).unwrap();
            let mut gpu = GpuArithmetic::new(ctx, &problem, seeds.len()).unwrap();
            let got = eps::sample_with(
                &mut gpu,
                &oracle,
                &problem,
                &seeds,
                &cfg,
                &mut ignore_progress,
            )
            .unwrap();
            assert_eq!(got.nfe, cpu.nfe);
            let d = relative_diff(&got.samples, &cpu.samples);
            assert!(d < 1e-4, "{} {}: {d:.2e}", op.name(), cfg.name());
        }
    }
}

#[test]
fn operators_without_a_shader_are_refused_clearly() {
    let Some(ctx) = shared() else { return };
    let blur = Blur::new(Kernel::gaussian(1.0, 5).unwrap(), 8, 8).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(CgOperator::new(blur, CgSettings::default()));
    let y = f32_of(&random_measurement(&*op, (1, 3, 8, 8), 1));
    let problem = Problem::new(op, &y, 0.1, (3, 8, 8)).unwrap();
    let err = GpuArithmetic::new(ctx, &problem, 1).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

/// A device lost in the middle of a run gives `Error::Gpu`, never a panic or a wrong image.
#[test]
fn a_lost_device_is_an_error() {
    let Some(ctx) = acquire() else { return };
    let dims = (1, 3, 16, 16);
    let op: Arc<dyn LinearOperator> =
        Arc::new(Blur::new(Kernel::gaussian(1.0, 5).unwrap(), 16, 16).unwrap());
    let y = f32_of(&random_measurement(&*op, dims, 1));
    let problem = Problem::new(op, &y, 0.01, (3, 16, 16)).unwrap();
    let mut gpu = GpuArithmetic::new(&ctx, &problem, 1).unwrap();
    let x = gpu.load(&f32_of(&randn(dims, 2))).unwrap();
    gpu.pivot(&x, Interpolant::edm(1.0)).unwrap();
    ctx.device().destroy();
    let err = gpu.pivot(&x, Interpolant::edm(1.0)).unwrap_err();
    assert!(matches!(err, Error::Gpu(_)), "{err}");
    assert!(gpu.load(&f32_of(&randn(dims, 3))).is_err() || gpu.read(&x).is_err());
}

fn tiny_models() -> Models {
    let net = |cfg: &UNetConfig| {
        let vm = VarMap::new();
        Network::new(
            EdmDenoiser::new(
                VarBuilder::from_varmap(&vm, DType::F32, &candle_core::Device::Cpu),
                cfg,
            )
            .unwrap(),
        )
    };
    Models::new(
        Some(net(&UNetConfig::tiny())),
        Some(net(&UNetConfig::tiny().with_condition())),
        candle_core::Device::Cpu,
    )
}

fn photo(w: usize, h: usize) -> RgbImage {
    let mut img = RgbImage::new(w, h);
    for (i, v) in img.data.iter_mut().enumerate() {
        let (p, c) = (i / 3, i % 3);
        let (x, y) = ((p % w) as f32, (p / w) as f32);
        *v = (0.5 + 0.4 * (x * 0.21 + c as f32).sin() * (y * 0.13).cos()).clamp(0.0, 1.0);
    }
    img
}

fn degradations(w: usize, h: usize) -> Vec<Degradation> {
    let mut fill = vec![false; w * h];
    for y in h / 4..h / 2 {
        for x in w / 3..w / 2 {
            fill[y * w + x] = true;
        }
    }
    vec![
        Degradation::inpaint(fill),
        Degradation::Deblur(BlurSpec::Gaussian { sigma: 1.5 }),
        Degradation::SuperRes { factor: 2 },
    ]
}

fn max_pixel_diff(a: &RgbImage, b: &RgbImage) -> f32 {
    a.data
        .iter()
        .zip(&b.data)
        .fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Whole-photo restoration through the worker's entry point: the wgpu arithmetic gives the CPU's
/// pictures, and says where it ran.
#[test]
fn restoration_on_the_gpu_matches_the_cpu() {
    let Some(ctx) = shared() else { return };
    let models = tiny_models();
    let y = photo(48, 40);
    for degradation in degradations(48, 40) {
        for method in [MethodChoice::Eps, MethodChoice::EpsMean] {
            let settings = Settings {
                method,
                steps: Some(6),
                work_side: 32,
                prior: eps_studio::restore::Prior::Network,
                ..Settings::default()
            };
            let run = |gpu| {
                restore::restore(
                    &models,
                    gpu,
                    &y,
                    &degradation,
                    &settings,
                    &[3, 4],
                    &mut |_| Flow::Continue,
                )
                .unwrap()
            };
            let cpu = run(None);
            let got = run(Some(ctx));
            assert_eq!(cpu.backend, "CPU");
            assert!(got.backend.starts_with("wgpu: "), "{}", got.backend);
            assert!(got.notices.is_empty() && !got.fell_back_to_cpu);
            for (a, b) in got.samples.iter().zip(&cpu.samples) {
                let d = max_pixel_diff(&a.rgb(), &b.rgb());
                assert!(d <= 2.0 / 255.0, "{} {method:?}: {d}", degradation.label());
            }
        }
    }
}

/// A device lost in the middle of a restoration: the run finishes on the CPU with the CPU's
/// exact result and a notice, and says so.
#[test]
fn a_gpu_lost_mid_run_falls_back_to_the_cpu() {
    let Some(ctx) = acquire() else { return };
    let models = tiny_models();
    let y = photo(40, 40);
    let degradation = Degradation::Deblur(BlurSpec::Gaussian { sigma: 1.5 });
    let settings = Settings {
        method: MethodChoice::Eps,
        steps: Some(8),
        work_side: 40,
        prior: eps_studio::restore::Prior::Network,
        ..Settings::default()
    };
    let cpu = restore::restore(
        &models,
        None,
        &y,
        &degradation,
        &settings,
        &[1],
        &mut |_| Flow::Continue,
    )
    .unwrap();
    let mut steps_seen = 0;
    let got = restore::restore(
        &models,
        Some(&ctx),
        &y,
        &degradation,
        &settings,
        &[1],
        &mut |p| {
            steps_seen += 1;
            if p.at.step == 3 && steps_seen == 3 {
                ctx.device().destroy();
            }
            Flow::Continue
        },
    )
    .unwrap();
    assert!(got.fell_back_to_cpu);
    assert_eq!(got.backend, "CPU");
    assert_eq!(got.notices.len(), 1);
    assert!(got.notices[0].contains("GPU failed"), "{}", got.notices[0]);
    assert_eq!(got.samples[0], cpu.samples[0], "the CPU's exact result");
    assert!(steps_seen > 8, "the region ran again on the CPU");
}

/// A device opened by someone else (an embedder, or eframe's renderer) can be handed in.
#[test]
fn a_context_builds_on_an_injected_device() {
    if shared().is_none() {
        return;
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .unwrap();
    let info = adapter.get_info();
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("injected"),
        required_limits: adapter.limits(),
        ..Default::default()
    }))
    .unwrap();
    let ctx = GpuContext::from_device(device, queue, info).unwrap();
    let op: Arc<dyn LinearOperator> = Arc::new(random_mask((1, 1, 9, 7), 0.5, 1));
    let y = f32_of(&random_measurement(&*op, (1, 3, 9, 7), 2));
    let problem = Problem::new(op, &y, 0.02, (3, 9, 7)).unwrap();
    let x = f32_of(&randn((1, 3, 9, 7), 3));
    let mut gpu = GpuArithmetic::new(&ctx, &problem, 1).unwrap();
    let held = gpu.load(&x).unwrap();
    let got = gpu.pivot(&held, Interpolant::edm(0.5)).unwrap();
    let want = problem.pivot(&x, Interpolant::edm(0.5)).unwrap();
    assert!(relative_diff(&got, &want) < 1e-6);
}
