//! Training photographs: packing a folder of photos into one compact file, the deterministic
//! train/validation split, and random crops.
//!
//! The pack is a safetensors file whose tensors are the photos' JPEG bytes (quality 95, after a
//! Lanczos downscale that removes sensor noise and compression artefacts), with the split and the
//! source names in its metadata: one file to take to the GPU machine.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use image::imageops::FilterType;
use rand::Rng;

use crate::{Error, Result};

const KEY_SPLIT: &str = "eps_studio.split";
const KEY_SOURCES: &str = "eps_studio.sources";

/// Which part of the data a photo belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used for training.
    Train,
    /// Held out for validation and evaluation.
    Validation,
}

/// FNV-1a, a stable hash for the split (independent of Rust's randomised hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The deterministic split: within each source (the part of the name before `__`), photos sorted
/// by the hash of their name, the first 15% (at least one when the source has four or more) go to
/// validation. Adding a photo moves at most one other.
pub fn split_names(names: &[String]) -> BTreeMap<String, Split> {
    let mut by_source: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
    for n in names {
        by_source
            .entry(n.split("__").next().unwrap_or(""))
            .or_default()
            .push(n);
    }
    let mut out = BTreeMap::new();
    for (_, mut group) in by_source {
        group.sort_by_key(|n| (fnv1a(n), (*n).clone()));
        let k = if group.len() >= 4 {
            ((group.len() as f64 * 0.15).round() as usize).max(1)
        } else {
            0
        };
        for (i, n) in group.into_iter().enumerate() {
            out.insert(
                n.clone(),
                if i < k {
                    Split::Validation
                } else {
                    Split::Train
                },
            );
        }
    }
    out
}

/// Decoded photos with their split.
#[derive(Debug, Clone)]
pub struct PhotoSet {
    photos: Vec<(String, Split, RgbImage)>,
}

impl PhotoSet {
    /// Packs every image in `dir` (JPEG, PNG, WebP, TIFF) into `out`: each downscaled so its long
    /// side is at most `long_side` pixels, stored as JPEG q95, with the split in the metadata.
    pub fn pack_folder(
        dir: &Path,
        out: &Path,
        long_side: usize,
        overwrite: bool,
    ) -> Result<PackSummary> {
        crate::fsutil::check_output_file(out, overwrite)?;
        let io = |source| Error::Io {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "jpg" | "jpeg" | "png" | "webp" | "tif" | "tiff"
                    )
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid(
                "photo folder",
                dir.display(),
                "contains no JPEG/PNG/WebP/TIFF images; run scripts/fetch-photos.sh first",
            ));
        }
        let names: Vec<String> = files
            .iter()
            .map(|p| {
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        let split = split_names(&names);
        let mut tensors = BTreeMap::new();
        let mut sources = BTreeMap::new();
        let mut pixels = 0usize;
        for (path, name) in files.iter().zip(&names) {
            // The app's own decoder: what restore refuses (a truncated JPEG) is refused here too.
            let photo = crate::photo::load(path)?;
            let img = RgbImage::from_raw(
                photo.width() as u32,
                photo.height() as u32,
                photo.pixels.to_rgb8(),
            )
            .ok_or_else(|| {
                Error::shape("decoded photo", "width × height × 3 bytes", path.display())
            })?;
            let (w, h) = img.dimensions();
            let scale = (long_side as f64 / f64::from(w.max(h))).min(1.0);
            let (nw, nh) = (
                ((f64::from(w) * scale).round() as u32).max(1),
                ((f64::from(h) * scale).round() as u32).max(1),
            );
            let small = if scale < 1.0 {
                image::imageops::resize(&img, nw, nh, FilterType::Lanczos3)
            } else {
                img
            };
            pixels += (nw * nh) as usize;
            let mut jpeg = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
                .encode_image(&small)
                .map_err(|source| Error::Image {
                    path: path.clone(),
                    source,
                })?;
            let n = jpeg.len();
            tensors.insert(name.clone(), Tensor::from_vec(jpeg, n, &Device::Cpu)?);
            sources.insert(
                name.clone(),
                format!(
                    "{} ({w}×{h} → {nw}×{nh})",
                    path.file_name()
                        .map(|f| f.to_string_lossy())
                        .unwrap_or_default()
                ),
            );
        }
        let meta = HashMap::from([
            (
                KEY_SPLIT.to_owned(),
                serde_json::to_string(&split).map_err(|e| Error::Unsupported(e.to_string()))?,
            ),
            (
                KEY_SOURCES.to_owned(),
                serde_json::to_string(&sources).map_err(|e| Error::Unsupported(e.to_string()))?,
            ),
        ]);
        let bytes = safetensors::serialize(tensors.iter(), Some(meta))
            .map_err(|e| Error::Unsupported(format!("cannot write the photo pack: {e}")))?;
        crate::fsutil::write(out, &bytes, overwrite)?;
        Ok(PackSummary {
            photos: names.len(),
            validation: split.values().filter(|s| **s == Split::Validation).count(),
            megapixels: pixels as f64 / 1e6,
            bytes: bytes.len(),
        })
    }

    /// Loads and decodes a pack written by [`Self::pack_folder`].
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = crate::fsutil::read(path)?;
        let bad = |why: String| {
            Error::invalid(
                "photo pack",
                path.display(),
                format!("{why}; rebuild it with `eps-studio data`"),
            )
        };
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let split: BTreeMap<String, Split> = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(KEY_SPLIT))
            .ok_or_else(|| bad("no split in the metadata".into()))
            .and_then(|s| serde_json::from_str(s).map_err(|e| bad(e.to_string())))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut photos = Vec::new();
        for (name, which) in split {
            let view = st.tensor(&name).map_err(|e| bad(format!("{name}: {e}")))?;
            let img = image::load_from_memory_with_format(view.data(), image::ImageFormat::Jpeg)
                .map_err(|e| bad(format!("{name}: {e}")))?
                .to_rgb8();
            photos.push((name, which, img));
        }
        Ok(Self { photos })
    }

    /// Builds a set from images in memory (tests, synthetic data).
    pub fn from_images(photos: Vec<(String, Split, RgbImage)>) -> Self {
        Self { photos }
    }

    /// Names and splits, sorted by name.
    pub fn names(&self) -> Vec<(String, Split)> {
        self.photos
            .iter()
            .map(|(n, s, _)| (n.clone(), *s))
            .collect()
    }

    /// The photos of one split with their names.
    pub fn named_split(&self, which: Split) -> Vec<(&str, &RgbImage)> {
        self.photos
            .iter()
            .filter(|(_, s, _)| *s == which)
            .map(|(n, _, i)| (n.as_str(), i))
            .collect()
    }

    /// The photos of one split.
    pub fn split(&self, which: Split) -> Vec<&RgbImage> {
        self.photos
            .iter()
            .filter(|(_, s, _)| *s == which)
            .map(|(_, _, i)| i)
            .collect()
    }
}

/// What [`PhotoSet::pack_folder`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct PackSummary {
    /// Photos packed.
    pub photos: usize,
    /// Of which held out for validation.
    pub validation: usize,
    /// Total pixels after downscaling, in millions.
    pub megapixels: f64,
    /// File size.
    pub bytes: usize,
}

/// Random square crops: a photo at random, a random scale in `[1, max_scale]` (a `crop·s` square
/// region resized to `crop` with a triangle filter), a random position, a random horizontal flip.
/// Returns `[crop, crop]` RGB crops as a `[B, 3, crop, crop]` tensor in `[-1, 1]`.
pub fn random_crops(
    photos: &[&RgbImage],
    batch: usize,
    crop: usize,
    max_scale: f64,
    rng: &mut impl Rng,
    device: &Device,
) -> Result<Tensor> {
    if photos.is_empty() {
        return Err(Error::invalid("photos", 0, "no photos to crop from"));
    }
    let mut data = Vec::with_capacity(batch * 3 * crop * crop);
    for _ in 0..batch {
        let img = photos[rng.random_range(0..photos.len())];
        let (w, h) = img.dimensions();
        let fit = f64::from(w.min(h)) / crop as f64;
        let scale = rng.random_range(1.0..=max_scale.max(1.0)).min(fit.max(1.0));
        let side = ((crop as f64 * scale).round() as u32).min(w).min(h);
        let (x0, y0) = (
            rng.random_range(0..=w - side),
            rng.random_range(0..=h - side),
        );
        let region = image::imageops::crop_imm(img, x0, y0, side, side).to_image();
        let patch = if side as usize == crop {
            region
        } else {
            image::imageops::resize(&region, crop as u32, crop as u32, FilterType::Triangle)
        };
        let flip = rng.random_bool(0.5);
        push_planar(&patch, flip, &mut data);
    }
    Ok(Tensor::from_vec(data, (batch, 3, crop, crop), device)?)
}

/// Deterministic validation crops: from every photo, a grid of `per_photo` non-overlapping-ish
/// `crop·scale` squares resized to `crop`.
pub fn grid_crops(
    photos: &[&RgbImage],
    per_photo: usize,
    crop: usize,
    scale: f64,
    device: &Device,
) -> Result<Tensor> {
    let mut data = Vec::new();
    let mut n = 0;
    let cols = (per_photo as f64).sqrt().ceil() as usize;
    let rows = per_photo.div_ceil(cols);
    for img in photos {
        let (w, h) = img.dimensions();
        let side = ((crop as f64 * scale).round() as u32).min(w).min(h);
        for k in 0..per_photo {
            let (i, j) = (k / cols, k % cols);
            let x0 = ((w - side) as usize * (2 * j + 1) / (2 * cols)) as u32;
            let y0 = ((h - side) as usize * (2 * i + 1) / (2 * rows)) as u32;
            let region = image::imageops::crop_imm(*img, x0, y0, side, side).to_image();
            let patch =
                image::imageops::resize(&region, crop as u32, crop as u32, FilterType::Triangle);
            push_planar(&patch, false, &mut data);
            n += 1;
        }
    }
    Ok(Tensor::from_vec(data, (n, 3, crop, crop), device)?)
}

fn push_planar(patch: &RgbImage, flip: bool, out: &mut Vec<f32>) {
    let (w, h) = patch.dimensions();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let sx = if flip { w - 1 - x } else { x };
                out.push(f32::from(patch.get_pixel(sx, y)[c]) / 127.5 - 1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_stratified_and_stable() {
        let names: Vec<String> = (0..14)
            .map(|i| format!("a__{i}"))
            .chain((0..11).map(|i| format!("b__{i}")))
            .collect();
        let s = split_names(&names);
        let val = |p: &str| {
            s.iter()
                .filter(|(n, v)| n.starts_with(p) && **v == Split::Validation)
                .count()
        };
        assert_eq!((val("a__"), val("b__")), (2, 2));
        // Adding a photo keeps the others where they were, but for at most one.
        let mut more = names.clone();
        more.push("a__new".into());
        let s2 = split_names(&more);
        let moved = names.iter().filter(|n| s[*n] != s2[*n]).count();
        assert!(moved <= 1, "{moved} photos changed split");
    }
}
