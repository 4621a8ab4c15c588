//! Classical reconstructions from a measurement: the biharmonic fill of a hole and bicubic
//! upsampling, on planes of f64 values.
//!
//! They serve twice: as the observation image the EPS network sees next to μ* (a smooth estimate
//! to refine instead of zeros in a hole — any function of `y` is a valid extra input, since μ*
//! alone is sufficient for the posterior), and as the classical references every restoration is
//! measured against (`eval::reference`).

/// Conjugate-gradient iterations per pyramid level of [`biharmonic_plane`], and the relative
/// residual at which a level stops early.
const CG_ITERATIONS: usize = 400;
const CG_TOLERANCE: f64 = 1e-7;

/// One plane (`w × h`, row-major) filled where `fill` is true so that it is biharmonic there: the
/// smoothest continuation of the surroundings (`Δ²u = 0` inside the hole; scikit-image's
/// `inpaint_biharmonic` solves the same equation). Known pixels are returned unchanged.
///
/// Solved by conjugate gradients on the normal equations of `min Σ_p (Δu)(p)²` over the hidden
/// pixels (`p` ranging over the pixels whose 5-point stencil touches the hole, with a mirror
/// boundary at the plane's border), started from
/// the solution at half resolution, so large holes converge in a few hundred iterations. Needs at
/// least one known pixel and a plane of at least 3×3 (otherwise the plane comes back with the
/// hole set to the known mean, or unchanged).
pub fn biharmonic_plane(plane: &[f64], fill: &[bool], w: usize, h: usize) -> Vec<f64> {
    if w < 3 || h < 3 || fill.iter().all(|&f| f) || !fill.iter().any(|&f| f) {
        let known: Vec<f64> = (0..w * h).filter(|&i| !fill[i]).map(|i| plane[i]).collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        return (0..w * h)
            .map(|i| if fill[i] { mean } else { plane[i] })
            .collect();
    }
    solve_level(plane, fill, w, h)
}

/// One channel: a coarse solution as the starting point, then CG at this resolution.
fn solve_level(plane: &[f64], fill: &[bool], w: usize, h: usize) -> Vec<f64> {
    let hidden: Vec<usize> = (0..w * h).filter(|&i| fill[i]).collect();
    let mut u = plane.to_vec();
    // Starting point: the half-resolution solution, or the mean of the known pixels.
    if w >= 12 && h >= 12 && hidden.len() > 64 {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut cplane = vec![0.0; cw * ch];
        let mut cfill = vec![false; cw * ch];
        for cy in 0..ch {
            for cx in 0..cw {
                let (mut s, mut n, mut any_hidden) = (0.0, 0, false);
                for y in 2 * cy..(2 * cy + 2).min(h) {
                    for x in 2 * cx..(2 * cx + 2).min(w) {
                        if fill[y * w + x] {
                            any_hidden = true;
                        } else {
                            s += plane[y * w + x];
                            n += 1;
                        }
                    }
                }
                cfill[cy * cw + cx] = any_hidden;
                cplane[cy * cw + cx] = if n > 0 { s / n as f64 } else { 0.0 };
            }
        }
        if cfill.iter().any(|&f| !f) {
            let coarse = solve_level(&cplane, &cfill, cw, ch);
            for &i in &hidden {
                let (x, y) = (i % w, i / w);
                u[i] = coarse[(y / 2).min(ch - 1) * cw + (x / 2).min(cw - 1)];
            }
        }
    } else {
        let known: Vec<f64> = (0..w * h).filter(|&i| !fill[i]).map(|i| plane[i]).collect();
        let mean = known.iter().sum::<f64>() / known.len().max(1) as f64;
        for &i in &hidden {
            u[i] = mean;
        }
    }
    // The energy's terms: every pixel whose stencil touches the hole. The Laplacian is the grid
    // graph's — `Σ_q (u_q − u_p)` over the neighbours `q` inside the plane — so pixels on the
    // border get a Neumann (mirror) boundary instead of no term at all. Without those terms a
    // hole reaching the border had free directions (anything harmonic inside, unconstrained on
    // the border), and conjugate gradients could wander off along them to values far outside
    // the photo's range.
    let neighbours = |i: usize| grid_neighbours(i, w, h);
    let mut touches = vec![false; w * h];
    for &i in &hidden {
        touches[i] = true;
        let (n, k) = neighbours(i);
        for &j in &n[..k] {
            touches[j] = true;
        }
    }
    let terms: Vec<usize> = (0..w * h).filter(|&i| touches[i]).collect();
    let laplacian = |v: &[f64], p: usize| -> f64 {
        let (n, k) = neighbours(p);
        n[..k].iter().map(|&q| v[q]).sum::<f64>() - k as f64 * v[p]
    };
    // Gradient of ½Σ(Δu)² with respect to the hidden pixels, scattered into a full image.
    let grad = |v: &[f64], out: &mut [f64]| {
        out.iter_mut().for_each(|o| *o = 0.0);
        for &p in &terms {
            let l = laplacian(v, p);
            let (n, k) = neighbours(p);
            out[p] -= k as f64 * l;
            for &q in &n[..k] {
                out[q] += l;
            }
        }
    };
    // CG on M z = −g(u0) where M is the (linear) Hessian restricted to the hidden pixels, held
    // as a sparse matrix over the hidden pixels (at most 13 entries a row): each iteration is
    // one pass over it instead of a pass over every term and a scatter into a full image.
    let m = hessian_rows(&hidden, fill, &touches, &neighbours);
    let mut g = vec![0.0; w * h];
    grad(&u, &mut g);
    let mut r: Vec<f64> = hidden.iter().map(|&i| -g[i]).collect();
    let mut d = r.clone();
    let mut rr: f64 = r.iter().map(|v| v * v).sum();
    let start = rr.sqrt().max(1e-30);
    let mut md = vec![0.0; hidden.len()];
    for _ in 0..CG_ITERATIONS {
        if rr.sqrt() <= CG_TOLERANCE * start {
            break;
        }
        m.apply(&d, &mut md);
        let dmd: f64 = d.iter().zip(&md).map(|(a, b)| a * b).sum();
        if dmd <= 0.0 {
            break;
        }
        let a = rr / dmd;
        for (k, &i) in hidden.iter().enumerate() {
            u[i] += a * d[k];
            r[k] -= a * md[k];
        }
        let rr_new: f64 = r.iter().map(|v| v * v).sum();
        let beta = rr_new / rr;
        for (dk, rk) in d.iter_mut().zip(&r) {
            *dk = rk + beta * *dk;
        }
        rr = rr_new;
    }
    u
}

/// The up to four neighbours of pixel `i` inside a `w × h` plane, and how many there are.
fn grid_neighbours(i: usize, w: usize, h: usize) -> ([usize; 4], usize) {
    let (x, y) = (i % w, i / w);
    let mut n = [0usize; 4];
    let mut k = 0;
    for (inside, j) in [
        (x > 0, i.wrapping_sub(1)),
        (x + 1 < w, i + 1),
        (y > 0, i.wrapping_sub(w)),
        (y + 1 < h, i + w),
    ] {
        if inside {
            n[k] = j;
            k += 1;
        }
    }
    (n, k)
}

/// The Hessian of `½ Σ_p (Δu)(p)²` restricted to the hidden pixels, row by row (compressed
/// sparse rows over the hidden pixels' positions in `hidden`).
struct SparseRows {
    starts: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f64>,
}

impl SparseRows {
    /// `out = M v`.
    fn apply(&self, v: &[f64], out: &mut [f64]) {
        for (k, o) in out.iter_mut().enumerate() {
            let (a, b) = (self.starts[k], self.starts[k + 1]);
            *o = self.cols[a..b]
                .iter()
                .zip(&self.vals[a..b])
                .map(|(&j, &m)| m * v[j as usize])
                .sum();
        }
    }
}

/// `M_ij = Σ_p c_p(i)·c_p(j)` over the energy's terms `p` (pixels whose stencil touches the
/// hole, `touches`), where `c_p` is the Laplacian stencil at `p`: `−k` at `p` (its `k`
/// neighbours inside the plane) and 1 at each neighbour; `i`, `j` hidden.
fn hessian_rows(
    hidden: &[usize],
    fill: &[bool],
    touches: &[bool],
    neighbours: &dyn Fn(usize) -> ([usize; 4], usize),
) -> SparseRows {
    let mut slot = vec![u32::MAX; fill.len()];
    for (k, &i) in hidden.iter().enumerate() {
        slot[i] = k as u32;
    }
    // The stencil coefficient of pixel `q` in the term at `p`.
    let coeff = |p: usize, q: usize, k: usize| if p == q { -(k as f64) } else { 1.0 };
    let mut m = SparseRows {
        starts: Vec::with_capacity(hidden.len() + 1),
        cols: Vec::with_capacity(hidden.len() * 13),
        vals: Vec::with_capacity(hidden.len() * 13),
    };
    m.starts.push(0);
    let mut row: Vec<(u32, f64)> = Vec::with_capacity(16);
    for &i in hidden {
        row.clear();
        // The terms whose stencil holds i: i itself and its neighbours.
        let (ni, ki) = neighbours(i);
        for p in std::iter::once(i).chain(ni[..ki].iter().copied()) {
            if !touches[p] {
                continue;
            }
            let (np, kp) = neighbours(p);
            let ci = coeff(p, i, kp);
            for q in std::iter::once(p).chain(np[..kp].iter().copied()) {
                if !fill[q] {
                    continue;
                }
                let (col, v) = (slot[q], ci * coeff(p, q, kp));
                match row.iter_mut().find(|(c, _)| *c == col) {
                    Some(e) => e.1 += v,
                    None => row.push((col, v)),
                }
            }
        }
        row.sort_unstable_by_key(|e| e.0);
        for &(c, v) in &row {
            m.cols.push(c);
            m.vals.push(v);
        }
        m.starts.push(m.cols.len());
    }
    m
}

/// Keys' cubic convolution kernel with a = −0.5 (Catmull–Rom).
fn cubic(t: f64) -> f64 {
    let t = t.abs();
    if t <= 1.0 {
        1.5 * t * t * t - 2.5 * t * t + 1.0
    } else if t < 2.0 {
        -0.5 * t * t * t + 2.5 * t * t - 4.0 * t + 2.0
    } else {
        0.0
    }
}

/// The four taps `(source index, weight)` of output position `o` when upsampling `n_in` samples
/// by `factor`: the source position is `(o + 0.5)/factor − 0.5`, edges clamped.
fn cubic_taps(o: usize, n_in: usize, factor: usize) -> [(usize, f64); 4] {
    let src = (o as f64 + 0.5) / factor as f64 - 0.5;
    let base = src.floor();
    let mut t = [(0usize, 0.0f64); 4];
    for (k, tap) in t.iter_mut().enumerate() {
        let i = base as i64 - 1 + k as i64;
        *tap = (i.clamp(0, n_in as i64 - 1) as usize, cubic(src - i as f64));
    }
    t
}

/// Bicubic upsampling of one plane (`w × h`) by an integer `factor` (Keys' cubic convolution,
/// a = −0.5, pixel centres aligned, edges clamped); no clipping.
pub fn bicubic_plane(plane: &[f64], w: usize, h: usize, factor: usize) -> Vec<f64> {
    let (ow, oh) = (w * factor, h * factor);
    let xs: Vec<_> = (0..ow).map(|x| cubic_taps(x, w, factor)).collect();
    let ys: Vec<_> = (0..oh).map(|y| cubic_taps(y, h, factor)).collect();
    let mut out = vec![0.0; ow * oh];
    for (oy, yt) in ys.iter().enumerate() {
        for (ox, xt) in xs.iter().enumerate() {
            let mut acc = 0.0;
            for &(iy, wy) in yt {
                for &(ix, wx) in xt {
                    acc += wy * wx * plane[iy * w + ix];
                }
            }
            out[oy * ow + ox] = acc;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sparse Hessian times `v` equals the energy's gradient at `v` (known pixels zero),
    /// computed straight from the definition `½ Σ_p (Δv)(p)²` over the terms.
    #[test]
    fn sparse_hessian_is_the_energy_gradient() {
        let (w, h) = (9, 7);
        let fill: Vec<bool> = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                (x < 3 && y > 2) || (4..7).contains(&x) && (1..4).contains(&y) || i == 8
            })
            .collect();
        let hidden: Vec<usize> = (0..w * h).filter(|&i| fill[i]).collect();
        let mut touches = vec![false; w * h];
        for &i in &hidden {
            touches[i] = true;
            let (n, k) = grid_neighbours(i, w, h);
            for &j in &n[..k] {
                touches[j] = true;
            }
        }
        let m = hessian_rows(&hidden, &fill, &touches, &|i| grid_neighbours(i, w, h));
        let v: Vec<f64> = (0..hidden.len())
            .map(|k| ((k * 37 % 11) as f64 - 5.0) / 3.0)
            .collect();
        let mut full = vec![0.0; w * h];
        for (k, &i) in hidden.iter().enumerate() {
            full[i] = v[k];
        }
        let mut grad = vec![0.0; w * h];
        for p in (0..w * h).filter(|&p| touches[p]) {
            let (n, k) = grid_neighbours(p, w, h);
            let lap = n[..k].iter().map(|&q| full[q]).sum::<f64>() - k as f64 * full[p];
            grad[p] -= k as f64 * lap;
            for &q in &n[..k] {
                grad[q] += lap;
            }
        }
        let mut mv = vec![0.0; hidden.len()];
        m.apply(&v, &mut mv);
        for (k, &i) in hidden.iter().enumerate() {
            assert!(
                (mv[k] - grad[i]).abs() < 1e-12,
                "row {k}: {} against {}",
                mv[k],
                grad[i]
            );
        }
    }
}
