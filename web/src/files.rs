//! A model's files, from a base URL or from `File`s a directory picker gave the page.

use std::borrow::Cow;

use js_sys::Array;
use minimax_runtime::ModelFiles;
use minimax_runtime::error::WeightsError;
use minimax_runtime::weights::{ByteSource, SafetensorsSet, WeightSource, shard_files_from_index};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{File, FileReaderSync};

use minimax_runtime::experts::pack::{EXPERTS_FILE, ExpertPack, INDEX_FILE as PACK_INDEX};

use crate::fetch::{self, Progress};
use crate::sources::BlobSource;
use crate::{js_error, to_js};

/// Counts the bytes the loader reads, for the "load" phase of the progress.
struct Counting {
    inner: Box<dyn ByteSource>,
    name: String,
    progress: Progress,
}

// SAFETY: single-threaded wasm; see `sources.rs`.
unsafe impl Send for Counting {}
unsafe impl Sync for Counting {}

impl ByteSource for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        let bytes = self.inner.read(offset, len)?;
        self.progress.loaded.set(self.progress.loaded.get() + len as f64);
        self.progress.report("load", &self.name, None);
        Ok(bytes)
    }
}

fn weights(sources: Vec<(String, Box<dyn ByteSource>)>, progress: &Progress) -> Result<WeightSource, JsValue> {
    let counted = sources.into_iter().map(|(name, inner)| {
        let source = Box::new(Counting {
            inner,
            name: name.clone(),
            progress: progress.clone(),
        }) as Box<dyn ByteSource>;
        (name, source)
    });
    Ok(WeightSource::Files(std::sync::Arc::new(SafetensorsSet::from_sources(counted).map_err(to_js)?)))
}

/// A model served under `base` (a directory URL).
pub async fn from_url(base: &str, cache: bool, progress: &Progress) -> Result<ModelFiles, JsValue> {
    let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
    let url = |name: &str| format!("{base}{name}");
    let config_json = fetch::fetch_text(&url("config.json"))
        .await
        .map_err(to_js)?
        .ok_or_else(|| to_js(format!("{} has no config.json", base)))?;
    let tokenizer_json = fetch::fetch_text(&url("tokenizer.json")).await.map_err(to_js)?.map(String::into_bytes);
    let tokenizer_config_json = fetch::fetch_text(&url("tokenizer_config.json")).await.map_err(to_js)?;
    let store = fetch::open_store(cache).await;
    // An expert pack (`minimax convert`): dense weights as one file, experts on demand.
    if let Some(pack_json) = fetch::fetch_text(&url(PACK_INDEX)).await.map_err(to_js)? {
        let experts = fetch::expert_ranges(&url(EXPERTS_FILE), &store).await.map_err(to_js)?;
        let pack = ExpertPack::from_source(&pack_json, experts, &base).map_err(to_js)?;
        let file = &pack.index().dense.file;
        // pack.json is data: it may only name a file beside it.
        if file.is_empty() || file.contains(['/', '\\', '?', '#']) || file.starts_with('.') {
            return Err(to_js(format!("{base}{PACK_INDEX}: dense file {file:?} is not a plain file name")));
        }
        let dense = url(file);
        progress.total.set(progress.total.get() + fetch::length(&dense).await.map_err(to_js)? as f64);
        let source = fetch::weights(&dense, &store, progress).await.map_err(to_js)?;
        return Ok(ModelFiles {
            config_json,
            weights: weights(vec![(dense, source)], progress)?,
            tokenizer_json,
            tokenizer_config_json,
            experts: Some(std::sync::Arc::new(pack)),
        });
    }
    let index = url("model.safetensors.index.json");
    let shards = match fetch::fetch_text(&index).await.map_err(to_js)? {
        Some(text) => shard_files_from_index(&text, &index).map_err(to_js)?,
        None => vec!["model.safetensors".to_string()],
    };
    for shard in &shards {
        let len = fetch::length(&url(shard)).await.map_err(to_js)?;
        progress.total.set(progress.total.get() + len as f64);
    }
    let mut sources = Vec::new();
    for shard in &shards {
        let source = fetch::weights(&url(shard), &store, progress).await.map_err(to_js)?;
        sources.push((url(shard), source));
    }
    Ok(ModelFiles {
        config_json,
        weights: weights(sources, progress)?,
        tokenizer_json,
        tokenizer_config_json,
        experts: None,
    })
}

/// A model from picked files (an array or `FileList` of `File`s); directories are flattened
/// by file name.
pub fn from_file_list(list: &JsValue, progress: &Progress) -> Result<ModelFiles, JsValue> {
    let files: Vec<File> = Array::from(list).iter().filter_map(|f| f.dyn_into::<File>().ok()).collect();
    let find = |name: &str| files.iter().find(|f| f.name() == name);
    let reader = FileReaderSync::new()?;
    let text = |name: &str| -> Result<Option<String>, JsValue> {
        find(name).map(|f| reader.read_as_text(f).map_err(|e| to_js(js_error(&e)))).transpose()
    };
    let config_json = text("config.json")?.ok_or_else(|| to_js("the chosen files have no config.json"))?;
    let shards = match text("model.safetensors.index.json")? {
        Some(index) => shard_files_from_index(&index, "model.safetensors.index.json").map_err(to_js)?,
        None => vec!["model.safetensors".to_string()],
    };
    let mut sources = Vec::new();
    for shard in &shards {
        let file = find(shard).ok_or_else(|| to_js(format!("the chosen files have no {shard}")))?;
        progress.total.set(progress.total.get() + file.size());
        let blob: web_sys::Blob = file.clone().into();
        sources.push((shard.clone(), Box::new(BlobSource { path: shard.clone(), blob }) as Box<dyn ByteSource>));
    }
    Ok(ModelFiles {
        config_json,
        weights: weights(sources, progress)?,
        tokenizer_json: text("tokenizer.json")?.map(String::into_bytes),
        tokenizer_config_json: text("tokenizer_config.json")?,
        experts: None,
    })
}
