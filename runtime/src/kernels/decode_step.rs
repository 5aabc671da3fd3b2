//! `decode_step`: the bookkeeping that ends a decode step replayed from a graph, on the device:
//! the chosen token is copied into the next step's input and the position advances by one.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, IntDType, Tensor};

use super::launch::{Wgsl, bind, dispatch, params};
use super::{Kernels, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/decode_step.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub advance: u32,
    pub _pad: [u32; 3],
}

/// `ids[0] = chosen[0]` and `pos[0] += 1`, in place on wgpu (the tensors keep their buffers);
/// elsewhere `ids` and `pos` are replaced by tensors of the same values.
///
/// # Shapes
/// `chosen`, `ids`, `pos`: `[1]`, i32 on wgpu.
pub fn decode_step(chosen: &Tensor<1, Int>, ids: &mut Tensor<1, Int>, pos: &mut Tensor<1, Int>) -> Result<(), KernelError> {
    if chosen.dims() != [1] || ids.dims() != [1] || pos.dims() != [1] {
        return Err(KernelError::Shape {
            kernel: "decode_step",
            reason: format!("chosen {:?}, ids {:?}, pos {:?}", chosen.dims(), ids.dims(), pos.dims()),
        });
    }
    if !uses_wgsl(&chosen.device()) {
        *ids = chosen.clone();
        *pos = pos.clone() + 1;
        return Ok(());
    }
    let _ = Dispatch::decode_step(
        chosen.clone().cast(IntDType::I32).into_dispatch(),
        ids.clone().into_dispatch(),
        pos.clone().into_dispatch(),
    );
    Ok(())
}

pub(super) fn launch(chosen: CubeTensor, ids: CubeTensor, pos: CubeTensor) -> CubeTensor {
    assert!(
        [&chosen, &ids, &pos].iter().all(|t| t.dtype == DType::I32),
        "decode_step takes i32 tensors"
    );
    let (chosen, cb) = bind(chosen);
    let (ib, pb) = (ids.handle.clone().binding(), pos.handle.clone().binding());
    let kernel = Wgsl::new("decode_step", include_str!("../../../shaders/decode_step.wgsl"));
    dispatch(&chosen, kernel, 1, cubecl::CubeCount::Static(1, 1, 1), vec![cb, ib, pb], params(&Params { advance: 1, _pad: [0; 3] }));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{gpu, ints, wgsl_fields};

    fn values(t: &Tensor<1, Int>) -> Vec<i64> {
        t.clone().into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
    }

    #[test]
    fn the_choice_becomes_the_input_and_the_position_advances() {
        for device in [Some(burn::tensor::Device::flex()), gpu()].into_iter().flatten() {
            let chosen = ints(&[4711], &device);
            let (mut ids, mut pos) = (ints(&[3], &device), ints(&[99], &device));
            decode_step(&chosen, &mut ids, &mut pos).unwrap();
            decode_step(&chosen, &mut ids, &mut pos).unwrap();
            assert_eq!((values(&ids), values(&pos)), (vec![4711], vec![101]));
        }
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/decode_step.wgsl"));
        assert_eq!(fields, ["advance", "_pad0", "_pad1", "_pad2"]);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
