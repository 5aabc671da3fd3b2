//! `rms_norm`: RMSNorm fused with the residual combine before it.
//!
//! `h = alpha * x + beta * branch` (or `h = x` without a branch), then
//! `y = weight * h / sqrt(mean(h²) + eps)` per row. Returns `(h, y)`.
//!
//! [`rms_norm_route`] also routes each row to its MoE experts in the same launch: the
//! router's logits `y · routerᵀ`, softmax, top-k and renormalised weights, as
//! [`moe_route`](super::moe_route) computes them from separately launched logits. At decode
//! those were two more launches per MoE layer, each of a few microseconds of work.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor};

use super::launch::{Wgsl, bind, dims, empty, grid, dispatch, params};
use super::{Kernels, float, int, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/rms_norm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub has_branch: u32,
    /// Router rows ([`rms_norm_route`]; 0 without a router).
    pub experts: u32,
    pub alpha: f32,
    pub beta: f32,
    pub eps: f32,
    pub _pad2: f32,
}

const WORKGROUP: u32 = 256;
/// Rows [`rms_norm_route`] takes: decode's (a workgroup per row reads the whole router).
pub const ROUTE_MAX_ROWS: usize = 8;

/// An MoE routing: `(ids [T, k] (i32 on the GPU), weights [T, k])`.
pub type Route = (Tensor<2, Int>, Tensor<2>);

/// Residual combine plus RMSNorm.
///
/// # Shapes
/// - `x`, `branch`: `[N, C]`; `weight`: `[C]`.
/// - returns `(h, y)`, both `[N, C]`.
pub fn rms_norm(
    x: Tensor<2>,
    branch: Option<(Tensor<2>, f32, f32)>,
    weight: &Tensor<1>,
    eps: f32,
) -> Result<(Tensor<2>, Tensor<2>), KernelError> {
    let [rows, cols] = x.dims();
    let shape_err = |reason: String| KernelError::Shape {
        kernel: "rms_norm",
        reason,
    };
    if weight.dims() != [cols] {
        return Err(shape_err(format!("weight {:?} for rows of {cols}", weight.dims())));
    }
    if let Some((b, _, _)) = &branch
        && b.dims() != [rows, cols]
    {
        return Err(shape_err(format!("branch {:?} for x {:?}", b.dims(), [rows, cols])));
    }
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x, branch, weight, eps));
    }
    let (b, p) = launch_params(&x, branch, eps, 0);
    let (h, y) = Dispatch::rms_norm(
        x.into_dispatch(),
        b.into_dispatch(),
        weight.clone().into_dispatch(),
        p,
    );
    Ok((float(h), float(y)))
}

/// The branch binding and the params of a launch over `x`.
fn launch_params(x: &Tensor<2>, branch: Option<(Tensor<2>, f32, f32)>, eps: f32, experts: usize) -> (Tensor<2>, Params) {
    let [rows, cols] = x.dims();
    let (b, alpha, beta, has_branch) = match branch {
        Some((b, alpha, beta)) => (b, alpha, beta, 1),
        // WebGPU forbids two writable bindings over the same bytes, so the unused branch
        // binding gets a one-element placeholder rather than another view of x.
        None => (Tensor::empty([1, 1], &x.device()), 1.0, 0.0, 0),
    };
    let p = Params {
        rows: rows as u32,
        cols: cols as u32,
        has_branch,
        experts: experts as u32,
        alpha,
        beta,
        eps,
        _pad2: 0.0,
    };
    (b, p)
}

/// [`rms_norm`], then the MoE routing of `y` by `router` (`[E, C]` f32) to its `top_k`
/// experts, in one launch on a wgpu device. Returns `(h, y, route)`.
///
/// # Shapes
/// - `x`, `branch`: `[N, C]` with `N` ≤ [`ROUTE_MAX_ROWS`]; `weight`: `[C]`; `router`: `[E, C]`;
/// - returns `h`, `y` `[N, C]` and the route `([N, k], [N, k])`.
pub fn rms_norm_route(
    x: Tensor<2>,
    branch: Option<(Tensor<2>, f32, f32)>,
    weight: &Tensor<1>,
    eps: f32,
    router: &Tensor<2>,
    top_k: usize,
) -> Result<(Tensor<2>, Tensor<2>, Route), KernelError> {
    let [rows, cols] = x.dims();
    let [experts, router_cols] = router.dims();
    if rows == 0 || rows > ROUTE_MAX_ROWS || router_cols != cols || top_k == 0 || top_k > experts || router.dtype() != DType::F32 {
        return Err(KernelError::Shape {
            kernel: "rms_norm",
            reason: format!("route {rows} rows of {cols} by a {:?} {:?} router, top {top_k}", router.dims(), router.dtype()),
        });
    }
    if !uses_wgsl(&x.device()) {
        let (h, y) = rms_norm(x, branch, weight, eps)?;
        let route = super::moe_route::reference(y.clone().matmul(router.clone().transpose()), top_k);
        return Ok((h, y, route));
    }
    // The norm's own checks, on the CPU's path above and here.
    if weight.dims() != [cols] || branch.as_ref().is_some_and(|(b, ..)| b.dims() != [rows, cols]) {
        return Err(KernelError::Shape { kernel: "rms_norm", reason: format!("weight {:?} or branch for x {:?}", weight.dims(), [rows, cols]) });
    }
    let (b, p) = launch_params(&x, branch, eps, experts);
    let (h, y, ids, w) = Dispatch::rms_norm_route(
        x.into_dispatch(),
        b.into_dispatch(),
        weight.clone().into_dispatch(),
        router.clone().into_dispatch(),
        p,
        top_k as u32,
    );
    Ok((float(h), float(y), (int(ids), float(w))))
}

/// The reference in plain Burn ops (also the CPU path).
pub fn reference(
    x: Tensor<2>,
    branch: Option<(Tensor<2>, f32, f32)>,
    weight: &Tensor<1>,
    eps: f32,
) -> (Tensor<2>, Tensor<2>) {
    let h = match branch {
        Some((b, alpha, beta)) => x.mul_scalar(alpha) + b.mul_scalar(beta),
        None => x,
    };
    let inv = (h.clone().square().mean_dim(1) + eps).sqrt().recip();
    let y = (h.clone() * inv) * weight.clone().unsqueeze_dim::<2>(0);
    (h, y)
}

pub(super) fn launch(x: CubeTensor, branch: CubeTensor, weight: CubeTensor, p: Params) -> (CubeTensor, CubeTensor) {
    // The router's bindings are declared either way: one-element placeholders.
    let router = empty(&x, [1], DType::F32);
    let (h, y, _, _) = launch_route(x, branch, weight, router, p, 1);
    (h, y)
}

/// The norm, then the router when `p.experts > 0`: `(h, y, ids, weights)`.
pub(super) fn launch_route(
    x: CubeTensor,
    branch: CubeTensor,
    weight: CubeTensor,
    router: CubeTensor,
    p: Params,
    top_k: u32,
) -> (CubeTensor, CubeTensor, CubeTensor, CubeTensor) {
    let shape = dims(&x);
    let route = p.experts > 0;
    let (x, xb) = bind(x);
    let (_branch, bb) = bind(branch);
    let (_weight, wb) = bind(weight);
    let (_router, rb) = bind(router);
    let h = empty(&x, shape.clone(), DType::F32);
    let y = empty(&x, shape, DType::F32);
    let out = if route { [p.rows as usize, top_k as usize] } else { [1, 1] };
    let ids = empty(&x, out, DType::I32);
    let w = empty(&x, out, DType::F32);
    // A routing workgroup reads the whole router: as many threads as the adapter allows keep
    // the most loads in flight (1024 on desktop GPUs; WebGPU's default is 256).
    let workgroup = if route { crate::device::max_workgroup_threads().clamp(WORKGROUP, 1024) } else { WORKGROUP };
    let experts = (p.experts as usize).max(1);
    let threads_per_expert = (workgroup as usize / experts.next_power_of_two()).max(1);
    let kernel = Wgsl::new("rms_norm", concat!(include_str!("../../../shaders/topk.wgsl"), include_str!("../../../shaders/rms_norm.wgsl")))
        .with("workgroup", workgroup)
        .with("route", route)
        .with("top_k", top_k)
        .with("threads_per_expert", threads_per_expert)
        .with("experts", experts);
    dispatch(
        &x,
        kernel,
        workgroup,
        grid(p.rows),
        vec![
            xb,
            bb,
            wb,
            h.handle.clone().binding(),
            y.handle.clone().binding(),
            rb,
            ids.handle.clone().binding(),
            w.handle.clone().binding(),
        ],
        params(&p),
    );
    (h, y, ids, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::Device;

    #[test]
    fn matches_reference_on_odd_shapes() {
        let Some(device) = gpu() else { return };
        for (i, &(rows, cols)) in [(1, 7), (5, 64), (3, 333), (17, 1000), (2, 6149)].iter().enumerate() {
            let seed = i as u64 * 3;
            let x = random(seed, [rows, cols], 2.0, &device);
            let b = random(seed + 1, [rows, cols], 2.0, &device);
            let w = random(seed + 2, [cols], 1.0, &device);
            for branch in [None, Some((b.clone(), 1.7f32, 0.6f32))] {
                let (h, y) = rms_norm(x.clone(), branch.clone(), &w, 1e-5).unwrap();
                let (rh, ry) = reference(x.clone(), branch, &w, 1e-5);
                let (dh, _) = diff(h, rh);
                let (dy, ry_rel) = diff(y, ry);
                assert!(dh < 1e-6 && dy < 1e-5, "[{rows},{cols}]: h {dh} y {dy} rel {ry_rel}");
            }
        }
    }

    /// The fused routing against the norm, the router's matmul and `moe_route`'s reference,
    /// for expert counts below, at and above a power of two and rows up to the maximum. The
    /// logits are spread apart so that summation order cannot flip a choice.
    #[test]
    fn route_matches_norm_then_router() {
        let Some(device) = gpu() else { return };
        for (i, &(rows, cols, experts, k)) in [(1, 64, 8, 2), (3, 333, 16, 2), (1, 4096, 32, 2), (8, 1000, 5, 3), (2, 6149, 64, 4)].iter().enumerate() {
            let seed = 40 + i as u64 * 5;
            let x = random(seed, [rows, cols], 2.0, &device);
            let b = random(seed + 1, [rows, cols], 2.0, &device);
            let w = random(seed + 2, [cols], 1.0, &device);
            let router = random(seed + 3, [experts, cols], 0.5, &device);
            for branch in [None, Some((b.clone(), 1.7f32, 0.6f32))] {
                let (h, y, (ids, rw)) = rms_norm_route(x.clone(), branch.clone(), &w, 1e-5, &router, k).unwrap();
                let (rh, ry) = reference(x.clone(), branch, &w, 1e-5);
                let (rids, rrw) = super::super::moe_route::reference(ry.clone().matmul(router.clone().transpose()), k);
                let (dh, _) = diff(h, rh);
                let (dy, _) = diff(y, ry);
                assert!(dh < 1e-6 && dy < 1e-5, "[{rows},{cols}]: h {dh} y {dy}");
                let ids = ids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
                let rids = rids.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
                assert_eq!(ids, rids, "[{rows},{cols}] E{experts} k{k}");
                let (dw, _) = diff(rw, rrw);
                assert!(dw < 1e-5, "[{rows},{cols}] E{experts}: weights {dw}");
            }
        }
    }

    #[test]
    fn reference_normalises_rows() {
        let device = Device::flex();
        let x = random(9, [4, 32], 3.0, &device);
        let w = Tensor::<1>::ones([32], &device);
        let (_, y) = reference(x, None, &w, 0.0);
        let ms = y.square().mean_dim(1).into_data().try_to_vec::<f32>().unwrap();
        for m in ms {
            assert!((m - 1.0).abs() < 1e-4, "mean square {m}");
        }
    }

    #[test]
    fn rejects_bad_weight() {
        let device = Device::flex();
        let x = random(1, [2, 8], 1.0, &device);
        let w = Tensor::<1>::ones([9], &device);
        assert!(rms_norm(x, None, &w, 1e-5).is_err());
    }
}
