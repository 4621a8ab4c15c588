//! One malloc heap for every thread of the process, freed blocks kept for reuse while the work
//! runs (larger ones for training), and given back when it is done.
//!
//! glibc gives each thread that allocates its own heap ("arena") and keeps what a thread frees
//! in that thread's heap. The worker thread fills a hole with hundreds of megabytes of
//! temporaries, then the UI thread makes the full-size mean and uncertainty map: with two heaps
//! neither can reuse what the other freed, and the peak is the sum of both. On a 24-megapixel
//! photo with four samples the app peaked at 1.09 GB with a heap per thread and 0.91 GB with one
//! (`cargo bench --bench app_memory`, docs/bench-memory.md), at the same speed: the heavy loops
//! allocate their buffers before they start, not per pixel.

/// Makes every thread allocate from the main heap (glibc's `M_ARENA_MAX = 1`). Call it first in
/// `main`, before any thread starts; elsewhere (other C libraries) it does nothing. An
/// `MALLOC_ARENA_MAX` the user set in the environment wins.
pub fn share_one_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets an allocator parameter; it is called before other threads
        // exist, and M_ARENA_MAX with 1 is a documented, valid setting.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Keeps freed blocks up to 64 MiB in the heap for reuse (glibc's `M_MMAP_THRESHOLD` 64 MiB,
/// `M_TRIM_THRESHOLD` 256 MiB), instead of glibc's automatic thresholds, which mapped many of a
/// network pass's 4–16 MiB activations and band buffers afresh, to be faulted in and zeroed page
/// by page: `bench` spent 16–19 s of its 42–45 s in the kernel, and 6 s with these settings.
/// Larger buffers (whole-photo planes) are still mapped and unmapped. What the heap keeps is
/// given back after each job by [`give_back_free_memory`]. Call it in `main` after
/// [`share_one_heap`]; elsewhere (other C libraries) it does nothing;
/// `MALLOC_MMAP_THRESHOLD_` or `MALLOC_TRIM_THRESHOLD_` in the environment win.
pub fn reuse_freed_blocks() {
    set_thresholds(64 << 20, 256 << 20);
}

/// Returns the heap's free memory to the system (glibc's `malloc_trim`): the app's worker calls
/// it after each job, so what [`reuse_freed_blocks`] kept during a restoration is not held
/// while the app waits. Elsewhere it does nothing.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only releases free memory of the allocator's own heaps; it takes
    // the heaps' locks, so other threads may allocate meanwhile.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Keeps freed large blocks in the heap for reuse instead of returning them to the system
/// (glibc's `M_MMAP_THRESHOLD` 1 GiB, `M_TRIM_THRESHOLD` 2 GiB). A training step unfolds each
/// layer's whole batch (tens of megabytes) and its gradients; above glibc's largest automatic
/// threshold (32 MiB) every such buffer was a fresh mapping, faulted in and zeroed page by page,
/// every layer of every step. Kept, a training step of the shipped model took 0.95 s instead of
/// 1.27 s (`bench --train`, docs/bench-train.md). For training and its benchmark only: the app
/// keeps [`reuse_freed_blocks`]'s smaller thresholds and gives free memory back after each job.
/// Elsewhere (other C libraries) it does nothing; `MALLOC_MMAP_THRESHOLD_` or
/// `MALLOC_TRIM_THRESHOLD_` in the environment win.
pub fn keep_large_blocks() {
    set_thresholds(1 << 30, i32::MAX);
}

/// glibc's mmap and trim thresholds in bytes, unless the environment sets either; elsewhere
/// (other C libraries) nothing.
fn set_thresholds(mmap: i32, trim: i32) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none()
        && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none()
    {
        // SAFETY: `mallopt` only sets allocator parameters; both are documented settings, and
        // any non-negative `c_int` number of bytes is in their valid range.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap);
            libc::mallopt(libc::M_TRIM_THRESHOLD, trim);
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap, trim);
}
