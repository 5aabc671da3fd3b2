// qgemv: the decode-time matmul, for expert pairs over a pool of expert records and for the
// linear layers (one "expert" at word 0: the weight itself).
//
// For each pair p (a token and one of its experts) whose expert e = ids[p] has a record in
// this pool (table[e] != 0xFFFFFFFF), the pair's row is r_p[n] = Σ_k W_e[n, k] · xin(p)[k] for
// n < N, where W_e is one matrix of the record (rows of `row_bytes` bytes from word table[e] +
// offset_words) and xin(p) is x row p / per, or silu(gate) · up of x row p (SWIGLU).
// - GROUP = 1: y[p] = r_p. Pairs of experts absent from the pool keep their rows of y, so one
//   y is filled by one dispatch per pool, and y needs no zeroing when every pair's expert is
//   in one of the pools.
// - EPILOGUE:
//   0: y[p] = r_p;
//   1 (combine): y[t] = (accumulate ? y[t] : 0) + Σ_{j < group} aux[t·group + j] · r_{t·group+j},
//      the router-weighted sum of a token's experts fused into the down projection (no [P, N]
//      intermediate, no separate multiply and sum);
//   2 (silu): y[p] = silu(r_p), the activation of lightning attention's qkv projection;
//   3 (gate): y[p] = sigmoid(r_p) ⊙ aux[p], lightning attention's output gate;
//   4 (normed gate): y[p] = sigmoid(r_p) ⊙ v_p / sqrt(Σ s_p / N + eps) where aux row p is
//      [v_p | s_p] (N values, then norm_parts partial sums of squares): the gate over the
//      RMSNorm of all heads, whose sums lightning_decode leaves in its output. The workgroup
//      sums row p's partials together before its main loop;
//   5 (silu | sigmoid): y[p][n] = silu(r_p[n]) for n < split, sigmoid(r_p[n]) from there:
//      lightning attention's qkv and output gate as one projection.
// - GATED_INPUT: x row p is [v_p | s_p] (K values, then norm_parts partial sums of squares)
//   and xin(p) = v_p ⊙ aux[p][gate_offset ..] / sqrt(Σ s_p / K + eps): the head norm and the
//   output gate read into out_proj's input, so that neither needs a launch of its own.
//
// Bandwidth bound: N·K weights are read once per pair. A workgroup owns ROWS = 8 rows of one
// output row of y; each thread walks units of 8 columns with stride WG, reads the input unit
// once and dots it with the 8 weight units (consecutive threads read consecutive 16- or 32-byte
// pieces of a row: coalesced, and one 16-byte load per unit where rows are 16-byte aligned).
// The per-thread sums are reduced with subgroupAdd and one barrier where the adapter has
// subgroups (WebGPU: `enable subgroups;` heads the module then), else by a tree in workgroup
// memory.

struct Params {
    pairs: u32,
    rows: u32,
    cols: u32,
    per: u32,
    x_stride: u32,
    row_bytes: u32,
    offset_words: u32,
    experts: u32,
    group: u32,
    accumulate: u32,
    norm_parts: u32,
    norm_eps: f32,
    split: u32,
    gate_offset: u32,
    gate_stride: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<{{ x_elem }}>;       // [P / per, K] or [P, 2K] (SWIGLU) (row-major)
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;            // [P] expert of each pair
@group(0) @binding(2) var<storage, read_write> table: array<i32>;          // [E] record word offset in pool, or -1
@group(0) @binding(3) var<storage, read_write> pool: array<{{ pool_elem }}>; // [words] expert records (little-endian)
@group(0) @binding(4) var<storage, read_write> y: array<f32>;              // [P / group, N] (row-major)
@group(0) @binding(5) var<storage, read_write> aux: array<f32>;            // [P] router weights (1), [P, N] gated values (3), [P, N + norm_parts] (4), else unused
@group(0) @binding(6) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;
const EPILOGUE: u32 = {{ epilogue }}u;
const COMBINE: bool = EPILOGUE == 1u;
const UNROLL: u32 = {{ unroll }}u;
const GATED_INPUT: bool = {{ gated_input }};
const QUANTIZED: bool = FORMAT == FMT_Q8_0 || FORMAT == FMT_Q4_1;
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
    {{ subgroup_builtins }}
) {
    let tiles = (p.rows + ROWS - 1u) / ROWS;
    let l = linear_workgroup(wid, nwg);
    let out = l / tiles;
    let n0 = (l % tiles) * ROWS;
    let outs = p.pairs / p.group;
    // Rows past the end re-read the last row (no branch in the loop); their sums are dropped.
    let last = max(p.rows, 1u) - 1u;
    // Quantized rows are whole blocks of 32 and go by halves; float rows by units of 8.
    let steps = select((p.cols + 7u) / 8u, p.cols / 16u, QUANTIZED);

    // Normed gate or gated input: 1 / rms of this output row's values (of its input row) from
    // their partial sums (all threads).
    var inv_rms = 1.0;
    let row = min(out, max(outs, 1u) - 1u);
    if EPILOGUE == 4u || GATED_INPUT {
        var s = 0.0;
        for (var j = lid; j < p.norm_parts; j += WG) {
            if GATED_INPUT {
                s += x_one(row * p.x_stride + p.cols + j);
            } else {
                s += aux[row * (p.rows + p.norm_parts) + p.rows + j];
            }
        }
        partial[lid] = vec4<f32>(s, 0.0, 0.0, 0.0);
        workgroupBarrier();
        for (var h = WG / 2u; h > 0u; h >>= 1u) {
            if lid < h {
                partial[lid].x += partial[lid + h].x;
            }
            workgroupBarrier();
        }
        inv_rms = inverseSqrt(partial[0].x / f32(select(p.rows, p.cols, GATED_INPUT)) + p.norm_eps);
        // Every thread has read partial[0] before the reduction below reuses it.
        workgroupBarrier();
    }

    // Excess workgroups of the 2-D grid and pairs of absent experts read nothing, but still
    // reach the barriers below.
    var acc_a = vec4<f32>(0.0);
    var acc_b = vec4<f32>(0.0);
    var touched = false;
    for (var j = 0u; j < p.group; j++) {
        let pair = out * p.group + j;
        var record = NONE;
        if out < outs {
            let e = ids[pair];
            if e >= 0 && u32(e) < p.experts {
                record = bitcast<u32>(table[e]);
            }
        }
        if record == NONE {
            continue;
        }
        touched = true;
        let mw = record + p.offset_words;
        let xbase = (pair / p.per) * p.x_stride;
        // The gate's row (GATED_INPUT: linear layers, one pair per row).
        let g = Gate(pair * p.gate_stride + p.gate_offset, inv_rms);
        var acc = Acc8(vec4<f32>(0.0), vec4<f32>(0.0));
        // With UNROLL = 2 a thread takes two steps at once, so that the loads of both are in
        // flight together: a decode matmul's time is its loads' latency more than their bytes.
        var i = lid;
        if UNROLL == 2u {
            for (; i + WG < steps; i += 2u * WG) {
                let r0 = dot_step(mw, n0, last, xbase, g, i);
                let r1 = dot_step(mw, n0, last, xbase, g, i + WG);
                acc.a += r0.a + r1.a;
                acc.b += r0.b + r1.b;
            }
        }
        for (; i < steps; i += WG) {
            let r = dot_step(mw, n0, last, xbase, g, i);
            acc.a += r.a;
            acc.b += r.b;
        }
        let a = acc.a;
        let b = acc.b;
        var s = 1.0;
        if COMBINE {
            s = aux[pair];
        }
        acc_a += s * a;
        acc_b += s * b;
    }

    {{ reduce }}

    if lid < ROWS && out < outs && n0 + lid < p.rows && (COMBINE || touched) {
        let i = out * p.rows + n0 + lid;
        var v = partial[(lid / 4u) * WG][lid % 4u];
        if COMBINE && p.accumulate != 0u {
            v += y[i];
        }
        if EPILOGUE == 2u {
            v = v / (1.0 + exp(-v));
        }
        if EPILOGUE == 3u {
            v = aux[i] / (1.0 + exp(-v));
        }
        if EPILOGUE == 4u {
            v = aux[out * (p.rows + p.norm_parts) + n0 + lid] * inv_rms / (1.0 + exp(-v));
        }
        if EPILOGUE == 5u {
            v = select(1.0, v, n0 + lid < p.split) / (1.0 + exp(-v));
        }
        y[i] = v;
    }
}

// Where a gated input's gate row starts in aux, and the input's 1 / rms.
struct Gate {
    base: u32,
    inv_rms: f32,
}

// Input unit at column e0: x's, or under GATED_INPUT its values ⊙ the gate / rms.
fn input_unit(xbase: u32, g: Gate, e0: u32) -> Unit {
    let v = x_unit(xbase, e0, p.cols);
    if !GATED_INPUT {
        return v;
    }
    let i = g.base + e0;
    var lo = vec4<f32>(aux[i], aux[i + 1u], aux[i + 2u], aux[i + 3u]);
    var hi = vec4<f32>(aux[i + 4u], aux[i + 5u], aux[i + 6u], aux[i + 7u]);
    if e0 + 8u > p.cols {
        // A ragged last unit: x_unit gave zeros past the row, whatever the gate reads there.
        lo = select(vec4<f32>(0.0), lo, e0 + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.cols));
        hi = select(vec4<f32>(0.0), hi, e0 + vec4<u32>(4u, 5u, 6u, 7u) < vec4<u32>(p.cols));
    }
    return Unit(v.lo * lo * g.inv_rms, v.hi * hi * g.inv_rms);
}

// The dot products of rows n0 .. n0 + 8 (rows past `last` re-read it) with 8 inputs.
struct Acc8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

// Step s of rows n0 .. n0 + 8: half block s of block formats (see `half_dot`), unit s of
// float formats.
fn dot_step(mw: u32, n0: u32, last: u32, xbase: u32, g: Gate, s: u32) -> Acc8 {
    if QUANTIZED {
        return half_step(mw, n0, last, xbase, g, s);
    }
    return unit_step(mw, n0, last, xbase, g, s);
}

// Half block h of rows n0 .. n0 + 8 against its inputs (block formats).
fn half_step(mw: u32, n0: u32, last: u32, xbase: u32, g: Gate, h: u32) -> Acc8 {
    let e0 = (h >> 1u) * 32u + (h & 1u) * HALF_STEP;
    let xl = input_unit(xbase, g, e0);
    let xh = input_unit(xbase, g, e0 + HALF_GAP);
    let xs = dot(xl.lo + xl.hi + xh.lo + xh.hi, vec4<f32>(1.0));
    return Acc8(
        vec4<f32>(
            half_dot(mw, n0, h, xl, xh, xs),
            half_dot(mw, min(n0 + 1u, last), h, xl, xh, xs),
            half_dot(mw, min(n0 + 2u, last), h, xl, xh, xs),
            half_dot(mw, min(n0 + 3u, last), h, xl, xh, xs),
        ),
        vec4<f32>(
            half_dot(mw, min(n0 + 4u, last), h, xl, xh, xs),
            half_dot(mw, min(n0 + 5u, last), h, xl, xh, xs),
            half_dot(mw, min(n0 + 6u, last), h, xl, xh, xs),
            half_dot(mw, min(n0 + 7u, last), h, xl, xh, xs),
        ),
    );
}

// Unit u (8 columns) of rows n0 .. n0 + 8 against its inputs (float formats).
fn unit_step(mw: u32, n0: u32, last: u32, xbase: u32, g: Gate, u: u32) -> Acc8 {
    let e0 = u * 8u;
    let xv = input_unit(xbase, g, e0);
    return Acc8(
        vec4<f32>(
            dot8(w_unit(mw, n0, e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 1u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 2u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 3u, last), e0, p.cols, p.row_bytes), xv),
        ),
        vec4<f32>(
            dot8(w_unit(mw, min(n0 + 4u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 5u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 6u, last), e0, p.cols, p.row_bytes), xv),
            dot8(w_unit(mw, min(n0 + 7u, last), e0, p.cols, p.row_bytes), xv),
        ),
    );
}

fn dot8(w: Unit, x: Unit) -> f32 {
    return dot(w.lo, x.lo) + dot(w.hi, x.hi);
}

// Half block h of a quantized row: 16 weights that one thread reads with 3 (Q4_1) or 5-6
// (Q8_0) word loads, against 6 and 6-10 as two units of 8. At one token a decode matmul's
// time is its loads in flight, so fewer, fuller loads per weight byte is the lever.
// - Q4_1: bytes 8s .. 8s + 8 of the block's quants hold elements 8s .. 8s + 8 (low nibbles)
//   and 16 + 8s .. 24 + 8s (high nibbles): the input units at e0 and e0 + 16.
// - Q8_0: quants 16s .. 16s + 16, elements 16s .. 16s + 16: the units at e0 and e0 + 8.
const HALF_STEP: u32 = {{ half_step }}u;
const HALF_GAP: u32 = {{ half_gap }}u;

// Σ_j w[n, j] x[j] over half h of row n, given its input units xl, xh and their sum xs.
// The scale factors out of the sum (Q4_1: Σ (d q + m) x = d Σ q x + m Σ x).
fn half_dot(mw: u32, n: u32, h: u32, xl: Unit, xh: Unit, xs: f32) -> f32 {
    let rb = n * p.row_bytes;
    if FORMAT == FMT_Q4_1 {
        let i = mw + ((rb + (h >> 1u) * 20u) >> 2u);
        let dm = unpack2x16float(pool_word(i));
        let j = i + 1u + (h & 1u) * 2u;
        let w0 = pool_word(j);
        let w1 = pool_word(j + 1u);
        let q = dot(nib4(w0, 0u), xl.lo) + dot(nib4(w1, 0u), xl.hi) + dot(nib4(w0, 4u), xh.lo) + dot(nib4(w1, 4u), xh.hi);
        return dm.x * q + dm.y * xs;
    }
    // Q8_0: the 16 quants start 2 bytes into the block and 16 bytes further for h odd.
    let blk = rb + (h >> 1u) * 34u;
    let w = words4_at(mw, blk + 2u + (h & 1u) * 16u);
    let q = dot(i8x4(w.x), xl.lo) + dot(i8x4(w.y), xl.hi) + dot(i8x4(w.z), xh.lo) + dot(i8x4(w.w), xh.hi);
    return half_at(mw, blk) * q;
}

// The 16 bytes at the 2-aligned byte `b`: four words, or the halves of five neighbours.
fn words4_at(mw: u32, b: u32) -> vec4<u32> {
    let i = mw + (b >> 2u);
    let w = vec4<u32>(pool_word(i), pool_word(i + 1u), pool_word(i + 2u), pool_word(i + 3u));
    if (b & 2u) == 0u {
        return w;
    }
    let next = vec4<u32>(w.yzw, pool_word(i + 4u));
    return (w >> vec4<u32>(16u)) | (next << vec4<u32>(16u));
}
