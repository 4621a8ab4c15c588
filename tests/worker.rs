//! The sampler thread: streaming, cancellation within a step, and a crash inside a job reported
//! as a message while the thread keeps serving.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use eps_studio::backend::BackendChoice;
use eps_studio::denoiser::{EdmDenoiser, Network, UNetConfig};
use eps_studio::photo::RgbImage;
use eps_studio::restore::MethodChoice;
use eps_studio::restore::{Degradation, Models, Settings};
use eps_studio::worker::{Command, Job, JobKind, Update, Worker};

/// A network with all-zero weights: deterministic (candle's own initialisation is unseeded), and
/// the worker's behaviour, not the pictures, is what is tested here.
fn net(cfg: &UNetConfig) -> Network {
    Network::new(EdmDenoiser::new(VarBuilder::zeros(DType::F32, &Device::Cpu), cfg).unwrap())
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
        y: Arc::new(y.into()),
        degradation: Arc::new(Degradation::inpaint(fill)),
        settings: Settings {
            method: MethodChoice::Eps,
            steps: Some(steps),
            prior: eps_studio::restore::Prior::Network,
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
    w.send(Command::Run(Box::new(job(id, RgbImage::new(32, 24), 5))));
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

/// Cancelling in the middle of the first of two regions stops the job at once: no further step,
/// no second region, a `Cancelled` answer. The cancel is issued by the waker at the third step,
/// so where it lands does not depend on timing; every wait is bounded.
#[test]
fn cancel_stops_within_a_step() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let armed: Arc<Mutex<Option<(eps_studio::worker::Canceller, u64)>>> = Arc::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let (a, c) = (Arc::clone(&armed), Arc::clone(&calls));
    let models = Models::new(
        Some(net(&UNetConfig::tiny())),
        Some(net(&UNetConfig::tiny().with_condition())),
        Device::Cpu,
    );
    let mut w = Worker::spawn(Some(models), None, BackendChoice::Cpu, move || {
        if let Some((canceller, id)) = a.lock().unwrap().as_ref()
            && c.fetch_add(1, Ordering::SeqCst) + 1 == 3
        {
            canceller.cancel_upto(*id);
        }
    })
    .unwrap();
    // Two holes far apart: two regions of 1000 steps each.
    let (width, height) = (160, 32);
    let mut fill = vec![false; width * height];
    fill[16 * width + 8] = true;
    fill[16 * width + 150] = true;
    let id = w.next_id();
    let mut j = job(id, RgbImage::new(width, height), 1000);
    j.degradation = Arc::new(Degradation::inpaint(fill));
    *armed.lock().unwrap() = Some((w.canceller(), id));
    w.send(Command::Run(Box::new(j)));
    let (updates, end) = until_end(&w);
    assert!(matches!(end, Update::Cancelled { .. }), "{end:?}");
    let steps: Vec<_> = updates
        .iter()
        .filter_map(|u| match u {
            Update::Step { at, .. } => Some(*at),
            _ => None,
        })
        .collect();
    assert!(!steps.is_empty() && steps.len() <= 3, "{steps:?}");
    assert!(
        steps
            .iter()
            .all(|at| at.region == 0 && at.regions == 2 && at.step <= 3),
        "ran past the cancel: {steps:?}"
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
    w.send(Command::Run(Box::new(job(id, broken, 3))));
    match until_end(&w).1 {
        Update::Failed { message, .. } => {
            assert!(message.contains("stopped unexpectedly"), "{message}");
        }
        other => panic!("expected a failure message, got {other:?}"),
    }
    let id = w.next_id();
    w.send(Command::Run(Box::new(job(id, RgbImage::new(32, 24), 3))));
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
    j.truth = Some(Arc::new(truth.into()));
    w.send(Command::Run(Box::new(j)));
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
