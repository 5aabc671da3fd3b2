// moe_route: softmax over the router logits, top-k, renormalised weights; one thread per token.
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
    let base = t * p.experts;
    var m = logits[base];
    for (var e = 1u; e < p.experts; e++) {
        m = max(m, logits[base + e]);
    }
    var z = 0.0;
    for (var e = 0u; e < p.experts; e++) {
        z += exp(logits[base + e] - m);
    }

    var chosen: array<u32, K>;
    var probs: array<f32, K>;
    var total = 0.0;
    for (var j = 0u; j < K; j++) {
        var best = 0u;
        var best_logit = -3.0e38;
        var found = false;
        for (var e = 0u; e < p.experts; e++) {
            var taken = false;
            for (var i = 0u; i < j; i++) {
                taken = taken || chosen[i] == e;
            }
            let l = logits[base + e];
            if !taken && (!found || l > best_logit) {
                best = e;
                best_logit = l;
                found = true;
            }
        }
        chosen[j] = best;
        probs[j] = exp(best_logit - m) / z;
        total += probs[j];
    }
    for (var j = 0u; j < K; j++) {
        ids[t * K + j] = i32(chosen[j]);
        weights[t * K + j] = probs[j] / total;
    }
}
