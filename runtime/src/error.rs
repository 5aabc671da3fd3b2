//! Typed errors, one enum per layer, joined into [`Error`].

use thiserror::Error;

/// A `config.json` that cannot be turned into a [`crate::config::ModelConfig`].
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot parse config.json: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("config.json is missing `{0}`")]
    Missing(&'static str),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Weights that are missing, mis-shaped or unreadable.
#[derive(Debug, Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid weights file {path}: {reason}")]
    Format { path: String, reason: String },
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    Missing { name: String, expected: Vec<usize> },
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    DType { name: String, dtype: String },
    #[error("no weights found in {0} (expected model.safetensors or model.safetensors.index.json)")]
    NoWeights(String),
    /// One record of an expert pack that is missing, cut short or fails its checksum.
    #[error("expert pack {path}: layer {layer}, expert {expert}, record at byte {offset}: {reason}")]
    CorruptExpert {
        path: String,
        layer: usize,
        expert: usize,
        offset: u64,
        reason: String,
    },
}

/// A kernel launch whose inputs break its shape contract.
#[derive(Debug, Error)]
pub enum KernelError {
    #[error("{kernel}: {reason}")]
    Shape { kernel: &'static str, reason: String },
}

/// Errors raised while running the model or generating.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("token id {id} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("empty input: at least one token is needed")]
    EmptyInput,
    #[error("context overflow: {needed} positions needed, the limit is {max} (the runtime's max context, or the model's sliding window)")]
    ContextOverflow { needed: usize, max: usize },
    #[error("no GPU adapter found")]
    NoGpu,
    #[error("GPU initialisation failed: {0}")]
    Gpu(String),
    #[error("reading a tensor back failed: {0}")]
    Readback(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("the state belongs to another model ({0})")]
    StateMismatch(String),
    #[error("state file: {0}")]
    StateFile(String),
}

/// Any error of the runtime.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
