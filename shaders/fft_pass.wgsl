// One pass of a mixed-radix Stockham FFT (self-sorting, out of place) along one axis of every
// plane. For a length n = r₁·r₂·…, pass k has radix R = r_k and stride Ns = r₁·…·r_{k−1}; output
// o = b·Ns·R + k·Ns + a (a < Ns, k < R) is the R-term sum
//     dst[o] = Σ_r src[j + r·n/R] · ω_n^(r·(a·n/(Ns·R) + k·n/R)),   j = b·Ns + a,
// i.e. the twiddle by ω_(Ns·R)^(r·a) and the R-point DFT in one step (Govindaraju et al. 2008,
// "High performance discrete Fourier transforms on graphics processors", generalised to mixed
// radix). Each invocation computes one output, so any radix works, including a large prime.
// ω_n^e = exp(−2πi e/n) comes from a host-computed table; the inverse uses its conjugate.
//
// Elements of line l sit at base(l) + i·elem_stride with
// base(l) = (l / lines_per_plane)·plane_size + (l % lines_per_plane)·line_step,
// so one shader does rows (stride 1) and columns (stride W).
//
// Bindings (group 0):
//   0: uniform             FftParams
//   1: storage, read       src      complex
//   2: storage, read_write dst      complex
//   3: storage, read       twiddles complex, ω_n^e for e < n
// Dispatch: (⌈n/16⌉, ⌈lines/16⌉, 1).

struct FftParams {
    n: u32,
    radix: u32,
    ns: u32,
    lines: u32,
    lines_per_plane: u32,
    line_step: u32,
    plane_size: u32,
    elem_stride: u32,
    inverse: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: FftParams;
@group(0) @binding(1) var<storage, read> src: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> twiddles: array<vec2<f32>>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let line = gid.y;
    if (o >= params.n || line >= params.lines) {
        return;
    }
    let base = (line / params.lines_per_plane) * params.plane_size
        + (line % params.lines_per_plane) * params.line_step;
    let a = o % params.ns;
    let q = o / params.ns;
    let k = q % params.radix;
    let b = q / params.radix;
    let j = b * params.ns + a;
    let m = params.n / params.radix;
    let step = (a * (params.n / (params.ns * params.radix)) + k * m) % params.n;
    var acc = vec2<f32>(0.0, 0.0);
    var e = 0u;
    for (var r = 0u; r < params.radix; r = r + 1u) {
        var w = twiddles[e];
        if (params.inverse == 1u) {
            w.y = -w.y;
        }
        let v = src[base + (j + r * m) * params.elem_stride];
        acc = acc + vec2<f32>(v.x * w.x - v.y * w.y, v.x * w.y + v.y * w.x);
        // step < n, so one subtraction keeps e in [0, n) without an integer division.
        e = e + step;
        if (e >= params.n) {
            e = e - params.n;
        }
    }
    dst[base + o * params.elem_stride] = acc;
}
