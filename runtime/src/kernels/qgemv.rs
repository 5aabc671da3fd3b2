//! `qgemv`: the decode-time matmul, for expert pairs reading records from a GPU pool, and for
//! linear layers of one to [`MAX_ROWS`] rows (the weight is then the only "expert").
//!
//! For `P` pairs (a token and one of its chosen experts), `r_p[n] = Σ_k W_{e(p)}[n, k] ·
//! xin(p)[k]`, where `W_e` is one matrix ([`QMatrix`]) of expert `e`'s record, found at word
//! `table[e]` of `pool`, and `xin` is given by [`XMode`]. [`qgemv`] writes `y[p] = r_p`; pairs
//! whose expert is not in this pool (`table[e] = -1`) keep their rows of `y`, so the caller
//! dispatches once per pool over one `y`. [`qgemv_combine`] writes the router-weighted sum of
//! each token's pairs instead (the MoE combine fused into the down projection). Weights are
//! dequantised in registers (shaders/qblock.wgsl), never into a full-precision copy.
//!
//! Decode reads every weight once per token, so this kernel is bound by memory bandwidth: it
//! reads 16-byte vectors where rows are 16-byte aligned, and reduces with subgroup operations
//! where the adapter has them (with a workgroup-memory tree as the portable fallback).
//!
//! The reference decodes the record bytes on the host ([`ExpertLayout`]'s format, through
//! [`quant::dequantize`]) and multiplies with Burn ops; it reads the used records back, so it
//! serves tests and the CPU path only.
//!
//! [`ExpertLayout`]: crate::experts::ExpertLayout

use std::sync::Mutex;

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};

use super::launch::{Wgsl, bind, dims, dispatch, grid, params};
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;
use crate::experts::QMatrix;
use crate::weights::StoredDType;

/// Up to this many rows of a linear layer take `qgemv` (one pass over the weight per row, the
/// decode case); more take a tiled matmul.
pub const MAX_ROWS: usize = 8;

/// How the input row `xin(p)` of output row `p` is read from `x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMode {
    /// `xin(p) = x[p / per]`: `x` is `[P / per, K]` (`per = top_k` feeds every expert of a
    /// token from one hidden row).
    Rows { per: u32 },
    /// `x` is `[P, 2K]` (a gate_up output) and `xin(p)[k] = silu(x[p, k]) · x[p, K + k]`: the
    /// SwiGLU activation fused into the down projection's input read.
    SwiGlu,
    /// `x` is `[P, K + parts]`, values `v` then `parts` partial sums `s` of their unweighted
    /// squares (see [`lightning_decode`](super::lightning_decode)), and
    /// `xin(p) = v ⊙ gate(p) / sqrt(Σ s / K + eps)` with the gate given apart ([`Gated`]):
    /// lightning attention's head norm and output gate fused into out_proj's input read.
    /// Linear layers only ([`gemv_norm_gated`]).
    NormGated { parts: u32 },
}

/// The gate of [`XMode::NormGated`]: `gate(p)` is columns `offset .. offset + K` of row `p`
/// of `values` (a fused projection's output, whose first columns are something else).
#[derive(Debug, Clone)]
pub struct Gated {
    pub values: Tensor<2>,
    pub offset: usize,
    pub eps: f32,
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
    /// Pairs summed into one output row (1: no combine).
    pub group: u32,
    /// Whether the combine adds to `y` (a later pool) instead of overwriting it.
    pub accumulate: u32,
    /// Partial sums after the values of each row of `aux` ([`Epilogue::NormGate`], else 0).
    pub norm_parts: u32,
    /// The norm's epsilon ([`Epilogue::NormGate`], [`XMode::NormGated`]).
    pub norm_eps: f32,
    /// Output columns below it take SiLU, the rest sigmoid ([`Epilogue::SiluSigmoid`]).
    pub split: u32,
    /// Where the gate starts in a row of `aux`, and its row stride ([`XMode::NormGated`]).
    pub gate_offset: u32,
    pub gate_stride: u32,
    pub _pad: u32,
}

/// What one launch fuses around its matmul: the epilogue's code, and whether the input is
/// normalised and gated as it is read ([`XMode::NormGated`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fuse {
    pub epilogue: u32,
    pub gated_input: bool,
}

/// The compiled variant of `qgemv` and `qgemm`: the block format, the input mode and how `x`
/// and the pool are read. The one place that turns them into the `{{ format }}`, `{{ swiglu }}`
/// and accessor values of qblock.wgsl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub dtype: StoredDType,
    pub swiglu: bool,
    /// `x` bound as `vec4<f32>` (every row start and `K` a multiple of 4).
    pub vec_x: bool,
    /// The pool bound as `vec4<u32>` (float formats whose rows and records are 16-byte aligned).
    pub vec_pool: bool,
}

impl Variant {
    /// Scalar reads: valid for every shape the kernels accept.
    pub fn scalar(dtype: StoredDType, swiglu: bool) -> Self {
        Self { dtype, swiglu, vec_x: false, vec_pool: false }
    }

    pub(super) fn apply(self, kernel: Wgsl) -> Wgsl {
        let format = match self.dtype {
            StoredDType::F32 => 0,
            StoredDType::F16 => 1,
            StoredDType::Q8_0 => 2,
            StoredDType::Q4_1 => 3,
            other => unreachable!("{} is rejected by check_matrix", other.name()),
        };
        // A dynamically indexed component of a vector in memory is a plain 4-byte load.
        let (x_elem, x_access) = if self.vec_x {
            ("vec4<f32>", "fn x_one(i: u32) -> f32 { return x[i >> 2u][i & 3u]; }\nfn x_four(i: u32) -> vec4<f32> { return x[i >> 2u]; }")
        } else {
            ("f32", "fn x_one(i: u32) -> f32 { return x[i]; }\nfn x_four(i: u32) -> vec4<f32> { return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]); }")
        };
        let (pool_elem, pool_access) = if self.vec_pool {
            ("vec4<u32>", "fn pool_word(i: u32) -> u32 { return pool[i >> 2u][i & 3u]; }\nfn pool_quad(i: u32) -> vec4<u32> { return pool[i >> 2u]; }")
        } else {
            ("u32", "fn pool_word(i: u32) -> u32 { return pool[i]; }\nfn pool_quad(i: u32) -> vec4<u32> { return vec4<u32>(pool[i], pool[i + 1u], pool[i + 2u], pool[i + 3u]); }")
        };
        kernel
            .with("format", format)
            .with("swiglu", self.swiglu)
            .with("convert", plain_converts())
            .with("x_elem", x_elem)
            .with("x_access", x_access)
            .with("pool_elem", pool_elem)
            .with("pool_access", pool_access)
    }
}

/// `MINIMAX_QCONVERT=1`: decode quants with int-to-float conversions instead of the mantissa
/// trick of shaders/qblock.wgsl (the same values either way), to measure what the trick gives.
fn plain_converts() -> bool {
    static PLAIN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PLAIN.get_or_init(|| std::env::var("MINIMAX_QCONVERT").is_ok_and(|v| v == "1"))
}

/// Steps each thread of `qgemv` takes at once (shaders/qgemv.wgsl, `UNROLL`), unless a
/// [`Launch`] says: 1, or `MINIMAX_QGEMV_UNROLL=2` for two, so that twice the loads are in
/// flight. Two is not yet measured on a GPU; lavapipe compiles it five times slower.
fn default_unroll() -> u32 {
    static UNROLL: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UNROLL.get_or_init(|| if std::env::var("MINIMAX_QGEMV_UNROLL").is_ok_and(|v| v == "2") { 2 } else { 1 })
}

/// Launch options of the decode kernel beyond the data variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Threads per workgroup (a power of two, 32 to 256).
    pub workgroup: u32,
    /// Reduce with subgroup operations (the adapter must have them).
    pub subgroups: bool,
    /// Steps per thread at once, 1 or 2 (`None`: the adapter's default).
    pub unroll: Option<u32>,
}

/// What the kernel does with each output value `r` before writing it (fused into the matmul
/// so that decode makes one launch and one pass where it would make three).
#[derive(Debug, Clone)]
pub enum Epilogue {
    /// `y = r`.
    None,
    /// `y[t] (+)= Σ_j weights[t, j] · r_{t·G + j}` for `weights` `[T, G]`: the MoE combine.
    Combine(Tensor<2>),
    /// `y = silu(r)`.
    Silu,
    /// `y = sigmoid(r) ⊙ o` for `o` shaped as `y`: an output gate.
    Gate(Tensor<2>),
    /// `y = sigmoid(r) ⊙ v / sqrt(Σ s / N + eps)`: an output gate over RMS-normalised values,
    /// given unnormalised as `o = [v | s]` (`[T, N + P]`: the values ⊙ the norm's weight, then
    /// `P` partial sums of their unweighted squares; see
    /// [`lightning_decode`](super::lightning_decode)). The norm needs no launch of its own.
    NormGate { o: Tensor<2>, eps: f32 },
    /// `y = silu(r)` for output columns below `split`, `sigmoid(r)` from there: a projection
    /// of lightning attention's qkv and output gate in one matrix.
    SiluSigmoid { split: usize },
}

impl Epilogue {
    fn code(&self) -> u32 {
        match self {
            Epilogue::None => 0,
            Epilogue::Combine(_) => 1,
            Epilogue::Silu => 2,
            Epilogue::Gate(_) => 3,
            Epilogue::NormGate { .. } => 4,
            Epilogue::SiluSigmoid { .. } => 5,
        }
    }
}

/// The default workgroup size.
pub const WORKGROUP: u32 = 128;
/// Output rows per workgroup (fixed in the shader): each input unit read serves this many
/// weight rows.
const ROWS: u32 = 8;

/// Where the weights are: a pool of records (words), or a float matrix of a linear layer.
#[derive(Debug, Clone, Copy)]
pub enum Pool<'a> {
    Words(&'a Tensor<1, Int>),
    Float(&'a Tensor<2>),
}

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
        XMode::NormGated { parts } if parts > 0 && c == k + parts as usize => Some((r, 1, c as u32)),
        _ => None,
    }
}

/// Expert matmul of `P` pairs against the records of one pool.
///
/// # Shapes
/// - `x`: `[P / per, K]` for `XMode::Rows { per }` (`P` a multiple of `per`), `[P, 2K]` for
///   `XMode::SwiGlu`; `ids`: `[P]` expert ids; `table`: `[E]` record word offsets in `pool`
///   (`-1` for experts elsewhere); `pool`: `[words]` (any 4-byte Int dtype);
/// - `y`: `[P, N]`, returned with the rows of this pool's pairs replaced; `None` starts from
///   an uninitialised `y` (every pair's expert must then be in some pool the caller runs);
/// - `m`: `[N, K]` (`m.rows`, `m.cols`) at byte `m.offset` of each record.
///
/// Every record addressed by `table` must lie inside `pool`; this is not checked (it would need
/// a read-back), and WebGPU's bounds checks keep a violation inside the pool's buffer.
pub fn qgemv(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: &Tensor<1, Int>,
    y: Option<Tensor<2>>,
    m: QMatrix,
    mode: XMode,
) -> Result<Tensor<2>, KernelError> {
    run(x, ids, table, Pool::Words(pool), y, Epilogue::None, m, mode, None)
}

/// [`qgemv`] with the MoE combine fused in: `y[t] (+)= Σ_j weights[t, j] · r_{t·G + j}` for
/// the `G` pairs of each token.
///
/// # Shapes
/// As [`qgemv`], with `weights`: `[T, G]` (`P = T·G`) and `y`: `[T, N]`, added to when given
/// (a later pool) and written whole when `None` (pairs of experts absent from this pool add 0).
#[allow(clippy::too_many_arguments)]
pub fn qgemv_combine(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: &Tensor<1, Int>,
    weights: Tensor<2>,
    y: Option<Tensor<2>>,
    m: QMatrix,
    mode: XMode,
) -> Result<Tensor<2>, KernelError> {
    run(x, ids, table, Pool::Words(pool), y, Epilogue::Combine(weights), m, mode, None)
}

/// `y = xin Wᵀ` for a float linear weight `w` (`[N, K]`, f32 or f16) and up to [`MAX_ROWS`]
/// rows of `x` (`[T, K]`, or `[T, 2K]` for [`XMode::SwiGlu`]), through the decode kernel (a
/// one-entry table at word 0), with `epilogue` (not [`Epilogue::Combine`]) applied to each
/// output.
pub fn gemv_float(x: Tensor<2>, w: &Tensor<2>, mode: XMode, epilogue: Epilogue) -> Result<Tensor<2>, KernelError> {
    let m = float_matrix(w)?;
    let t = x.dims()[0];
    if !uses_wgsl(&x.device()) {
        return Ok(apply(xin(x, mode, m.cols).matmul(w.clone().transpose()), epilogue));
    }
    let (ids, table) = single(t, &x.device())?;
    run(x, ids, &table, Pool::Float(w), None, epilogue, m, mode, None)
}

/// The geometry of a float linear weight `w` (`[N, K]`, f32 or f16) as the kernel reads it.
pub fn float_matrix(w: &Tensor<2>) -> Result<QMatrix, KernelError> {
    let [rows, cols] = w.dims();
    let dtype = match w.dtype() {
        DType::F32 => StoredDType::F32,
        DType::F16 => StoredDType::F16,
        other => return Err(KernelError::Shape { kernel: "qgemv", reason: format!("{other:?} weights") }),
    };
    Ok(QMatrix { dtype, rows, cols, offset: 0 })
}

/// `xin Wᵀ` for a linear weight stored as blocks at word 0 of `words`, up to [`MAX_ROWS`]
/// rows, with `epilogue` (not [`Epilogue::Combine`]) applied to each output.
pub fn gemv_words(
    x: Tensor<2>,
    words: &Tensor<1, Int>,
    m: QMatrix,
    mode: XMode,
    epilogue: Epilogue,
) -> Result<Tensor<2>, KernelError> {
    let t = x.dims()[0];
    let (ids, table) = single(t, &x.device())?;
    run(x, ids, &table, Pool::Words(words), None, epilogue, m, mode, None)
}

/// Ids `[t]` and a table `[1]` of zeros for a linear layer (every row reads "expert" 0 at word
/// 0), made once per device and shared: two uploads per call would cost more than the kernel.
/// One tensor per row count: a view of a longer one would be copied (a slice whose end is not
/// on the allocator's alignment is materialised).
fn single(t: usize, device: &Device) -> Result<(Tensor<1, Int>, Tensor<1, Int>), KernelError> {
    type Zeros = (Device, Vec<Tensor<1, Int>>);
    static ZEROS: Mutex<Vec<Zeros>> = Mutex::new(Vec::new());
    if t == 0 || t > MAX_ROWS {
        return Err(KernelError::Shape { kernel: "qgemv", reason: format!("{t} rows (1 to {MAX_ROWS})") });
    }
    let mut zeros = ZEROS.lock().expect("qgemv constants");
    let i = match zeros.iter().position(|(d, ..)| d == device) {
        Some(i) => i,
        None => {
            let z = |n: usize| Tensor::<1, Int>::from_data(TensorData::new(vec![0i32; n], [n]), device);
            // Ids of 1..=MAX_ROWS rows, then the one-entry table.
            zeros.push((device.clone(), (1..=MAX_ROWS).chain([1]).map(z).collect()));
            zeros.len() - 1
        }
    };
    let (_, z) = &zeros[i];
    Ok((z[t - 1].clone(), z[MAX_ROWS].clone()))
}

/// The one entry point behind [`qgemv`], [`qgemv_combine`] and the linear forms. `launch`
/// overrides the workgroup size and reduction (benchmarks and tests).
#[allow(clippy::too_many_arguments)]
pub fn run(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: Pool<'_>,
    y: Option<Tensor<2>>,
    epilogue: Epilogue,
    m: QMatrix,
    mode: XMode,
    launch: Option<Launch>,
) -> Result<Tensor<2>, KernelError> {
    run_with(x, ids, table, pool, y, epilogue, m, mode, launch, None)
}

/// `xin Wᵀ` for a linear weight (`pool`: its float matrix or its blocks at word 0) and up to
/// [`MAX_ROWS`] rows, with `xin` read from `x` as [`XMode::NormGated`] says.
///
/// # Shapes
/// `x`: `[T, K + parts]`; `gated.values`: `[T, ≥ offset + K]` → `[T, N]`.
pub fn gemv_norm_gated(x: Tensor<2>, gated: Gated, pool: Pool<'_>, m: QMatrix) -> Result<Tensor<2>, KernelError> {
    let [t, width] = x.dims();
    let parts = width.checked_sub(m.cols).filter(|p| *p > 0).ok_or_else(|| KernelError::Shape {
        kernel: "qgemv",
        reason: format!("normed input {:?} for {} columns", x.dims(), m.cols),
    })?;
    let (ids, table) = single(t, &x.device())?;
    let mode = XMode::NormGated { parts: parts as u32 };
    run_with(x, ids, &table, pool, None, Epilogue::None, m, mode, None, Some(gated))
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: Pool<'_>,
    y: Option<Tensor<2>>,
    epilogue: Epilogue,
    m: QMatrix,
    mode: XMode,
    launch: Option<Launch>,
    gated: Option<Gated>,
) -> Result<Tensor<2>, KernelError> {
    let err = |reason: String| KernelError::Shape { kernel: "qgemv", reason };
    let row_bytes = check_matrix("qgemv", &m)?;
    let [pairs] = ids.dims();
    let [experts] = table.dims();
    let shapes = || format!("x {:?}, ids {:?}, y {:?} for {mode:?} and {m:?}", x.dims(), ids.dims(), y.as_ref().map(|y| y.dims()));
    let Some((x_pairs, per, x_stride)) = check_x(&x, mode, m.cols) else {
        return Err(err(shapes()));
    };
    let group = match &epilogue {
        Epilogue::Combine(w) => {
            let [t, g] = w.dims();
            if g == 0 || t * g != pairs {
                return Err(err(format!("weights {:?} for {pairs} pairs", w.dims())));
            }
            g
        }
        _ => 1,
    };
    let outs = pairs / group;
    if x_pairs != pairs || y.as_ref().is_some_and(|y| y.dims() != [outs, m.rows]) || experts == 0 {
        return Err(err(shapes()));
    }
    match (&gated, mode) {
        (Some(g), XMode::NormGated { .. })
            if g.values.dims()[0] == pairs && g.values.dims()[1] >= g.offset + m.cols && matches!(epilogue, Epilogue::None) => {}
        (None, XMode::Rows { .. } | XMode::SwiGlu) => {}
        _ => return Err(err(format!("a gated input needs XMode::NormGated, its gate and no epilogue: {}", shapes()))),
    }
    if let Epilogue::Gate(o) = &epilogue
        && o.dims() != [pairs, m.rows]
    {
        return Err(err(format!("gate values {:?} for {pairs} rows of {}", o.dims(), m.rows)));
    }
    let norm_parts = match &epilogue {
        Epilogue::NormGate { o, .. } => {
            let [r, width] = o.dims();
            if r != pairs || width <= m.rows {
                return Err(err(format!("normed gate values {:?} for {pairs} rows of {}", o.dims(), m.rows)));
            }
            width - m.rows
        }
        _ => 0,
    };
    if y.is_some() && matches!(epilogue, Epilogue::Silu | Epilogue::Gate(_) | Epilogue::NormGate { .. } | Epilogue::SiluSigmoid { .. }) {
        return Err(err("an elementwise epilogue writes a fresh y".into()));
    }
    if let Pool::Float(w) = pool
        && (w.dims() != [m.rows, m.cols] || m.offset != 0 || experts != 1)
    {
        return Err(err(format!("a float weight {:?} for {m:?} and {experts} experts", w.dims())));
    }
    let device = x.device();
    let accumulate = y.is_some();
    if pairs == 0 {
        return Ok(y.unwrap_or_else(|| Tensor::zeros([0, m.rows], &device)));
    }
    if !uses_wgsl(&device) {
        let Pool::Words(pool) = pool else {
            return Err(err("float weights take gemv_float on the CPU".into()));
        };
        return Ok(match &gated {
            Some(g) => reference(norm_gated_input(x, g, m.cols), ids, table, pool, y, epilogue, m, XMode::Rows { per: 1 }),
            None => reference(x, ids, table, pool, y, epilogue, m, mode),
        });
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
        group: group as u32,
        accumulate: accumulate as u32,
        norm_parts: match mode {
            XMode::NormGated { parts } => parts,
            _ => norm_parts as u32,
        },
        norm_eps: match (&epilogue, &gated) {
            (Epilogue::NormGate { eps, .. }, _) => *eps,
            (_, Some(g)) => g.eps,
            _ => 0.0,
        },
        split: match epilogue {
            Epilogue::SiluSigmoid { split } => split as u32,
            _ => 0,
        },
        gate_offset: gated.as_ref().map_or(0, |g| g.offset as u32),
        gate_stride: gated.as_ref().map_or(0, |g| g.values.dims()[1] as u32),
        _pad: 0,
    };
    // 16-byte reads need 16-byte aligned rows. Records start on 256-byte slots (experts) or at
    // word 0 (linear layers), and matrices 16 bytes into a record.
    let vec_x = x_stride.is_multiple_of(4) && m.cols.is_multiple_of(4);
    let vec_pool = !m.dtype.is_quantized() && row_bytes.is_multiple_of(16) && m.offset.is_multiple_of(16);
    let variant = Variant { dtype: m.dtype, swiglu: mode == XMode::SwiGlu, vec_x, vec_pool };
    let launch = launch.unwrap_or(Launch { workgroup: WORKGROUP, subgroups: crate::device::has_subgroups(), unroll: None });
    let code = Fuse { epilogue: epilogue.code(), gated_input: gated.is_some() };
    let y = y.unwrap_or_else(|| Tensor::empty([outs, m.rows], &device));
    let aux = match (epilogue, gated) {
        (_, Some(g)) => {
            let [r, c] = g.values.dims();
            g.values.reshape([r * c])
        }
        (Epilogue::Combine(w), _) => w.reshape([pairs]),
        (Epilogue::Gate(o), _) => o.reshape([pairs * m.rows]),
        (Epilogue::NormGate { o, .. }, _) => o.reshape([pairs * (m.rows + norm_parts)]),
        (Epilogue::None | Epilogue::Silu | Epilogue::SiluSigmoid { .. }, _) => Tensor::empty([1], &device),
    };
    let ids = ids.cast(IntDType::I32).into_dispatch();
    let table = table.clone().cast(IntDType::I32).into_dispatch();
    let (x, y, aux) = (x.into_dispatch(), y.into_dispatch(), aux.into_dispatch());
    let y = match pool {
        Pool::Words(pool) => Dispatch::qgemv(x, ids, table, words(pool).into_dispatch(), y, aux, p, variant, launch, code),
        Pool::Float(w) => Dispatch::qgemv_float(x, ids, table, w.clone().into_dispatch(), y, aux, p, variant, launch, code),
    };
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

/// Adds the subgroup or workgroup-memory reduction to the kernel text.
fn reduction(kernel: Wgsl, subgroups: bool) -> Wgsl {
    // After either: partial[0] and partial[WG] hold the workgroup's sums of acc_a and acc_b.
    const TREE: &str = "partial[lid] = acc_a;
    partial[WG + lid] = acc_b;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if lid < s {
            partial[lid] += partial[lid + s];
            partial[WG + lid] += partial[WG + lid + s];
        }
        workgroupBarrier();
    }";
    // Subgroups are consecutive invocations of a 1-D workgroup: subgroup lid / size.
    const SUBGROUP: &str = "let sum_a = subgroupAdd(acc_a);
    let sum_b = subgroupAdd(acc_b);
    let groups = (WG + sg_size - 1u) / sg_size;
    if sg_lane == 0u {
        partial[lid / sg_size] = sum_a;
        partial[WG + lid / sg_size] = sum_b;
    }
    workgroupBarrier();
    if lid < 2u {
        var total = vec4<f32>(0.0);
        for (var s = 0u; s < groups; s++) {
            total += partial[lid * WG + s];
        }
        partial[lid * WG] = total;
    }
    workgroupBarrier();";
    if subgroups {
        // WebGPU asks for the extension by name; naga (native) rejects the directive and takes
        // subgroup operations from the device's features instead.
        let kernel = if cfg!(target_arch = "wasm32") { kernel.enable("subgroups") } else { kernel };
        kernel
            .with("subgroup_builtins", "@builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_size) sg_size: u32,")
            .with("reduce", SUBGROUP)
    } else {
        kernel.with("subgroup_builtins", "").with("reduce", TREE)
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    x: CubeTensor,
    ids: CubeTensor,
    table: CubeTensor,
    pool: CubeTensor,
    y: CubeTensor,
    aux: CubeTensor,
    p: Params,
    variant: Variant,
    launch: Launch,
    fuse: Fuse,
) -> CubeTensor {
    assert_eq!((ids.dtype, table.dtype), (DType::I32, DType::I32), "qgemv takes i32 ids and table");
    assert_eq!(pool.dtype.size() % 2, 0, "qgemv reads the pool as u32 words");
    assert_eq!(dims(&y), [(p.pairs / p.group) as usize, p.rows as usize]);
    assert!(launch.workgroup.is_power_of_two() && (32..=256).contains(&launch.workgroup));
    // y is written in place; a y whose buffer another tensor still references is copied first.
    let y = if y.can_mut() { y } else { y.copy() };
    let (x, xb) = bind(x);
    let (_ids, ib) = bind(ids);
    let (_table, tb) = bind(table);
    let (_pool, pb) = bind(pool);
    let (y, yb) = bind(y);
    let (_aux, ab) = bind(aux);
    let kernel = Wgsl::new(
        "qgemv",
        concat!(include_str!("../../../shaders/qblock.wgsl"), include_str!("../../../shaders/qgemv.wgsl")),
    )
    .with("workgroup", launch.workgroup)
    .with("epilogue", fuse.epilogue)
    .with("gated_input", fuse.gated_input)
    .with("unroll", launch.unroll.unwrap_or_else(default_unroll));
    // Where a half block's two input units start (shaders/qgemv.wgsl, `half_dot`).
    let (half_step, half_gap) = if variant.dtype == StoredDType::Q8_0 { (16, 8) } else { (8, 16) };
    let kernel = kernel.with("half_step", half_step).with("half_gap", half_gap);
    let kernel = reduction(variant.apply(kernel), launch.subgroups);
    let groups = (p.pairs / p.group) * p.rows.div_ceil(ROWS);
    dispatch(&x, kernel, launch.workgroup, grid(groups), vec![xb, ib, tb, pb, yb, ab], params(&p));
    y
}

#[path = "qgemv_reference.rs"]
mod reference;
pub use reference::{apply, norm_gated_input, reference};
pub(crate) use reference::{host_matrix, xin};

#[cfg(test)]
#[path = "qgemv_tests.rs"]
pub(super) mod tests;
