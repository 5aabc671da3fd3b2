//! `moe_scatter`: the weighted sum of each token's expert outputs, back in token order:
//! `out[t] = Σ_j weights[t, j] · ys[positions[t, j]]`.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, IntDType, Tensor};

use super::launch::{Wgsl, bind, empty, grid, dispatch, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/moe_scatter.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub top_k: u32,
    pub cols: u32,
    pub _pad: u32,
}

const WORKGROUP: usize = 128;

/// Combines expert outputs.
///
/// # Shapes
/// - `ys`: `[T * k, C]` (rows as grouped by [`moe_gather`](super::moe_gather));
/// - `weights`, `positions`: `[T, k]`; returns `[T, C]`.
pub fn moe_scatter(ys: Tensor<2>, weights: Tensor<2>, positions: Tensor<2, Int>) -> Result<Tensor<2>, KernelError> {
    let [t, k] = weights.dims();
    if positions.dims() != [t, k] || ys.dims()[0] != t * k {
        return Err(KernelError::Shape {
            kernel: "moe_scatter",
            reason: format!("ys {:?}, weights {:?}, positions {:?}", ys.dims(), weights.dims(), positions.dims()),
        });
    }
    if !uses_wgsl(&ys.device()) {
        return Ok(reference(ys, weights, positions));
    }
    let positions = positions.cast(IntDType::I32);
    Ok(float(Dispatch::moe_scatter(
        ys.into_dispatch(),
        weights.into_dispatch(),
        positions.into_dispatch(),
    )))
}

/// The reference in plain Burn ops (also the CPU path).
pub fn reference(ys: Tensor<2>, weights: Tensor<2>, positions: Tensor<2, Int>) -> Tensor<2> {
    let [t, k] = weights.dims();
    let c = ys.dims()[1];
    let rows = ys.select(0, positions.reshape([t * k])).reshape([t, k, c]);
    (rows * weights.unsqueeze_dim::<3>(2)).sum_dim(1).reshape([t, c])
}

pub(super) fn launch(ys: CubeTensor, weights: CubeTensor, positions: CubeTensor) -> CubeTensor {
    assert_eq!(positions.dtype, DType::I32, "moe_scatter takes i32 positions");
    let c = ys.meta.shape()[1];
    let (t, k) = (weights.meta.shape()[0], weights.meta.shape()[1]);
    let (ys, yb) = bind(ys);
    let (_w, wb) = bind(weights);
    let (_p, pb) = bind(positions);
    let out = empty(&ys, [t, c], DType::F32);
    let p = Params {
        tokens: t as u32,
        top_k: k as u32,
        cols: c as u32,
        _pad: 0,
    };
    let kernel = Wgsl::new("moe_scatter", include_str!("../../../shaders/moe_scatter.wgsl")).with("workgroup", WORKGROUP);
    dispatch(
        &ys,
        kernel,
        WORKGROUP as u32,
        grid(t as u32),
        vec![yb, wb, pb, out.handle.clone().binding()], params(&p),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::TensorData;

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, &(t, k, c)) in [(1, 2, 5), (37, 2, 64), (9, 3, 130)].iter().enumerate() {
            let ys = random(i as u64, [t * k, c], 1.0, &device);
            let w = random(i as u64 + 1, [t, k], 1.0, &device);
            // A permutation of the rows, as moe_gather produces.
            let perm: Vec<i64> = (0..t * k).map(|n| ((n * 7 + 3) % (t * k)) as i64).collect();
            let mut seen = perm.clone();
            seen.sort();
            seen.dedup();
            let perm = if seen.len() == t * k { perm } else { (0..(t * k) as i64).rev().collect() };
            let pos = Tensor::<2, Int>::from_data(TensorData::new(perm, [t, k]), &device);
            let o = moe_scatter(ys.clone(), w.clone(), pos.clone()).unwrap();
            let r = reference(ys, w, pos);
            let (err, _) = diff(o, r);
            assert!(err < 1e-6, "T{t} k{k} C{c}: {err}");
        }
    }
}
