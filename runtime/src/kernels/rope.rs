//! `rope`: rotary position embedding in one kernel (see `shaders/rope.wgsl` and
//! [`crate::model::rope`], whose tensor-op version is the reference).

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Tensor};

use super::launch::{Wgsl, bind, dims, dispatch, empty, grid, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub heads: u32,
    pub dim: u32,
    pub half: u32,
}

const WORKGROUP: u32 = 256;

/// Rotates the leading `2 · half` dims of every head of `x` by the tables' angles.
///
/// # Shapes
/// `x`: `[T, H, D]`; `cos`, `sin`: `[T, half]` with `2 · half ≤ D` → `[T, H, D]`.
pub fn rope(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Result<Tensor<3>, KernelError> {
    let [t, h, d] = x.dims();
    let [ct, half] = cos.dims();
    if ct != t || sin.dims() != [t, half] || 2 * half > d || u32::try_from(t * h * d).is_err() {
        return Err(KernelError::Shape {
            kernel: "rope",
            reason: format!("x {:?}, cos {:?}, sin {:?}", x.dims(), cos.dims(), sin.dims()),
        });
    }
    if half == 0 || t * h * d == 0 {
        return Ok(x);
    }
    if !uses_wgsl(&x.device()) {
        return Ok(crate::model::rope::apply(x, cos, sin));
    }
    let p = Params { tokens: t as u32, heads: h as u32, dim: d as u32, half: half as u32 };
    Ok(float(Dispatch::rope(x.into_dispatch(), cos.clone().into_dispatch(), sin.clone().into_dispatch(), p)))
}

pub(super) fn launch(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, p: Params) -> CubeTensor {
    assert_eq!((x.dtype, cos.dtype, sin.dtype), (DType::F32, DType::F32, DType::F32), "rope takes f32");
    let shape = dims(&x);
    let (x, xb) = bind(x);
    let (_cos, cb) = bind(cos);
    let (_sin, sb) = bind(sin);
    let out = empty(&x, shape, DType::F32);
    let kernel = Wgsl::new("rope", include_str!("../../../shaders/rope.wgsl")).with("workgroup", WORKGROUP);
    let groups = (p.tokens * p.heads * p.dim).div_ceil(WORKGROUP);
    dispatch(&x, kernel, WORKGROUP, grid(groups), vec![xb, cb, sb, out.handle.clone().binding()], params(&p));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{check, gpu, random, wgsl_fields};
    use crate::model::rope::{apply, tables};

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // Full and partial rotary dims, odd token and head counts, a late start position.
        for (t, h, d, rotary, start) in [(1, 8, 64, 64, 0), (5, 3, 128, 64, 1000), (7, 2, 12, 8, 3), (2, 1, 10, 4, 9)] {
            let x = random(t as u64 + d as u64, [t, h, d], 1.0, &device);
            let (cos, sin) = tables(start, t, rotary, 1e4, &device);
            let got = rope(x.clone(), &cos, &sin).unwrap().reshape([t * h, d]);
            let want = apply(x, &cos, &sin).reshape([t * h, d]);
            check(got, want, &format!("[{t}, {h}, {d}], rotary {rotary} from {start}"));
        }
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/rope.wgsl"));
        assert_eq!(fields, ["tokens", "heads", "dim", "half"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
