// lightning_decode: one token of lightning attention, fused state update and readout.
//
//   S' = λ S + kᵀ v,   o = q S'      (λ = exp(-s_h), per head)
// One workgroup owns head h and COLS state columns; ROWS row groups of threads each walk a
// strided set of state rows, and their partial dot products q·S'[:, c] meet in workgroup
// memory.
//
// The RMSNorm over all heads that follows needs Σ o² over every head, which no workgroup
// sees. So `out` holds o ⊙ norm (the norm's weight commutes with its scalar) followed by one
// partial Σ o² per workgroup; the output gate's matmul sums the partials and applies the
// scalar in its epilogue (qgemv, epilogue 4). That saves the norm's own launch per layer.
//
// In place (IN_PLACE = 1, a decode step replayed from a graph): the state binding is updated
// where it lies and `state_out` receives the state as it was, so that a step run ahead can be
// undone. A workgroup reads and writes only its own columns, every row of them, so no other
// workgroup sees a half-updated column.

struct Params {
    heads: u32,
    col_tiles: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;       // [1, H, 3, D] (q | k | v per head, after SiLU)
@group(0) @binding(1) var<storage, read_write> state_in: array<f32>;  // [H, D, D] (row-major; S[h][k-dim][v-dim]); IN_PLACE: updated
@group(0) @binding(2) var<storage, read_write> rates: array<f32>;     // [H] decay rates s_h
@group(0) @binding(3) var<storage, read_write> out: array<f32>;       // [1, H·D + H·col_tiles]: o ⊙ norm, then partial Σ o²
@group(0) @binding(4) var<storage, read_write> state_out: array<f32>; // [H, D, D] S' (IN_PLACE: S as it was)
@group(0) @binding(5) var<storage, read_write> norm: array<f32>;      // [H·D] weight of the RMSNorm over all heads
@group(0) @binding(6) var<uniform> p: Params;

const D: u32 = {{ head_dim }}u;
const COLS: u32 = {{ cols }}u;
const ROWS: u32 = {{ rows }}u;
const IN_PLACE: bool = {{ in_place }};

var<workgroup> partial: array<f32, ROWS * COLS>;

@compute @workgroup_size(ROWS * COLS)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let h = wid.x / p.col_tiles;
    let col = (wid.x % p.col_tiles) * COLS + lid % COLS;
    let group = lid / COLS;
    let lambda = exp(-rates[h]);
    let q_off = h * 3u * D;
    let s_base = h * D * D;

    var acc = 0.0;
    if col < D {
        let v = qkv[q_off + 2u * D + col];
        for (var r = group; r < D; r += ROWS) {
            let i = s_base + r * D + col;
            let old = state_in[i];
            let s = lambda * old + qkv[q_off + D + r] * v;
            if IN_PLACE {
                state_in[i] = s;
                state_out[i] = old;
            } else {
                state_out[i] = s;
            }
            acc += qkv[q_off + r] * s;
        }
    }
    partial[lid] = acc;
    workgroupBarrier();
    var o = 0.0;
    if group == 0u && col < D {
        for (var g = 0u; g < ROWS; g++) {
            o += partial[g * COLS + lid];
        }
        out[h * D + col] = o * norm[h * D + col];
    }
    // This workgroup's share of Σ o²: its columns' squares, summed by one thread.
    workgroupBarrier();
    if group == 0u {
        partial[lid] = o * o;
    }
    workgroupBarrier();
    if lid == 0u {
        var ss = 0.0;
        for (var c = 0u; c < COLS; c++) {
            ss += partial[c];
        }
        out[p.heads * D + wid.x] = ss;
    }
}
