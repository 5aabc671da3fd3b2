// moe_gather: group the token copies of a batch by expert.
//
// Each of the N = T*K (token, slot) pairs goes to expert ids[n]. Phase 1 (one workgroup)
// gives expert e the rows offsets[e] .. offsets[e+1] of the gathered matrix, in token order
// (stable, so results never depend on scheduling), and records positions[n] = row of pair n
// and src[row] = its token. Phase 2 copies those token rows of x into xs, so that every
// expert then multiplies one contiguous block.

struct Params {
    pairs: u32,
    top_k: u32,
    cols: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;         // [T, C] (row-major)
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;       // [T, K] expert of each pair
@group(0) @binding(2) var<storage, read_write> xs: array<f32>;        // [N, C] out, rows grouped by expert
@group(0) @binding(3) var<storage, read_write> offsets: array<i32>;   // [E + 1] out
@group(0) @binding(4) var<storage, read_write> positions: array<i32>; // [T, K] out, row of each pair in xs
@group(0) @binding(5) var<storage, read_write> src: array<i32>;       // [N] token of each row of xs
@group(0) @binding(6) var<uniform> p: Params;

const E: u32 = {{ experts }}u;
const WG: u32 = {{ workgroup }}u;
const PHASE: u32 = {{ phase }}u;

var<workgroup> counts: array<u32, E>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    if PHASE == 1u {
        for (var e = lid; e < E; e += WG) {
            var c = 0u;
            for (var n = 0u; n < p.pairs; n++) {
                c += u32(ids[n] == i32(e));
            }
            counts[e] = c;
        }
        workgroupBarrier();
        for (var e = lid; e < E; e += WG) {
            var row = 0u;
            for (var f = 0u; f < e; f++) {
                row += counts[f];
            }
            offsets[e] = i32(row);
            for (var n = 0u; n < p.pairs; n++) {
                if ids[n] == i32(e) {
                    positions[n] = i32(row);
                    src[row] = i32(n / p.top_k);
                    row += 1u;
                }
            }
        }
        if lid == 0u {
            offsets[E] = i32(p.pairs);
        }
    } else {
        let row = linear_workgroup(wid, nwg);
        if row < p.pairs {
            let source = u32(src[row]) * p.cols;
            for (var c = lid; c < p.cols; c += WG) {
                xs[row * p.cols + c] = x[source + c];
            }
        }
    }
}
