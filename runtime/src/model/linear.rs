//! A bias-free linear layer `y = x Wᵀ` whose weight may be stored in a narrower float type
//! than the f32 activations, and split into row blocks when it is larger than one storage
//! binding may be (a 200k-token vocabulary at hidden 6144 is 2.4 GB in f16, while WebGPU
//! adapters bind 128 MiB to 2 GiB at once).

use burn::tensor::{DType, Tensor};

use crate::error::WeightsError;
use crate::weights::Loader;

/// `W`: `[out, in]` as stored in checkpoints, as one or more row blocks; `b`: `[out]` (f32).
#[derive(Debug, Clone)]
pub struct Linear {
    pub parts: Vec<Tensor<2>>,
    pub bias: Option<Tensor<1>>,
}

impl Linear {
    pub fn new(weight: Tensor<2>) -> Self {
        Self {
            parts: vec![weight],
            bias: None,
        }
    }

    pub fn load(loader: &Loader<'_>, name: &str, out: usize, input: usize) -> Result<Self, WeightsError> {
        Ok(Self {
            parts: loader.matrix_rows(name, [out, input])?,
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
        let dtype = self.parts[0].dtype();
        let x = if dtype == DType::F32 { x } else { x.cast(dtype) };
        let mut ys: Vec<Tensor<2>> = self
            .parts
            .iter()
            .map(|w| x.clone().matmul(w.clone().transpose()))
            .collect();
        let y = if ys.len() == 1 { ys.pop().unwrap() } else { Tensor::cat(ys, 1) };
        let y = if dtype == DType::F32 { y } else { y.cast(DType::F32) };
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze_dim::<2>(0),
            None => y,
        }
    }

    pub fn out_features(&self) -> usize {
        self.parts.iter().map(|w| w.dims()[0]).sum()
    }
}
