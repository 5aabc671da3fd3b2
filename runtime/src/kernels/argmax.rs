//! `argmax`: the index of each row's largest value, the first one on ties (as `torch.argmax`
//! and [`crate::sampling::argmax`]). Greedy decoding picks the next token on the device with
//! it and reads back 4 bytes instead of a row of logits.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor, TensorData};

use cubecl::server::BufferBinding;

use super::launch::{Wgsl, bind, dispatch, empty, grid, params};
use super::{Kernels, int, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/argmax.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub chunk: u32,
    pub chunks: u32,
}

const WORKGROUP: u32 = 256;
/// Columns per stage-0 workgroup: 8 per thread, so a 200K vocabulary is ~100 workgroups.
const CHUNK: u32 = 8 * WORKGROUP;

/// The argmax of each row.
///
/// # Shapes
/// `x`: `[R, N]` f32 (`N ≥ 1`) → `[R]` i32 indices.
pub fn argmax(x: Tensor<2>) -> Result<Tensor<1, Int>, KernelError> {
    let [rows, cols] = x.dims();
    if cols == 0 || u32::try_from(rows * cols).is_err() {
        return Err(KernelError::Shape { kernel: "argmax", reason: format!("x {:?}", x.dims()) });
    }
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x));
    }
    let (rows, cols) = (rows as u32, cols as u32);
    let p = Params { rows, cols, chunk: CHUNK, chunks: cols.div_ceil(CHUNK) };
    Ok(int(Dispatch::argmax(x.into_dispatch(), p)))
}

/// The reference: [`crate::sampling::argmax`] of each row on the host (also the CPU path).
pub fn reference(x: Tensor<2>) -> Tensor<1, Int> {
    let [rows, cols] = x.dims();
    let device = x.device();
    let values = x.into_data().convert::<f32>().try_to_vec::<f32>().expect("f32 values");
    let ids: Vec<i32> = values.chunks(cols).map(|row| crate::sampling::argmax(row) as i32).collect();
    Tensor::from_data(TensorData::new(ids, [rows]), &device)
}

pub(super) fn launch(x: CubeTensor, p: Params) -> CubeTensor {
    let (x, xb) = bind(x);
    // Stage 0: each chunk's (maximum, column); with one chunk per row, that is the answer.
    let (best, columns) = stage(&x, xb, None, p);
    if p.chunks == 1 {
        return columns;
    }
    // Stage 1: a row's chunks, one workgroup per row.
    let q = Params { rows: p.rows, cols: p.chunks, chunk: p.chunks, chunks: 1 };
    stage(&x, best.handle.clone().binding(), Some(columns.handle.clone().binding()), q).1
}

/// One stage over `x` ([R, cols] values, with their columns `xi` in stage 1): `[R, chunks]`
/// maxima and columns.
fn stage(like: &CubeTensor, x: BufferBinding, xi: Option<BufferBinding>, p: Params) -> (CubeTensor, CubeTensor) {
    let n = (p.rows * p.chunks) as usize;
    let best = empty(like, [n], DType::F32);
    let columns = empty(like, [n], DType::I32);
    // Stage 0 reads no columns: a one-element placeholder, since WebGPU forbids binding the
    // same bytes twice when one binding is writable.
    let (stage, xi) = match xi {
        Some(xi) => (1, xi),
        None => (0, empty(like, [1], DType::I32).handle.binding()),
    };
    let kernel = Wgsl::new("argmax", include_str!("../../../shaders/argmax.wgsl"))
        .with("workgroup", WORKGROUP)
        .with("stage", stage);
    dispatch(
        like,
        kernel,
        WORKGROUP,
        grid(p.rows * p.chunks),
        vec![x, xi, best.handle.clone().binding(), columns.handle.clone().binding()],
        params(&p),
    );
    (best, columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{gpu, random, wgsl_fields};

    fn host(t: Tensor<1, Int>) -> Vec<i64> {
        t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // Rows shorter and longer than the workgroup and than a chunk, not multiples of either,
        // one chunk and many.
        for (rows, cols) in [(1, 1), (3, 7), (2, 257), (2, 2048), (3, 2049), (5, 32000), (1, 200_064)] {
            let x = random(cols as u64, [rows, cols], 1.0, &device);
            assert_eq!(host(argmax(x.clone()).unwrap()), host(reference(x)), "[{rows}, {cols}]");
        }
        // Ties go to the first index, wherever the threads and chunks meet them.
        let c = CHUNK as usize;
        let n = 3 * c + 5;
        let mut v = vec![0.0f32; 4 * n];
        let ties = [vec![999, 5, 600], vec![3, 259, 4], vec![700, 701, 2], vec![n - 1, 2 * c + 1, c + 7]];
        for (row, at) in ties.iter().enumerate() {
            for a in at {
                v[row * n + a] = 2.0;
            }
        }
        let x = Tensor::<2>::from_data(TensorData::new(v, [4, n]), &device);
        assert_eq!(host(argmax(x).unwrap()), [5, 3, 2, c as i64 + 7]);
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/argmax.wgsl"));
        assert_eq!(fields, ["rows", "cols", "chunk", "chunks"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
