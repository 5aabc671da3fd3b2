// rms_norm: y = weight * h / sqrt(mean(h^2) + eps), one workgroup per row.
// Fused with the residual combine of the layer before it: h = alpha * x + beta * branch
// (has_branch = 1), or h = x (has_branch = 0). Both h and y are written, since a pre-norm
// model keeps h as its residual stream while a post-norm model keeps y.
//
// With ROUTE, the MoE router follows in the same workgroup (decode: a handful of rows):
// logits_e = y · router[e] for every expert e, then the routing of topk.wgsl, as moe_route
// routes logits computed apart. Each was a launch of its own, and the router's matmul, a few
// rows of weights, ran on a few workgroups anyway.

struct Params {
    rows: u32,
    cols: u32,
    has_branch: u32,
    experts: u32,
    alpha: f32,
    beta: f32,
    eps: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;      // [rows, cols] (row-major)
@group(0) @binding(1) var<storage, read_write> branch: array<f32>; // [rows, cols] (ignored if has_branch = 0)
@group(0) @binding(2) var<storage, read_write> weight: array<f32>; // [cols]
@group(0) @binding(3) var<storage, read_write> h: array<f32>;      // [rows, cols] out
@group(0) @binding(4) var<storage, read_write> y: array<f32>;      // [rows, cols] out
@group(0) @binding(5) var<storage, read_write> router: array<f32>;  // [experts, cols] (ROUTE; else unread)
@group(0) @binding(6) var<storage, read_write> ids: array<i32>;     // [rows, K] out (ROUTE)
@group(0) @binding(7) var<storage, read_write> route_w: array<f32>; // [rows, K] out (ROUTE)
@group(0) @binding(8) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;
const ROUTE: bool = {{ route }};
var<workgroup> partial: array<f32, WG>;

// A decode-time norm is one row, one workgroup: its time is the latency of the loads each
// thread waits on in turn, not bandwidth (a row of 6144 walked 128 threads wide, one load per
// step, took ~50 µs on an H100). So every thread issues 8 loads of its share of the row
// (stride WG, coalesced across threads) before it uses any, and writes only after all 8
// are read: a store between two loads would keep the compiler from hoisting the second,
// since the bindings may alias as far as it knows.

// h at column c of the row at `base`, or 0 past `cols`.
fn combined(base: u32, c: u32, cols: u32) -> f32 {
    if c >= cols {
        return 0.0;
    }
    var v = x[base + c];
    if p.has_branch != 0u {
        v = p.alpha * v + p.beta * branch[base + c];
    }
    return v;
}

fn h_at(base: u32, c: u32, cols: u32) -> f32 {
    if c >= cols {
        return 0.0;
    }
    return h[base + c];
}

fn weight_at(c: u32, cols: u32) -> f32 {
    if c >= cols {
        return 0.0;
    }
    return weight[c];
}

// Stores v at column c of h (to_h) or y, if c < cols.
fn put(to_h: bool, base: u32, c: u32, cols: u32, v: f32) {
    if c < cols {
        if to_h {
            h[base + c] = v;
        } else {
            y[base + c] = v;
        }
    }
}

// Stores columns c, c + WG, .. c + 7·WG.
fn put8(to_h: bool, base: u32, c: u32, cols: u32, a: vec4<f32>, b: vec4<f32>) {
    put(to_h, base, c, cols, a.x);
    put(to_h, base, c + WG, cols, a.y);
    put(to_h, base, c + 2u * WG, cols, a.z);
    put(to_h, base, c + 3u * WG, cols, a.w);
    put(to_h, base, c + 4u * WG, cols, b.x);
    put(to_h, base, c + 5u * WG, cols, b.y);
    put(to_h, base, c + 6u * WG, cols, b.z);
    put(to_h, base, c + 7u * WG, cols, b.w);
}

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let row = linear_workgroup(wid, nwg);
    // Excess workgroups of the 2-D grid do no work but still reach the barriers.
    let cols = select(0u, p.cols, row < p.rows);
    let base = row * p.cols;

    var ss = 0.0;
    for (var c = lid; c < cols; c += 8u * WG) {
        let a = vec4<f32>(combined(base, c, cols), combined(base, c + WG, cols), combined(base, c + 2u * WG, cols), combined(base, c + 3u * WG, cols));
        let b = vec4<f32>(combined(base, c + 4u * WG, cols), combined(base, c + 5u * WG, cols), combined(base, c + 6u * WG, cols), combined(base, c + 7u * WG, cols));
        put8(true, base, c, cols, a, b);
        ss += dot(a, a) + dot(b, b);
    }
    partial[lid] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(max(cols, 1u)) + p.eps);
    // Each thread re-reads only the h values it wrote itself: no barrier needed.
    for (var c = lid; c < cols; c += 8u * WG) {
        let ha = vec4<f32>(h_at(base, c, cols), h_at(base, c + WG, cols), h_at(base, c + 2u * WG, cols), h_at(base, c + 3u * WG, cols));
        let hb = vec4<f32>(h_at(base, c + 4u * WG, cols), h_at(base, c + 5u * WG, cols), h_at(base, c + 6u * WG, cols), h_at(base, c + 7u * WG, cols));
        let wa = vec4<f32>(weight_at(c, cols), weight_at(c + WG, cols), weight_at(c + 2u * WG, cols), weight_at(c + 3u * WG, cols));
        let wb = vec4<f32>(weight_at(c + 4u * WG, cols), weight_at(c + 5u * WG, cols), weight_at(c + 6u * WG, cols), weight_at(c + 7u * WG, cols));
        put8(false, base, c, cols, wa * (ha * inv), wb * (hb * inv));
    }
    if ROUTE {
        route(row, cols, lid);
    }
}

// The router (ROUTE): see the header.
const K: u32 = {{ top_k }}u;
// Threads per expert (a power of two dividing WG): WG / TPE experts' dot products at once.
const TPE: u32 = {{ threads_per_expert }}u;
const E_MAX: u32 = {{ experts }}u;
var<workgroup> logits: array<f32, E_MAX>;

fn route(row: u32, cols: u32, lid: u32) {
    // y of this row was written by every thread above.
    storageBarrier();
    let base = row * p.cols;
    let j = lid % TPE;
    let per_round = WG / TPE;
    for (var r = 0u; r * per_round < p.experts; r++) {
        let e = r * per_round + lid / TPE;
        var acc = vec4<f32>(0.0);
        var acc2 = vec4<f32>(0.0);
        if e < p.experts {
            let w = e * p.cols;
            // Eight loads in flight per thread: one workgroup reads the whole router, so its
            // time is load latency unless many are outstanding.
            var c = j;
            for (; c + 7u * TPE < cols; c += 8u * TPE) {
                let wa = vec4<f32>(router[w + c], router[w + c + TPE], router[w + c + 2u * TPE], router[w + c + 3u * TPE]);
                let wb = vec4<f32>(router[w + c + 4u * TPE], router[w + c + 5u * TPE], router[w + c + 6u * TPE], router[w + c + 7u * TPE]);
                let ya = vec4<f32>(y[base + c], y[base + c + TPE], y[base + c + 2u * TPE], y[base + c + 3u * TPE]);
                let yb = vec4<f32>(y[base + c + 4u * TPE], y[base + c + 5u * TPE], y[base + c + 6u * TPE], y[base + c + 7u * TPE]);
                acc += wa * ya;
                acc2 += wb * yb;
            }
            for (; c < cols; c += TPE) {
                acc.x += router[w + c] * y[base + c];
            }
        }
        partial[lid] = dot(acc + acc2, vec4<f32>(1.0));
        workgroupBarrier();
        for (var s = TPE / 2u; s > 0u; s >>= 1u) {
            if j < s {
                partial[lid] += partial[lid + s];
            }
            workgroupBarrier();
        }
        if j == 0u && e < p.experts {
            logits[e] = partial[lid];
        }
        workgroupBarrier();
    }
    if lid == 0u && row < p.rows {
        route_row(row, p.experts);
    }
}

fn route_logit(row: u32, e: u32) -> f32 {
    return logits[e];
}

fn route_put(row: u32, j: u32, id: u32, w: f32) {
    ids[row * K + j] = i32(id);
    route_w[row * K + j] = w;
}
