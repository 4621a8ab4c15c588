//! What EPS Studio accepts: every bound on a parameter or a file, in one place, checked before any
//! work or large allocation by the command line and the app alike.
//!
//! Each check returns [`Error::InvalidParameter`] naming the value, the accepted range and what to
//! do. docs/reliability.md lists these limits and where they are checked.

use std::path::Path;

use crate::{Error, Result};

/// Most sampler steps per region (DPS's documented 1000 steps is the largest default).
pub const MAX_STEPS: usize = 1000;
/// Most posterior samples per run.
pub const MAX_SAMPLES: usize = 64;
/// Smallest and largest Gaussian blur σ, in pixels (a 151 × 151 kernel at the top).
pub const GAUSSIAN_SIGMA: (f64, f64) = (0.1, 25.0);
/// Shortest and longest motion blur, in pixels.
pub const MOTION_LENGTH: (f64, f64) = (1.0, 151.0);
/// Super-resolution factors.
pub const SR_FACTORS: [usize; 3] = [2, 4, 8];
/// Smallest and largest working side, in pixels.
pub const WORK_SIDE: (usize, usize) = (32, 1024);
/// Smallest measurement noise σ_y (network units, `[-1, 1]`).
///
/// A photo always carries noise: 8-bit quantisation alone is `2/255/√12 ≈ 0.0023`, and JPEG
/// compression and sensor noise add more. The EPS network is trained on σ_y ∈ [0.01, 0.1]; below
/// 0.01 the pivot trusts the measurement so much that frequencies a blur all but removed come back
/// amplified, and motion deblurring returns ringing and colour noise (4.8 dB at σ_y = 0 on a
/// 160-pixel crop of cups.jpg, against 18.9 dB for the blurry photo). Smaller requests are raised
/// to this floor with a note.
pub const SIGMA_Y_FLOOR: f64 = 0.01;
/// Smallest measurement noise σ_y for motion deblurring with the network.
///
/// A motion kernel's spectrum has lines of near-zeros; below this σ_y the pivot amplifies those
/// frequencies beyond what the network learned to denoise and the samples fill with stripes along
/// the blur (motion 9 px at 30° on a 256-pixel crop of Foggy-Trees: 19.6 dB at σ_y = 0.01, 24.1 dB
/// at 0.02, 26.3 dB at 0.03, 27.6 dB at 0.05 against 27.3 dB for the blurry photo). Smaller
/// requests are raised to it with a note: a broader likelihood than the photo's own noise gives a
/// smoother posterior, never ringing.
pub const MOTION_SIGMA_Y_FLOOR: f64 = 0.05;
/// Largest measurement noise σ_y: beyond it the noise is as large as the whole image range.
pub const SIGMA_Y_MAX: f64 = 1.0;
/// Largest photo or mask file, in bytes (a 100-megapixel 16-bit TIFF is about 600 MB).
pub const MAX_IMAGE_FILE_BYTES: u64 = 1 << 30;
/// Largest weight file, in bytes (the shipped networks are 22 MB each).
pub const MAX_WEIGHT_FILE_BYTES: u64 = 512 << 20;
/// Most parameters a weight file's architecture may declare (the shipped networks: 5.6 M).
pub const MAX_PARAMETERS: u64 = 100_000_000;
/// Largest settings or autosave file, in bytes.
pub const MAX_SETTINGS_FILE_BYTES: u64 = 16 << 20;

/// Checks a sampler step count.
pub fn steps(steps: usize) -> Result<()> {
    in_range("steps", steps, 1, MAX_STEPS, "sampler steps")
}

/// Checks a sample count.
pub fn samples(samples: usize) -> Result<()> {
    in_range(
        "samples",
        samples,
        1,
        MAX_SAMPLES,
        "posterior samples per run",
    )
}

/// Checks a working side.
pub fn work_side(side: usize) -> Result<()> {
    in_range("working size", side, WORK_SIDE.0, WORK_SIDE.1, "pixels")
}

/// Checks a super-resolution factor.
pub fn sr_factor(factor: usize) -> Result<()> {
    if SR_FACTORS.contains(&factor) {
        Ok(())
    } else {
        Err(Error::invalid(
            "super-resolution factor",
            factor,
            "use 2, 4 or 8",
        ))
    }
}

/// Checks a Gaussian blur σ in pixels.
pub fn gaussian_sigma(sigma: f64) -> Result<()> {
    let (lo, hi) = GAUSSIAN_SIGMA;
    if sigma.is_finite() && (lo..=hi).contains(&sigma) {
        Ok(())
    } else {
        Err(Error::invalid(
            "Gaussian blur σ",
            sigma,
            format!("use {lo} to {hi} pixels"),
        ))
    }
}

/// Checks a motion blur's length (pixels) and angle (degrees).
pub fn motion(length: f64, angle_deg: f64) -> Result<()> {
    let (lo, hi) = MOTION_LENGTH;
    if !(length.is_finite() && (lo..=hi).contains(&length)) {
        return Err(Error::invalid(
            "motion blur length",
            length,
            format!("use {lo} to {hi} pixels"),
        ));
    }
    if !angle_deg.is_finite() {
        return Err(Error::invalid(
            "motion blur angle",
            angle_deg,
            "use a finite number of degrees",
        ));
    }
    Ok(())
}

/// Checks σ_y and returns the value to use: values below [`SIGMA_Y_FLOOR`] are raised to it, with a
/// note saying so; negative, non-finite and too large values are refused.
pub fn sigma_y(sigma_y: f64) -> Result<(f64, Option<String>)> {
    if !(sigma_y.is_finite() && (0.0..=SIGMA_Y_MAX).contains(&sigma_y)) {
        return Err(Error::invalid(
            "σ_y",
            sigma_y,
            format!("use 0 to {SIGMA_Y_MAX} (image units in [-1, 1]; 0.05 is typical)"),
        ));
    }
    if sigma_y < SIGMA_Y_FLOOR {
        let note = format!(
            "σ_y = {sigma_y} is below {SIGMA_Y_FLOOR}, the smallest measurement noise the networks \
             are trained for (an 8-bit photo alone carries 0.0023); using σ_y = {SIGMA_Y_FLOOR}"
        );
        return Ok((SIGMA_Y_FLOOR, Some(note)));
    }
    Ok((sigma_y, None))
}

/// σ_y for motion deblurring: `sigma_y` (already [`sigma_y`]-checked) raised to
/// [`MOTION_SIGMA_Y_FLOOR`], with a note when it was below.
pub fn motion_sigma_y(sigma_y: f64) -> (f64, Option<String>) {
    if sigma_y < MOTION_SIGMA_Y_FLOOR {
        let note = format!(
            "σ_y = {sigma_y} is below {MOTION_SIGMA_Y_FLOOR}, the smallest measurement noise the \
             network deblurs motion at without stripes along the blur; using σ_y = \
             {MOTION_SIGMA_Y_FLOOR}"
        );
        return (MOTION_SIGMA_Y_FLOOR, Some(note));
    }
    (sigma_y, None)
}

/// Checks that `path` is a regular file of at most `max_bytes` before it is read: a folder, a
/// device (`/dev/zero`), a FIFO or a huge file is refused without reading a byte.
pub fn input_file(what: &'static str, path: &Path, max_bytes: u64) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        let kind = if meta.is_dir() {
            "a folder"
        } else {
            "not a regular file (a device, pipe or socket)"
        };
        return Err(Error::invalid(
            what,
            path.display(),
            format!("is {kind}; choose a file"),
        ));
    }
    if meta.len() > max_bytes {
        return Err(Error::invalid(
            what,
            path.display(),
            format!(
                "is {:.0} MiB, more than the {:.0} MiB EPS Studio reads",
                meta.len() as f64 / 1048576.0,
                max_bytes as f64 / 1048576.0
            ),
        ));
    }
    Ok(meta.len())
}

fn in_range(name: &'static str, value: usize, lo: usize, hi: usize, unit: &str) -> Result<()> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(Error::invalid(
            name,
            value,
            format!("use {lo} to {hi} {unit}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_named_in_the_messages() {
        let e = steps(0).expect_err("must be refused").to_string();
        assert!(e.contains("1 to 1000"), "{e}");
        let e = samples(1_000_000).expect_err("must be refused").to_string();
        assert!(e.contains("1 to 64"), "{e}");
        let e = gaussian_sigma(1e9)
            .expect_err("must be refused")
            .to_string();
        assert!(e.contains("0.1 to 25"), "{e}");
        assert!(gaussian_sigma(f64::NAN).is_err());
        assert!(motion(1e9, 45.0).is_err());
        assert!(motion(9.0, f64::INFINITY).is_err());
        assert!(sr_factor(0).is_err());
        assert!(work_side(16).is_err());
    }

    #[test]
    fn tiny_sigma_y_is_raised_with_a_note_and_absurd_values_refused() -> Result<()> {
        let (s, note) = sigma_y(0.0)?;
        assert_eq!(s, SIGMA_Y_FLOOR);
        assert!(note.is_some_and(|n| n.contains("0.01")));
        assert_eq!(sigma_y(0.05)?, (0.05, None));
        assert!(sigma_y(-0.1).is_err());
        assert!(sigma_y(f64::NAN).is_err());
        assert!(sigma_y(5.0).is_err());
        Ok(())
    }

    #[test]
    fn motion_deblurring_raises_sigma_y_to_its_own_floor() {
        let (s, note) = motion_sigma_y(SIGMA_Y_FLOOR);
        assert_eq!(s, MOTION_SIGMA_Y_FLOOR);
        assert!(note.is_some_and(|n| n.contains("stripes")));
        assert_eq!(motion_sigma_y(0.08), (0.08, None));
    }
}
