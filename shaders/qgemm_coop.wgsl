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
// Y's rows are padded to a multiple of TM by the launcher, so whole 16×16 tiles are stored
// without a bound check; N is a multiple of 16 and tiles past it are skipped.
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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<{{ x_elem }}>;    // [M / per, K] or [M, 2K] (SWIGLU)
@group(0) @binding(1) var<storage, read_write> pool: array<{{ pool_elem }}>; // [words] matrix words (little-endian)
@group(0) @binding(2) var<storage, read_write> y: array<f32>;    // [⌈M / TM⌉ · TM, N] out (row-major)
@group(0) @binding(3) var<uniform> p: Params;

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
    let m0 = (l / p.tiles_n) * TM;
    let n0 = (l % p.tiles_n) * TN;
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
    var xv0 = load_x(m0 + lr, sub * 8u);
    var xv1 = load_x(m0 + lr + 64u, sub * 8u);
    var wv0 = load_w(n0 + lr, sub * 8u);
    var wv1 = load_w(n0 + lr + 64u, sub * 8u);
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
            xv0 = load_x(m0 + lr, e0);
            if TM > 64u {
                xv1 = load_x(m0 + lr + 64u, e0);
            }
            wv0 = load_w(n0 + lr, e0);
            wv1 = load_w(n0 + lr + 64u, e0);
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

    // naga's SPIR-V writer needs every operand of a store, its index included, bound to a
    // name first (an expression written inside the store call is never emitted).
    let stride = p.rows;
    let n = n0 + sn;
    let i0 = (m0 + sm) * stride + n;
    let tile = 16u * stride;
    let r00 = c00;
    let r01 = c01;
    let r10 = c10;
    let r11 = c11;
    let r20 = c20;
    let r21 = c21;
    let r30 = c30;
    let r31 = c31;
    let i1 = i0 + tile;
    let i2 = i1 + tile;
    let i3 = i2 + tile;
    if n < stride {
        coopStoreT(r00, &y[i0], stride);
        coopStoreT(r10, &y[i1], stride);
        if SUB_M == 4u {
            coopStoreT(r20, &y[i2], stride);
            coopStoreT(r30, &y[i3], stride);
        }
    }
    if n + 16u < stride {
        let j0 = i0 + 16u;
        let j1 = i1 + 16u;
        let j2 = i2 + 16u;
        let j3 = i3 + 16u;
        coopStoreT(r01, &y[j0], stride);
        coopStoreT(r11, &y[j1], stride);
        if SUB_M == 4u {
            coopStoreT(r21, &y[j2], stride);
            coopStoreT(r31, &y[j3], stride);
        }
    }
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

// Unit e0 of input row m (zeros past the last row).
fn load_x(m: u32, e0: u32) -> Unit {
    if m < p.m {
        return x_unit((m / p.per) * p.x_stride, e0, p.cols);
    }
    return Unit(vec4<f32>(0.0), vec4<f32>(0.0));
}

// Unit e0 of weight row n (zeros past the last row).
fn load_w(n: u32, e0: u32) -> Unit {
    if n < p.rows {
        return w_unit(p.words, n, e0, p.cols, p.row_bytes);
    }
    return Unit(vec4<f32>(0.0), vec4<f32>(0.0));
}
