// argmax: the index of the largest value of each row, the first one on ties (as torch.argmax
// and the host sampler), so that greedy decoding reads back one integer per token instead of
// a row of logits.
//
// Two stages, because one row is all a decode step has: a single workgroup walking 200K
// logits is a chain of dependent loads (~0.3 ms on an H100), while the row read at full
// bandwidth takes ~1 µs. Stage 0 splits each row into chunks of `chunk` columns, one
// workgroup each, and writes each chunk's (maximum, column); stage 1 reduces a row's chunk
// results the same way, reading the columns from `xi` (one chunk per row, so it writes the
// answer). Within a workgroup each thread scans a strided share of its chunk in column order
// (so its first hit is its lowest column), then the (value, column) pairs meet in a tree that
// keeps the larger value and, between equal values, the lower column.

struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,
    chunks: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [R, cols]: logits, or stage 0's chunk maxima
@group(0) @binding(1) var<storage, read_write> xi: array<i32>;   // [R, cols]: stage 1, their columns (stage 0: unused)
@group(0) @binding(2) var<storage, read_write> best: array<f32>; // [R, chunks] out: each chunk's maximum
@group(0) @binding(3) var<storage, read_write> out: array<i32>;  // [R, chunks] out: its column
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;
const STAGE: u32 = {{ stage }}u;
const NONE: u32 = 0xFFFFFFFFu;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

// The column that x[i] stands for.
fn column(i: u32, c: u32) -> u32 {
    if STAGE == 0u {
        return c;
    }
    return u32(xi[i]);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = linear_workgroup(wid, nwg);
    let row = l / p.chunks;
    var value = bitcast<f32>(0xff7fffffu); // -FLT_MAX
    var index = NONE;
    if row < p.rows {
        let base = row * p.cols;
        let start = (l % p.chunks) * p.chunk;
        let end = min(p.cols, start + p.chunk);
        // Four loads in flight per thread (clamped into the chunk, so always in bounds), then
        // the four candidates in column order.
        for (var c = start + lid; c < end; c += 4u * WG) {
            let v = vec4<f32>(
                x[base + c],
                x[base + min(c + WG, end - 1u)],
                x[base + min(c + 2u * WG, end - 1u)],
                x[base + min(c + 3u * WG, end - 1u)],
            );
            for (var j = 0u; j < 4u; j++) {
                let cj = c + j * WG;
                if cj < end && (v[j] > value || index == NONE) {
                    value = v[j];
                    index = column(base + cj, cj);
                }
            }
        }
    }
    best_value[lid] = value;
    best_index[lid] = index;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            let v = best_value[lid + s];
            let i = best_index[lid + s];
            let mine = best_index[lid];
            if i != NONE && (mine == NONE || v > best_value[lid] || (v == best_value[lid] && i < mine)) {
                best_value[lid] = v;
                best_index[lid] = i;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u && row < p.rows {
        best[l] = best_value[0];
        out[l] = i32(best_index[0]);
    }
}
