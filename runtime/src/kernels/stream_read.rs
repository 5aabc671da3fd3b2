//! `stream_read`: the memory-bandwidth roofline of an adapter, our own WGSL read kernel. Every
//! thread sums a grid-strided share of a buffer of vec4s; benchmarks time it over a buffer far
//! larger than the caches and divide every other kernel's bytes per second by its rate.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Tensor};

use super::launch::{Wgsl, bind, dispatch, empty, grid, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/stream_read.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub vec4s: u32,
    pub threads: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

const WORKGROUP: u32 = 256;

/// Per-thread partial sums of `data` read once by `threads` threads (rounded up to whole
/// workgroups of 256); their total is the sum of `data`.
///
/// # Shapes
/// `data`: `[N]` f32 with `N` a multiple of 4 → `[threads]`.
pub fn stream_read(data: &Tensor<1>, threads: usize) -> Result<Tensor<1>, KernelError> {
    let [n] = data.dims();
    let threads = threads.div_ceil(WORKGROUP as usize) * WORKGROUP as usize;
    if !n.is_multiple_of(4) || u32::try_from(n / 4).is_err() || threads == 0 || data.dtype() != DType::F32 {
        return Err(KernelError::Shape { kernel: "stream_read", reason: format!("{n} {:?} values", data.dtype()) });
    }
    if !uses_wgsl(&data.device()) {
        return Ok(reference(data, threads));
    }
    let p = Params { vec4s: (n / 4) as u32, threads: threads as u32, _pad0: 0, _pad1: 0 };
    Ok(float(Dispatch::stream_read(data.clone().into_dispatch(), p)))
}

/// The reference: thread `t` sums the vec4s `t, t + threads, …` (also the CPU path).
pub fn reference(data: &Tensor<1>, threads: usize) -> Tensor<1> {
    let n = data.dims()[0];
    let v = data.clone().into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 data");
    let mut sums = vec![0f32; threads];
    for (i, q) in v.chunks_exact(4).enumerate() {
        sums[i % threads] += q.iter().sum::<f32>();
    }
    debug_assert_eq!(n % 4, 0);
    Tensor::from_data(burn::tensor::TensorData::new(sums, [threads]), &data.device())
}

pub(super) fn launch(data: CubeTensor, p: Params) -> CubeTensor {
    let (data, db) = bind(data);
    let sums = empty(&data, [p.threads as usize], DType::F32);
    let kernel = Wgsl::new("stream_read", include_str!("../../../shaders/stream_read.wgsl")).with("workgroup", WORKGROUP);
    let groups = p.threads / WORKGROUP;
    dispatch(&data, kernel, WORKGROUP, grid(groups), vec![db, sums.handle.clone().binding()], params(&p));
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{gpu, random, wgsl_fields};

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // An odd count of vec4s, threads that don't divide it, and more threads than vec4s.
        for (n, threads) in [(4 * 1001, 256), (4 * 70_001, 1000), (4 * 7, 512)] {
            let data = random(n as u64, [n], 1.0, &device);
            let got = stream_read(&data, threads).unwrap();
            let want = reference(&data, threads.div_ceil(256) * 256);
            let (a, b) = (got.into_data().try_to_vec::<f32>().unwrap(), want.into_data().try_to_vec::<f32>().unwrap());
            let err = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(err < 1e-3, "{n} values on {threads} threads: max-abs {err}");
        }
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/stream_read.wgsl"));
        assert_eq!(fields, ["vec4s", "threads", "_pad0", "_pad1"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
