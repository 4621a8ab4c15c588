//! Coherence transport (after Bornemann and März 2007): a fill that carries the hole's
//! surroundings inwards along their edges. Hole pixels are filled in order of their distance
//! from the known pixels; each takes a weighted average of the known and already filled pixels
//! within a radius, the weights falling off fast across the local edge direction (read from a
//! structure tensor of those pixels) and slowly along it. The tensor here also reads the pixels
//! filled before, so an error made early bends what follows: a straight 30° edge across a
//! round hole comes out curved (docs/patch-prior.md). The paper reads it from the known pixels,
//! smoothed first, and fills a pixel only where its neighbourhood along the edge is known.

use super::bank::Plane;

/// Settings of [`coherence_transport`], in pixels of the plane it fills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransportConfig {
    /// Radius of the neighbourhood each hole pixel averages.
    pub radius: f64,
    /// How sharply the weights fall off across the edge direction (the paper's μ; 0 weighs
    /// every direction alike).
    pub sharpness: f64,
    /// Standard deviation of the Gaussian that gathers the structure tensor.
    pub rho: f64,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            radius: 3.0,
            sharpness: 25.0,
            rho: 2.0,
        }
    }
}

/// The plane with its hole filled by coherence transport. The edge directions are read from
/// the first `colours` channels; every channel is transported along them. Known pixels are
/// returned unchanged; a hole with no known pixel at all is returned as it is.
pub fn coherence_transport(
    y: &Plane,
    hole: &[bool],
    colours: usize,
    cfg: &TransportConfig,
) -> Plane {
    let (w, h, c) = (y.width, y.height, y.channels);
    let colours = colours.clamp(1, c);
    let mut out = y.clone();
    let mut known: Vec<bool> = hole.iter().map(|&m| !m).collect();
    if !known.iter().any(|&k| k) || !hole.iter().any(|&m| m) {
        return out;
    }
    let order = fill_order(hole, w, h);
    let r = cfg.radius.max(1.0);
    let ri = r.ceil() as isize;
    let rt = (3.0 * cfg.rho).ceil().max(1.0) as isize;
    let two_rho2 = 2.0 * cfg.rho * cfg.rho;
    let across = cfg.sharpness * cfg.sharpness / (2.0 * r * r);
    let at = |x: isize, y: isize| -> Option<usize> {
        (x >= 0 && y >= 0 && (x as usize) < w && (y as usize) < h)
            .then(|| y as usize * w + x as usize)
    };
    let mut acc = vec![0.0f64; c];
    for &i in &order {
        let (px, py) = ((i % w) as isize, (i / w) as isize);
        // The structure tensor of the known pixels around, from central (or one-sided)
        // differences where both ends are known.
        let (mut jxx, mut jxy, mut jyy) = (0.0f64, 0.0f64, 0.0f64);
        for dy in -rt..=rt {
            for dx in -rt..=rt {
                let Some(q) = at(px + dx, py + dy) else {
                    continue;
                };
                if !known[q] {
                    continue;
                }
                let (qx, qy) = (px + dx, py + dy);
                let diff = |a: Option<usize>, b: Option<usize>, ch: usize, span: f64| match (
                    a.filter(|&a| known[a]),
                    b.filter(|&b| known[b]),
                ) {
                    (Some(a), Some(b)) => {
                        Some(f64::from(out.data[a * c + ch] - out.data[b * c + ch]) / span)
                    }
                    _ => None,
                };
                let g = (-((dx * dx + dy * dy) as f64) / two_rho2).exp();
                for ch in 0..colours {
                    let gx = diff(at(qx + 1, qy), at(qx - 1, qy), ch, 2.0)
                        .or_else(|| diff(at(qx + 1, qy), Some(q), ch, 1.0))
                        .or_else(|| diff(Some(q), at(qx - 1, qy), ch, 1.0));
                    let gy = diff(at(qx, qy + 1), at(qx, qy - 1), ch, 2.0)
                        .or_else(|| diff(at(qx, qy + 1), Some(q), ch, 1.0))
                        .or_else(|| diff(Some(q), at(qx, qy - 1), ch, 1.0));
                    if let (Some(gx), Some(gy)) = (gx, gy) {
                        jxx += g * gx * gx;
                        jxy += g * gx * gy;
                        jyy += g * gy * gy;
                    }
                }
            }
        }
        // The gradient direction (the tensor's leading eigenvector) and how coherent it is.
        let half = 0.5 * (jxx - jyy);
        let root = (half * half + jxy * jxy).sqrt();
        let (l1, l2) = (0.5 * (jxx + jyy) + root, 0.5 * (jxx + jyy) - root);
        let coherence = if l1 + l2 > 1e-12 {
            ((l1 - l2) / (l1 + l2)).powi(2)
        } else {
            0.0
        };
        let (gx, gy) = if root > 1e-12 {
            let (vx, vy) = if jxx >= jyy {
                (l1 - jyy, jxy)
            } else {
                (jxy, l1 - jxx)
            };
            let n = (vx * vx + vy * vy).sqrt();
            (vx / n, vy / n)
        } else {
            (0.0, 0.0)
        };
        acc.iter_mut().for_each(|a| *a = 0.0);
        let mut total = 0.0f64;
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                let d2 = (dx * dx + dy * dy) as f64;
                if d2 == 0.0 || d2 > r * r {
                    continue;
                }
                let Some(q) = at(px + dx, py + dy) else {
                    continue;
                };
                if !known[q] {
                    continue;
                }
                let off = gx * dx as f64 + gy * dy as f64;
                let wgt = (-across * coherence * off * off).exp() / d2.sqrt();
                total += wgt;
                for (ch, a) in acc.iter_mut().enumerate() {
                    *a += wgt * f64::from(out.data[q * c + ch]);
                }
            }
        }
        if total > 0.0 {
            for (ch, a) in acc.iter().enumerate() {
                out.data[i * c + ch] = (a / total) as f32;
            }
            known[i] = true;
        }
    }
    // A pixel whose neighbourhood held nothing known (not reached in practice: every hole
    // pixel has a nearer one filled before it) takes the known pixels' mean.
    if known.iter().any(|&k| !k) {
        let mut mean = vec![0.0f64; c];
        let n = hole.iter().filter(|&&m| !m).count() as f64;
        for i in (0..w * h).filter(|&i| !hole[i]) {
            for (ch, m) in mean.iter_mut().enumerate() {
                *m += f64::from(y.data[i * c + ch]) / n;
            }
        }
        for i in (0..w * h).filter(|&i| !known[i]) {
            for (ch, m) in mean.iter().enumerate() {
                out.data[i * c + ch] = *m as f32;
            }
        }
    }
    out
}

/// The hole's pixels ordered by their Euclidean distance from the nearest known pixel that
/// borders the hole (ties by position).
fn fill_order(hole: &[bool], w: usize, h: usize) -> Vec<usize> {
    let border: Vec<(f64, f64)> = (0..w * h)
        .filter(|&i| !hole[i])
        .filter(|&i| {
            let (x, y) = (i % w, i / w);
            (x > 0 && hole[i - 1])
                || (x + 1 < w && hole[i + 1])
                || (y > 0 && hole[i - w])
                || (y + 1 < h && hole[i + w])
        })
        .map(|i| ((i % w) as f64, (i / w) as f64))
        .collect();
    let mut order: Vec<(f64, usize)> = (0..w * h)
        .filter(|&i| hole[i])
        .map(|i| {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            let d = border
                .iter()
                .map(|&(bx, by)| (bx - x) * (bx - x) + (by - y) * (by - y))
                .fold(f64::INFINITY, f64::min);
            (d, i)
        })
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    order.into_iter().map(|(_, i)| i).collect()
}
