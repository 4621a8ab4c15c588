//! The worker's driver loop.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::protocol::{Command, Job, Update};
use crate::backend::{BackendChoice, Compute};
use crate::restore::{self, Models};
use crate::sampler::Flow;

/// Updates waiting for the UI; step previews beyond this are dropped, never blocking the sampler.
const UPDATE_CAPACITY: usize = 64;

/// Cancels every job up to an id, from any thread; see [`Worker::canceller`].
#[derive(Debug, Clone)]
pub struct Canceller(Arc<AtomicU64>);

impl Canceller {
    /// Cancels every job with an id up to `id`, as [`Worker::cancel_upto`] does.
    pub fn cancel_upto(&self, id: u64) {
        self.0.fetch_max(id, Ordering::SeqCst);
    }
}

/// Handle to the sampler thread. Dropping it cancels any running job and joins the thread.
pub struct Worker {
    commands: Option<Sender<Command>>,
    updates: Receiver<Update>,
    cancel_upto: Arc<AtomicU64>,
    next_id: u64,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("next_id", &self.next_id)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Starts the thread. It first selects the compute backend for `backend`
    /// ([`Update::BackendChanged`]). `models` are used as given (tests); `None` loads the shipped
    /// weights on the thread, reporting [`Update::ModelsLoaded`] or [`Update::ModelsFailed`].
    /// `waker` is called after every update so the UI repaints.
    pub fn spawn(
        models: Option<Models>,
        weights: Option<PathBuf>,
        backend: BackendChoice,
        waker: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Command>();
        let (up_tx, up_rx) = crossbeam_channel::bounded::<Update>(UPDATE_CAPACITY);
        let cancel_upto = Arc::new(AtomicU64::new(0));
        let cancel = Arc::clone(&cancel_upto);
        let preloaded = models.is_some();
        let thread = std::thread::Builder::new()
            .name("eps-sampler".into())
            .spawn(move || {
                let mut state = Loop {
                    models,
                    compute: Compute::cpu(),
                    lpips: None,
                    updates: up_tx,
                    cancel_upto: cancel,
                    waker: Box::new(waker),
                };
                state.main(&cmd_rx);
            })?;
        let worker = Self {
            commands: Some(cmd_tx),
            updates: up_rx,
            cancel_upto,
            next_id: 1,
            thread: Some(thread),
        };
        worker.send(Command::SetBackend(backend));
        if !preloaded {
            worker.send(Command::LoadModels(weights));
        }
        Ok(worker)
    }

    /// Queues a command.
    pub fn send(&self, command: Command) {
        if let Some(tx) = &self.commands {
            // The thread only stops when this handle drops, so a failed send cannot happen
            // while the UI is alive; nothing to recover if it did.
            let _ = tx.send(command);
        }
    }

    /// A fresh job id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Cancels every job with an id up to `id` (the running one stops within one step).
    pub fn cancel_upto(&self, id: u64) {
        self.cancel_upto.fetch_max(id, Ordering::SeqCst);
    }

    /// A handle that cancels jobs from any thread (or from the waker) without the worker.
    pub fn canceller(&self) -> Canceller {
        Canceller(Arc::clone(&self.cancel_upto))
    }

    /// The next update, if any.
    pub fn try_recv(&self) -> Option<Update> {
        self.updates.try_recv().ok()
    }

    /// Waits up to `timeout` for the next update (tests and the CLI).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Update> {
        self.updates.recv_timeout(timeout).ok()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.cancel_upto.store(u64::MAX, Ordering::SeqCst);
        self.commands = None;
        // Unblock a worker waiting to deliver a final update.
        while self.updates.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Loop {
    models: Option<Models>,
    compute: Compute,
    /// LPIPS (AlexNet) for simulate mode: loaded on first use; `Some(None)` when unavailable.
    lpips: Option<Option<crate::eval::lpips::Lpips>>,
    updates: Sender<Update>,
    cancel_upto: Arc<AtomicU64>,
    waker: Box<dyn Fn() + Send>,
}

impl Loop {
    fn main(&mut self, commands: &Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            let alive = match command {
                Command::LoadModels(folder) => self.load(folder),
                Command::SetBackend(choice) => self.set_backend(choice),
                Command::Run(job) => self.run(*job),
            };
            // What the job freed goes back to the system while the app waits.
            crate::heap::give_back_free_memory();
            if !alive {
                break;
            }
        }
    }

    /// Times the networks where they are and reports it ([`Update::Speed`]); nothing when no
    /// network is loaded or the timing fails (the app then shows no time estimate).
    fn report_speed(&self) -> bool {
        match self.models.as_ref().map(Models::seconds_per_megapixel) {
            Some(Ok(secs_per_megapixel)) => self.deliver(Update::Speed { secs_per_megapixel }),
            _ => true,
        }
    }

    /// Delivers an update that must arrive; false when the UI is gone.
    fn deliver(&self, update: Update) -> bool {
        let ok = self.updates.send(update).is_ok();
        (self.waker)();
        ok
    }

    /// LPIPS of every sample against `truth`; empty when the AlexNet weights are unavailable.
    fn score_lpips(&mut self, r: &restore::Restoration, truth: &crate::photo::Pixels) -> Vec<f64> {
        use crate::eval::lpips::{Backbone, Lpips};
        let net = self.lpips.get_or_insert_with(|| {
            Lpips::locate_and_load(Backbone::Alex, &candle_core::Device::Cpu).ok()
        });
        let Some(net) = net else {
            return Vec::new();
        };
        r.samples
            .iter()
            .map(|s| crate::eval::lpips::photo_distance(net, s, truth).unwrap_or(f64::NAN))
            .collect()
    }

    fn set_backend(&mut self, choice: BackendChoice) -> bool {
        let (compute, mut notes) = Compute::select(choice);
        let same_device = compute.device().same_device(&self.compute.device().clone());
        self.compute = compute;
        if !same_device && let Some(models) = &self.models {
            // The networks live on a device; a new one needs them loaded again.
            let reloaded = match models.folder() {
                Some(folder) => Models::load(folder, self.compute.device()),
                None => Err(crate::Error::Unsupported(
                    "the networks were not loaded from files".into(),
                )),
            };
            match reloaded {
                Ok(m) => self.models = Some(m),
                Err(e) => {
                    notes.push(format!(
                        "cannot move the networks to {} ({e}); staying on the CPU",
                        self.compute.label()
                    ));
                    self.compute = Compute::cpu();
                }
            }
        }
        self.deliver(Update::BackendChanged {
            backend: self.compute.label().to_owned(),
            notes,
        }) && self.report_speed()
    }

    fn load(&mut self, folder: Option<PathBuf>) -> bool {
        let device = self.compute.device().clone();
        let result = Models::locate(folder.as_deref()).and_then(|dir| Models::load(&dir, &device));
        match result {
            Ok(models) => {
                let folder = models
                    .folder()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                self.models = Some(models);
                self.deliver(Update::ModelsLoaded {
                    folder,
                    backend: self.compute.label().to_owned(),
                }) && self.report_speed()
            }
            Err(e) => self.deliver(Update::ModelsFailed(e.to_string())),
        }
    }

    fn run(&mut self, job: Job) -> bool {
        let id = job.id;
        if id <= self.cancel_upto.load(Ordering::SeqCst) {
            return self.deliver(Update::Cancelled { id });
        }
        // A fill on the photo's own patches needs no network.
        let none = Models::new(None, None, candle_core::Device::Cpu);
        let models = match &self.models {
            Some(m) => m,
            None if !job.settings.needs_network(&job.degradation) => &none,
            None => {
                return self.deliver(Update::Failed {
                    id,
                    message: "the networks are not loaded; see the message above about the weights"
                        .into(),
                });
            }
        };
        if !self.deliver(Update::Started { id }) {
            return false;
        }
        let updates = self.updates.clone();
        let cancel = Arc::clone(&self.cancel_upto);
        let waker = &self.waker;
        let gpu = self.compute.gpu();
        let mut last = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
            restore::restore(
                models,
                gpu,
                &*job.y,
                &job.degradation,
                &job.settings,
                &job.seeds,
                &mut |p| {
                    let now = Instant::now();
                    let update = Update::Step {
                        id,
                        at: p.at,
                        rect: p.rect,
                        preview: p.preview.clone(),
                        step_secs: (now - last).as_secs_f64(),
                    };
                    last = now;
                    match updates.try_send(update) {
                        Ok(()) | Err(TrySendError::Full(_)) => waker(),
                        Err(TrySendError::Disconnected(_)) => return Flow::Cancel,
                    }
                    if id <= cancel.load(Ordering::SeqCst) {
                        Flow::Cancel
                    } else {
                        Flow::Continue
                    }
                },
            )
        }));
        let update = match result {
            Ok(Ok(mut restoration)) => {
                if let Some(truth) = &job.truth {
                    restoration.lpips = self.score_lpips(&restoration, truth);
                }
                if restoration.fell_back_to_cpu {
                    // A failed device stays failed: later runs go straight to the CPU.
                    self.compute = crate::backend::Compute::cpu();
                    if self.models.as_ref().is_some_and(|m| !m.device().is_cpu()) {
                        self.models = self
                            .models
                            .as_ref()
                            .and_then(|m| m.folder())
                            .and_then(|f| Models::load(f, &candle_core::Device::Cpu).ok());
                    }
                    self.deliver(Update::BackendChanged {
                        backend: self.compute.label().to_owned(),
                        notes: vec![
                            "the GPU failed, so the CPU is used until you choose a backend again"
                                .into(),
                        ],
                    });
                }
                Update::Finished { id, restoration }
            }
            Ok(Err(crate::Error::Cancelled)) => Update::Cancelled { id },
            Ok(Err(e)) => Update::Failed {
                id,
                message: e.to_string(),
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "unknown cause".into());
                Update::Failed {
                    id,
                    message: format!(
                        "the sampler stopped unexpectedly ({what}); your photo and mask are safe — try again, or lower the working size"
                    ),
                }
            }
        };
        self.deliver(update)
    }
}
