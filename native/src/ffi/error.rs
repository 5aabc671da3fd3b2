//! Errors at the C boundary: a typed [`FfiError`] becomes a [`Status`] code plus a thread-local
//! message for `minimax_last_error()`, and panics are caught before they can unwind into C.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use minimax_runtime::error::{Error, RuntimeError};

use super::types::Status;

/// Everything that can go wrong in a C API call.
#[derive(Debug, thiserror::Error)]
pub enum FfiError {
    #[error("`{0}` is NULL")]
    Null(&'static str),
    #[error("`{0}` is not valid UTF-8")]
    Utf8(&'static str),
    #[error("unknown backend value {0} (expected a minimax_backend constant)")]
    BadBackend(u32),
    #[error("empty prompt, and no earlier output to continue from")]
    NothingToContinue,
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("buffer too small: {needed} needed, capacity {capacity}")]
    BufferTooSmall { needed: usize, capacity: usize },
    #[error(transparent)]
    Runtime(#[from] Error),
    #[error("internal error (panic): {0}")]
    Panic(String),
}

impl From<RuntimeError> for FfiError {
    fn from(e: RuntimeError) -> Self {
        Self::Runtime(e.into())
    }
}

impl FfiError {
    pub fn status(&self) -> Status {
        match self {
            Self::Null(_) | Self::Utf8(_) | Self::BadBackend(_) | Self::NothingToContinue => {
                Status::InvalidArgument
            }
            Self::NotFound(_) => Status::NotFound,
            Self::BufferTooSmall { .. } => Status::BufferTooSmall,
            Self::Panic(_) => Status::Panic,
            Self::Runtime(Error::Config(_) | Error::Weights(_)) => Status::InvalidModel,
            Self::Runtime(Error::Kernel(_)) => Status::Runtime,
            Self::Runtime(Error::Runtime(e)) => match e {
                RuntimeError::TokenOutOfRange { .. } | RuntimeError::EmptyInput => Status::InvalidArgument,
                RuntimeError::ContextOverflow { .. } => Status::ContextOverflow,
                RuntimeError::NoGpu | RuntimeError::Gpu(_) => Status::BackendUnavailable,
                RuntimeError::Tokenizer(_) => Status::Tokenizer,
                _ => Status::Runtime,
            },
        }
    }
}

thread_local! {
    /// The message of this thread's last failed call (C callers may use several threads).
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| *e.borrow_mut() = super::c_string(message));
}

/// Runs an API call's body: records a failure (or a panic) as the last error and returns its
/// status. Every exported function goes through here, so no panic unwinds into C.
pub fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> Status {
    let result = catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic payload".into());
        Err(FfiError::Panic(message))
    });
    match result {
        Ok(()) => Status::Ok,
        Err(e) => {
            set_last_error(&e.to_string());
            e.status()
        }
    }
}

/// Like [`guard`] for calls whose C signature has no status: `fallback` is returned on failure.
pub fn guard_value<T>(fallback: T, body: impl FnOnce() -> Result<T, FfiError>) -> T {
    let mut out = None;
    guard(|| {
        out = Some(body()?);
        Ok(())
    });
    out.unwrap_or(fallback)
}

/// The message of the last failed call on this thread, or "" when none has failed.
///
/// The string belongs to the library and stays valid until the next failing call on this
/// thread.
#[unsafe(no_mangle)]
pub extern "C" fn minimax_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
