//! The self-test checks (`eps_studio::selftest`) on every device this build has. `cargo test
//! --test device` runs each on the CPU; a build with `--features cuda` also runs it on CUDA
//! device 0. `eps-studio selftest --device cuda` runs the same bodies from the shipped binary
//! (scripts/gpu-run.sh does, on a GPU machine).
//!
//! Without an NVIDIA driver the CUDA variants print why and pass, unless `EPS_REQUIRE_CUDA=1`,
//! where a missing device fails them.
#![allow(clippy::unwrap_used)]

use candle_core::Device;

/// `test_device!(body)` makes `body::cpu` and, in a `cuda` build, `body::cuda`: one body, every
/// device.
macro_rules! test_device {
    ($body:ident) => {
        mod $body {
            #[test]
            fn cpu() {
                super::check(eps_studio::selftest::$body, &candle_core::Device::Cpu);
            }

            #[cfg(feature = "cuda")]
            #[test]
            fn cuda() {
                if let Some(device) = super::cuda_device() {
                    super::check(eps_studio::selftest::$body, &device);
                }
            }
        }
    };
}

test_device!(shipped_networks_agree_with_the_cpu);
test_device!(restorations_agree_with_the_cpu_and_the_measurement);
test_device!(eps_fills_a_hole_better_than_grey);
test_device!(training_lowers_the_loss);

fn check(body: fn(&Device) -> anyhow::Result<String>, device: &Device) {
    match body(device) {
        Ok(measured) => eprintln!("{measured}"),
        Err(e) => panic!("{e:#}"),
    }
}

/// CUDA device 0, or `None` with the reason printed (a failure where `EPS_REQUIRE_CUDA=1`).
#[cfg(feature = "cuda")]
fn cuda_device() -> Option<Device> {
    match eps_studio::backend::cuda_device() {
        Ok(device) => Some(device),
        Err(why) if std::env::var_os("EPS_REQUIRE_CUDA").is_some_and(|v| v == "1") => {
            panic!("EPS_REQUIRE_CUDA=1 but {why}")
        }
        Err(why) => {
            eprintln!("skipped on CUDA: {why}");
            None
        }
    }
}

/// Asked for CUDA where there is none, `selftest` fails and says why: it never passes on the
/// CPU in the GPU's place.
#[test]
fn selftest_on_a_missing_gpu_fails_and_says_why() {
    if eps_studio::backend::cuda_device().is_ok() {
        return;
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_eps-studio"))
        .args(["selftest", "--device", "cuda"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--device cuda") && err.contains("--device cpu"),
        "{err}"
    );
}
