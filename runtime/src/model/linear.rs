//! A linear layer `y = x Wᵀ (+ b)` whose weight is stored narrower than the f32 activations:
//!
//! - **Float**: f32, or f16 on GPUs with shader-f16, multiplied by Burn's matmul.
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
use crate::kernels::qgemm::qgemm;
use crate::kernels::qgemv::{XMode, qgemv};
use crate::kernels::uses_wgsl;
use crate::weights::Loader;

/// Up to this many rows take `qgemv` (one pass over the weight per row, the decode case);
/// more take `qgemm`'s tiles.
pub const QGEMV_MAX_ROWS: usize = 8;

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
        let mut ys = match &self.weight {
            Weight::Float(parts) => {
                let dtype = parts[0].dtype();
                let x = if dtype == DType::F32 { x } else { x.cast(dtype) };
                let ys = parts.iter().map(|w| x.clone().matmul(w.clone().transpose()));
                ys.map(|y| if dtype == DType::F32 { y } else { y.cast(DType::F32) }).collect::<Vec<_>>()
            }
            Weight::Quant(blocks) => blocks
                .iter()
                .map(|b| quant_forward(x.clone(), b).expect("quantized weights are checked at load"))
                .collect(),
        };
        let y = if ys.len() == 1 { ys.pop().unwrap() } else { Tensor::cat(ys, 1) };
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim::<2>(0),
            None => y,
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

/// `x Wᵀ` for one quantized row block: the expert kernels with a one-entry table (the block
/// is the only "expert", at word 0) and every row routed to it.
fn quant_forward(x: Tensor<2>, block: &QuantBlock) -> Result<Tensor<2>, Error> {
    let [t, _] = x.dims();
    let device = x.device();
    let mode = XMode::Rows { per: 1 };
    if t > QGEMV_MAX_ROWS {
        return Ok(qgemm(x, &block.words, 0, block.matrix, mode)?);
    }
    let ids = Tensor::<1, Int>::zeros([t], &device);
    let table = Tensor::<1, Int>::zeros([1], &device);
    let y = Tensor::zeros([t, block.matrix.rows], &device);
    Ok(qgemv(x, ids, &table, &block.words, y, block.matrix, mode)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experts::synthetic::random_matrix;
    use crate::weights::StoredDType;
    use crate::weights::quant::dequantize;
    use burn::tensor::{Distribution, TensorData};

    /// A quantized Linear on the GPU against the f32 matmul of its decoded blocks, for row
    /// counts on both sides of [`QGEMV_MAX_ROWS`] and odd shapes.
    #[test]
    fn quantized_forward_matches_decoded_matmul() {
        let Some(device) = crate::device::test_gpu() else {
            eprintln!("!!! no wgpu adapter: quantized linear test SKIPPED");
            return;
        };
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
