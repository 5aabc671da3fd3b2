// moe_scatter: weighted sum of each token's expert outputs back into token order:
//   out[t] = Σ_j weights[t, j] · ys[positions[t, j]]
// One workgroup per token; summing over the token's own K rows (no atomics) keeps the result
// deterministic.

struct Params {
    tokens: u32,
    top_k: u32,
    cols: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> ys: array<f32>;        // [N, C] expert outputs, rows as in moe_gather
@group(0) @binding(1) var<storage, read_write> weights: array<f32>;   // [T, K]
@group(0) @binding(2) var<storage, read_write> positions: array<i32>; // [T, K] row of each pair in ys
@group(0) @binding(3) var<storage, read_write> out: array<f32>;       // [T, C] out
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg);
    if t >= p.tokens {
        return;
    }
    for (var c = lid; c < p.cols; c += WG) {
        var acc = 0.0;
        for (var j = 0u; j < p.top_k; j++) {
            let n = t * p.top_k + j;
            acc += weights[n] * ys[u32(positions[n]) * p.cols + c];
        }
        out[t * p.cols + c] = acc;
    }
}
