//! One malloc heap for every thread of the process.
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
