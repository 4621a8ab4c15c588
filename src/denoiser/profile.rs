//! Per-operation timing of the network on the CPU (`eps-studio bench --profile`).
//!
//! Off unless a benchmark turns it on: each instrumented operation then costs one relaxed
//! atomic load. When on, every convolution (with its unfolding and matrix product
//! timed apart), fused activation, residual add, attention, resampling and layout change adds
//! a [`Record`] with its wall time, arithmetic and bytes moved. The network runs one operation
//! at a time, each parallel inside, so the records add up to the forward pass.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

/// One timed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// What kind of operation (`conv 3×3`, `im2col`, `GEMM`, `SiLU`, …).
    pub kind: &'static str,
    /// Its shape, e.g. `64→64 @ 128×128`.
    pub detail: String,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Floating-point operations (a multiply-add counts 2).
    pub flops: f64,
    /// Bytes read and written, counting each tensor once.
    pub bytes: f64,
}

/// Turns recording on or off (and clears what was recorded).
pub fn enable(on: bool) {
    lock().clear();
    ON.store(on, Ordering::Relaxed);
}

/// Whether recording is on.
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The records so far, taken out.
pub fn take() -> Vec<Record> {
    std::mem::take(&mut *lock())
}

fn lock() -> std::sync::MutexGuard<'static, Vec<Record>> {
    RECORDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Adds a record (when on).
pub fn record(
    kind: &'static str,
    detail: impl FnOnce() -> String,
    seconds: f64,
    flops: f64,
    bytes: f64,
) {
    if enabled() {
        lock().push(Record {
            kind,
            detail: detail(),
            seconds,
            flops,
            bytes,
        });
    }
}

/// Runs `f`, recording its time under `kind` (when on).
#[inline]
pub fn timed<T>(
    kind: &'static str,
    detail: impl FnOnce() -> String,
    flops: f64,
    bytes: f64,
    f: impl FnOnce() -> T,
) -> T {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let out = f();
    record(kind, detail, t.elapsed().as_secs_f64(), flops, bytes);
    out
}

/// The start of a phase timed by hand (`None` when off).
#[inline]
pub fn start() -> Option<Instant> {
    enabled().then(Instant::now)
}

/// Seconds since `start`, 0 when off.
#[inline]
pub fn since(start: Option<Instant>) -> f64 {
    start.map_or(0.0, |t| t.elapsed().as_secs_f64())
}

/// `[B, H, W, C]` as `C @ H×W` (`B×` in front when more than one), for records.
pub fn shape(t: &candle_core::Tensor) -> String {
    match t.dims4() {
        Ok((1, h, w, c)) => format!("{c} @ {h}×{w}"),
        Ok((b, h, w, c)) => format!("{b}× {c} @ {h}×{w}"),
        Err(_) => format!("{:?}", t.dims()),
    }
}

/// Bytes of a tensor's elements (f32).
pub fn bytes(t: &candle_core::Tensor) -> f64 {
    4.0 * t.elem_count() as f64
}
