// rope: rotary position embedding of the leading `rotary` dims of every head, in one pass
// (the tensor-op version is ~8 kernels and 3 copies per projection, per decoded token).
//
// NeoX rotate-half pairing: for i < half = rotary / 2, dims i and i + half of head h at token t
// become  x_i cos_ti - x_{i+half} sin_ti  and  x_{i+half} cos_ti + x_i sin_ti ; dims at or past
// `rotary` pass through. The cos / sin tables come from the host (computed in f64 there, so
// long positions keep their precision). One thread per output element.
//
// Token t takes table row t, or, in a step replayed from a graph (dynamic = 1), row
// pos[0] - base + t: the tables then cover positions base.. and the position is read on the
// device, so one recording serves every step.

struct Params {
    tokens: u32,
    heads: u32,
    dim: u32,
    half: u32,
    dynamic: u32,
    base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // [T, H, D] (row-major)
@group(0) @binding(1) var<storage, read_write> cos_t: array<f32>; // [T, half] cos of each angle
@group(0) @binding(2) var<storage, read_write> sin_t: array<f32>; // [T, half] sin of each angle
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [T, H, D] out
@group(0) @binding(4) var<storage, read_write> pos: array<i32>; // [1] the step's position (dynamic = 1)
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WG + lid;
    if e >= p.tokens * p.heads * p.dim {
        return;
    }
    let i = e % p.dim;
    let token = e / (p.heads * p.dim);
    var t = token;
    if p.dynamic != 0u {
        t = u32(pos[0]) - p.base + token;
    }
    let head = e - i;
    if i < p.half {
        let c = cos_t[t * p.half + i];
        let s = sin_t[t * p.half + i];
        out[e] = x[e] * c - x[head + i + p.half] * s;
    } else if i < 2u * p.half {
        let j = i - p.half;
        let c = cos_t[t * p.half + j];
        let s = sin_t[t * p.half + j];
        out[e] = x[e] * c + x[head + j] * s;
    } else {
        out[e] = x[e];
    }
}
