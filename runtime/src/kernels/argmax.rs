//! `argmax`: the index of each row's largest value, the first one on ties (as `torch.argmax`
//! and [`crate::sampling::argmax`]). Greedy decoding picks the next token on the device with
//! it and reads back 4 bytes instead of a row of logits.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::launch::{Wgsl, bind, dispatch, empty, grid, params};
use super::{Kernels, int, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/argmax.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub rows: u32,
    pub cols: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

const WORKGROUP: u32 = 256;

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
    let p = Params { rows: rows as u32, cols: cols as u32, _pad0: 0, _pad1: 0 };
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
    let out = empty(&x, [p.rows as usize], DType::I32);
    let kernel = Wgsl::new("argmax", include_str!("../../../shaders/argmax.wgsl")).with("workgroup", WORKGROUP);
    dispatch(&x, kernel, WORKGROUP, grid(p.rows), vec![xb, out.handle.clone().binding(), params(&x, &p)]);
    out
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
        // Rows shorter and longer than the workgroup, and not a multiple of it.
        for (rows, cols) in [(1, 1), (3, 7), (2, 257), (5, 32000), (1, 200_064)] {
            let x = random(cols as u64, [rows, cols], 1.0, &device);
            assert_eq!(host(argmax(x.clone()).unwrap()), host(reference(x)), "[{rows}, {cols}]");
        }
        // Ties go to the first index, wherever the threads meet them.
        let mut v = vec![0.0f32; 3 * 1000];
        for (row, at) in [(0usize, [999usize, 5, 600]), (1, [3, 259, 4]), (2, [700, 701, 2])] {
            for a in at {
                v[row * 1000 + a] = 2.0;
            }
        }
        let x = Tensor::<2>::from_data(TensorData::new(v, [3, 1000]), &device);
        assert_eq!(host(argmax(x).unwrap()), [5, 3, 2]);
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/argmax.wgsl"));
        assert_eq!(fields, ["rows", "cols", "_pad0", "_pad1"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
