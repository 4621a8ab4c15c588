//! The sampler thread: a named background thread that owns the networks, runs restoration jobs
//! and streams every step back to the UI over bounded channels. The UI thread never blocks on it.

pub mod protocol;
mod run;

pub use protocol::{Command, Job, JobKind, Update};
pub use run::{Canceller, Worker};
