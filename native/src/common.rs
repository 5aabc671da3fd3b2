//! Option groups and helpers shared by the subcommands.

use std::path::PathBuf;

use clap::Args;
use minimax_runtime::device::{self, BackendChoice};
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::sampling::SamplingParams;
use minimax_runtime::weights::StoredDType;
use minimax_runtime::{Engine, MatrixDType, ModelFiles, RuntimeOptions};

/// The result type of the subcommands.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where the model comes from and where it runs.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json) or GGUF file;
    /// the embedded demo model when absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Backend: auto (a hardware GPU, else the CPU), gpu (any wgpu adapter), cpu, or a GPU
    /// on one graphics API: vulkan, metal, dx12 or gl.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// Storage type of the large matrices: f32, f16 (GPUs with shader-f16), auto, or q8/q4
    /// (linear layers in Q8_0/Q4_1 blocks).
    #[arg(long, default_value = "auto")]
    pub dtype: MatrixDType,
    /// Assume storage bindings of at most this many bytes (below the adapter's limit), so that
    /// larger tensors are split into row blocks.
    #[arg(long)]
    pub max_binding_bytes: Option<u64>,
    /// Expert cache budget in MiB when the experts stream from a pack (`minimax convert`);
    /// default: sized from the adapter (8 GiB discrete, 2 GiB integrated, 1 GiB otherwise).
    #[arg(long)]
    pub expert_cache_mb: Option<f64>,
    /// Do not load the next layer's predicted experts ahead of need.
    #[arg(long)]
    pub no_prefetch: bool,
    /// Refuse contexts longer than this many positions. Without it, a context may pass the
    /// model's trained length (`max_position_embeddings`) with a warning.
    #[arg(long)]
    pub max_context: Option<usize>,
}

impl ModelArgs {
    pub fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            backend: self.backend,
            matrix_dtype: self.dtype,
            max_binding_bytes: self.max_binding_bytes,
            expert_cache_bytes: self.expert_cache_mb.map(|mb| (mb * (1u64 << 20) as f64) as u64),
            no_expert_prefetch: self.no_prefetch,
            max_context: self.max_context,
            prefill_chunk: None,
        }
    }

    /// What `minimax convert` would save, when loading quantizes at least `min_bytes` of
    /// float weights (`quantizing`: from [`ModelFiles::quantizes_at_load`]).
    pub fn convert_hint(&self, (bytes, format): (u64, StoredDType), min_bytes: u64) -> Option<String> {
        let quant = if format == StoredDType::Q8_0 { "q8" } else { "q4" };
        let model = self.model.as_ref().map_or("DIR".into(), |p| p.display().to_string());
        (bytes >= min_bytes).then(|| {
            format!(
                "quantizing {} of float weights to {} while loading; `minimax convert --quant {quant} --model {model} --out PACK` stores them quantized once, and a pack loads in seconds",
                self::bytes(bytes),
                format.name()
            )
        })
    }

    /// The model's name for messages.
    pub fn describe(&self) -> String {
        self.model.as_ref().map_or("the embedded demo model".into(), |p| p.display().to_string())
    }

    /// The model's files: a directory's, or the embedded demo model's.
    pub fn files(&self) -> Result<ModelFiles> {
        match &self.model {
            None => Ok(minimax::demo::files()?),
            Some(path) if !path.exists() => Err(format!("{} does not exist", path.display()).into()),
            Some(path) => Ok(ModelFiles::read(path)?),
        }
    }

    /// Loads the model, printing the CPU fallback notice if there is one.
    pub fn load(&self) -> Result<Engine> {
        let files = self.files()?;
        let quantizing = files.quantizes_at_load(self.dtype);
        if let Some(note) = quantizing.and_then(|q| self.convert_hint(q, QUANTIZE_HINT_BYTES)) {
            eprintln!("note: {note}");
        }
        // Drawn only when stderr is a terminal (indicatif hides it otherwise).
        let bar = indicatif::ProgressBar::new(files.weights.stored_bytes());
        let what = if quantizing.is_some() { "loading and quantizing" } else { "loading" };
        bar.set_style(
            indicatif::ProgressStyle::with_template(&format!("{what} {{bar:30}} {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"))
                .expect("valid template"),
        );
        let engine = Engine::new_with_progress(files, device::select(self.backend)?, &self.options(), &|done, _| {
            bar.set_position(done)
        });
        bar.finish_and_clear();
        let engine = engine?;
        if let Some(notice) = &engine.selected.notice {
            eprintln!("note: {notice}");
        }
        Ok(engine)
    }
}

/// How tokens are chosen, and how many.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for tokens already seen (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl SamplingArgs {
    pub fn options(&self, prefill_chunk: Option<usize>) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            max_tokens: self.max_tokens,
            stop_on_eos: !self.ignore_eos,
            stop_tokens: Vec::new(),
            prefill_chunk,
        }
    }
}

/// Parses `1,2,3` into token ids.
/// A progress bar over a prompt of `len` tokens fed `chunk` at a time: shown only for a
/// prompt of several chunks (and only when stderr is a terminal).
pub fn prompt_bar(len: usize, chunk: usize) -> indicatif::ProgressBar {
    let bar = if len > chunk { indicatif::ProgressBar::new(len as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("prompt {bar:30} {pos}/{len} tokens {per_sec} eta {eta}")
            .expect("a valid template"),
    );
    bar
}

/// Loading that quantizes more than this says that `minimax convert` would save the time.
pub const QUANTIZE_HINT_BYTES: u64 = 4 << 30;

pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|e| format!("bad token id `{s}`: {e}").into()))
        .collect()
}

/// Human-readable byte count.
pub use minimax_runtime::error::human_bytes as bytes;
