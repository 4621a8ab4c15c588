//! The photo-internal patch prior: its denoiser against a brute-force computation and against
//! the exact Gaussian-mixture posterior it must equal on a one-patch image, the bank's
//! exclusion of hole pixels, the nearest-neighbour field, and fills through the restoration
//! path (unmasked pixels bit-exact, seeded, diverse, bad masks refused clearly).
#![allow(clippy::unwrap_used)]

use eps_studio::eval::posterior_check::PatchCheck;
use eps_studio::photo::{Raster, RgbImage};
use eps_studio::prior::patch::search::{Field, FieldSearch, Metric, Precision, Queries};
use eps_studio::prior::patch::{
    Bank, PatchConfig, PatchDenoiser, Plane, PyramidConfig, Search, Transforms,
};
use eps_studio::restore::{self, Degradation, MethodChoice, Models, Prior, Settings};
use eps_studio::sampler::Flow;
use nalgebra::{DMatrix, DVector};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// A smooth random colour image with some texture, in `[-1, 1]`.
fn texture(w: usize, h: usize, seed: u64) -> Plane {
    let mut rng = StdRng::seed_from_u64(seed);
    let f: Vec<f64> = (0..9).map(|_| rng.random::<f64>()).collect();
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let (x, y, c) = (x as f64, y as f64, c as f64);
                let v = 0.5 * (f[0] * 1.3 * x + f[1] * 0.7 * y + c).sin()
                    + 0.3 * (f[2] * 2.1 * x - f[3] * 1.7 * y + f[4] * c).cos()
                    + 0.1 * (rng.random::<f64>() - 0.5);
                data.push(v as f32);
            }
        }
    }
    Plane::from_data(w, h, 3, data).unwrap()
}

/// A blob-shaped hole.
fn blob(w: usize, h: usize, (cx, cy): (f64, f64), r: f64) -> Vec<bool> {
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            (x - cx).powi(2) + 0.6 * (y - cy).powi(2) <= r * r
        })
        .collect()
}

/// The denoiser written out directly from its formulas, in f64, over every bank patch.
fn brute_force(
    u: &Plane,
    s2: &[f32],
    bank: &Bank,
    roi: &[bool],
    p: usize,
    (tau, window, shift): (f64, f64, f64),
) -> (Vec<f64>, Vec<f64>) {
    let (w, h, c) = (u.width, u.height, u.channels);
    let r = (p / 2) as f64;
    let sw = window * r.max(0.5);
    let om = |dy: usize, dx: usize| -> f64 {
        let (a, b) = (dy as f64 - r, dx as f64 - r);
        (-(a * a + b * b) / (2.0 * sw * sw)).exp().max(1e-4)
    };
    let mut num = vec![0.0; w * h * c];
    let mut sq = vec![0.0; w * h * c];
    let mut den = vec![0.0; w * h];
    for qy in 0..=h - p {
        for qx in 0..=w - p {
            let touches = (0..p).any(|dy| (0..p).any(|dx| roi[(qy + dy) * w + qx + dx]));
            if !touches {
                continue;
            }
            let lam =
                |dy: usize, dx: usize| 1.0 / (f64::from(s2[(qy + dy) * w + qx + dx]) + tau * tau);
            let uv = |dy: usize, dx: usize, ch: usize| {
                f64::from(u.data[((qy + dy) * w + qx + dx) * c + ch])
            };
            // With a shift `o_c ~ N(0, shift²)` added to channel c of a bank window:
            // `u − b − o = noise of precision λ`, so `o | u ~ N(R_c / P_c, 1 / P_c)` with
            // `R_c = Σ λ (u − b)_c`, `P_c = 1/shift² + Σ λ`, and the window's weight gains
            // `exp(½ R_c² / P_c)`.
            let precision: f64 = (0..p)
                .flat_map(|dy| (0..p).map(move |dx| (dy, dx)))
                .map(|(dy, dx)| lam(dy, dx))
                .sum::<f64>()
                + if shift > 0.0 {
                    1.0 / (shift * shift)
                } else {
                    0.0
                };
            let (logits, shifts): (Vec<f64>, Vec<Vec<f64>>) = bank
                .entries
                .iter()
                .map(|&e| {
                    let b = bank.patch_values(e);
                    let mut l = 0.0;
                    let mut r = vec![0.0; c];
                    for dy in 0..p {
                        for dx in 0..p {
                            for ch in 0..c {
                                let bv = f64::from(b[(dy * p + dx) * c + ch]);
                                l += lam(dy, dx) * (uv(dy, dx, ch) * bv - 0.5 * bv * bv);
                                r[ch] += lam(dy, dx) * (uv(dy, dx, ch) - bv);
                            }
                        }
                    }
                    if shift == 0.0 {
                        return (l, vec![0.0; c]);
                    }
                    let o: Vec<f64> = r.iter().map(|r| r / precision).collect();
                    (
                        l + 0.5 * r.iter().map(|r| r * r).sum::<f64>() / precision,
                        o,
                    )
                })
                .unzip();
            let shift_var = if shift > 0.0 { 1.0 / precision } else { 0.0 };
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let mut m = vec![0.0; p * p * c];
            let mut m2 = vec![shift_var; p * p * c];
            for ((&e, wt), o) in bank.entries.iter().zip(&weights).zip(&shifts) {
                for (k, &bv) in bank.patch_values(e).iter().enumerate() {
                    let v = f64::from(bv) + o[k % c];
                    m[k] += wt / total * v;
                    m2[k] += wt / total * v * v;
                }
            }
            for dy in 0..p {
                for dx in 0..p {
                    let pix = (qy + dy) * w + qx + dx;
                    let s = f64::from(s2[pix]);
                    let g = tau * tau / (tau * tau + s);
                    den[pix] += om(dy, dx);
                    for ch in 0..c {
                        let k = (dy * p + dx) * c + ch;
                        let est = m[k] + g * (uv(dy, dx, ch) - m[k]);
                        let var = (1.0 - g).powi(2) * (m2[k] - m[k] * m[k]) + g * s;
                        num[pix * c + ch] += om(dy, dx) * est;
                        sq[pix * c + ch] += om(dy, dx) * (var + est * est);
                    }
                }
            }
        }
    }
    let mut mean: Vec<f64> = u.data.iter().map(|&v| f64::from(v)).collect();
    let mut variance: Vec<f64> = s2.iter().map(|&v| f64::from(v)).collect();
    for pix in 0..w * h {
        if den[pix] > 0.0 {
            let mut v = 0.0;
            for ch in 0..c {
                let mu = num[pix * c + ch] / den[pix];
                mean[pix * c + ch] = mu;
                v += sq[pix * c + ch] / den[pix] - mu * mu;
            }
            variance[pix] = v / c as f64;
        }
    }
    (mean, variance)
}

/// Every search the denoiser has — the streamed exact sums, and a field that holds the whole
/// bank — gives the formulas' posterior mean and variance, aggregation included.
#[test]
fn the_denoiser_equals_a_brute_force_computation() {
    let (w, h, p) = (15, 12, 3);
    let y = texture(w, h, 1);
    let hole = blob(w, h, (7.0, 6.0), 3.0);
    let bank = Bank::new(&y, &hole, p, Transforms::MIRROR).unwrap();
    let n = bank.len();
    assert!(n > 20, "{n}");
    let mut rng = StdRng::seed_from_u64(3);
    for sigma in [2.0_f64, 0.3, 0.05] {
        let s2: Vec<f32> = hole
            .iter()
            .map(|&f| if f { (sigma * sigma) as f32 } else { 0.0025 })
            .collect();
        let mut u = y.clone();
        for (i, v) in u.data.iter_mut().enumerate() {
            *v += (f64::from(s2[i / 3]).sqrt() * (rng.random::<f64>() - 0.5) * 3.4) as f32;
        }
        for (tau, window, shift) in [
            (0.05, 0.6, 0.0),
            (0.02, f64::INFINITY, 0.0),
            (0.05, 0.6, 0.1),
            (0.02, f64::INFINITY, 0.3),
        ] {
            let (want_mean, want_var) = brute_force(&u, &s2, &bank, &hole, p, (tau, window, shift));
            for search in [
                Search::Exact,
                Search::Field(FieldSearch {
                    k: n,
                    sweeps: 1,
                    random_draws: 0,
                    radius: None,
                }),
            ] {
                let cfg = PatchConfig {
                    patch: p,
                    tau,
                    tau_per_sigma: 0.0,
                    window,
                    search,
                    shift,
                };
                let d = PatchDenoiser::new(bank.clone(), cfg, (w, h), Some(&hole)).unwrap();
                let est = d.estimate(&u, &s2, sigma, 0).unwrap();
                let dm = est
                    .mean
                    .data
                    .iter()
                    .zip(&want_mean)
                    .fold(0.0_f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
                let dv = est
                    .variance
                    .iter()
                    .zip(&want_var)
                    .fold(0.0_f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
                assert!(
                    dm < 2e-4 && dv < 2e-4,
                    "σ {sigma} τ {tau} shift {shift} {search:?}: mean off by {dm}, variance by {dv}"
                );
            }
        }
    }
}

/// On an image the size of one patch the prior is a Gaussian mixture (means: the bank's
/// windows, covariance τ² I), and the denoiser must be its exact posterior mean under any
/// diagonal noise.
#[test]
fn a_one_patch_image_is_the_exact_mixture_posterior_mean() {
    for shift in [0.0, 0.1] {
        one_patch_posterior(shift);
    }
}

/// The one-patch check with a window shift of standard deviation `shift` (each component's
/// covariance then adds `shift²` within each colour channel).
fn one_patch_posterior(shift: f64) {
    let check = PatchCheck::new(3, 5, 10, 0.15, shift, 7).unwrap();
    let (c, p) = (3, 5);
    let mut rng = StdRng::seed_from_u64(11);
    for sigma in [5.0_f64, 0.5, 0.05] {
        let s2: Vec<f32> = (0..p * p)
            .map(|_| {
                if rng.random::<f64>() < 0.6 {
                    (sigma * sigma) as f32
                } else {
                    0.0025
                }
            })
            .collect();
        let u_hwc: Vec<f32> = (0..p * p * c)
            .map(|_| (rng.random::<f64>() * 1.6 - 0.8) as f32)
            .collect();
        let u = Plane::from_data(p, p, c, u_hwc.clone()).unwrap();
        let est = check.denoiser.estimate(&u, &s2, sigma, 0).unwrap();
        // The mixture works on (channel, row, column) columns.
        let chw = |v: &[f32]| -> DVector<f64> {
            DVector::from_fn(c * p * p, |i, _| {
                f64::from(v[(i % (p * p)) * c + i / (p * p)])
            })
        };
        let cov = DMatrix::from_fn(c * p * p, c * p * p, |i, j| {
            if i == j {
                f64::from(s2[i % (p * p)])
            } else {
                0.0
            }
        });
        let u_col = DMatrix::from_column_slice(c * p * p, 1, chw(&u_hwc).as_slice());
        let exact = check.mixture.denoise_with_covariance(&u_col, &cov).unwrap();
        let ours = chw(&est.mean.data);
        let err = (0..c * p * p).fold(0.0_f64, |m, i| m.max((ours[i] - exact[(i, 0)]).abs()));
        assert!(err < 1e-4, "σ {sigma}, shift {shift}: {err}");
        // The variance too: the exact posterior's per-pixel variance averaged over channels.
        let exact_var = check
            .mixture
            .denoise_variance_with_covariance(&u_col, &cov)
            .unwrap();
        for j in 0..p * p {
            let want = (0..c).map(|k| exact_var[k * p * p + j]).sum::<f64>() / c as f64;
            let got = f64::from(est.variance[j]);
            assert!(
                (got - want).abs() < 1e-4 * want.max(1.0),
                "σ {sigma}, shift {shift}, pixel {j}: variance {got} against the exact {want}"
            );
        }
    }
}

/// No bank window holds a pixel of the hole (or a query over the hole would find itself),
/// mirrored windows included, and every window of known pixels is there.
#[test]
fn no_bank_window_holds_a_hole_pixel() {
    let (w, h, p) = (23, 17, 5);
    let y = texture(w, h, 4);
    let hole = blob(w, h, (9.0, 8.0), 4.5);
    let bank = Bank::new(&y, &hole, p, Transforms::MIRROR).unwrap();
    let mut expected = 0;
    for by in 0..=h - p {
        for bx in 0..=w - p {
            if (0..p).all(|dy| (0..p).all(|dx| !hole[(by + dy) * w + bx + dx])) {
                expected += 1;
            }
        }
    }
    assert_eq!(bank.len(), 2 * expected);
    for &e in &bank.entries {
        let src = &bank.sources[usize::from(e.source)];
        for dy in 0..p {
            for dx in 0..p {
                let x = usize::from(e.x) + dx;
                let photo_x = if src.mirrored { w - 1 - x } else { x };
                let pix = (usize::from(e.y) + dy) * w + photo_x;
                assert!(!hole[pix], "{e:?} holds hole pixel {pix}");
                // The window shows the photo's own pixels there.
                let got =
                    &src.image.row(usize::from(e.x), usize::from(e.y), dy, p)[dx * 3..dx * 3 + 3];
                assert_eq!(got, &y.data[pix * 3..pix * 3 + 3]);
            }
        }
    }
}

fn distance(u: &Plane, q: (u32, u32), bank: &Bank, e: eps_studio::prior::patch::Entry) -> f32 {
    let p = bank.patch;
    let b = bank.patch_values(e);
    let mut d = 0.0;
    for dy in 0..p {
        let ur = u.row(q.0 as usize, q.1 as usize, dy, p);
        for (k, v) in ur.iter().enumerate() {
            d += (v - b[dy * p * 3 + k]).powi(2);
        }
    }
    d
}

/// PatchMatch finds the nearest window for nearly every query, from random matches, in a few
/// calls (propagation and random search, the field kept between calls).
/// `calls` denoiser calls' worth of search on `field` (seeds 0, 1, …), one precision per pixel.
fn search_calls(
    field: &mut Field,
    u: &Plane,
    lambda: &[f32],
    queries: &Queries,
    bank: &Bank,
    search: &FieldSearch,
    calls: u64,
) {
    for call in 0..calls {
        field.search_and_weigh(
            u,
            Metric::plain(Precision::per_pixel(lambda, u.width, 3)),
            queries,
            bank,
            search,
            call,
        );
    }
}

#[test]
fn the_field_finds_the_nearest_windows() {
    let (w, h, p) = (48, 40, 5);
    let y = texture(w, h, 9);
    let hole = blob(w, h, (24.0, 20.0), 9.0);
    let bank = Bank::new(&y, &hole, p, Transforms::MIRROR).unwrap();
    let queries = Queries::new(w, h, p, Some(&hole));
    let mut u = y.clone();
    let mut rng = StdRng::seed_from_u64(5);
    for v in &mut u.data {
        *v += ((rng.random::<f64>() - 0.5) * 0.05) as f32;
    }
    let lambda = vec![1.0_f32; w * h];
    let search = FieldSearch::default();
    let mut field = Field::random(&queries, &bank, search.k, 1);
    search_calls(&mut field, &u, &lambda, &queries, &bank, &search, 6);
    let (mut exact, mut close) = (0, 0);
    for (qi, &q) in queries.corners.iter().enumerate() {
        let all: Vec<f32> = bank
            .entries
            .iter()
            .map(|&e| distance(&u, q, &bank, e))
            .collect();
        let best = all.iter().copied().fold(f32::INFINITY, f32::min);
        let typical = all.iter().sum::<f32>() / all.len() as f32;
        let ours = distance(&u, q, &bank, field.entries[qi * field.k]);
        exact += usize::from(ours <= best * 1.0001 + 1e-6);
        // Close: within 2% of the way from the nearest window to a typical one.
        close += usize::from(ours <= best + 0.02 * (typical - best));
    }
    let (exact, close) = (
        exact as f64 / queries.len() as f64,
        close as f64 / queries.len() as f64,
    );
    assert!(
        exact > 0.75 && close > 0.95,
        "the field holds the nearest window for {exact:.3} of the queries, a close one for {close:.3}"
    );
}

/// A field searched locally (a finer level refining its coarser level's matches) stays in the
/// part of the bank it starts in, even where the far part holds exact copies of the queries,
/// which the whole-bank search finds.
#[test]
fn a_local_field_stays_near_its_start() {
    let (w, h, p) = (96, 32, 5);
    let u = texture(w, h, 4);
    // The bank's right half copies the queries' half, 48 px to the right; its left half is
    // another texture.
    let other = texture(w, h, 11);
    let mut b = other.clone();
    for y in 0..h {
        for x in 48..w {
            for c in 0..3 {
                b.data[(y * w + x) * 3 + c] = u.data[(y * w + x - 48) * 3 + c];
            }
        }
    }
    let bank = Bank::new(&b, &vec![false; w * h], p, Transforms::NONE).unwrap();
    let roi = blob(w, h, (20.0, 16.0), 7.0);
    let queries = Queries::new(w, h, p, Some(&roi));
    let lambda = vec![1.0_f32; w * h];
    let exact_share = |search: &FieldSearch| {
        let mut field = Field::random(&queries, &bank, search.k, 1);
        // Every query starts among the bank's left windows.
        let left: Vec<_> = bank.entries.iter().filter(|e| e.x < 30).copied().collect();
        for (i, e) in field.entries.iter_mut().enumerate() {
            *e = left[(i * 7919) % left.len()];
        }
        search_calls(&mut field, &u, &lambda, &queries, &bank, search, 4);
        let found = queries
            .corners
            .iter()
            .enumerate()
            .filter(|&(qi, &q)| distance(&u, q, &bank, field.entries[qi * field.k]) < 1e-6)
            .count();
        let far = field.entries.iter().filter(|e| e.x >= 40).count();
        (
            found as f64 / queries.len() as f64,
            far as f64 / field.entries.len() as f64,
        )
    };
    let global = FieldSearch::default();
    let (found, _) = exact_share(&global);
    assert!(
        found > 0.9,
        "the whole-bank search finds the exact copies for {found:.2} of the queries"
    );
    let local = match Search::Field(global).local(2) {
        Search::Field(f) => f,
        other => panic!("a local field search became {other:?}"),
    };
    let (found, far) = exact_share(&local);
    assert!(
        found == 0.0 && far == 0.0,
        "the local search reached the far copies: {found:.2} of the queries found them, {far:.2} of the entries lie there"
    );
}

/// The turned source holds every window of the photo's known pixels turned by 180° (rows and
/// columns reversed), and only those.
#[test]
fn turned_windows_are_the_photos_own_upside_down() {
    let (w, h, p) = (24, 18, 5);
    let y = texture(w, h, 4);
    let hole = blob(w, h, (9.0, 7.0), 3.5);
    let plain = Bank::new(&y, &hole, p, Transforms::NONE).unwrap();
    let both = Bank::new(
        &y,
        &hole,
        p,
        Transforms {
            mirror: false,
            turn: true,
        },
    )
    .unwrap();
    let turned: Vec<_> = both
        .entries
        .iter()
        .filter(|e| both.sources[usize::from(e.source)].turned)
        .collect();
    assert_eq!(both.len(), 2 * plain.len());
    assert_eq!(turned.len(), plain.len());
    let c = y.channels;
    for &&e in &turned {
        let src = &both.sources[usize::from(e.source)];
        let own = eps_studio::prior::patch::Entry {
            source: 0,
            x: (src.cols - 1 - usize::from(e.x)) as u16,
            y: (src.rows - 1 - usize::from(e.y)) as u16,
        };
        assert!(
            plain.is_valid(own),
            "{e:?} turns {own:?}, which touches the hole"
        );
        let (a, b) = (both.patch_values(e), plain.patch_values(own));
        for dy in 0..p {
            for dx in 0..p {
                for ch in 0..c {
                    assert_eq!(
                        a[(dy * p + dx) * c + ch],
                        b[((p - 1 - dy) * p + p - 1 - dx) * c + ch]
                    );
                }
            }
        }
    }
}

/// `Turn::Auto` takes the turned windows where the photo looks alike either way up around
/// the hole (a shadow's ellipse, whose other end is the hidden one turned), and leaves them
/// out where it has an up and a down (bands shaded from light at the bottom to dark at the
/// top, turned: dark at the bottom).
#[test]
fn turned_windows_where_the_photo_looks_alike_either_way_up() {
    use eps_studio::prior::patch::pyramid::{TURN_BELOW, Turn, turn_ratio};
    let (w, h) = (96, 64);
    let mut cfg = small_pyramid(12);
    cfg.turn = Turn::Auto;
    use eps_studio::prior::patch::{Guide, Prepared};
    let prepare = |y: &Plane, hole: &[bool], cfg: &PyramidConfig| {
        Prepared::new(y, hole, 0.02, cfg, &Guide::patches()).unwrap()
    };
    // Grain of ±0.05, so that no window matches another exactly.
    let mut rng = StdRng::seed_from_u64(8);
    let mut grain = move || 0.1 * (rng.random::<f32>() - 0.5);
    // A dark tilted ellipse on a light floor, its left end in the hole.
    let mut shadow = Plane::zeros(w, h, 3);
    for (i, px) in shadow.data.chunks_exact_mut(3).enumerate() {
        let (x, y) = ((i % w) as f64 - 48.0, (i / w) as f64 - 32.0);
        let (u, v) = (0.9 * x + 0.45 * y, -0.45 * x + 0.9 * y);
        let inside = (u / 30.0).powi(2) + (v / 12.0).powi(2) <= 1.0;
        let g = grain();
        px.fill(if inside { -0.4 } else { 0.5 } + g);
    }
    let hole = blob(w, h, (24.0, 22.0), 9.0);
    let prepared = prepare(&shadow, &hole, &cfg);
    let ratio = prepared
        .turn_ratio()
        .expect("the hole has known windows around it");
    assert!(
        ratio < TURN_BELOW && prepared.turned(),
        "the shadow's ratio {ratio:.3}"
    );
    // Horizontal bands 8 pixels tall, each from dark at its top to light at its bottom.
    let mut bands = Plane::zeros(w, h, 3);
    for (i, px) in bands.data.chunks_exact_mut(3).enumerate() {
        px.fill(-0.8 + 1.6 * ((i / w) % 8) as f32 / 7.0 + grain());
    }
    let hole = blob(w, h, (48.0, 32.0), 9.0);
    let prepared = prepare(&bands, &hole, &cfg);
    let ratio = prepared
        .turn_ratio()
        .expect("the hole has known windows around it");
    assert!(
        ratio > 2.0 * TURN_BELOW && !prepared.turned(),
        "the bands' ratio {ratio:.3}"
    );
    // The fixed choices are taken as they are, without the ratio.
    for (turn, turned) in [(Turn::Always, true), (Turn::Never, false)] {
        cfg.turn = turn;
        let prepared = prepare(&bands, &hole, &cfg);
        assert_eq!((prepared.turned(), prepared.turn_ratio()), (turned, None));
    }
    // Nothing known around the hole, or no window beside it: no ratio.
    assert_eq!(turn_ratio(&bands, &vec![true; w * h], 5, 3), None);
    assert_eq!(turn_ratio(&bands, &vec![false; w * h], 5, 3), None);
    assert!(
        matches!("sideways".parse::<Turn>(), Err(e) if e.to_string().contains("auto, never or always"))
    );
}

/// The ratio's nearest-window searches (sorted by mean, stopping early) find what a search of
/// every window finds.
#[test]
fn the_turn_ratio_equals_brute_force() {
    use eps_studio::prior::patch::pyramid::turn_ratio;
    let (w, h, p) = (40, 30, 5);
    let y = texture(w, h, 6);
    let hole = blob(w, h, (18.0, 14.0), 6.0);
    let window = |x: usize, yy: usize, turned: bool| -> Vec<f32> {
        let mut v = Vec::new();
        for dy in 0..p {
            for dx in 0..p {
                let (sy, sx) = if turned {
                    (yy + p - 1 - dy, x + p - 1 - dx)
                } else {
                    (yy + dy, x + dx)
                };
                v.extend_from_slice(&y.data[(sy * w + sx) * 3..][..3]);
            }
        }
        v
    };
    let known =
        |x: usize, yy: usize| (0..p).all(|dy| (0..p).all(|dx| !hole[(yy + dy) * w + x + dx]));
    let near_hole = |x: usize, yy: usize| {
        let (cx, cy) = ((x + p / 2) as isize, (yy + p / 2) as isize);
        (0..w * h).any(|i| {
            hole[i]
                && ((i % w) as isize - cx).abs() <= p as isize
                && ((i / w) as isize - cy).abs() <= p as isize
        })
    };
    let windows: Vec<(usize, usize)> = (0..=h - p)
        .flat_map(|yy| (0..=w - p).map(move |x| (x, yy)))
        .filter(|&(x, yy)| known(x, yy))
        .collect();
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut ratios: Vec<f64> = windows
        .iter()
        .filter(|&&(x, yy)| near_hole(x, yy))
        .map(|&(x, yy)| {
            let a = window(x, yy, false);
            let (mut plain, mut turned) = (f32::INFINITY, f32::INFINITY);
            for &(bx, by) in &windows {
                if bx.abs_diff(x) < p && by.abs_diff(yy) < p {
                    continue;
                }
                plain = plain.min(dist(&a, &window(bx, by, false)));
                turned = turned.min(dist(&a, &window(bx, by, true)));
            }
            f64::from((turned + 1e-4) / (plain + 1e-4))
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let brute = ratios[ratios.len() / 2];
    let fast = turn_ratio(&y, &hole, p, 3).unwrap();
    assert!(
        (fast - brute).abs() <= 1e-4 * brute,
        "turn_ratio {fast} against brute force {brute} over {} windows",
        ratios.len()
    );
}

/// A coarse match moves to the finer copy of the same place: its centre doubled (plus the
/// query's own half-pixel), in the photo's own columns and rows for mirrored and turned
/// sources too.
#[test]
fn the_coarse_field_moves_to_the_same_places() {
    // Odd sides: the coarser level's last column and row then cover one finer pixel, and a
    // reversed source's windows do not line up with the doubled ones in its own coordinates.
    let (w, h) = (63, 47);
    let fine = texture(w, h, 2);
    let hole = blob(w, h, (32.0, 24.0), 8.0);
    let cfg = small_pyramid(4);
    let levels = eps_studio::prior::patch::pyramid::levels(&fine, &hole, 0.05, &cfg);
    assert!(levels.len() >= 2);
    let (f, c) = (&levels[0], &levels[1]);
    let p = 5;
    let t = Transforms {
        mirror: true,
        turn: true,
    };
    let (fb, cb) = (
        Bank::new(&f.y, &f.hole, p, t).unwrap(),
        Bank::new(&c.y, &c.hole, p, t).unwrap(),
    );
    let (fq, cq) = (
        Queries::new(f.y.width, f.y.height, p, Some(&f.hole)),
        Queries::new(c.y.width, c.y.height, p, Some(&c.hole)),
    );
    let coarse = Field::random(&cq, &cb, 4, 3);
    let up = Field::upsampled(&coarse, &cq, &cb, &fq, &fb, 0);
    let r = (p / 2) as isize;
    let photo_centre = |bank: &Bank, e: eps_studio::prior::patch::Entry| {
        let s = &bank.sources[usize::from(e.source)];
        let (x, y) = (e.x as isize + r, e.y as isize + r);
        let x = if s.mirrored || s.turned {
            s.image.width as isize - 1 - x
        } else {
            x
        };
        let y = if s.turned {
            s.image.height as isize - 1 - y
        } else {
            y
        };
        (x, y)
    };
    let mut kinds = [0; 3];
    let mut checked = 0;
    for (qi, &(qx, qy)) in fq.corners.iter().enumerate() {
        let (fx, fy) = (qx as isize + r, qy as isize + r);
        let (cx, cy) = (fx / 2 - r, fy / 2 - r);
        let Some(ci) = cq
            .corners
            .iter()
            .position(|&(x, y)| (x as isize, y as isize) == (cx, cy))
        else {
            continue;
        };
        let e = up.entries[qi * up.k];
        let ce = coarse.entries[ci * coarse.k];
        if !fb.is_valid(e) || e.source != ce.source {
            continue;
        }
        let (px, py) = photo_centre(&cb, ce);
        let (gx, gy) = photo_centre(&fb, e);
        if (gx - 2 * px, gy - 2 * py) != (0, 0)
            && (gx - 2 * px, gy - 2 * py) != (1, 0)
            && (gx - 2 * px, gy - 2 * py) != (0, 1)
            && (gx - 2 * px, gy - 2 * py) != (1, 1)
        {
            panic!("coarse centre {px},{py} went to {gx},{gy}");
        }
        // The query's own half-pixel picks which of the four.
        let (dx, dy) = (gx - 2 * px, gy - 2 * py);
        let src = &cb.sources[usize::from(ce.source)];
        assert_eq!(dy, if src.turned { 1 - fy % 2 } else { fy % 2 });
        let flipped = src.mirrored || src.turned;
        assert_eq!(dx, if flipped { 1 - fx % 2 } else { fx % 2 });
        kinds[usize::from(src.mirrored) + 2 * usize::from(src.turned)] += 1;
        checked += 1;
    }
    assert!(checked > 50, "{checked}");
    assert!(
        kinds.iter().all(|&n| n > 5),
        "matches checked in the photo, its mirror image and turned: {kinds:?}"
    );
}

/// The coarser levels' detail channel tells fine stripes from a flat area of the same mean
/// colour, and knows nothing where the hole is.
#[test]
fn the_detail_channel_tells_texture_from_flat_colour() {
    let (w, h) = (32, 16);
    // Left half: one-pixel stripes of ±0.8 (mean 0); right half: flat 0.
    let mut y = Plane::zeros(w, h, 3);
    for r in 0..h {
        for x in 0..w / 2 {
            let v = if x % 2 == 0 { 0.8 } else { -0.8 };
            y.data[(r * w + x) * 3..][..3].copy_from_slice(&[v, v, v]);
        }
    }
    let mut hole = vec![false; w * h];
    hole[5 * w + 5] = true;
    let detail = eps_studio::prior::patch::pyramid::detail_channels(&y, &hole, 3, 1.0);
    assert_eq!(detail.len(), 3);
    assert!(detail[0].iter().all(|&v| v == 0.0));
    for (l, d) in detail.iter().enumerate().skip(1) {
        let (lw, lh) = (w >> l, h >> l);
        assert_eq!(d.len(), lw * lh, "level {l}");
        for (i, &v) in d.iter().enumerate() {
            let x = i % lw;
            // The hole pixel (5, 5) is under (2, 2) one level up and (1, 1) two up.
            if (l, i) == (1, 2 * lw + 2) || (l, i) == (2, lw + 1) {
                assert_eq!(v, 0.0, "level {l}, pixel {i}: a hole pixel");
            } else if x < lw / 2 {
                assert!((v - 0.8).abs() < 1e-5, "level {l}, stripes: {v}");
            } else {
                assert!(v.abs() < 1e-5, "level {l}, flat: {v}");
            }
        }
    }
}

/// A coarser level's pixel is the mean of the known crop pixels under it, and a hole pixel where
/// fewer than `known_fraction` of them are known: by default any hole pixel below makes it a
/// hole; at 0.5 a column of known pixels beside a one-pixel-wide hole survives the halving.
#[test]
fn a_coarser_pixel_is_the_mean_of_the_known_pixels_under_it() {
    use eps_studio::prior::patch::pyramid::levels;
    let (w, h) = (64, 64);
    let y = texture(w, h, 3);
    // A one-pixel-wide hole in column 1, every row: the coarser column 0 covers one known and
    // one hole column.
    let hole: Vec<bool> = (0..w * h).map(|i| i % w == 1).collect();
    let mut cfg = small_pyramid(16);
    cfg.max_levels = 2;
    let at = |p: &Plane, x: usize, r: usize, ch: usize| p.data[(r * p.width + x) * 3 + ch];
    for (fraction, column_known) in [(1.0, false), (0.6, false), (0.5, true)] {
        cfg.known_fraction = fraction;
        let l = levels(&y, &hole, 0.05, &cfg);
        assert_eq!(l.len(), 2, "known fraction {fraction}: two levels");
        let c = &l[1];
        assert_eq!((c.y.width, c.y.height), (32, 32));
        for r in 0..32 {
            assert_eq!(
                !c.hole[r * 32],
                column_known,
                "fraction {fraction}, row {r}"
            );
            for ch in 0..3 {
                // Column 0: the mean of the known column 0 of the crop, or 0 in the hole.
                let left = if column_known {
                    (at(&y, 0, 2 * r, ch) + at(&y, 0, 2 * r + 1, ch)) / 2.0
                } else {
                    0.0
                };
                assert!(
                    (at(&c.y, 0, r, ch) - left).abs() < 1e-5,
                    "fraction {fraction}"
                );
                // Column 5: four known pixels, their mean.
                let mean = (at(&y, 10, 2 * r, ch)
                    + at(&y, 11, 2 * r, ch)
                    + at(&y, 10, 2 * r + 1, ch)
                    + at(&y, 11, 2 * r + 1, ch))
                    / 4.0;
                assert!((at(&c.y, 5, r, ch) - mean).abs() < 1e-5);
            }
            assert!(!c.hole[r * 32 + 5]);
        }
    }
    cfg.known_fraction = 0.0;
    assert!(
        eps_studio::prior::patch::fill(
            &y,
            &hole,
            0.05,
            &[0],
            &cfg,
            &eps_studio::prior::patch::Guide::patches(),
            &mut |_| Flow::Continue,
        )
        .is_err_and(|e| e.to_string().contains("known fraction"))
    );
}

/// The ring's contrast counts the known pixels within reach of a window over the hole and
/// nothing else, and `ring_tau` widens the kernel on the coarser levels only, never below τ;
/// out-of-range settings are refused.
#[test]
fn the_ring_tau_follows_the_contrast_next_to_the_hole() {
    use eps_studio::prior::patch::pyramid::{Level, level_patch_config, ring_spread};
    let (w, h) = (32, 32);
    // Hole: the square 10..20. Within 4 pixels of it (rows and columns 6..24): rows of ±0.5.
    // Farther out: a flat 0.9. In the hole: 5, which must not count.
    let in_hole = |x: usize, y: usize| (10..20).contains(&x) && (10..20).contains(&y);
    let near = |x: usize, y: usize| (6..24).contains(&x) && (6..24).contains(&y);
    let mut data = Vec::with_capacity(w * h * 3);
    let mut hole = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let v = if in_hole(x, y) {
                5.0
            } else if near(x, y) {
                if y % 2 == 0 { 0.5 } else { -0.5 }
            } else {
                0.9
            };
            data.extend([v, v, v]);
            hole.push(in_hole(x, y));
        }
    }
    let y = Plane::from_data(w, h, 3, data).unwrap();
    let spread = ring_spread(&y, &hole, 3, 4);
    assert!(
        (spread - 0.5).abs() < 1e-6,
        "ring spread {spread}, expected 0.5"
    );
    // A reach of 0 finds no known pixel; no hole, no ring.
    assert_eq!(ring_spread(&y, &hole, 3, 0), 0.0);
    assert_eq!(ring_spread(&y, &vec![false; w * h], 3, 4), 0.0);

    let level = Level {
        y,
        hole,
        sigma_y: 0.05,
    };
    let mut cfg = PyramidConfig::default();
    let tau = cfg.patch.tau;
    assert_eq!(
        level_patch_config(&cfg, 1, 3, &level, 3).tau,
        tau,
        "off by default"
    );
    cfg.ring_tau = 0.1;
    assert_eq!(
        level_patch_config(&cfg, 0, 3, &level, 3).tau,
        tau,
        "the finest level keeps τ"
    );
    let coarse = level_patch_config(&cfg, 1, 3, &level, 3).tau;
    assert!(
        (coarse - 0.05).abs() < 1e-9,
        "coarser level: τ {coarse}, expected 0.1 × 0.5"
    );
    cfg.ring_tau = 0.001;
    assert_eq!(
        level_patch_config(&cfg, 2, 3, &level, 3).tau,
        tau,
        "never below τ"
    );

    for bad in [-0.1, f64::NAN, 2.0] {
        cfg.ring_tau = bad;
        assert!(
            cfg.validate()
                .is_err_and(|e| e.to_string().contains("ring τ")),
            "ring τ {bad} must be refused"
        );
    }
}

/// The coarsest level lays out the hole from the whole bank; every finer level searches near
/// the matches it starts with, within `fine_radius` and without draws from the whole bank;
/// `fine_radius = 0` searches the whole bank everywhere.
#[test]
fn finer_levels_search_near_their_coarser_matches() {
    use eps_studio::prior::patch::pyramid::{Level, level_patch_config};
    let (w, h) = (24, 24);
    let level = Level {
        y: texture(w, h, 3),
        hole: blob(w, h, (12.0, 12.0), 4.0),
        sigma_y: 0.05,
    };
    let field = |s: Search| match s {
        Search::Auto { field, .. } | Search::Field(field) => field,
        Search::Exact => panic!("the default search has a field"),
    };
    let mut cfg = PyramidConfig::default();
    assert!(cfg.fine_radius > 0, "on by default");
    let whole = field(cfg.patch.search);
    assert_eq!(whole.radius, None);
    assert!(whole.random_draws > 0);
    let coarsest = field(level_patch_config(&cfg, 2, 3, &level, 3).search);
    assert_eq!(
        coarsest, whole,
        "the coarsest level searches the whole bank"
    );
    for index in [0, 1] {
        let finer = field(level_patch_config(&cfg, index, 3, &level, 3).search);
        assert_eq!(finer.radius, Some(cfg.fine_radius), "level {index}");
        assert_eq!(finer.random_draws, 0, "level {index}");
        assert_eq!((finer.k, finer.sweeps), (whole.k, whole.sweeps));
    }
    let single = field(level_patch_config(&cfg, 0, 1, &level, 3).search);
    assert_eq!(
        single, whole,
        "a one-level fill lays out from the whole bank"
    );
    cfg.fine_radius = 0;
    let off = field(level_patch_config(&cfg, 0, 3, &level, 3).search);
    assert_eq!(off, whole, "0 searches the whole bank");
}

/// Draws made from one prepared crop (levels and cleaned banks made once) equal draws that
/// prepare the crop themselves, bit for bit, and draws made in one batch (the instant
/// preview's) equal draws made one at a time; the fill keeps the crop's colour channels
/// although its coarser levels carry a detail channel.
#[test]
fn draws_from_one_prepared_crop_equal_draws_made_alone() {
    use eps_studio::prior::patch::{Guide, Prepared, fill, fill_prepared};
    let (w, h) = (64, 48);
    let y = texture(w, h, 5);
    let hole = blob(w, h, (30.0, 22.0), 9.0);
    let mut cfg = small_pyramid(6);
    cfg.coarse.steps = 4;
    cfg.fine.steps = 2;
    assert!(
        cfg.detail_weight > 0.0,
        "the default carries the detail channel"
    );
    let guide = Guide::patches();
    let prepared = Prepared::new(&y, &hole, 0.05, &cfg, &guide).unwrap();
    // Both seeds in one batch (the instant preview's way), then each alone.
    let together = fill_prepared(&prepared, &[3, 4], &guide, &mut |_| Flow::Continue).unwrap();
    let together = together
        .samples
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (i, seed) in [3_u64, 4].into_iter().enumerate() {
        let alone = fill(&y, &hole, 0.05, &[seed], &cfg, &guide, &mut |_| {
            Flow::Continue
        })
        .unwrap();
        let shared = fill_prepared(&prepared, &[seed], &guide, &mut |_| Flow::Continue).unwrap();
        assert!(alone.queries.len() >= 2, "the test needs a pyramid");
        assert_eq!(alone.samples.dims4().unwrap(), (1, 3, h, w));
        let (a, b) = (
            alone
                .samples
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            shared
                .samples
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "seed {seed}"
        );
        let in_batch = &together[i * a.len()..(i + 1) * a.len()];
        let worst = a
            .iter()
            .zip(in_batch)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-5, "seed {seed} in a batch: {worst}");
    }
}

/// A dark ellipse (noisy) across the middle of a light, shaded background, in `[-1, 1]`.
fn ellipse(w: usize, h: usize, seed: u64) -> Plane {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let dx = (x as f64 - w as f64 / 2.0) / (w as f64 * 0.35);
            let dy = (y as f64 - h as f64 / 2.0) / (h as f64 * 0.18);
            let base = if dx * dx + dy * dy <= 1.0 {
                -0.6
            } else {
                0.6 - 0.3 * y as f64 / h as f64
            };
            for _ in 0..3 {
                data.push((base + 0.04 * (rng.random::<f64>() - 0.5)) as f32);
            }
        }
    }
    Plane::from_data(w, h, 3, data).unwrap()
}

/// A round hole of radius `r` in the middle of a `w × h` image.
fn middle_disc(w: usize, h: usize, r: f64) -> Vec<bool> {
    (0..w * h)
        .map(|i| {
            let (x, y) = ((i % w) as f64, (i / w) as f64);
            (x - w as f64 / 2.0).powi(2) + (y - h as f64 / 2.0).powi(2) <= r * r
        })
        .collect()
}

/// A pyramid for the ellipse tests: 5 × 5 patches, levels down to an 8-pixel hole, short
/// samplers.
fn ellipse_pyramid() -> PyramidConfig {
    let mut cfg = small_pyramid(8);
    cfg.coarse.steps = 4;
    cfg.fine.steps = 2;
    cfg
}

/// With `choose_depth` (the default) each sample is, bit for bit, the deepest pyramid's sample
/// or the sample laid out one level finer (a pyramid one level shallower, drawn with
/// `shallow_seed`), whichever's finest windows over the hole lie nearer the bank; `depths`
/// says which, and the instant preview's sampler lays out once. A pyramid that stopped above
/// its layout's scale for want of windows lays out once as well.
#[test]
fn each_sample_keeps_the_more_coherent_of_two_depths() {
    use eps_studio::prior::patch::pyramid::shallow_seed;
    use eps_studio::prior::patch::{Guide, fill};
    let (w, h) = (128, 96);
    let y = ellipse(w, h, 3);
    // A hole inside the ellipse: the two depths are about as coherent, and both are kept.
    let hole = middle_disc(w, h, 16.0);
    let guide = Guide::patches();
    let seeds = [1_u64, 2, 3, 4, 5, 6];
    // The live view's reports: which layout each step belongs to, and the step counts.
    let reports = std::cell::RefCell::new(Vec::new());
    let run = |cfg: &PyramidConfig, seeds: &[u64]| {
        reports.borrow_mut().clear();
        let out = fill(&y, &hole, 0.05, seeds, cfg, &guide, &mut |st| {
            reports.borrow_mut().push((st.layout, st.step, st.n_steps));
            Flow::Continue
        })
        .unwrap();
        let flat = out.samples.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (out, flat)
    };
    // Every step is reported once, in order, each with its layout (1-based) and how many.
    let layouts_seen = || -> Vec<(usize, usize)> {
        let r = reports.borrow();
        let n_steps = r.first().map_or(0, |x| x.2);
        assert_eq!(r.len(), n_steps, "one report per step");
        for (i, &(_, step, n)) in r.iter().enumerate() {
            assert_eq!((step, n), (i + 1, n_steps));
        }
        let mut seen: Vec<(usize, usize)> = r.iter().map(|x| x.0).collect();
        seen.dedup();
        seen
    };
    // Asked for an 8-pixel hole at the coarsest level, the pyramid stops one level short of
    // it for want of windows: one layout, although it has levels enough for two.
    let (stopped, _) = run(&ellipse_pyramid(), &seeds[..2]);
    assert!(
        stopped.queries.len() >= 3,
        "{} levels",
        stopped.queries.len()
    );
    assert_eq!(stopped.depths, vec![stopped.queries.len(); 2]);
    assert_eq!(layouts_seen(), vec![(1, 1)]);
    assert!(stopped.coherence.iter().all(|c| c[1].is_none()));
    let cfg = PyramidConfig {
        coarse_hole: 10,
        ..ellipse_pyramid()
    };
    assert!(cfg.choose_depth, "the default lays out at two depths");
    assert!(!cfg.for_preview().choose_depth);
    let (both, both_px) = run(&cfg, &seeds);
    assert_eq!(
        layouts_seen(),
        vec![(1, 2), (2, 2)],
        "the deep layout, then the shallow"
    );
    let n = both.queries.len();
    assert!(n >= 3, "the test needs three levels, has {n}");
    let one = PyramidConfig {
        choose_depth: false,
        ..cfg
    };
    let (deep, deep_px) = run(&one, &seeds);
    assert_eq!(deep.depths, vec![n; seeds.len()]);
    assert_eq!(layouts_seen(), vec![(1, 1)]);
    assert!(
        deep.coherence
            .iter()
            .all(|c| c[0].is_some() && c[1].is_none())
    );
    let shallow_seeds: Vec<u64> = seeds.iter().map(|&s| shallow_seed(s)).collect();
    let (shallow, shallow_px) = run(
        &PyramidConfig {
            max_levels: n - 1,
            ..one
        },
        &shallow_seeds,
    );
    assert_eq!(shallow.depths, vec![n - 1; seeds.len()]);
    let per = both_px.len() / seeds.len();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    let mut kept = [0; 2];
    for (i, seed) in seeds.iter().enumerate() {
        let [Some(d), Some(s)] = both.coherence[i] else {
            panic!(
                "seed {seed}: both passes measured, got {:?}",
                both.coherence[i]
            );
        };
        assert_eq!(Some(d), deep.coherence[i][0], "seed {seed}: the deep pass");
        assert_eq!(
            Some(s),
            shallow.coherence[i][0],
            "seed {seed}: the shallow pass"
        );
        let px = &both_px[i * per..(i + 1) * per];
        if s < d {
            assert_eq!(both.depths[i], n - 1, "seed {seed}");
            assert!(same(px, &shallow_px[i * per..(i + 1) * per]), "seed {seed}");
            kept[1] += 1;
        } else {
            assert_eq!(both.depths[i], n, "seed {seed}");
            assert!(same(px, &deep_px[i * per..(i + 1) * per]), "seed {seed}");
            kept[0] += 1;
        }
    }
    assert!(
        kept[0] > 0 && kept[1] > 0,
        "each depth kept for some seed here: {kept:?}"
    );
}

/// A dark ellipse whose middle is hidden: at the deepest level its visible ends are slivers,
/// and the deepest layout fills the middle with the light background; the layout one level
/// finer continues the ellipse, and the fill keeps it. Every sample's hole error against the
/// truth is below the deepest pass's for the same seed, and on average under half of it.
#[test]
fn a_shape_hidden_at_the_coarsest_level_is_continued() {
    use eps_studio::prior::patch::{Guide, fill};
    let (w, h) = (160, 120);
    let y = ellipse(w, h, 3);
    let hole = middle_disc(w, h, 24.0);
    let cfg = ellipse_pyramid();
    let seeds = [1_u64, 2, 3, 4];
    let errors = |cfg: &PyramidConfig| -> (Vec<f64>, usize) {
        let out = fill(&y, &hole, 0.05, &seeds, cfg, &Guide::patches(), &mut |_| {
            Flow::Continue
        })
        .unwrap();
        let v = out.samples.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let per = w * h * 3;
        let e = (0..seeds.len())
            .map(|b| {
                let (mut sum, mut n) = (0.0_f64, 0);
                for c in 0..3 {
                    for (p, _) in hole.iter().enumerate().filter(|(_, f)| **f) {
                        let d = v[b * per + c * w * h + p] - y.data[p * 3 + c];
                        sum += f64::from(d * d);
                        n += 1;
                    }
                }
                sum / f64::from(n)
            })
            .collect();
        (e, out.queries.len())
    };
    let (chosen, levels) = errors(&cfg);
    assert!(levels >= 3, "{levels} levels");
    let (deep, _) = errors(&PyramidConfig {
        choose_depth: false,
        ..cfg
    });
    for (s, (c, d)) in seeds.iter().zip(chosen.iter().zip(&deep)) {
        assert!(
            c < d,
            "seed {s}: hole MSE {c:.4} against the deepest layout's {d:.4}"
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&chosen) < 0.5 * mean(&deep),
        "hole MSE {:.4} against the deepest layout's {:.4}",
        mean(&chosen),
        mean(&deep)
    );
}

/// A crop prepared with detail channels is refused, with a reason, by a guide whose network
/// would read them as colours.
#[test]
fn a_crop_prepared_for_patches_refuses_a_network_guide() {
    use eps_studio::prior::patch::{Guide, Layout, Prepared, fill_prepared};
    let (w, h) = (64, 48);
    let y = texture(w, h, 6);
    let hole = blob(w, h, (30.0, 22.0), 9.0);
    let cfg = small_pyramid(6);
    let prepared = Prepared::new(&y, &hole, 0.05, &cfg, &Guide::patches()).unwrap();
    // Any posterior denoiser stands in for the network here.
    let stand_in = PatchDenoiser::new(
        Bank::new(&y, &hole, 5, Transforms::NONE).unwrap(),
        cfg.patch,
        (w, h),
        Some(&hole),
    )
    .unwrap();
    let guide = Guide {
        layout: Layout::Smooth,
        above: Some((&stand_in, 0.5)),
        fuse: None,
    };
    let err = fill_prepared(&prepared, &[1], &guide, &mut |_| Flow::Continue).unwrap_err();
    assert!(
        err.to_string().contains("prepare it with this guide"),
        "{err}"
    );
}

/// Coherence transport leaves every known pixel bit-exact and every value finite, on a hole
/// that touches the borders, and returns a plane with nothing known (or no hole) as it is.
#[test]
fn coherence_transport_keeps_the_known_pixels() {
    use eps_studio::prior::patch::transport::{TransportConfig, coherence_transport};
    let (w, h) = (37, 29);
    let y = texture(w, h, 4);
    let hole: Vec<bool> = (0..w * h)
        .map(|i| (i % w) < 9 || (i / w) + 3 > h || ((i % w) as i64 - 20).abs() < 4)
        .collect();
    let out = coherence_transport(&y, &hole, 3, &TransportConfig::default());
    for (i, m) in hole.iter().enumerate() {
        let (a, b) = (&out.data[i * 3..i * 3 + 3], &y.data[i * 3..i * 3 + 3]);
        if *m {
            assert!(a.iter().all(|v| v.is_finite() && v.abs() <= 1.5), "{a:?}");
        } else {
            assert_eq!(a, b, "known pixel {i} changed");
        }
    }
    let all = vec![true; w * h];
    assert_eq!(
        coherence_transport(&y, &all, 3, &TransportConfig::default()).data,
        y.data
    );
    let none = vec![false; w * h];
    assert_eq!(
        coherence_transport(&y, &none, 3, &TransportConfig::default()).data,
        y.data
    );
}

/// A straight 30° edge between two colours (a faint vertical ramp and noise on both), and a
/// bright 4-pixel stripe at 20° on grey, each across a round hole: coherence transport
/// continues them straight through the hole, where a biharmonic fill blurs them into a ramp.
#[test]
fn coherence_transport_continues_a_straight_edge() {
    use eps_studio::prior::patch::pyramid::biharmonic;
    use eps_studio::prior::patch::transport::{TransportConfig, coherence_transport};
    let (w, h) = (41usize, 33usize);
    let (cx, cy) = (20.0, 16.0);
    let scene = |seed: u64, paint: &dyn Fn(f64, f64) -> [f64; 3]| {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut data = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                for v in paint(x as f64 - cx, y as f64 - cy) {
                    data.push((v + 0.01 * y as f64 + rng.random_range(-0.02..0.02)) as f32);
                }
            }
        }
        Plane::from_data(w, h, 3, data).unwrap()
    };
    let across = |x: f64, y: f64, deg: f64| {
        let (s, c) = f64::to_radians(deg).sin_cos();
        -x * s + y * c
    };
    let edge = scene(1, &|x, y| {
        if across(x, y, 30.0) > 0.0 {
            [0.6, 0.2, -0.3]
        } else {
            [-0.5, -0.2, 0.1]
        }
    });
    let stripe = scene(2, &|x, y| {
        if across(x, y, 20.0).abs() < 2.0 {
            [0.7; 3]
        } else {
            [-0.4; 3]
        }
    });
    let hole: Vec<bool> = (0..w * h)
        .map(|i| ((i % w) as f64 - cx).powi(2) + ((i / w) as f64 - cy).powi(2) <= 64.0)
        .collect();
    // Root-mean-square error over the hole, and the share of hole pixels within 0.25 of the
    // truth in every channel (on the right side of the edge).
    let score = |out: &Plane, truth: &Plane| {
        let (mut se, mut n, mut close) = (0.0f64, 0.0f64, 0.0f64);
        for i in (0..w * h).filter(|&i| hole[i]) {
            let d: Vec<f64> = (0..3)
                .map(|c| f64::from(out.data[i * 3 + c] - truth.data[i * 3 + c]))
                .collect();
            se += d.iter().map(|d| d * d).sum::<f64>();
            n += 1.0;
            close += f64::from(u8::from(d.iter().all(|d| d.abs() < 0.25)));
        }
        ((se / (3.0 * n)).sqrt(), close / n)
    };
    for (name, truth) in [("edge", &edge), ("stripe", &stripe)] {
        let (rmse, close) = score(
            &coherence_transport(truth, &hole, 3, &TransportConfig::default()),
            truth,
        );
        let (smooth, _) = score(&biharmonic(truth, &hole), truth);
        assert!(
            rmse < smooth && close > 0.85,
            "{name}: transport RMSE {rmse:.3} (biharmonic {smooth:.3}), {:.0}% of the hole right",
            100.0 * close
        );
    }
}

/// A photo-like texture with random structure (leaves, gravel): its posterior in a hole is
/// wide, so samples must differ.
fn photo(w: usize, h: usize, seed: u64) -> RgbImage {
    let mut t = texture(w, h, seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 99);
    let blobs: Vec<(f64, f64, f64, f32)> = (0..w * h / 30)
        .map(|_| {
            (
                rng.random::<f64>() * w as f64,
                rng.random::<f64>() * h as f64,
                1.0 + 2.5 * rng.random::<f64>(),
                (rng.random::<f32>() - 0.5) * 0.8,
            )
        })
        .collect();
    for (i, px) in t.data.chunks_mut(3).enumerate() {
        let (x, y) = ((i % w) as f64, (i / w) as f64);
        for &(bx, by, r, v) in &blobs {
            if (x - bx).powi(2) + (y - by).powi(2) <= r * r {
                for c in px.iter_mut() {
                    *c = (*c + v).clamp(-1.0, 1.0);
                }
            }
        }
    }
    RgbImage::from_data(w, h, t.data.iter().map(|v| (v + 1.0) * 0.5).collect()).unwrap()
}

fn patch_settings() -> Settings {
    Settings {
        prior: Prior::Patch,
        ..Settings::default()
    }
}

fn fill_with(
    y: &RgbImage,
    fill: &[bool],
    seeds: &[u64],
) -> eps_studio::Result<restore::Restoration> {
    let models = Models::new(None, None, candle_core::Device::Cpu);
    restore::restore(
        &models,
        None,
        y,
        &Degradation::inpaint(fill.to_vec()),
        &patch_settings(),
        seeds,
        &mut |_| Flow::Continue,
    )
}

/// Through the restoration path: every unmasked pixel is the photo's own, bit for bit; the
/// samples differ from each other inside the hole; a seed gives the same sample alone or in a
/// batch; no network is needed.
#[test]
fn patch_fills_keep_the_photo_and_differ_by_seed() {
    let (w, h) = (96, 72);
    let y = photo(w, h, 12);
    let fill = blob(w, h, (48.0, 36.0), 12.0);
    let out = fill_with(&y, &fill, &[4, 5]).unwrap();
    assert_eq!(out.samples.len(), 2);
    for s in &out.samples {
        for (i, &f) in fill.iter().enumerate() {
            if !f {
                for c in 0..3 {
                    assert_eq!(s.value(i * 3 + c).to_bits(), y.value(i * 3 + c).to_bits());
                }
            }
        }
    }
    let (a, b) = (out.samples[0].rgb(), out.samples[1].rgb());
    let spread = eps_studio::eval::diagnose::pairwise_hole_distance(
        &[a.into_owned(), b.into_owned()],
        &fill,
    );
    assert!(spread > 0.005, "samples do not differ: {spread}");
    let alone = fill_with(&y, &fill, &[5]).unwrap();
    assert_eq!(alone.samples[0].rgb().data, out.samples[1].rgb().data);
    for s in &out.samples {
        assert!(s.all_finite());
    }
}

/// The prior that fuses the network's and the patches' estimates by their variances, through
/// the restoration path with the shipped network: the unmasked pixels stay the photo's own, bit
/// for bit; the fill is finite; and the network moves it (the same seed on the patches alone
/// gives another fill).
#[test]
fn fused_fills_keep_the_photo_and_take_the_network_in() {
    let (w, h) = (96, 72);
    let y = photo(w, h, 12);
    let fill = blob(w, h, (48.0, 36.0), 12.0);
    let folder = Models::locate(None).unwrap();
    let models = Models::load(&folder, &candle_core::Device::Cpu).unwrap();
    let run = |prior: Prior| {
        restore::restore(
            &models,
            None,
            &y,
            &Degradation::inpaint(fill.clone()),
            &Settings {
                prior,
                ..Settings::default()
            },
            &[4],
            &mut |_| Flow::Continue,
        )
        .unwrap()
    };
    let fused = run(Prior::Fused);
    let s = &fused.samples[0];
    assert!(s.all_finite());
    for (i, &f) in fill.iter().enumerate() {
        if !f {
            for c in 0..3 {
                assert_eq!(s.value(i * 3 + c).to_bits(), y.value(i * 3 + c).to_bits());
            }
        }
    }
    let patches = run(Prior::Patch);
    let moved = eps_studio::eval::diagnose::pairwise_hole_distance(
        &[s.rgb().into_owned(), patches.samples[0].rgb().into_owned()],
        &fill,
    );
    assert!(moved > 0.005, "the network changed nothing: {moved}");
}

/// Every draw reports, per pyramid level, how many bank windows its posterior weighed (what
/// `diagnose` tabulates): each level of each draw once, coarsest first, from its highest noise
/// level to its lowest. The posterior sharpens as the noise falls: at every level at least as
/// many query windows copy a single bank window at the last call as at the first, and the
/// finest level ends copying in most of them (at its last noise level the KDE's τ is smaller
/// than the distance between windows).
#[test]
fn every_level_reports_its_effective_sample_size() {
    let (w, h) = (192, 144);
    let y = photo(w, h, 12);
    let fill = blob(w, h, (96.0, 72.0), 20.0);
    let out = fill_with(&y, &fill, &[4, 5]).unwrap();
    let ess = &out.patch_ess;
    assert!(!ess.is_empty(), "no effective sample sizes reported");
    // Each draw's levels: the layout's depth may differ between draws (`choose_depth`).
    let mut draws = Vec::new();
    let mut rest = &ess[..];
    while let Some(first) = rest.first() {
        let levels = first.levels;
        assert!(levels >= 2 && levels <= rest.len(), "{levels} levels");
        let (draw, more) = rest.split_at(levels);
        draws.push(draw);
        rest = more;
    }
    assert_eq!(draws.len(), 2, "one summary per level and draw");
    for draw in draws.iter().copied() {
        let levels = draw.len();
        assert!(draw.iter().all(|l| l.levels == levels));
        let order: Vec<usize> = draw.iter().map(|l| l.level).collect();
        assert_eq!(order, (0..levels).rev().collect::<Vec<_>>());
        for l in draw {
            assert!(l.calls >= 2, "level {}: {} calls", l.level, l.calls);
            assert!(l.first.sigma > l.last.sigma, "{l:?}");
            for r in [l.first, l.last] {
                assert!(
                    r.median >= 1.0 - 1e-4,
                    "an effective sample size below 1: {r:?}"
                );
                assert!((0.0..=1.0).contains(&r.copying), "{r:?}");
            }
        }
        for l in draw {
            assert!(
                l.last.copying >= l.first.copying,
                "level {}: fewer windows copy one bank window as the noise falls: {l:?}",
                l.level
            );
        }
        let finest = &draw[levels - 1];
        assert!(
            finest.last.copying > finest.first.copying && finest.last.copying > 0.5,
            "the finest level ends copying in only {:.2} of its windows (first call {:.2})",
            finest.last.copying,
            finest.first.copying
        );
    }
    // The diagnostic's table averages them per level, over both draws.
    let rows = eps_studio::eval::diagnose::ess_by_level(ess);
    let deepest = draws.iter().map(|d| d.len()).max().unwrap_or(0);
    assert_eq!(rows.len(), deepest);
    for r in &rows {
        let expected = draws.iter().filter(|d| d.len() > r.level).count();
        assert_eq!(r.draws, expected, "level {}", r.level);
    }
}

/// The noise level of the first call at every pyramid level of one draw (seed 4) filling
/// `fill` in `y` with `settings`, coarsest level first; at least two levels.
fn first_call_sigmas(y: &RgbImage, fill: &[bool], settings: &Settings) -> Vec<f64> {
    let models = Models::new(None, None, candle_core::Device::Cpu);
    let out = restore::restore(
        &models,
        None,
        y,
        &Degradation::inpaint(fill.to_vec()),
        settings,
        &[4],
        &mut |_| Flow::Continue,
    )
    .unwrap();
    let levels = out.patch_ess[0].levels;
    assert!(levels >= 2, "{levels} levels");
    out.patch_ess[..levels]
        .iter()
        .map(|l| l.first.sigma)
        .collect()
}

/// The mean's draws restart every finer level from `MEAN_FINE_SIGMA` times the samples' noise
/// (their average is nearer the posterior mean when they differ more), and a start the user
/// sets (`--fine-sigma`) carries over to the mean; the coarsest level is the samples' own.
/// Every finer level starts from the fine sigma here (`fine_detail = 0`); with the starts that
/// follow each level's detail, see `finer_levels_with_strong_detail_restart_from_more_noise`.
#[test]
fn the_mean_redraws_more_of_each_finer_level() {
    let (w, h) = (192, 144);
    let y = photo(w, h, 12);
    let fill = blob(w, h, (96.0, 72.0), 20.0);
    let first_sigmas = |method: MethodChoice, fine_sigma: f64| {
        let mut settings = patch_settings();
        settings.method = method;
        settings.patch.fine.schedule.sigma_max = fine_sigma;
        settings.patch.fine_detail = 0.0;
        first_call_sigmas(&y, &fill, &settings)
    };
    for fine_sigma in [PyramidConfig::default().fine.schedule.sigma_max, 0.3] {
        let sample = first_sigmas(MethodChoice::Eps, fine_sigma);
        let mean = first_sigmas(MethodChoice::EpsMean, fine_sigma);
        assert_eq!(sample.len(), mean.len());
        assert!(
            (mean[0] / sample[0] - 1.0).abs() < 0.05,
            "the coarsest level starts alike: {sample:?} {mean:?}"
        );
        for (level, (s, m)) in sample.iter().zip(&mean).enumerate().skip(1) {
            assert!(
                (m / s - PyramidConfig::MEAN_FINE_SIGMA).abs() < 1e-6,
                "--fine-sigma {fine_sigma}, level {level} below the coarsest: sample {s}, mean {m}"
            );
        }
    }
}

/// A finer level restarts from more noise where it carries more detail of its own: a photo of
/// strong texture starts its finer levels above the fine sigma (at most twice it), a smooth
/// one at it, and `fine_detail = 0` starts every finer level at it; the coarsest level is the
/// same either way. The mean's draws start each finer level from twice the samples' start.
#[test]
fn finer_levels_with_strong_detail_restart_from_more_noise() {
    let (w, h) = (192, 144);
    let fill = blob(w, h, (96.0, 72.0), 20.0);
    let first_sigmas = |y: &RgbImage, fine_detail: f64, method: MethodChoice| {
        let mut settings = patch_settings();
        settings.method = method;
        settings.patch.fine_detail = fine_detail;
        first_call_sigmas(y, &fill, &settings)
    };
    let textured = photo(w, h, 12);
    // A smooth photo: a gentle gradient in each channel.
    let smooth = RgbImage::from_data(
        w,
        h,
        (0..w * h)
            .flat_map(|i| {
                let (x, y) = ((i % w) as f32 / w as f32, (i / w) as f32 / h as f32);
                [0.3 + 0.2 * x, 0.4 + 0.1 * y, 0.5 - 0.1 * x * y]
            })
            .collect(),
    )
    .unwrap();
    let default = PyramidConfig::default().fine_detail;
    for (name, y, raised) in [("textured", &textured, true), ("smooth", &smooth, false)] {
        let fixed = first_sigmas(y, 0.0, MethodChoice::Eps);
        let adaptive = first_sigmas(y, default, MethodChoice::Eps);
        let mean = first_sigmas(y, default, MethodChoice::EpsMean);
        for (level, (s, m)) in adaptive.iter().zip(&mean).enumerate().skip(1) {
            assert!(
                (m / s - PyramidConfig::MEAN_FINE_SIGMA).abs() < 1e-6,
                "{name}, level {level}: sample {s}, mean {m}"
            );
        }
        assert_eq!(fixed.len(), adaptive.len());
        assert!(
            (adaptive[0] / fixed[0] - 1.0).abs() < 1e-9,
            "{name}: the coarsest level starts alike: {fixed:?} {adaptive:?}"
        );
        let ratios: Vec<f64> = fixed
            .iter()
            .zip(&adaptive)
            .skip(1)
            .map(|(f, a)| a / f)
            .collect();
        assert!(
            ratios
                .iter()
                .all(|&r| (1.0 - 1e-9..=2.0 + 1e-9).contains(&r)),
            "{name}: {ratios:?}"
        );
        if raised {
            assert!(ratios.iter().any(|&r| r > 1.2), "{name}: {ratios:?}");
        } else {
            assert!(
                ratios.iter().all(|&r| (r - 1.0).abs() < 1e-9),
                "{name}: {ratios:?}"
            );
        }
    }
}

/// The start of a finer level: the fine sigma up to the detail threshold, in proportion above
/// it, at most twice the fine sigma and at most the highest start; a level's detail is what it
/// adds to its coarser level over its known pixels only.
#[test]
fn a_finer_levels_start_follows_its_own_detail() {
    use eps_studio::prior::patch::pyramid::{MAX_FINE_SIGMA, level_detail};
    let cfg = PyramidConfig {
        fine_detail: 0.05,
        ..PyramidConfig::default()
    };
    let base = cfg.fine.schedule.sigma_max;
    for (detail, start) in [
        (0.0, base),
        (0.05, base),
        (0.075, 1.5 * base),
        (0.1, 2.0 * base),
        (3.0, 2.0 * base),
        (f64::NAN, base),
    ] {
        assert!(
            (cfg.fine_start(detail) - start).abs() < 1e-12,
            "detail {detail}: {} against {start}",
            cfg.fine_start(detail)
        );
    }
    let off = PyramidConfig {
        fine_detail: 0.0,
        ..cfg
    };
    assert_eq!(off.fine_start(3.0), base);
    let mut high = cfg;
    high.fine.schedule.sigma_max = 0.8;
    assert_eq!(high.fine_start(3.0), MAX_FINE_SIGMA);

    // A finer level that is its coarser level upsampled adds nothing; one with a checkerboard
    // on top adds the checkerboard; hole pixels do not count.
    let (w, h) = (32, 24);
    let coarse = texture(w / 2, h / 2, 5);
    let flat = eps_studio::prior::patch::pyramid::upsample(&coarse, w, h);
    let none = vec![false; w * h];
    assert!(level_detail(&flat, &coarse, &none) < 1e-6);
    let mut checked = flat.clone();
    let mut hole = none.clone();
    for (i, px) in checked.data.chunks_mut(3).enumerate() {
        let (x, y) = (i % w, i / w);
        if x < 4 {
            // Inside the hole: anything.
            hole[i] = true;
            px.iter_mut().for_each(|v| *v = 100.0);
        } else {
            let s = if (x + y) % 2 == 0 { 0.1 } else { -0.1 };
            px.iter_mut().for_each(|v| *v += s);
        }
    }
    let d = level_detail(&checked, &coarse, &hole);
    assert!((d - 0.1).abs() < 1e-4, "{d}");
}

/// A big hole in a thin ring of context (a large hole in a large photo, whose context is
/// capped) is laid out at the coarsest level whose bank still holds enough windows, not at a
/// level whose few hundred windows knew too few layouts (it raised a meadow into the hole).
#[test]
fn a_big_hole_in_a_thin_ring_is_laid_out_where_the_bank_is_large() {
    use eps_studio::prior::patch::bank::valid_windows;
    use eps_studio::prior::patch::pyramid::{MIN_WINDOWS, levels};
    // The 6 MP photo's crop of docs/patch-prior.md at a quarter of its size: a 98 × 168 hole
    // with 80 px of context.
    let (w, h) = (258, 328);
    let y = texture(w, h, 9);
    let hole: Vec<bool> = (0..w * h)
        .map(|i| (80..178).contains(&(i % w)) && (80..248).contains(&(i / w)))
        .collect();
    let windows = |l: &eps_studio::prior::patch::pyramid::Level, p: usize| {
        valid_windows(&l.hole, l.y.width, l.y.height, p)
            .into_iter()
            .filter(|&v| v)
            .count()
    };
    let cfg = PyramidConfig::default();
    let p = cfg.patch.patch;
    let made = levels(&y, &hole, 0.05, &cfg);
    let deeper = levels(
        &y,
        &hole,
        0.05,
        &PyramidConfig {
            layout_windows: MIN_WINDOWS,
            ..cfg
        },
    );
    assert!(made.len() >= 2, "{} levels", made.len());
    for (li, l) in made.iter().enumerate().skip(1) {
        assert!(
            windows(l, p) >= cfg.layout_windows,
            "level {li}: {} windows",
            windows(l, p)
        );
    }
    // The level the pyramid left out has windows, just too few.
    assert_eq!(deeper.len(), made.len() + 1);
    let left_out = windows(&deeper[made.len()], p);
    assert!(
        (MIN_WINDOWS..cfg.layout_windows).contains(&left_out),
        "{left_out}"
    );
}

/// Pyramid settings out of range are refused before any work, naming the setting and its
/// range.
#[test]
fn pyramid_settings_out_of_range_are_refused_with_their_range() {
    use eps_studio::prior::patch::pyramid::MIN_WINDOWS;
    let fine_start = |sigma: f64| {
        let mut cfg = PyramidConfig::default();
        cfg.fine.schedule.sigma_max = sigma;
        cfg
    };
    let shift = |shift: f64| {
        let mut cfg = PyramidConfig::default();
        cfg.patch.shift = shift;
        cfg
    };
    for (cfg, what, range) in [
        (shift(-0.1), "window shift", "from 0 to 2"),
        (shift(f64::NAN), "window shift", "from 0 to 2"),
        (shift(3.0), "window shift", "from 0 to 2"),
        (
            PyramidConfig {
                layout_windows: MIN_WINDOWS - 1,
                ..PyramidConfig::default()
            },
            "layout windows",
            "64 or more",
        ),
        (
            PyramidConfig {
                detail_weight: -1.0,
                ..PyramidConfig::default()
            },
            "detail weight",
            "0 to 16",
        ),
        (
            PyramidConfig {
                fine_radius: 5000,
                ..PyramidConfig::default()
            },
            "fine radius",
            "0 to 1024",
        ),
        (fine_start(f64::NAN), "fine sigma", "at most 1"),
        (
            fine_start(0.005),
            "fine sigma",
            "more than the finer levels' last noise level 0.01",
        ),
        (fine_start(1e308), "fine sigma", "at most 1"),
        (
            PyramidConfig {
                fine_detail: f64::NAN,
                ..PyramidConfig::default()
            },
            "fine detail",
            "0 to 1",
        ),
        (
            PyramidConfig {
                fine_detail: -0.01,
                ..PyramidConfig::default()
            },
            "fine detail",
            "0 to 1",
        ),
    ] {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(what) && e.contains(range), "{e}");
    }
    assert!(small_pyramid(4).validate().is_ok());
    for s in [0.0, 0.05, 2.0] {
        assert!(shift(s).validate().is_ok(), "shift {s}");
    }
    for fine_detail in [0.0, 1.0] {
        let cfg = PyramidConfig {
            fine_detail,
            ..PyramidConfig::default()
        };
        assert!(cfg.validate().is_ok(), "fine detail {fine_detail}");
    }
    // The highest start is taken, by the samples and by the mean's draws (which start from
    // twice the samples' noise, at most the highest).
    let highest = fine_start(eps_studio::prior::patch::pyramid::MAX_FINE_SIGMA);
    assert!(highest.validate().is_ok());
    assert!(highest.for_mean().validate().is_ok());
    assert!(highest.for_preview().validate().is_ok());
    // The restoration's settings check them too (the app's path, not only the command line's).
    let settings = Settings {
        patch: fine_start(f64::NAN),
        ..patch_settings()
    };
    let e = settings.validate().unwrap_err().to_string();
    assert!(e.contains("fine sigma"), "{e}");
}

/// A mask that leaves too little known context for a bank is refused before any work with a
/// message that says what to do; nothing panics and nothing is NaN.
#[test]
fn too_little_context_is_refused_clearly() {
    // 98% of the photo masked.
    let (w, h) = (120, 90);
    let y = photo(w, h, 3);
    let fill: Vec<bool> = (0..w * h).map(|i| (i % w) > 2 && (i / w) > 1).collect();
    let e = fill_with(&y, &fill, &[0])
        .expect_err("98% masked")
        .to_string();
    assert!(e.contains("patch") && e.contains("smaller mask"), "{e}");
    // A tiny photo whose hole touches every border.
    let (w, h) = (10, 9);
    let y = photo(w, h, 4);
    let fill: Vec<bool> = (0..w * h)
        .map(|i| {
            let (x, yy) = (i % w, i / w);
            x == 0 || yy == 0 || x == w - 1 || yy == h - 1 || (x + yy) % 3 == 0
        })
        .collect();
    let e = fill_with(&y, &fill, &[0])
        .expect_err("tiny photo")
        .to_string();
    assert!(e.contains("patch") && e.contains("smaller mask"), "{e}");
}

/// The uncertainty map is the patch prior's own posterior variance at the finest level's first
/// call (law of total variance over the seeds): one sample already has one, it is zero on known
/// pixels and positive in the hole, and over several samples it is at least their spread (the
/// default churned sampler keeps samples narrower than the posterior: about 0.37 of its variance
/// on the exact mixture check) and within a factor 4 of it.
#[test]
fn the_uncertainty_map_is_the_patch_posterior_variance() {
    let (w, h) = (96, 72);
    let y = photo(w, h, 21);
    let fill = blob(w, h, (48.0, 36.0), 12.0);
    let one = fill_with(&y, &fill, &[1]).unwrap();
    let map = one.variance.expect("the patch prior gives its variance");
    assert_eq!((map.width, map.height), (w, h));
    for (i, &f) in fill.iter().enumerate() {
        let v = map.at(i % w, i / w);
        assert!(v.is_finite() && v >= 0.0, "variance {v} at {i}");
        if !f {
            assert_eq!(v, 0.0, "known pixel {i} has variance {v}");
        }
    }
    let (_, _, full) = restore::mean_and_uncertainty(&[&one.samples[0]], Some(&map)).unwrap();
    assert!(full > 0.0, "one sample's uncertainty map is flat");

    let hole: Vec<usize> = (0..w * h).filter(|&i| fill[i]).collect();
    let n = hole.len() as f64;
    let seeds: Vec<u64> = (10..22).collect();
    let many = fill_with(&y, &fill, &seeds).unwrap();
    let map = many.variance.expect("the patch prior gives its variance");
    let map_hole: Vec<f64> = hole
        .iter()
        .map(|&i| f64::from(map.at(i % w, i / w)))
        .collect();
    let k = seeds.len() as f64;
    let spread: Vec<f64> = hole
        .iter()
        .map(|&i| {
            (0..3)
                .map(|c| {
                    let v: Vec<f64> = many
                        .samples
                        .iter()
                        .map(|s| f64::from(s.value(i * 3 + c)))
                        .collect();
                    let m = v.iter().sum::<f64>() / k;
                    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (k - 1.0) / 3.0
                })
                .sum()
        })
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
    let (mm, ms) = (mean(&map_hole), mean(&spread));
    let cov: f64 = map_hole
        .iter()
        .zip(&spread)
        .map(|(a, b)| (a - mm) * (b - ms))
        .sum();
    let sd = |v: &[f64], m: f64| v.iter().map(|a| (a - m).powi(2)).sum::<f64>().sqrt();
    let correlation = cov / (sd(&map_hole, mm) * sd(&spread, ms));
    eprintln!(
        "hole variance: map {mm:.5}, between {k} samples {ms:.5}; correlation {correlation:.2}"
    );
    assert!(
        (1.0..=4.0).contains(&(mm / ms)),
        "the map ({mm:.5}) and the samples' spread ({ms:.5}) disagree"
    );
}

/// Super-resolution on the photo's own patches (evaluation only, `sr_on_patches`) runs with no
/// network and explains the measurement (the output's block means are the photo's pixels
/// within the noise) even on a texture whose patches do not recur across scales; a photo too
/// small for one bank patch is refused with a message that names the network prior.
#[test]
fn super_resolution_on_patches_explains_the_measurement() {
    let (w, h, s) = (96, 64, 2);
    let truth = photo(w, h, 21);
    let sigma_y = 0.02;
    let deg = Degradation::SuperRes { factor: s };
    let sim = restore::simulate(&truth, &deg, sigma_y, 5).unwrap();
    let settings = Settings {
        prior: Prior::Patch,
        sr_on_patches: true,
        sigma_y,
        ..Settings::default()
    };
    assert!(!settings.needs_network(&deg));
    let models = Models::new(None, None, candle_core::Device::Cpu);
    let out = restore::restore(&models, None, &sim.y, &deg, &settings, &[1], &mut |_| {
        Flow::Continue
    })
    .unwrap();
    let x = out.samples[0].rgb().into_owned();
    assert_eq!((x.width, x.height), (w, h));
    assert!(x.all_finite());
    // Block means against the measurement, in [0, 1] units (σ_y is on the [-1, 1] scale).
    let mut sq = 0.0;
    for by in 0..h / s {
        for bx in 0..w / s {
            for c in 0..3 {
                let mut m = 0.0;
                for dy in 0..s {
                    for dx in 0..s {
                        m += x.value(((by * s + dy) * w + bx * s + dx) * 3 + c);
                    }
                }
                m /= (s * s) as f32;
                let d = f64::from(m - sim.y.value((by * (w / s) + bx) * 3 + c));
                sq += d * d;
            }
        }
    }
    let rms = (sq / ((w / s) * (h / s) * 3) as f64).sqrt();
    assert!(
        rms < 3.0 * sigma_y / 2.0,
        "block means off the measurement: rms {rms}"
    );
    // The sampler's own residual (`[-1, 1]` units) sits near σ_y as well.
    let r = out.residuals[0].rms;
    assert!(r < 2.0 * sigma_y, "residual rms {r} against σ_y {sigma_y}");

    let tiny = photo(4, 4, 2);
    let e = restore::restore(
        &models,
        None,
        &tiny,
        &Degradation::SuperRes { factor: 4 },
        &settings,
        &[0],
        &mut |_| Flow::Continue,
    )
    .expect_err("a 4×4 photo has no 12×12 window")
    .to_string();
    assert!(e.contains("network prior"), "{e}");
}

/// One variance per value that repeats each pixel's variance over its channels is the same
/// noise as one variance per pixel: the two denoiser paths agree (exact sums and the field).
#[test]
fn per_value_variances_equal_per_pixel_ones() {
    let (w, h, p) = (40, 32, 5);
    let y = texture(w, h, 17);
    let hole = blob(w, h, (20.0, 16.0), 7.0);
    let mut rng = StdRng::seed_from_u64(8);
    let s2: Vec<f32> = hole
        .iter()
        .map(|&f| {
            if f {
                0.3
            } else {
                0.001 + 0.01 * rng.random::<f32>()
            }
        })
        .collect();
    let per_value: Vec<f32> = s2.iter().flat_map(|&v| [v; 3]).collect();
    for search in [Search::Exact, Search::Field(FieldSearch::default())] {
        let cfg = PatchConfig {
            patch: p,
            search,
            ..PatchConfig::default()
        };
        let make = || {
            let bank = Bank::new(&y, &hole, p, Transforms::NONE).unwrap();
            PatchDenoiser::new(bank, cfg, (w, h), Some(&hole)).unwrap()
        };
        let (a, b) = (make(), make());
        let ea = a.estimate(&y, &s2, 0.5, 0).unwrap();
        let eb = b.estimate(&y, &per_value, 0.5, 0).unwrap();
        for (x, z) in ea.mean.data.iter().zip(&eb.mean.data) {
            assert!((x - z).abs() < 1e-5, "{search:?}: {x} vs {z}");
        }
        for (x, z) in ea.variance.iter().zip(&eb.variance) {
            assert!((x - z).abs() < 1e-5, "{search:?}: {x} vs {z}");
        }
    }
}

/// A pyramid for the 64 × 48 test images: 5 × 5 patches, levels down to a hole of
/// `coarse_hole` pixels, and coarser levels allowed with the few hundred windows such an image
/// holds.
fn small_pyramid(coarse_hole: usize) -> PyramidConfig {
    let mut cfg = PyramidConfig {
        coarse_hole,
        layout_windows: eps_studio::prior::patch::pyramid::MIN_WINDOWS,
        ..PyramidConfig::default()
    };
    cfg.patch.patch = 5;
    cfg
}

/// A grey textured photo with a red textured rectangle `x0..x1 × y0..y1`, in `[0, 1]`.
fn grey_with_red(w: usize, h: usize, (x0, x1, y0, y1): (usize, usize, usize, usize)) -> RgbImage {
    let base = photo(w, h, 31);
    let mut data = Vec::with_capacity(w * h * 3);
    for i in 0..w * h {
        let (x, y) = (i % w, i / w);
        let grey = (base.value(i * 3) + base.value(i * 3 + 1) + base.value(i * 3 + 2)) / 3.0;
        if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
            let t = 0.3 * (grey - 0.5);
            data.extend([0.85 + t, 0.12 + t, 0.12 + t].map(|v| v.clamp(0.0, 1.0)));
        } else {
            data.extend([grey; 3]);
        }
    }
    RgbImage::from_data(w, h, data).unwrap()
}

/// Pixels of `fill` that are clearly red in `image`.
fn red_in_hole(image: &RgbImage, fill: &[bool]) -> usize {
    fill.iter()
        .enumerate()
        .filter(|&(i, &f)| {
            let (r, g, b) = (
                image.value(i * 3),
                image.value(i * 3 + 1),
                image.value(i * 3 + 2),
            );
            f && r - 0.5 * (g + b) > 0.3
        })
        .count()
}

/// The keep-out tests' photo: grey texture with a red rectangle, a blob-shaped hole beside it
/// that reaches into it, and the rectangle as the keep-out area.
struct RedRectangle {
    y: RgbImage,
    fill: Vec<bool>,
    keep_out: Vec<bool>,
}

impl RedRectangle {
    fn new() -> Self {
        let (w, h) = (96, 72);
        let rect = (14, 42, 18, 54);
        let keep_out = (0..w * h)
            .map(|i| (rect.0..rect.1).contains(&(i % w)) && (rect.2..rect.3).contains(&(i / w)))
            .collect();
        Self {
            y: grey_with_red(w, h, rect),
            fill: blob(w, h, (46.0, 36.0), 11.0),
            keep_out,
        }
    }

    /// The fill with `settings` and `keep_out` (empty: none).
    fn restore(
        &self,
        keep_out: Vec<bool>,
        settings: &Settings,
        seeds: &[u64],
    ) -> eps_studio::Result<restore::Restoration> {
        let models = Models::new(None, None, candle_core::Device::Cpu);
        restore::restore(
            &models,
            None,
            &self.y,
            &Degradation::Inpaint {
                fill: self.fill.clone(),
                keep_out,
            },
            settings,
            seeds,
            &mut |_| Flow::Continue,
        )
    }

    /// Checks that the fill with `settings` continues the red into the hole without the
    /// keep-out area (so the check can fail), and with it has no red pixel in the hole while
    /// the unmasked pixels stay the photo's own, bit for bit.
    fn assert_kept_out(&self, settings: &Settings, what: &str) {
        let seeds = [1, 2, 3];
        let (y, fill) = (&self.y, &self.fill);
        let free = self.restore(Vec::new(), settings, &seeds).unwrap();
        let copied: usize = free
            .samples
            .iter()
            .map(|s| red_in_hole(&s.rgb(), fill))
            .sum();
        eprintln!("{what}: {copied} red pixels in the hole without a keep-out area");
        assert!(
            copied > 20,
            "{what}: without a keep-out area the red is not continued: {copied}"
        );
        let kept = self
            .restore(self.keep_out.clone(), settings, &seeds)
            .unwrap();
        for s in &kept.samples {
            assert_eq!(
                red_in_hole(&s.rgb(), fill),
                0,
                "{what}: red copied from the keep-out area"
            );
            for (i, &f) in fill.iter().enumerate() {
                if !f {
                    for c in 0..3 {
                        assert_eq!(s.value(i * 3 + c).to_bits(), y.value(i * 3 + c).to_bits());
                    }
                }
            }
            assert!(s.all_finite());
        }
    }
}

/// The keep-out area: the fill copies nothing from it, while its pixels stay the photo's own.
/// A red rectangle beside the hole is continued into it without the area (so the test can
/// fail), and never with the area over the rectangle.
#[test]
fn a_keep_out_area_is_never_copied_into_the_hole() {
    RedRectangle::new().assert_kept_out(&patch_settings(), "EPS");
}

/// The pyramid's banned pixels: at every level the hole and every pixel with any keep-out
/// pixel under it, so no coarse window reaches into the area either.
#[test]
fn the_keep_out_area_grows_with_the_halving() {
    use eps_studio::prior::patch::pyramid::levels_keeping_out;
    let (w, h) = (201, 161);
    let y = texture(w, h, 8);
    let hole = blob(w, h, (120.0, 80.0), 12.0);
    let keep_out: Vec<bool> = (0..w * h).map(|i| i % w == 20 && i / w == 30).collect();
    let cfg = PyramidConfig {
        layout_windows: 64,
        coarse_hole: 4,
        ..PyramidConfig::default()
    };
    let (levels, banned) = levels_keeping_out(&y, &hole, Some(&keep_out), 0.05, &cfg).unwrap();
    assert!(levels.len() >= 3, "{} levels", levels.len());
    assert_eq!(levels.len(), banned.len());
    for (li, (level, b)) in levels.iter().zip(&banned).enumerate() {
        let lw = level.y.width;
        assert_eq!(b.len(), lw * level.y.height);
        // The hole is banned; the single kept-out pixel (20, 30) lies under (20, 30) >> li.
        assert!(level.hole.iter().zip(b).all(|(&hh, &bb)| !hh || bb));
        assert!(
            b[(30 >> li) * lw + (20 >> li)],
            "level {li} lost the keep-out pixel"
        );
        let extra = b
            .iter()
            .zip(&level.hole)
            .filter(|&(&bb, &hh)| bb && !hh)
            .count();
        assert_eq!(extra, 1, "level {li}: one pixel kept out, {extra} found");
    }
    // Without an area the banned pixels are the holes.
    let (_, plain) = levels_keeping_out(&y, &hole, None, 0.05, &cfg).unwrap();
    assert_eq!(plain[0], hole);
    // A keep-out mask of another size is refused, not cut to fit.
    let short = levels_keeping_out(&y, &hole, Some(&keep_out[1..]), 0.05, &cfg);
    assert!(short.is_err_and(|e| e.to_string().contains("keep-out mask")));
}

/// Bad keep-out areas are refused before any work, saying what to do: one of another size,
/// one that leaves too few windows to copy from, and one with a prior or method that does not
/// take one.
#[test]
fn bad_keep_out_areas_are_refused() {
    let case = RedRectangle::new();
    let (w, h, fill) = (case.y.width, case.y.height, &case.fill);
    let try_with = |keep_out: Vec<bool>, settings: Settings| {
        case.restore(keep_out, &settings, &[1])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let wrong_size = try_with(vec![false; 10], patch_settings());
    assert!(wrong_size.contains("keep-out mask"), "{wrong_size}");
    let everything: Vec<bool> = fill.iter().map(|&f| !f).collect();
    let too_much = try_with(everything, patch_settings());
    assert!(
        too_much.contains("keep-out area") && too_much.contains("smaller keep-out area"),
        "{too_much}"
    );
    let some: Vec<bool> = (0..w * h).map(|i| i % w < 10).collect();
    let network = try_with(
        some.clone(),
        Settings {
            prior: Prior::Network,
            ..Settings::default()
        },
    );
    assert!(
        network.contains("keep-out area") && network.contains("network"),
        "{network}"
    );
    // DDNM+ with a hybrid prior, and DPS, run on the network.
    for (method, prior) in [
        (restore::MethodChoice::Ddnm, Prior::NetworkThenPatch),
        (restore::MethodChoice::Dps, Prior::Patch),
    ] {
        let refused = try_with(
            some.clone(),
            Settings {
                method,
                prior,
                ..Settings::default()
            },
        );
        assert!(refused.contains("keep-out area"), "{method:?}: {refused}");
    }
}

/// DDNM+ and DiffPIR on the patch prior take the keep-out area too, so the comparison with
/// EPS stays on the same bank: neither carries the red rectangle into the hole with the area
/// over it, and both do without it.
#[test]
fn the_baselines_on_patches_keep_out_too() {
    let case = RedRectangle::new();
    for method in [restore::MethodChoice::Ddnm, restore::MethodChoice::Diffpir] {
        let settings = Settings {
            method,
            ..patch_settings()
        };
        case.assert_kept_out(&settings, &format!("{method:?}"));
    }
}
