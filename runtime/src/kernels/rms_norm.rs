//! `rms_norm`: RMSNorm fused with the residual combine before it.
//!
//! `h = alpha * x + beta * branch` (or `h = x` without a branch), then
//! `y = weight * h / sqrt(mean(h²) + eps)` per row. Returns `(h, y)`.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Tensor};

use super::launch::{Wgsl, bind, dims, empty, grid, dispatch, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/rms_norm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub has_branch: u32,
    pub _pad: u32,
    pub alpha: f32,
    pub beta: f32,
    pub eps: f32,
    pub _pad2: f32,
}

const WORKGROUP: u32 = 256;

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
        _pad: 0,
        alpha,
        beta,
        eps,
        _pad2: 0.0,
    };
    let (h, y) = Dispatch::rms_norm(
        x.into_dispatch(),
        b.into_dispatch(),
        weight.clone().into_dispatch(),
        p,
    );
    Ok((float(h), float(y)))
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

pub(super) fn launch(
    x: CubeTensor,
    branch: CubeTensor,
    weight: CubeTensor,
    p: Params,
) -> (CubeTensor, CubeTensor) {
    let shape = dims(&x);
    let (x, xb) = bind(x);
    let (_branch, bb) = bind(branch);
    let (_weight, wb) = bind(weight);
    let h = empty(&x, shape.clone(), DType::F32);
    let y = empty(&x, shape, DType::F32);
    let kernel = Wgsl::new("rms_norm", include_str!("../../../shaders/rms_norm.wgsl"))
        .with("workgroup", WORKGROUP);
    dispatch(
        &x,
        kernel,
        WORKGROUP,
        grid(p.rows),
        vec![
            xb,
            bb,
            wb,
            h.handle.clone().binding(),
            y.handle.clone().binding(),
        ],
        params(&p),
    );
    (h, y)
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
