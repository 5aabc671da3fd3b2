//! `qgemm`: the prefill expert matmul, `Y[M, N] = xin · Wᵀ` for the `M` tokens routed to one
//! expert, whose record sits at a host-known word offset of a GPU pool; or, grouped, for the
//! tokens of many experts of one pool in one launch ([`qgemm_grouped`]).
//!
//! `W` is one matrix ([`QMatrix`]) of the record, dequantised tile by tile into workgroup
//! memory (shaders/qblock.wgsl), never into a full-precision copy in global memory; `xin` is
//! given by [`XMode`] (the SwiGLU of a gate_up output fused into the down projection's input).
//! Decode-time pairs use [`qgemv`](super::qgemv) instead; both share one reference.

use std::ops::Range;

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::launch::{Wgsl, bind, dims, dispatch, grid, params};
use super::qgemv::{Variant, XMode, check_matrix, check_x, host_matrix, words, xin};
use super::{Kernels, float, qgemm_coop, uses_wgsl};
use crate::error::KernelError;
use crate::experts::QMatrix;
use crate::weights::StoredDType;

/// Mirrors `Params` in `shaders/qgemm.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub m: u32,
    pub rows: u32,
    pub cols: u32,
    pub per: u32,
    pub x_stride: u32,
    pub row_bytes: u32,
    pub words: u32,
    pub tiles_n: u32,
    pub tiles: u32,
    pub grouped: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Output rows and columns of a workgroup (fixed in the shader).
const TILE: usize = 64;
const WORKGROUP: u32 = 256;

/// One expert's rows in a grouped matmul: rows `rows` of `x` (and of `Y`) take the matrix of
/// the record at word `record` of the pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub rows: Range<usize>,
    pub record: usize,
}

/// One expert's matmul over its grouped rows.
///
/// # Shapes
/// - `x`: `[M / per, K]` for `XMode::Rows { per }`, `[M, 2K]` for `XMode::SwiGlu` (`M ≥ 1`);
/// - `pool`: `[words]` (any 4-byte Int dtype), the record at word `record`;
/// - `m`: `[N, K]` at byte `m.offset` of the record; returns `Y`: `[M, N]`.
pub fn qgemm(
    x: Tensor<2>,
    pool: &Tensor<1, Int>,
    record: usize,
    m: QMatrix,
    mode: XMode,
) -> Result<Tensor<2>, KernelError> {
    qgemm_tiled(x, pool, record, m, mode, None)
}

/// [`qgemm`] on the given tiles (`None`: the adapter's choice), so that tests can hold the
/// scalar tiles to f32 accuracy on an adapter that would pick cooperative ones.
pub(super) fn qgemm_tiled(
    x: Tensor<2>,
    pool: &Tensor<1, Int>,
    record: usize,
    m: QMatrix,
    mode: XMode,
    tiles: Option<Tiles>,
) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemm", reason };
    let row_bytes = check_matrix("qgemm", &m)?;
    let Some((rows, per, x_stride)) = check_x(&x, mode, m.cols).filter(|r| r.0 > 0 && !matches!(mode, XMode::NormGated { .. })) else {
        return Err(err(format!("x {:?} for {mode:?} and {m:?}", x.dims())));
    };
    let start = check_record(pool, record, &m)?;
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x, pool, record, m, mode));
    }
    let tiles = tiles.unwrap_or_else(|| Tiles::for_matrix(&x.device(), rows));
    let p = tiles.params(rows, &m, per, x_stride, row_bytes, start);
    let variant = Variant::scalar(m.dtype, mode == XMode::SwiGlu);
    let device = x.device();
    let y = Tensor::<2>::empty([rows, m.rows], &device).into_dispatch();
    // Not read when ungrouped: left uninitialised, so no fill kernel runs per call.
    let none = Tensor::<1, Int>::empty([4], &device).into_dispatch();
    Ok(float(Dispatch::qgemm(x.into_dispatch(), words(pool).into_dispatch(), none, y, p, variant, tiles)))
}

/// The matmuls of many experts of one pool in one launch: `Y[r] = xin(r) · W_gᵀ` for every row
/// `r` of every group `g`, `W_g` matrix `m` of group g's record. Rows outside every group keep
/// the values of `y` (given) or are left unwritten (not given): with experts in several pools,
/// one `y` is filled by one launch per pool.
///
/// # Shapes
/// - `x`: `[M, K]` (`XMode::Rows { per: 1 }`) or `[M, 2K]` (`XMode::SwiGlu`), rows grouped;
/// - `y`: `[M, N]`; returns `Y`: `[M, N]`.
pub fn qgemm_grouped(
    x: Tensor<2>,
    pool: &Tensor<1, Int>,
    groups: &[Group],
    m: QMatrix,
    mode: XMode,
    y: Option<Tensor<2>>,
) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemm", reason };
    let row_bytes = check_matrix("qgemm", &m)?;
    let Some((rows, 1, x_stride)) = check_x(&x, mode, m.cols).filter(|r| r.0 > 0 && !matches!(mode, XMode::NormGated { .. })) else {
        return Err(err(format!("x {:?} for {mode:?} and {m:?} (one row per token)", x.dims())));
    };
    if y.as_ref().is_some_and(|y| y.dims() != [rows, m.rows]) {
        return Err(err(format!("y {:?} for {rows} rows of {}", y.as_ref().map(|y| y.dims()), m.rows)));
    }
    let mut starts = Vec::with_capacity(groups.len());
    for g in groups {
        if g.rows.start >= g.rows.end || g.rows.end > rows {
            return Err(err(format!("group rows {:?} of {rows}", g.rows)));
        }
        starts.push(check_record(pool, g.record, &m)?);
    }
    let device = x.device();
    if !uses_wgsl(&device) {
        let mut y = y.unwrap_or_else(|| Tensor::zeros([rows, m.rows], &device));
        for g in groups {
            let part = reference(x.clone().narrow(0, g.rows.start, g.rows.len()), pool, g.record, m, mode);
            y = y.slice_assign([g.rows.clone(), 0..m.rows], part);
        }
        return Ok(y);
    }
    // One table row per row tile of each group: its first row, its group's end, its matrix.
    let longest = groups.iter().map(|g| g.rows.len()).max().unwrap_or(0);
    let tiles = Tiles::for_matrix(&device, longest);
    let tile_m = tiles.tile().0;
    let mut table = Vec::new();
    for (g, start) in groups.iter().zip(starts) {
        for first in g.rows.clone().step_by(tile_m) {
            table.extend([first as u32, g.rows.end as u32, start as u32, 0]);
        }
    }
    if table.is_empty() {
        return Ok(y.unwrap_or_else(|| Tensor::zeros([rows, m.rows], &device)));
    }
    let row_tiles = table.len() / 4;
    let mut p = tiles.params(rows, &m, 1, x_stride, row_bytes, 0);
    p.tiles = (row_tiles * m.rows.div_ceil(tiles.tile().1)) as u32;
    p.grouped = 1;
    let table = Tensor::<1, Int>::from_data(TensorData::new(table, [row_tiles * 4]), &device);
    let y = y.unwrap_or_else(|| Tensor::empty([rows, m.rows], &device));
    let variant = Variant::scalar(m.dtype, mode == XMode::SwiGlu);
    let (x, pool, table, y) = (x.into_dispatch(), words(pool).into_dispatch(), table.into_dispatch(), y.into_dispatch());
    Ok(float(Dispatch::qgemm(x, pool, table, y, p, variant, tiles)))
}

/// The first word of matrix `m` of the record at word `record`, checked to lie in `pool`.
fn check_record(pool: &Tensor<1, Int>, record: usize, m: &QMatrix) -> Result<usize, KernelError> {
    let [pool_words] = pool.dims();
    let start = record + m.offset / 4;
    if start + m.bytes().div_ceil(4) > pool_words || u32::try_from(start).is_err() {
        return Err(KernelError::Shape {
            kernel: "qgemm",
            reason: format!("{m:?} of the record at word {record} is outside a pool of {pool_words} words"),
        });
    }
    Ok(start)
}

/// `xin Wᵀ` for a float weight tensor `W` `[N, K]` (a linear layer's, f16 or f32) through the
/// same kernels, when [`takes_float`] says they serve it better than Burn's matmul: on
/// cooperative matrices, never on the scalar tiles (Burn's f16 matmul outruns those).
///
/// # Shapes
/// `x`: `[M / per, K]` for `XMode::Rows { per }`, `[M, 2K]` for `XMode::SwiGlu` → `[M, N]`.
pub fn qgemm_float(x: Tensor<2>, w: &Tensor<2>, mode: XMode) -> Result<Tensor<2>, KernelError> {
    qgemm_float_on(x, w, mode, None)
}

/// [`qgemm_float`] on the given tiles (`None`: the device's choice).
pub(super) fn qgemm_float_on(x: Tensor<2>, w: &Tensor<2>, mode: XMode, tiles: Option<Tiles>) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemm", reason };
    let [n, k] = w.dims();
    let dtype = match w.dtype() {
        DType::F32 => StoredDType::F32,
        DType::F16 if k.is_multiple_of(2) => StoredDType::F16,
        other => return Err(err(format!("{other:?} weights of {k} columns"))),
    };
    let m = QMatrix { dtype, rows: n, cols: k, offset: 0 };
    let Some((rows, per, x_stride)) = check_x(&x, mode, k).filter(|r| r.0 > 0 && !matches!(mode, XMode::NormGated { .. })) else {
        return Err(err(format!("x {:?} for {mode:?} and {m:?}", x.dims())));
    };
    if !uses_wgsl(&x.device()) {
        return Ok(xin(x, mode, k).matmul(w.clone().transpose()));
    }
    let row_bytes = dtype.row_bytes(k).expect("float rows are whole elements") as u32;
    let tiles = tiles.unwrap_or_else(|| Tiles::for_matrix(&x.device(), rows));
    let p = tiles.params(rows, &m, per, x_stride, row_bytes, 0);
    // Rows of whole 16-byte groups are read as vectors (a tensor's binding starts aligned).
    let vec_pool = row_bytes.is_multiple_of(16);
    let vec_x = x_stride.is_multiple_of(4) && k.is_multiple_of(4);
    let variant = Variant { dtype, swiglu: mode == XMode::SwiGlu, vec_x, vec_pool };
    let device = x.device();
    let y = Tensor::<2>::empty([rows, n], &device).into_dispatch();
    // Not read when ungrouped: left uninitialised, so no fill kernel runs per call.
    let none = Tensor::<1, Int>::empty([4], &device).into_dispatch();
    Ok(float(Dispatch::qgemm_float(x.into_dispatch(), w.clone().into_dispatch(), none, y, p, variant, tiles)))
}

/// Whether [`qgemm_float`] is the better matmul for `w` on this device: cooperative matrices
/// exist and take its shape.
pub fn takes_float(w: &Tensor<2>) -> bool {
    let [n, k] = w.dims();
    let device = w.device();
    w.dtype() == DType::F16 && k.is_multiple_of(2) && n > 0 && uses_wgsl(&device) && qgemm_coop::available(&device)
}

/// Which tiles multiply: cooperative matrices where the device and shape allow (64 or 128
/// input rows per workgroup, by M), else the scalar 64×64 tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tiles {
    Scalar,
    /// `qgemm_coop` with this many 16-row tiles per subgroup (2: 64-row tiles, 4: 128).
    Coop { sub_m: u32 },
}

impl Tiles {
    /// The tiles for `rows` input rows (of the longest group) on `device`.
    pub(super) fn for_matrix(device: &Device, rows: usize) -> Self {
        if !qgemm_coop::available(device) {
            Self::Scalar
        } else if rows >= 128 {
            Self::Coop { sub_m: 4 }
        } else {
            Self::Coop { sub_m: 2 }
        }
    }

    /// Output rows and columns of one workgroup's tile.
    fn tile(self) -> (usize, usize) {
        match self {
            Self::Scalar => (TILE, TILE),
            Self::Coop { sub_m } => (32 * sub_m as usize, qgemm_coop::TILE_N),
        }
    }

    /// The launch's params; `start` is the matrix's first word in the bound buffer.
    fn params(self, rows: usize, m: &QMatrix, per: u32, x_stride: u32, row_bytes: u32, start: usize) -> Params {
        let (tile_m, tile_n) = self.tile();
        let tiles_n = m.rows.div_ceil(tile_n);
        Params {
            m: rows as u32,
            rows: m.rows as u32,
            cols: m.cols as u32,
            per,
            x_stride,
            row_bytes,
            words: start as u32,
            tiles_n: tiles_n as u32,
            tiles: (rows.div_ceil(tile_m) * tiles_n) as u32,
            grouped: 0,
            _pad1: 0,
            _pad2: 0,
        }
    }
}

/// The reference in plain Burn ops over host-decoded weights (also the CPU path).
pub fn reference(x: Tensor<2>, pool: &Tensor<1, Int>, record: usize, m: QMatrix, mode: XMode) -> Tensor<2> {
    let w = host_matrix(pool, record, &m, &x.device());
    xin(x, mode, m.cols).matmul(w.transpose())
}

/// Launches either kernel. `y` `[M, N]` is written in place (copied first if another tensor
/// still references its buffer); `groups` is the row-tile table when `p.grouped` is set.
pub(super) fn launch(
    x: CubeTensor,
    pool: CubeTensor,
    groups: CubeTensor,
    y: CubeTensor,
    p: Params,
    variant: Variant,
    tiles: Tiles,
) -> CubeTensor {
    assert_eq!(pool.dtype.size() % 2, 0, "qgemm reads the pool as u32 words");
    assert_eq!(dims(&y), [p.m as usize, p.rows as usize]);
    let y = if y.can_mut() { y } else { y.copy() };
    let (x, xb) = bind(x);
    let (_pool, pb) = bind(pool);
    let (_groups, gb) = bind(groups);
    let (y, yb) = bind(y);
    let buffers = vec![xb, pb, yb, gb];
    if let Tiles::Coop { sub_m } = tiles {
        qgemm_coop::launch(&x, buffers, p, variant, sub_m);
        return y;
    }
    let kernel = variant.apply(Wgsl::new(
        "qgemm",
        concat!(include_str!("../../../shaders/qblock.wgsl"), include_str!("../../../shaders/qgemm.wgsl")),
    ));
    dispatch(&x, kernel, WORKGROUP, grid(p.tiles), buffers, params(&p));
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::qgemv::tests::FORMATS;
    use crate::kernels::testing::{check, expert_pool, gpu, ints, random, wgsl_fields};
    use crate::weights::StoredDType;
    use burn::tensor::Device;

    #[test]
    fn kernel_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, dtype) in FORMATS.into_iter().enumerate() {
            // 160 columns of gate_up and 96 of down are 5 and 3 blocks; F32 and F16 also get
            // rows that end inside a 32-column step.
            let mut shapes = vec![(160, 96)];
            if !dtype.is_quantized() {
                shapes.push((42, 40));
            }
            for (hidden, ffn) in shapes {
                let slots = [Some(2), None, Some(0)];
                let (layout, words, table) = expert_pool(i as u64, dtype, hidden, ffn, &slots);
                let pool = ints(&words, &device);
                let g = layout.gate_up();
                let matrices = [g, QMatrix { rows: 37, ..g }, layout.down()];
                for (e, m) in [0, 2].into_iter().flat_map(|e| matrices.map(|m| (e, m))) {
                    let record = table[e] as usize;
                    for rows in [1usize, 7, 70] {
                        for (mode, x_rows, x_cols) in [
                            (XMode::Rows { per: 1 }, rows, m.cols),
                            (XMode::SwiGlu, rows, 2 * m.cols),
                            (XMode::Rows { per: 2 }, rows.div_ceil(2), m.cols),
                        ] {
                            let what = format!("{} {hidden}x{ffn} e{e} {m:?} M {rows} {mode:?}", dtype.name());
                            let x = random(3 + rows as u64, [x_rows, x_cols], 1.0, &device);
                            // The scalar tiles, to f32 accuracy, whatever the adapter offers
                            // (qgemm_coop's tests hold the cooperative ones to f16 operands).
                            let y = qgemm_tiled(x.clone(), &pool, record, m, mode, Some(Tiles::Scalar)).unwrap();
                            check(y, reference(x, &pool, record, m, mode), &what);
                        }
                    }
                }
            }
        }
    }

    /// Several experts of one pool in one launch, over the rows each was given, with rows
    /// outside every group keeping y's values; CPU (reference) and GPU agree.
    #[test]
    fn grouped_matches_reference() {
        let Some(device) = gpu() else { return };
        for (i, dtype) in FORMATS.into_iter().enumerate() {
            let (layout, words, table) = expert_pool(7 + i as u64, dtype, 96, 64, &[Some(2), Some(0), Some(1)]);
            let pool = ints(&words, &device);
            // Rows 0..3 expert 1, 3..75 none (kept from y), 75..77 expert 0, 77..210 expert 2.
            let spans = [(0..3, 1), (75..77, 0), (77..210, 2)];
            let groups: Vec<Group> =
                spans.iter().map(|(rows, e)| Group { rows: rows.clone(), record: table[*e] as usize }).collect();
            for (m, mode, width) in [(layout.gate_up(), XMode::Rows { per: 1 }, 96), (layout.down(), XMode::SwiGlu, 128)] {
                let x = random(11, [210, width], 1.0, &device);
                let before = random(12, [210, m.rows], 1.0, &device);
                let y = qgemm_grouped(x.clone(), &pool, &groups, m, mode, Some(before.clone())).unwrap();
                let mut want = before.clone();
                for g in &groups {
                    let part = reference(x.clone().narrow(0, g.rows.start, g.rows.len()), &pool, g.record, m, mode);
                    want = want.slice_assign([g.rows.clone(), 0..m.rows], part);
                }
                let what = format!("grouped {} {m:?} {mode:?}", dtype.name());
                // The CPU backend's path (the reference per group) gives the same.
                let cpu = Device::flex();
                let yc = qgemm_grouped(
                    Tensor::from_data(x.to_data(), &cpu),
                    &ints(&words, &cpu),
                    &groups,
                    m,
                    mode,
                    Some(Tensor::from_data(before.to_data(), &cpu)),
                )
                .unwrap();
                check(Tensor::from_data(yc.to_data(), &device), want.clone(), &format!("{what} on the CPU"));
                if crate::kernels::qgemm_coop::available(&device) {
                    // f16 operands on tensor cores: the kept rows exactly, the rest to f16 accuracy.
                    let kept = |t: Tensor<2>| t.narrow(0, 3, 72);
                    check(kept(y.clone()), kept(before), &what);
                    let scale = want.clone().abs().max().into_scalar::<f32>();
                    let (abs, _) = crate::kernels::testing::diff(y, want);
                    assert!(abs <= 2e-2 * scale, "{what}: {abs} of {scale}");
                } else {
                    check(y, want, &what);
                }
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let device = Device::flex();
        let (layout, words, _) = expert_pool(1, StoredDType::Q8_0, 32, 32, &[Some(0)]);
        let pool = ints(&words, &device);
        let x = random(1, [3, 32], 1.0, &device);
        let g = layout.gate_up();
        assert_eq!(qgemm(x.clone(), &pool, 0, g, XMode::Rows { per: 1 }).unwrap().dims(), [3, 64]);
        assert!(qgemm(x.clone(), &pool, 0, g, XMode::SwiGlu).is_err(), "SwiGLU needs 2K columns");
        assert!(qgemm(x, &pool, words.len() - 8, g, XMode::Rows { per: 1 }).is_err(), "outside the pool");
    }

    /// Times both kernels on one MiniMax-Text-01 expert (C = 6144, F = 9216) against Burn's
    /// dense f32 matmul: `cargo test --release -p minimax-runtime --lib -- --ignored
    /// kernels::qgemm::tests::bench --nocapture`.
    #[test]
    #[ignore = "benchmark: wants a real GPU"]
    fn bench_text01_expert() {
        use crate::kernels::qgemv::qgemv;
        let Some(device) = gpu() else { return };
        let time = |f: &mut dyn FnMut()| {
            f();
            device.sync().unwrap();
            let t = std::time::Instant::now();
            for _ in 0..20 {
                f();
            }
            device.sync().unwrap();
            t.elapsed().as_secs_f64() / 20.0
        };
        let (c, f) = (6144, 9216);
        for dtype in [StoredDType::Q8_0, StoredDType::Q4_1] {
            let (layout, words, table) = expert_pool(0, dtype, c, f, &[Some(0), Some(1)]);
            let (pool, table) = (ints(&words, &device), ints(&table, &device));
            let ids = ints(&[0, 1], &device);
            for (m, mode, width) in
                [(layout.gate_up(), XMode::Rows { per: 2 }, c), (layout.down(), XMode::SwiGlu, 2 * f)]
            {
                let x = random(1, [if mode == XMode::SwiGlu { 2 } else { 1 }, width], 1.0, &device);
                let s = time(&mut || {
                    qgemv(x.clone(), ids.clone(), &table, &pool, None, m, mode).unwrap();
                });
                let gb = 2.0 * m.bytes() as f64 / s / 1e9;
                eprintln!("qgemv {} [{}, {}] 2 pairs: {:.1} µs, {gb:.0} GB/s", dtype.name(), m.rows, m.cols, s * 1e6);
                let w = host_matrix(&pool, 0, &m, &device);
                for rows in [16, 128, 512] {
                    let x = random(2, [rows, m.cols], 1.0, &device);
                    let flop = 2.0 * (rows * m.rows * m.cols) as f64;
                    let q = time(&mut || drop(qgemm(x.clone(), &pool, 0, m, XMode::Rows { per: 1 }).unwrap()));
                    let d = time(&mut || drop(x.clone().matmul(w.clone().transpose())));
                    eprintln!(
                        "qgemm {} [{}, {}] M {rows}: {:.1} µs, {:.1} TFLOP/s (dense f32 matmul {:.1} µs, {:.1} TFLOP/s)",
                        dtype.name(),
                        m.rows,
                        m.cols,
                        q * 1e6,
                        flop / q / 1e12,
                        d * 1e6,
                        flop / d / 1e12
                    );
                }
            }
        }
        // A linear layer's f16 weight (cooperative tiles where the adapter has them) against
        // Burn's f16 matmul, which prefill used for every float weight before.
        let w = random(3, [f, c], 1.0, &device).cast(DType::F16);
        for rows in [128, 512, 4096] {
            let x = random(4, [rows, c], 1.0, &device);
            let flop = 2.0 * (rows * f * c) as f64;
            let q = time(&mut || drop(qgemm_float(x.clone(), &w, XMode::Rows { per: 1 }).unwrap()));
            let d = time(&mut || drop(x.clone().cast(DType::F16).matmul(w.clone().transpose()).cast(DType::F32)));
            eprintln!(
                "qgemm_float f16 [{f}, {c}] M {rows} ({:?}): {:.1} µs, {:.1} TFLOP/s (Burn f16 matmul {:.1} µs, {:.1} TFLOP/s)",
                Tiles::for_matrix(&device, rows),
                q * 1e6,
                flop / q / 1e12,
                d * 1e6,
                flop / d / 1e12
            );
        }
    }

    #[test]
    fn params_mirror_wgsl() {
        let fields = wgsl_fields(include_str!("../../../shaders/qgemm.wgsl"));
        let names = ["m", "rows", "cols", "per", "x_stride", "row_bytes", "words", "tiles_n", "tiles"];
        assert_eq!(fields[..9], names);
        assert_eq!(size_of::<Params>(), 4 * fields.len());
    }
}
