// A linear combination of up to four image batches, out = Σ cᵢ·aᵢ: every update of the EPS
// sampler (Euler, Heun, DPM-Solver++(2M)) is one of these, so the sampler state stays on the GPU
// between network calls. Unused terms are bound to any input with a zero coefficient.
//
// Bindings (group 0):
//   0: uniform             LincombParams
//   1–4: storage, read     a0, a1, a2, a3 [planes, H, W]
//   5: storage, read_write out            [planes, H, W] (distinct from every input)
// Dispatch: (⌈W/16⌉, ⌈H/16⌉, planes).

struct LincombParams {
    width: u32,
    height: u32,
    planes: u32,
    _pad0: u32,
    c0: f32,
    c1: f32,
    c2: f32,
    c3: f32,
}

@group(0) @binding(0) var<uniform> params: LincombParams;
@group(0) @binding(1) var<storage, read> a0: array<f32>;
@group(0) @binding(2) var<storage, read> a1: array<f32>;
@group(0) @binding(3) var<storage, read> a2: array<f32>;
@group(0) @binding(4) var<storage, read> a3: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.height || gid.z >= params.planes) {
        return;
    }
    let i = (gid.z * params.height + gid.y) * params.width + gid.x;
    out[i] = params.c0 * a0[i] + params.c1 * a1[i] + params.c2 * a2[i] + params.c3 * a3[i];
}
