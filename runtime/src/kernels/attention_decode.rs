//! `attention_decode`: one query per head over the whole KV cache, split-K. Each split
//! computes a partial softmax over its keys, `CHUNK` at a time; a second phase merges them.
//! Its reference
//! is the one-query case of [`attention_prefill::reference`](super::attention_prefill::reference).

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor};

use super::attention_prefill::check;
use super::launch::{Wgsl, bind, empty, dispatch, params};
use super::{Kernels, float, no_position, position_on_host, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/attention_decode.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub len: u32,
    pub q_heads: u32,
    pub kv_heads: u32,
    pub splits: u32,
    pub scale: f32,
    pub dynamic: u32,
    /// Chunks of `CHUNK` keys per split.
    pub split_chunks: u32,
    pub _pad: u32,
}

/// Keys per step of a split (the shader's `scores`): small, so that each step's loops over
/// keys are short, with `WORKGROUP / CHUNK` threads per key for the scores.
const CHUNK: usize = 32;
const WORKGROUP: usize = 128;
/// At most this many splits per head (more chunks go to each split): enough workgroups to
/// fill a large GPU with a few heads, and partials that stay small however long the cache.
const MAX_SPLITS: usize = 64;

/// Attention of one new query over all `len` cached positions (its own included).
///
/// # Shapes
/// - `q`: `[1, Hq, D]`; `k`, `v`: `[len, Hkv, D]`;
/// - returns `[1, Hq * D]`.
pub fn attention_decode(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Result<Tensor<2>, KernelError> {
    let len = k.dims()[0];
    attention_decode_prefix(q, k, v, len)
}

/// [`attention_decode`] over the first `len` positions of `k` and `v`, which may hold more
/// (a KV cache's whole capacity): the kernel reads only those rows, where a view of them would
/// be copied to a new buffer first, an O(context) copy per decoded token.
///
/// # Shapes
/// - `q`: `[1, Hq, D]`; `k`, `v`: `[capacity, Hkv, D]` with `1 ≤ len ≤ capacity`.
pub fn attention_decode_prefix(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, len: usize) -> Result<Tensor<2>, KernelError> {
    attention_decode_launch(q, k, v, Len::Host(len))
}

/// [`attention_decode_prefix`] with the length read on the device, `pos[0] + 1` (a decode
/// step replayed from a graph, whose query is at position `pos[0]`). The work is laid out for
/// the whole capacity; the caller keeps the length within it.
///
/// # Shapes
/// - `q`: `[1, Hq, D]`; `k`, `v`: `[capacity, Hkv, D]`; `pos`: `[1]`.
pub fn attention_decode_at(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, pos: &Tensor<1, Int>) -> Result<Tensor<2>, KernelError> {
    attention_decode_launch(q, k, v, Len::Device(pos))
}

enum Len<'a> {
    Host(usize),
    Device(&'a Tensor<1, Int>),
}

fn attention_decode_launch(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, len: Len<'_>) -> Result<Tensor<2>, KernelError> {
    let (t, _, _, _, capacity) = check("attention_decode", &q, &k, &v)?;
    let (len, pos) = match len {
        Len::Host(len) => (len, None),
        Len::Device(pos) => (capacity, Some(pos.clone())),
    };
    if len == 0 || len > capacity {
        return Err(KernelError::Shape {
            kernel: "attention_decode",
            reason: format!("{len} positions of a cache of {capacity}"),
        });
    }
    if t != 1 {
        return Err(KernelError::Shape {
            kernel: "attention_decode",
            reason: format!("decode takes one query, got {t}"),
        });
    }
    if !uses_wgsl(&q.device()) {
        // The reference reads a device length back: only tests run a device step here.
        let len = match &pos {
            None => len,
            Some(pos) => position_on_host(pos) + 1,
        };
        return Ok(reference(q, k.narrow(0, 0, len), v.narrow(0, 0, len)));
    }
    let dynamic = pos.is_some();
    let pos = pos.unwrap_or_else(|| no_position(&q.device()));
    Ok(float(Dispatch::attention_decode(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        pos.into_dispatch(),
        len as u32,
        dynamic,
    )))
}

/// The reference: causal attention of the last position.
pub fn reference(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<2> {
    let past = k.dims()[0] - 1;
    super::attention_prefill::reference(q, k, v, past)
}

pub(super) fn launch(q: CubeTensor, k: CubeTensor, v: CubeTensor, pos: CubeTensor, len: u32, dynamic: bool) -> CubeTensor {
    let (hq, d) = (q.meta.shape()[1], q.meta.shape()[2]);
    let hkv = k.meta.shape()[1];
    assert!(d <= 2 * WORKGROUP, "attention_decode takes heads of up to {} dimensions", 2 * WORKGROUP);
    let chunks = (len as usize).div_ceil(CHUNK);
    let split_chunks = chunks.div_ceil(MAX_SPLITS).max(1);
    let splits = chunks.div_ceil(split_chunks);
    let (q, qb) = bind(q);
    let (_k, kb) = bind(k);
    let (_v, vb) = bind(v);
    let (_pos, pb) = bind(pos);
    let partials = empty(&q, [hq, splits, d + 2], DType::F32);
    let out = empty(&q, [1, hq * d], DType::F32);
    let p = Params {
        len,
        q_heads: hq as u32,
        kv_heads: hkv as u32,
        splits: splits as u32,
        scale: 1.0 / (d as f32).sqrt(),
        dynamic: dynamic as u32,
        split_chunks: split_chunks as u32,
        _pad: 0,
    };
    for (phase, count) in [
        (1, cubecl::CubeCount::Static(hq as u32, splits as u32, 1)),
        (2, cubecl::CubeCount::Static(hq as u32, 1, 1)),
    ] {
        let kernel = Wgsl::new("attention_decode", include_str!("../../../shaders/attention_decode.wgsl"))
            .with("head_dim", d)
            .with("chunk", CHUNK)
            .with("workgroup", WORKGROUP)
            .with("phase", phase);
        dispatch(
            &q,
            kernel,
            WORKGROUP as u32,
            count,
            vec![
                qb.clone(),
                kb.clone(),
                vb.clone(),
                partials.handle.clone().binding(),
                out.handle.clone().binding(),
                pb.clone(),
            ],
            params(&p),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};

    #[test]
    fn kernel_matches_reference_with_splits() {
        let Some(device) = gpu() else { return };
        // Cache lengths below, at and well beyond one chunk, splits of several chunks (past
        // MAX_SPLITS chunks), and heads wider than the workgroup.
        for (i, &(len, hq, hkv, d)) in
            [(1, 1, 1, 4), (37, 4, 2, 16), (256, 6, 3, 20), (1000, 8, 2, 128), (4133, 2, 1, 64), (70, 2, 2, 200)]
            .iter()
            .enumerate()
        {
            let s = i as u64 * 11;
            let q = random(s, [1, hq, d], 1.0, &device);
            let k = random(s + 1, [len, hkv, d], 1.0, &device);
            let v = random(s + 2, [len, hkv, d], 1.0, &device);
            let o = attention_decode(q.clone(), k.clone(), v.clone()).unwrap();
            let r = reference(q, k, v);
            let (e, _) = diff(o, r);
            assert!(e < 1e-5, "len{len} Hq{hq} Hkv{hkv} D{d}: {e}");
        }
    }

    #[test]
    fn length_read_on_the_device_covers_the_prefix() {
        let Some(device) = gpu() else { return };
        // A cache of 700 rows of which the first 300 (position 299) are valid: most splits of
        // the grid lie past the length; and one of 5000 rows (splits of several chunks).
        for (capacity, len, hq, hkv, d) in [(700, 300, 4, 2, 32), (5000, 2100, 2, 1, 64)] {
            let q = random(1, [1, hq, d], 1.0, &device);
            let k = random(2, [capacity, hkv, d], 1.0, &device);
            let v = random(3, [capacity, hkv, d], 1.0, &device);
            let pos = crate::kernels::testing::ints(&[len as i32 - 1], &device);
            let o = attention_decode_at(q.clone(), k.clone(), v.clone(), &pos).unwrap();
            let r = reference(q, k.narrow(0, 0, len), v.narrow(0, 0, len));
            let (e, _) = diff(o, r);
            assert!(e < 1e-5, "{len} of {capacity}: {e}");
        }
    }
}
