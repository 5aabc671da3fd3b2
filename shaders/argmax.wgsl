// argmax: the index of the largest value of each row, the first one on ties (as torch.argmax
// and the host sampler), so that greedy decoding reads back one integer per token instead of
// a row of logits. One workgroup per row: each thread scans a strided share of the row (so
// its first hit is its lowest index), then the (value, index) pairs meet in a tree that keeps
// the larger value and, between equal values, the lower index.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // [R, N] (row-major)
@group(0) @binding(1) var<storage, read_write> out: array<i32>; // [R] out
@group(0) @binding(2) var<storage, read_write> p: Params;

const WG: u32 = {{ workgroup }}u;

var<workgroup> best_value: array<f32, WG>;
var<workgroup> best_index: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    var value = bitcast<f32>(0xff7fffffu); // -FLT_MAX
    var index = 0xFFFFFFFFu;
    if row < p.rows {
        let base = row * p.cols;
        for (var c = lid; c < p.cols; c += WG) {
            let v = x[base + c];
            if v > value || index == 0xFFFFFFFFu {
                value = v;
                index = c;
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
            if i != 0xFFFFFFFFu && (mine == 0xFFFFFFFFu || v > best_value[lid] || (v == best_value[lid] && i < mine)) {
                best_value[lid] = v;
                best_index[lid] = i;
            }
        }
        workgroupBarrier();
    }
    if lid == 0u && row < p.rows {
        out[row] = i32(best_index[0]);
    }
}
