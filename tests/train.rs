//! Training smoke tests on a tiny network and synthetic photos: the loss goes down, the EPS stage
//! starts from the prior, and an interrupted run resumes bit for bit.
#![allow(clippy::unwrap_used)]

use std::cell::RefCell;

use candle_core::Device;
use eps_studio::denoiser::{ModelFile, ModelKind};
use eps_studio::train::data::PhotoSet;
use eps_studio::train::{Stage, StepLog, TrainConfig, train};

fn photos() -> PhotoSet {
    eps_studio::selftest::synthetic_photos()
}

fn config(stage: Stage, steps: usize) -> TrainConfig {
    eps_studio::selftest::tiny_training(stage, steps)
}

fn run(
    cfg: &TrainConfig,
    dir: &std::path::Path,
    init: Option<&ModelFile>,
) -> (ModelFile, Vec<StepLog>) {
    let logs = RefCell::new(Vec::new());
    let file = train(cfg, &photos(), dir, init, &Device::Cpu, &mut |l| {
        logs.borrow_mut().push(*l);
    })
    .unwrap();
    (file, logs.into_inner())
}

#[test]
fn training_lowers_the_loss_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, logs) = run(&config(Stage::Prior, 30), &dir.path().join("whole"), None);
    let csv = std::fs::read_to_string(dir.path().join("whole/loss.csv")).unwrap();
    let first_val: f64 = csv
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    let last_val = logs.last().unwrap().val_loss.unwrap();
    assert!(
        last_val < 0.8 * first_val,
        "validation loss {first_val} → {last_val}"
    );
    assert!(
        dir.path().join("whole/loss.svg").exists()
            && dir.path().join("whole/final.safetensors").exists()
    );

    // Stop at 20, then resume to 30: identical weights.
    let split = dir.path().join("split");
    run(&config(Stage::Prior, 20), &split, None);
    let (resumed, logs2) = run(&config(Stage::Prior, 30), &split, None);
    assert_eq!(
        logs2.first().unwrap().step,
        21,
        "resumed from the checkpoint"
    );
    for (name, t) in &whole.tensors {
        let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = resumed.tensors[name]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b, "{name} differs after resuming");
    }
    let rows = std::fs::read_to_string(split.join("loss.csv"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 1 + 1 + 30, "header, step 0 and one row per step");

    // The EPS stage starts from the prior, widened.
    let (eps, eps_logs) = run(
        &config(Stage::Eps, 10),
        &dir.path().join("eps"),
        Some(&whole),
    );
    assert_eq!((eps.kind, eps.config.cond_channels), (ModelKind::Eps, 4));
    assert!(eps_logs.iter().all(|l| l.train_loss.is_finite()));
    let back = ModelFile::load(&dir.path().join("eps/final.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(back.notes["eps_studio.prior.steps"], "30");
    assert_eq!(back.notes["eps_studio.eps.steps"], "10");

    // Continuing the EPS network adds to its steps and says so in its recipe.
    let (more, _) = run(
        &config(Stage::Eps, 5),
        &dir.path().join("eps-more"),
        Some(&eps),
    );
    assert_eq!(more.notes["eps_studio.eps.steps"], "15");
    assert_eq!(more.notes["eps_studio.prior.steps"], "30");
    let recipe = &more.notes["eps_studio.eps.recipe"];
    assert!(
        recipe.starts_with("10 steps; then 5 steps at lr "),
        "{recipe}"
    );
}

#[test]
fn bad_training_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = photos();
    let err = |cfg: &TrainConfig, init: Option<&ModelFile>| {
        train(cfg, &p, dir.path(), init, &Device::Cpu, &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    assert!(err(&config(Stage::Eps, 5), None).contains("--init"));
    assert!(
        err(
            &TrainConfig {
                crop: 30,
                ..config(Stage::Prior, 5)
            },
            None
        )
        .contains("multiple of 4")
    );
    assert!(
        err(
            &TrainConfig {
                batch: 0,
                ..config(Stage::Prior, 5)
            },
            None
        )
        .contains("positive")
    );
}

/// A wall-clock budget stops the run after the step that passes it, with a validation loss and a
/// checkpoint, and the next invocation goes on from there (what a GPU lease of a few minutes
/// relies on). A zero budget is passed by the first step.
#[test]
fn a_time_budget_stops_with_a_checkpoint_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let budgeted = TrainConfig {
        max_secs: Some(0.0),
        ..config(Stage::Prior, 30)
    };
    let (_, first) = run(&budgeted, dir.path(), None);
    assert_eq!(first.len(), 1, "one step, then the budget was spent");
    assert!(first[0].val_loss.is_some(), "validated before stopping");
    assert!(dir.path().join("final.safetensors").exists());
    let (_, second) = run(&budgeted, dir.path(), None);
    assert_eq!(second.iter().map(|l| l.step).collect::<Vec<_>>(), [2]);
    let (_, rest) = run(&config(Stage::Prior, 30), dir.path(), None);
    assert_eq!(rest.first().unwrap().step, 3);
    assert_eq!(rest.last().unwrap().step, 30);
}
