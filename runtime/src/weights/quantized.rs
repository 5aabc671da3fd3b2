//! Loading big matrices as ggml blocks ([`Loader::quant`] set): the weights of quantized
//! linear layers. Host memory holds one row block at a time, read in pieces.
//!
//! Stored blocks are never quantized again: a GGUF's Q8_0 and Q4_1 tensors keep their format
//! and bytes whatever format was asked for, and Q4_0 is rewritten as Q4_1 with the same
//! values. Float tensors are quantized here to the format asked for, and random weights
//! (synthetic models) are random blocks with sane scales.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::quant::{dequantize, q4_0_to_q4_1};
use super::quantize::quantize;
use super::{Loader, RawTensor, STAGING_BYTES, StoredDType, WeightSource};
use crate::error::WeightsError;
use crate::experts::QMatrix;
use crate::experts::synthetic::random_matrix;

impl Loader<'_> {
    /// The block format matrices of `cols` columns are quantized to: `None` when the loader
    /// does not quantize, or when a row is not whole blocks.
    pub fn quant_for(&self, cols: usize) -> Option<StoredDType> {
        self.quant.filter(|q| q.row_bytes(cols).is_some())
    }

    /// Matrices `(name, rows)` of `cols` columns, stacked by rows, as blocks on the device (of
    /// their stored format, or `q`; see [`Self::block_format`]): row blocks that each fit one
    /// storage binding, with their geometry.
    pub fn quant_blocks(&self, parts: &[(&str, usize)], cols: usize, q: StoredDType) -> Result<Vec<(Tensor<1, Int>, QMatrix)>, WeightsError> {
        self.check_parts(parts, cols)?;
        let q = self.block_format(parts, q)?;
        let row_bytes = q.row_bytes(cols).expect("checked by quant_for");
        let total: usize = parts.iter().map(|p| p.1).sum();
        // Kernels address a block with u32 byte offsets: stay under 2 GiB as well.
        let limit = self.max_binding_bytes.unwrap_or(u64::MAX).min(1 << 31);
        let max_rows = ((limit / row_bytes as u64) as usize).clamp(1, total.max(1));
        let blocks = total.div_ceil(max_rows);
        let per = total.div_ceil(blocks);
        let mut out = Vec::new();
        for b in 0..blocks {
            let (start, rows) = (b * per, per.min(total - b * per));
            let mut bytes = Vec::with_capacity(rows * row_bytes);
            for (name, stored, at, n) in pieces(parts, start, rows, (STAGING_BYTES / row_bytes).max(1)) {
                bytes.extend(self.quant_bytes(name, stored, at, n, cols, q)?);
            }
            let matrix = QMatrix { dtype: q, rows, cols, offset: 0 };
            out.push((words(bytes, self.device), matrix));
        }
        Ok(out)
    }

    /// The same stacked matrices decoded back to f32 on the host: what the CPU backend runs,
    /// so that it sees exactly the values a GPU's quantized kernels see.
    pub fn quant_dequantized(&self, parts: &[(&str, usize)], cols: usize, q: StoredDType) -> Result<Tensor<2>, WeightsError> {
        self.check_parts(parts, cols)?;
        let q = self.block_format(parts, q)?;
        let total: usize = parts.iter().map(|p| p.1).sum();
        let mut values = Vec::with_capacity(total * cols);
        let piece_rows = (STAGING_BYTES / (cols * 4)).max(1);
        for (name, stored, at, n) in pieces(parts, 0, total, piece_rows) {
            values.extend(dequantize(q, &self.quant_bytes(name, stored, at, n, cols, q)?));
        }
        Ok(Tensor::from_data(TensorData::new(values, [total, cols]), self.device))
    }

    /// Checks the stored shapes of all `parts` before anything is allocated for them: the
    /// sizes come from the config, and only tensors of those shapes bound them by the bytes
    /// actually stored (a GGUF whose metadata claims a huge model fails here, not in an
    /// allocation).
    fn check_parts(&self, parts: &[(&str, usize)], cols: usize) -> Result<(), WeightsError> {
        if let WeightSource::Files(set) = self.source {
            for &(name, rows) in parts {
                self.check_shape(set.as_ref(), name, &[rows, cols])?;
            }
        }
        Ok(())
    }

    /// The format stacked matrices are kept in: their stored block format when they all share
    /// one the kernels read (Q4_0 counting as Q4_1), otherwise `requested`.
    fn block_format(&self, parts: &[(&str, usize)], requested: StoredDType) -> Result<StoredDType, WeightsError> {
        let WeightSource::Files(set) = self.source else { return Ok(requested) };
        let mut formats = Vec::new();
        for &(name, _) in parts {
            formats.push(match set.dtype_of(name)? {
                Some(StoredDType::Q8_0) => Some(StoredDType::Q8_0),
                Some(StoredDType::Q4_0 | StoredDType::Q4_1) => Some(StoredDType::Q4_1),
                _ => None,
            });
        }
        Ok(match formats[..] {
            [Some(first), ..] if formats.iter().all(|f| *f == Some(first)) => first,
            _ => requested,
        })
    }

    /// Rows `at..at + n` of `name` (`stored` rows of `cols`) as `q` blocks.
    fn quant_bytes(&self, name: &str, stored: usize, at: usize, n: usize, cols: usize, q: StoredDType) -> Result<Vec<u8>, WeightsError> {
        let set = match self.source {
            WeightSource::Random { std } => return Ok(random_matrix(q, n, cols, seed(name, at), *std as f32)),
            WeightSource::Files(set) => set.as_ref(),
        };
        self.check_shape(set, name, &[stored, cols])?;
        let raw = set.get_rows(name, at, n, cols)?.ok_or_else(|| WeightsError::Missing {
            name: name.to_string(),
            expected: vec![stored, cols],
        })?;
        self.report(raw.bytes.len());
        Ok(to_blocks(raw, q))
    }
}

/// `raw` as `q` blocks: its blocks as stored, or Q4_0 rewritten losslessly as Q4_1, or its
/// values quantized (floats, and the rare Q4_0 block whose Q4_1 form overflows f16).
pub(crate) fn to_blocks(raw: RawTensor, q: StoredDType) -> Vec<u8> {
    if raw.dtype == q {
        return raw.bytes.into_owned();
    }
    if (raw.dtype, q) == (StoredDType::Q4_0, StoredDType::Q4_1)
        && let Some(bytes) = q4_0_to_q4_1(&raw.bytes)
    {
        return bytes;
    }
    quantize(q, &raw.to_f32())
}

/// Rows `start..start + rows` of matrices stacked by rows, cut at matrix boundaries and every
/// `max` rows: `(name, its rows, first row in it, rows)`.
fn pieces<'a>(parts: &[(&'a str, usize)], start: usize, rows: usize, max: usize) -> Vec<(&'a str, usize, usize, usize)> {
    let mut out = Vec::new();
    let mut base = 0;
    for &(name, n) in parts {
        let (lo, hi) = (start.max(base), (start + rows).min(base + n));
        let mut at = lo;
        while at < hi {
            let take = max.min(hi - at);
            out.push((name, n, at - base, take));
            at += take;
        }
        base += n;
    }
    out
}

/// Block bytes as the `[words]` Int tensor the kernels read (padded to whole words).
pub fn words(mut bytes: Vec<u8>, device: &Device) -> Tensor<1, Int> {
    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
    let words: Vec<i32> = bytes.chunks_exact(4).map(|w| i32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
    let n = words.len();
    Tensor::from_data(TensorData::new(words, [n]), device)
}

/// A seed per matrix and row for random blocks.
fn seed(name: &str, row: usize) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)) ^ row as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{SafetensorsSet, ShardBytes};
    use burn::tensor::DType;
    use std::sync::Arc;

    /// A config's sizes are checked against the stored tensors before a buffer of that size
    /// is reserved: a fuzzed GGUF once made this reserve 927 GB and abort (see FUZZING.md).
    #[test]
    fn shapes_are_checked_before_allocating() {
        let data = vec![0u8; 2 * 32 * 4];
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 32], &data).unwrap();
        let bytes: ShardBytes = Arc::new(safetensors::serialize([("w", view)], None).unwrap());
        let source = WeightSource::Files(Arc::new(SafetensorsSet::from_shards([("w.safetensors".into(), bytes)]).unwrap()));
        let device = Device::flex();
        let loader = Loader { source: &source, device: &device, matrix_dtype: DType::F32, max_binding_bytes: None, quant: Some(StoredDType::Q8_0), progress: None };
        let e = loader.quant_dequantized(&[("w", 1 << 30)], 1 << 20, StoredDType::Q8_0).unwrap_err();
        assert!(matches!(e, WeightsError::Shape { .. }), "{e}");
        let e = loader.quant_blocks(&[("w", 2), ("w", 1 << 40)], 32, StoredDType::Q8_0).err().unwrap();
        assert!(matches!(e, WeightsError::Shape { .. }), "{e}");
        assert_eq!(loader.quant_dequantized(&[("w", 2)], 32, StoredDType::Q8_0).unwrap().dims(), [2, 32]);
    }

    #[test]
    fn pieces_cut_at_matrix_boundaries_and_size() {
        let parts = [("gate", 5), ("up", 5)];
        assert_eq!(pieces(&parts, 0, 10, 4), vec![("gate", 5, 0, 4), ("gate", 5, 4, 1), ("up", 5, 0, 4), ("up", 5, 4, 1)]);
        assert_eq!(pieces(&parts, 3, 4, 10), vec![("gate", 5, 3, 2), ("up", 5, 0, 2)]);
        assert_eq!(pieces(&parts, 7, 3, 10), vec![("up", 5, 2, 3)]);
    }
}
