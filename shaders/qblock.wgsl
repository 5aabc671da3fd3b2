// qblock: the reads shared by the quantized matmuls (qgemv, qgemm), included once by both.
//
// A matmul reads its operands in "units" of 8 consecutive elements of one row: a unit of the
// weight matrix W [N, K] is decoded in registers from the u32 words of an expert record (see
// runtime/src/experts/layout.rs), a unit of the input row xin is read from x with the SwiGLU
// activation optionally fused in. 8 elements are a quarter of a ggml block, so every thread
// of a workgroup gets work even for short rows, and a unit never straddles a block.
//
// Block formats (ggml's, runtime/src/weights/quant.rs), by FORMAT:
// - 0 F32: 4 bytes per element;
// - 1 F16: 2 bytes per element (rows are an even number of elements, so units are 4-aligned);
// - 2 Q8_0: 34-byte blocks {f16 d, 32 × i8 q}, w = d * q. Blocks are only 2-byte aligned: an
//   odd block (rows of an odd number of blocks shift every other row too) has its scale in the
//   high half of a word and its quants straddling words, which `word_at` reassembles;
// - 3 Q4_1: 20-byte blocks {f16 d, f16 m, 16 bytes q}, w = d * nib + m, where element j < 16
//   is the low nibble of byte j and element j + 16 its high nibble. A row is 20·K/32 bytes and
//   a matrix starts 16-byte aligned, so every Q4_1 block starts on a word.
//
// The including kernel declares the bindings `pool` (the records) and `x` (inputs) and reaches
// them only through four accessors, so that either may be bound as 16-byte vectors where the
// launcher knows rows are 16-byte aligned (qgemv.rs, `Variant`):
//   pool_word(i): pool word i;  pool_quad(i): pool words i .. i + 4 (i a multiple of 4);
//   x_one(i): x element i;    x_four(i): x elements i .. i + 4 (i a multiple of 4).
{{ pool_access }}
{{ x_access }}
// Byte offsets are relative to the matrix start word `mw` and fit u32 for matrices < 4 GiB.

const FORMAT: u32 = {{ format }}u;
const SWIGLU: bool = {{ swiglu }};

const FMT_F32: u32 = 0u;
const FMT_F16: u32 = 1u;
const FMT_Q8_0: u32 = 2u;
const FMT_Q4_1: u32 = 3u;

// 8 consecutive f32 values.
struct Unit {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

// The f16 at the 2-aligned byte `b` of the matrix at word `mw`, widened to f32.
fn half_at(mw: u32, b: u32) -> f32 {
    let v = unpack2x16float(pool_word(mw + (b >> 2u)));
    return select(v.x, v.y, (b & 2u) != 0u);
}

// The 4 bytes at the 2-aligned byte `b`: one word, or the halves of two neighbours.
fn word_at(mw: u32, b: u32) -> u32 {
    let i = mw + (b >> 2u);
    if (b & 2u) == 0u {
        return pool_word(i);
    }
    return (pool_word(i) >> 16u) | (pool_word(i + 1u) << 16u);
}

// Quants become floats without int-to-float conversions, which NVIDIA GPUs issue at a quarter
// of the FMA rate: at one token a quantized matmul converts 2 (Q4_1) or 1 (Q8_0) values per
// byte read, so at full memory bandwidth the converts, not the loads, would bound it. An
// integer n < 2²³ OR-ed into the mantissa of 2²³ (bits 0x4B000000) is the float 2²³ + n
// exactly, and subtracting 2²³ (exact) leaves n: bitwise ops and one add, all full rate.
// (CONVERT selects plain conversions instead, only to measure the difference.)
const MAGIC: u32 = 0x4B000000u; // 2²³ as f32 bits
const CONVERT: bool = {{ convert }};

// The 4 signed bytes of a word, low byte first: b ^ 0x80 is b + 128 as an unsigned byte.
fn i8x4(w: u32) -> vec4<f32> {
    if CONVERT {
        return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
    }
    let u = (vec4<u32>(w ^ 0x80808080u) >> vec4<u32>(0u, 8u, 16u, 24u)) & vec4<u32>(0xFFu);
    return bitcast<vec4<f32>>(u | vec4<u32>(MAGIC)) - vec4<f32>(8388736.0); // 2²³ + 128
}

// The nibbles at bit `shift` of each byte of a word, low byte first.
fn nib4(w: u32, shift: u32) -> vec4<f32> {
    let v = (vec4<u32>(w) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u);
    if CONVERT {
        return vec4<f32>(v);
    }
    return bitcast<vec4<f32>>(v | vec4<u32>(MAGIC)) - vec4<f32>(8388608.0); // 2²³
}

// Elements e0 .. e0 + 8 (e0 a multiple of 8) of row n of the matrix at word mw, whose rows are
// `cols` elements and `row_bytes` bytes; elements at or past `cols` (only possible for F32 and
// F16, quantized rows are whole blocks) read as 0.
fn w_unit(mw: u32, n: u32, e0: u32, cols: u32, row_bytes: u32) -> Unit {
    let rb = n * row_bytes;
    if FORMAT == FMT_Q8_0 {
        let blk = rb + (e0 >> 5u) * 34u;
        let d = half_at(mw, blk);
        let q = blk + 2u + (e0 & 31u);
        // d * q as two f32 products per element, exactly what the reference decoder computes.
        return Unit(d * i8x4(word_at(mw, q)), d * i8x4(word_at(mw, q + 4u)));
    }
    if FORMAT == FMT_Q4_1 {
        let i = mw + ((rb + (e0 >> 5u) * 20u) >> 2u);
        let dm = unpack2x16float(pool_word(i));
        // Unit s of the block: s = 0, 1 are the low nibbles of bytes 0..8, 8..16; s = 2, 3 the
        // high nibbles of the same bytes.
        let s = (e0 >> 3u) & 3u;
        let j = i + 1u + (s & 1u) * 2u;
        let shift = (s >> 1u) * 4u;
        return Unit(dm.x * nib4(pool_word(j), shift) + dm.y, dm.x * nib4(pool_word(j + 1u), shift) + dm.y);
    }
    if e0 + 8u <= cols {
        if FORMAT == FMT_F16 {
            let q = pool_quad(mw + ((rb + e0 * 2u) >> 2u));
            return Unit(
                vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y)),
                vec4<f32>(unpack2x16float(q.z), unpack2x16float(q.w)),
            );
        }
        let i = mw + (rb >> 2u) + e0;
        return Unit(bitcast<vec4<f32>>(pool_quad(i)), bitcast<vec4<f32>>(pool_quad(i + 4u)));
    }
    // The ragged end of a float row, element by element. (No private arrays here or anywhere in
    // these kernels: drivers keep a dynamically indexed one in slow local memory.)
    return Unit(
        vec4<f32>(w_elem(mw, rb, e0, cols), w_elem(mw, rb, e0 + 1u, cols), w_elem(mw, rb, e0 + 2u, cols), w_elem(mw, rb, e0 + 3u, cols)),
        vec4<f32>(w_elem(mw, rb, e0 + 4u, cols), w_elem(mw, rb, e0 + 5u, cols), w_elem(mw, rb, e0 + 6u, cols), w_elem(mw, rb, e0 + 7u, cols)),
    );
}

// Element e of the F32 or F16 row at byte rb, or 0 past the row's end.
fn w_elem(mw: u32, rb: u32, e: u32, cols: u32) -> f32 {
    if e >= cols {
        return 0.0;
    }
    if FORMAT == FMT_F16 {
        return half_at(mw, rb + e * 2u);
    }
    return bitcast<f32>(pool_word(mw + (rb >> 2u) + e));
}

// Elements e0 .. e0 + 8 of the input row starting at x[base]: x itself, or with SWIGLU
// silu(a) · b where a = x[base + e] and b = x[base + cols + e] (gate and up halves of a
// gate_up output row). Elements at or past `cols` read as 0.
fn x_unit(base: u32, e0: u32, cols: u32) -> Unit {
    if e0 + 8u <= cols {
        let i = base + e0;
        var lo = x_four(i);
        var hi = x_four(i + 4u);
        if SWIGLU {
            let j = i + cols;
            lo = silu(lo) * x_four(j);
            hi = silu(hi) * x_four(j + 4u);
        }
        return Unit(lo, hi);
    }
    return Unit(
        vec4<f32>(x_elem(base, e0, cols), x_elem(base, e0 + 1u, cols), x_elem(base, e0 + 2u, cols), x_elem(base, e0 + 3u, cols)),
        vec4<f32>(x_elem(base, e0 + 4u, cols), x_elem(base, e0 + 5u, cols), x_elem(base, e0 + 6u, cols), x_elem(base, e0 + 7u, cols)),
    );
}

// silu(a) = a · sigmoid(a); for a → -inf, exp overflows and the quotient is -0.
fn silu(a: vec4<f32>) -> vec4<f32> {
    return a / (1.0 + exp(-a));
}

// Element e of the input row at x[base], or 0 past the row's end.
fn x_elem(base: u32, e: u32, cols: u32) -> f32 {
    if e >= cols {
        return 0.0;
    }
    if SWIGLU {
        return silu(vec4<f32>(x_one(base + e))).x * x_one(base + cols + e);
    }
    return x_one(base + e);
}

// The tiled matmuls' reads (qgemm, qgemm_coop), through the kernel's params `p` (fields per,
// x_stride, cols, rows, row_bytes, which every includer's Params has):
// Unit e0 of input row m (zeros from row `end` on).
fn load_x(m: u32, end: u32, e0: u32) -> Unit {
    if m < end {
        return x_unit((m / p.per) * p.x_stride, e0, p.cols);
    }
    return Unit(vec4<f32>(0.0), vec4<f32>(0.0));
}

// Unit e0 of row n of the matrix at word mw (zeros past the last row).
fn load_w(mw: u32, n: u32, e0: u32) -> Unit {
    if n < p.rows {
        return w_unit(mw, n, e0, p.cols, p.row_bytes);
    }
    return Unit(vec4<f32>(0.0), vec4<f32>(0.0));
}
