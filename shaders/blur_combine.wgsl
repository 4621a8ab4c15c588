// The blur pivot in the Fourier domain (eps-method.md §3): per frequency with eigenvalue
// e = |K̂|² of AᵀA, μ̂* = g_z(e)·Ẑ + g_y(e)·conj(K̂)Ŷ with the proximal gains
// g_z = p/(p + q e), g_y = q/(p + q e) (p = α²σ_y², q = β²), and (1, 0) on the null space
// (e ≤ 1e-12) or where p + q e = 0 — the same rule as `inverse::prox_gains`. Both gains carry the
// 1/(H·W) of the inverse DFT that follows.
//
// Bindings (group 0):
//   0: uniform             CombineParams
//   1: storage, read       z_hat    [B·C, H, W] complex, the spectrum of x_t/α
//   2: storage, read       aty_hat  [By·C, H, W] complex, conj(K̂)·Ŷ (By = 1 or B)
//   3: storage, read       gram     [H, W], e = |K̂|²
//   4: storage, read_write out      [B·C, H, W] complex
// Dispatch: (⌈W/16⌉, ⌈H/16⌉, B·C).

struct CombineParams {
    width: u32,
    height: u32,
    channels: u32,
    planes: u32,
    y_batch: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    p: f32,
    q: f32,
    inv_size: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> params: CombineParams;
@group(0) @binding(1) var<storage, read> z_hat: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> aty_hat: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> gram: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<vec2<f32>>;

const NULL_EIGENVALUE: f32 = 1e-12;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    let plane = gid.z;
    if (col >= params.width || row >= params.height || plane >= params.planes) {
        return;
    }
    let hw = params.width * params.height;
    let f = row * params.width + col;
    let e = gram[f];
    var gz = 1.0;
    var gy = 0.0;
    let den = params.p + params.q * e;
    if (e > NULL_EIGENVALUE && den > 0.0) {
        gz = params.p / den;
        gy = params.q / den;
    }
    let b = plane / params.channels;
    let c = plane % params.channels;
    let yb = select(b, 0u, params.y_batch == 1u);
    let i = plane * hw + f;
    out[i] = (gz * z_hat[i] + gy * aty_hat[(yb * params.channels + c) * hw + f]) * params.inv_size;
}
