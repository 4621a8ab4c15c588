//! File work off the UI thread: decoding photos, encoding and writing results, autosave. A
//! 24-megapixel JPEG takes about a second to decode or encode; on the UI thread that second would
//! freeze the window.
//!
//! One named thread runs the tasks in order (so a save and the autosave after it never race), and
//! its answers are applied on the UI thread between frames. Dropping the handle finishes the
//! queued tasks — a save requested just before quitting still lands — and joins the thread.

use std::path::PathBuf;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::photo::Photo;

/// What a finished task reports to the UI thread.
#[derive(Debug)]
pub enum FileDone {
    /// A photo was read (or could not be).
    Opened {
        /// The file, or the name of dropped bytes.
        path: PathBuf,
        /// The photo; `photo.path` is `None` for dropped bytes.
        result: crate::Result<Photo>,
    },
    /// Files were written (or not): the line to show, and the names the task had reserved.
    Saved {
        /// What to tell the user, `Err` for a failure.
        message: Result<String, String>,
        /// Names reserved for this task, released now.
        reserved: Vec<PathBuf>,
        /// The folder to remember for the next dialog.
        folder: Option<PathBuf>,
    },
    /// The autosave was written (or not).
    Autosaved(crate::Result<()>),
    /// Last session's document, read back at start-up (`None`: nothing to reopen).
    Reopened(Option<super::document::Reopened>),
}

type Task = Box<dyn FnOnce() -> FileDone + Send>;

/// The file thread's handle.
pub struct FileThread {
    tasks: Option<Sender<Task>>,
    done: Receiver<FileDone>,
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl FileThread {
    /// Starts the thread; `waker` is called after every finished task so the UI repaints.
    pub fn spawn(waker: impl Fn() + Send + 'static) -> std::io::Result<Self> {
        let (task_tx, task_rx) = crossbeam_channel::unbounded::<Task>();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<FileDone>();
        let thread = std::thread::Builder::new()
            .name("eps-files".into())
            .spawn(move || {
                for task in task_rx {
                    // A panic inside a decoder or encoder becomes a message, not a dead thread.
                    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task))
                        .unwrap_or_else(|_| FileDone::Saved {
                            message: Err("a file task crashed; nothing was written".into()),
                            reserved: Vec::new(),
                            folder: None,
                        });
                    if done_tx.send(done).is_err() {
                        return;
                    }
                    waker();
                }
            })?;
        Ok(Self {
            tasks: Some(task_tx),
            done: done_rx,
            in_flight: 0,
            thread: Some(thread),
        })
    }

    /// Queues a task.
    pub fn run(&mut self, task: impl FnOnce() -> FileDone + Send + 'static) {
        if let Some(tx) = &self.tasks
            && tx.send(Box::new(task)).is_ok()
        {
            self.in_flight += 1;
        }
    }

    /// A finished task's answer, if any.
    pub fn try_recv(&mut self) -> Option<FileDone> {
        let done = self.done.try_recv().ok()?;
        self.in_flight = self.in_flight.saturating_sub(1);
        Some(done)
    }

    /// Whether tasks are queued or running.
    pub fn busy(&self) -> bool {
        self.in_flight > 0
    }
}

impl Drop for FileThread {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued, then end.
        self.tasks = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
