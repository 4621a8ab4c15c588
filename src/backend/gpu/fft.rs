//! The host side of the Stockham FFT in `shaders/fft_pass.wgsl`: how a length is split into
//! passes, and the twiddle table each axis uses.

use super::uniforms::FftParams;

/// The radices of the passes for a length `n`: powers of two in passes of 4 (and one of 2 when
/// the power is odd), then the odd prime factors in increasing order (a prime length is one pass,
/// i.e. a direct DFT). Each output of a radix-`r` pass costs `r` complex multiply-adds, so radix 4
/// does half the arithmetic of radix 16 for twice the passes; on a software adapter arithmetic
/// dominates, on a GPU either is a few microseconds at photo sizes.
pub fn radices(n: usize) -> Vec<usize> {
    let mut n = n.max(1);
    let mut out = Vec::new();
    for r in [4, 2] {
        while n.is_multiple_of(r) {
            out.push(r);
            n /= r;
        }
    }
    let mut p = 3;
    while n > 1 {
        while n.is_multiple_of(p) {
            out.push(p);
            n /= p;
        }
        p += 2;
        if p * p > n && n > 1 {
            out.push(n);
            break;
        }
    }
    out
}

/// `ω_n^e = exp(−2πi e/n)` for `e < n`, computed in `f64` and stored as interleaved `(re, im)`
/// `f32` pairs.
pub fn twiddles(n: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|e| {
            let angle = -2.0 * std::f64::consts::PI * e as f64 / n as f64;
            [angle.cos() as f32, angle.sin() as f32]
        })
        .collect()
}

/// Which axis of `[planes, h, w]` a transform runs along.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Along each row (length `w`, contiguous).
    Rows,
    /// Along each column (length `h`, stride `w`).
    Columns,
}

/// The uniform of every pass of a transform along `axis` of `planes` planes of `h × w`.
pub fn passes(axis: Axis, planes: usize, h: usize, w: usize, inverse: bool) -> Vec<FftParams> {
    let (n, lines_per_plane, line_step, elem_stride) = match axis {
        Axis::Rows => (w, h, w, 1),
        Axis::Columns => (h, w, 1, w),
    };
    let mut ns = 1;
    radices(n)
        .into_iter()
        .map(|radix| {
            let p = FftParams {
                n: n as u32,
                radix: radix as u32,
                ns: ns as u32,
                lines: (planes * lines_per_plane) as u32,
                lines_per_plane: lines_per_plane as u32,
                line_step: line_step as u32,
                plane_size: (h * w) as u32,
                elem_stride: elem_stride as u32,
                inverse: u32::from(inverse),
            };
            ns *= radix;
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radices_multiply_back_to_the_length() {
        for n in 1..=1100 {
            let r = radices(n);
            assert_eq!(r.iter().product::<usize>(), n.max(1), "n = {n}: {r:?}");
            assert!(r.iter().all(|&x| x > 1), "n = {n}: {r:?}");
        }
        assert_eq!(radices(256), vec![4, 4, 4, 4]);
        assert_eq!(radices(96), vec![4, 4, 2, 3]);
        assert_eq!(radices(1021), vec![1021]);
        assert_eq!(radices(3 * 3 * 7 * 11), vec![3, 3, 7, 11]);
    }

    /// The pass formula of `fft_pass.wgsl`, run on the host in f64, is the DFT.
    #[test]
    fn stockham_passes_give_the_dft() {
        use rustfft::num_complex::Complex64;
        for n in [1, 2, 3, 5, 6, 12, 16, 30, 48, 49, 97, 128, 210] {
            let x: Vec<Complex64> = (0..n)
                .map(|i| Complex64::new((i as f64 * 0.7).sin(), (i as f64 * 0.3).cos()))
                .collect();
            let mut src = x.clone();
            let mut ns = 1;
            for radix in radices(n) {
                let m = n / radix;
                let mut dst = vec![Complex64::new(0.0, 0.0); n];
                for (o, d) in dst.iter_mut().enumerate() {
                    let (a, q) = (o % ns, o / ns);
                    let (k, b) = (q % radix, q / radix);
                    let j = b * ns + a;
                    let step = (a * (n / (ns * radix)) + k * m) % n;
                    let mut e = 0;
                    for r in 0..radix {
                        let w = Complex64::from_polar(
                            1.0,
                            -2.0 * std::f64::consts::PI * e as f64 / n as f64,
                        );
                        *d += src[j + r * m] * w;
                        e = (e + step) % n;
                    }
                }
                src = dst;
                ns *= radix;
            }
            for (u, got) in src.iter().enumerate() {
                let want: Complex64 = x
                    .iter()
                    .enumerate()
                    .map(|(t, v)| {
                        v * Complex64::from_polar(
                            1.0,
                            -2.0 * std::f64::consts::PI * (u * t % n) as f64 / n as f64,
                        )
                    })
                    .sum();
                assert!((got - want).norm() < 1e-9, "n = {n}, u = {u}");
            }
        }
    }
}
