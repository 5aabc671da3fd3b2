// attention_decode: one query per head over a KV cache of `len` positions, split-K.
//
// Phase 1: workgroup (head, split) walks its keys CHUNK at a time with an online softmax and
// writes its partial: m_s = max_j s_j, l_s = Σ_j e^(s_j - m_s), acc_s = Σ_j e^(s_j - m_s) v_j.
// Phase 2: workgroup (head) merges the splits:
//   M = max_s m_s,  o = Σ_s e^(m_s - M) acc_s / Σ_s e^(m_s - M) l_s.
// Splitting the keys keeps the GPU busy on long caches, where one workgroup per head would
// leave most of it idle; a split takes several chunks when the cache is long, so that the
// partials stay small (the launcher caps the splits).
//
// A chunk's scores take KPT = WG / CHUNK threads per key, each a strided share of the dot
// product (a thread looping over all of D alone made every score a chain of D loads); its
// values, one thread per dimension, loop over CHUNK keys only.
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
    split_chunks: u32,
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
const KPT: u32 = WG / CHUNK;
// Output dimensions per thread: D ≤ 2 · WG.
const PHASE: u32 = {{ phase }}u;
const NEG: f32 = -3.0e38;

var<workgroup> scores: array<f32, CHUNK>;
var<workgroup> red: array<f32, WG>;

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
        var len = p.len;
        if p.dynamic != 0u {
            len = u32(pos[0]) + 1u;
        }
        let key = lid / KPT;
        let part = lid % KPT;
        var m = NEG;
        var l = 0.0;
        var acc0 = 0.0;
        var acc1 = 0.0;
        // The chunk count is uniform (barriers inside); keys past `len` are masked.
        for (var c = 0u; c < p.split_chunks; c++) {
            let start = (split * p.split_chunks + c) * CHUNK;
            let n = select(0u, min(CHUNK, len - start), start < len);
            var dot = 0.0;
            if key < n {
                let kb = ((start + key) * p.kv_heads + hk) * D;
                for (var dd = part; dd < D; dd += KPT) {
                    dot += q[hq * D + dd] * k[kb + dd];
                }
            }
            red[lid] = dot;
            workgroupBarrier();
            if part == 0u {
                var t = 0.0;
                for (var i = 0u; i < KPT; i++) {
                    t += red[lid + i];
                }
                scores[key] = select(NEG, t * p.scale, key < n);
            }
            workgroupBarrier();
            var mc = m;
            for (var j = 0u; j < n; j++) {
                mc = max(mc, scores[j]);
            }
            // Rescale what came before to the new maximum (e^0 = 1 while nothing has).
            let f = exp(m - mc);
            l *= f;
            acc0 *= f;
            acc1 *= f;
            for (var j = 0u; j < n; j++) {
                let e = exp(scores[j] - mc);
                l += e;
                let vb = ((start + j) * p.kv_heads + hk) * D;
                if lid < D {
                    acc0 += e * v[vb + lid];
                }
                if lid + WG < D {
                    acc1 += e * v[vb + lid + WG];
                }
            }
            m = mc;
            // Every thread is done with this chunk's scores before the next overwrites them.
            workgroupBarrier();
        }
        let base = (hq * p.splits + split) * stride;
        if lid < D {
            partials[base + lid] = acc0;
        }
        if lid + WG < D {
            partials[base + lid + WG] = acc1;
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
