//! LPIPS against the LPIPS project's reference images and values, and the metric's basic
//! properties. The AlexNet weights ship in assets/; the VGG16 ones come from
//! scripts/fetch-lpips.sh (CI runs it and sets EPS_REQUIRE_LPIPS=1, so a missing file fails there).
#![allow(clippy::unwrap_used)]

use std::path::Path;

use candle_core::{Device, Tensor};
use eps_studio::eval::lpips::{Backbone, Lpips};

fn image(name: &str) -> Tensor {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/lpips")
        .join(name);
    let photo = eps_studio::photo::load(&path).unwrap();
    eps_studio::restore::to_tensor(&photo.pixels.rgb(), &Device::Cpu).unwrap()
}

fn network(backbone: Backbone) -> Option<Lpips> {
    match Lpips::locate_and_load(backbone, &Device::Cpu) {
        Ok(n) => Some(n),
        Err(e) => {
            assert!(
                std::env::var("EPS_REQUIRE_LPIPS").as_deref() != Ok("1"),
                "EPS_REQUIRE_LPIPS=1 but: {e}"
            );
            eprintln!("skipping {}: {e}", backbone.label());
            None
        }
    }
}

fn check_reference(backbone: Backbone, p0: f64, p1: f64) {
    let Some(net) = network(backbone) else { return };
    assert_eq!(net.backbone(), backbone);
    let (r, a, b) = (image("ex_ref.png"), image("ex_p0.png"), image("ex_p1.png"));
    let d0 = net.distance(&r, &a).unwrap()[0];
    let d1 = net.distance(&r, &b).unwrap()[0];
    eprintln!("{}: {d0:.4} {d1:.4}", backbone.label());
    assert!(
        (d0 - p0).abs() < 5e-4,
        "{}: ref–p0 {d0:.4}, expected {p0}",
        backbone.label()
    );
    assert!(
        (d1 - p1).abs() < 5e-4,
        "{}: ref–p1 {d1:.4}, expected {p1}",
        backbone.label()
    );
    // d(x, x) = 0 and symmetry, batched (one reference against a batch).
    let batch = Tensor::cat(&[&r, &a, &b], 0).unwrap();
    let self_d = net.distance(&batch, &batch).unwrap();
    assert!(self_d.iter().all(|&d| d.abs() < 1e-6), "{self_d:?}");
    let ab = net.distance(&r, &batch).unwrap();
    let ba = net.distance(&batch, &r).unwrap();
    for (x, y) in ab.iter().zip(&ba) {
        assert!((x - y).abs() < 1e-6, "symmetry: {x} vs {y}");
    }
    assert!(
        (ab[1] - d0).abs() < 1e-5 && (ab[2] - d1).abs() < 1e-5,
        "batching"
    );
}

#[test]
fn alexnet_matches_the_reference_values() {
    check_reference(Backbone::Alex, 0.722, 0.138);
}

#[test]
fn vgg16_matches_the_reference_values() {
    check_reference(Backbone::Vgg, 0.569, 0.422);
}

#[test]
fn bad_inputs_and_files_give_clear_errors() {
    let Some(net) = network(Backbone::Alex) else {
        return;
    };
    let tiny = Tensor::zeros((1, 3, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
    let err = net.distance(&tiny, &tiny).unwrap_err().to_string();
    assert!(err.contains("H, W ≥ 32"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not weights").unwrap();
    let err = Lpips::load(&junk, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("fetch-lpips.sh"), "{err}");
}
