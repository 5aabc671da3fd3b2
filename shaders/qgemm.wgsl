// qgemm: the prefill expert matmul, Y[M, N] = xin · Wᵀ for the rows of one expert.
//
// W [N, K] is one matrix of an expert record at word `words` of the pool (tokens were grouped
// by expert beforehand, so the M input rows are contiguous). xin(m) is x row m / per, or
// silu(gate) · up of x row m (SWIGLU).
//
// Grouped (p.grouped = 1): several experts in one launch, so that a prefill's MoE fills the
// GPU with one launch per matrix instead of one per expert (64 tokens of an expert are one
// row of tiles, 128 workgroups for a whole GPU). Row tile t then takes its first row, its end
// (the expert's last row + 1) and its matrix word from groups[t]; rows of y outside every
// group are not written.
//
// Tiled: a workgroup owns a 64×64 tile of Y and steps over K one block (32 columns) at a time.
// Each step loads the 64×32 input tile and the 64×32 weight tile, dequantised in registers by
// the same unit reads as qgemv, into workgroup memory k-major (so the inner loop reads one
// vec4 of 4 rows and one vec4 of 4 columns per k), then each of the 256 threads accumulates a
// 4×4 block of outputs: 16 FMAs per 2 vec4 loads. The two tiles are 8 KiB each, which is all
// of WebGPU's default 16 KiB of workgroup memory.

struct Params {
    m: u32,
    rows: u32,
    cols: u32,
    per: u32,
    x_stride: u32,
    row_bytes: u32,
    words: u32,
    tiles_n: u32,
    tiles: u32,
    grouped: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [M / per, K] or [M, 2K] (SWIGLU) (row-major)
@group(0) @binding(1) var<storage, read_write> pool: array<u32>; // [words] expert records (little-endian)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [M, N] out (row-major)
@group(0) @binding(3) var<storage, read_write> groups: array<u32>; // [tiles / tiles_n, 4]: first row, end row, matrix word, 0
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;
const TILE: u32 = 64u; // output rows and columns of a workgroup
const TK: u32 = 32u;   // K columns per step: one block
const V: u32 = TILE / 4u; // vec4s per k of a tile

var<workgroup> xs: array<vec4<f32>, TK * V>; // [TK, TILE] input tile, k-major
var<workgroup> ws: array<vec4<f32>, TK * V>; // [TK, TILE] weight tile, k-major

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = linear_workgroup(wid, nwg);
    let n0 = (l % p.tiles_n) * TILE;
    let span = row_tile(l / p.tiles_n, l < p.tiles);
    let m0 = span.x;

    // The step count must be uniform for the barriers in the loop, and values read from a
    // read_write buffer are not: pass it through the first tile slot (no room is left in 16 KiB
    // for a variable of its own). Excess workgroups of the 2-D grid take no steps.
    if lid == 0u {
        xs[0].x = select(0.0, f32((p.cols + TK - 1u) / TK), l < p.tiles);
    }
    let steps = u32(workgroupUniformLoad(&xs[0]).x);
    workgroupBarrier(); // every thread has read the slot before the first tile overwrites it

    // Loads: thread lid brings unit `sub` (8 columns) of tile row `lr`, for both tiles.
    let lr = lid / 4u;
    let sub = lid % 4u;
    let xm = m0 + lr;
    let xn = n0 + lr;
    let slot = (sub * 8u) * V + lr / 4u;
    let c = lr % 4u;
    // Outputs: rows m0 + 4ty .. +4, columns n0 + 4tx .. +4, one vec4 accumulator per row
    // (named, not an array: drivers keep a dynamically indexed array in slow local memory).
    let tx = lid % V;
    let ty = lid / V;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    // The units of the next step are fetched into registers before the current tile is
    // multiplied, so that global latency overlaps the arithmetic.
    var xv = load_x(xm, span.y, sub * 8u);
    var wv = load_w(span.z, xn, sub * 8u);
    for (var step = 0u; step < steps; step++) {
        // Column k of a tile is vec4s k * V .. (k + 1) * V; this unit is columns 8 sub .. + 8.
        xs[slot][c] = xv.lo.x;
        xs[slot + V][c] = xv.lo.y;
        xs[slot + 2u * V][c] = xv.lo.z;
        xs[slot + 3u * V][c] = xv.lo.w;
        xs[slot + 4u * V][c] = xv.hi.x;
        xs[slot + 5u * V][c] = xv.hi.y;
        xs[slot + 6u * V][c] = xv.hi.z;
        xs[slot + 7u * V][c] = xv.hi.w;
        ws[slot][c] = wv.lo.x;
        ws[slot + V][c] = wv.lo.y;
        ws[slot + 2u * V][c] = wv.lo.z;
        ws[slot + 3u * V][c] = wv.lo.w;
        ws[slot + 4u * V][c] = wv.hi.x;
        ws[slot + 5u * V][c] = wv.hi.y;
        ws[slot + 6u * V][c] = wv.hi.z;
        ws[slot + 7u * V][c] = wv.hi.w;
        workgroupBarrier();
        if step + 1u < steps {
            let e0 = (step + 1u) * TK + sub * 8u;
            xv = load_x(xm, span.y, e0);
            wv = load_w(span.z, xn, e0);
        }
        for (var k = 0u; k < TK; k++) {
            let a = xs[k * V + ty];
            let b = ws[k * V + tx];
            acc0 += a.x * b;
            acc1 += a.y * b;
            acc2 += a.z * b;
            acc3 += a.w * b;
        }
        workgroupBarrier();
    }

    if l < p.tiles {
        let m = m0 + ty * 4u;
        let n = n0 + tx * 4u;
        store(m, span.y, n, acc0);
        store(m + 1u, span.y, n, acc1);
        store(m + 2u, span.y, n, acc2);
        store(m + 3u, span.y, n, acc3);
    }
}

// Row tile t's first row, end row and matrix word: from the group table when grouped, else
// the t-th TILE rows of all M with the one matrix (`valid`: t is a tile of this launch).
fn row_tile(t: u32, valid: bool) -> vec3<u32> {
    if p.grouped != 0u {
        if valid {
            return vec3<u32>(groups[4u * t], groups[4u * t + 1u], groups[4u * t + 2u]);
        }
        return vec3<u32>(0u);
    }
    return vec3<u32>(t * TILE, p.m, p.words);
}

// Y[m, n .. n + 4], clipped to the matrix and to rows before `end`.
fn store(m: u32, end: u32, n: u32, v: vec4<f32>) {
    if m >= end {
        return;
    }
    let i = m * p.rows + n;
    if n < p.rows {
        y[i] = v.x;
    }
    if n + 1u < p.rows {
        y[i + 1u] = v.y;
    }
    if n + 2u < p.rows {
        y[i + 2u] = v.z;
    }
    if n + 3u < p.rows {
        y[i + 3u] = v.w;
    }
}
