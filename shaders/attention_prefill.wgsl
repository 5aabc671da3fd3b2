// attention_prefill: causal softmax attention of T new queries over the KV cache, with GQA,
// tiled with an online softmax (flash-attention style).
//
// Query row i sits at absolute position past + i and attends keys 0..=past + i:
//   o_i = Σ_j softmax_j(scale · q_i·k_j) v_j,   kv head = q head / (Hq / Hkv).
// One workgroup owns ROWS query rows of one head and walks the keys in tiles of KEYS, keeping
// a running max m, a running sum l and the unnormalised output acc per row:
//   m' = max(m, max_j s_j),  l' = l e^(m-m') + Σ_j e^(s_j-m'),  acc' = acc e^(m-m') + Σ_j e^(s_j-m') v_j.

struct Params {
    tokens: u32,
    past: u32,
    q_heads: u32,
    kv_heads: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> q: array<f32>;   // [T, Hq, D] (row-major, RoPE applied)
@group(0) @binding(1) var<storage, read_write> k: array<f32>;   // [past + T, Hkv, D] (row-major)
@group(0) @binding(2) var<storage, read_write> v: array<f32>;   // [past + T, Hkv, D] (row-major)
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [T, Hq, D] (row-major)
@group(0) @binding(4) var<uniform> p: Params;

const D: u32 = {{ head_dim }}u;
const ROWS: u32 = {{ rows }}u;
const KEYS: u32 = {{ keys }}u;
const WG: u32 = ROWS * KEYS;
// Output dims per thread in the P·V phase: thread (i, part) owns dims part, part + KEYS, ...
const DPT: u32 = (D + KEYS - 1u) / KEYS;
// Stands for -inf in masked scores; finite so that differences never make NaN.
const NEG: f32 = -3.0e38;

var<workgroup> q_tile: array<f32, ROWS * D>;
var<workgroup> kv_tile: array<f32, KEYS * D>;
var<workgroup> probs: array<f32, ROWS * KEYS>;
var<workgroup> row_max: array<f32, ROWS>;
var<workgroup> row_sum: array<f32, ROWS>;
var<workgroup> row_corr: array<f32, ROWS>;
var<workgroup> n_keys: u32;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let hq = wid.y;
    let hk = hq / (p.q_heads / p.kv_heads);
    let r0 = wid.x * ROWS;
    let tokens = p.tokens;

    for (var e = lid; e < ROWS * D; e += WG) {
        let row = r0 + e / D;
        var x = 0.0;
        if row < tokens {
            x = q[(row * p.q_heads + hq) * D + e % D];
        }
        q_tile[e] = x;
    }
    if lid < ROWS {
        row_max[lid] = NEG;
        row_sum[lid] = 0.0;
    }
    if lid == 0u {
        // The last row of this tile sees the most keys.
        n_keys = p.past + min(r0 + ROWS, tokens);
    }
    let keys = workgroupUniformLoad(&n_keys);

    let i = lid / KEYS;
    let part = lid % KEYS;
    let row_valid = r0 + i < tokens;
    let qpos = p.past + r0 + i;
    var acc: array<f32, DPT>;
    for (var x = 0u; x < DPT; x++) {
        acc[x] = 0.0;
    }

    for (var k0 = 0u; k0 < keys; k0 += KEYS) {
        for (var e = lid; e < KEYS * D; e += WG) {
            let key = k0 + e / D;
            var x = 0.0;
            if key < keys {
                x = k[(key * p.kv_heads + hk) * D + e % D];
            }
            kv_tile[e] = x;
        }
        workgroupBarrier();

        var s = NEG;
        if row_valid && k0 + part <= qpos {
            var dot = 0.0;
            for (var dd = 0u; dd < D; dd++) {
                dot += q_tile[i * D + dd] * kv_tile[part * D + dd];
            }
            s = dot * p.scale;
        }
        probs[lid] = s;
        workgroupBarrier();

        if part == 0u {
            let m_old = row_max[i];
            var m = m_old;
            for (var j = 0u; j < KEYS; j++) {
                m = max(m, probs[i * KEYS + j]);
            }
            let corr = exp(m_old - m);
            var l = row_sum[i] * corr;
            for (var j = 0u; j < KEYS; j++) {
                let sj = probs[i * KEYS + j];
                var pj = 0.0;
                if sj > NEG {
                    pj = exp(sj - m);
                }
                probs[i * KEYS + j] = pj;
                l += pj;
            }
            row_max[i] = m;
            row_sum[i] = l;
            row_corr[i] = corr;
        }
        workgroupBarrier();

        for (var e = lid; e < KEYS * D; e += WG) {
            let key = k0 + e / D;
            var x = 0.0;
            if key < keys {
                x = v[(key * p.kv_heads + hk) * D + e % D];
            }
            kv_tile[e] = x;
        }
        workgroupBarrier();

        let corr = row_corr[i];
        for (var x = 0u; x < DPT; x++) {
            let dd = part + x * KEYS;
            if dd < D {
                var a = acc[x] * corr;
                for (var j = 0u; j < KEYS; j++) {
                    a += probs[i * KEYS + j] * kv_tile[j * D + dd];
                }
                acc[x] = a;
            }
        }
        workgroupBarrier();
    }

    if row_valid {
        let inv = 1.0 / row_sum[i];
        for (var x = 0u; x < DPT; x++) {
            let dd = part + x * KEYS;
            if dd < D {
                out[((r0 + i) * p.q_heads + hq) * D + dd] = acc[x] * inv;
            }
        }
    }
}
