//! `kv_append`: the keys and values of new positions written into a softmax layer's KV cache
//! in place, at the row a `[1]` position tensor on the device names. A decode step replayed
//! from a graph appends this way: the recorded launch reads where the sequence stands each
//! time, where a slice assignment would keep the row it was recorded with.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, IntDType, Tensor};

use super::launch::{Wgsl, bind, dispatch, grid, params};
use super::{Kernels, float, position_on_host, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/kv_append.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub elems: u32,
    pub _pad: [u32; 3],
}

const WORKGROUP: u32 = 256;

/// Writes `k` and `v` into rows `pos[0]..pos[0] + T` of the caches and returns the caches
/// (on wgpu the same buffers, written in place). The caller keeps the rows within the
/// capacity.
///
/// # Shapes
/// `k_cache`, `v_cache`: `[capacity, Hkv, D]`; `k`, `v`: `[T, Hkv, D]`; `pos`: `[1]`.
pub fn kv_append(
    k_cache: Tensor<3>,
    v_cache: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    pos: &Tensor<1, Int>,
) -> Result<(Tensor<3>, Tensor<3>), KernelError> {
    let [capacity, h, d] = k_cache.dims();
    let [t, ..] = k.dims();
    if v_cache.dims() != [capacity, h, d]
        || k.dims() != [t, h, d]
        || v.dims() != [t, h, d]
        || t > capacity
        || pos.dims() != [1]
        || u32::try_from(capacity * h * d).is_err()
    {
        return Err(KernelError::Shape {
            kernel: "kv_append",
            reason: format!("caches {:?} {:?}, new {:?} {:?}", k_cache.dims(), v_cache.dims(), k.dims(), v.dims()),
        });
    }
    if t == 0 {
        return Ok((k_cache, v_cache));
    }
    if !uses_wgsl(&k.device()) {
        return Ok(reference(k_cache, v_cache, k, v, pos));
    }
    let p = Params { elems: (t * h * d) as u32, _pad: [0; 3] };
    let (kc, vc) = Dispatch::kv_append(
        k_cache.into_dispatch(),
        v_cache.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        pos.clone().cast(IntDType::I32).into_dispatch(),
        p,
    );
    Ok((float(kc), float(vc)))
}

/// The reference: a slice assignment at the position read back (also the CPU path).
pub fn reference(k_cache: Tensor<3>, v_cache: Tensor<3>, k: Tensor<3>, v: Tensor<3>, pos: &Tensor<1, Int>) -> (Tensor<3>, Tensor<3>) {
    let at = position_on_host(pos);
    let rows = at..at + k.dims()[0];
    (k_cache.slice_assign([rows.clone()], k), v_cache.slice_assign([rows], v))
}

pub(super) fn launch(
    k_cache: CubeTensor,
    v_cache: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    pos: CubeTensor,
    p: Params,
) -> (CubeTensor, CubeTensor) {
    assert!(
        [&k_cache, &v_cache, &k, &v].iter().all(|t| t.dtype == DType::F32) && pos.dtype == DType::I32,
        "kv_append takes f32 rows and an i32 position"
    );
    let row = k.meta.shape()[1] * k.meta.shape()[2];
    let (k, kb) = bind(k);
    let (_v, vb) = bind(v);
    let (_pos, pb) = bind(pos);
    // The caches are written in place: they must be whole contiguous buffers, not views.
    assert!(k_cache.is_contiguous() && v_cache.is_contiguous(), "kv_append writes whole caches");
    let (kcb, vcb) = (k_cache.handle.clone().binding(), v_cache.handle.clone().binding());
    let kernel = Wgsl::new("kv_append", include_str!("../../../shaders/kv_append.wgsl"))
        .with("workgroup", WORKGROUP)
        .with("row", row);
    dispatch(&k, kernel, WORKGROUP, grid(p.elems.div_ceil(WORKGROUP)), vec![kb, vb, kcb, vcb, pb], params(&p));
    (k_cache, v_cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, ints, random, wgsl_fields};

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // One row (decode) and several (a chunk), at the start, inside and at the very end.
        for (capacity, t, h, d, at) in [(16, 1, 2, 8, 0), (40, 3, 3, 16, 21), (9, 2, 1, 4, 7)] {
            let (kc, vc) = (random(1, [capacity, h, d], 1.0, &device), random(2, [capacity, h, d], 1.0, &device));
            let (k, v) = (random(3, [t, h, d], 1.0, &device), random(4, [t, h, d], 1.0, &device));
            let pos = ints(&[at], &device);
            // Copies, so that the in-place kernel and the reference start from the same caches.
            let (gk, gv) = kv_append(kc.clone() + 0.0, vc.clone() + 0.0, k.clone(), v.clone(), &pos).unwrap();
            let (rk, rv) = reference(kc, vc, k, v, &pos);
            for (got, want, what) in [(gk, rk, "k"), (gv, rv, "v")] {
                let (e, _) = diff(got, want);
                assert_eq!(e, 0.0, "{what}: {t} rows at {at} of {capacity}");
            }
        }
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/kv_append.wgsl"));
        assert_eq!(fields, ["elems", "_pad0", "_pad1", "_pad2"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
