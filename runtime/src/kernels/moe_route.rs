//! `moe_route`: router softmax, top-k and renormalised weights, on the device.
//!
//! `p = softmax(logits)`, `ids` = the `k` most probable experts (descending), and
//! `w_j = p_ids[j] / Σ p_ids`.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor, activation::softmax};

use super::launch::{Wgsl, bind, empty, grid, dispatch, params};
use super::{Kernels, float, int, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/moe_route.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub experts: u32,
    pub _pad: [u32; 2],
}

const WORKGROUP: usize = 64;

/// Routes each token to its top-k experts.
///
/// # Shapes
/// - `logits`: `[T, E]`;
/// - returns `(ids [T, k] (i32 on the GPU), weights [T, k])`.
pub fn moe_route(logits: Tensor<2>, top_k: usize) -> Result<(Tensor<2, Int>, Tensor<2>), KernelError> {
    let [t, e] = logits.dims();
    if top_k == 0 || top_k > e || t == 0 {
        return Err(KernelError::Shape {
            kernel: "moe_route",
            reason: format!("top-{top_k} of {e} experts for {t} tokens"),
        });
    }
    if !uses_wgsl(&logits.device()) {
        return Ok(reference(logits, top_k));
    }
    let (ids, w) = Dispatch::moe_route(logits.into_dispatch(), top_k as u32);
    Ok((int(ids), float(w)))
}

/// The reference in plain Burn ops (also the CPU path).
pub fn reference(logits: Tensor<2>, top_k: usize) -> (Tensor<2, Int>, Tensor<2>) {
    let probs = softmax(logits, 1);
    let (top, ids) = probs.topk_with_indices(top_k, 1);
    let w = top.clone() / top.sum_dim(1);
    (ids, w)
}

pub(super) fn launch(logits: CubeTensor, top_k: u32) -> (CubeTensor, CubeTensor) {
    let (t, e) = (logits.meta.shape()[0], logits.meta.shape()[1]);
    let (logits, lb) = bind(logits);
    let ids = empty(&logits, [t, top_k as usize], DType::I32);
    let weights = empty(&logits, [t, top_k as usize], DType::F32);
    let p = Params {
        tokens: t as u32,
        experts: e as u32,
        _pad: [0; 2],
    };
    let kernel = Wgsl::new("moe_route", concat!(include_str!("../../../shaders/topk.wgsl"), include_str!("../../../shaders/moe_route.wgsl")))
        .with("top_k", top_k)
        .with("workgroup", WORKGROUP);
    dispatch(
        &logits,
        kernel,
        WORKGROUP as u32,
        grid(t.div_ceil(WORKGROUP) as u32),
        vec![lb, ids.handle.clone().binding(), weights.handle.clone().binding()], params(&p),
    );
    (ids, weights)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, &(t, e, k)) in [(1, 8, 2), (37, 8, 2), (5, 32, 2), (70, 7, 3), (3, 4, 4)].iter().enumerate() {
            let logits = random(i as u64, [t, e], 3.0, &device);
            let (ids, w) = moe_route(logits.clone(), k).unwrap();
            let (rids, rw) = reference(logits, k);
            let ids = ids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
            let rids = rids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
            assert_eq!(ids, rids, "T{t} E{e} k{k}");
            let (err, _) = diff(w.clone(), rw);
            assert!(err < 1e-6, "T{t} E{e} k{k}: {err}");
            let sums = w.sum_dim(1).into_data().try_to_vec::<f32>().unwrap();
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
        }
    }
}
