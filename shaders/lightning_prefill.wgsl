// lightning_prefill: blocked lightning attention over T tokens of one sequence, with the
// state carried in and out.
//
// Per head h with per-token decay λ = exp(-s_h):  S_t = λ S_{t-1} + k_tᵀ v_t,  o_t = q_t S_t.
// For a block of n tokens (i, j = 0..n-1) that starts from state S0:
//   o_i = λ^(i+1) q_i S0  +  Σ_{j≤i} λ^(i-j) (q_i·k_j) v_j      (inter-block + intra-block)
//   S'  = λ^n S0  +  Σ_j λ^(n-1-j) k_jᵀ v_j
// Columns of S (and of o) are independent, so one workgroup owns head h and a tile of COLS
// state columns; that tile of S lives in workgroup memory for the whole sequence.

struct Params {
    tokens: u32,
    heads: u32,
    col_tiles: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;       // [T, H, 3, D] (row-major; q | k | v per head, after SiLU)
@group(0) @binding(1) var<storage, read_write> state_in: array<f32>;  // [H, D, D] (row-major; S[h][k-dim][v-dim])
@group(0) @binding(2) var<storage, read_write> rates: array<f32>;     // [H] decay rates s_h
@group(0) @binding(3) var<storage, read_write> out: array<f32>;       // [T, H, D] (row-major)
@group(0) @binding(4) var<storage, read_write> state_out: array<f32>; // [H, D, D]
@group(0) @binding(5) var<uniform> p: Params;

const D: u32 = {{ head_dim }}u;
const C: u32 = {{ block }}u;
const COLS: u32 = {{ cols }}u;
const WG: u32 = {{ workgroup }}u; // = C * COLS

var<workgroup> s_tile: array<f32, D * COLS>; // S[r][c] at r * COLS + c
var<workgroup> scores: array<f32, C * C>;    // λ^(i-j) q_i·k_j, zero above the diagonal
var<workgroup> v_blk: array<f32, C * COLS>;  // V[j][c]
var<workgroup> decay: array<f32, C + 1u>;    // λ^m for m = 0..C
var<workgroup> n_tokens: u32;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = wid.x / p.col_tiles;
    let col0 = (wid.x % p.col_tiles) * COLS;
    let rate = rates[h];
    let row_stride = p.heads * 3u * D;
    let q_off = h * 3u * D;
    let k_off = q_off + D;
    let v_off = q_off + 2u * D;
    let s_base = h * D * D;

    for (var e = lid; e < D * COLS; e += WG) {
        let col = col0 + e % COLS;
        var s = 0.0;
        if col < D {
            s = state_in[s_base + (e / COLS) * D + col];
        }
        s_tile[e] = s;
    }
    for (var m = lid; m <= C; m += WG) {
        decay[m] = exp(-rate * f32(m));
    }
    if lid == 0u {
        n_tokens = p.tokens;
    }
    // Makes the token count uniform, so the block loop may hold barriers (also a barrier).
    let tokens = workgroupUniformLoad(&n_tokens);

    // This thread's (row, column) in the output phase.
    let i = lid / COLS;
    let c = lid % COLS;
    let col = col0 + c;

    for (var t0 = 0u; t0 < tokens; t0 += C) {
        let n = min(C, tokens - t0);

        var v = 0.0;
        if i < n && col < D {
            v = qkv[(t0 + i) * row_stride + v_off + col];
        }
        v_blk[lid] = v;

        for (var e = lid; e < C * C; e += WG) {
            let si = e / C;
            let sj = e % C;
            var a = 0.0;
            if sj <= si && si < n {
                let qi = (t0 + si) * row_stride + q_off;
                let kj = (t0 + sj) * row_stride + k_off;
                var dot = 0.0;
                for (var r = 0u; r < D; r++) {
                    dot += qkv[qi + r] * qkv[kj + r];
                }
                a = decay[si - sj] * dot;
            }
            scores[e] = a;
        }
        workgroupBarrier();

        if i < n && col < D {
            let qi = (t0 + i) * row_stride + q_off;
            var inter = 0.0;
            for (var r = 0u; r < D; r++) {
                inter += qkv[qi + r] * s_tile[r * COLS + c];
            }
            var intra = 0.0;
            for (var j = 0u; j <= i; j++) {
                intra += scores[i * C + j] * v_blk[j * COLS + c];
            }
            out[(t0 + i) * p.heads * D + h * D + col] = decay[i + 1u] * inter + intra;
        }
        workgroupBarrier();

        for (var e = lid; e < D * COLS; e += WG) {
            let r = e / COLS;
            let ec = e % COLS;
            var acc = 0.0;
            for (var j = 0u; j < n; j++) {
                acc += decay[n - 1u - j] * qkv[(t0 + j) * row_stride + k_off + r] * v_blk[j * COLS + ec];
            }
            s_tile[e] = decay[n] * s_tile[e] + acc;
        }
        workgroupBarrier();
    }

    for (var e = lid; e < D * COLS; e += WG) {
        let col_e = col0 + e % COLS;
        if col_e < D {
            state_out[s_base + (e / COLS) * D + col_e] = s_tile[e];
        }
    }
}
