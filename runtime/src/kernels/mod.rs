//! Hand-written WGSL kernels and their references.
//!
//! One kernel is one file in `shaders/` plus one module here of the same name. Each module
//! holds the `#[repr(C)]` params struct mirrored in WGSL, the shape checks, the launch on
//! burn-wgpu tensors, and the reference in plain Burn ops. The public function of a module
//! dispatches: on a wgpu device it launches the WGSL kernel through the [`Kernels`] backend
//! extension; on any other backend (Flex on the CPU) it runs the reference.

pub mod argmax;
pub mod attention_decode;
pub mod attention_prefill;
pub mod decode_step;
pub mod kv_append;
pub mod lightning_decode;
pub mod lightning_prefill;
pub mod moe_gather;
pub mod moe_route;
pub mod moe_scatter;
pub mod qgemm;
pub mod qgemm_coop;
pub mod qgemv;
pub mod rms_norm;
pub mod rope;
pub mod stream_read;
pub mod graph;

mod launch;
#[cfg(test)]
mod params_tests;

use burn::backend::{
    Dispatch, DispatchDevice, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{Device, Int, Tensor};

/// Whether tensors on `device` run our WGSL kernels (any cubecl device: the crate enables only
/// the wgpu runtime) rather than the references.
pub fn uses_wgsl(device: &Device) -> bool {
    matches!(device.as_dispatch(), DispatchDevice::Cube(_))
}

/// A step's position `[1]` kept on the device (a decode step replayed from a graph), read back:
/// the references of the kernels that take one do so, which only tests exercise.
pub(crate) fn position_on_host(pos: &Tensor<1, Int>) -> usize {
    pos.clone().into_data().convert::<i64>().try_to_vec::<i64>().expect("an int position")[0] as usize
}

/// The unread position a kernel that can take one on the device binds when given it by the
/// host instead.
pub(crate) fn no_position(device: &Device) -> Tensor<1, Int> {
    Tensor::empty([1], device)
}

/// The model-level ops that have a WGSL implementation. Called only on cubecl (wgpu) devices;
/// see each module for the math and shapes.
#[backend_extension(Cube)]
pub trait Kernels: burn::backend::Backend {
    fn rms_norm(
        x: FloatTensor<Self>,
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        params: rms_norm::Params,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn rms_norm_route(
        x: FloatTensor<Self>,
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        router: FloatTensor<Self>,
        params: rms_norm::Params,
        top_k: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, IntTensor<Self>, FloatTensor<Self>);

    fn lightning_prefill(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        block: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn lightning_decode(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn lightning_decode_in_place(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        backup: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    fn attention_prefill(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        past: u32,
    ) -> FloatTensor<Self>;

    fn attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pos: IntTensor<Self>,
        len: u32,
        dynamic: bool,
    ) -> FloatTensor<Self>;

    fn kv_append(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pos: IntTensor<Self>,
        params: kv_append::Params,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    fn decode_step(chosen: IntTensor<Self>, ids: IntTensor<Self>, pos: IntTensor<Self>) -> IntTensor<Self>;

    fn moe_route(logits: FloatTensor<Self>, top_k: u32) -> (IntTensor<Self>, FloatTensor<Self>);

    fn moe_gather(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        num_experts: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>, IntTensor<Self>);

    fn moe_scatter(
        ys: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        positions: IntTensor<Self>,
    ) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
    fn qgemv(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        table: IntTensor<Self>,
        pool: IntTensor<Self>,
        y: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        params: qgemv::Params,
        variant: qgemv::Variant,
        launch: qgemv::Launch,
        fuse: qgemv::Fuse,
    ) -> FloatTensor<Self>;

    /// `qgemv` over a float weight tensor (a linear layer) instead of a pool of words.
    #[allow(clippy::too_many_arguments)]
    fn qgemv_float(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        table: IntTensor<Self>,
        weight: FloatTensor<Self>,
        y: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        params: qgemv::Params,
        variant: qgemv::Variant,
        launch: qgemv::Launch,
        fuse: qgemv::Fuse,
    ) -> FloatTensor<Self>;

    #[allow(clippy::too_many_arguments)]
    fn qgemm(
        x: FloatTensor<Self>,
        pool: IntTensor<Self>,
        groups: IntTensor<Self>,
        y: FloatTensor<Self>,
        params: qgemm::Params,
        variant: qgemv::Variant,
        tiles: qgemm::Tiles,
    ) -> FloatTensor<Self>;

    /// `qgemm` over a float weight tensor (a linear layer) instead of a pool of words.
    #[allow(clippy::too_many_arguments)]
    fn qgemm_float(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: IntTensor<Self>,
        y: FloatTensor<Self>,
        params: qgemm::Params,
        variant: qgemv::Variant,
        tiles: qgemm::Tiles,
    ) -> FloatTensor<Self>;

    fn stream_read(data: FloatTensor<Self>, params: stream_read::Params) -> FloatTensor<Self>;

    fn argmax(x: FloatTensor<Self>, params: argmax::Params) -> IntTensor<Self>;

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        pos: IntTensor<Self>,
        params: rope::Params,
    ) -> FloatTensor<Self>;
}

impl Kernels for burn::backend::wgpu::CubeBackend {
    fn rms_norm(
        x: FloatTensor<Self>,
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        params: rms_norm::Params,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        rms_norm::launch(x, branch, weight, params)
    }

    fn rms_norm_route(
        x: FloatTensor<Self>,
        branch: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        router: FloatTensor<Self>,
        params: rms_norm::Params,
        top_k: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, IntTensor<Self>, FloatTensor<Self>) {
        rms_norm::launch_route(x, branch, weight, router, params, top_k)
    }

    fn lightning_prefill(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        block: u32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lightning_prefill::launch(qkv, state, rates, block)
    }

    fn lightning_decode(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        lightning_decode::launch(qkv, state, rates, norm)
    }

    fn lightning_decode_in_place(
        qkv: FloatTensor<Self>,
        state: FloatTensor<Self>,
        backup: FloatTensor<Self>,
        rates: FloatTensor<Self>,
        norm: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        lightning_decode::launch_in_place(qkv, state, backup, rates, norm)
    }

    fn attention_prefill(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        past: u32,
    ) -> FloatTensor<Self> {
        attention_prefill::launch(q, k, v, past)
    }

    fn attention_decode(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pos: IntTensor<Self>,
        len: u32,
        dynamic: bool,
    ) -> FloatTensor<Self> {
        attention_decode::launch(q, k, v, pos, len, dynamic)
    }

    fn kv_append(
        k_cache: FloatTensor<Self>,
        v_cache: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        pos: IntTensor<Self>,
        params: kv_append::Params,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        kv_append::launch(k_cache, v_cache, k, v, pos, params)
    }

    fn decode_step(chosen: IntTensor<Self>, ids: IntTensor<Self>, pos: IntTensor<Self>) -> IntTensor<Self> {
        decode_step::launch(chosen, ids, pos)
    }

    fn moe_route(logits: FloatTensor<Self>, top_k: u32) -> (IntTensor<Self>, FloatTensor<Self>) {
        moe_route::launch(logits, top_k)
    }

    fn moe_gather(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        num_experts: u32,
    ) -> (FloatTensor<Self>, IntTensor<Self>, IntTensor<Self>) {
        moe_gather::launch(x, ids, num_experts)
    }

    fn moe_scatter(
        ys: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        positions: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        moe_scatter::launch(ys, weights, positions)
    }

    fn qgemv(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        table: IntTensor<Self>,
        pool: IntTensor<Self>,
        y: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        params: qgemv::Params,
        variant: qgemv::Variant,
        launch: qgemv::Launch,
        fuse: qgemv::Fuse,
    ) -> FloatTensor<Self> {
        qgemv::launch(x, ids, table, pool, y, aux, params, variant, launch, fuse)
    }

    fn qgemv_float(
        x: FloatTensor<Self>,
        ids: IntTensor<Self>,
        table: IntTensor<Self>,
        weight: FloatTensor<Self>,
        y: FloatTensor<Self>,
        aux: FloatTensor<Self>,
        params: qgemv::Params,
        variant: qgemv::Variant,
        launch: qgemv::Launch,
        fuse: qgemv::Fuse,
    ) -> FloatTensor<Self> {
        qgemv::launch(x, ids, table, weight, y, aux, params, variant, launch, fuse)
    }

    fn qgemm(
        x: FloatTensor<Self>,
        pool: IntTensor<Self>,
        groups: IntTensor<Self>,
        y: FloatTensor<Self>,
        params: qgemm::Params,
        variant: qgemv::Variant,
        tiles: qgemm::Tiles,
    ) -> FloatTensor<Self> {
        qgemm::launch(x, pool, groups, y, params, variant, tiles)
    }

    fn qgemm_float(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        groups: IntTensor<Self>,
        y: FloatTensor<Self>,
        params: qgemm::Params,
        variant: qgemv::Variant,
        tiles: qgemm::Tiles,
    ) -> FloatTensor<Self> {
        qgemm::launch(x, weight, groups, y, params, variant, tiles)
    }

    fn stream_read(data: FloatTensor<Self>, params: stream_read::Params) -> FloatTensor<Self> {
        stream_read::launch(data, params)
    }

    fn argmax(x: FloatTensor<Self>, params: argmax::Params) -> IntTensor<Self> {
        argmax::launch(x, params)
    }

    fn rope(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        pos: IntTensor<Self>,
        params: rope::Params,
    ) -> FloatTensor<Self> {
        rope::launch(x, cos, sin, pos, params)
    }
}

/// Wraps a dispatch float primitive back into a tensor.
fn float<const D: usize>(t: FloatTensor<Dispatch>) -> Tensor<D> {
    Tensor::from_dispatch(t)
}

/// Wraps a dispatch int primitive back into a tensor.
fn int<const D: usize>(t: IntTensor<Dispatch>) -> Tensor<D, Int> {
    Tensor::from_dispatch(t)
}

/// Shared helpers for kernel tests: seeded inputs and error measures.
#[cfg(test)]
pub(crate) mod testing {
    use burn::tensor::{Device, Int, Tensor, TensorData};
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    use crate::experts::ExpertLayout;
    use crate::weights::StoredDType;

    /// Seeded uniform values in [-scale, scale).
    pub fn random<const D: usize>(seed: u64, shape: [usize; D], scale: f32, device: &Device) -> Tensor<D> {
        let mut rng = StdRng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    /// The wgpu device for kernel tests (see [`crate::device::test_gpu_or_skip`]).
    pub fn gpu() -> Option<Device> {
        crate::device::test_gpu_or_skip("GPU kernel test")
    }

    /// Max-abs and max-relative difference of two tensors.
    pub fn diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> (f32, f32) {
        let a = a.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        let b = b.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        let mut abs = 0f32;
        let mut rel = 0f32;
        for (x, y) in a.iter().zip(&b) {
            let d = (x - y).abs();
            assert!(d.is_finite(), "non-finite output: {x} vs {y}");
            abs = abs.max(d);
            rel = rel.max(d / y.abs().max(1e-3));
        }
        (abs, rel)
    }

    /// Asserts that `out` matches `reference` to f32-accumulation accuracy: max-abs error at
    /// most 1e-4 of the largest reference magnitude (a per-element relative error would blow up
    /// on outputs that cancel to near zero).
    pub fn check(out: Tensor<2>, reference: Tensor<2>, what: &str) {
        let scale = reference.clone().abs().max().into_scalar::<f32>();
        let (abs, rel) = diff(out, reference);
        assert!(abs <= 1e-4 * scale.max(1e-3), "{what}: max abs {abs} (scale {scale}, rel {rel})");
    }

    /// An Int tensor of `values`.
    pub fn ints(values: &[i32], device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
    }

    /// A pool of expert records with seeded uniform weights in [-1, 1): expert `e` in slot
    /// `slots[e]` (`None`: in another pool), one extra slot after the last and unused slots
    /// filled with junk, so that misaddressing shows. Returns `(layout, words, table)` with
    /// `table[e]` the record's word offset or -1.
    pub fn expert_pool(
        seed: u64,
        dtype: StoredDType,
        hidden: usize,
        ffn: usize,
        slots: &[Option<usize>],
    ) -> (ExpertLayout, Vec<i32>, Vec<i32>) {
        let layout = ExpertLayout::new(dtype, hidden, ffn).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut values = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let stride = layout.slot_bytes();
        let count = slots.iter().flatten().max().map_or(1, |s| s + 2);
        let mut bytes: Vec<u8> = values(count * stride / 4).iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut table = Vec::new();
        for slot in slots {
            let Some(s) = slot else {
                table.push(-1);
                continue;
            };
            let (c, f) = (hidden, ffn);
            let record = layout.encode(&values(f * c), &values(f * c), &values(c * f));
            bytes[s * stride..s * stride + record.len()].copy_from_slice(&record);
            table.push((s * stride / 4) as i32);
        }
        let words = bytes.chunks_exact(4).map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        (layout, words, table)
    }

    /// The field names of `struct Params` in a kernel's WGSL source.
    pub fn wgsl_fields(src: &str) -> Vec<String> {
        let body = src.split("struct Params {").nth(1).unwrap().split('}').next().unwrap();
        body.split(',')
            .filter_map(|f| f.split(':').next())
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty())
            .collect()
    }
}
