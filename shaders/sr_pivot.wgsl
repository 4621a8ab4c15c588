// The pivot μ* for average-pool super-resolution ×s (eps-method.md §3). With P the projector onto
// block-constant images, AᵀA = P/s², so μ* = z + (g_z − 1)·P z + g_y·Aᵀy, where z = x_t/α,
// Aᵀy = nearest_upsample(y)/s² and g_z, g_y are the proximal gains for the eigenvalue 1/s²
// (host f64, `inverse::prox_gains`). On the complement of P the gains are (1, 0): z is kept.
//
// Bindings (group 0):
//   0: uniform             SrParams
//   1: storage, read       x_t  [B, C, H, W]
//   2: storage, read       y    [By, C, H/s, W/s] (By = 1 or B)
//   3: storage, read_write mu   [B, C, H, W]
// Dispatch: (⌈W/16⌉, ⌈H/16⌉, B·C). H and W are multiples of s (checked on the host).

struct SrParams {
    width: u32,
    height: u32,
    channels: u32,
    planes: u32,
    y_batch: u32,
    factor: u32,
    _pad0: u32,
    _pad1: u32,
    inv_alpha: f32,
    gain_z: f32,
    gain_y: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> params: SrParams;
@group(0) @binding(1) var<storage, read> x_t: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> mu: array<f32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    let plane = gid.z;
    if (col >= params.width || row >= params.height || plane >= params.planes) {
        return;
    }
    let s = params.factor;
    let hw = params.width * params.height;
    let base = plane * hw;
    let r0 = (row / s) * s;
    let c0 = (col / s) * s;
    var sum = 0.0;
    for (var dr = 0u; dr < s; dr = dr + 1u) {
        for (var dc = 0u; dc < s; dc = dc + 1u) {
            sum = sum + x_t[base + (r0 + dr) * params.width + c0 + dc];
        }
    }
    let inv_s2 = 1.0 / f32(s * s);
    let pz = sum * inv_s2 * params.inv_alpha;
    let z = x_t[base + row * params.width + col] * params.inv_alpha;
    let b = plane / params.channels;
    let c = plane % params.channels;
    let yb = select(b, 0u, params.y_batch == 1u);
    let yw = params.width / s;
    let yhw = yw * (params.height / s);
    let aty = y[(yb * params.channels + c) * yhw + (row / s) * yw + col / s] * inv_s2;
    mu[base + row * params.width + col] = z + (params.gain_z - 1.0) * pz + params.gain_y * aty;
}
