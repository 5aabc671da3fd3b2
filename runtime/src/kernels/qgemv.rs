//! `qgemv`: the decode-time expert matmul, reading quantized expert records from a GPU pool.
//!
//! For `P` pairs (a token and one of its chosen experts), `y[p, n] = Σ_k W_{e(p)}[n, k] ·
//! xin(p)[k]`, where `W_e` is one matrix ([`QMatrix`]) of expert `e`'s record, found at word
//! `table[e]` of `pool`, and `xin` is given by [`XMode`]. Pairs whose expert is not in this
//! pool (`table[e] = -1`) keep their rows of `y`: the caller dispatches once per pool over one
//! zeroed `y`. Weights are dequantised in registers (shaders/qblock.wgsl), never into a
//! full-precision copy.
//!
//! The reference decodes the record bytes on the host ([`ExpertLayout`]'s format, through
//! [`quant::dequantize`]) and multiplies with Burn ops; it reads the used records back, so it
//! serves tests and the CPU path only.
//!
//! [`ExpertLayout`]: crate::experts::ExpertLayout

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData, activation::silu};

use super::launch::{Wgsl, bind, dims, dispatch, grid, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;
use crate::experts::QMatrix;
use crate::weights::{StoredDType, quant};

/// How the input row `xin(p)` of output row `p` is read from `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMode {
    /// `xin(p) = x[p / per]`: `x` is `[P / per, K]` (`per = top_k` feeds every expert of a
    /// token from one hidden row).
    Rows { per: u32 },
    /// `x` is `[P, 2K]` (a gate_up output) and `xin(p)[k] = silu(x[p, k]) · x[p, K + k]`: the
    /// SwiGLU activation fused into the down projection's input read.
    SwiGlu,
}

/// Mirrors `Params` in `shaders/qgemv.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub pairs: u32,
    pub rows: u32,
    pub cols: u32,
    pub per: u32,
    pub x_stride: u32,
    pub row_bytes: u32,
    pub offset_words: u32,
    pub experts: u32,
}

/// The compiled variant of `qgemv` and `qgemm`: the block format and the input mode. The one
/// place that turns them into the `{{ format }}` and `{{ swiglu }}` values of qblock.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub dtype: StoredDType,
    pub swiglu: bool,
}

impl Variant {
    pub(super) fn apply(self, kernel: Wgsl) -> Wgsl {
        let format = match self.dtype {
            StoredDType::F32 => 0,
            StoredDType::F16 => 1,
            StoredDType::Q8_0 => 2,
            StoredDType::Q4_1 => 3,
            other => unreachable!("{} is rejected by check_matrix", other.name()),
        };
        kernel.with("format", format).with("swiglu", self.swiglu)
    }
}

const WORKGROUP: u32 = 128;
/// Output rows per workgroup (fixed in the shader): each input unit read serves this many
/// weight rows.
const ROWS: u32 = 8;

/// Checks a matrix the kernels can read; returns its row bytes.
pub(super) fn check_matrix(kernel: &'static str, m: &QMatrix) -> Result<u32, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel, reason };
    if !matches!(m.dtype, StoredDType::F32 | StoredDType::F16 | StoredDType::Q8_0 | StoredDType::Q4_1) {
        return Err(err(format!("{} matrices are not supported", m.dtype.name())));
    }
    let row_bytes = m
        .dtype
        .row_bytes(m.cols)
        .filter(|_| m.rows > 0 && m.cols > 0 && (m.dtype != StoredDType::F16 || m.cols.is_multiple_of(2)))
        .ok_or_else(|| err(format!("{} rows of {} columns are not whole blocks", m.dtype.name(), m.cols)))?;
    if !m.offset.is_multiple_of(4) || u32::try_from(m.rows * row_bytes).is_err() {
        return Err(err(format!("matrix {m:?}: offset not word-aligned or over 4 GiB")));
    }
    Ok(row_bytes as u32)
}

/// The input rows of a matmul from `x` under `mode`: `[x.dims()[0] * per, k]` or, for SwiGLU,
/// `[x.dims()[0], k]`, or `None` when `x` has the wrong width.
pub(super) fn check_x(x: &Tensor<2>, mode: XMode, k: usize) -> Option<(usize, u32, u32)> {
    let [r, c] = x.dims();
    match mode {
        XMode::Rows { per } if per > 0 && c == k => Some((r * per as usize, per, k as u32)),
        XMode::SwiGlu if c == 2 * k => Some((r, 1, 2 * k as u32)),
        _ => None,
    }
}

/// Expert matmul of `P` pairs against the records of one pool.
///
/// # Shapes
/// - `x`: `[P / per, K]` for `XMode::Rows { per }` (`P` a multiple of `per`), `[P, 2K]` for
///   `XMode::SwiGlu`; `ids`: `[P]` expert ids; `table`: `[E]` record word offsets in `pool`
///   (`-1` for experts elsewhere); `pool`: `[words]` (any 4-byte Int dtype);
/// - `y`: `[P, N]`, returned with the rows of this pool's pairs replaced;
/// - `m`: `[N, K]` (`m.rows`, `m.cols`) at byte `m.offset` of each record.
///
/// Every record addressed by `table` must lie inside `pool`; this is not checked (it would need
/// a read-back), and WebGPU's bounds checks keep a violation inside the pool's buffer.
pub fn qgemv(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: &Tensor<1, Int>,
    y: Tensor<2>,
    m: QMatrix,
    mode: XMode,
) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemv", reason };
    let row_bytes = check_matrix("qgemv", &m)?;
    let [pairs] = ids.dims();
    let [experts] = table.dims();
    let shapes = || format!("x {:?}, ids {:?}, y {:?} for {mode:?} and {m:?}", x.dims(), ids.dims(), y.dims());
    let Some((x_pairs, per, x_stride)) = check_x(&x, mode, m.cols) else {
        return Err(err(shapes()));
    };
    if x_pairs != pairs || y.dims() != [pairs, m.rows] || experts == 0 {
        return Err(err(shapes()));
    }
    if pairs == 0 {
        return Ok(y);
    }
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x, ids, table, pool, y, m, mode));
    }
    let p = Params {
        pairs: pairs as u32,
        rows: m.rows as u32,
        cols: m.cols as u32,
        per,
        x_stride,
        row_bytes,
        offset_words: (m.offset / 4) as u32,
        experts: experts as u32,
    };
    let variant = Variant { dtype: m.dtype, swiglu: mode == XMode::SwiGlu };
    let y = Dispatch::qgemv(
        x.into_dispatch(),
        ids.cast(IntDType::I32).into_dispatch(),
        table.clone().cast(IntDType::I32).into_dispatch(),
        words(pool).into_dispatch(),
        y.into_dispatch(),
        p,
        variant,
    );
    Ok(float(y))
}

/// The pool as 4-byte words: as is when its Int dtype has 4 bytes (the usual case; a cast would
/// copy the whole pool), else cast to i32.
pub(super) fn words(pool: &Tensor<1, Int>) -> Tensor<1, Int> {
    match pool.dtype() {
        DType::I32 | DType::U32 => pool.clone(),
        _ => pool.clone().cast(IntDType::I32),
    }
}

/// `xin` as a `[P, K]` tensor (the reference's input read).
pub(super) fn xin(x: Tensor<2>, mode: XMode, k: usize) -> Tensor<2> {
    let [r, _] = x.dims();
    match mode {
        XMode::Rows { per } => x.unsqueeze_dim::<3>(1).repeat_dim(1, per as usize).reshape([r * per as usize, k]),
        XMode::SwiGlu => silu(x.clone().narrow(1, 0, k)) * x.narrow(1, k, k),
    }
}

/// Matrix `m` of the record at word `record` of `pool`, decoded on the host to `[N, K]`.
pub(super) fn host_matrix(pool: &Tensor<1, Int>, record: usize, m: &QMatrix, device: &Device) -> Tensor<2> {
    let start = record + m.offset / 4;
    let words = m.bytes().div_ceil(4);
    let data = pool.clone().narrow(0, start, words).into_data().convert::<i64>();
    // Each word was stored as a signed or unsigned integer of at least 4 bytes: truncating to
    // u32 recovers its bits either way.
    let bytes: Vec<u8> = data.iter::<i64>().flat_map(|w| (w as u32).to_le_bytes()).collect();
    let w = quant::dequantize(m.dtype, &bytes[..m.bytes()]);
    Tensor::from_data(TensorData::new(w, [m.rows, m.cols]), device)
}

fn host_ints(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("converted to i64")
}

/// The reference in plain Burn ops over host-decoded weights (also the CPU path).
pub fn reference(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: &Tensor<1, Int>,
    y: Tensor<2>,
    m: QMatrix,
    mode: XMode,
) -> Tensor<2> {
    let device = x.device();
    let xin = xin(x, mode, m.cols);
    let ids = host_ints(ids);
    let table = host_ints(table.clone());
    let mut y = y;
    let mut experts: Vec<i64> = ids.clone();
    experts.sort_unstable();
    experts.dedup();
    for e in experts {
        let Some(&record) = usize::try_from(e).ok().and_then(|e| table.get(e)) else {
            continue;
        };
        if record as u32 == u32::MAX {
            continue;
        }
        let w = host_matrix(pool, record as u32 as usize, &m, &device);
        for (pair, _) in ids.iter().enumerate().filter(|(_, i)| **i == e) {
            let row = xin.clone().narrow(0, pair, 1).matmul(w.clone().transpose());
            y = y.slice_assign([pair..pair + 1, 0..m.rows], row);
        }
    }
    y
}

pub(super) fn launch(
    x: CubeTensor,
    ids: CubeTensor,
    table: CubeTensor,
    pool: CubeTensor,
    y: CubeTensor,
    p: Params,
    variant: Variant,
) -> CubeTensor {
    assert_eq!((ids.dtype, table.dtype), (DType::I32, DType::I32), "qgemv takes i32 ids and table");
    assert_eq!(pool.dtype.size(), 4, "qgemv reads the pool as u32 words");
    assert_eq!(dims(&y), [p.pairs as usize, p.rows as usize]);
    // y is written in place; a y whose buffer another tensor still references is copied first.
    let y = if y.can_mut() { y } else { y.copy() };
    let (x, xb) = bind(x);
    let (_ids, ib) = bind(ids);
    let (_table, tb) = bind(table);
    let (_pool, pb) = bind(pool);
    let (y, yb) = bind(y);
    let kernel = variant.apply(
        Wgsl::new(
            "qgemv",
            concat!(include_str!("../../../shaders/qblock.wgsl"), include_str!("../../../shaders/qgemv.wgsl")),
        )
        .with("workgroup", WORKGROUP),
    );
    let groups = p.pairs * p.rows.div_ceil(ROWS);
    dispatch(&x, kernel, WORKGROUP, grid(groups), vec![xb, ib, tb, pb, yb, params(&x, &p)]);
    y
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::kernels::testing::{check, diff, expert_pool, gpu, ints, random, wgsl_fields};

    pub const FORMATS: [StoredDType; 4] = [StoredDType::F32, StoredDType::F16, StoredDType::Q8_0, StoredDType::Q4_1];

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        // Experts 0..5 at scattered slots, expert 2 in another pool.
        let slots = [Some(3), Some(0), None, Some(1), Some(4)];
        let ids = [4, 1, 0, 2, 3, 1];
        for (i, dtype) in FORMATS.into_iter().enumerate() {
            // 96 and 160 columns are 3 and 5 blocks (odd blocks shift Q8_0 rows off words);
            // F32 and F16 rows of 44 and 42 columns end in a ragged unit of 8.
            let mut shapes = vec![(96, 160)];
            if dtype.is_quantized() {
                shapes.push((160, 96));
            } else {
                shapes.push((44, 42));
            }
            for (hidden, ffn) in shapes {
                let (layout, words, table) = expert_pool(i as u64, dtype, hidden, ffn, &slots);
                let (pool, table) = (ints(&words, &device), ints(&table, &device));
                // A 37-row prefix of gate_up: N is not a multiple of ROWS.
                let g = layout.gate_up();
                for m in [g, QMatrix { rows: 37, ..g }, layout.down()] {
                    for (mode, p, x_rows, x_cols) in [
                        (XMode::Rows { per: 1 }, 5, 5, m.cols),
                        (XMode::Rows { per: 2 }, 6, 3, m.cols),
                        (XMode::SwiGlu, 3, 3, 2 * m.cols),
                    ] {
                        let what = format!("{} {hidden}x{ffn} {m:?} {mode:?}", dtype.name());
                        let x = random(7 + i as u64, [x_rows, x_cols], 1.0, &device);
                        let pair_ids = ints(&ids[..p], &device);
                        let y0 = random(11, [p, m.rows], 1.0, &device);
                        let y = qgemv(x.clone(), pair_ids.clone(), &table, &pool, y0.clone(), m, mode).unwrap();
                        let r = reference(x, pair_ids, &table, &pool, y0.clone(), m, mode);
                        // The pair of expert 2 keeps its row exactly.
                        if let Some(j) = ids[..p].iter().position(|&e| e == 2) {
                            let (d, _) = diff(y.clone().narrow(0, j, 1), y0.narrow(0, j, 1));
                            assert_eq!(d, 0.0, "{what}: a row of an absent expert changed");
                        }
                        check(y, r, &what);
                    }
                }
            }
        }
    }

    /// The reference (the CPU path) against a plain loop over `ExpertLayout::decode`.
    #[test]
    fn reference_matches_dense_loop() {
        let device = Device::flex();
        let slots = [Some(1), None, Some(0)];
        let (layout, words, table) = expert_pool(5, StoredDType::Q8_0, 64, 32, &slots);
        let ids = [2, 0, 1];
        let (pool, tt) = (ints(&words, &device), ints(&table, &device));
        let x = random(6, [3, 2 * 32], 1.0, &device);
        let y0 = Tensor::zeros([3, 64], &device);
        let y = qgemv(x.clone(), ints(&ids, &device), &tt, &pool, y0, layout.down(), XMode::SwiGlu).unwrap();
        let xs = x.into_data().try_to_vec::<f32>().unwrap();
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut expect = vec![0f32; 3 * 64];
        for (p, &e) in ids.iter().enumerate() {
            let Some(slot) = slots[e as usize] else { continue };
            let at = slot * layout.slot_bytes();
            let (_, down) = layout.decode(&bytes[at..at + layout.bytes()]);
            for n in 0..64 {
                let silu_mul = |k: usize| {
                    let (a, b) = (xs[p * 64 + k], xs[p * 64 + 32 + k]);
                    a / (1.0 + (-a).exp()) * b
                };
                expect[p * 64 + n] = (0..32).map(|k| down[n * 32 + k] * silu_mul(k)).sum();
            }
        }
        check(y, Tensor::from_data(TensorData::new(expect, [3, 64]), &device), "dense loop");
    }

    #[test]
    fn rejects_bad_shapes() {
        let device = Device::flex();
        let (layout, words, table) = expert_pool(1, StoredDType::Q4_1, 32, 32, &[Some(0)]);
        let (pool, tt) = (ints(&words, &device), ints(&table, &device));
        let ids = ints(&[0, 0], &device);
        let y = || Tensor::<2>::zeros([2, 64], &device);
        let g = layout.gate_up();
        let x = random(1, [1, 32], 1.0, &device);
        assert!(qgemv(x, ids.clone(), &tt, &pool, y(), g, XMode::Rows { per: 2 }).is_ok());
        let x = random(1, [2, 32], 1.0, &device);
        let bad = |m: QMatrix, mode| qgemv(x.clone(), ids.clone(), &tt, &pool, y(), m, mode).is_err();
        assert!(bad(g, XMode::Rows { per: 2 }), "x rows for per = 2");
        assert!(bad(g, XMode::SwiGlu), "SwiGLU needs 2K columns");
        assert!(bad(QMatrix { cols: 48, ..g }, XMode::Rows { per: 1 }), "half a block");
        assert!(bad(QMatrix { rows: 63, ..g }, XMode::Rows { per: 1 }), "y width");
        assert!(bad(QMatrix { dtype: StoredDType::Q4_0, ..g }, XMode::Rows { per: 1 }), "Q4_0");
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/qgemv.wgsl"));
        let names = ["pairs", "rows", "cols", "per", "x_stride", "row_bytes", "offset_words", "experts"];
        assert_eq!(fields, names);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
