//! `qgemm`: the prefill expert matmul, `Y[M, N] = xin · Wᵀ` for the `M` tokens routed to one
//! expert, whose record sits at a host-known word offset of a GPU pool.
//!
//! `W` is one matrix ([`QMatrix`]) of the record, dequantised tile by tile into workgroup
//! memory (shaders/qblock.wgsl), never into a full-precision copy in global memory; `xin` is
//! given by [`XMode`] (the SwiGLU of a gate_up output fused into the down projection's input).
//! Decode-time pairs use [`qgemv`](super::qgemv) instead; both share one reference.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Int, Tensor};

use super::launch::{Wgsl, bind, dispatch, empty, grid, params};
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
    pub _pad0: u32,
    pub _pad1: u32,
    pub _pad2: u32,
}

/// Output rows and columns of a workgroup (fixed in the shader).
const TILE: usize = 64;
const WORKGROUP: u32 = 256;

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
    let err = |reason: String| KernelError::Shape { kernel: "qgemm", reason };
    let row_bytes = check_matrix("qgemm", &m)?;
    let Some((rows, per, x_stride)) = check_x(&x, mode, m.cols).filter(|r| r.0 > 0) else {
        return Err(err(format!("x {:?} for {mode:?} and {m:?}", x.dims())));
    };
    let [pool_words] = pool.dims();
    let start = record + m.offset / 4;
    if start + m.bytes().div_ceil(4) > pool_words || u32::try_from(start).is_err() {
        return Err(err(format!("{m:?} of the record at word {record} is outside a pool of {pool_words} words")));
    }
    if !uses_wgsl(&x.device()) {
        return Ok(reference(x, pool, record, m, mode));
    }
    let tiles = Tiles::for_matrix(&m, rows);
    let p = tiles.params(rows, &m, per, x_stride, row_bytes, start);
    let variant = Variant::scalar(m.dtype, mode == XMode::SwiGlu);
    let y = float(Dispatch::qgemm(x.into_dispatch(), words(pool).into_dispatch(), p, variant, tiles));
    Ok(tiles.trim(y, rows))
}

/// `xin Wᵀ` for a float weight tensor `W` `[N, K]` (a linear layer's, f16 or f32) through the
/// same kernels, when [`takes_float`] says they serve it better than Burn's matmul: on
/// cooperative matrices, never on the scalar tiles (Burn's f16 matmul outruns those).
///
/// # Shapes
/// `x`: `[M / per, K]` for `XMode::Rows { per }`, `[M, 2K]` for `XMode::SwiGlu` → `[M, N]`.
pub fn qgemm_float(x: Tensor<2>, w: &Tensor<2>, mode: XMode) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemm", reason };
    let [n, k] = w.dims();
    let dtype = match w.dtype() {
        DType::F32 => StoredDType::F32,
        DType::F16 if k.is_multiple_of(2) => StoredDType::F16,
        other => return Err(err(format!("{other:?} weights of {k} columns"))),
    };
    let m = QMatrix { dtype, rows: n, cols: k, offset: 0 };
    let Some((rows, per, x_stride)) = check_x(&x, mode, k).filter(|r| r.0 > 0) else {
        return Err(err(format!("x {:?} for {mode:?} and {m:?}", x.dims())));
    };
    if !uses_wgsl(&x.device()) {
        return Ok(xin(x, mode, k).matmul(w.clone().transpose()));
    }
    let row_bytes = dtype.row_bytes(k).expect("float rows are whole elements") as u32;
    let tiles = Tiles::for_matrix(&m, rows);
    let p = tiles.params(rows, &m, per, x_stride, row_bytes, 0);
    // Rows of whole 16-byte groups are read as vectors (a tensor's binding starts aligned).
    let vec_pool = row_bytes.is_multiple_of(16);
    let vec_x = x_stride.is_multiple_of(4) && k.is_multiple_of(4);
    let variant = Variant { dtype, swiglu: mode == XMode::SwiGlu, vec_x, vec_pool };
    let y = float(Dispatch::qgemm_float(x.into_dispatch(), w.clone().into_dispatch(), p, variant, tiles));
    Ok(tiles.trim(y, rows))
}

/// Whether [`qgemm_float`] is the better matmul for `w` on this device: cooperative matrices
/// exist and take its shape.
pub fn takes_float(w: &Tensor<2>) -> bool {
    let [n, k] = w.dims();
    w.dtype() == DType::F16 && k.is_multiple_of(2) && uses_wgsl(&w.device()) && qgemm_coop::takes(n)
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
    fn for_matrix(m: &QMatrix, rows: usize) -> Self {
        if !qgemm_coop::takes(m.rows) {
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
            _pad0: 0,
            _pad1: 0,
            _pad2: 0,
        }
    }

    /// The output's first `rows` rows (the cooperative kernel writes whole tiles of rows).
    fn trim(self, y: Tensor<2>, rows: usize) -> Tensor<2> {
        match self {
            Self::Scalar => y,
            Self::Coop { .. } => y.narrow(0, 0, rows),
        }
    }
}

/// The reference in plain Burn ops over host-decoded weights (also the CPU path).
pub fn reference(x: Tensor<2>, pool: &Tensor<1, Int>, record: usize, m: QMatrix, mode: XMode) -> Tensor<2> {
    let w = host_matrix(pool, record, &m, &x.device());
    xin(x, mode, m.cols).matmul(w.transpose())
}

pub(super) fn launch(x: CubeTensor, pool: CubeTensor, p: Params, variant: Variant, tiles: Tiles) -> CubeTensor {
    if let Tiles::Coop { sub_m } = tiles {
        return qgemm_coop::launch(x, pool, p, variant, sub_m);
    }
    assert_eq!(pool.dtype.size() % 2, 0, "qgemm reads the pool as u32 words");
    let (x, xb) = bind(x);
    let (_pool, pb) = bind(pool);
    let y = empty(&x, [p.m as usize, p.rows as usize], DType::F32);
    let kernel = variant.apply(Wgsl::new(
        "qgemm",
        concat!(include_str!("../../../shaders/qblock.wgsl"), include_str!("../../../shaders/qgemm.wgsl")),
    ));
    dispatch(&x, kernel, WORKGROUP, grid(p.tiles), vec![xb, pb, y.handle.clone().binding()], params(&p));
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
                            let y = qgemm(x.clone(), &pool, record, m, mode).unwrap();
                            check(y, reference(x, &pool, record, m, mode), &what);
                        }
                    }
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
                Tiles::for_matrix(&QMatrix { dtype: StoredDType::F16, rows: f, cols: c, offset: 0 }, rows),
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
