//! `rope`: rotary position embedding in one kernel (see `shaders/rope.wgsl` and
//! [`crate::model::rope`], whose tensor-op version is the reference).

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor};

use super::launch::{Wgsl, bind, dims, dispatch, empty, grid, params};
use super::{Kernels, float, no_position, position_on_host, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub heads: u32,
    pub dim: u32,
    pub half: u32,
    pub dynamic: u32,
    pub base: u32,
    pub _pad: [u32; 2],
}

const WORKGROUP: u32 = 256;

/// Rotates the leading `2 · half` dims of every head of `x` by the tables' angles.
///
/// # Shapes
/// `x`: `[T, H, D]`; `cos`, `sin`: `[T, half]` with `2 · half ≤ D` → `[T, H, D]`.
pub fn rope(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>) -> Result<Tensor<3>, KernelError> {
    rope_launch(x, cos, sin, None)
}

/// [`rope`] for a step whose position is read on the device (a decode step replayed from a
/// graph): token t takes table row `pos[0] - base + t`, so the tables cover positions `base..`.
/// The caller keeps the position inside the tables.
///
/// # Shapes
/// `x`: `[T, H, D]`; `cos`, `sin`: `[N, half]`; `pos`: `[1]`.
pub fn rope_at(x: Tensor<3>, cos: &Tensor<2>, sin: &Tensor<2>, pos: &Tensor<1, Int>, base: usize) -> Result<Tensor<3>, KernelError> {
    rope_launch(x, cos, sin, Some((pos, base)))
}

fn rope_launch(
    x: Tensor<3>,
    cos: &Tensor<2>,
    sin: &Tensor<2>,
    at: Option<(&Tensor<1, Int>, usize)>,
) -> Result<Tensor<3>, KernelError> {
    let [t, h, d] = x.dims();
    let [ct, half] = cos.dims();
    let rows_ok = if at.is_some() { ct >= t } else { ct == t };
    if !rows_ok || sin.dims() != [ct, half] || 2 * half > d || u32::try_from(t * h * d).is_err() || u32::try_from(ct).is_err() {
        return Err(KernelError::Shape {
            kernel: "rope",
            reason: format!("x {:?}, cos {:?}, sin {:?}", x.dims(), cos.dims(), sin.dims()),
        });
    }
    if half == 0 || t * h * d == 0 {
        return Ok(x);
    }
    if !uses_wgsl(&x.device()) {
        return Ok(match at {
            None => crate::model::rope::apply(x, cos, sin),
            Some((pos, base)) => {
                // The reference reads the position back: only tests run a device step here.
                let row = position_on_host(pos) - base;
                crate::model::rope::apply(x, &cos.clone().narrow(0, row, t), &sin.clone().narrow(0, row, t))
            }
        });
    }
    let p = Params {
        tokens: t as u32,
        heads: h as u32,
        dim: d as u32,
        half: half as u32,
        dynamic: at.is_some() as u32,
        base: at.map_or(0, |(_, base)| base as u32),
        _pad: [0; 2],
    };
    let pos = at.map_or_else(|| no_position(&x.device()), |(pos, _)| pos.clone()).into_dispatch();
    Ok(float(Dispatch::rope(x.into_dispatch(), cos.clone().into_dispatch(), sin.clone().into_dispatch(), pos, p)))
}

pub(super) fn launch(x: CubeTensor, cos: CubeTensor, sin: CubeTensor, pos: CubeTensor, p: Params) -> CubeTensor {
    assert_eq!((x.dtype, cos.dtype, sin.dtype), (DType::F32, DType::F32, DType::F32), "rope takes f32");
    let shape = dims(&x);
    let (x, xb) = bind(x);
    let (_cos, cb) = bind(cos);
    let (_sin, sb) = bind(sin);
    let out = empty(&x, shape, DType::F32);
    let (_pos, pb) = bind(pos);
    let kernel = Wgsl::new("rope", include_str!("../../../shaders/rope.wgsl")).with("workgroup", WORKGROUP);
    let groups = (p.tokens * p.heads * p.dim).div_ceil(WORKGROUP);
    dispatch(&x, kernel, WORKGROUP, grid(groups), vec![xb, cb, sb, out.handle.clone().binding(), pb], params(&p));
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
    fn position_read_on_the_device_picks_the_table_row() {
        let Some(device) = gpu() else { return };
        // Tables for positions 40..90; the step is at position 57 (row 17).
        let (t, h, d, rotary, base, at) = (1, 5, 64, 32, 40, 57);
        let (cos, sin) = tables(base, 50, rotary, 1e4, &device);
        let x = random(9, [t, h, d], 1.0, &device);
        let pos = crate::kernels::testing::ints(&[at as i32], &device);
        let got = rope_at(x.clone(), &cos, &sin, &pos, base).unwrap().reshape([t * h, d]);
        let (c, s) = tables(at, t, rotary, 1e4, &device);
        check(got, apply(x, &c, &s).reshape([t * h, d]), "position 57 from tables at 40");
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/rope.wgsl"));
        assert_eq!(fields, ["tokens", "heads", "dim", "half", "dynamic", "base", "_pad0", "_pad1"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
