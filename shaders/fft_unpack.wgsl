// Complex planes back to real: out = re(spec). The 1/(H·W) of the inverse DFT is already folded
// into the gains of `blur_combine.wgsl`.
//
// Bindings (group 0):
//   0: uniform             PlaneParams (scale unused)
//   1: storage, read       spec [planes, H, W] complex
//   2: storage, read_write out  [planes, H, W]
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
@group(0) @binding(1) var<storage, read> spec: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.height || gid.z >= params.planes) {
        return;
    }
    let i = (gid.z * params.height + gid.y) * params.width + gid.x;
    out[i] = spec[i].x;
}
