// moe_route: softmax over the router logits, top-k, renormalised weights (topk.wgsl); one
// thread per token.
//   p_e = softmax(logits)_e,  ids = the K largest p (descending, lowest index on ties),
//   w_j = p_ids[j] / Σ_j' p_ids[j'].

struct Params {
    tokens: u32,
    experts: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;  // [T, E] (row-major)
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;     // [T, K] out, expert ids
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [T, K] out
@group(0) @binding(3) var<uniform> p: Params;

const K: u32 = {{ top_k }}u;
const WG: u32 = {{ workgroup }}u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg) * WG + lid;
    if t >= p.tokens {
        return;
    }
    route_row(t, p.experts);
}

fn route_logit(row: u32, e: u32) -> f32 {
    return logits[row * p.experts + e];
}

fn route_put(row: u32, j: u32, id: u32, w: f32) {
    ids[row * K + j] = i32(id);
    weights[row * K + j] = w;
}
