//! The plain-data types of the C API: the parameter struct, its backend enum, the status codes
//! and the token callback. The handles themselves are opaque (see `handles.rs`).

use std::ffi::{c_char, c_void};

use minimax_runtime::device::{BackendChoice, GraphicsApi};
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::sampling::SamplingParams;

use super::error::FfiError;

/// Where the model runs.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A hardware GPU when one exists; otherwise the CPU backend.
    Auto = 0,
    /// Any wgpu adapter, software rasterisers (llvmpipe) included.
    Gpu = 1,
    /// Burn's Flex CPU backend (the kernels' reference implementations).
    Cpu = 2,
    /// A wgpu adapter on Vulkan only.
    Vulkan = 3,
    /// A wgpu adapter on Metal only.
    Metal = 4,
    /// A wgpu adapter on DirectX 12 only.
    Dx12 = 5,
    /// A wgpu adapter on OpenGL (ES) only.
    Gl = 6,
}

// `read_params` reads the enum field as a `u32` so that a stray value from C is an error, not
// undefined behaviour; that needs the C enum to be 4 bytes, as it is on every supported ABI.
const _: () = assert!(std::mem::size_of::<Backend>() == 4);

impl Backend {
    fn from_raw(raw: u32) -> Option<Self> {
        [Self::Auto, Self::Gpu, Self::Cpu, Self::Vulkan, Self::Metal, Self::Dx12, Self::Gl]
            .into_iter()
            .find(|b| *b as u32 == raw)
    }

    pub(crate) fn choice(self) -> BackendChoice {
        match self {
            Self::Auto => BackendChoice::Auto,
            Self::Gpu => BackendChoice::Gpu,
            Self::Cpu => BackendChoice::Cpu,
            Self::Vulkan => BackendChoice::Api(GraphicsApi::Vulkan),
            Self::Metal => BackendChoice::Api(GraphicsApi::Metal),
            Self::Dx12 => BackendChoice::Api(GraphicsApi::Dx12),
            Self::Gl => BackendChoice::Api(GraphicsApi::Gl),
        }
    }
}

/// Loading and sampling settings. Start from `minimax_default_params()` and change fields,
/// so that fields added later keep their defaults.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Where the model runs (read by `minimax_model_load`).
    pub backend: Backend,
    /// Maximum number of new tokens per `minimax_generate` call.
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: u32,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// Penalty for tokens already seen in this call's prompt and output (1: off).
    pub repetition_penalty: f32,
    /// Seed of the sampler's random generator; equal seeds give equal samples.
    pub seed: u64,
    /// Keep generating past the model's end-of-sequence tokens.
    pub ignore_eos: bool,
}

impl Default for Params {
    /// Mirrors the `minimax run` defaults, so that the C API and the CLI agree.
    fn default() -> Self {
        let o = minimax_runtime::generate::GenerateOptions::default();
        let s = o.sampling;
        Self {
            backend: Backend::Auto,
            max_tokens: o.max_tokens as u32,
            temperature: s.temperature,
            top_k: s.top_k as u32,
            top_p: s.top_p,
            min_p: s.min_p,
            repetition_penalty: s.repetition_penalty,
            seed: s.seed,
            ignore_eos: !o.stop_on_eos,
        }
    }
}

/// Reads a caller's `Params`, or the defaults for NULL, checking the enum field.
///
/// # Safety
/// `params` is NULL or points to a readable `minimax_params`.
pub(crate) unsafe fn read_params(params: *const Params) -> Result<Params, FfiError> {
    if params.is_null() {
        return Ok(Params::default());
    }
    // SAFETY: the caller guarantees a readable struct. The enum is read through its raw bytes
    // and every other field by place, so no invalid `Backend` value is ever created.
    unsafe {
        let raw = std::ptr::addr_of!((*params).backend).cast::<u32>().read();
        let backend = Backend::from_raw(raw).ok_or(FfiError::BadBackend(raw))?;
        Ok(Params {
            backend,
            max_tokens: (*params).max_tokens,
            temperature: (*params).temperature,
            top_k: (*params).top_k,
            top_p: (*params).top_p,
            min_p: (*params).min_p,
            repetition_penalty: (*params).repetition_penalty,
            seed: (*params).seed,
            ignore_eos: (*params).ignore_eos,
        })
    }
}

impl Params {
    /// The runtime's generation options, capped at `limit` tokens (the caller's buffer).
    pub(crate) fn generate_options(&self, limit: Option<usize>) -> GenerateOptions {
        let max_tokens = self.max_tokens as usize;
        GenerateOptions {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k as usize,
                top_p: self.top_p,
                min_p: self.min_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            max_tokens: limit.map_or(max_tokens, |l| l.min(max_tokens)),
            stop_on_eos: !self.ignore_eos,
            stop_tokens: Vec::new(),
            prefill_chunk: None,
        }
    }
}

/// The result of every fallible call; on failure `minimax_last_error()` says more.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Success.
    Ok = 0,
    /// A NULL handle or pointer, text that is not UTF-8, an unknown enum value, an empty
    /// prompt or a token id outside the vocabulary.
    InvalidArgument = 1,
    /// The model path does not exist.
    NotFound = 2,
    /// The model files are unreadable or malformed (config, weights, GGUF).
    InvalidModel = 3,
    /// The requested backend or graphics API has no adapter on this machine.
    BackendUnavailable = 4,
    /// The model has no tokenizer, or tokenizing failed.
    Tokenizer = 5,
    /// The conversation is longer than the model's context.
    ContextOverflow = 6,
    /// The output buffer is too small; the size needed was written to the count argument.
    BufferTooSmall = 7,
    /// Running the model failed (device errors, read-back failures).
    Runtime = 8,
    /// A bug: the library panicked. The handle involved should be freed.
    Panic = 9,
}

/// Called once for every generated token, as soon as it is chosen.
///
/// `text_piece` is the text this token completes, NUL-terminated and valid only during the
/// call: often one word piece, and an empty string while a multi-byte character is still
/// incomplete. It is NULL when the model has no tokenizer. Return false to stop generating.
pub type TokenCallback =
    Option<unsafe extern "C" fn(token: u32, text_piece: *const c_char, user_data: *mut c_void) -> bool>;
