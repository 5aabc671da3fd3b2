// rms_norm: y = weight * h / sqrt(mean(h^2) + eps), one workgroup per row.
// Fused with the residual combine of the layer before it: h = alpha * x + beta * branch
// (has_branch = 1), or h = x (has_branch = 0). Both h and y are written, since a pre-norm
// model keeps h as its residual stream while a post-norm model keeps y.

struct Params {
    rows: u32,
    cols: u32,
    has_branch: u32,
    _pad: u32,
    alpha: f32,
    beta: f32,
    eps: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;      // [rows, cols] (row-major)
@group(0) @binding(1) var<storage, read_write> branch: array<f32>; // [rows, cols] (ignored if has_branch = 0)
@group(0) @binding(2) var<storage, read_write> weight: array<f32>; // [cols]
@group(0) @binding(3) var<storage, read_write> h: array<f32>;      // [rows, cols] out
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // [rows, cols] out
@group(0) @binding(5) var<storage, read_write> p: Params;

const WG: u32 = {{ workgroup }}u;
var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    // Excess workgroups of the 2-D grid do no work but still reach the barriers.
    let cols = select(0u, p.cols, row < p.rows);
    let base = row * p.cols;

    var ss = 0.0;
    for (var c = lid; c < cols; c += WG) {
        var v = x[base + c];
        if p.has_branch != 0u {
            v = p.alpha * v + p.beta * branch[base + c];
        }
        h[base + c] = v;
        ss += v * v;
    }
    partial[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(max(cols, 1u)) + p.eps);
    // Each thread re-reads only the h values it wrote itself: no barrier needed.
    for (var c = lid; c < cols; c += WG) {
        y[base + c] = weight[c] * (h[base + c] * inv);
    }
}
