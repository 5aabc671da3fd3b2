//! The C API, in `llama.h` style: opaque handles, `minimax_default_params()`, a `*_free` for
//! every constructor, status codes plus `minimax_last_error()`, and no Rust types crossing the
//! boundary. `include/minimax.h` is generated from these files by cbindgen (`cbindgen.toml`;
//! `MINIMAX_BLESS=1 cargo test --release -p minimax-tests --test c_api` rewrites it).
//!
//! Every exported function runs its body through `error::guard`, so a panic becomes
//! `MINIMAX_STATUS_PANIC` instead of unwinding into C. Native code blocks on the runtime's async
//! API with `pollster` here, at the outer edge, as the CLI does.

// cbindgen lists functions in the order it meets them, so these are declared in the order a
// reader of the header wants (errors, then models, then contexts); the blank line keeps
// rustfmt from sorting them.
mod error;
mod model;

mod context;
mod types;

use std::ffi::{CStr, CString, c_char};

pub use context::Context;
pub use error::{FfiError, minimax_last_error};
pub use model::Model;
pub use types::{Backend, Params, Status, TokenCallback};

/// The default parameters: auto backend, greedy sampling, 128 tokens, stop at end-of-sequence
/// (the `minimax run` defaults).
#[unsafe(no_mangle)]
pub extern "C" fn minimax_default_params() -> Params {
    Params::default()
}

/// `ptr` as a reference, or an error naming the argument.
///
/// # Safety
/// `ptr` is NULL or valid for the returned lifetime.
unsafe fn arg<'a, T>(ptr: *const T, name: &'static str) -> Result<&'a T, FfiError> {
    // SAFETY: forwarded from the caller.
    unsafe { ptr.as_ref() }.ok_or(FfiError::Null(name))
}

/// `ptr` as a mutable reference, or an error naming the argument.
///
/// # Safety
/// `ptr` is NULL or valid and unaliased for the returned lifetime.
unsafe fn arg_mut<'a, T>(ptr: *mut T, name: &'static str) -> Result<&'a mut T, FfiError> {
    // SAFETY: forwarded from the caller.
    unsafe { ptr.as_mut() }.ok_or(FfiError::Null(name))
}

/// A C array as a slice; NULL is allowed for an empty one.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable elements.
unsafe fn slice<'a, T>(ptr: *const T, len: usize, name: &'static str) -> Result<&'a [T], FfiError> {
    match (ptr.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(FfiError::Null(name)),
        // SAFETY: forwarded from the caller.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(ptr, len) }),
    }
}

/// A writable C array as a slice; NULL is allowed for an empty one.
///
/// # Safety
/// `ptr` is NULL or points to `len` writable elements that nothing else uses meanwhile.
unsafe fn slice_mut<'a, T>(ptr: *mut T, len: usize, name: &'static str) -> Result<&'a mut [T], FfiError> {
    match (ptr.is_null(), len) {
        (_, 0) => Ok(&mut []),
        (true, _) => Err(FfiError::Null(name)),
        // SAFETY: forwarded from the caller.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) }),
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or a valid NUL-terminated string.
unsafe fn text<'a>(ptr: *const c_char, name: &'static str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::Null(name));
    }
    // SAFETY: forwarded from the caller.
    unsafe { CStr::from_ptr(ptr) }.to_str().map_err(|_| FfiError::Utf8(name))
}

/// `text` as a C string. Text from the model or the runtime holds no NUL in practice; one is
/// dropped rather than failing the call or losing the whole string.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "")).unwrap_or_default()
}
