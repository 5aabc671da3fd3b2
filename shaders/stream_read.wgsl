// stream_read: the bandwidth roofline. Reads every vec4 of `data` once (grid-stride, so that
// consecutive threads read consecutive 16-byte words) and writes one partial sum per thread,
// so that no read can be optimised away. Benchmarks time it over a buffer many times the L2
// and report every other kernel's bytes per second as a fraction of what this one reaches on
// the same adapter in the same run.

struct Params {
    vec4s: u32,
    threads: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read_write> data: array<vec4<f32>>; // [vec4s] read once
@group(0) @binding(1) var<storage, read_write> sums: array<f32>;       // [threads] out
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let t = linear_workgroup(wid, nwg) * WG + lid;
    if t >= p.threads {
        return;
    }
    // Two independent accumulators keep two loads in flight per thread.
    var a = vec4<f32>(0.0);
    var b = vec4<f32>(0.0);
    var i = t;
    for (; i + p.threads < p.vec4s; i += 2u * p.threads) {
        a += data[i];
        b += data[i + p.threads];
    }
    if i < p.vec4s {
        a += data[i];
    }
    sums[t] = dot(a + b, vec4<f32>(1.0));
}
