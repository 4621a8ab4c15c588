// Real planes to complex planes for the FFT: out = (scale·x, 0).
//
// Bindings (group 0):
//   0: uniform             PlaneParams
//   1: storage, read       x    [planes, H, W]
//   2: storage, read_write out  [planes, H, W] complex
// Dispatch: (⌈W/16⌉, ⌈H/16⌉, planes).

struct PlaneParams {
    width: u32,
    height: u32,
    planes: u32,
    _pad0: u32,
    scale: f32,
    _pad1: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> params: PlaneParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec2<f32>>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.height || gid.z >= params.planes) {
        return;
    }
    let i = (gid.z * params.height + gid.y) * params.width + gid.x;
    out[i] = vec2<f32>(x[i] * params.scale, 0.0);
}
