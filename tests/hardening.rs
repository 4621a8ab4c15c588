//! Bad input against the command line: every case is refused with one clear `error:` line (what
//! was wrong, what to do) and exit status 1, before any long work — never a panic (101), an abort
//! (134), a hang, a replaced file or garbage reported as a success.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn eps_studio() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_eps-studio"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("eps-hardening-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
    fn s(&self, p: &str) -> String {
        self.join(p).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A smooth test photo with some structure.
fn write_photo(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            if (x / 8 + y / 8) % 2 == 0 { 200 } else { 60 },
        ])
    })
    .save(path)
    .unwrap();
}

fn write_mask(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if (10..20).contains(&x) && (10..20).contains(&y) {
            255
        } else {
            0
        }])
    })
    .save(path)
    .unwrap();
}

fn run(args: &[&str]) -> Output {
    eps_studio().args(args).output().unwrap()
}

/// Exit status 1 with exactly one `error:` line that contains every one of `needles`.
fn refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a refusal, got {:?}:\n{err}",
        out.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
}

#[test]
fn absurd_parameters_are_refused_with_their_range() {
    let d = Dir::new("params");
    write_photo(&d.join("p.png"), 48, 48);
    write_mask(&d.join("m.png"), 48, 48);
    let (p, m, o) = (d.s("p.png"), d.s("m.png"), d.s("out"));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--simulate", "--sr", "0"],
            vec!["super-resolution factor", "2, 4 or 8"],
        ),
        (vec!["--blur", "gaussian:1e9"], vec!["0.1 to 25"]),
        (vec!["--blur", "gaussian:1e5"], vec!["0.1 to 25"]),
        (
            vec!["--simulate", "--blur", "gaussian:1000"],
            vec!["0.1 to 25"],
        ),
        (vec!["--blur", "motion:1e9,45"], vec!["1 to 151"]),
        (vec!["--blur", "motion:9,inf"], vec!["angle"]),
        (vec!["--mask", &m, "--samples", "1000000"], vec!["1 to 64"]),
        (vec!["--mask", &m, "--samples", "0"], vec!["1 to 64"]),
        (vec!["--mask", &m, "--steps", "1000000"], vec!["1 to 1000"]),
        (
            vec!["--mask", &m, "--work-side", "100000"],
            vec!["32 to 1024"],
        ),
        (
            vec!["--blur", "gaussian:1", "--sigma-y", "-1"],
            vec!["σ_y", "0 to 1"],
        ),
        (
            vec!["--blur", "gaussian:1", "--sigma-y", "NaN"],
            vec!["σ_y"],
        ),
        // The kernel is larger than the photo: width×height order, like every other size.
        (vec!["--blur", "gaussian:10"], vec!["61×61", "48×48"]),
        (vec!["--mask", &m, "--quality", "0"], vec!["1 to 100"]),
    ];
    for (extra, needles) in cases {
        let mut args = vec!["restore", "--input", &p, "--out", &o];
        args.extend(extra.iter().copied());
        let out = run(&args);
        refused(&out, &needles);
        assert!(
            !d.join("out").join("p.sample-0.png").exists(),
            "{extra:?} wrote a result"
        );
    }
    for (args, needles) in [
        (
            vec!["check-posterior", "--size", "0"],
            vec!["--size", "2 to 64"],
        ),
        (
            vec!["check-posterior", "--components", "0"],
            vec!["--components", "1 to 64"],
        ),
        (vec!["bench", "--size", "0"], vec!["--size", "8 to 4096"]),
        (vec!["bench", "--batch", "100000"], vec!["--batch"]),
    ] {
        refused(&run(&args), &needles);
    }
}

/// Deblurring runs on the photo's own patches by default; a photo whose shrunk copy holds no
/// patch is refused before any work, with the way out (the network prior), which then works.
#[test]
fn a_photo_too_small_to_deblur_from_its_own_patches_is_refused_naming_the_network() {
    let d = Dir::new("deblur-small");
    write_photo(&d.join("p.png"), 16, 16);
    let (p, o) = (d.s("p.png"), d.s("out"));
    let args = [
        "restore",
        "--input",
        &p,
        "--blur",
        "gaussian:2.3",
        "--samples",
        "1",
    ];
    let out = run(&[&args[..], &["--out", &o]].concat());
    refused(&out, &["16×16", "21×21", "--prior network"]);
    assert!(!d.join("out").join("p.sample-0.png").exists());
    let out = run(&[
        &args[..],
        &["--prior", "network", "--steps", "2", "--out", &o],
    ]
    .concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("out").join("p.sample-0.png").exists());
}

/// Asking for a GPU backend while deblurring on the photo's own patches (CPU only) says so,
/// and the run goes on.
#[test]
fn a_gpu_backend_with_the_patch_prior_is_noted_not_ignored() {
    let d = Dir::new("deblur-backend");
    write_photo(&d.join("p.png"), 48, 48);
    let (p, o) = (d.s("p.png"), d.s("out"));
    let out = run(&[
        "restore",
        "--input",
        &p,
        "--blur",
        "gaussian:1",
        "--samples",
        "1",
        "--steps",
        "2",
        "--backend",
        "wgpu",
        "--out",
        &o,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: the photo's own patches run on the CPU"),
        "{err}"
    );
    assert!(d.join("out").join("p.sample-0.png").exists());
}

#[test]
fn the_kernel_size_message_says_width_by_height() {
    let d = Dir::new("kernel");
    write_photo(&d.join("wide.png"), 100, 40);
    let out = run(&[
        "restore",
        "--input",
        &d.s("wide.png"),
        "--blur",
        "gaussian:8",
        "--out",
        &d.s("o"),
    ]);
    refused(&out, &["49×49 (width×height)", "image 100×40"]);
}

#[test]
fn files_that_are_not_photos_are_refused_before_reading() {
    let d = Dir::new("files");
    write_mask(&d.join("m.png"), 48, 48);
    let o = d.s("out");
    let mask = d.s("m.png");
    let restore = |input: &str| run(&["restore", "--input", input, "--mask", &mask, "--out", &o]);
    // /dev/zero would be read until memory runs out; a FIFO would block forever.
    refused(&restore("/dev/zero"), &["not a regular file"]);
    #[cfg(unix)]
    {
        let fifo = d.join("fifo.png");
        let made = Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            refused(
                &restore(&fifo.display().to_string()),
                &["not a regular file"],
            );
        }
    }
    refused(&restore(&d.s("")), &["folder"]);
    // The OS error once, not twice.
    let out = restore(&d.s("missing.png"));
    refused(&out, &["missing.png", "No such file"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr)
            .matches("No such file")
            .count(),
        1
    );
    // Formats EPS Studio does not read are named as such, not called damaged.
    let bmp = d.join("p.bmp");
    // The BMP magic is enough for the format to be recognised (this build encodes no BMP).
    std::fs::write(&bmp, [b"BM".as_slice(), &[0; 60]].concat()).unwrap();
    refused(
        &restore(&bmp.display().to_string()),
        &["BMP", "does not read"],
    );
}

/// A JPEG cut off inside its image data, with and without an end marker appended: `restore` and
/// `data` refuse both (one decoder for both), instead of filling the rest with a flat band.
#[test]
fn damaged_jpegs_are_refused_by_every_reader() {
    let d = Dir::new("jpeg");
    let src = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/cups.jpg"))
        .unwrap();
    let cut = &src[..src.len() * 6 / 10];
    std::fs::create_dir_all(d.join("photos")).unwrap();
    std::fs::write(d.join("photos/cut.jpg"), cut).unwrap();
    let mut marked = cut.to_vec();
    marked.extend_from_slice(&[0xFF, 0xD9]);
    std::fs::write(d.join("marked.jpg"), &marked).unwrap();
    write_mask(&d.join("m.png"), 48, 48);
    for input in [d.s("photos/cut.jpg"), d.s("marked.jpg")] {
        let out = run(&[
            "restore",
            "--input",
            &input,
            "--mask",
            &d.s("m.png"),
            "--out",
            &d.s("o"),
        ]);
        refused(&out, &["damaged"]);
    }
    let out = run(&["data", "--photos", &d.s("photos"), "--out", &d.s("pack")]);
    refused(&out, &["cut.jpg", "damaged"]);
    assert!(!d.join("pack").exists());
}

/// Every command that writes refuses to replace an existing file, checked before the work, and
/// leaves that file as it was.
#[test]
fn no_command_replaces_an_existing_file() {
    let d = Dir::new("overwrite");
    std::fs::create_dir_all(d.join("photos")).unwrap();
    write_photo(&d.join("photos/a.png"), 64, 64);
    let before = std::fs::read(d.join("photos/a.png")).unwrap();
    let a = d.s("photos/a.png");
    refused(
        &run(&["data", "--photos", &d.s("photos"), "--out", &a]),
        &["already exists"],
    );
    refused(
        &run(&["eval", "--out", &a, "--tasks", "box"]),
        &["already exists"],
    );
    refused(&run(&["bench", "--out", &a]), &["already exists"]);
    assert_eq!(std::fs::read(d.join("photos/a.png")).unwrap(), before);
    // A file where the output folder should be.
    write_mask(&d.join("m.png"), 64, 64);
    refused(
        &run(&[
            "restore",
            "--input",
            &a,
            "--mask",
            &d.s("m.png"),
            "--out",
            &a,
        ]),
        &["is a file, not a folder"],
    );
    assert_eq!(std::fs::read(d.join("photos/a.png")).unwrap(), before);
}

/// A name near the file-system limit still saves (the output names are shortened), and a
/// dangling link at an output name is left alone: the result goes to the next free name.
#[test]
fn long_names_and_dangling_links_do_not_lose_the_run() {
    let d = Dir::new("names");
    let long = format!("{}.png", "p".repeat(246));
    write_photo(&d.join(&long), 48, 48);
    write_mask(&d.join("m.png"), 48, 48);
    std::fs::create_dir_all(d.join("out")).unwrap();
    let stem = "p".repeat(223);
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        d.join("elsewhere.png"),
        d.join("out").join(format!("{stem}.sample-0.png")),
    )
    .unwrap();
    let out = run(&[
        "restore",
        "--input",
        &d.s(&long),
        "--mask",
        &d.s("m.png"),
        "--out",
        &d.s("out"),
        "--samples",
        "1",
        "--steps",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !d.join("elsewhere.png").exists(),
        "wrote through the dangling link"
    );
    let names: Vec<String> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&stem) && n.ends_with(".sample-0-2.png")),
        "{names:?}"
    );
    assert!(names.iter().all(|n| n.len() <= 255));
}

/// σ_y below what the networks are trained for is raised with a visible note, in the run's own
/// table too.
#[test]
fn tiny_sigma_y_is_raised_to_the_floor_with_a_note() {
    let d = Dir::new("sigma");
    write_photo(&d.join("p.png"), 48, 48);
    let out = run(&[
        "restore",
        "--input",
        &d.s("p.png"),
        "--blur",
        "gaussian:1",
        "--sigma-y",
        "0",
        "--samples",
        "1",
        "--steps",
        "2",
        "--out",
        &d.s("o"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("note: σ_y = 0 is below 0.01") && err.contains("using σ_y = 0.01"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("σ_y = 0.010"));
}

#[test]
fn a_misspelt_subcommand_is_named_as_such() {
    let out = run(&["restorr"]);
    refused(&out, &["'restorr'", "eps-studio restore"]);
}

/// A weight file whose metadata declares a huge network is refused before anything is built.
#[test]
fn weight_files_claiming_huge_networks_are_refused() {
    let d = Dir::new("weights");
    let config = r#"{"image_channels":3,"cond_channels":0,"unshuffle":2,"channels":[4096,4096,4096,4096],"blocks":16,"mid_blocks":16,"attention":false,"head_dim":32,"head":0,"emb_dim":128,"pixel_precond":true,"obs_base":false,"sigma_data":0.5}"#;
    let meta = std::collections::HashMap::from([
        ("eps_studio.format".to_owned(), "2".to_owned()),
        ("eps_studio.kind".to_owned(), "prior".to_owned()),
        ("eps_studio.config".to_owned(), config.to_owned()),
    ]);
    let empty: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
    let bytes = safetensors::serialize(empty, Some(meta)).unwrap();
    std::fs::create_dir_all(d.join("w")).unwrap();
    std::fs::write(d.join("w/prior.safetensors"), &bytes).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/eps.safetensors"),
        d.join("w/eps.safetensors"),
    )
    .unwrap();
    write_photo(&d.join("p.png"), 48, 48);
    write_mask(&d.join("m.png"), 48, 48);
    let out = run(&[
        "restore",
        "--input",
        &d.s("p.png"),
        "--mask",
        &d.s("m.png"),
        "--method",
        "ddnm",
        "--prior",
        "network",
        "--weights",
        &d.s("w"),
        "--out",
        &d.s("o"),
        "--samples",
        "1",
    ]);
    refused(&out, &["weights", "100 M"]);
}

/// EXIF and the ICC profile of the input travel into every saved result of the same size, and a
/// second run into the same folder leaves the first run's files exactly as they were.
#[test]
fn metadata_is_kept_and_earlier_results_are_never_touched() {
    let d = Dir::new("meta");
    let cups = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples/cups.jpg");
    let original = eps_studio::photo::load(&cups).unwrap();
    let (exif, icc) = (
        original.exif.clone().unwrap(),
        original.icc.clone().unwrap(),
    );
    write_mask(&d.join("m.png"), 384, 240);
    let args = [
        "restore",
        "--input",
        &cups.display().to_string(),
        "--mask",
        &d.s("m.png"),
        "--out",
        &d.s("out"),
        "--samples",
        "1",
        "--steps",
        "2",
    ];
    let first = run(&args);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let sample = d.join("out/cups.sample-0.jpg");
    let saved = eps_studio::photo::load(&sample).unwrap();
    assert_eq!(saved.exif.as_deref(), Some(exif.as_slice()), "EXIF lost");
    assert_eq!(
        saved.icc.as_deref(),
        Some(icc.as_slice()),
        "ICC profile lost"
    );
    let mean = eps_studio::photo::load(&d.join("out/cups.mean.jpg")).unwrap();
    assert!(mean.exif.is_some() && mean.icc.is_some());

    let before: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(d.join("out"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let second = run(&args);
    assert!(second.status.success());
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{} changed", p.display());
    }
    assert!(d.join("out/cups.sample-0-2.jpg").exists());
}
