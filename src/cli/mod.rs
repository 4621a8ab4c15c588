//! The `eps-studio` command line: argument parsing and one module per subcommand. Errors become
//! `anyhow` errors with context here, at the edge.

pub mod bench;
mod bench_patch;
mod bench_profile;
pub mod check;
pub mod data;
pub mod diagnose;
pub mod eval;
pub mod restore;
pub mod train;

use clap::{Parser, Subcommand};

/// EPS Studio: restore photographs by exact posterior sampling. Without a subcommand it opens
/// the desktop app (optionally with a photo).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A photo to open in the app.
    pub photo: Option<std::path::PathBuf>,
    /// Folder with prior.safetensors and eps.safetensors (default: the shipped assets/).
    #[arg(long)]
    pub weights: Option<std::path::PathBuf>,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Prove the samplers on a Gaussian-mixture prior whose posterior is known exactly: prints
    /// operator × method × NFE × MMD² to exact samples × mean error × variance ratio × seconds.
    CheckPosterior(check::CheckArgs),
    /// Pack a folder of photos (from scripts/fetch-photos.sh) into one compact training file with
    /// a deterministic train/validation split.
    Data(data::DataArgs),
    /// Train the unconditional denoiser (stage prior) or fine-tune it into the EPS network
    /// (stage eps). Resumes from OUT/checkpoint when present.
    Train(train::TrainArgs),
    /// Benchmark EPS against the baselines on validation crops: PSNR, SSIM, pixel MMD², pixel CRPS,
    /// NFE and seconds, as a markdown table.
    Eval(eval::EvalArgs),
    /// Measure whether the networks generate photographs: denoising curve, unconditional samples,
    /// fills of object-sized holes, deblurring and super-resolution at photo scale, each against a
    /// classical reference; tables in markdown and pictures in PNG.
    Diagnose(diagnose::DiagnoseArgs),
    /// Restore one photo without the window: inpaint with a mask, deblur or super-resolve; writes
    /// the samples, their mean and an uncertainty map, and prints each sample's residual.
    Restore(restore::RestoreArgs),
    /// Measure speed: one forward pass, per-step cost of EPS/DPS/ΠGDM relative to a bare denoiser
    /// step (ratios from one run), and a full 20-NFE restoration.
    Bench(bench::BenchArgs),
    /// Check a compute device: the shipped networks, restorations and both training stages on
    /// it, each compared with the CPU or the measurement (exit status 1 if any check fails).
    Selftest(SelftestArgs),
}

/// Arguments of `eps-studio selftest`.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// The device to check.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
}

/// Runs `eps-studio selftest`.
fn selftest(args: &SelftestArgs) -> anyhow::Result<()> {
    let device = args.device.device()?;
    let mut failed = 0;
    for check in &crate::selftest::CHECKS {
        let t = std::time::Instant::now();
        match (check.run)(&device) {
            Ok(measured) => println!(
                "ok      {} ({:.1} s): {measured}",
                check.name,
                t.elapsed().as_secs_f64()
            ),
            Err(e) => {
                failed += 1;
                println!("FAILED  {}: {}", check.name, error_line(&e));
            }
        }
    }
    let total = crate::selftest::CHECKS.len();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {total} checks failed on {}",
        args.device.name()
    );
    println!("all {total} checks passed on {}", args.device.name());
    Ok(())
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> anyhow::Result<()> {
    match &cli.command {
        Some(Command::CheckPosterior(args)) => check::run(args),
        Some(Command::Data(args)) => data::run(args),
        Some(Command::Diagnose(args)) => diagnose::run(args),
        Some(Command::Train(args)) => train::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::Restore(args)) => restore::run(args),
        Some(Command::Selftest(args)) => selftest(args),
        None => {
            if let Some(photo) = &cli.photo {
                check_photo_argument(photo)?;
            }
            run_app(cli.photo.clone(), cli.weights.clone())
        }
    }
}

/// The subcommands' names, for the message about a misspelt one.
const SUBCOMMANDS: [&str; 8] = [
    "restore",
    "check-posterior",
    "data",
    "train",
    "eval",
    "diagnose",
    "bench",
    "selftest",
];

/// A photo to open must exist; a word that is neither a file nor a subcommand is most likely a
/// misspelt subcommand (`restorr`), so say that rather than "no display found".
pub fn check_photo_argument(photo: &std::path::Path) -> anyhow::Result<()> {
    if crate::fsutil::is_taken(photo) {
        return Ok(());
    }
    let word = photo.to_string_lossy();
    let close = SUBCOMMANDS
        .iter()
        .find(|s| edit_distance(s, &word) <= 2 || s.starts_with(word.as_ref()));
    match close {
        Some(s) => anyhow::bail!(
            "'{word}' is neither a subcommand nor an existing photo; did you mean `eps-studio {s}`? (see `eps-studio --help`)"
        ),
        None => anyhow::bail!(
            "'{word}' is neither a subcommand ({}) nor an existing photo",
            SUBCOMMANDS.join(", ")
        ),
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != *cb)).min(up + 1).min(row[j] + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// An error and its causes on one line, each cause once: library errors already include their
/// cause in their own message (`photo.jpg: No such file or directory`), so a cause whose text is
/// already shown is not repeated.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Without the `gui` feature there is no window to open.
#[cfg(not(feature = "gui"))]
pub fn run_app(
    _photo: Option<std::path::PathBuf>,
    _weights: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build of EPS Studio is the command line only (built without the gui feature); \
         restore with `eps-studio restore --input photo.jpg --mask mask.png --out results/`, \
         see `eps-studio --help`"
    )
}

/// Opens the desktop window.
#[cfg(feature = "gui")]
pub fn run_app(
    photo: Option<std::path::PathBuf>,
    weights: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let has_display = ["DISPLAY", "WAYLAND_DISPLAY", "WAYLAND_SOCKET"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if cfg!(target_os = "linux") && !has_display {
        anyhow::bail!(
            "no display found (neither DISPLAY nor WAYLAND_DISPLAY is set), so the window cannot open. \
             Run it inside a desktop session, or restore from the terminal with \
             `eps-studio restore --input photo.jpg --mask mask.png --out results/`"
        );
    }
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("EPS Studio")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "eps-studio",
        options,
        Box::new(move |cc| {
            Ok(Box::new(crate::app::EpsApp::new(
                cc,
                crate::app::AppOptions {
                    open: photo,
                    weights,
                    ..Default::default()
                },
            )))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the window could not start: {e}"))
}

/// Where `train`, `eval` and `bench` run the networks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// The CPU.
    #[default]
    Cpu,
    /// candle's CUDA device 0: a build with `--features cuda` on a machine with an NVIDIA GPU
    /// and its driver (scripts/build-cuda.sh).
    Cuda,
}

impl DeviceArg {
    /// `"the CPU"` or `"CUDA"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "the CPU",
            Self::Cuda => "CUDA",
        }
    }

    /// The candle device, or a message saying why CUDA cannot be used (an explicit request is
    /// never quietly moved to the CPU).
    pub fn device(self) -> anyhow::Result<candle_core::Device> {
        match self {
            Self::Cpu => Ok(candle_core::Device::Cpu),
            Self::Cuda => crate::backend::cuda_device().map_err(|why| {
                anyhow::anyhow!(
                    "--device cuda: {}; or pass --device cpu",
                    why.trim_end_matches("; using the CPU")
                )
            }),
        }
    }
}

/// Parses the `--solver` option of `restore` and `diagnose`.
fn parse_solver(s: Option<&str>) -> anyhow::Result<Option<crate::sampler::Solver>> {
    s.map(|s| {
        crate::sampler::Solver::parse(s)
            .ok_or_else(|| anyhow::anyhow!("unknown solver '{s}'; use euler, heun or dpm2m"))
    })
    .transpose()
}

/// The patch prior's settings on the command line (each unset one keeps its default).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PatchArgs {
    /// Patch prior: patch side in pixels (odd).
    #[arg(long)]
    pub patch_size: Option<usize>,
    /// Patch prior: KDE bandwidth τ in [-1, 1] units.
    #[arg(long)]
    pub tau: Option<f64>,
    /// Patch prior: τ follows the noise level, τ(σ) = min(τ, c·σ); 0 keeps τ fixed.
    #[arg(long)]
    pub tau_per_sigma: Option<f64>,
    /// Patch prior: width of the Gaussian window over overlapping estimates, relative to the
    /// patch's half-width ("inf": a uniform average).
    #[arg(long)]
    pub window: Option<f64>,
    /// Patch prior: the pyramid halves until the hole's longer side is at most this.
    #[arg(long)]
    pub coarse_hole: Option<usize>,
    /// Patch prior: known context around a hole (the bank's source), as a multiple of the
    /// hole's longer side.
    #[arg(long)]
    pub context: Option<f64>,
    /// Patch prior: most context around a hole, in pixels.
    #[arg(long)]
    pub max_context: Option<usize>,
    /// Patch prior: most pyramid levels (1: the crop's own size only).
    #[arg(long)]
    pub levels: Option<usize>,
    /// Patch prior: fewest windows of known pixels a coarser level needs (fewer and the
    /// pyramid stops at the finer level; 64 or more).
    #[arg(long)]
    pub layout_windows: Option<usize>,
    /// Patch prior: fraction of the crop's pixels under a coarser level's pixel that must be
    /// known for it to be known (1: any hole pixel below makes it a hole).
    #[arg(long)]
    pub known_fraction: Option<f64>,
    /// Patch prior: on coarser levels τ rises to this multiple of the contrast of the ring
    /// around the hole, where larger (0 to 1; 0, the default, keeps τ at every level).
    #[arg(long)]
    pub ring_tau: Option<f64>,
    /// Patch prior: how far (pixels) each finer level's field searches around the finer
    /// versions of the coarser level's matches (0: the whole bank).
    #[arg(long)]
    pub fine_radius: Option<usize>,
    /// Patch prior: sampler steps of each finer level.
    #[arg(long)]
    pub fine_steps: Option<usize>,
    /// Patch prior: noise level each finer level starts from (above 0.01, at most 1; 0.2 by
    /// default; a level with strong detail of its own from up to twice it, see
    /// --fine-detail; the posterior mean's draws from twice as much again, at most 1).
    #[arg(long)]
    pub fine_sigma: Option<f64>,
    /// Patch prior: a finer level whose own detail (RMS of what it adds to its coarser level)
    /// is above this starts from proportionally more noise, at most twice the fine sigma
    /// (0 to 1; 0.054 by default; 0: every finer level starts from the fine sigma).
    #[arg(long)]
    pub fine_detail: Option<f64>,
    /// Patch prior: standard deviation of the constant the prior may add to each colour
    /// channel of a window (a local change of brightness and colour, [-1, 1] units; 0: none).
    #[arg(long)]
    pub shift: Option<f64>,
    /// Patch prior: bank search, exact, field or auto (exact at high σ and on small banks).
    #[arg(long)]
    pub search: Option<String>,
    /// Patch prior: neighbours kept per query by the PatchMatch field.
    #[arg(long)]
    pub neighbours: Option<usize>,
    /// Patch prior: the bank's non-local-means cleaning at this multiple of the estimated noise.
    #[arg(long)]
    pub clean_strength: Option<f64>,
    /// Patch prior: add the known windows' mirror images to the bank.
    #[arg(long)]
    pub mirror: bool,
    /// Patch prior: add the photo turned by 180° to the bank: auto (where the windows around
    /// the hole look alike either way up, e.g. a shadow or a blurred background), never or
    /// always.
    #[arg(long, value_name = "WHEN")]
    pub turn: Option<String>,
    /// Patch prior: start the coarsest level from a smooth layout with this much noise
    /// instead of pure noise ("none": pure noise from σmax).
    #[arg(long)]
    pub coarse_start: Option<String>,
    /// Patch prior: how the coarsest level's first guess continues the hole's surroundings:
    /// transport (coherence transport along the edges around it; the default) or biharmonic
    /// (smooth).
    #[arg(long, value_name = "HOW")]
    pub layout: Option<String>,
    /// Patch prior: sampler steps of the coarsest level.
    #[arg(long)]
    pub coarse_steps: Option<usize>,
    /// Patch prior: weight of the coarser levels' detail channel (the spread of the finest
    /// pixels under each coarse pixel) in the patch distance; 0 leaves it out.
    #[arg(long)]
    pub detail_weight: Option<f64>,
    /// Patch prior: keep the bank's noise (no denoising of the known pixels).
    #[arg(long)]
    pub raw_bank: bool,
    /// Patch prior: finer levels start from the bilinear upsampling of the coarser sample
    /// instead of the finer copies of its patches.
    #[arg(long)]
    pub bilinear: bool,
    /// Patch prior: lay each sample out at the deepest level only, instead of also one level
    /// finer and keeping the more coherent of the two (half the work).
    #[arg(long)]
    pub one_depth: bool,
}

impl PatchArgs {
    /// The pyramid settings these arguments ask for, checked.
    pub fn config(&self) -> anyhow::Result<crate::prior::patch::PyramidConfig> {
        use crate::prior::patch::{FieldSearch, PyramidConfig, Search};
        let mut cfg = PyramidConfig::default();
        if let Some(p) = self.patch_size {
            cfg.patch.patch = p;
        }
        if let Some(t) = self.tau {
            cfg.patch.tau = t;
        }
        if let Some(c) = self.tau_per_sigma {
            cfg.patch.tau_per_sigma = c;
        }
        if let Some(w) = self.window {
            cfg.patch.window = w;
        }
        if let Some(v) = self.shift {
            cfg.patch.shift = v;
        }
        if let Some(s) = self.coarse_hole {
            cfg.coarse_hole = s;
        }
        if let Some(c) = self.context {
            cfg.context = c;
        }
        if let Some(m) = self.max_context {
            cfg.max_context = m;
        }
        if let Some(l) = self.levels {
            cfg.max_levels = l;
        }
        if let Some(n) = self.layout_windows {
            cfg.layout_windows = n;
        }
        if let Some(f) = self.known_fraction {
            cfg.known_fraction = f;
        }
        if let Some(r) = self.ring_tau {
            cfg.ring_tau = r;
        }
        if let Some(r) = self.fine_radius {
            cfg.fine_radius = r;
        }
        if let Some(n) = self.fine_steps {
            cfg.fine.steps = n;
        }
        if let Some(s) = self.fine_sigma {
            cfg.fine.schedule.sigma_max = s;
        }
        if let Some(d) = self.fine_detail {
            cfg.fine_detail = d;
        }
        let field = |k: Option<usize>| FieldSearch {
            k: k.unwrap_or(FieldSearch::default().k),
            ..FieldSearch::default()
        };
        match (self.search.as_deref(), &mut cfg.patch.search) {
            (None, Search::Auto { field: f, .. }) => *f = field(self.neighbours),
            (None, _) => {}
            (Some("exact"), s) => *s = Search::Exact,
            (Some("field"), s) => *s = Search::Field(field(self.neighbours)),
            (Some("auto"), s) => {
                *s = Search::Auto {
                    field: field(self.neighbours),
                    exact_above: 2.0,
                    exact_budget: 2_000_000,
                };
            }
            (Some(other), _) => anyhow::bail!("unknown search '{other}'; use exact, field or auto"),
        }
        cfg.mirror = self.mirror;
        if let Some(t) = &self.turn {
            cfg.turn = t.parse()?;
        }
        if let Some(l) = &self.layout {
            cfg.smooth = l.parse()?;
        }
        if self.one_depth {
            cfg.choose_depth = false;
        }
        if let Some(c) = self.clean_strength {
            cfg.clean_strength = c;
        }
        cfg.clean_bank = !self.raw_bank;
        if self.bilinear {
            cfg.upsampling = crate::prior::patch::pyramid::Upsampling::Bilinear;
        }
        if let Some(n) = self.coarse_steps {
            cfg.coarse.steps = n;
        }
        if let Some(w) = self.detail_weight {
            cfg.detail_weight = w;
        }
        match self.coarse_start.as_deref() {
            None => {}
            Some("none") => cfg.coarse_start = None,
            Some(v) => {
                cfg.coarse_start = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s > 0.0)
                        .ok_or_else(|| {
                            anyhow::anyhow!("--coarse-start takes a positive σ or none")
                        })?,
                );
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }
}
