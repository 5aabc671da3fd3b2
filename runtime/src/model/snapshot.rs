//! Saving and restoring a [`State`]: a safetensors file whose metadata names the format, its
//! version and the model it belongs to. A lightning layer's state is O(1) in the context
//! length, so a long conversation saves to a few megabytes plus the softmax layers' KV caches.

use std::collections::HashMap;

use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use super::{KvCache, LayerState, Model, State};
use crate::error::{Error, RuntimeError};

/// `format` in the file's metadata.
pub const FORMAT: &str = "minimax-state";
/// Bumped whenever the layout changes; older files are refused.
pub const VERSION: &str = "1";

async fn host(t: Tensor<3>) -> Result<(Vec<usize>, Vec<u8>), Error> {
    let shape = t.dims().to_vec();
    let data = t.into_data_async().await.map_err(RuntimeError::readback)?;
    let values = data.try_into_vec_as::<f32>().map_err(RuntimeError::readback)?;
    Ok((shape, bytemuck::cast_slice(&values).to_vec()))
}

/// Serialises `state` of `model`, with `extra` (free text, e.g. a conversation as JSON) stored
/// alongside.
pub async fn save(model: &Model, state: &State, extra: &str) -> Result<Vec<u8>, Error> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, layer) in state.layers.iter().enumerate() {
        match layer {
            LayerState::Lightning(s) => {
                let (shape, bytes) = host(s.clone()).await?;
                tensors.push((format!("layers.{i}.state"), shape, bytes));
            }
            LayerState::Softmax(cache) if !cache.is_empty() => {
                let (k, v) = cache.valid();
                let (shape, bytes) = host(k).await?;
                tensors.push((format!("layers.{i}.k"), shape.clone(), bytes));
                let (_, bytes) = host(v).await?;
                tensors.push((format!("layers.{i}.v"), shape, bytes));
            }
            LayerState::Softmax(_) => {}
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches the bytes");
            (name.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("model".to_string(), model.fingerprint.clone()),
        ("position".to_string(), state.position.to_string()),
        ("extra".to_string(), extra.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| RuntimeError::StateFile(e.to_string()).into())
}

/// Restores a state saved by [`save`] for the same model; returns it with its `extra` text.
pub fn load(model: &Model, bytes: &[u8]) -> Result<(State, String), Error> {
    let bad = |reason: String| -> Error { RuntimeError::StateFile(reason).into() };
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let get = |key: &str| meta.get(key).cloned().ok_or_else(|| bad(format!("no `{key}` in the metadata")));
    if get("format")? != FORMAT {
        return Err(bad("not a minimax state file".into()));
    }
    let version = get("version")?;
    if version != VERSION {
        return Err(bad(format!("state file version {version}, this build reads version {VERSION}")));
    }
    if get("model")? != model.fingerprint {
        return Err(RuntimeError::StateMismatch(format!(
            "saved for model {}, this is {}",
            get("model")?,
            model.fingerprint
        ))
        .into());
    }
    let position: usize = get("position")?.parse().map_err(|_| bad("bad position".into()))?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let tensor = |name: String, expected: Option<&[usize]>| -> Result<Option<Tensor<3>>, Error> {
        let Ok(view) = file.tensor(&name) else {
            return Ok(None);
        };
        let shape: [usize; 3] = view.shape().try_into().map_err(|_| bad(format!("{name} is not 3-D")))?;
        if view.dtype() != Dtype::F32 || expected.is_some_and(|e| e != shape) {
            return Err(bad(format!("{name} has shape {shape:?}")));
        }
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
        Ok(Some(Tensor::from_data(TensorData::new(values, shape), &model.device)))
    };
    let mut state = model.new_state();
    for (i, layer) in state.layers.iter_mut().enumerate() {
        match layer {
            LayerState::Lightning(s) => {
                let dims = s.dims();
                *s = tensor(format!("layers.{i}.state"), Some(&dims))?
                    .ok_or_else(|| bad(format!("layer {i}'s state is missing")))?;
            }
            LayerState::Softmax(cache) => {
                // The whole shape, not only the length: a cache of the right byte count in
                // another head layout would load, and the next append would panic.
                let want = [position, model.config.num_kv_heads, model.config.head_dim];
                let k = tensor(format!("layers.{i}.k"), Some(&want))?;
                let v = tensor(format!("layers.{i}.v"), Some(&want))?;
                if let (Some(k), Some(v)) = (k, v) {
                    *cache = KvCache::from_parts(k, v);
                } else if position > 0 {
                    return Err(bad(format!("layer {i}'s KV cache is missing")));
                }
            }
        }
    }
    state.position = position;
    Ok((state, get("extra")?))
}

/// A short hex fingerprint of a model: its configuration and a sample of its embedding bytes,
/// so that a state is never restored into another model (FNV-1a, 64 bits).
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.iter() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

