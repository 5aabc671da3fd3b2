// decode_step: the end of a decode step replayed from a graph. The token the step chose
// becomes the next step's input, and the position advances, both on the device, so that the
// next replay of the same recording feeds that token at the next position with no host write.
// `advance` is the number of positions the step fed (1).

struct Params {
    advance: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> chosen: array<i32>; // [1] the token this step chose
@group(0) @binding(1) var<storage, read_write> ids: array<i32>;    // [1] the next step's input
@group(0) @binding(2) var<storage, read_write> pos: array<i32>;    // [1] the position, advanced by one
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(1)
fn main() {
    ids[0] = chosen[0];
    pos[0] = pos[0] + i32(p.advance);
}
