//! The high-level entry point: a model directory (config, weights, tokenizer) loaded onto the
//! selected device, ready to produce logits or stream text.

use burn::tensor::DType;

use crate::config::ModelConfig;
use crate::device::{BackendChoice, Selected};
use crate::error::{Error, RuntimeError};
use crate::generate::{GenerateOptions, Generated, generate, prefill, read_logits};
use crate::model::{Logits, Model, State};
use crate::tokenizer::Tokenizer;
use crate::weights::WeightSource;

/// Storage type of the large matrices on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatrixDType {
    F32,
    F16,
    /// f16 on a GPU with shader-f16 when the checkpoint is stored in 16 bits; f32 otherwise.
    #[default]
    Auto,
}

impl std::str::FromStr for MatrixDType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "auto" => Ok(Self::Auto),
            other => Err(format!("unknown dtype `{other}` (f32, f16, auto)")),
        }
    }
}

/// How to run a model (never part of the model's own config).
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub backend: BackendChoice,
    pub matrix_dtype: MatrixDType,
}

/// A model ready to run.
pub struct Engine {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub selected: Selected,
}

impl Engine {
    /// Loads a Hugging Face model directory natively (weights memory-mapped).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_dir(dir: &std::path::Path, options: &RuntimeOptions) -> Result<Self, Error> {
        let read = |name: &str| std::fs::read(dir.join(name));
        let config = read("config.json").map_err(|source| crate::error::WeightsError::Io {
            path: dir.join("config.json").display().to_string(),
            source,
        })?;
        let config = std::str::from_utf8(&config)
            .map_err(|e| crate::error::ConfigError::Invalid(e.to_string()))?
            .to_string();
        let tokenizer = read("tokenizer.json").ok();
        let source = WeightSource::open_dir(dir)?;
        let selected = crate::device::select(options.backend)?;
        Self::from_parts(&config, &source, tokenizer.as_deref(), selected, options)
    }

    /// Builds an engine from a config text, a weight source and optional tokenizer bytes.
    pub fn from_parts(
        config_json: &str,
        source: &WeightSource,
        tokenizer_json: Option<&[u8]>,
        selected: Selected,
        options: &RuntimeOptions,
    ) -> Result<Self, Error> {
        let config = ModelConfig::from_json(config_json)?;
        let tokenizer = tokenizer_json.map(Tokenizer::from_bytes).transpose()?;
        let dtype = matrix_dtype(options.matrix_dtype, &selected, source);
        let max_binding = selected.adapter.as_ref().map(|a| a.max_storage_buffer_binding_size);
        let model = Model::load(config, source, &selected.device, dtype, max_binding)?;
        Ok(Self {
            model,
            tokenizer,
            selected,
        })
    }

    pub fn new_state(&self) -> State {
        self.model.new_state()
    }

    /// Logits of every position of `tokens` from a fresh state, fed `chunk` tokens at a time:
    /// row-major `[T, vocab]` f32.
    pub async fn logits(&self, tokens: &[u32], chunk: Option<usize>) -> Result<Vec<f32>, Error> {
        let mut state = self.new_state();
        read_logits(prefill(&self.model, &mut state, tokens, chunk, Logits::All).await?).await
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
}

fn matrix_dtype(choice: MatrixDType, selected: &Selected, source: &WeightSource) -> DType {
    let f16_ok = selected.adapter.as_ref().is_some_and(|a| a.shader_f16);
    match choice {
        MatrixDType::F32 => DType::F32,
        MatrixDType::F16 if f16_ok => DType::F16,
        MatrixDType::F16 => DType::F32,
        MatrixDType::Auto => {
            if f16_ok && source.is_narrow() { DType::F16 } else { DType::F32 }
        }
    }
}
