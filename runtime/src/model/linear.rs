//! A linear layer `y = x Wᵀ (+ b)` whose weight is stored narrower than the f32 activations:
//!
//! - **Float**: f32, or f16 on GPUs with shader-f16. Up to [`MAX_ROWS`] rows (decode) go through
//!   the bandwidth-bound `qgemv` kernel on a wgpu device; more rows through `qgemm`'s
//!   cooperative-matrix tiles where the device has them (f16), else Burn's matmul.
//! - **Quantized**: ggml Q8_0 or Q4_1 blocks on a wgpu device, multiplied by the same kernels
//!   as the experts (`qgemv` for a few rows, `qgemm` for more), dequantizing in registers.
//!   On the CPU backend a quantized checkpoint is dequantized once at load into Float.
//!
//! Either way the weight may be split into row blocks when it is larger than one storage
//! binding may be (a 200k-token vocabulary at hidden 6144 is 2.4 GB in f16, while WebGPU
//! adapters bind 128 MiB to 2 GiB at once).

use burn::tensor::{DType, Int, Tensor};

use crate::error::{Error, WeightsError};
use crate::experts::QMatrix;
use crate::kernels::qgemm::{qgemm, qgemm_float, takes_float};
pub use crate::kernels::qgemv::MAX_ROWS;
use crate::kernels::qgemv::{
    Epilogue, Gated, Pool, XMode, apply, float_matrix, gemv_float, gemv_norm_gated, gemv_words, norm_gated_input, xin,
};
use crate::kernels::uses_wgsl;
use crate::weights::Loader;

/// One row block of a quantized weight: its blocks as words, and its geometry.
#[derive(Debug, Clone)]
pub struct QuantBlock {
    pub words: Tensor<1, Int>,
    pub matrix: QMatrix,
}

#[derive(Debug, Clone)]
pub enum Weight {
    /// `[out, in]` as stored in checkpoints, as one or more row blocks.
    Float(Vec<Tensor<2>>),
    Quant(Vec<QuantBlock>),
}

#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Weight,
    /// `[out]` (f32).
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn new(weight: Tensor<2>) -> Self {
        Self {
            weight: Weight::Float(vec![weight]),
            bias: None,
        }
    }

    /// The `[out, input]` matrix `name`, quantized when the loader quantizes.
    pub fn load(loader: &Loader<'_>, name: &str, out: usize, input: usize) -> Result<Self, WeightsError> {
        Self::load_stacked(loader, &[(name, out)], input)
    }

    /// Matrices `(name, rows)` of `input` columns stacked by rows into one weight (gate and up
    /// into gate_up), quantized when the loader quantizes.
    pub fn load_stacked(loader: &Loader<'_>, parts: &[(&str, usize)], input: usize) -> Result<Self, WeightsError> {
        let weight = match loader.quant_for(input) {
            Some(q) if uses_wgsl(loader.device) => {
                let blocks = loader.quant_blocks(parts, input, q)?;
                Weight::Quant(blocks.into_iter().map(|(words, matrix)| QuantBlock { words, matrix }).collect())
            }
            Some(q) => Weight::Float(vec![loader.quant_dequantized(parts, input, q)?]),
            None if parts.len() == 1 => Weight::Float(loader.matrix_rows(parts[0].0, [parts[0].1, input])?),
            None => {
                let matrices = parts.iter().map(|&(name, rows)| loader.matrix(name, [rows, input]));
                Weight::Float(vec![Tensor::cat(matrices.collect::<Result<_, _>>()?, 0)])
            }
        };
        Ok(Self { weight, bias: None })
    }

    /// The `[out, input]` matrix `name` in the float type, never quantized (an embedding
    /// table, whose rows are looked up).
    pub fn load_float(loader: &Loader<'_>, name: &str, out: usize, input: usize) -> Result<Self, WeightsError> {
        Ok(Self {
            weight: Weight::Float(loader.matrix_rows(name, [out, input])?),
            bias: None,
        })
    }

    /// Adds the bias vector `name` (`[out]`).
    pub fn with_bias(mut self, loader: &Loader<'_>, name: &str) -> Result<Self, WeightsError> {
        self.bias = Some(loader.vector(name, [self.out_features()])?);
        Ok(self)
    }

    /// # Shapes
    /// `x`: `[T, in]` f32 → `[T, out]` f32.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.project(x, XMode::Rows { per: 1 }, Epilogue::None)
    }

    /// `epilogue(x Wᵀ + b)` (not [`Epilogue::Combine`]).
    ///
    /// # Shapes
    /// `x`: `[T, in]` f32 → `[T, out]` f32 (a gate's values `[T, out]`).
    pub fn forward_with(&self, x: Tensor<2>, epilogue: Epilogue) -> Tensor<2> {
        self.project(x, XMode::Rows { per: 1 }, epilogue)
    }

    /// `a Wᵀ + b` with `a = silu(h[:, ..in]) ⊙ h[:, in..]`, the SwiGLU of a gate_up output.
    ///
    /// # Shapes
    /// `h`: `[T, 2·in]` f32 → `[T, out]` f32.
    pub fn forward_swiglu(&self, h: Tensor<2>) -> Tensor<2> {
        self.project(h, XMode::SwiGlu, Epilogue::None)
    }

    /// `xin Wᵀ + b` with `xin` the RMS-normalised, gated values of `x` ([`XMode::NormGated`]:
    /// `x` is `[T, in + parts]`, the values then partial sums of their squares, and the gate is
    /// columns `offset ..` of `gated.values`). Decode reads them so in one launch; otherwise
    /// `xin` is formed first.
    pub fn forward_norm_gated(&self, x: Tensor<2>, gated: Gated) -> Tensor<2> {
        let [t, width] = x.dims();
        let k = self.in_features();
        let pool = match &self.weight {
            Weight::Float(parts) if parts.len() == 1 && gemv_reads(&parts[0]) => {
                float_matrix(&parts[0]).ok().map(|m| (Pool::Float(&parts[0]), m))
            }
            Weight::Quant(blocks) if blocks.len() == 1 => Some((Pool::Words(&blocks[0].words), blocks[0].matrix)),
            _ => None,
        };
        if let Some((pool, m)) = pool.filter(|_| t <= MAX_ROWS && width > k && self.bias.is_none() && uses_wgsl(&x.device())) {
            return gemv_norm_gated(x, gated, pool, m).expect("shapes are checked at load");
        }
        self.forward(norm_gated_input(x, &gated, k))
    }

    /// `epilogue(xin Wᵀ + b)`, with `xin` read from `x` as `mode` says. On a GPU, up to
    /// [`MAX_ROWS`] rows go through the decode kernel, which reads the SwiGLU straight from `x`
    /// and, for a weight in one piece without bias, applies the epilogue too; more rows take a
    /// tiled matmul.
    fn project(&self, x: Tensor<2>, mode: XMode, epilogue: Epilogue) -> Tensor<2> {
        let few = x.dims()[0] <= MAX_ROWS && uses_wgsl(&x.device());
        let pieces = match &self.weight {
            Weight::Float(parts) => parts.len(),
            Weight::Quant(blocks) => blocks.len(),
        };
        let (fused, after) = if few && pieces == 1 && self.bias.is_none() {
            (epilogue, Epilogue::None)
        } else {
            (Epilogue::None, epilogue)
        };
        let mut ys: Vec<Tensor<2>> = match &self.weight {
            // Decode: a bandwidth-bound pass over each weight, never a general matmul.
            Weight::Float(parts) if few && parts.iter().all(gemv_reads) => parts
                .iter()
                .map(|w| gemv_float(x.clone(), w, mode, fused.clone()).expect("float weights are checked at load"))
                .collect(),
            // Prefill on tensor cores, where the device has cooperative matrices.
            Weight::Float(parts) if !few && parts.iter().all(takes_float) => parts
                .iter()
                .map(|w| apply(qgemm_float(x.clone(), w, mode).expect("f16 weights are checked at load"), fused.clone()))
                .collect(),
            Weight::Float(parts) => {
                let dtype = parts[0].dtype();
                let x = match mode {
                    XMode::SwiGlu => xin(x, mode, parts[0].dims()[1]),
                    XMode::Rows { .. } => x,
                    XMode::NormGated { .. } => unreachable!("see forward_norm_gated"),
                };
                let x = if dtype == DType::F32 { x } else { x.cast(dtype) };
                let ys = parts.iter().map(|w| x.clone().matmul(w.clone().transpose()));
                let ys = ys.map(|y| if dtype == DType::F32 { y } else { y.cast(DType::F32) });
                ys.map(|y| apply(y, fused.clone())).collect()
            }
            Weight::Quant(blocks) => blocks
                .iter()
                .map(|b| quant_forward(x.clone(), b, mode, fused.clone()).expect("quantized weights are checked at load"))
                .collect(),
        };
        let y = if ys.len() == 1 { ys.pop().unwrap() } else { Tensor::cat(ys, 1) };
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim::<2>(0),
            None => y,
        };
        apply(y, after)
    }

    pub fn in_features(&self) -> usize {
        match &self.weight {
            Weight::Float(parts) => parts[0].dims()[1],
            Weight::Quant(blocks) => blocks[0].matrix.cols,
        }
    }

    pub fn out_features(&self) -> usize {
        match &self.weight {
            Weight::Float(parts) => parts.iter().map(|w| w.dims()[0]).sum(),
            Weight::Quant(blocks) => blocks.iter().map(|b| b.matrix.rows).sum(),
        }
    }

    /// The float row blocks (`None` for a quantized weight).
    pub fn float_parts(&self) -> Option<&[Tensor<2>]> {
        match &self.weight {
            Weight::Float(parts) => Some(parts),
            Weight::Quant(_) => None,
        }
    }

    /// How the weight is stored: the float dtype, or the block format's name.
    pub fn storage(&self) -> String {
        match &self.weight {
            Weight::Float(parts) => format!("{:?}", parts[0].dtype()),
            Weight::Quant(blocks) => blocks[0].matrix.dtype.name().to_string(),
        }
    }
}

/// Whether the decode kernel reads a float weight (f32, or f16 rows of whole words).
fn gemv_reads(w: &Tensor<2>) -> bool {
    match w.dtype() {
        DType::F32 => true,
        DType::F16 => w.dims()[1].is_multiple_of(2),
        _ => false,
    }
}

/// `epilogue(xin Wᵀ)` for one quantized row block: the expert kernels with a one-entry table
/// (the block is the only "expert", at word 0) and every row routed to it.
fn quant_forward(x: Tensor<2>, block: &QuantBlock, mode: XMode, epilogue: Epilogue) -> Result<Tensor<2>, Error> {
    let [t, _] = x.dims();
    if t > MAX_ROWS {
        return Ok(apply(qgemm(x, &block.words, 0, block.matrix, mode)?, epilogue));
    }
    Ok(gemv_words(x, &block.words, block.matrix, mode, epilogue)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experts::synthetic::random_matrix;
    use crate::weights::StoredDType;
    use crate::weights::quant::dequantize;
    use burn::tensor::{Distribution, TensorData};

    /// A quantized Linear on the GPU against the f32 matmul of its decoded blocks, for row
    /// counts on both sides of [`MAX_ROWS`] and odd shapes.
    #[test]
    fn quantized_forward_matches_decoded_matmul() {
        let Some(device) = crate::device::test_gpu_or_skip("quantized linear test") else { return };
        for dtype in [StoredDType::Q8_0, StoredDType::Q4_1] {
            for (rows, cols) in [(96, 64), (200, 256), (768, 256), (33, 96)] {
                let bytes = random_matrix(dtype, rows, cols, 7, 0.05);
                let w = Tensor::<2>::from_data(TensorData::new(dequantize(dtype, &bytes), [rows, cols]), &device);
                let block = QuantBlock {
                    words: crate::weights::quantized::words(bytes, &device),
                    matrix: QMatrix { dtype, rows, cols, offset: 0 },
                };
                let linear = Linear { weight: Weight::Quant(vec![block]), bias: None };
                for t in [1, 3, 8, 9, 20, 70] {
                    let x = Tensor::<2>::random([t, cols], Distribution::Normal(0.0, 1.0), &device);
                    let want = x.clone().matmul(w.clone().transpose()).into_data().try_to_vec::<f32>().unwrap();
                    let got = linear.forward(x).into_data().try_to_vec::<f32>().unwrap();
                    let err = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(err < 1e-4, "{} [{rows}, {cols}], {t} rows: max-abs {err}", dtype.name());
                }
            }
        }
    }
}
