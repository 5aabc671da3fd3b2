//! The high-level entry point: a model directory (config, weights, tokenizer) loaded onto the
//! selected device, ready to produce logits or stream text.

use std::sync::Arc;

use burn::tensor::DType;

use crate::config::ModelConfig;
use crate::device::{BackendChoice, Selected};
use crate::error::{Error, RuntimeError};
use crate::generate::{GenerateOptions, Generated, generate, prefill_logits};
use crate::experts::ExpertSource;
use crate::model::{Matrices, Model, State, StreamedExperts};
use crate::weights::StoredDType;
use crate::tokenizer::Tokenizer;
use crate::chat::ChatTemplate;
use crate::weights::{GgufFile, SafetensorsSet, ShardBytes, WeightSource};

/// Storage type of the large matrices on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatrixDType {
    F32,
    F16,
    /// Linear layers as blocks when the checkpoint stores them as blocks (GGUF, quantized
    /// packs); otherwise f16 on a GPU with shader-f16 when the checkpoint is stored in 16
    /// bits, f32 elsewhere.
    #[default]
    Auto,
    /// Linear layers in ggml Q8_0 blocks (8.5 bits a weight), embeddings as `Auto`.
    Q8,
    /// Linear layers in ggml Q4_1 blocks (5 bits a weight), embeddings as `Auto`.
    Q4,
}

impl std::str::FromStr for MatrixDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "auto" => Ok(Self::Auto),
            "q8" => Ok(Self::Q8),
            "q4" => Ok(Self::Q4),
            other => Err(format!("unknown dtype `{other}` (f32, f16, auto, q8, q4)")),
        }
    }
}

/// How to run a model (never part of the model's own config).
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub backend: BackendChoice,
    pub matrix_dtype: MatrixDType,
    /// The largest storage binding to assume, when lower than the adapter's limit: tensors
    /// beyond it are split into row blocks (tests use it to force the split path).
    pub max_binding_bytes: Option<u64>,
    /// The expert cache budget in bytes when experts stream from a pack; `None` sizes it from
    /// the device (see [`default_expert_budget`]).
    pub expert_cache_bytes: Option<u64>,
    /// Turns off loading the next layer's predicted experts ahead of need (for measuring it).
    pub no_expert_prefetch: bool,
    /// Tokens per prefill chunk when a request names none; `None` sizes it from the model's
    /// dimensions and the binding limit ([`crate::model::prefill_chunk`]).
    pub prefill_chunk: Option<usize>,
    /// Positions a state may reach; `None`: no cap (past the model's trained length a warning
    /// is given once, and a sliding window is a limit either way).
    pub max_context: Option<usize>,
}

/// Everything a model consists of, in memory (or memory-mapped): what a directory, a GGUF
/// file, the embedded demo model and the browser's downloads all become before loading.
pub struct ModelFiles {
    pub config_json: String,
    pub weights: WeightSource,
    pub tokenizer_json: Option<Vec<u8>>,
    /// `tokenizer_config.json`, where the chat template and special tokens live.
    pub tokenizer_config_json: Option<String>,
    /// Experts that stream from a pack (then `weights` holds only the dense tensors).
    pub experts: Option<Arc<dyn ExpertSource>>,
}

impl ModelFiles {
    /// With `dtype` Q8 or Q4 and float weights (not a GGUF's or a pack's blocks), loading
    /// quantizes them: the bytes of weights that will be read and quantized, and the format.
    /// `minimax convert` does that once and stores the blocks.
    pub fn quantizes_at_load(&self, dtype: MatrixDType) -> Option<(u64, StoredDType)> {
        let format = match dtype {
            MatrixDType::Q8 => StoredDType::Q8_0,
            MatrixDType::Q4 => StoredDType::Q4_1,
            _ => return None,
        };
        (self.weights.stored_blocks().is_none() && self.experts.is_none()).then(|| (self.weights.stored_bytes(), format))
    }

    /// A model from safetensors bytes (one file or shards) and its JSON files.
    pub fn from_safetensors(
        config_json: String,
        shards: Vec<(String, ShardBytes)>,
        tokenizer_json: Option<Vec<u8>>,
        tokenizer_config_json: Option<String>,
    ) -> Result<Self, Error> {
        Ok(Self {
            config_json,
            weights: WeightSource::Files(Arc::new(SafetensorsSet::from_shards(shards)?)),
            tokenizer_json,
            tokenizer_config_json,
            experts: None,
        })
    }

    /// Reads a Hugging Face model directory natively (weights memory-mapped).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_dir(dir: &std::path::Path) -> Result<Self, Error> {
        let mut files = Self::read_dir_files(dir)?;
        files.weights = WeightSource::open_dir(dir)?;
        Ok(files)
    }

    /// A directory's JSON and tokenizer files (weights left empty).
    #[cfg(not(target_arch = "wasm32"))]
    fn read_dir_files(dir: &std::path::Path) -> Result<Self, Error> {
        let path = dir.join("config.json");
        let config_json = std::fs::read_to_string(&path).map_err(|source| crate::error::WeightsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            config_json,
            weights: WeightSource::Random { std: 0.0 },
            tokenizer_json: std::fs::read(dir.join("tokenizer.json")).ok(),
            tokenizer_config_json: std::fs::read_to_string(dir.join("tokenizer_config.json")).ok(),
            experts: None,
        })
    }
}

impl ModelFiles {
    /// Reads an expert pack made by `minimax convert` natively: the dense tensors from
    /// `dense.safetensors`, the experts on demand from `experts.bin`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_pack(dir: &std::path::Path) -> Result<Self, Error> {
        let pack = crate::experts::pack::ExpertPack::open(dir)?;
        let dense = pack.dense_store()?;
        let mut files = Self::read_dir_files(dir)?;
        files.weights = WeightSource::Files(Arc::new(dense));
        files.experts = Some(Arc::new(pack));
        Ok(files)
    }

    /// A GGUF file (llama.cpp's format): the config, tokenizer and chat template come from its
    /// metadata, unless a `tokenizer.json` / `tokenizer_config.json` lies beside it.
    pub fn from_gguf(gguf: GgufFile, sidecar_tokenizer: Option<Vec<u8>>, sidecar_config: Option<String>) -> Result<Self, Error> {
        let config_json = gguf.hf_config()?.to_string();
        let tokenizer_json = match sidecar_tokenizer {
            Some(bytes) => Some(bytes),
            None => gguf.tokenizer_json()?.map(String::into_bytes),
        };
        let token = |key: &str| -> String {
            let tokens = gguf.metadata("tokenizer.ggml.tokens").and_then(|t| t.as_array());
            gguf.metadata(key)
                .and_then(|id| id.as_u64())
                .and_then(|id| tokens?.get(id as usize)?.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let tokenizer_config_json = sidecar_config.or_else(|| {
            gguf.chat_template().map(|template| {
                serde_json::json!({
                    "chat_template": template,
                    "bos_token": token("tokenizer.ggml.bos_token_id"),
                    "eos_token": token("tokenizer.ggml.eos_token_id"),
                })
                .to_string()
            })
        });
        Ok(Self {
            config_json,
            weights: WeightSource::Files(Arc::new(gguf)),
            tokenizer_json,
            tokenizer_config_json,
            experts: None,
        })
    }

    /// Reads a GGUF file natively (memory-mapped).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_gguf(path: &std::path::Path) -> Result<Self, Error> {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        Self::from_gguf(
            GgufFile::open(path)?,
            std::fs::read(dir.join("tokenizer.json")).ok(),
            std::fs::read_to_string(dir.join("tokenizer_config.json")).ok(),
        )
    }

    /// Reads a model from `path`: a Hugging Face directory, a `.gguf` file, or a directory
    /// holding one `.gguf` file and no `config.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(path: &std::path::Path) -> Result<Self, Error> {
        if path.is_file() {
            return Self::read_gguf(path);
        }
        if path.join(crate::experts::pack::INDEX_FILE).exists() {
            return Self::read_pack(path);
        }
        if !path.join("config.json").exists() {
            let ggufs: Vec<_> = std::fs::read_dir(path)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
                        .collect()
                })
                .unwrap_or_default();
            if let [one] = ggufs.as_slice() {
                return Self::read_gguf(one);
            }
        }
        Self::read_dir(path)
    }
}

/// The expert cache budget when none is given. wgpu does not report how much memory an
/// adapter has, so this goes by its kind: a discrete GPU gets 8 GiB, an integrated one (whose
/// memory is the system's) 2 GiB, and a software adapter, the browser or the CPU 1 GiB. A
/// model whose experts fit keeps them all resident.
pub fn default_expert_budget(selected: &Selected) -> u64 {
    const GIB: u64 = 1 << 30;
    match selected.adapter.as_ref().map(|a| a.device_type.as_str()) {
        Some("DiscreteGpu") => 8 * GIB,
        Some("IntegratedGpu") => 2 * GIB,
        _ => GIB,
    }
}

/// A model ready to run.
pub struct Engine {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
    pub selected: Selected,
}

impl Engine {
    /// Loads a model directory or GGUF file natively (weights memory-mapped); see
    /// [`ModelFiles::read`].
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path, options: &RuntimeOptions) -> Result<Self, Error> {
        let files = ModelFiles::read(dir)?;
        Self::new(files, crate::device::select(options.backend)?, options)
    }

    /// Loads `files` onto the `selected` device.
    pub fn new(files: ModelFiles, selected: Selected, options: &RuntimeOptions) -> Result<Self, Error> {
        Self::new_with_progress(files, selected, options, &|_, _| {})
    }

    /// [`Self::new`], calling `progress(bytes read, bytes in all)` as the weights are read.
    pub fn new_with_progress(
        files: ModelFiles,
        selected: Selected,
        options: &RuntimeOptions,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Self, Error> {
        let config = ModelConfig::from_json(&files.config_json)?;
        let tokenizer = files.tokenizer_json.as_deref().map(Tokenizer::from_bytes).transpose()?;
        let chat_template = files
            .tokenizer_config_json
            .as_deref()
            .map(ChatTemplate::from_tokenizer_config)
            .transpose()?
            .flatten();
        let dtype = matrix_dtype(options.matrix_dtype, &selected, &files.weights);
        let adapter_limit = selected.adapter.as_ref().map(|a| a.max_storage_buffer_binding_size);
        let max_binding = match (adapter_limit, options.max_binding_bytes) {
            (Some(a), Some(o)) => Some(a.min(o)),
            (a, o) => a.or(o),
        };
        let streamed = files.experts.map(|source| StreamedExperts {
            prefetch: !options.no_expert_prefetch,
            budget_bytes: options
                .expert_cache_bytes
                .unwrap_or_else(|| default_expert_budget(&selected)),
            source,
        });
        let total = files.weights.stored_bytes();
        let done = std::cell::Cell::new(0u64);
        let step = |bytes: u64| {
            done.set(done.get() + bytes);
            progress(done.get().min(total), total);
        };
        let mut model = Model::load(config, &files.weights, &selected.device, dtype, max_binding, streamed, Some(&step))?;
        if let Some(chunk) = options.prefill_chunk {
            model.prefill_chunk = chunk.max(1);
        }
        if let Some(cap) = options.max_context {
            model.max_context = Some(model.max_context.map_or(cap, |window| window.min(cap)));
        }
        Ok(Self {
            model,
            tokenizer,
            chat_template,
            selected,
        })
    }

    pub fn new_state(&self) -> State {
        self.model.new_state()
    }

    /// The chat format: the model's own template, else the documented plain one
    /// ([`ChatTemplate::plain`]). Every chat surface takes it from here, so that they agree.
    pub fn chat_format(&self) -> ChatTemplate {
        self.chat_template.clone().unwrap_or_else(ChatTemplate::plain)
    }

    /// The expert cache's counters and slot count, when experts stream from a pack.
    pub fn expert_stats(&self) -> Option<(crate::experts::CacheStats, usize)> {
        let cache = self.model.experts.as_ref()?.lock().ok()?;
        Some((cache.stats(), cache.slots()))
    }

    /// Logits of every position of `tokens` from a fresh state, fed `chunk` tokens at a time:
    /// row-major `[T, vocab]` f32.
    pub async fn logits(&self, tokens: &[u32], chunk: Option<usize>) -> Result<Vec<f32>, Error> {
        let mut state = self.new_state();
        prefill_logits(&self.model, &mut state, tokens, chunk).await
    }

    /// Encodes `text` with the model's tokenizer.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        Ok(self.tokenizer()?.encode(text)?)
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer, Error> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| RuntimeError::Tokenizer("the model directory has no tokenizer.json".into()).into())
    }

    /// Streams a continuation of `prompt` into `on_token` (see [`generate`]).
    pub async fn generate(
        &self,
        state: &mut State,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generated, Error> {
        generate(&self.model, state, prompt, options, on_token).await
    }

    /// [`Self::generate`], calling `on_prefill(prompt tokens fed)` as the prompt goes in.
    pub async fn generate_with(
        &self,
        state: &mut State,
        prompt: &[u32],
        options: &GenerateOptions,
        on_prefill: &mut dyn FnMut(usize),
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Generated, Error> {
        crate::generate::generate_with(&self.model, state, prompt, options, on_prefill, on_token).await
    }
}

fn matrix_dtype(choice: MatrixDType, selected: &Selected, source: &WeightSource) -> Matrices {
    let f16_ok = selected.adapter.as_ref().is_some_and(|a| a.shader_f16);
    let auto = if f16_ok && source.is_narrow() { DType::F16 } else { DType::F32 };
    // With quantized linear layers, the float part is mostly the embedding table: f16 only
    // where that loses nothing.
    let exact = if f16_ok && source.embedding_is_f16() { DType::F16 } else { DType::F32 };
    let (float, quant) = match choice {
        MatrixDType::F32 => (DType::F32, None),
        MatrixDType::F16 if f16_ok => (DType::F16, None),
        MatrixDType::F16 => (DType::F32, None),
        // Linear layers stored as blocks run as blocks (a GGUF, a pack with quantized dense
        // tensors): expanding them would cost memory and speed and gain nothing.
        MatrixDType::Auto => match source.stored_blocks() {
            Some(q) => (exact, Some(q)),
            None => (auto, None),
        },
        MatrixDType::Q8 => (exact, Some(StoredDType::Q8_0)),
        MatrixDType::Q4 => (exact, Some(StoredDType::Q4_1)),
    };
    Matrices { float, quant }
}
