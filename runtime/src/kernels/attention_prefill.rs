//! `attention_prefill`: causal softmax attention of T new queries over the KV cache (GQA),
//! tiled with an online softmax. Query `i` is at position `past + i` and attends keys
//! `0..=past + i`; the scale is `1/sqrt(D)`.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Tensor};

use super::launch::{Wgsl, bind, empty, dispatch, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/attention_prefill.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub tokens: u32,
    pub past: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub scale: f32,
    pub _pad: [u32; 3],
}

/// Query rows per workgroup.
const ROWS: usize = 16;
const WORKGROUP_BYTES: usize = 16 * 1024;

/// Keys per tile: the largest power of two up to 16 whose tiles fit WebGPU's guaranteed
/// 16 KiB of workgroup memory (query tile + one K/V tile + probabilities).
fn keys_per_tile(head_dim: usize) -> Result<usize, KernelError> {
    let bytes = |keys: usize| 4 * (ROWS * head_dim + keys * head_dim + ROWS * keys + 3 * ROWS + 1);
    [16, 8, 4, 2, 1]
        .into_iter()
        .find(|&k| bytes(k) <= WORKGROUP_BYTES)
        .ok_or_else(|| KernelError::Shape {
            kernel: "attention_prefill",
            reason: format!("head_dim {head_dim} does not fit 16 KiB of workgroup memory"),
        })
}

/// Shape checks shared with decode. Returns `(T, Hq, Hkv, D, L)`.
pub(super) fn check(
    kernel: &'static str,
    q: &Tensor<3>,
    k: &Tensor<3>,
    v: &Tensor<3>,
) -> Result<(usize, usize, usize, usize, usize), KernelError> {
    let [t, hq, d] = q.dims();
    let [l, hkv, dk] = k.dims();
    let err = |reason: String| KernelError::Shape { kernel, reason };
    if v.dims() != k.dims() {
        return Err(err(format!("k {:?} and v {:?} differ", k.dims(), v.dims())));
    }
    if dk != d || hkv == 0 || hq % hkv != 0 {
        return Err(err(format!("q {:?} does not group over k {:?}", q.dims(), k.dims())));
    }
    if t == 0 || l < t {
        return Err(err(format!("{t} queries over {l} cached positions")));
    }
    Ok((t, hq, hkv, d, l))
}

/// Causal attention of the last `T` positions of the cache.
///
/// # Shapes
/// - `q`: `[T, Hq, D]` (RoPE applied); `k`, `v`: `[past + T, Hkv, D]`, the cache including the
///   new tokens;
/// - returns `[T, Hq * D]`.
pub fn attention_prefill(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Result<Tensor<2>, KernelError> {
    let len = k.dims()[0];
    attention_prefill_prefix(q, k, v, len)
}

/// [`attention_prefill`] over the first `len` positions of `k` and `v`, which may hold more
/// (a KV cache's whole capacity): the kernel reads only keys `0..len`, where a view of them
/// would be copied to a new buffer first, an O(context) copy per prompt chunk.
///
/// # Shapes
/// `k`, `v`: `[capacity, Hkv, D]` with `T ≤ len ≤ capacity`; the rest as [`attention_prefill`].
pub fn attention_prefill_prefix(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, len: usize) -> Result<Tensor<2>, KernelError> {
    let (t, _, _, d, capacity) = check("attention_prefill", &q, &k, &v)?;
    if len < t || len > capacity {
        return Err(KernelError::Shape {
            kernel: "attention_prefill",
            reason: format!("{t} queries ending at position {len} of a cache of {capacity}"),
        });
    }
    keys_per_tile(d)?;
    let past = len - t;
    if !uses_wgsl(&q.device()) {
        return Ok(reference(q, k.narrow(0, 0, len), v.narrow(0, 0, len), past));
    }
    Ok(float(Dispatch::attention_prefill(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        past as u32,
    )))
}

/// The reference in plain Burn ops (also the CPU path): masked scores, softmax, weighted sum.
pub fn reference(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, past: usize) -> Tensor<2> {
    let [t, hq, d] = q.dims();
    let [l, hkv, _] = k.dims();
    let group = hq / hkv;
    // [Hkv, L, D] repeated per query head in the group -> [Hq, L, D]
    let expand = |x: Tensor<3>| {
        x.swap_dims(0, 1)
            .unsqueeze_dim::<4>(1)
            .expand([hkv, group, l, d])
            .reshape([hq, l, d])
    };
    let (k, v) = (expand(k), expand(v));
    let q = q.swap_dims(0, 1); // [Hq, T, D]
    let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(1.0 / (d as f32).sqrt()); // [Hq, T, L]
    // Key j is hidden from query i when j > past + i.
    let mask = burn::tensor::Tensor::<2, burn::tensor::Int>::ones([t, l], &scores.device())
        .triu(past as i64 + 1)
        .equal_elem(1)
        .unsqueeze_dim::<3>(0)
        .expand([hq, t, l]);
    let probs = burn::tensor::activation::softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 2);
    probs.matmul(v).swap_dims(0, 1).reshape([t, hq * d])
}

pub(super) fn launch(q: CubeTensor, k: CubeTensor, v: CubeTensor, past: u32) -> CubeTensor {
    let (t, hq, d) = (q.meta.shape()[0], q.meta.shape()[1], q.meta.shape()[2]);
    let hkv = k.meta.shape()[1];
    let keys = keys_per_tile(d).expect("checked by attention_prefill");
    let (q, qb) = bind(q);
    let (_k, kb) = bind(k);
    let (_v, vb) = bind(v);
    let out = empty(&q, [t, hq * d], DType::F32);
    let p = Params {
        tokens: t as u32,
        past,
        q_heads: hq as u32,
        kv_heads: hkv as u32,
        scale: 1.0 / (d as f32).sqrt(),
        _pad: [0; 3],
    };
    let kernel = Wgsl::new("attention_prefill", include_str!("../../../shaders/attention_prefill.wgsl"))
        .with("head_dim", d)
        .with("rows", ROWS)
        .with("keys", keys);
    dispatch(
        &q,
        kernel,
        (ROWS * keys) as u32,
        cubecl::CubeCount::Static(t.div_ceil(ROWS) as u32, hq as u32, 1),
        vec![qb, kb, vb, out.handle.clone().binding()], params(&p),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::Device;

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // (T, past, Hq, Hkv, D): single token, odd sizes, GQA, a long cache.
        for (i, &(t, past, hq, hkv, d)) in
            [(1, 0, 1, 1, 4), (7, 0, 4, 2, 16), (23, 5, 6, 2, 20), (40, 0, 4, 2, 16), (17, 100, 8, 8, 128)]
                .iter()
                .enumerate()
        {
            let s = i as u64 * 5;
            let q = random(s, [t, hq, d], 1.0, &device);
            let k = random(s + 1, [past + t, hkv, d], 1.0, &device);
            let v = random(s + 2, [past + t, hkv, d], 1.0, &device);
            let o = attention_prefill(q.clone(), k.clone(), v.clone()).unwrap();
            let r = reference(q.clone(), k.clone(), v.clone(), past);
            let (e, _) = diff(o, r.clone());
            assert!(e < 1e-5, "T{t} past{past} Hq{hq} Hkv{hkv} D{d}: {e}");
            // The same keys at the start of larger buffers (a cache's capacity, the rest
            // garbage) give the same rows.
            let spare = 13;
            let (kx, vx) = (random(s + 3, [spare, hkv, d], 9.0, &device), random(s + 4, [spare, hkv, d], 9.0, &device));
            let (k, v) = (Tensor::cat(vec![k, kx], 0), Tensor::cat(vec![v, vx], 0));
            let o = attention_prefill_prefix(q, k, v, past + t).unwrap();
            let (e, _) = diff(o, r);
            assert!(e < 1e-5, "prefix: T{t} past{past} Hq{hq} Hkv{hkv} D{d}: {e}");
        }
    }

    #[test]
    fn reference_is_causal() {
        let device = Device::flex();
        let (t, h, d) = (5, 2, 8);
        let q = random(1, [t, h, d], 1.0, &device);
        let k = random(2, [t, h, d], 1.0, &device);
        let v = random(3, [t, h, d], 1.0, &device);
        let full = reference(q.clone(), k.clone(), v.clone(), 0);
        // Row 2 only sees keys 0..=2: truncating the cache after it must not change it.
        let part = reference(q.narrow(0, 2, 1), k.narrow(0, 0, 3), v.narrow(0, 0, 3), 2);
        let (e, _) = diff(full.narrow(0, 2, 1), part);
        assert!(e < 1e-6, "{e}");
    }
}
