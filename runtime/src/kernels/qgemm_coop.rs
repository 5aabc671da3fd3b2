//! `qgemm_coop`: the prefill matmul `Y[M, N] = xin · Wᵀ` of [`qgemm`](super::qgemm) on
//! cooperative matrices (tensor cores), where the adapter offers 16×16×16 products of f16 A
//! and B into f32 C in subgroups of 32 (`AdapterSummary::cooperative_f16`).
//!
//! Same operands, params and result as `qgemm`, except that products take f16 operands: the
//! input and the dequantised weights are rounded to f16 as they are staged (the reference is
//! `qgemm`'s with both rounded so), while sums stay f32. `qgemm` picks this kernel by itself
//! ([`takes`]); linear layers with f16 weights reach it through `qgemm_float`.
//!
//! Why: prefill spends 86 % of its kernel time in `qgemm` at Text-01 dimensions, at 5.8
//! TFLOP/s of scalar FMAs on a GPU whose tensor cores do two orders of magnitude more.

use std::sync::OnceLock;

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Device, Tensor, TensorData};
use cubecl::server::BufferBinding;

use super::launch::{Wgsl, dispatch, grid, params};
use super::qgemm::{Params, Tiles, qgemm_float_on};
use super::qgemv::{Variant, XMode};

/// Weight rows of a workgroup's tile (its input rows are 32 · `sub_m`: 64 or 128).
pub const TILE_N: usize = 128;
const WORKGROUP: u32 = 256;

/// Whether `qgemm` multiplies on cooperative matrices on `device` (the process's wgpu device):
/// the adapter offers them (`AdapterSummary::cooperative_f16`), and they passed a self-check
/// there once. Drivers' cooperative-matrix support is young; a wrong result is caught here,
/// once, and prefill then keeps the scalar tiles, rather than every prompt going wrong.
pub fn available(device: &Device) -> bool {
    static CHECKED: OnceLock<bool> = OnceLock::new();
    crate::device::has_cooperative_matrices() && *CHECKED.get_or_init(|| self_check(device))
}

/// Both tile heights on a product with ragged edges (130 rows, 48 of a 128-column tile, 3
/// steps of K), against the f32 product of the same f16-rounded operands.
fn self_check(device: &Device) -> bool {
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 193) as f32 / 96.0 - 1.0).collect()
    };
    let (m, n, k) = (130, 48, 96);
    let x = Tensor::<2>::from_data(TensorData::new(values(m * k, 1), [m, k]), device);
    let w = Tensor::<2>::from_data(TensorData::new(values(n * k, 2), [n, k]), device).cast(DType::F16);
    let want = x.clone().cast(DType::F16).cast(DType::F32).matmul(w.clone().cast(DType::F32).transpose());
    let scale = 1.0 + want.clone().abs().max().into_scalar::<f32>();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        [2, 4].iter().map(|&sub_m| {
            let y = qgemm_float_on(x.clone(), &w, XMode::Rows { per: 1 }, Some(Tiles::Coop { sub_m }))?;
            Ok::<f32, crate::error::KernelError>((y - want.clone()).abs().max().into_scalar::<f32>())
        }).collect::<Result<Vec<f32>, _>>()
    }));
    match outcome {
        Ok(Ok(errors)) if errors.iter().all(|e| *e <= 1e-3 * scale) => true,
        other => {
            tracing::warn!(
                "cooperative matrices failed their check on this adapter ({other:?}); prefill uses the scalar tiles"
            );
            false
        }
    }
}

/// Launches the kernel for `qgemm`'s params and bindings (x, pool, y, groups), tiled by
/// 32 · `sub_m` × [`TILE_N`].
pub(super) fn launch(like: &CubeTensor, buffers: Vec<BufferBinding>, p: Params, variant: Variant, sub_m: u32) {
    assert!(sub_m == 2 || sub_m == 4, "64- or 128-row tiles");
    dispatch(like, kernel(variant, sub_m), WORKGROUP, grid(p.tiles), buffers, params(&p));
}

fn kernel(variant: Variant, sub_m: u32) -> Wgsl {
    variant.apply(
        Wgsl::new(
            "qgemm_coop",
            concat!(include_str!("../../../shaders/qblock.wgsl"), include_str!("../../../shaders/qgemm_coop.wgsl")),
        )
        .enable("f16")
        .enable("wgpu_cooperative_matrix")
        // Cooperative operations need subgroup-uniform control flow, which the branches around
        // them have (they depend on the subgroup's index); WGSL's analysis only knows
        // workgroup uniformity and would reject them.
        .diagnostic("off, derivative_uniformity")
        .with("sub_m", sub_m),
    )
}

#[cfg(test)]
mod tests {
    use burn::tensor::{DType, Tensor};

    use super::*;
    use crate::experts::QMatrix;
    use crate::kernels::qgemm::{qgemm, qgemm_float};
    use crate::kernels::qgemv::tests::FORMATS;
    use crate::kernels::qgemv::{XMode, host_matrix, xin};
    use crate::kernels::testing::{check, expert_pool, gpu, ints, random};

    /// Rounded to f16 and back, as the kernel stages its operands.
    fn f16(t: Tensor<2>) -> Tensor<2> {
        t.cast(DType::F16).cast(DType::F32)
    }

    /// The device when it has cooperative matrices. Elsewhere (lavapipe in CI) the test says it
    /// skips; `MINIMAX_REQUIRE_COOPMAT=1` (set where the hardware has them) makes that a failure.
    fn coop_gpu() -> Option<burn::tensor::Device> {
        let device = gpu()?;
        if available(&device) {
            return Some(device);
        }
        if std::env::var("MINIMAX_REQUIRE_COOPMAT").is_ok_and(|v| v == "1") {
            panic!("MINIMAX_REQUIRE_COOPMAT=1 but the adapter has no f16 cooperative matrices");
        }
        eprintln!("SKIPPED: qgemm_coop needs cooperative f16 matrices, which this adapter lacks");
        None
    }

    /// Every variant parses, validates and compiles to SPIR-V with wgpu's shader compiler, on
    /// any machine: CI's adapter cannot run this kernel, and naga's SPIR-V writer has failed on
    /// cooperative stores whose operands were not bound to names (an internal panic, not an
    /// error, on the user's machine).
    #[test]
    fn compiles_to_spirv() {
        use burn::backend::wgpu::KernelSource;
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        for dtype in FORMATS {
            for swiglu in [false, true] {
                for (vec_x, vec_pool, sub_m) in [(false, false, 2), (true, true, 4)] {
                    let src = kernel(Variant { dtype, swiglu, vec_x, vec_pool }, sub_m).source().complete();
                    let what = format!("{} swiglu {swiglu} vec {vec_x} sub_m {sub_m}", dtype.name());
                    let module = naga::front::wgsl::parse_str(&src)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
                    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
                        .validate(&module)
                        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(&src)));
                    let spirv = naga::back::spv::write_vec(&module, &info, &Default::default(), None);
                    assert!(spirv.is_ok_and(|w| !w.is_empty()), "{what}");
                }
            }
        }
    }

    /// Every block format, modes and ragged M and K against `qgemm`'s reference with both
    /// operands rounded to f16: what remains is f32 summation order.
    #[test]
    fn kernel_matches_reference() {
        let Some(device) = coop_gpu() else { return };
        for (i, dtype) in FORMATS.into_iter().enumerate() {
            let mut shapes = vec![(160, 96)];
            if !dtype.is_quantized() {
                shapes.push((40, 42)); // rows end inside a 32-column step
            }
            for (hidden, ffn) in shapes {
                let (layout, words, table) = expert_pool(i as u64, dtype, hidden, ffn, &[Some(1), Some(0)]);
                let pool = ints(&words, &device);
                for m in [layout.gate_up(), layout.down(), QMatrix { rows: 48, ..layout.gate_up() }] {
                    let record = table[0] as usize;
                    let w = f16(host_matrix(&pool, record, &m, &device));
                    for rows in [1usize, 17, 70, 130] {
                        for (mode, x_rows, x_cols) in [
                            (XMode::Rows { per: 1 }, rows, m.cols),
                            (XMode::SwiGlu, rows, 2 * m.cols),
                            (XMode::Rows { per: 2 }, rows.div_ceil(2), m.cols),
                        ] {
                            let what = format!("{} {m:?} M {rows} {mode:?}", dtype.name());
                            let x = random(5 + rows as u64, [x_rows, x_cols], 1.0, &device);
                            let want = f16(xin(x.clone(), mode, m.cols)).matmul(w.clone().transpose());
                            let y = qgemm(x, &pool, record, m, mode).unwrap();
                            assert_eq!(y.dims(), want.dims(), "{what}");
                            check(y, want, &what);
                        }
                    }
                }
            }
        }
    }

    /// Linear layers' f16 weights, bound as they are, with rows of 16-byte groups (vector
    /// reads) and without.
    #[test]
    fn float_weights_match_reference() {
        let Some(device) = coop_gpu() else { return };
        for (n, k) in [(64, 96), (144, 200), (32, 42)] {
            let w = random(1, [n, k], 1.0, &device).cast(DType::F16);
            assert!(crate::kernels::qgemm::takes_float(&w));
            for rows in [3usize, 64, 129] {
                for (mode, cols) in [(XMode::Rows { per: 1 }, k), (XMode::SwiGlu, 2 * k)] {
                    let x = random(rows as u64, [rows, cols], 2.0, &device);
                    let want = f16(xin(x.clone(), mode, k)).matmul(w.clone().cast(DType::F32).transpose());
                    let y = qgemm_float(x, &w, mode).unwrap();
                    check(y, want, &format!("f16 [{n}, {k}] M {rows} {mode:?}"));
                }
            }
        }
    }
}
