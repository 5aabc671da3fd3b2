//! Safetensors over bytes: one file or a sharded set (`model.safetensors.index.json`).
//!
//! A shard is any owner of bytes (a memory map natively, an `ArrayBuffer` copy on the web), so
//! the reader code is shared. Only the header is parsed up front; tensor bytes are sliced out
//! on demand.

use std::borrow::Cow;
use std::collections::HashMap;

use safetensors::{Dtype, SafeTensors, tensor::TensorInfo};

use super::{RawTensor, ShardBytes, StoredDType, TensorStore};
use crate::error::WeightsError;

struct Shard {
    path: String,
    bytes: ShardBytes,
    /// Offset of the data section (8-byte length + JSON header).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// A set of safetensors shards, addressed by tensor name.
pub struct SafetensorsSet {
    shards: Vec<Shard>,
    index: HashMap<String, usize>,
}

impl SafetensorsSet {
    /// Builds the set from shards given as `(path for messages, bytes)`.
    pub fn from_shards(
        shards: impl IntoIterator<Item = (String, ShardBytes)>,
    ) -> Result<Self, WeightsError> {
        let mut set = SafetensorsSet {
            shards: Vec::new(),
            index: HashMap::new(),
        };
        for (path, bytes) in shards {
            let (header_len, metadata) = SafeTensors::read_metadata((*bytes).as_ref()).map_err(
                |e| WeightsError::Format {
                    path: path.clone(),
                    reason: e.to_string(),
                },
            )?;
            let data_start = 8 + header_len;
            let data_len = (*bytes).as_ref().len().saturating_sub(data_start);
            let mut tensors = HashMap::new();
            for (name, info) in metadata.tensors() {
                if info.data_offsets.1 > data_len {
                    return Err(WeightsError::Format {
                        path: path.clone(),
                        reason: format!("tensor `{name}` runs past the end of the file (truncated?)"),
                    });
                }
                set.index.insert(name.clone(), set.shards.len());
                tensors.insert(name, info.clone());
            }
            set.shards.push(Shard {
                path,
                bytes,
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

    fn get(&self, name: &str) -> Result<Option<RawTensor<'_>>, WeightsError> {
        let Some(&i) = self.index.get(name) else {
            return Ok(None);
        };
        let shard = &self.shards[i];
        let info = &shard.tensors[name];
        let dtype = match info.dtype {
            Dtype::F32 => StoredDType::F32,
            Dtype::F16 => StoredDType::F16,
            Dtype::BF16 => StoredDType::BF16,
            other => {
                return Err(WeightsError::DType {
                    name: format!("{name} (in {})", shard.path),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        let bytes = &(*shard.bytes).as_ref()[shard.data_start + start..shard.data_start + end];
        Ok(Some(RawTensor {
            dtype,
            shape: info.shape.clone(),
            bytes: Cow::Borrowed(bytes),
        }))
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
                    safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
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
