//! `moe_gather`: groups the (token, slot) pairs of a batch by expert, so that each expert
//! multiplies one contiguous block of rows.
//!
//! Pair `n = t * k + j` goes to expert `ids[t, j]`. Rows `offsets[e] .. offsets[e + 1]` of `xs`
//! belong to expert `e`, in token order; `positions[t, j]` is the row of pair `(t, j)`.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, IntDType, Tensor};

use super::launch::{Wgsl, bind, empty, grid, dispatch, params};
use super::{Kernels, float, int, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/moe_gather.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub pairs: u32,
    pub top_k: u32,
    pub cols: u32,
    pub _pad: u32,
}

const WORKGROUP: usize = 128;

/// Token copies grouped by expert.
#[derive(Debug, Clone)]
pub struct Grouped {
    /// `[T * k, C]`, rows of expert `e` at `offsets[e] .. offsets[e + 1]`.
    pub xs: Tensor<2>,
    /// `[E + 1]`.
    pub offsets: Tensor<1, Int>,
    /// `[T, k]`: row of `xs` holding pair `(t, j)`.
    pub positions: Tensor<2, Int>,
}

/// Groups the rows of `x` by the experts in `ids`.
///
/// # Shapes
/// - `x`: `[T, C]`; `ids`: `[T, k]` with values in `0..num_experts`.
pub fn moe_gather(x: Tensor<2>, ids: Tensor<2, Int>, num_experts: usize) -> Result<Grouped, KernelError> {
    let [t, _] = x.dims();
    if ids.dims()[0] != t || num_experts == 0 {
        return Err(KernelError::Shape {
            kernel: "moe_gather",
            reason: format!("ids {:?} for {t} tokens and {num_experts} experts", ids.dims()),
        });
    }
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x, ids, num_experts));
    }
    let ids = ids.cast(IntDType::I32);
    let (xs, offsets, positions) = Dispatch::moe_gather(x.into_dispatch(), ids.into_dispatch(), num_experts as u32);
    Ok(Grouped {
        xs: float(xs),
        offsets: int(offsets),
        positions: int(positions),
    })
}

/// The reference in plain Burn ops (also the CPU path): a stable sort of the pairs by expert.
pub fn reference(x: Tensor<2>, ids: Tensor<2, Int>, num_experts: usize) -> Grouped {
    let [t, k] = ids.dims();
    let n = t * k;
    let device = x.device();
    let flat = ids.reshape([n]);
    // Unique keys `expert * n + pair` make any sort stable.
    let keys = flat.clone().mul_scalar(n as i64) + Tensor::<1, Int>::arange(0..n as i64, &device);
    let order = keys.argsort(0); // row -> pair
    let positions = order.clone().argsort(0).reshape([t, k]); // pair -> row
    let src = order.div_scalar(k as i64); // row -> token
    let xs = x.select(0, src);
    // offsets[e] = number of pairs routed to an expert below e.
    let bounds = Tensor::<1, Int>::arange(0..num_experts as i64 + 1, &device);
    let offsets = flat
        .unsqueeze_dim::<2>(1)
        .lower(bounds.unsqueeze_dim::<2>(0))
        .int()
        .sum_dim(0)
        .reshape([num_experts + 1]);
    Grouped {
        xs,
        offsets,
        positions,
    }
}

pub(super) fn launch(x: CubeTensor, ids: CubeTensor, num_experts: u32) -> (CubeTensor, CubeTensor, CubeTensor) {
    assert_eq!(ids.dtype, DType::I32, "moe_gather takes i32 expert ids");
    let (t, c) = (x.meta.shape()[0], x.meta.shape()[1]);
    let k = ids.meta.shape()[1];
    let n = t * k;
    let (x, xb) = bind(x);
    let (_ids, ib) = bind(ids);
    let xs = empty(&x, [n, c], DType::F32);
    let offsets = empty(&x, [num_experts as usize + 1], DType::I32);
    let positions = empty(&x, [t, k], DType::I32);
    let src = empty(&x, [n], DType::I32);
    let p = Params {
        pairs: n as u32,
        top_k: k as u32,
        cols: c as u32,
        _pad: 0,
    };
    for (phase, count) in [(1, grid(1)), (2, grid(n as u32))] {
        let kernel = Wgsl::new("moe_gather", include_str!("../../../shaders/moe_gather.wgsl"))
            .with("experts", num_experts)
            .with("workgroup", WORKGROUP)
            .with("phase", phase);
        dispatch(
            &x,
            kernel,
            WORKGROUP as u32,
            count,
            vec![
                xb.clone(),
                ib.clone(),
                xs.handle.clone().binding(),
                offsets.handle.clone().binding(),
                positions.handle.clone().binding(),
                src.handle.clone().binding(),
            ],
            params(&p),
        );
    }
    (xs, offsets, positions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::{Device, TensorData};

    fn ids(seed: u64, t: usize, k: usize, e: usize, device: &Device) -> Tensor<2, Int> {
        // Distinct experts per token, as top-k gives.
        let v: Vec<i64> = (0..t)
            .flat_map(|i| (0..k).map(move |j| ((i as u64 * 7 + seed + j as u64 * 3) % e as u64) as i64))
            .collect();
        Tensor::from_data(TensorData::new(v, [t, k]), device)
    }

    fn ints<const D: usize>(x: Tensor<D, Int>) -> Vec<i64> {
        x.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, &(t, k, e, c)) in [(1, 2, 8, 7), (37, 2, 8, 64), (5, 3, 5, 33), (300, 2, 32, 16)].iter().enumerate() {
            let x = random(i as u64, [t, c], 1.0, &device);
            let ids = ids(i as u64, t, k, e, &device);
            let g = moe_gather(x.clone(), ids.clone(), e).unwrap();
            let r = reference(x, ids, e);
            assert_eq!(ints(g.offsets), ints(r.offsets), "offsets T{t} k{k} E{e}");
            assert_eq!(ints(g.positions), ints(r.positions), "positions T{t} k{k} E{e}");
            let (err, _) = diff(g.xs, r.xs);
            assert_eq!(err, 0.0);
        }
    }

    #[test]
    fn reference_groups_by_expert() {
        let device = Device::flex();
        let x = random(3, [4, 2], 1.0, &device);
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 0, 0, 1, 2, 1, 0, 2], [4, 2]), &device);
        let g = reference(x.clone(), ids, 3);
        assert_eq!(ints(g.offsets), vec![0, 3, 5, 8]);
        // Expert 0 gets tokens 0, 1, 3 in order; expert 1 tokens 1, 2; expert 2 tokens 0, 2, 3.
        assert_eq!(ints(g.positions), vec![5, 0, 1, 3, 6, 4, 2, 7]);
        let (err, _) = diff(g.xs.narrow(0, 2, 1), x.narrow(0, 3, 1));
        assert_eq!(err, 0.0);
    }
}
