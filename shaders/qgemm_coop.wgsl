// qgemm_coop: qgemm (shaders/qgemm.wgsl) on cooperative matrices (tensor cores), for adapters
// that offer 16×16×16 products of f16 A, B into f32 C and run subgroups of 32 invocations.
//
// Y[M, N] = xin · Wᵀ with the same operands, params and unit reads as qgemm: W [N, K] is one
// matrix at word `words` of the pool in any block format, xin(m) is x row m / per or the SwiGLU
// of a gate_up row. Products take f16 operands and accumulate in f32, as llama.cpp's coopmat
// path does: xin and the dequantised weights are rounded to f16 (relative error 2⁻¹¹ each)
// when they are staged.
//
// Tiling: a workgroup owns a TM×128 tile of Y (TM = 64 or 128 input rows, 128 weight rows) and
// steps over K one block (32 columns) at a time. Each step dequantises the TM×32 input tile and
// the 128×32 weight tile (units of 8, one or two per thread each) into workgroup memory as
// f16, row-major with a padded stride; then each of the 8 subgroups multiplies its
// (TM / 2)×32 part of Y as SUB_M×2 tiles of 16×16, two 16-deep products per step. A is read
// row-major (coopLoadT), B = Wᵀ column-major straight from the row-major weight tile
// (coopLoad): element (k, n) of B is ws[n·S + k]. Taller tiles (TM = 128, for M ≥ 128) load
// each B tile for four products instead of two.
//
// Grouped (p.grouped = 1): row tile t takes its first row, end row and matrix word from
// groups[t], as in qgemm. Cooperative stores have no bounds, so each 16×16 result goes through
// workgroup memory and is written element by element, clipped to the tile's rows and to N.
//
// Cooperative operations must run in subgroup-uniform control flow. Every branch around them
// here is uniform across a subgroup (it depends on the subgroup's index and the params only),
// but WGSL's uniformity analysis tracks workgroup uniformity, so the module turns that
// diagnostic off (`diagnostic(off, derivative_uniformity)`, see qgemm_coop.rs).

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

@group(0) @binding(0) var<storage, read_write> x: array<{{ x_elem }}>;    // [M / per, K] or [M, 2K] (SWIGLU)
@group(0) @binding(1) var<storage, read_write> pool: array<{{ pool_elem }}>; // [words] matrix words (little-endian)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [M, N] out (row-major)
@group(0) @binding(3) var<storage, read_write> groups: array<u32>; // [tiles / tiles_n, 4]: first row, end row, matrix word, 0
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;
const SUB_M: u32 = {{ sub_m }}u; // 16-row tiles of a subgroup's part: 2 or 4
const TM: u32 = 32u * SUB_M;    // input rows (tokens) of a workgroup's tile
const TN: u32 = 128u;           // weight rows (outputs) of a workgroup's tile
const TK: u32 = 32u;            // K columns per step: one block
// Row stride of the staged tiles in f16: 80 bytes, a multiple of 16 as cooperative loads
// want, and not a multiple of 128, so that the 16 rows of one load fall in different banks.
const S: u32 = 40u;

var<workgroup> xs: array<f16, TM * S>; // [TM, TK] input tile (row-major, stride S)
var<workgroup> ws: array<f16, TN * S>; // [TN, TK] weight tile (row-major, stride S)
var<workgroup> zeros: array<f32, 256>; // a 16×16 zero tile to start the accumulators from
var<workgroup> out: array<f32, 2048>;  // one 16×16 result per subgroup, on its way to y

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let l = linear_workgroup(wid, nwg);
    if l >= p.tiles {
        return; // excess workgroups of the 2-D grid (uniform: depends on the workgroup only)
    }
    let n0 = (l % p.tiles_n) * TN;
    let t = l / p.tiles_n;
    var m0 = t * TM;
    var m_end = p.m;
    var mw = p.words;
    if p.grouped != 0u {
        m0 = groups[4u * t];
        m_end = groups[4u * t + 1u];
        mw = groups[4u * t + 2u];
    }
    let steps = (p.cols + TK - 1u) / TK;

    // Loads: thread lid brings unit `sub` (8 columns) of tile rows lr and lr + 64 (input rows
    // past TM are not loaded).
    let lr = lid / 4u;
    let sub = lid % 4u;
    // Subgroup g (of 8, 32 invocations each) computes rows (TM / 2)·(g / 4) .. + TM / 2 and
    // columns 32·(g % 4) .. + 32 of the tile.
    let g = lid / 32u;
    let sm = (g / 4u) * (TM / 2u);
    let sn = (g % 4u) * 32u;

    // A zero-constructed cooperative matrix trips naga's SPIR-V writer; load zeros instead.
    zeros[lid] = 0.0;
    workgroupBarrier();
    var c00 = coopLoad<coop_mat16x16<f32, C>>(&zeros[0], 16u);
    var c01 = c00;
    var c10 = c00;
    var c11 = c00;
    var c20 = c00;
    var c21 = c00;
    var c30 = c00;
    var c31 = c00;

    // The units of the next step are fetched into registers before the current tile is
    // multiplied, so that global latency overlaps the products.
    var xv0 = load_x(m0 + lr, m_end, sub * 8u);
    var xv1 = load_x(m0 + lr + 64u, m_end, sub * 8u);
    var wv0 = load_w(mw, n0 + lr, sub * 8u);
    var wv1 = load_w(mw, n0 + lr + 64u, sub * 8u);
    for (var step = 0u; step < steps; step++) {
        stage_x(lr * S + sub * 8u, xv0);
        if TM > 64u {
            stage_x((lr + 64u) * S + sub * 8u, xv1);
        }
        stage_w(lr * S + sub * 8u, wv0);
        stage_w((lr + 64u) * S + sub * 8u, wv1);
        workgroupBarrier();
        if step + 1u < steps {
            let e0 = (step + 1u) * TK + sub * 8u;
            xv0 = load_x(m0 + lr, m_end, e0);
            if TM > 64u {
                xv1 = load_x(m0 + lr + 64u, m_end, e0);
            }
            wv0 = load_w(mw, n0 + lr, e0);
            wv1 = load_w(mw, n0 + lr + 64u, e0);
        }
        for (var kk = 0u; kk < TK; kk += 16u) {
            let b0 = coopLoad<coop_mat16x16<f16, B>>(&ws[sn * S + kk], S);
            let b1 = coopLoad<coop_mat16x16<f16, B>>(&ws[(sn + 16u) * S + kk], S);
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&xs[sm * S + kk], S);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(sm + 16u) * S + kk], S);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            if SUB_M == 4u {
                let a2 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(sm + 32u) * S + kk], S);
                c20 = coopMultiplyAdd(a2, b0, c20);
                c21 = coopMultiplyAdd(a2, b1, c21);
                let a3 = coopLoadT<coop_mat16x16<f16, A>>(&xs[(sm + 48u) * S + kk], S);
                c30 = coopMultiplyAdd(a3, b0, c30);
                c31 = coopMultiplyAdd(a3, b1, c31);
            }
        }
        workgroupBarrier();
    }

    // Every 16×16 result, through this subgroup's slice of `out`, into y. (naga's SPIR-V
    // writer needs a cooperative store's operands bound to names: see put_tile.)
    let m = m0 + sm;
    let n = n0 + sn;
    let lane = lid % 32u;
    put_tile(c00, g, lane, m, n, m_end);
    put_tile(c01, g, lane, m, n + 16u, m_end);
    put_tile(c10, g, lane, m + 16u, n, m_end);
    put_tile(c11, g, lane, m + 16u, n + 16u, m_end);
    if SUB_M == 4u {
        put_tile(c20, g, lane, m + 32u, n, m_end);
        put_tile(c21, g, lane, m + 32u, n + 16u, m_end);
        put_tile(c30, g, lane, m + 48u, n, m_end);
        put_tile(c31, g, lane, m + 48u, n + 16u, m_end);
    }
}

// Writes the 16×16 result `c` of subgroup g (its element (i, j) is Y[m + i, n + j]) to y,
// rows before `end` and columns before N only. Called by every invocation of the workgroup
// (the barriers), each subgroup with its own tile: lane l copies elements l, l + 32, ...
fn put_tile(c: coop_mat16x16<f32, C>, g: u32, lane: u32, m: u32, n: u32, end: u32) {
    let base = g * 256u;
    coopStoreT(c, &out[base], 16u);
    workgroupBarrier();
    for (var e = lane; e < 256u; e += 32u) {
        let row = m + e / 16u;
        let col = n + e % 16u;
        if row < end && col < p.rows {
            y[row * p.rows + col] = out[base + e];
        }
    }
    workgroupBarrier();
}

// The 8 values of an input unit into the staged tile at element i, rounded to f16. Values
// past f16's range (an activation outlier) saturate at ±65504 rather than become infinite.
fn stage_x(i: u32, u: Unit) {
    let lo = clamp(u.lo, vec4<f32>(-65504.0), vec4<f32>(65504.0));
    let hi = clamp(u.hi, vec4<f32>(-65504.0), vec4<f32>(65504.0));
    xs[i] = f16(lo.x);
    xs[i + 1u] = f16(lo.y);
    xs[i + 2u] = f16(lo.z);
    xs[i + 3u] = f16(lo.w);
    xs[i + 4u] = f16(hi.x);
    xs[i + 5u] = f16(hi.y);
    xs[i + 6u] = f16(hi.z);
    xs[i + 7u] = f16(hi.w);
}

// The same for a weight unit (dequantised weights are within f16's range).

fn stage_w(i: u32, v: Unit) {
    ws[i] = f16(v.lo.x);
    ws[i + 1u] = f16(v.lo.y);
    ws[i + 2u] = f16(v.lo.z);
    ws[i + 3u] = f16(v.lo.w);
    ws[i + 4u] = f16(v.hi.x);
    ws[i + 5u] = f16(v.hi.y);
    ws[i + 6u] = f16(v.hi.z);
    ws[i + 7u] = f16(v.hi.w);
}

