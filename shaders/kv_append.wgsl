// kv_append: writes the keys and values of T new positions into a softmax layer's cache, in
// place, from row pos[0] on: the position is read on the device, so a decode step replayed
// from a graph appends where the sequence stands rather than where it stood when recorded.
// One thread per element of the new rows (elems = T · Hkv · D).

struct Params {
    elems: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> k: array<f32>;       // [T, Hkv, D] new keys
@group(0) @binding(1) var<storage, read_write> v: array<f32>;       // [T, Hkv, D] new values
@group(0) @binding(2) var<storage, read_write> k_cache: array<f32>; // [capacity, Hkv, D], written in place
@group(0) @binding(3) var<storage, read_write> v_cache: array<f32>; // [capacity, Hkv, D], written in place
@group(0) @binding(4) var<storage, read_write> pos: array<i32>;     // [1] row of the first new position
@group(0) @binding(5) var<uniform> p: Params;

const WG: u32 = {{ workgroup }}u;
const ROW: u32 = {{ row }}u; // Hkv · D

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let e = linear_workgroup(wid, nwg) * WG + lid;
    if e >= p.elems {
        return;
    }
    let at = u32(pos[0]) * ROW + e;
    k_cache[at] = k[e];
    v_cache[at] = v[e];
}
