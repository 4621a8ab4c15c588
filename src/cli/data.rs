//! `eps-studio data`: pack the training photos.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::train::data::PhotoSet;

/// Arguments of `eps-studio data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Folder of photos.
    #[arg(long, default_value = "data/photos")]
    pub photos: PathBuf,
    /// Output pack.
    #[arg(long, default_value = "data/photos.pack")]
    pub out: PathBuf,
    /// Long side after downscaling, in pixels.
    #[arg(long, default_value_t = 1024)]
    pub long_side: usize,
    /// Replace --out when it exists.
    #[arg(long)]
    pub overwrite: bool,
}

/// Runs `eps-studio data`.
pub fn run(args: &DataArgs) -> anyhow::Result<()> {
    super::bench::check_range("--long-side", args.long_side, 64, 8192)?;
    let summary = PhotoSet::pack_folder(&args.photos, &args.out, args.long_side, args.overwrite)
        .with_context(|| format!("cannot pack {}", args.photos.display()))?;
    println!(
        "packed {} photos ({} for validation), {:.1} MP, {:.1} MiB → {}",
        summary.photos,
        summary.validation,
        summary.megapixels,
        summary.bytes as f64 / 1048576.0,
        args.out.display()
    );
    let set = PhotoSet::load(&args.out).context("cannot read back the pack")?;
    let held_out: Vec<String> = set
        .names()
        .into_iter()
        .filter(|(_, s)| *s == crate::train::data::Split::Validation)
        .map(|(n, _)| n)
        .collect();
    println!("validation: {}", held_out.join(", "));
    Ok(())
}
