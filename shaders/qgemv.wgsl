// qgemv: the decode-time expert matmul over a pool of expert records.
//
// For each pair p (a token and one of its experts) whose expert e = ids[p] has a record in
// this pool (table[e] != 0xFFFFFFFF), y[p, n] = Σ_k W_e[n, k] · xin(p)[k] for n < N, where
// W_e is one matrix of the record (rows of `row_bytes` bytes from word table[e] +
// offset_words) and xin(p) is x row p / per, or silu(gate) · up of x row p (SWIGLU). Pairs of
// experts absent from the pool keep their rows of y, so one y is filled by one dispatch per pool.
//
// With few pairs the work is N·K weights read once each: bandwidth bound. A workgroup takes
// ROWS rows of one pair; each thread walks units of 8 columns with stride WG, reads the input
// unit once and dots it with the ROWS weight units (consecutive threads read consecutive
// words of a row). The per-thread sums are then reduced in workgroup memory (no subgroups:
// WebGPU devices may lack them).

struct Params {
    pairs: u32,
    rows: u32,
    cols: u32,
    per: u32,
    x_stride: u32,
    row_bytes: u32,
    offset_words: u32,
    experts: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;     // [P / per, K] or [P, 2K] (SWIGLU) (row-major)
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;   // [P] expert of each pair
@group(0) @binding(2) var<storage, read_write> table: array<i32>; // [E] record word offset in pool, or -1
@group(0) @binding(3) var<storage, read_write> pool: array<u32>;  // [words] expert records (little-endian)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;     // [P, N] (row-major), rows of this pool written
@group(0) @binding(5) var<storage, read_write> p: Params;

const WG: u32 = {{ workgroup }}u;
// Output rows per workgroup, held in two vec4 accumulators (written out rather than as an
// array: drivers keep a dynamically indexed private array in slow local memory).
const ROWS: u32 = 8u;
const NONE: u32 = 0xFFFFFFFFu;

var<workgroup> partial: array<vec4<f32>, 2u * WG>; // [2, WG]: rows n0 .. n0 + 4, n0 + 4 .. n0 + 8

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let tiles = (p.rows + ROWS - 1u) / ROWS;
    let l = linear_workgroup(wid, nwg);
    let pair = l / tiles;
    let n0 = (l % tiles) * ROWS;

    // Excess workgroups of the 2-D grid and pairs of absent experts get no units, but still
    // reach the barriers below.
    var record = NONE;
    if pair < p.pairs {
        let e = ids[pair];
        if e >= 0 && u32(e) < p.experts {
            record = bitcast<u32>(table[e]);
        }
    }
    let units = select(0u, (p.cols + 7u) / 8u, record != NONE);
    let mw = record + p.offset_words;
    let xbase = (pair / p.per) * p.x_stride;
    // Rows past the end re-read the last row (no branch in the loop); their sums are dropped.
    let last = max(p.rows, 1u) - 1u;

    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    for (var u = lid; u < units; u += WG) {
        let e0 = u * 8u;
        let xv = x_unit(xbase, e0, p.cols);
        acc_a += vec4<f32>(
            dot8(w_unit(mw, n0, e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 1u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 2u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 3u, last), e0, p.cols, p.row_bytes), xv),
        );
        acc_b += vec4<f32>(
            dot8(w_unit(mw, min(n0 + 4u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 5u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 6u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 7u, last), e0, p.cols, p.row_bytes), xv),
        );
    }

    partial[lid] = acc_a;
    partial[WG + lid] = acc_b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
            partial[WG + lid] += partial[WG + lid + s];
        }
        workgroupBarrier();
    }
    if lid < ROWS && units > 0u && n0 + lid < p.rows {
        y[pair * p.rows + n0 + lid] = partial[(lid / 4u) * WG][lid % 4u];
    }
}

fn dot8(w: Unit, x: Unit) -> f32 {
    return dot(w.lo, x.lo) + dot(w.hi, x.hi);
}
