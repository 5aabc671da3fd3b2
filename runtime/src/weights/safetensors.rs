//! Safetensors over bytes: one file or a sharded set (`model.safetensors.index.json`).
//!
//! A shard is any [`ByteSource`]: a memory map natively; OPFS, a `Blob` or HTTP Range requests
//! in the browser. Only the headers are parsed up front; each tensor's bytes are read on demand,
//! so a model never has to fit in memory at once.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;

use super::{ByteSource, RawTensor, ShardBytes, StoredDType, TensorStore};
use crate::error::WeightsError;

/// One entry of a safetensors header.
#[derive(Debug, Clone, Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

struct Shard {
    path: String,
    source: Box<dyn ByteSource>,
    /// Offset of the data section (8-byte length + JSON header).
    data_start: u64,
    tensors: HashMap<String, Entry>,
}

/// Headers larger than this are refused (real ones are a few hundred KiB).
const MAX_HEADER: u64 = 100 << 20;

/// A set of safetensors shards, addressed by tensor name. Only the headers are read up front;
/// each tensor's bytes are read from its source when asked for.
pub struct SafetensorsSet {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

impl SafetensorsSet {
    /// Builds the set from shards held in memory (or memory-mapped): `(path for messages, bytes)`.
    pub fn from_shards(shards: impl IntoIterator<Item = (String, ShardBytes)>) -> Result<Self, WeightsError> {
        Self::from_sources(shards.into_iter().map(|(path, bytes)| (path, Box::new(bytes) as Box<dyn ByteSource>)))
    }

    /// Builds the set from shards read through `ByteSource`s.
    pub fn from_sources(
        shards: impl IntoIterator<Item = (String, Box<dyn ByteSource>)>,
    ) -> Result<Self, WeightsError> {
        let mut set = SafetensorsSet {
            shards: Vec::new(),
            index: HashMap::new(),
        };
        for (path, source) in shards {
            let format = |reason: String| WeightsError::Format {
                path: path.clone(),
                reason,
            };
            let total = source.len();
            if total < 8 {
                return Err(format("shorter than a safetensors header".into()));
            }
            let n = u64::from_le_bytes(source.read(0, 8)?.as_ref().try_into().expect("8 bytes"));
            if n > MAX_HEADER || 8 + n > total {
                return Err(format(format!("header of {n} bytes does not fit a {total}-byte file (truncated?)")));
            }
            let header = source.read(8, n as usize)?;
            let mut entries: HashMap<String, serde_json::Value> =
                serde_json::from_slice(&header).map_err(|e| format(e.to_string()))?;
            let metadata = entries.remove("__metadata__");
            let data_start = 8 + n;
            let mut tensors = HashMap::new();
            for (name, value) in entries {
                let mut entry: Entry = serde_json::from_value(value).map_err(|e| format(format!("`{name}`: {e}")))?;
                let ggml = metadata.as_ref().and_then(|m| m.get(format!("{GGML_PREFIX}{name}"))).and_then(|v| v.as_str());
                if let Some(ggml) = ggml {
                    entry = blocks_entry(entry, ggml).map_err(|reason| format(format!("`{name}`: {reason}")))?;
                }
                let (a, b) = entry.data_offsets;
                if a > b || data_start.checked_add(b).is_none_or(|end| end > total) {
                    return Err(format(format!("tensor `{name}` runs past the end of the file (truncated?)")));
                }
                // Every count derived from a shape (rows, bytes) is then a checked product of
                // numbers that fit.
                if entry.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).is_none() {
                    return Err(format(format!("tensor `{name}`: shape {:?} overflows", entry.shape)));
                }
                set.index.insert(name.clone(), set.shards.len());
                tensors.insert(name, entry);
            }
            set.shards.push(Shard {
                path,
                source,
                data_start,
                tensors,
            });
        }
        Ok(set)
    }
}

impl TensorStore for SafetensorsSet {
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn shape_of(&self, name: &str) -> Result<Option<Vec<usize>>, WeightsError> {
        Ok(self.index.get(name).map(|&i| self.shards[i].tensors[name].shape.clone()))
    }

    fn byte_len(&self, name: &str) -> Result<Option<u64>, WeightsError> {
        Ok(self.index.get(name).map(|&i| {
            let (a, b) = self.shards[i].tensors[name].data_offsets;
            b - a
        }))
    }

    fn get_rows(&self, name: &str, start: usize, n: usize, cols: usize) -> Result<Option<RawTensor<'_>>, WeightsError> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let entry = &shard.tensors[name];
        let dtype = dtype_of(name, shard, entry)?;
        // The caller's rows and columns are checked against the entry's bytes, in u64 that
        // cannot overflow.
        let (first, last) = entry.data_offsets;
        let range = dtype.row_bytes(cols).and_then(|row| {
            let begin = first.checked_add((start as u64).checked_mul(row as u64)?)?;
            let len = (n as u64).checked_mul(row as u64)?;
            (begin.checked_add(len)? <= last).then_some((begin, len))
        });
        let Some((begin, len)) = range else {
            return Err(WeightsError::Format {
                path: shard.path.clone(),
                reason: format!("rows {start}..{} of {cols} columns of `{name}` are out of range", start.saturating_add(n)),
            });
        };
        Ok(Some(RawTensor {
            dtype,
            shape: vec![n, cols],
            bytes: shard.source.read(shard.data_start + begin, len as usize)?,
        }))
    }

    fn get(&self, name: &str) -> Result<Option<RawTensor<'_>>, WeightsError> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let entry = &shard.tensors[name];
        let dtype = dtype_of(name, shard, entry)?;
        let (a, b) = entry.data_offsets;
        let (last, rows) = entry.shape.split_last().map_or((1, 1), |(l, r)| (*l, r.iter().product()));
        if Some((b - a) as usize) != dtype.row_bytes(last).and_then(|r| r.checked_mul(rows)) {
            return Err(WeightsError::Format {
                path: shard.path.clone(),
                reason: format!("tensor `{name}` holds {} bytes for shape {:?}", b - a, entry.shape),
            });
        }
        let bytes: Cow<'_, [u8]> = shard.source.read(shard.data_start + a, (b - a) as usize)?;
        Ok(Some(RawTensor {
            dtype,
            shape: entry.shape.clone(),
            bytes,
        }))
    }
}

fn dtype_of(name: &str, shard: &Shard, entry: &Entry) -> Result<StoredDType, WeightsError> {
    match entry.dtype.as_str() {
        "F32" => Ok(StoredDType::F32),
        "F16" => Ok(StoredDType::F16),
        "BF16" => Ok(StoredDType::BF16),
        "Q8_0" => Ok(StoredDType::Q8_0),
        "Q4_0" => Ok(StoredDType::Q4_0),
        "Q4_1" => Ok(StoredDType::Q4_1),
        other => Err(WeightsError::DType {
            name: format!("{name} (in {})", shard.path),
            dtype: other.to_string(),
        }),
    }
}

/// Header metadata key prefix marking a tensor of ggml blocks: `"ggml:<name>": "Q4_1"` says
/// that the `U8` tensor `<name>` of shape `[rows, row_bytes]` holds `[rows, cols]` weights as
/// Q4_1 blocks. Expert packs store quantized linear layers this way in `dense.safetensors`;
/// other readers see plain bytes.
pub const GGML_PREFIX: &str = "ggml:";

/// A `U8` `[rows, row_bytes]` entry seen as `[rows, cols]` of the ggml type `ggml`.
fn blocks_entry(entry: Entry, ggml: &str) -> Result<Entry, String> {
    let dtype = match ggml {
        "Q8_0" => StoredDType::Q8_0,
        "Q4_0" => StoredDType::Q4_0,
        "Q4_1" => StoredDType::Q4_1,
        other => return Err(format!("unknown ggml block type {other}")),
    };
    match entry.shape[..] {
        [rows, row_bytes] if entry.dtype == "U8" && row_bytes % dtype.block_bytes() == 0 => Ok(Entry {
            dtype: ggml.to_string(),
            shape: vec![rows, row_bytes / dtype.block_bytes() * dtype.block_elems()],
            data_offsets: entry.data_offsets,
        }),
        _ => Err(format!("{ggml} blocks need a U8 [rows, row_bytes] tensor, not {} {:?}", entry.dtype, entry.shape)),
    }
}

/// The shard file names listed by a `model.safetensors.index.json`, deduplicated, in order.
pub fn shard_files_from_index(text: &str, path: &str) -> Result<Vec<String>, WeightsError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| WeightsError::Format {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| WeightsError::Format {
            path: path.to_string(),
            reason: "no `weight_map` object".into(),
        })?;
    let mut files: Vec<String> = Vec::new();
    for file in map.values() {
        let file = file.as_str().ok_or_else(|| WeightsError::Format {
            path: path.to_string(),
            reason: format!("weight_map value {file} is not a file name"),
        })?;
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn shard(tensors: &[(&str, Vec<f32>, Vec<usize>)]) -> ShardBytes {
        let owned: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, v, s)| (n.to_string(), bytemuck::cast_slice(v).to_vec(), s.clone()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, b, s)| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        Arc::new(safetensors::serialize(views, None).unwrap())
    }

    #[test]
    fn reads_across_shards() {
        let a = shard(&[("a", vec![1.0, 2.0], vec![2])]);
        let b = shard(&[("b", vec![3.0, 4.0, 5.0, 6.0], vec![2, 2])]);
        let set = SafetensorsSet::from_shards([("a".into(), a), ("b".into(), b)]).unwrap();
        assert_eq!(set.get("a").unwrap().unwrap().to_f32(), vec![1.0, 2.0]);
        let t = set.get("b").unwrap().unwrap();
        assert_eq!(t.shape, &[2, 2]);
        assert_eq!(t.to_f32(), vec![3.0, 4.0, 5.0, 6.0]);
        assert!(set.get("c").unwrap().is_none());
    }

    #[test]
    fn truncated_file_is_an_error() {
        let a = shard(&[("a", vec![1.0; 64], vec![64])]);
        let cut: Vec<u8> = (*a).as_ref()[..(*a).as_ref().len() - 10].to_vec();
        let err = SafetensorsSet::from_shards([("cut.safetensors".into(), Arc::new(cut) as ShardBytes)])
            .err()
            .expect("truncation must be detected");
        assert!(err.to_string().contains("cut.safetensors"), "{err}");
    }

    /// A header whose numbers overflow when added or multiplied is refused, and row reads
    /// past a tensor, or whose offsets overflow, are errors (see FUZZING.md).
    #[test]
    fn hostile_headers_are_refused() {
        let file = |header: &str| {
            let data = [(header.len() as u64).to_le_bytes().as_slice(), header.as_bytes(), &[0u8; 16]].concat();
            SafetensorsSet::from_shards([("x.safetensors".into(), Arc::new(data) as ShardBytes)])
        };
        let e = file(r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]}}"#).err().unwrap().to_string();
        assert!(e.contains("runs past the end"), "{e}");
        let e = file(r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]}}"#).err().unwrap().to_string();
        assert!(e.contains("overflows"), "{e}");
        let set = file(r#"{"x":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#).unwrap();
        assert_eq!(set.get_rows("x", 1, 1, 2).unwrap().unwrap().to_f32(), [0.0, 0.0]);
        for (start, n, cols) in [(2, 1, 2), (0, 1, usize::MAX / 2), (usize::MAX, 1, 2), (1, usize::MAX, 2)] {
            let e = set.get_rows("x", start, n, cols).err().unwrap().to_string();
            assert!(e.contains("out of range"), "{start} {n} {cols}: {e}");
        }
    }

    #[test]
    fn half_types_decode() {
        let values = [1.5f32, -2.0, 0.099975586];
        let bf: Vec<u8> = values.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        let f: Vec<u8> = values.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let decode = |dtype, bytes: &[u8]| {
            RawTensor {
                dtype,
                shape: vec![3],
                bytes: Cow::Borrowed(bytes),
            }
            .to_f32()
        };
        assert_eq!(decode(StoredDType::F16, &f), values.to_vec());
        let b = decode(StoredDType::BF16, &bf);
        assert_eq!(&b[..2], &values[..2]);
        assert!((b[2] - values[2]).abs() < 1e-3 && b[2] != values[2], "bf16 keeps 8 mantissa bits");
    }
}
