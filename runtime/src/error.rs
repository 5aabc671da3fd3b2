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
    /// The device could not allocate memory for work that was enqueued (reported at the read
    /// that waited for it).
    #[error(
        "the GPU could not allocate {}{} for this step: feed long prompts in smaller chunks (--prefill-chunk), cap the context (--max-context), or store the matrices smaller (--dtype q8 or q4)",
        crate::error::human_bytes(*bytes),
        binding_limit.map(|l| format!(" (more than its {} storage-binding limit)", crate::error::human_bytes(l))).unwrap_or_default()
    )]
    DeviceMemory { bytes: u64, binding_limit: Option<u64> },
    /// A prefill chunk (`--prefill-chunk`) whose largest tensor cannot be bound by this GPU,
    /// found before any work starts.
    #[error(
        "a prefill chunk of {chunk} tokens needs a {} tensor, above this GPU's {} storage-binding limit: use --prefill-chunk {max} or less",
        crate::error::human_bytes(*bytes),
        crate::error::human_bytes(*limit)
    )]
    ChunkTooLarge { chunk: usize, bytes: u64, limit: u64, max: usize },
    /// The device stopped working (a driver reset, a fault, a browser tab losing its adapter).
    #[error("the GPU device was lost ({0}); restart the program (reload the page in a browser)")]
    DeviceLost(String),
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

impl RuntimeError {
    /// The error of a failed read-back. cubecl reports there what went wrong with the work
    /// the read waited for, as a message of several lines with a backtrace: an allocation
    /// that failed becomes [`Self::DeviceMemory`], a lost or poisoned device
    /// [`Self::DeviceLost`], anything else the message's first lines, without the backtrace.
    pub fn readback(e: impl std::fmt::Display) -> Self {
        let text = e.to_string();
        // cubecl's allocation failures: "can't allocate buffer of size: N", "out of device
        // memory allocating N bytes", "Can't allocate N bytes: …", "No room for N bytes …".
        let size = ["allocate buffer of size: ", "out of device memory allocating ", "Can't allocate ", "No room for "]
            .iter()
            .find_map(|key| text.split_once(key))
            .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok());
        if let Some(bytes) = size {
            // Past the adapter's binding limit, the size, not the memory left, is the cause.
            let binding_limit = crate::device::max_binding_bytes().filter(|&l| bytes > l);
            return Self::DeviceMemory { bytes, binding_limit };
        }
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Backtrace") && !l.starts_with("stack backtrace"))
            .filter(|l| !l.is_empty() && *l != "Caused by:")
            .collect();
        let short = lines.join(": ");
        let lower = short.to_lowercase();
        // A staging buffer fails to map only when its device is gone: wgpu reports the loss
        // itself once, through a callback, and often only after the read it broke.
        let map_failed = lower.contains("could not be mapped") || lower.contains("async map a buffer");
        if lower.contains("device is poisoned") || lower.contains("device lost") || lower.contains("device was lost") || map_failed {
            return Self::DeviceLost(short);
        }
        Self::Readback(short)
    }

}

/// `n` bytes for people: "3.00 GiB" (the CLI's byte counts too).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages as cubecl 0.11 prints them (`ServerError::Io(IoError::…)` with their
    /// backtraces) become one line each.
    #[test]
    fn readback_failures_become_one_line() {
        let too_big = "An IO error happened\nCaused by:\n  can't allocate buffer of size: 3221225472\n   0: cubecl_runtime::memory\n   1: …";
        let e = RuntimeError::readback(too_big);
        assert!(matches!(e, RuntimeError::DeviceMemory { bytes: 3221225472, .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("3.00 GiB") && text.contains("--prefill-chunk") && !text.contains('\n'), "{text}");
        let oom = "An IO error happened\nCaused by:\n  out of device memory allocating 1048576 bytes\nbacktrace";
        assert!(matches!(RuntimeError::readback(oom), RuntimeError::DeviceMemory { bytes: 1048576, .. }));
        let past = RuntimeError::DeviceMemory { bytes: 3 << 30, binding_limit: Some(2 << 30) }.to_string();
        assert!(past.contains("3.00 GiB (more than its 2.00 GiB storage-binding limit)") && !past.contains('\n'), "{past}");
        let unmapped = "Failed to access TensorData storage: failed to materialize bytes: An error happened during execution\nCaused by:\n  the staging buffer could not be mapped: Error occurred when trying to async map a buffer";
        assert!(matches!(RuntimeError::readback(unmapped), RuntimeError::DeviceLost(_)));
        let poisoned = "The device is poisoned\nCaused by:\n  illegal address";
        assert!(matches!(RuntimeError::readback(poisoned), RuntimeError::DeviceLost(_)));
        let other = "An error happened during execution\nCaused by:\n  something\nBacktrace:\n   0: frames";
        match RuntimeError::readback(other) {
            RuntimeError::Readback(m) => assert_eq!(m, "An error happened during execution: something"),
            e => panic!("{e:?}"),
        }
    }
}
