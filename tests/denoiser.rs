//! The U-Net denoiser: shapes, EPS widening, weight files, differentiability.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use eps_studio::denoiser::weights::expected_shapes;
use eps_studio::denoiser::{Conditioning, EdmDenoiser, ModelFile, ModelKind, Network, UNetConfig};
use eps_studio::sampler::Denoiser;

/// A randomly initialised tiny network as a weight file.
fn random_model(cfg: &UNetConfig, kind: ModelKind) -> ModelFile {
    let varmap = VarMap::new();
    EdmDenoiser::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        cfg,
    )
    .unwrap();
    // Seeded values for every parameter, in name order, so the weights are the same on every run
    // (candle's own initialisation is unseeded) and zero-initialised layers are not special:
    // scaled like a fan-in initialisation for matrices and kernels, around 1 for gains.
    let mut named: Vec<(String, candle_core::Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let tensors = named
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let noise = randn((1, 1, 1, v.elem_count()), 100 + i as u64)
                .reshape(v.dims())
                .unwrap();
            let dims = v.dims();
            let t = if dims.len() > 1 {
                let fan_in: usize = dims[1..].iter().product();
                noise.affine(1.0 / (fan_in as f64).sqrt(), 0.0).unwrap()
            } else if k.ends_with(".bias") {
                noise.affine(0.05, 0.0).unwrap()
            } else {
                noise.affine(0.05, 1.0).unwrap()
            };
            (k.clone(), t.to_dtype(DType::F32).unwrap())
        })
        .collect();
    ModelFile {
        kind,
        config: cfg.clone(),
        tensors,
        notes: Default::default(),
    }
}

fn sig(b: usize, s: f64) -> Tensor {
    Tensor::full(s, b, &Device::Cpu).unwrap()
}

fn f32(t: Tensor) -> Tensor {
    t.to_dtype(DType::F32).unwrap()
}

#[test]
fn any_size_works_and_shapes_are_kept() {
    let cfg = UNetConfig::tiny();
    let net = random_model(&cfg, ModelKind::Prior)
        .build(&Device::Cpu)
        .unwrap();
    assert_eq!(cfg.size_multiple(), 4);
    for (h, w) in [(16, 16), (32, 48), (13, 22), (5, 7)] {
        let x = f32(randn((2, 3, h, w), 1));
        let y = net.forward_padded(&x, &sig(2, 0.5), None).unwrap();
        assert_eq!(y.dims(), &[2, 3, h, w]);
        assert!(max_abs(&y).is_finite());
    }
    let e = net
        .forward(&f32(randn((1, 3, 13, 16), 1)), &sig(1, 0.5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("multiples of 4"), "{e}");
    let e = net
        .forward(&f32(randn((1, 1, 16, 16), 1)), &sig(1, 0.5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 channels"), "{e}");
    let e = net
        .forward(&f32(randn((2, 3, 16, 16), 1)), &sig(1, 0.5), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("noise levels"), "{e}");
    let e = net
        .forward(&f32(randn((1, 3, 16, 16), 1)), &sig(1, 0.0), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("positive"), "{e}");
}

/// The EPS network starts as the Gaussian denoiser centred on the observation:
/// `D = c_skip μ + (1 − c_skip) obs` with `c_skip = σ_d²/(s² + σ_d²)` — at σ = 80 exactly the
/// classical reconstruction, at low noise the pivot itself. Its input layers are the prior's,
/// widened with zero weights for the observation and the noise level: with the prior's output
/// layers and no centring it computes exactly the prior, whatever the observation.
#[test]
fn widened_eps_network_starts_at_the_gaussian_denoiser_around_the_observation() {
    let cfg = UNetConfig::tiny();
    let prior_file = random_model(&cfg, ModelKind::Prior);
    let eps_file = prior_file.widen_to_eps().unwrap();
    assert_eq!(eps_file.kind, ModelKind::Eps);
    assert_eq!(eps_file.config.cond_channels, 4);
    assert!(eps_file.config.obs_base);
    let prior = prior_file.build(&Device::Cpu).unwrap();
    let eps = eps_file.build(&Device::Cpu).unwrap();
    let mu = f32(randn((3, 3, 16, 24), 2));
    let obs = f32(randn((3, 3, 16, 24), 3));
    let cond = |s: f64, obs: &Tensor| Conditioning {
        obs: obs.clone(),
        variance: Tensor::full((s * s) as f32, (1, 1, 16, 24), &Device::Cpu).unwrap(),
    };
    let sd = cfg.sigma_data;
    for s in [0.01, 0.5, 80.0] {
        let skip = sd * sd / (s * s + sd * sd);
        let gaussian =
            (mu.affine(skip, 0.0).unwrap() + obs.affine(1.0 - skip, 0.0).unwrap()).unwrap();
        let d = eps.forward(&mu, &sig(3, s), Some(&cond(s, &obs))).unwrap();
        assert!(
            max_abs_diff(&d, &gaussian) < 1e-5,
            "σ = {s}: the widened network differs from the Gaussian denoiser by {}",
            max_abs_diff(&d, &gaussian)
        );
    }

    // The input widening alone keeps the prior: uncentred, with the prior's output layers.
    let mut uncentred = eps_file.clone();
    uncentred.config.obs_base = false;
    for name in [
        "output.weight",
        "output.bias",
        "head.out.weight",
        "head.out.bias",
    ] {
        if let Some(t) = prior_file.tensors.get(name) {
            uncentred.tensors.insert(name.into(), t.clone());
        }
    }
    let same = uncentred.build(&Device::Cpu).unwrap();
    for s in [0.01, 0.5, 80.0] {
        let a = prior.forward(&mu, &sig(3, s), None).unwrap();
        let b = same.forward(&mu, &sig(3, s), Some(&cond(s, &obs))).unwrap();
        assert!(
            max_abs_diff(&a, &b) < 1e-6,
            "σ = {s}: widened network differs from the prior by {}",
            max_abs_diff(&a, &b)
        );
    }
    // And the observation channels are live once their weights move.
    let mut moved = uncentred.clone();
    let w = moved.tensors["input.weight"].clone();
    moved
        .tensors
        .insert("input.weight".into(), (w + 0.01).unwrap());
    let c = moved.build(&Device::Cpu).unwrap();
    let o1 = c
        .forward(&mu, &sig(3, 0.5), Some(&cond(0.5, &obs)))
        .unwrap();
    let o2 = c
        .forward(
            &mu,
            &sig(3, 0.5),
            Some(&cond(0.5, &obs.affine(-1.0, 0.0).unwrap())),
        )
        .unwrap();
    assert!(max_abs_diff(&o1, &o2) > 1e-4);
    assert!(
        eps.forward(&mu, &sig(3, 0.5), None).is_err(),
        "EPS without observation must fail"
    );
    assert!(prior_file.widen_to_eps().unwrap().widen_to_eps().is_err());
}

/// The Wiener input: the same network computes the same at σ → 0 as with EDM's `c_in x`, and at
/// high σ its estimate no longer follows the noise in `x` — whatever the weights, so a partly
/// trained network cannot put its input noise into the one-call mean or into ΠGDM's guidance.
/// With EDM's input the same weights follow it (the property is the option's, not the weights').
#[test]
fn wiener_input_keeps_the_input_noise_out_of_high_noise_estimates() {
    for cfg in [UNetConfig::tiny(), UNetConfig::tiny().with_condition()] {
        let kind = if cfg.cond_channels > 0 {
            ModelKind::Eps
        } else {
            ModelKind::Prior
        };
        let mut edm_file = random_model(&cfg, kind);
        edm_file.config.wiener_input = false;
        let mut wiener_file = edm_file.clone();
        wiener_file.config.wiener_input = true;
        let edm = edm_file.build(&Device::Cpu).unwrap();
        let wiener = wiener_file.build(&Device::Cpu).unwrap();
        let x0 = f32(randn((2, 3, 16, 16), 7).affine(0.5, 0.0).unwrap());
        let obs = f32(randn((2, 3, 16, 16), 8).affine(0.5, 0.0).unwrap());
        let eps = f32(randn((2, 3, 16, 16), 9));
        let other = f32(randn((2, 3, 16, 16), 10));
        let cond = |s: f64| {
            (cfg.cond_channels > 0).then(|| Conditioning {
                obs: obs.clone(),
                variance: Tensor::full((s * s) as f32, (1, 1, 16, 16), &Device::Cpu).unwrap(),
            })
        };
        let run = |net: &EdmDenoiser, noise: &Tensor, s: f64| {
            let x = (&x0 + noise.affine(s, 0.0).unwrap()).unwrap();
            net.forward(&x, &sig(2, s), cond(s).as_ref()).unwrap()
        };
        // σ → 0: c_skip → 1 and c_in → 1/σ_d, the two inputs agree.
        let s = 1e-3;
        let gap = max_abs_diff(&run(&edm, &eps, s), &run(&wiener, &eps, s));
        assert!(gap < 1e-4, "{kind:?}: σ = {s}: the inputs differ by {gap}");
        // σ = 80: two noise draws, two estimates. Each moves `x` by 80 per unit of noise.
        let s = 80.0;
        let follow = |net: &EdmDenoiser| max_abs_diff(&run(net, &eps, s), &run(net, &other, s));
        let (w, e) = (follow(&wiener), follow(&edm));
        assert!(
            w < 0.05,
            "{kind:?}: with the Wiener input the σ = 80 estimate still moves by {w} with the noise"
        );
        assert!(
            e > 0.1,
            "{kind:?}: with EDM's input the same weights were expected to follow the noise ({e})"
        );
    }
}

/// Per-pixel preconditioning: pixels whose pivot noise is small (observed ones, σ* ≈ σ_y) reach
/// the network at unit scale and pass through the denoiser almost unchanged at every σ, whatever
/// the weights — the context is never scaled away at the first, σ = 80 steps.
#[test]
fn observed_pixels_pass_through_at_every_noise_level() {
    let eps = random_model(&UNetConfig::tiny().with_condition(), ModelKind::Eps)
        .build(&Device::Cpu)
        .unwrap();
    let (h, w) = (16, 16);
    let observed: Vec<bool> = (0..h * w).map(|i| (i / w) < 8).collect();
    let mu = f32(randn((2, 3, h, w), 4).affine(0.5, 0.0).unwrap());
    for s in [0.5, 5.0, 80.0] {
        let var: Vec<f32> = observed
            .iter()
            .map(|&o| if o { 1e-6 } else { (s * s) as f32 })
            .collect();
        let cond = Conditioning {
            obs: mu.zeros_like().unwrap(),
            variance: Tensor::from_vec(var, (1, 1, h, w), &Device::Cpu).unwrap(),
        };
        let d = eps.forward(&mu, &sig(2, s), Some(&cond)).unwrap();
        let diff = (d - &mu).unwrap().abs().unwrap();
        let top = diff.narrow(2, 0, 8).unwrap();
        let bottom = diff.narrow(2, 8, 8).unwrap();
        assert!(
            max_abs(&top) < 1e-2,
            "σ = {s}: observed pixels moved by {}",
            max_abs(&top)
        );
        assert!(
            max_abs(&bottom) > 0.1,
            "σ = {s}: hidden pixels were not denoised"
        );
    }
}

/// The channels-last convolution (im2col and GEMM, written for the CPU) equals candle's `conv2d`
/// in value and in all three gradients, for every geometry the network uses.
#[test]
fn channels_last_convolution_matches_candle_conv2d() {
    use candle_core::Var;
    use eps_studio::denoiser::blocks::{to_channels_first, to_channels_last};
    use eps_studio::denoiser::conv::Conv;
    for (cin, cout, k, stride, pad, (hh, ww)) in [
        (5, 7, 3, 1, 1, (9, 12)),
        (6, 4, 2, 2, 0, (8, 10)),
        (3, 8, 1, 1, 0, (5, 6)),
        (4, 4, 3, 2, 1, (7, 9)),
        // 9216 pixels of 577 unfolded values: two bands per image in the banded path.
        (64, 8, 3, 1, 1, (96, 96)),
        // 16 or more output channels, and bands across the two images (140² pixels of 73
        // unfolded values).
        (5, 16, 3, 1, 1, (9, 12)),
        (8, 64, 3, 1, 1, (140, 140)),
        // The shipped network's widest layers.
        (64, 64, 3, 1, 1, (128, 128)),
        (192, 192, 3, 1, 1, (16, 16)),
    ] {
        let x = Var::from_tensor(&f32(randn((2, cin, hh, ww), 1))).unwrap();
        let wt =
            Var::from_tensor(&f32(randn((cout, cin, k, k), 2).affine(0.3, 0.0).unwrap())).unwrap();
        let b = Var::from_tensor(&f32(randn((1, 1, 1, cout), 3)).flatten_all().unwrap()).unwrap();
        let reference = x
            .as_tensor()
            .conv2d(wt.as_tensor(), pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        let conv = Conv::from_parts(
            wt.as_tensor().clone(),
            Some(b.as_tensor().clone()),
            stride,
            pad,
        )
        .unwrap();
        let ours = to_channels_first(
            &conv
                .forward(&to_channels_last(x.as_tensor()).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(ours.dims(), reference.dims());
        assert!(
            max_abs_diff(&ours, &reference) < 1e-4,
            "k{k} s{stride}: values differ"
        );
        // Without gradients the banded path runs; it must agree too.
        let frozen = Conv::from_parts(
            wt.as_tensor().detach(),
            Some(b.as_tensor().detach()),
            stride,
            pad,
        )
        .unwrap();
        let banded = to_channels_first(
            &frozen
                .forward(&to_channels_last(&x.as_tensor().detach()).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert!(
            max_abs_diff(&banded, &reference) < 1e-4,
            "k{k} s{stride}: banded differs"
        );
        // Fixed weights are laid out once and kept: a second call, on another input, uses the
        // kept layout and must still be the convolution of that input.
        let x2 = f32(randn((1, cin, hh, ww), 5));
        let again =
            to_channels_first(&frozen.forward(&to_channels_last(&x2).unwrap()).unwrap()).unwrap();
        let reference2 = x2
            .conv2d(&wt.as_tensor().detach(), pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert!(
            max_abs_diff(&again, &reference2) < 1e-4,
            "k{k} s{stride}: the kept weight layout differs"
        );
        // Trainable weights are never kept: after an update the layer computes with the new
        // values.
        let before = conv.forward(&to_channels_last(&x2).unwrap()).unwrap();
        let updated = wt.as_tensor().affine(-1.0, 0.0).unwrap();
        wt.set(&updated).unwrap();
        let after =
            to_channels_first(&conv.forward(&to_channels_last(&x2).unwrap()).unwrap()).unwrap();
        let reference3 = x2
            .conv2d(&updated, pad, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, cout, 1, 1)).unwrap())
            .unwrap();
        assert!(
            max_abs_diff(&after, &reference3) < 1e-4,
            "k{k} s{stride}: a trainable weight's update was not seen"
        );
        assert!(max_abs_diff(&to_channels_first(&before).unwrap(), &after) > 1e-3);
        wt.set(&updated.affine(-1.0, 0.0).unwrap()).unwrap();
        // Gradients of a weighted sum.
        let r = f32(randn(reference.dims4().unwrap(), 4));
        let g_ref = (&reference * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_ours = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (what, v) in [("input", &x), ("weight", &wt), ("bias", &b)] {
            let (a, c) = (
                g_ref.get(v.as_tensor()).unwrap(),
                g_ours.get(v.as_tensor()).unwrap(),
            );
            let scale = max_abs(a).max(1.0);
            assert!(
                max_abs_diff(a, c) < 1e-4 * scale,
                "k{k} s{stride}: {what} gradients differ by {}",
                max_abs_diff(a, c)
            );
        }
    }
}

/// The fused activations equal candle's composed operations, in value and gradient.
#[test]
fn fused_activations_match_composed_operations() {
    use candle_core::Var;
    use eps_studio::denoiser::fused::{film_silu, silu};
    let h = Var::from_tensor(&f32(randn((2, 5, 6, 7), 1).affine(2.0, 0.0).unwrap())).unwrap();
    let scale = Var::from_tensor(
        &f32(randn((1, 1, 2, 7), 2).affine(0.5, 0.0).unwrap())
            .reshape((2, 7))
            .unwrap(),
    )
    .unwrap();
    let shift = Var::from_tensor(&f32(randn((1, 1, 2, 7), 3)).reshape((2, 7)).unwrap()).unwrap();
    let r = f32(randn((2, 5, 6, 7), 4));
    let composed = candle_nn::ops::silu(
        &h.as_tensor()
            .broadcast_mul(&(scale.as_tensor().reshape((2, 1, 1, 7)).unwrap() + 1.0).unwrap())
            .unwrap()
            .broadcast_add(&shift.as_tensor().reshape((2, 1, 1, 7)).unwrap())
            .unwrap(),
    )
    .unwrap();
    let fused = film_silu(h.as_tensor(), scale.as_tensor(), shift.as_tensor()).unwrap();
    assert!(max_abs_diff(&composed, &fused) < 1e-5);
    let ga = (&composed * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (&fused * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for v in [&h, &scale, &shift] {
        let (a, b) = (
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        );
        assert!(
            max_abs_diff(a, b) < 1e-4 * max_abs(a).max(1.0),
            "{}",
            max_abs_diff(a, b)
        );
    }
    let plain = candle_nn::ops::silu(h.as_tensor()).unwrap();
    let ours = silu(h.as_tensor()).unwrap();
    assert!(max_abs_diff(&plain, &ours) < 1e-6);
    let ga = (&plain * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gb = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (a, b) = (
        ga.get(h.as_tensor()).unwrap(),
        gb.get(h.as_tensor()).unwrap(),
    );
    assert!(max_abs_diff(a, b) < 1e-5);
}

#[test]
fn weight_files_round_trip_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = UNetConfig::tiny();
    let model = random_model(&cfg, ModelKind::Prior);
    let path = dir.path().join("prior.safetensors");
    model.save(&path).unwrap();
    let back = ModelFile::load(&path, &Device::Cpu).unwrap();
    assert_eq!((back.kind, &back.config), (ModelKind::Prior, &cfg));
    let x = f32(randn((1, 3, 16, 16), 4));
    let a = model
        .build(&Device::Cpu)
        .unwrap()
        .forward(&x, &sig(1, 0.3), None)
        .unwrap();
    let b = back
        .build(&Device::Cpu)
        .unwrap()
        .forward(&x, &sig(1, 0.3), None)
        .unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(
        d <= 2e-3,
        "the saved network denoises {d} away from the one in memory"
    );
    // Half precision is the file's precision: saving what was loaded gives the same bytes.
    let again = ModelFile::from_bytes(&back.to_bytes().unwrap(), &Device::Cpu).unwrap();
    for (name, t) in &back.tensors {
        assert!(
            to_vec(t) == to_vec(&again.tensors[name]),
            "{name} changed on a second save"
        );
    }
    assert!(back.tensors.values().all(|t| t.dtype() == DType::F32));

    // Missing file.
    let e = ModelFile::load(&dir.path().join("nope.safetensors"), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.safetensors"), "{e}");
    // Truncated file.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = ModelFile::load(&cut, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("cut.safetensors") && e.contains("assets/"),
        "{e}"
    );
    // Not ours: a plain safetensors file.
    let plain = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(&model.tensors, &plain).unwrap();
    let e = ModelFile::load(&plain, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no eps_studio metadata"), "{e}");
    // Names and shapes must match the architecture in the metadata.
    let mut wrong = model.clone();
    wrong.tensors.remove("output.bias");
    let w = wrong.tensors["input.weight"].narrow(0, 0, 8).unwrap();
    wrong.tensors.insert("input.weight".into(), w);
    wrong.tensors.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("wrong.safetensors");
    wrong.save(&p).unwrap();
    let e = ModelFile::load(&p, &Device::Cpu).unwrap_err().to_string();
    assert!(
        e.contains("missing output.bias")
            && e.contains("input.weight has shape")
            && e.contains("unexpected extra.weight"),
        "{e}"
    );
    // Integer weights are refused.
    let mut ints = model.clone();
    ints.tensors.insert(
        "output.bias".into(),
        Tensor::zeros(12, DType::U8, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("ints.safetensors");
    ints.save(&p).unwrap();
    assert!(
        ModelFile::load(&p, &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("dtype")
    );
    // NaN weights are refused.
    let mut nan = model.clone();
    nan.tensors.insert(
        "output.bias".into(),
        Tensor::full(f32::NAN, 12, &Device::Cpu).unwrap(),
    );
    let p = dir.path().join("nan.safetensors");
    nan.save(&p).unwrap();
    assert!(
        ModelFile::load(&p, &Device::Cpu)
            .unwrap_err()
            .to_string()
            .contains("NaN")
    );
    assert_eq!(expected_shapes(&cfg).unwrap().len(), model.tensors.len());
}

/// The baselines differentiate through the network with candle autograd: the vector–Jacobian
/// product must match finite differences.
#[test]
fn network_vjp_matches_finite_differences() {
    let model = random_model(&UNetConfig::tiny(), ModelKind::Prior);
    let net = Network::new(model.build(&Device::Cpu).unwrap());
    let x = randn((1, 3, 8, 12), 5).to_dtype(DType::F32).unwrap();
    let v = f32(randn((1, 3, 8, 12), 6));
    let u = f32(randn((1, 3, 8, 12), 7));
    let (_, jtv) = net.denoise_vjp(&x, 0.7, &mut |_| Ok(v.clone())).unwrap();
    // Central differences at h and h/2 combined by Richardson extrapolation: the O(h²) truncation
    // error cancels, which a single difference at h = 1e-2 left at up to ~2e-3 relative for some
    // random weights (the weights are drawn afresh on every run).
    let central = |h: f64| {
        let plus = net
            .denoise(&(&x + u.affine(h, 0.0).unwrap()).unwrap(), 0.7)
            .unwrap();
        let minus = net
            .denoise(&(&x - u.affine(h, 0.0).unwrap()).unwrap(), 0.7)
            .unwrap();
        dot(&v, &(plus - minus).unwrap()) / (2.0 * h)
    };
    let fd = (4.0 * central(1e-2) - central(2e-2)) / 3.0;
    let ad = dot(&jtv, &u);
    eprintln!(
        "relative VJP error {:.2e}",
        (fd - ad).abs() / fd.abs().max(1.0)
    );
    // f32 forward passes: the central difference is good to ~1e-3 relative here.
    assert!(
        (fd - ad).abs() < 2e-3 * fd.abs().max(1.0),
        "⟨Jᵀv,u⟩ = {ad}, finite difference {fd}"
    );
}

#[test]
fn roles_are_enforced() {
    let prior = Network::new(
        random_model(&UNetConfig::tiny(), ModelKind::Prior)
            .build(&Device::Cpu)
            .unwrap(),
    );
    let eps = Network::new(
        random_model(&UNetConfig::tiny().with_condition(), ModelKind::Eps)
            .build(&Device::Cpu)
            .unwrap(),
    );
    let x = f32(randn((1, 3, 8, 8), 1));
    assert!(prior.denoise(&x, 1.0).is_ok());
    let e = Denoiser::denoise(&eps, &x, 1.0).unwrap_err().to_string();
    assert!(e.contains("EPS network"), "{e}");
}

/// Growing a trained network by the full-resolution head keeps its function exactly (the head's
/// last layer starts at zero), and the grown network is a valid weight file.
#[test]
fn adding_the_head_keeps_what_the_network_computes() {
    let cfg = UNetConfig {
        head: 0,
        ..UNetConfig::tiny()
    };
    let plain = random_model(&cfg, ModelKind::Prior);
    let grown = plain.with_head(8, 3).unwrap();
    assert_eq!(grown.config.head, 8);
    assert!(grown.with_head(8, 3).is_err(), "a second head is refused");
    let x = f32(randn((2, 3, 16, 16), 9));
    for s in [0.05, 1.0, 80.0] {
        let a = plain
            .build(&Device::Cpu)
            .unwrap()
            .forward(&x, &sig(2, s), None)
            .unwrap();
        let b = grown
            .build(&Device::Cpu)
            .unwrap()
            .forward(&x, &sig(2, s), None)
            .unwrap();
        assert!(max_abs_diff(&a, &b) < 1e-6, "σ = {s}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grown.safetensors");
    grown.save(&path).unwrap();
    assert_eq!(ModelFile::load(&path, &Device::Cpu).unwrap().config.head, 8);
}

/// The shipped architecture stored in half precision denoises like its f32 weights, at every
/// noise level the sampler visits: within 2·10⁻³ of the [-1, 1] range.
#[test]
fn half_precision_weight_files_denoise_like_f32() {
    let dir = tempfile::tempdir().unwrap();
    let model = random_model(&UNetConfig::default(), ModelKind::Prior);
    let path = dir.path().join("prior.safetensors");
    model.save(&path).unwrap();
    let size = std::fs::metadata(&path).unwrap().len() as usize;
    let f32_bytes: usize = model.tensors.values().map(|t| 4 * t.elem_count()).sum();
    assert!(
        size < f32_bytes * 6 / 10,
        "{size} bytes for {f32_bytes} bytes of f32"
    );
    let back = ModelFile::load(&path, &Device::Cpu).unwrap();
    let (full, half) = (
        model.build(&Device::Cpu).unwrap(),
        back.build(&Device::Cpu).unwrap(),
    );
    for sigma in [0.02, 0.3, 5.0, 80.0] {
        let x = f32(randn((1, 3, 32, 32), 9).affine(sigma, 0.0).unwrap());
        let a = full.forward(&x, &sig(1, sigma), None).unwrap();
        let b = half.forward(&x, &sig(1, sigma), None).unwrap();
        let d = max_abs_diff(&a, &b);
        eprintln!("σ = {sigma}: max |f32 − f16| = {d:.2e}");
        assert!(
            d <= 2e-3,
            "σ = {sigma}: half-precision weights move the output by {d}"
        );
    }
}

/// Timing the network operation by operation (`bench --profile`) changes nothing it computes,
/// and records the convolutions with their arithmetic.
#[test]
fn profiling_changes_no_output() {
    use eps_studio::denoiser::profile;
    let cfg = UNetConfig::tiny();
    let net = random_model(&cfg, ModelKind::Prior)
        .build(&Device::Cpu)
        .unwrap();
    let x = f32(randn((1, 3, 32, 32), 4));
    let plain = net.forward(&x, &sig(1, 0.7), None).unwrap();
    profile::enable(true);
    let timed = net.forward(&x, &sig(1, 0.7), None);
    let records = profile::take();
    profile::enable(false);
    assert_eq!(max_abs_diff(&timed.unwrap(), &plain), 0.0);
    assert!(
        records
            .iter()
            .any(|r| r.kind == "conv 3×3" && r.flops > 0.0 && r.seconds >= 0.0),
        "{records:?}"
    );
}

/// Four samples run as one batch through every layer (the convolutions' bands run across the
/// batch's images) and four samples run one at a time are the same samples, to float rounding.
#[test]
fn four_samples_in_one_batch_equal_four_samples_one_at_a_time() {
    use eps_studio::inverse::{LinearOperator, Problem};
    use eps_studio::sampler::{self, EpsConfig, ignore_progress};
    use std::sync::Arc;
    let eps = Network::new(
        random_model(&UNetConfig::tiny().with_condition(), ModelKind::Eps)
            .build(&Device::Cpu)
            .unwrap(),
    );
    let op: Arc<dyn LinearOperator> = Arc::new(random_mask((1, 1, 40, 40), 0.6, 3));
    let x0 = f32(randn((1, 3, 40, 40), 8));
    let problem = Problem::simulate(op, &x0, 0.05, 2).unwrap();
    let cfg = EpsConfig::default();
    let seeds = [3, 5, 8, 13];
    let batch = sampler::eps::sample(&eps, &problem, &seeds, &cfg, &mut ignore_progress).unwrap();
    for (i, &seed) in seeds.iter().enumerate() {
        let alone =
            sampler::eps::sample(&eps, &problem, &[seed], &cfg, &mut ignore_progress).unwrap();
        let diff = max_abs_diff(&alone.samples, &batch.samples.narrow(0, i, 1).unwrap());
        assert!(
            diff < 1e-4,
            "seed {seed}: batched and alone differ by {diff}"
        );
    }
    let spread = max_abs_diff(
        &batch.samples.narrow(0, 0, 1).unwrap(),
        &batch.samples.narrow(0, 1, 1).unwrap(),
    );
    assert!(spread > 1e-3, "different seeds gave the same sample");
}
