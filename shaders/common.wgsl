// Shared by every kernel: prepended once by the launcher (runtime/src/kernels/launch.rs).
//
// Conventions:
// - every storage binding is `read_write` (cubecl packs tensors into shared buffers, and mixing
//   `read` with `read_write` on one buffer fails validation);
// - params arrive as the last binding, `var<uniform> p: Params`, one struct mirrored by a
//   `#[repr(C)]` Rust struct and padded to a multiple of 16 bytes (uniform layout);
// - the entry point is `main`; workgroup memory is initialised by the kernel itself.

// Linear workgroup index of a 2-D grid (WebGPU caps each dimension at 65535).
fn linear_workgroup(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}
