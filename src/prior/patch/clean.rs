//! Clean bank patches. The bank samples the prior of the *clean* image `x0`, but the known
//! pixels are the measurement `y = x0 + η`; a bank of noisy patches would put that noise into
//! every fill. So the known pixels are first denoised at the photo's own noise level, estimated
//! from the photo (a clean photo is left as it is, whatever σ_y the restoration assumes).
//!
//! - [`estimate_noise`]: the robust median estimator of Donoho & Johnstone (1994) on the
//!   finest Haar wavelet band, `σ̂ = median(|HH|) / 0.6745`, over 2×2 blocks of known pixels.
//! - [`nl_means`]: pixelwise non-local means (Buades, Coll, Morel, IPOL 2011): each known pixel
//!   becomes the average of the known pixels in its search window whose surrounding patches
//!   look alike, with weights `exp(−max(d² − 2σ², 0)/h²)`.

use rayon::prelude::*;

use super::bank::Plane;

/// Side of the blocks [`estimate_noise`] estimates in.
const NOISE_BLOCK: usize = 16;

/// The noise standard deviation of the known pixels of `y` (same units as `y`), estimated
/// from the finest diagonal Haar band; 0 when too few whole 2×2 blocks are known.
///
/// Texture also has energy in that band, so the estimate is made per 16×16 block of known
/// pixels and the 25th percentile over blocks is taken: the flatter parts of a photo show its
/// noise, the textured ones would overstate it. Photos with no flat part get the median
/// estimate over every coefficient.
pub fn estimate_noise(y: &Plane, hole: &[bool]) -> f64 {
    let (w, h, c) = (y.width, y.height, y.channels);
    // Orthonormal Haar HH of the 2×2 block at (bx, by): (a − b − c + d)/2 has the pixel
    // noise's variance.
    let hh = |bx: usize, by: usize, out: &mut Vec<f64>| -> bool {
        let (x0, y0) = (2 * bx, 2 * by);
        let idx = [
            y0 * w + x0,
            y0 * w + x0 + 1,
            (y0 + 1) * w + x0,
            (y0 + 1) * w + x0 + 1,
        ];
        if idx.iter().any(|&i| hole[i]) {
            return false;
        }
        for ch in 0..c {
            let v = |i: usize| f64::from(y.data[i * c + ch]);
            out.push(((v(idx[0]) - v(idx[1]) - v(idx[2]) + v(idx[3])) / 2.0).abs());
        }
        true
    };
    let median = |v: &mut Vec<f64>| -> f64 {
        let mid = v.len() / 2;
        *v.select_nth_unstable_by(mid, f64::total_cmp).1
    };
    let half = NOISE_BLOCK / 2;
    let mut blocks = Vec::new();
    let mut all = Vec::new();
    for ty in 0..h / NOISE_BLOCK {
        for tx in 0..w / NOISE_BLOCK {
            let mut coeffs = Vec::with_capacity(half * half * c);
            let mut whole = true;
            for by in ty * half..(ty + 1) * half {
                for bx in tx * half..(tx + 1) * half {
                    whole &= hh(bx, by, &mut coeffs);
                }
            }
            all.extend_from_slice(&coeffs);
            if whole {
                blocks.push(median(&mut coeffs) / 0.6745);
            }
        }
    }
    if blocks.len() >= 8 {
        let q = blocks.len() / 4;
        return *blocks.select_nth_unstable_by(q, f64::total_cmp).1;
    }
    // Too few whole blocks: every 2×2 block of known pixels.
    all.clear();
    for by in 0..h / 2 {
        for bx in 0..w / 2 {
            hh(bx, by, &mut all);
        }
    }
    if all.len() < 16 * c {
        return 0.0;
    }
    median(&mut all) / 0.6745
}

/// Non-local means of the known pixels of `y` at noise level `sigma` (same units as `y`);
/// hole pixels are left as they are. Patch radius 1, search radius `search`, `h = 0.55 σ`
/// (the IPOL settings for σ up to 25/255).
///
/// Computed offset by offset (Darbon et al. 2008): for each displacement in the search window,
/// the squared difference of the whole image with its shifted copy, summed over each 3×3 patch
/// with a separable box filter, gives every pixel's patch distance at once. A candidate patch
/// must be wholly known and inside the image; a target patch counts its known pixels only.
pub fn nl_means(y: &Plane, hole: &[bool], sigma: f64, search: usize) -> Plane {
    let (w, h, c) = (y.width, y.height, y.channels);
    if sigma <= 0.0 || w == 0 || h == 0 {
        return y.clone();
    }
    let s2 = (sigma * sigma) as f32;
    let inv_h2 = 1.0 / (0.55 * sigma).powi(2) as f32;
    let r = search as isize;
    let known: Vec<f32> = hole.iter().map(|&f| if f { 0.0 } else { 1.0 }).collect();
    // Whole: a 3×3 patch of known pixels inside the image.
    let whole: Vec<bool> = {
        let boxed = box3(&known, w, h);
        (0..w * h)
            .map(|i| {
                let (x, yy) = (i % w, i / w);
                x > 0 && yy > 0 && x + 1 < w && yy + 1 < h && boxed[i] >= 9.0 - 1e-3
            })
            .collect()
    };
    let mut acc = vec![0.0_f32; w * h * c];
    let mut total = vec![0.0_f32; w * h];
    let mut best = vec![0.0_f32; w * h];
    let mut diff = vec![0.0_f32; w * h];
    let mut count = vec![0.0_f32; w * h];
    for oy in -r..=r {
        for ox in -r..=r {
            if (ox, oy) == (0, 0) {
                continue;
            }
            // Per pixel: the squared colour difference to the pixel at the offset (over
            // known target pixels; 0 elsewhere), and whether it counts.
            diff.par_chunks_mut(w)
                .zip(count.par_chunks_mut(w))
                .enumerate()
                .for_each(|(py, (drow, crow))| {
                    let qy = py as isize + oy;
                    for px in 0..w {
                        let qx = px as isize + ox;
                        let i = py * w + px;
                        if qx < 0 || qy < 0 || qx >= w as isize || qy >= h as isize || hole[i] {
                            drow[px] = 0.0;
                            crow[px] = 0.0;
                            continue;
                        }
                        let j = qy as usize * w + qx as usize;
                        let mut d = 0.0;
                        for ch in 0..c {
                            let v = y.data[i * c + ch] - y.data[j * c + ch];
                            d += v * v;
                        }
                        drow[px] = d;
                        crow[px] = c as f32;
                    }
                });
            let dsum = box3(&diff, w, h);
            let csum = box3(&count, w, h);
            acc.par_chunks_mut(w * c)
                .zip(total.par_chunks_mut(w))
                .zip(best.par_chunks_mut(w))
                .enumerate()
                .for_each(|(py, ((arow, trow), brow))| {
                    let qy = py as isize + oy;
                    if qy < 0 || qy >= h as isize {
                        return;
                    }
                    for px in 0..w {
                        let qx = px as isize + ox;
                        let i = py * w + px;
                        if qx < 0 || qx >= w as isize || hole[i] {
                            continue;
                        }
                        let j = qy as usize * w + qx as usize;
                        if !whole[j] || csum[i] <= 0.0 {
                            continue;
                        }
                        let d2 = dsum[i] / csum[i];
                        let wgt = (-(d2 - 2.0 * s2).max(0.0) * inv_h2).exp();
                        brow[px] = brow[px].max(wgt);
                        trow[px] += wgt;
                        for ch in 0..c {
                            arow[px * c + ch] += wgt * y.data[j * c + ch];
                        }
                    }
                });
        }
    }
    let mut out = y.clone();
    for i in 0..w * h {
        if hole[i] {
            continue;
        }
        // The pixel itself counts with the largest weight of the others.
        let own = if best[i] > 0.0 { best[i] } else { 1.0 };
        let t = total[i] + own;
        for ch in 0..c {
            out.data[i * c + ch] = (acc[i * c + ch] + own * y.data[i * c + ch]) / t;
        }
    }
    out
}

/// 3×3 box sums of a `w × h` plane (missing neighbours at the border count as 0).
fn box3(v: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut rows = vec![0.0_f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut s = v[i];
            if x > 0 {
                s += v[i - 1];
            }
            if x + 1 < w {
                s += v[i + 1];
            }
            rows[i] = s;
        }
    }
    let mut out = vec![0.0_f32; w * h];
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let mut s = rows[i];
            if y > 0 {
                s += rows[i - w];
            }
            if y + 1 < h {
                s += rows[i + w];
            }
            out[i] = s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;
    use rand_distr::{Distribution as _, Normal};

    fn noisy_gradient(sigma: f64, seed: u64) -> (Plane, Plane) {
        let (w, h) = (64, 48);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let normal = Normal::new(0.0, sigma).unwrap_or_else(|_| unreachable!());
        let clean: Vec<f32> = (0..w * h * 3)
            .map(|i| ((i / 3) % w) as f32 / w as f32 - 0.5)
            .collect();
        let noisy = clean
            .iter()
            .map(|v| v + normal.sample(&mut rng) as f32)
            .collect();
        (
            Plane::from_data(w, h, 3, clean).unwrap_or_else(|_| unreachable!()),
            Plane::from_data(w, h, 3, noisy).unwrap_or_else(|_| unreachable!()),
        )
    }

    #[test]
    fn the_noise_level_is_estimated_and_removed() {
        for sigma in [0.02, 0.05, 0.1] {
            let (clean, noisy) = noisy_gradient(sigma, 3);
            let hole = vec![false; clean.width * clean.height];
            let est = estimate_noise(&noisy, &hole);
            assert!(
                (est / sigma - 1.0).abs() < 0.15,
                "σ {sigma}: estimated {est}"
            );
            let den = nl_means(&noisy, &hole, est, 5);
            let mse = |a: &Plane| -> f64 {
                a.data
                    .iter()
                    .zip(&clean.data)
                    .map(|(x, y)| f64::from(x - y).powi(2))
                    .sum::<f64>()
                    / a.data.len() as f64
            };
            assert!(mse(&den) < 0.3 * mse(&noisy), "σ {sigma}");
        }
        let (clean, _) = noisy_gradient(0.0, 1);
        assert!(estimate_noise(&clean, &vec![false; 64 * 48]) < 1e-6);
    }
}
