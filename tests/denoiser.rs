//! The U-Net denoiser: shapes, EPS widening, weight files, differentiability.
#![allow(clippy::unwrap_used)]

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use eps_studio::denoiser::weights::expected_shapes;
use eps_studio::denoiser::{EdmDenoiser, ModelFile, ModelKind, Network, UNetConfig};
use eps_studio::sampler::Denoiser;

/// A randomly initialised tiny network as a weight file.
fn random_model(cfg: &UNetConfig, kind: ModelKind) -> ModelFile {
    let varmap = VarMap::new();
    EdmDenoiser::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        cfg,
    )
    .unwrap();
    // Perturb every parameter so zero-initialised biases and norms are not special.
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let noise = randn((1, 1, 1, v.elem_count()), 100 + i as u64)
                .reshape(v.dims())
                .unwrap();
            let t = (v.as_tensor().to_dtype(DType::F64).unwrap()
                + noise.affine(0.05, 0.0).unwrap())
            .unwrap();
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

/// The EPS network starts as the prior network: the widened input weights for the observation are
/// zero, so at step 0 `D_eps(μ, obs, σ) = D_prior(μ, σ)` for any observation.
#[test]
fn widened_eps_network_reproduces_the_prior_exactly() {
    let cfg = UNetConfig::tiny();
    let prior_file = random_model(&cfg, ModelKind::Prior);
    let eps_file = prior_file.widen_to_eps().unwrap();
    assert_eq!(eps_file.kind, ModelKind::Eps);
    assert_eq!(eps_file.config.cond_channels, 3);
    let prior = prior_file.build(&Device::Cpu).unwrap();
    let eps = eps_file.build(&Device::Cpu).unwrap();
    let mu = f32(randn((3, 3, 16, 24), 2));
    let obs = f32(randn((3, 3, 16, 24), 3));
    for s in [0.01, 0.5, 80.0] {
        let a = prior.forward(&mu, &sig(3, s), None).unwrap();
        let b = eps.forward(&mu, &sig(3, s), Some(&obs)).unwrap();
        assert_eq!(
            to_vec(&a),
            to_vec(&b),
            "σ = {s}: widened network differs from the prior"
        );
    }
    // And the observation channels are live once their weights move.
    let mut moved = eps_file.clone();
    let w = moved.tensors["input.weight"].clone();
    moved
        .tensors
        .insert("input.weight".into(), (w + 0.01).unwrap());
    let c = moved.build(&Device::Cpu).unwrap();
    let o1 = c.forward(&mu, &sig(3, 0.5), Some(&obs)).unwrap();
    let o2 = c
        .forward(&mu, &sig(3, 0.5), Some(&obs.affine(-1.0, 0.0).unwrap()))
        .unwrap();
    assert!(max_abs_diff(&o1, &o2) > 1e-4);
    assert!(
        eps.forward(&mu, &sig(3, 0.5), None).is_err(),
        "EPS without observation must fail"
    );
    assert!(prior_file.widen_to_eps().unwrap().widen_to_eps().is_err());
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
    assert_eq!(to_vec(&a), to_vec(&b));

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
