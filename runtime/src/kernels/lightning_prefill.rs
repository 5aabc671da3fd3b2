//! `lightning_prefill`: blocked lightning attention with the state carried in and out.
//!
//! Per head, `S_t = λ S_{t-1} + k_tᵀ v_t` and `o_t = q_t S_t` with `λ = exp(-s_h)`. Prefill
//! splits the tokens into blocks: within a block the outputs are a masked-decay product
//! `((Q Kᵀ) ⊙ M) V` plus the inter-block term `(λ^(i+1) Q) S0`, and the state advances once
//! per block. [`lightning_decode`](super::lightning_decode) is the one-token recurrence; both
//! share [`reference`].

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::launch::{Wgsl, bind, empty, dispatch, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/lightning_prefill.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub heads: u32,
    pub col_tiles: u32,
    pub _pad: u32,
}

/// Workgroup memory WebGPU guarantees; the tiling is sized to fit it everywhere.
const WORKGROUP_BYTES: usize = 16 * 1024;
/// Invocations per workgroup WebGPU guarantees.
const MAX_INVOCATIONS: usize = 256;

/// The typed key of a kernel variant: head dim, block and column tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub head_dim: usize,
    pub block: usize,
    pub cols: usize,
}

impl Tiling {
    /// The widest column tile such that `block * cols` invocations and the workgroup arrays
    /// (state tile, scores, value block, decays) fit WebGPU's guaranteed limits.
    pub fn new(head_dim: usize, block: usize) -> Result<Self, KernelError> {
        let err = |reason: String| KernelError::Shape {
            kernel: "lightning_prefill",
            reason,
        };
        if block == 0 || block > MAX_INVOCATIONS {
            return Err(err(format!("block {block} must be in 1..={MAX_INVOCATIONS}")));
        }
        let bytes = |cols: usize| 4 * (head_dim * cols + block * block + block * cols + block + 2);
        let mut cols = (MAX_INVOCATIONS / block).min(head_dim).max(1);
        while cols > 1 && bytes(cols) > WORKGROUP_BYTES {
            cols -= 1;
        }
        if bytes(cols) > WORKGROUP_BYTES {
            return Err(err(format!(
                "block {block} with head_dim {head_dim} needs {} bytes of workgroup memory (> {WORKGROUP_BYTES})",
                bytes(cols)
            )));
        }
        Ok(Self {
            head_dim,
            block,
            cols,
        })
    }
}

/// Shape checks shared by prefill and decode. Returns `(T, H, D)`.
pub(super) fn check(
    kernel: &'static str,
    qkv: &Tensor<2>,
    state: &Tensor<3>,
    rates: &Tensor<1>,
) -> Result<(usize, usize, usize), KernelError> {
    let [h, d, d2] = state.dims();
    let [t, width] = qkv.dims();
    let err = |reason: String| KernelError::Shape { kernel, reason };
    if d != d2 {
        return Err(err(format!("state {:?} is not [H, D, D]", state.dims())));
    }
    if width != 3 * h * d {
        return Err(err(format!("qkv width {width} != 3 * {h} heads * {d}")));
    }
    if rates.dims() != [h] {
        return Err(err(format!("rates {:?} for {h} heads", rates.dims())));
    }
    if state.dtype() != DType::F32 {
        return Err(err(format!("state must be f32, is {:?}", state.dtype())));
    }
    if t == 0 {
        return Err(err("no tokens".into()));
    }
    Ok((t, h, d))
}

/// Blocked lightning attention.
///
/// # Shapes
/// - `qkv`: `[T, H * 3 * D]`, per head `q | k | v` (after SiLU);
/// - `state`: `[H, D, D]` f32; `rates`: `[H]` (λ = exp(-rate));
/// - returns `(o [T, H * D], state' [H, D, D])`.
pub fn lightning_prefill(
    qkv: Tensor<2>,
    state: Tensor<3>,
    rates: &Tensor<1>,
    block: usize,
) -> Result<(Tensor<2>, Tensor<3>), KernelError> {
    let (_, _, d) = check("lightning_prefill", &qkv, &state, rates)?;
    if block == 0 {
        return Err(KernelError::Shape {
            kernel: "lightning_prefill",
            reason: "block must be positive".into(),
        });
    }
    if !uses_wgsl(&qkv.device()) {
        return Ok(reference(qkv, state, rates, block));
    }
    Tiling::new(d, block)?;
    let (o, s) = Dispatch::lightning_prefill(
        qkv.into_dispatch(),
        state.into_dispatch(),
        rates.clone().into_dispatch(),
        block as u32,
    );
    Ok((float(o), float(s)))
}

/// `λ^e` for each head and each exponent in `exps`: `[H, len(exps)]`.
fn powers(rates: &Tensor<1>, exps: Vec<f32>) -> Tensor<2> {
    let n = exps.len();
    let e = Tensor::<1>::from_data(TensorData::new(exps, [n]), &rates.device());
    (rates.clone().unsqueeze_dim::<2>(1) * e.unsqueeze_dim::<2>(0)).neg().exp()
}

/// The reference in plain Burn ops, blocked exactly like the original model (also the CPU
/// path). `block = 1` is the token-by-token recurrence.
pub fn reference(qkv: Tensor<2>, state: Tensor<3>, rates: &Tensor<1>, block: usize) -> (Tensor<2>, Tensor<3>) {
    let [h, d, _] = state.dims();
    let [t, _] = qkv.dims();
    let device = qkv.device();
    // [T, H, 3D] -> three [H, T, D]
    let qkv = qkv.reshape([t, h, 3 * d]).swap_dims(0, 1);
    let q = qkv.clone().narrow(2, 0, d);
    let k = qkv.clone().narrow(2, d, d);
    let v = qkv.narrow(2, 2 * d, d);

    let mut s = state;
    let mut outputs = Vec::new();
    let mut t0 = 0;
    while t0 < t {
        let n = block.min(t - t0);
        let qb = q.clone().narrow(1, t0, n);
        let kb = k.clone().narrow(1, t0, n);
        let vb = v.clone().narrow(1, t0, n);
        let q_decay = powers(rates, (1..=n).map(|i| i as f32).collect()).unsqueeze_dim::<3>(2);
        let k_decay = powers(rates, (0..n).rev().map(|i| i as f32).collect()).unsqueeze_dim::<3>(2);
        let block_decay = powers(rates, vec![n as f32]).unsqueeze_dim::<3>(2);
        // M[h, i, j] = λ_h^(i-j) for j <= i, else 0.
        let dist: Vec<f32> = (0..n)
            .flat_map(|i| (0..n).map(move |j| i as f32 - j as f32))
            .collect();
        let dist = Tensor::<2>::from_data(TensorData::new(dist, [n, n]), &device);
        let mask = Tensor::<2, Int>::ones([n, n], &device).tril(0).equal_elem(0);
        let m = (rates.clone().reshape([h, 1, 1]) * dist.unsqueeze_dim::<3>(0).neg())
            .exp()
            .mask_fill(mask.unsqueeze_dim::<3>(0).expand([h, n, n]), 0.0);
        let intra = (qb.clone().matmul(kb.clone().swap_dims(1, 2)) * m).matmul(vb.clone());
        let inter = (qb * q_decay).matmul(s.clone());
        outputs.push(intra + inter);
        s = s * block_decay + (kb * k_decay).swap_dims(1, 2).matmul(vb);
        t0 += n;
    }
    let o = Tensor::cat(outputs, 1).swap_dims(0, 1).reshape([t, h * d]);
    (o, s)
}

pub(super) fn launch(qkv: CubeTensor, state: CubeTensor, rates: CubeTensor, block: u32) -> (CubeTensor, CubeTensor) {
    let [h, d, _]: [usize; 3] = state.meta.shape().iter().copied().collect::<Vec<_>>().try_into().unwrap();
    let t = qkv.meta.shape()[0];
    let tiling = Tiling::new(d, block as usize).expect("checked by lightning_prefill");
    let col_tiles = d.div_ceil(tiling.cols);
    let workgroup = (tiling.block * tiling.cols) as u32;
    let (qkv, qb) = bind(qkv);
    let (_state, sb) = bind(state);
    let (_rates, rb) = bind(rates);
    let out = empty(&qkv, [t, h * d], DType::F32);
    let state_out = empty(&qkv, [h, d, d], DType::F32);
    let p = Params {
        tokens: t as u32,
        heads: h as u32,
        col_tiles: col_tiles as u32,
        _pad: 0,
    };
    let kernel = Wgsl::new("lightning_prefill", include_str!("../../../shaders/lightning_prefill.wgsl"))
        .with("head_dim", d)
        .with("block", tiling.block)
        .with("cols", tiling.cols)
        .with("workgroup", workgroup);
    dispatch(
        &qkv,
        kernel,
        workgroup,
        cubecl::CubeCount::Static((h * col_tiles) as u32, 1, 1),
        vec![
            qb,
            sb,
            rb,
            out.handle.clone().binding(),
            state_out.handle.clone().binding(),
        ],
        params(&p),
    );
    (out, state_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::Device;

    fn inputs(seed: u64, t: usize, h: usize, d: usize, device: &Device) -> (Tensor<2>, Tensor<3>, Tensor<1>) {
        // SiLU outputs are mostly positive and O(1); random signs keep the test general.
        let qkv = random(seed, [t, 3 * h * d], 1.0, device);
        let state = random(seed + 1, [h, d, d], 1.0, device);
        let rates: Vec<f32> = (0..h).map(|i| 0.5f32.powi(i as i32 + 1)).collect();
        (qkv, state, Tensor::from_data(TensorData::new(rates, [h]), device))
    }

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, &(t, h, d, block)) in [(1, 1, 4, 16), (7, 2, 16, 4), (40, 4, 16, 16), (33, 3, 20, 7), (70, 2, 64, 32)]
            .iter()
            .enumerate()
        {
            let (qkv, state, rates) = inputs(i as u64 * 10, t, h, d, &device);
            let (o, s) = lightning_prefill(qkv.clone(), state.clone(), &rates, block).unwrap();
            let (ro, rs) = reference(qkv, state, &rates, block);
            let (eo, _) = diff(o, ro);
            let (es, _) = diff(s, rs);
            assert!(eo < 1e-3 && es < 1e-3, "T{t} H{h} D{d} B{block}: o {eo} state {es}");
        }
    }

    #[test]
    fn blocking_does_not_change_the_math() {
        let device = Device::flex();
        let (qkv, state, rates) = inputs(5, 37, 2, 8, &device);
        let (o1, s1) = reference(qkv.clone(), state.clone(), &rates, 1);
        for block in [4, 16, 64] {
            let (o, s) = reference(qkv.clone(), state.clone(), &rates, block);
            let (eo, _) = diff(o, o1.clone());
            let (es, _) = diff(s, s1.clone());
            assert!(eo < 1e-4 && es < 1e-4, "block {block}: {eo} {es}");
        }
    }

    #[test]
    fn tiling_fits_webgpu_limits() {
        for d in [16, 64, 128, 256] {
            for block in [1, 16, 32] {
                let t = Tiling::new(d, block).unwrap();
                assert!(t.block * t.cols <= MAX_INVOCATIONS);
            }
        }
        assert!(Tiling::new(128, 0).is_err());
        assert!(Tiling::new(128, 128).is_err(), "128x128 scores alone exceed 16 KiB");
    }
}
