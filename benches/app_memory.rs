//! Peak memory of the desktop app on a big photo: open a 6000×4000 JPEG, import a mask with one
//! hole, restore it with 4 samples, save everything, and read the process's peak resident memory
//! from the kernel (VmHWM, reset before each run). The default prior (the photo's own patches)
//! fills a 400×300 hole at the photo's resolution with its default steps; `EPS_BENCH_PRIOR=network`
//! runs the network (EPS, 4 steps) on a 150-pixel hole instead.
//!
//! The app runs headless (egui_kittest) with a renderer that drops texture uploads, as a GPU
//! renderer moves them out of the process; the display textures are at most 2048 pixels on a
//! side. Run with `cargo bench --bench app_memory` (Linux only). Target: ≤ 1 GB.

use std::path::Path;
use std::time::{Duration, Instant};

use eframe::egui;
use egui_kittest::{Harness, TestRenderer};
use eps_studio::app::{AppOptions, EpsApp};
use eps_studio::restore::{Models, Prior};
use eps_studio::worker::JobKind;

/// Hands every texture upload to nobody: the process keeps no copy, as with a GPU renderer.
struct Discard;

impl TestRenderer for Discard {
    fn handle_delta(&mut self, delta: &mut egui::TexturesDelta) {
        delta.clear();
    }

    fn render(
        &mut self,
        _ctx: &egui::Context,
        _output: &egui::FullOutput,
    ) -> Result<image::RgbaImage, String> {
        Err("this benchmark draws nothing".into())
    }
}

fn status(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn run_until(h: &mut Harness<'_, EpsApp>, what: &str, done: impl Fn(&EpsApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        if start.elapsed() > Duration::from_secs(1800) {
            eprintln!("timed out waiting for {what}");
            std::process::exit(1);
        }
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.step();
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks for the list of benchmarks; there is one, run by hand.
        println!("app_memory: bench");
        return;
    }
    // What the app's `main` does first: one malloc heap for all threads, freed blocks kept
    // for reuse during a job (src/heap.rs).
    eps_studio::heap::share_one_heap();
    eps_studio::heap::reuse_freed_blocks();
    if status("VmHWM:").is_none() || std::fs::write("/proc/self/clear_refs", "5").is_err() {
        eprintln!("app_memory reads its peak from /proc/self (Linux only)");
        std::process::exit(1);
    }
    let (w, h) = (6000_u32, 4000_u32);
    let dir = std::env::temp_dir().join(format!("eps-app-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let photo = dir.join("photo.jpg");
    let mask = dir.join("mask.png");
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            (((x / 37 + y / 53) % 7) * 36) as u8,
        ])
    })
    .save(&photo)
    .expect("writing the test photo");
    let network = std::env::var("EPS_BENCH_PRIOR").as_deref() == Ok("network");
    // Semi-axes of the elliptic hole.
    let (a, b) = if network {
        (75.0, 75.0)
    } else {
        (200.0, 150.0)
    };
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    image::GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = ((f64::from(x) - cx) / a, (f64::from(y) - cy) / b);
        image::Luma([if dx * dx + dy * dy <= 1.0 { 255 } else { 0 }])
    })
    .save(&mask)
    .expect("writing the test mask");

    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let models = Models::load(&assets, &candle_core::Device::Cpu).expect("the shipped networks");
    let before = status("VmRSS:").unwrap_or(0);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let options = AppOptions {
        open: Some(photo.clone()),
        models: Some(models),
        autosave_dir: Some(dir.join("autosave")),
        fresh_settings: true,
        ..Default::default()
    };
    let mut harness = Harness::builder()
        .with_size(egui::vec2(1400.0, 900.0))
        .renderer(Discard)
        .build_eframe(move |cc| {
            let mut app = EpsApp::new(cc, options);
            if network {
                app.settings.prior = Prior::Network;
                app.settings.steps = 4;
            }
            app.settings.samples = 4;
            app.settings.live_preview = false;
            app
        });
    // The peak of each stage, the peak reset between them.
    let mut stages = Vec::new();
    let mut stage = |name: &str| {
        stages.push((name.to_owned(), status("VmHWM:").unwrap_or(0)));
        let _ = std::fs::write("/proc/self/clear_refs", "5");
    };
    run_until(&mut harness, "the photo", |a| {
        a.photo.is_some() && !a.files_busy()
    });
    stage("open the photo");
    assert!(harness.state_mut().import_mask(&mask), "the mask imports");
    run_until(&mut harness, "the mask", |a| !a.files_busy());
    stage("import the mask");
    harness.state_mut().start(JobKind::Restore);
    run_until(&mut harness, "the restoration", |a| {
        a.running.is_none() && a.has_results()
    });
    stage("restore (4 samples)");
    let folder = harness.state_mut().save_all().expect("something to save");
    run_until(&mut harness, "the saves", |a| !a.files_busy());
    stage("save everything");
    let peak = stages.iter().map(|(_, p)| *p).max().unwrap_or(0);
    let samples = harness
        .state()
        .results
        .as_ref()
        .map_or(0, |r| r.samples.len());
    let saved = std::fs::read_dir(&folder).map_or(0, Iterator::count);
    drop(harness);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "app on a {w}×{h} JPEG, one {}×{} hole, {} prior, {samples} samples, {saved} files saved, {:.0} s:",
        2.0 * a,
        2.0 * b,
        if network { "network" } else { "patch" },
        started.elapsed().as_secs_f64()
    );
    println!("| stage | peak MB |\n|---|---|");
    for (name, p) in &stages {
        println!("| {name} | {:.0} |", *p as f64 / 1e6);
    }
    println!(
        "\npeak {:.0} MB ({:.2} of 1 GB); resident before opening the app {:.0} MB",
        peak as f64 / 1e6,
        peak as f64 / 1e9,
        before as f64 / 1e6
    );
}
