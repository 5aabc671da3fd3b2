// attention_decode: one query per head over a KV cache of `len` positions, split-K.
//
// Phase 1: workgroup (head, split) scores CHUNK keys, and writes its partial softmax:
//   m_s = max_j s_j,  l_s = Σ_j e^(s_j - m_s),  acc_s = Σ_j e^(s_j - m_s) v_j.
// Phase 2: workgroup (head) merges the splits:
//   M = max_s m_s,  o = Σ_s e^(m_s - M) acc_s / Σ_s e^(m_s - M) l_s.
// Splitting the keys keeps the GPU busy on long caches, where one workgroup per head would
// leave most of it idle.
//
// In a step replayed from a graph (dynamic = 1) the length is read on the device, pos[0] + 1,
// and the grid covers the cache's capacity: splits past the length write an empty partial
// (m = NEG, l = 0, acc = 0), which the merge weighs by e^(NEG - M) = 0.

struct Params {
    len: u32,
    q_heads: u32,
    kv_heads: u32,
    splits: u32,
    scale: f32,
    dynamic: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<f32>;        // [1, Hq, D] (RoPE applied)
@group(0) @binding(1) var<storage, read_write> k: array<f32>;        // [len, Hkv, D] (row-major)
@group(0) @binding(2) var<storage, read_write> v: array<f32>;        // [len, Hkv, D] (row-major)
@group(0) @binding(3) var<storage, read_write> partials: array<f32>; // [Hq, splits, D + 2]: acc, m, l
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // [1, Hq, D]
@group(0) @binding(5) var<storage, read_write> pos: array<i32>;      // [1] the step's position (dynamic = 1)
@group(0) @binding(6) var<uniform> p: Params;

const D: u32 = {{ head_dim }}u;
const CHUNK: u32 = {{ chunk }}u;
const WG: u32 = {{ workgroup }}u;
const PHASE: u32 = {{ phase }}u;
const NEG: f32 = -3.0e38;

var<workgroup> scores: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;

fn reduce_max(lid: u32) -> f32 {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_sum(lid: u32) -> f32 {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let hq = wid.x;
    let stride = D + 2u;
    if PHASE == 1u {
        let split = wid.y;
        let hk = hq / (p.q_heads / p.kv_heads);
        let start = split * CHUNK;
        var len = p.len;
        if p.dynamic != 0u {
            len = u32(pos[0]) + 1u;
        }
        let n = select(0u, min(CHUNK, len - start), start < len);

        var m_local = NEG;
        for (var j = lid; j < CHUNK; j += WG) {
            var s = NEG;
            if j < n {
                let kb = ((start + j) * p.kv_heads + hk) * D;
                var dot = 0.0;
                for (var dd = 0u; dd < D; dd++) {
                    dot += q[hq * D + dd] * k[kb + dd];
                }
                s = dot * p.scale;
            }
            scores[j] = s;
            m_local = max(m_local, s);
        }
        red[lid] = m_local;
        workgroupBarrier();
        let m = reduce_max(lid);

        var l_local = 0.0;
        for (var j = lid; j < CHUNK; j += WG) {
            var e = 0.0;
            if j < n {
                e = exp(scores[j] - m);
            }
            scores[j] = e;
            l_local += e;
        }
        red[lid] = l_local;
        workgroupBarrier();
        let l = reduce_sum(lid);

        let base = (hq * p.splits + split) * stride;
        for (var dd = lid; dd < D; dd += WG) {
            var a = 0.0;
            for (var j = 0u; j < n; j++) {
                a += scores[j] * v[((start + j) * p.kv_heads + hk) * D + dd];
            }
            partials[base + dd] = a;
        }
        if lid == 0u {
            partials[base + D] = m;
            partials[base + D + 1u] = l;
        }
    } else {
        let base = hq * p.splits * stride;
        var big_m = NEG;
        for (var s = 0u; s < p.splits; s++) {
            big_m = max(big_m, partials[base + s * stride + D]);
        }
        var big_l = 0.0;
        for (var s = 0u; s < p.splits; s++) {
            big_l += partials[base + s * stride + D + 1u] * exp(partials[base + s * stride + D] - big_m);
        }
        for (var dd = lid; dd < D; dd += WG) {
            var o = 0.0;
            for (var s = 0u; s < p.splits; s++) {
                o += partials[base + s * stride + dd] * exp(partials[base + s * stride + D] - big_m);
            }
            out[hq * D + dd] = o / big_l;
        }
    }
}
