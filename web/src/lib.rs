//! The runtime in the browser: a thin wasm-bindgen facade over `minimax-runtime`, meant to run
//! in a dedicated Web Worker (`web/worker.js`) so that the page never freezes.
//!
//! JS API (class `Session`):
//! - `await Session.load(baseUrlOrFiles, { onProgress, backend, dtype, cache, maxBindingBytes })`
//! - `await session.generate(promptOrIds, options, onToken)` → `{ tokens, text, stop, promptTokens }`
//! - `await session.logits(Uint32Array)` → `Float32Array` of `[T * vocab]`
//! - `session.info()`, `session.free()`
#![cfg(target_arch = "wasm32")]

mod experts;
mod fetch;
mod files;
mod sources;

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect, Uint32Array};
use minimax_runtime::config::{Ffn, LayerKind};
use minimax_runtime::device::{self, BackendChoice};
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::sampling::SamplingParams;
use minimax_runtime::{Engine, MatrixDType, RuntimeOptions};
use serde::Deserialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// A JS exception as text.
pub(crate) fn js_error(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn to_js(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

/// `Session.load` options (besides `onProgress`).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct LoadOptions {
    backend: Option<String>,
    dtype: Option<String>,
    cache: Option<bool>,
    /// Expert cache budget in MiB (packs only).
    expert_cache_mb: Option<f64>,
    max_binding_bytes: Option<f64>,
}

/// `session.generate` options, as in `minimax run`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct GenerateJs {
    max_tokens: usize,
    temperature: f32,
    top_k: usize,
    top_p: f32,
    min_p: f32,
    repetition_penalty: f32,
    seed: u64,
    ignore_eos: bool,
    prefill_chunk: Option<usize>,
}

impl Default for GenerateJs {
    /// The runtime's (and so `minimax run`'s) defaults.
    fn default() -> Self {
        let o = GenerateOptions::default();
        let s = o.sampling;
        Self {
            max_tokens: o.max_tokens,
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
            min_p: s.min_p,
            repetition_penalty: s.repetition_penalty,
            seed: s.seed,
            ignore_eos: !o.stop_on_eos,
            prefill_chunk: o.prefill_chunk,
        }
    }
}

/// Reads a plain options object, skipping function-valued keys (callbacks).
fn options<T: for<'de> Deserialize<'de> + Default>(value: &JsValue) -> Result<T, JsValue> {
    if value.is_undefined() || value.is_null() {
        return Ok(T::default());
    }
    let plain = Object::new();
    let object: &Object = value.unchecked_ref();
    for key in Object::keys(object).iter() {
        let v = Reflect::get(value, &key)?;
        if !v.is_function() {
            Reflect::set(&plain, &key, &v)?;
        }
    }
    serde_wasm_bindgen::from_value(plain.into()).map_err(to_js)
}

struct Inner {
    engine: Engine,
    busy: Cell<bool>,
}

/// A loaded model on this page's GPU (or the CPU backend when WebGPU is missing).
#[wasm_bindgen]
pub struct Session {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl Session {
    /// Loads a model from a base URL (served directory with `config.json`,
    /// `model.safetensors` or `model.safetensors.index.json` + shards, optional
    /// `tokenizer.json` / `tokenizer_config.json`) or from an array of `File`s.
    pub async fn load(source: JsValue, load_options: JsValue) -> Result<Session, JsValue> {
        console_error_panic_hook::set_once();
        let opts: LoadOptions = options(&load_options)?;
        let on_progress = Reflect::get(&load_options, &"onProgress".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok());
        let progress = fetch::Progress::new(on_progress);
        let files = match source.as_string() {
            Some(base) => files::from_url(&base, opts.cache.unwrap_or(true), &progress).await?,
            None => files::from_file_list(&source, &progress)?,
        };
        let backend: BackendChoice = opts.backend.as_deref().unwrap_or("auto").parse().map_err(to_js)?;
        let selected = device::select(backend).await.map_err(to_js)?;
        if let Some(notice) = &selected.notice {
            progress.report("device", "", Some(notice));
        }
        let runtime = RuntimeOptions {
            backend,
            matrix_dtype: opts.dtype.as_deref().unwrap_or("auto").parse::<MatrixDType>().map_err(to_js)?,
            max_binding_bytes: opts.max_binding_bytes.map(|b| b as u64),
            expert_cache_bytes: opts.expert_cache_mb.map(|mb| (mb * 1048576.0) as u64),
            no_expert_prefetch: false,
            ..Default::default()
        };
        progress.loaded.set(0.0);
        progress.report("load", "", None);
        let engine = Engine::new(files, selected, &runtime).map_err(to_js)?;
        progress.report("ready", "", None);
        Ok(Session {
            inner: Rc::new(Inner {
                engine,
                busy: Cell::new(false),
            }),
        })
    }

    /// Streams a continuation of `prompt` (text, or a `Uint32Array` of ids); `on_token(id,
    /// text)` is called for every new token (`text` may be empty until a character completes)
    /// and may return `false` to stop. Resolves to `{ tokens, text, stop, promptTokens }`.
    pub fn generate(&self, prompt: JsValue, generate_options: JsValue, on_token: Function) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let _busy = Busy::take(&inner)?;
            let o: GenerateJs = options(&generate_options)?;
            let engine = &inner.engine;
            let ids = match prompt.as_string() {
                Some(text) => engine.encode(&text).map_err(to_js)?,
                None => prompt.dyn_into::<Uint32Array>().map_err(|_| to_js("prompt must be a string or a Uint32Array"))?.to_vec(),
            };
            let options = GenerateOptions {
                sampling: SamplingParams {
                    temperature: o.temperature,
                    top_k: o.top_k,
                    top_p: o.top_p,
                    min_p: o.min_p,
                    repetition_penalty: o.repetition_penalty,
                    seed: o.seed,
                },
                max_tokens: o.max_tokens,
                stop_on_eos: !o.ignore_eos,
                stop_tokens: Vec::new(),
                prefill_chunk: o.prefill_chunk,
            };
            let mut stream = engine.tokenizer.as_ref().map(|t| t.stream());
            let mut state = engine.new_state();
            let generated = engine
                .generate(&mut state, &ids, &options, |id| {
                    let piece = stream.as_mut().and_then(|s| s.push(id).ok().flatten()).unwrap_or_default();
                    let keep = on_token.call2(&JsValue::NULL, &JsValue::from(id), &JsValue::from_str(&piece));
                    !matches!(keep, Ok(v) if v == JsValue::FALSE)
                })
                .await
                .map_err(to_js)?;
            let text = match &engine.tokenizer {
                Some(t) => t.decode(&generated.tokens).map_err(to_js)?,
                None => String::new(),
            };
            let result = Object::new();
            Reflect::set(&result, &"tokens".into(), &Uint32Array::from(&generated.tokens[..]))?;
            Reflect::set(&result, &"text".into(), &text.into())?;
            Reflect::set(&result, &"stop".into(), &format!("{:?}", generated.stop).to_lowercase().into())?;
            Reflect::set(&result, &"promptTokens".into(), &JsValue::from(ids.len() as u32))?;
            Ok(result.into())
        })
    }

    /// Logits of every position of `ids` from a fresh state: `Float32Array` of `[T * vocab]`,
    /// the same contract as `minimax logits`.
    pub fn logits(&self, ids: Uint32Array, prefill_chunk: Option<u32>) -> js_sys::Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let _busy = Busy::take(&inner)?;
            let logits = inner
                .engine
                .logits(&ids.to_vec(), prefill_chunk.map(|c| c as usize))
                .await
                .map_err(to_js)?;
            Ok(js_sys::Float32Array::from(&logits[..]).into())
        })
    }

    /// The adapter, its limits and features, and the model layout.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let engine = &self.inner.engine;
        let c = &engine.model.config;
        let layout: String = c.layers.iter().map(|l| if l.kind == LayerKind::Lightning { 'L' } else { 'S' }).collect();
        let (experts, top_k) = c.ffn.experts();
        let mut info = serde_json::json!({
            "device": engine.selected.describe(),
            "model": {
                "modelType": c.model_type, "layers": c.num_layers(), "layout": layout,
                "hidden": c.hidden_size, "heads": c.num_heads, "kvHeads": c.num_kv_heads, "headDim": c.head_dim,
                "experts": experts, "topK": top_k, "moe": matches!(c.ffn, Ffn::Moe(_)),
                "vocab": c.vocab_size, "parameters": c.parameter_counts().0,
                "matrixDtype": engine.model.matrices.linear().name(),
            },
        });
        if let Some((s, slots)) = engine.expert_stats() {
            info["expertCache"] = serde_json::json!({
                "slots": slots, "hits": s.hits, "misses": s.misses, "evictions": s.evictions,
                "hitRate": s.hit_rate(), "bytesStreamed": s.bytes_streamed, "stallSeconds": s.stall_seconds,
                "prefetched": s.prefetched, "predictionAccuracy": s.prediction_accuracy(),
            });
        }
        if let Some(a) = &engine.selected.adapter {
            info["adapter"] = serde_json::json!({
                "name": a.name, "backend": a.backend, "type": a.device_type, "driver": a.driver,
                "maxBufferSize": a.max_buffer_size, "maxStorageBufferBindingSize": a.max_storage_buffer_binding_size,
                "maxComputeWorkgroupStorageSize": a.max_compute_workgroup_storage_size,
                "maxComputeInvocationsPerWorkgroup": a.max_compute_invocations_per_workgroup,
                "shaderF16": a.shader_f16, "subgroups": a.subgroups, "cooperativeF16": a.cooperative_f16,
            });
        }
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        serde::Serialize::serialize(&info, &serializer).map_err(to_js)
    }
}

/// Marks a session busy for the length of one call: calls on one session do not overlap.
struct Busy(Rc<Inner>);

impl Busy {
    fn take(inner: &Rc<Inner>) -> Result<Self, JsValue> {
        if inner.busy.replace(true) {
            return Err(to_js("the session is busy with another call"));
        }
        Ok(Self(inner.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.set(false);
    }
}
