//! Random and mutated input to every decoder and parser, and random values to validation: an
//! error or a valid result, never a panic or an abort. Case counts are bounded so `cargo test`
//! stays quick; `PROPTEST_CASES=10000 cargo test --test fuzz` searches longer.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::OnceLock;

use candle_core::Device;
#[cfg(feature = "gui")]
use eps_studio::app::AppSettings;
use eps_studio::denoiser::ModelFile;
use eps_studio::restore::MethodChoice;
use eps_studio::restore::{BlurSpec, Degradation, Settings};
use eps_studio::{limits, photo};
use proptest::prelude::*;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

fn asset(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// Small valid files of every format the app reads, to mutate.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let img = image::RgbImage::from_fn(24, 16, |x, y| {
            image::Rgb([(x * 10) as u8, (y * 15) as u8, ((x + y) * 5) as u8])
        });
        let mut out = Vec::new();
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::Jpeg,
            image::ImageFormat::Tiff,
            image::ImageFormat::WebP,
        ] {
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            out.push(bytes);
        }
        // A real camera JPEG with EXIF and an ICC profile.
        out.push(asset("assets/samples/ladybird.jpg"));
        out
    })
}

/// A tiny valid weight file, to mutate.
fn weight_seed() -> &'static [u8] {
    static SEED: OnceLock<Vec<u8>> = OnceLock::new();
    SEED.get_or_init(|| {
        use candle_nn::{VarBuilder, VarMap};
        use eps_studio::denoiser::{EdmDenoiser, ModelKind, UNetConfig};
        let cfg = UNetConfig::tiny();
        let vm = VarMap::new();
        EdmDenoiser::new(
            VarBuilder::from_varmap(&vm, candle_core::DType::F32, &Device::Cpu),
            &cfg,
        )
        .unwrap();
        let tensors = vm
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().zeros_like().unwrap()))
            .collect();
        ModelFile {
            kind: ModelKind::Prior,
            config: cfg,
            tensors,
            notes: Default::default(),
        }
        .to_bytes()
        .unwrap()
    })
}

/// A seed file with some bytes overwritten, some cut or some inserted.
fn mutated(seed: &[u8]) -> impl Strategy<Value = Vec<u8>> + use<> {
    let seed = seed.to_vec();
    let n = seed.len();
    (
        prop::collection::vec((0..n, any::<u8>()), 1..8),
        prop::option::of(0..n),
        prop::option::of((0..n, prop::collection::vec(any::<u8>(), 1..64))),
    )
        .prop_map(move |(flips, cut, insert)| {
            let mut b = seed.clone();
            for (i, v) in flips {
                b[i] = v;
            }
            if let Some((at, extra)) = insert {
                b.splice(at..at, extra);
            }
            if let Some(c) = cut {
                b.truncate(c.min(b.len()));
            }
            b
        })
}

fn any_seed_mutated() -> impl Strategy<Value = Vec<u8>> {
    (0..seeds().len()).prop_flat_map(|i| mutated(&seeds()[i]))
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn photo_decoder_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = photo::decode(&bytes, Path::new("random"));
    }

    #[test]
    fn photo_and_mask_decoders_never_panic_on_damaged_files(bytes in any_seed_mutated()) {
        if let Ok(p) = photo::decode(&bytes, Path::new("mutated")) {
            let rgb = p.pixels.rgb();
            prop_assert_eq!(rgb.data.len(), p.width() * p.height() * 3);
            prop_assert!(rgb.data.iter().all(|v| (0.0..=1.0).contains(v)));
            let mask = photo::mask_from_photo(&p);
            prop_assert_eq!(mask.len(), p.width() * p.height());
        }
    }

    #[test]
    fn weight_files_never_panic_when_damaged(bytes in mutated(weight_seed())) {
        if let Ok(f) = ModelFile::from_bytes(&bytes, &Device::Cpu) {
            prop_assert!(f.config.weight_count() <= limits::MAX_PARAMETERS);
        }
    }

    #[test]
    fn blur_specs_parse_or_are_refused(s in "(gaussian|motion|box|)[:]?[-0-9.e,inftyNa ]{0,16}") {
        if let Ok(spec) = BlurSpec::parse(&s) {
            let k = spec.kernel().unwrap();
            prop_assert!(k.width() <= 151 && k.height() <= 151);
            prop_assert_eq!(k.width(), spec.kernel_side().unwrap());
        }
    }

    #[test]
    fn validation_accepts_only_what_can_run(
        steps in prop::option::of(any::<usize>()),
        sigma_y in prop_oneof![any::<f64>(), -1.0..2.0f64],
        work_side in any::<u16>(),
        samples in 0usize..200,
        w in 0usize..600,
        h in 0usize..600,
        factor in 0usize..12,
        sigma in prop_oneof![any::<f64>(), 0.0..40.0f64],
    ) {
        let settings = Settings {
            method: MethodChoice::Eps,
            steps,
            sigma_y,
            work_side: usize::from(work_side),
            ..Settings::default()
        };
        if let Ok((checked, _)) = settings.checked() {
            prop_assert!(checked.sigma_y >= limits::SIGMA_Y_FLOOR && checked.sigma_y <= limits::SIGMA_Y_MAX);
            prop_assert!(steps.is_none_or(|s| (1..=limits::MAX_STEPS).contains(&s)));
            let _ = limits::samples(samples);
        }
        for d in [
            Degradation::SuperRes { factor },
            Degradation::Deblur(BlurSpec::Gaussian { sigma }),
            Degradation::inpaint(vec![true; w.min(64) * h.min(64)]),
        ] {
            if d.validate(w, h).is_ok()
                && let Degradation::Deblur(spec) = &d
            {
                let side = spec.kernel_side().unwrap();
                prop_assert!(side <= w && side <= h);
            }
            let _ = d.validate_simulation(w, h);
        }
    }

    #[cfg(feature = "gui")]
    #[test]
    fn remembered_settings_are_brought_into_range(json in settings_json()) {
        if let Ok(mut s) = serde_json::from_str::<AppSettings>(&json) {
            s.sanitize();
            prop_assert!(s.blur().validate().is_ok());
            prop_assert!(limits::sr_factor(s.sr_factor).is_ok());
            prop_assert!(limits::samples(s.samples).is_ok());
            prop_assert!(s.restore_settings(s.method).checked().is_ok());
        }
    }

    #[cfg(feature = "gui")]
    #[test]
    fn autosave_records_never_panic(json in prop::collection::vec(any::<u8>(), 0..256)) {
        let dir = std::env::temp_dir().join(format!("eps-fuzz-autosave-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("document.json"), &json).unwrap();
        let _ = eps_studio::app::Autosave::new(dir.clone()).load();
    }
}

/// Settings files with absurd numbers where numbers belong.
#[cfg(feature = "gui")]
fn settings_json() -> impl Strategy<Value = String> {
    let num = prop_oneof![
        Just("1e308".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("18446744073709551615".to_owned()),
        any::<i32>().prop_map(|v| v.to_string()),
        any::<f32>().prop_map(|v| format!("{v:e}")),
    ];
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "blur_sigma",
                "motion_length",
                "motion_angle",
                "sr_factor",
                "steps",
                "sigma_y",
                "samples",
                "work_side",
                "brush_radius",
                "jpeg_quality",
                "seed",
            ]),
            num,
        ),
        0..6,
    )
    .prop_map(|fields| {
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\": {v}"))
            .collect();
        format!("{{{}}}", body.join(", "))
    })
}
