//! The `eps-studio` binary: parse the command line, run it, print any error.

use std::process::ExitCode;

use clap::Parser as _;
use eps_studio::cli::{Cli, error_line, run};

fn main() -> ExitCode {
    quiet_vulkan_device_select();
    eps_studio::heap::share_one_heap();
    eps_studio::heap::reuse_freed_blocks();
    match run(&Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Without a display, Mesa's implicit Vulkan layer `VK_LAYER_MESA_device_select` still tries to
/// connect to Wayland to find the default GPU, and libwayland prints "error: XDG_RUNTIME_DIR is
/// invalid or not set" to the terminal of a run that succeeds. With no display there is no
/// default GPU to find, so the layer is switched off (its documented `NODEVICE_SELECT`), unless
/// the user set that variable. wgpu still picks the adapter by its own power preference.
fn quiet_vulkan_device_select() {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if cfg!(target_os = "linux") && !has_display && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: first statement of `main`, before any thread exists, so nothing reads the
        // environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    }
}
