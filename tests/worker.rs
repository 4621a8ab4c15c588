//! The sampler thread: streaming, cancellation within a step, and a crash inside a job reported
//! as a message while the thread keeps serving.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use eps_studio::backend::BackendChoice;
use eps_studio::denoiser::{EdmDenoiser, Network, UNetConfig};
use eps_studio::eval::restoration::MethodChoice;
use eps_studio::photo::RgbImage;
use eps_studio::restore::{Degradation, Models, Settings};
use eps_studio::worker::{Command, Job, JobKind, Update, Worker};

fn net(cfg: &UNetConfig) -> Network {
    let vm = VarMap::new();
    Network::new(
        EdmDenoiser::new(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), cfg).unwrap(),
    )
}

fn worker() -> Worker {
    let models = Models::new(
        Some(net(&UNetConfig::tiny())),
        Some(net(&UNetConfig::tiny().with_condition())),
        Device::Cpu,
    );
    Worker::spawn(Some(models), None, BackendChoice::Cpu, || {}).unwrap()
}

fn job(id: u64, y: RgbImage, steps: usize) -> Job {
    let (w, h) = (y.width, y.height);
    let mut fill = vec![false; w * h];
    fill[(h / 2) * w + w / 2] = true;
    Job {
        id,
        kind: JobKind::Restore,
        y: Arc::new(y),
        degradation: Arc::new(Degradation::Inpaint { fill }),
        settings: Settings {
            method: MethodChoice::Eps,
            steps: Some(steps),
            ..Settings::default()
        },
        seeds: vec![0, 1],
        truth: None,
    }
}

/// Updates until the job ends (finished, cancelled or failed).
fn until_end(w: &Worker) -> (Vec<Update>, Update) {
    let mut steps = Vec::new();
    loop {
        let u = w
            .recv_timeout(Duration::from_secs(120))
            .expect("the worker answers");
        match u {
            Update::Finished { .. } | Update::Cancelled { .. } | Update::Failed { .. } => {
                return (steps, u);
            }
            other => steps.push(other),
        }
    }
}

#[test]
fn streams_steps_then_finishes() {
    let mut w = worker();
    let id = w.next_id();
    w.send(Command::Run(job(id, RgbImage::new(32, 24), 5)));
    let (updates, end) = until_end(&w);
    let steps = updates
        .iter()
        .filter(|u| matches!(u, Update::Step { .. }))
        .count();
    assert_eq!(steps, 5, "one preview per step");
    match end {
        Update::Finished { restoration, .. } => assert_eq!(restoration.samples.len(), 2),
        other => panic!("expected a result, got {other:?}"),
    }
}

#[test]
fn cancel_stops_within_a_step() {
    let mut w = worker();
    let id = w.next_id();
    w.send(Command::Run(job(id, RgbImage::new(32, 24), 400)));
    // Wait for the first step, then cancel.
    loop {
        if let Some(Update::Step { .. }) = w.recv_timeout(Duration::from_secs(60)) {
            break;
        }
    }
    w.cancel_upto(id);
    let (updates, end) = until_end(&w);
    assert!(matches!(end, Update::Cancelled { .. }), "{end:?}");
    assert!(
        updates.len() < 20,
        "stopped promptly ({} more updates)",
        updates.len()
    );
}

#[test]
fn a_crash_inside_a_job_becomes_a_message_and_the_worker_lives_on() {
    let mut w = worker();
    // An image whose pixel buffer is missing: building a crop panics inside the job.
    let broken = RgbImage {
        width: 32,
        height: 24,
        data: Vec::new(),
    };
    let id = w.next_id();
    w.send(Command::Run(job(id, broken, 3)));
    match until_end(&w).1 {
        Update::Failed { message, .. } => {
            assert!(message.contains("stopped unexpectedly"), "{message}");
        }
        other => panic!("expected a failure message, got {other:?}"),
    }
    let id = w.next_id();
    w.send(Command::Run(job(id, RgbImage::new(32, 24), 3)));
    assert!(matches!(until_end(&w).1, Update::Finished { .. }));
}

#[test]
fn simulate_mode_scores_each_sample_with_lpips() {
    let mut w = worker();
    let id = w.next_id();
    let mut truth = RgbImage::new(48, 40);
    for (i, v) in truth.data.iter_mut().enumerate() {
        *v = ((i % 144) as f32 / 144.0).clamp(0.0, 1.0);
    }
    let mut j = job(id, truth.clone(), 3);
    j.truth = Some(Arc::new(truth));
    w.send(Command::Run(j));
    match until_end(&w).1 {
        Update::Finished { restoration, .. } => {
            assert_eq!(restoration.lpips.len(), 2, "one score per sample");
            assert!(
                restoration.lpips.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{:?}",
                restoration.lpips
            );
        }
        other => panic!("expected a result, got {other:?}"),
    }
}
