//! The command line, end to end.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn eps_studio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_eps-studio"))
}

#[test]
fn check_posterior_prints_the_table() {
    let out = eps_studio()
        .args([
            "check-posterior",
            "--size",
            "4",
            "--samples",
            "60",
            "--runs",
            "1",
            "--operator",
            "mask",
            "--operator",
            "blur",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| operator | method | NFE | MMD² to exact"),
        "{stdout}"
    );
    for row in [
        "exact vs exact",
        "EPS DPM++2M | 40",
        "EPS Heun | 39",
        "EPS mean | 1",
        "DPS ζ′=5.000 | 250",
        "DDNM+ | 100",
        "ΠGDM | 100",
        "DiffPIR | 100",
    ] {
        assert!(stdout.contains(row), "missing row '{row}' in\n{stdout}");
    }
    assert!(
        stdout.contains("mask")
            && stdout.contains("Gaussian blur")
            && !stdout.contains("super-resolution")
    );
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = eps_studio()
        .args(["check-posterior", "--operator", "fog"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown operator 'fog'"));
    let out = eps_studio()
        .args([
            "check-posterior",
            "--size",
            "5",
            "--operator",
            "sr2",
            "--samples",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines().any(|l| l.starts_with("error:")) && err.contains("divisible by 2"),
        "{err}"
    );
    let out = eps_studio()
        .args(["check-posterior", "--samples", "1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("at least 2 samples")
    );
}
