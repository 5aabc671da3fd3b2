//! Weights: where tensors come from (safetensors files or a seeded random init for synthetic
//! benchmark models) and the checked loading of named, shaped tensors onto a device.

mod names;
mod safetensors;

pub use names::{MOE_PREFIXES, Names};
pub use safetensors::{RawTensor, SafetensorsSet, ShardBytes, StoredDType, shard_files_from_index};

use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};

use crate::error::WeightsError;

/// Where weights come from.
pub enum WeightSource {
    /// Stored tensors (a Hugging Face checkpoint directory).
    Files(SafetensorsSet),
    /// Random weights generated on the device: synthetic models for benchmarks.
    /// Matrices are drawn from N(0, std²); norm weights are ones.
    Random { std: f64 },
}

impl WeightSource {
    /// Opens a Hugging Face model directory: `model.safetensors`, or the shards listed by
    /// `model.safetensors.index.json`. Files are memory-mapped.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_dir(dir: &std::path::Path) -> Result<Self, WeightsError> {
        use std::sync::Arc;
        let io = |path: &std::path::Path| {
            let path_s = path.display().to_string();
            move |source| WeightsError::Io {
                path: path_s.clone(),
                source,
            }
        };
        let index = dir.join("model.safetensors.index.json");
        let files = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(io(&index))?;
            shard_files_from_index(&text, &index.display().to_string())?
        } else if dir.join("model.safetensors").exists() {
            vec!["model.safetensors".to_string()]
        } else {
            return Err(WeightsError::NoWeights(dir.display().to_string()));
        };
        let mut shards = Vec::new();
        for file in files {
            let path = dir.join(&file);
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read-only; a checkpoint modified while it is mapped is a
            // user error that at worst yields wrong values, as with any mmap-based loader.
            let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io(&path))?;
            shards.push((path.display().to_string(), Arc::new(map) as ShardBytes));
        }
        Ok(WeightSource::Files(SafetensorsSet::from_shards(shards)?))
    }

    /// Whether tensor `name` exists (always true for random weights).
    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightSource::Files(set) => set.contains(name),
            WeightSource::Random { .. } => true,
        }
    }
}

/// Loads named tensors onto one device, checking their shapes.
pub struct Loader<'a> {
    pub source: &'a WeightSource,
    pub device: &'a Device,
    /// Storage type of the big matrices (f32, or f16 on GPUs that have it).
    pub matrix_dtype: DType,
    /// Largest tensor one storage binding may hold (`None`: unlimited, on the CPU).
    pub max_binding_bytes: Option<u64>,
}

impl Loader<'_> {
    /// A matrix (or stack of matrices) stored in `matrix_dtype`.
    pub fn matrix<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>, WeightsError> {
        self.load(name, shape, self.matrix_dtype, false)
    }

    /// A matrix split into row blocks that each fit one storage binding (one block when the
    /// whole matrix fits).
    pub fn matrix_rows(&self, name: &str, shape: [usize; 2]) -> Result<Vec<Tensor<2>>, WeightsError> {
        let [rows, cols] = shape;
        let row_bytes = (cols * self.matrix_dtype.size()) as u64;
        let max_rows = match self.max_binding_bytes {
            Some(limit) => ((limit / row_bytes.max(1)) as usize).max(1),
            None => rows,
        };
        if rows <= max_rows {
            return Ok(vec![self.matrix(name, shape)?]);
        }
        let blocks = rows.div_ceil(max_rows);
        let per = rows.div_ceil(blocks);
        (0..blocks)
            .map(|b| {
                let start = b * per;
                let n = per.min(rows - start);
                self.row_block(name, &shape, start, n, cols)
            })
            .collect()
    }

    /// Rows `start..start + n` of tensor `name` (stored with shape `stored`) viewed as a
    /// matrix of `cols` columns.
    fn row_block(&self, name: &str, stored: &[usize], start: usize, n: usize, cols: usize) -> Result<Tensor<2>, WeightsError> {
        let options = (self.device, self.matrix_dtype);
        let block = [n, cols];
        match self.source {
            WeightSource::Random { std } => Ok(Tensor::random(block, Distribution::Normal(0.0, *std), options)),
            WeightSource::Files(set) => {
                let raw = self.raw(set, name, stored)?;
                let row = cols * raw.bytes.len() / stored.iter().product::<usize>().max(1);
                let part = RawTensor {
                    dtype: raw.dtype,
                    shape: &block,
                    bytes: &raw.bytes[start * row..(start + n) * row],
                };
                Ok(Tensor::from_data(TensorData::new(part.to_f32(), block), options))
            }
        }
    }

    /// A small tensor that stays f32 (norm weights, router).
    pub fn vector<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>, WeightsError> {
        self.load(name, shape, DType::F32, true)
    }

    /// The router of a MoE block: kept in f32 so that expert choice does not depend on the
    /// storage type of the matrices.
    pub fn router(&self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>, WeightsError> {
        self.load(name, shape, DType::F32, false)
    }

    /// Row block `index` of a stacked `[N, R, C]` tensor, as an `[R, C]` matrix. Stacked
    /// expert weights are sliced on the host, so no single device buffer ever holds all experts
    /// (they can exceed the storage-binding limit).
    pub fn matrix_of_stack(&self, name: &str, stacked: [usize; 3], index: usize) -> Result<Tensor<2>, WeightsError> {
        let (r, c) = (stacked[1], stacked[2]);
        self.row_block(name, &stacked, index * r, r, c)
    }

    fn raw<'s>(&self, set: &'s SafetensorsSet, name: &str, shape: &[usize]) -> Result<RawTensor<'s>, WeightsError> {
        let raw = set.get(name)?.ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
            expected: shape.to_vec(),
        })?;
        if raw.shape != shape {
            return Err(WeightsError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: raw.shape.to_vec(),
            });
        }
        Ok(raw)
    }

    fn load<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: DType,
        ones_if_random: bool,
    ) -> Result<Tensor<D>, WeightsError> {
        let options = (self.device, dtype);
        match self.source {
            WeightSource::Random { std } => Ok(if ones_if_random {
                Tensor::ones(shape, options)
            } else {
                Tensor::random(shape, Distribution::Normal(0.0, *std), options)
            }),
            WeightSource::Files(set) => {
                let raw = self.raw(set, name, &shape)?;
                let data = TensorData::new(raw.to_f32(), shape);
                Ok(Tensor::from_data(data, options))
            }
        }
    }
}
