//! Weights: where tensors come from (safetensors files or a seeded random init for synthetic
//! benchmark models) and the checked loading of named, shaped tensors onto a device.

#[cfg(not(target_arch = "wasm32"))]
pub mod file_source;
mod gguf;
mod gguf_tokenizer;
mod names;
pub mod quant;
pub mod quantize;
pub mod quantized;
pub mod safetensors;

pub use gguf::{GgufFile, MetaValue};
pub use names::{MOE_PREFIXES, Names};
pub use quant::GgmlType;
pub use safetensors::{SafetensorsSet, shard_files_from_index};

use std::borrow::Cow;
use std::sync::Arc;

use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};

use crate::error::WeightsError;

/// Owner of a file's bytes in memory: a memory map natively, a buffer, or the demo model
/// compiled into the binary.
pub type ShardBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Random access to the bytes of one file. Safetensors shards are read through it tensor by
/// tensor, so only one tensor at a time has to be in memory: natively the source is a memory
/// map; in a browser worker it is an OPFS file, a `Blob` or HTTP Range requests.
pub trait ByteSource: Send + Sync {
    fn len(&self) -> u64;
    /// Bytes `offset .. offset + len`.
    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError>;
    /// Bytes `offset .. offset + out.len()` into `out`.
    fn read_into(&self, offset: u64, out: &mut [u8]) -> Result<(), WeightsError> {
        out.copy_from_slice(&self.read(offset, out.len())?);
        Ok(())
    }
}

impl ByteSource for ShardBytes {
    fn len(&self) -> u64 {
        (**self).as_ref().len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        let bytes = (**self).as_ref();
        let start = offset as usize;
        bytes
            .get(start..start.saturating_add(len))
            .map(Cow::Borrowed)
            .ok_or_else(|| WeightsError::Format {
                path: "<memory>".into(),
                reason: format!("read of {len} bytes at {offset} past the end ({} bytes)", bytes.len()),
            })
    }
}

/// Element type of a stored tensor: a float type, or a ggml block format (layouts and block
/// geometry in [`quant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum StoredDType {
    F32,
    F16,
    BF16,
    /// 32 × i8 with one f16 scale per block.
    Q8_0,
    /// 32 × 4-bit with one f16 scale per block, offset 8.
    Q4_0,
    /// 32 × 4-bit with an f16 scale and an f16 minimum per block.
    Q4_1,
}

/// A typed view of one stored tensor, under its Hugging Face name and shape. The bytes are
/// borrowed from the file where possible, owned where the format stores them differently.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl<'a> RawTensor<'a> {
    /// Decodes (and dequantizes) to f32 (little-endian storage; works on unaligned bytes).
    pub fn to_f32(&self) -> Vec<f32> {
        quant::dequantize(self.dtype, &self.bytes)
    }

    /// Rows `start..start + n` of this tensor seen as `[rows, cols]` (row-major; a row of a
    /// block-quantised tensor is a whole number of blocks).
    pub fn into_rows(self, start: usize, n: usize, cols: usize) -> RawTensor<'a> {
        let rows = self.shape.iter().product::<usize>() / cols.max(1);
        let row = self.bytes.len() / rows.max(1);
        let range = start * row..(start + n) * row;
        let bytes = match self.bytes {
            Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
            Cow::Owned(b) => Cow::Owned(b[range].to_vec()),
        };
        RawTensor {
            dtype: self.dtype,
            shape: vec![n, cols],
            bytes,
        }
    }
}

/// A set of stored tensors addressed by their Hugging Face names.
pub trait TensorStore: Send + Sync {
    fn contains(&self, name: &str) -> bool;
    /// All tensor names, in no particular order.
    fn names(&self) -> Vec<String>;
    /// The stored tensor `name`, if present.
    fn get(&self, name: &str) -> Result<Option<RawTensor<'_>>, WeightsError>;

    /// Stored bytes of tensor `name`; stores that read lazily override it to read nothing.
    fn byte_len(&self, name: &str) -> Result<Option<u64>, WeightsError> {
        Ok(self.get(name)?.map(|t| t.bytes.len() as u64))
    }

    /// The shape of tensor `name`, without reading it.
    fn shape_of(&self, name: &str) -> Result<Option<Vec<usize>>, WeightsError> {
        Ok(self.get(name)?.map(|t| t.shape))
    }

    /// The stored type of tensor `name`, reading at most its first row.
    fn dtype_of(&self, name: &str) -> Result<Option<StoredDType>, WeightsError> {
        let Some(shape) = self.shape_of(name)? else { return Ok(None) };
        let cols = shape.last().copied().unwrap_or(1);
        Ok(self.get_rows(name, 0, 1, cols)?.map(|t| t.dtype))
    }

    /// Rows `start..start + n` of tensor `name` viewed as `[rows, cols]`. Stores that read
    /// lazily override it to read only those bytes.
    fn get_rows(&self, name: &str, start: usize, n: usize, cols: usize) -> Result<Option<RawTensor<'_>>, WeightsError> {
        Ok(self.get(name)?.map(|t| t.into_rows(start, n, cols)))
    }
}

/// Where weights come from.
pub enum WeightSource {
    /// Stored tensors: a Hugging Face checkpoint directory, or a GGUF file.
    Files(Arc<dyn TensorStore>),
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
        Ok(WeightSource::Files(Arc::new(SafetensorsSet::from_shards(shards)?)))
    }

    /// Total bytes of the stored tensors (0 for random weights).
    pub fn stored_bytes(&self) -> u64 {
        match self {
            WeightSource::Files(set) => set
                .names()
                .iter()
                .filter_map(|n| set.byte_len(n).ok().flatten())
                .sum(),
            WeightSource::Random { .. } => 0,
        }
    }

    /// Whether the big matrices are stored in fewer than 32 bits (random weights count as 16).
    pub fn is_narrow(&self) -> bool {
        match self {
            WeightSource::Files(set) => set.dtype_of(&Names.embed()).ok().flatten().is_some_and(|d| d != StoredDType::F32),
            WeightSource::Random { .. } => true,
        }
    }

    /// The block format the linear layers are stored in (a GGUF's, or a pack's quantized
    /// dense tensors), judged by the lm_head or else layer 0's attention: Q8_0, or Q4_1 for
    /// Q4_0 and Q4_1. `None` for float checkpoints and random weights.
    pub fn stored_blocks(&self) -> Option<StoredDType> {
        let WeightSource::Files(set) = self else { return None };
        let n = Names;
        let candidates = [n.lm_head(), n.attn(0, "q_proj"), n.attn(0, "qkv_proj")];
        let name = candidates.iter().find(|name| set.contains(name))?;
        set.dtype_of(name).ok()??.runs_as()
    }

    /// Whether the embedding table is stored as f16, so that f16 holds it exactly (random
    /// weights count as f16).
    pub fn embedding_is_f16(&self) -> bool {
        match self {
            WeightSource::Files(set) => set.dtype_of(&Names.embed()).ok().flatten() == Some(StoredDType::F16),
            WeightSource::Random { .. } => true,
        }
    }

    /// Whether tensor `name` exists (always true for random weights).
    pub fn has(&self, name: &str) -> bool {
        match self {
            WeightSource::Files(set) => set.contains(name),
            WeightSource::Random { .. } => true,
        }
    }
}

/// Largest piece of a tensor converted on the host at once (f32 bytes).
pub const STAGING_BYTES: usize = 16 << 20;

/// Loads named tensors onto one device, checking their shapes.
pub struct Loader<'a> {
    pub source: &'a WeightSource,
    pub device: &'a Device,
    /// Storage type of the big matrices (f32, or f16 on GPUs that have it).
    pub matrix_dtype: DType,
    /// Largest tensor one storage binding may hold (`None`: unlimited, on the CPU).
    pub max_binding_bytes: Option<u64>,
    /// Block format (Q8_0 or Q4_1) of the big matrices of linear layers, if quantized (see
    /// [`quantized`]); embeddings, norms and routers stay float.
    pub quant: Option<StoredDType>,
    /// Called with the stored bytes of each piece read, for progress bars.
    pub progress: Option<&'a dyn Fn(u64)>,
}

impl Loader<'_> {
    /// A matrix stored in `matrix_dtype`.
    pub fn matrix(&self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>, WeightsError> {
        self.row_block(name, &shape, 0, shape[0], shape[1])
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
    /// matrix of `cols` columns. Large blocks travel to the device in pieces of at most
    /// [`STAGING_BYTES`] and are joined there, so host memory never holds a whole big tensor.
    fn row_block(&self, name: &str, stored: &[usize], start: usize, n: usize, cols: usize) -> Result<Tensor<2>, WeightsError> {
        let options = (self.device, self.matrix_dtype);
        let set = match self.source {
            WeightSource::Random { std } => {
                return Ok(Tensor::random([n, cols], Distribution::Normal(0.0, *std), options));
            }
            WeightSource::Files(set) => set.as_ref(),
        };
        self.check_shape(set, name, stored)?;
        let rows_per_piece = (STAGING_BYTES / (cols * 4).max(1)).max(1);
        let mut pieces = Vec::new();
        let mut at = start;
        while at < start + n {
            let take = rows_per_piece.min(start + n - at);
            let raw = set.get_rows(name, at, take, cols)?.ok_or_else(|| WeightsError::Missing {
                name: name.to_string(),
                expected: stored.to_vec(),
            })?;
            self.report(raw.bytes.len());
            pieces.push(Tensor::from_data(TensorData::new(raw.to_f32(), [take, cols]), options));
            at += take;
        }
        Ok(if pieces.len() == 1 { pieces.pop().unwrap() } else { Tensor::cat(pieces, 0) })
    }

    fn report(&self, bytes: usize) {
        if let Some(progress) = self.progress {
            progress(bytes as u64);
        }
    }

    fn check_shape(&self, set: &dyn TensorStore, name: &str, shape: &[usize]) -> Result<(), WeightsError> {
        match set.shape_of(name)? {
            None => Err(WeightsError::Missing {
                name: name.to_string(),
                expected: shape.to_vec(),
            }),
            Some(found) if found != shape => Err(WeightsError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found,
            }),
            Some(_) => Ok(()),
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
                self.check_shape(set.as_ref(), name, &shape)?;
                let raw = set.get(name)?.expect("present: its shape was just read");
                self.report(raw.bytes.len());
                Ok(Tensor::from_data(TensorData::new(raw.to_f32(), shape), options))
            }
        }
    }
}
