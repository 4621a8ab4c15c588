//! Resampling between photo resolution and the network's working resolution.

use crate::photo::{Raster, RgbImage};

/// Area-average downscale to `w × h` (each output pixel averages the source pixels it covers,
/// with fractional coverage at the edges), the right filter for shrinking photos.
/// Reads any [`Raster`], so a whole photo in its own bit depth is shrunk without a float copy.
pub fn area<R: Raster + ?Sized>(src: &R, w: usize, h: usize) -> RgbImage {
    let (src_w, src_h) = (src.width(), src.height());
    if (w, h) == (src_w, src_h) {
        return src.to_rgb();
    }
    let sx = src_w as f64 / w as f64;
    let sy = src_h as f64 / h as f64;
    let spans = |n: usize, scale: f64, limit: usize| -> Vec<Vec<(usize, f64)>> {
        (0..n)
            .map(|o| {
                let (a, b) = (o as f64 * scale, (o as f64 + 1.0) * scale);
                let mut taps = Vec::new();
                let mut i = a.floor() as usize;
                while (i as f64) < b && i < limit {
                    let cover = (b.min(i as f64 + 1.0) - a.max(i as f64)).max(0.0);
                    if cover > 0.0 {
                        taps.push((i, cover / scale));
                    }
                    i += 1;
                }
                taps
            })
            .collect()
    };
    let xs = spans(w, sx, src_w);
    let ys = spans(h, sy, src_h);
    let mut out = RgbImage::new(w, h);
    for (oy, ytaps) in ys.iter().enumerate() {
        for (ox, xtaps) in xs.iter().enumerate() {
            let mut acc = [0.0_f64; 3];
            for &(iy, wy) in ytaps {
                for &(ix, wx) in xtaps {
                    let i = (iy * src_w + ix) * 3;
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a += wy * wx * f64::from(src.value(i + c));
                    }
                }
            }
            let o = (oy * w + ox) * 3;
            for (dst, a) in out.data[o..o + 3].iter_mut().zip(acc) {
                *dst = a as f32;
            }
        }
    }
    out
}

/// Nearest-neighbour resample to `w × h` (pixel centres aligned): blocks stay blocks, as when
/// showing a small photo at a larger size.
pub fn nearest(src: &RgbImage, w: usize, h: usize) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    for y in 0..h {
        let sy = (y * src.height / h.max(1)).min(src.height - 1);
        for x in 0..w {
            let sx = (x * src.width / w.max(1)).min(src.width - 1);
            let (o, i) = ((y * w + x) * 3, (sy * src.width + sx) * 3);
            out.data[o..o + 3].copy_from_slice(&src.data[i..i + 3]);
        }
    }
    out
}

/// Bilinear resample to `w × h` (pixel centres aligned), used to bring a working-scale result
/// back up to photo resolution.
pub fn bilinear<R: Raster + ?Sized>(src: &R, w: usize, h: usize) -> RgbImage {
    let (src_w, src_h) = (src.width(), src.height());
    if (w, h) == (src_w, src_h) {
        return src.to_rgb();
    }
    let pixel = |x: usize, y: usize| {
        let i = (y * src_w + x) * 3;
        [src.value(i), src.value(i + 1), src.value(i + 2)]
    };
    let coord = |o: usize, n_out: usize, n_in: usize| -> (usize, usize, f32) {
        let f = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).clamp(0.0, (n_in - 1) as f64);
        let i = f.floor() as usize;
        (i, (i + 1).min(n_in - 1), (f - i as f64) as f32)
    };
    let mut out = RgbImage::new(w, h);
    for oy in 0..h {
        let (y0, y1, fy) = coord(oy, h, src_h);
        for ox in 0..w {
            let (x0, x1, fx) = coord(ox, w, src_w);
            let (a, b, c, d) = (pixel(x0, y0), pixel(x1, y0), pixel(x0, y1), pixel(x1, y1));
            let o = (oy * w + ox) * 3;
            for k in 0..3 {
                let top = a[k] + (b[k] - a[k]) * fx;
                let bottom = c[k] + (d[k] - c[k]) * fx;
                out.data[o + k] = top + (bottom - top) * fy;
            }
        }
    }
    out
}

/// A fill mask shrunk to `w × h`: a working pixel is filled when any photo pixel it covers is,
/// so no hidden pixel leaks into the measurement.
pub fn mask_any(fill: &[bool], width: usize, height: usize, w: usize, h: usize) -> Vec<bool> {
    if (w, h) == (width, height) {
        return fill.to_vec();
    }
    let mut out = vec![false; w * h];
    for y in 0..height {
        let oy = (y * h / height).min(h - 1);
        for x in 0..width {
            if fill[y * width + x] {
                out[oy * w + (x * w / width).min(w - 1)] = true;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_averages_blocks_exactly() {
        let src = RgbImage::from_data(
            2,
            2,
            vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = area(&src, 1, 1);
        for v in out.data {
            assert!((v - 0.5).abs() < 1e-6);
        }
    }

    #[test]
    fn bilinear_keeps_constants_and_area_of_bilinear_is_close() {
        let src = RgbImage::from_data(3, 2, vec![0.25; 18]).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            bilinear(&src, 7, 5)
                .data
                .iter()
                .all(|v| (v - 0.25).abs() < 1e-6)
        );
        let ramp: Vec<f32> = (0..8 * 8 * 3).map(|i| (i / 3 % 8) as f32 / 7.0).collect();
        let src = RgbImage::from_data(8, 8, ramp).unwrap_or_else(|e| panic!("{e}"));
        let back = area(&bilinear(&src, 16, 16), 8, 8);
        let err = back
            .data
            .iter()
            .zip(&src.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        assert!(err < 0.05, "{err}");
    }

    #[test]
    fn mask_any_never_loses_a_hole() {
        let mut fill = vec![false; 10 * 10];
        fill[55] = true;
        let m = mask_any(&fill, 10, 10, 3, 3);
        assert_eq!(m.iter().filter(|&&b| b).count(), 1);
    }
}
