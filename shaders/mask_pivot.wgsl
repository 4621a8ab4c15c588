// The pivot μ* for an inpainting mask (eps-method.md §3): per pixel, an observed pixel becomes
// g_z·z + g_y·y and a hidden one keeps z = x_t/α. g_z, g_y are the proximal gains for the
// eigenvalue 1 of AᵀA (computed on the host in f64, see `inverse::prox_gains`).
//
// Bindings (group 0):
//   0: uniform            MaskParams
//   1: storage, read      x_t   [B, C, H, W]
//   2: storage, read      y     [By, C, H, W], zero where hidden (By = 1 or B)
//   3: storage, read      mask  [Bm, Cm, H, W], 1 = observed (Bm = 1 or B, Cm = 1 or C)
//   4: storage, read_write mu   [B, C, H, W]
// Dispatch: (⌈W/16⌉, ⌈H/16⌉, B·C).

struct MaskParams {
    width: u32,
    height: u32,
    channels: u32,
    planes: u32,
    y_batch: u32,
    mask_batch: u32,
    mask_channels: u32,
    _pad0: u32,
    inv_alpha: f32,
    gain_z: f32,
    gain_y: f32,
    _pad1: f32,
}

@group(0) @binding(0) var<uniform> params: MaskParams;
@group(0) @binding(1) var<storage, read> x_t: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> mask: array<f32>;
@group(0) @binding(4) var<storage, read_write> mu: array<f32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x;
    let row = gid.y;
    let plane = gid.z;
    if (col >= params.width || row >= params.height || plane >= params.planes) {
        return;
    }
    let hw = params.width * params.height;
    let pix = row * params.width + col;
    let b = plane / params.channels;
    let c = plane % params.channels;
    let yb = select(b, 0u, params.y_batch == 1u);
    let mb = select(b, 0u, params.mask_batch == 1u);
    let mc = select(c, 0u, params.mask_channels == 1u);
    let i = plane * hw + pix;
    let z = x_t[i] * params.inv_alpha;
    let m = mask[(mb * params.mask_channels + mc) * hw + pix];
    var out = z;
    if (m > 0.5) {
        out = params.gain_z * z + params.gain_y * y[(yb * params.channels + c) * hw + pix];
    }
    mu[i] = out;
}
