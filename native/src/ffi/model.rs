//! The model handle: loading, freeing, and the tokenizer.

use std::ffi::{CStr, CString, c_char};
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::Arc;

use minimax_runtime::{Engine, ModelFiles, RuntimeOptions, device};

use super::error::{guard, guard_value};
use super::types::{Params, Status, read_params};
use super::{FfiError, arg, arg_mut, c_string, slice, slice_mut, text};

/// A loaded model: weights on the device and the tokenizer. Contexts share it, so it may be
/// freed before them.
pub struct Model {
    pub(crate) engine: Arc<Engine>,
    /// `minimax_model_device()`'s answer, kept so that the pointer stays valid.
    device: CString,
}

/// A path argument: raw bytes on Unix, where paths need not be UTF-8.
///
/// # Safety
/// `ptr` is a valid NUL-terminated string.
unsafe fn path_arg(ptr: *const c_char) -> Result<PathBuf, FfiError> {
    // SAFETY: forwarded from the caller.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    #[cfg(unix)]
    return Ok(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes.to_bytes()).into());
    #[cfg(not(unix))]
    return Ok(bytes.to_str().map_err(|_| FfiError::Utf8("path"))?.into());
}

/// Loads a model and writes its handle to `*out_model` (NULL on failure).
///
/// `path` is a Hugging Face model directory (config.json, *.safetensors, tokenizer.json), a
/// GGUF file, or NULL for the embedded demo model. Only `params->backend` is read; `params`
/// may be NULL for the defaults. Free the model with `minimax_model_free()`.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `params` is NULL or points to a
/// `minimax_params`; `out_model` points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_model_load(
    path: *const c_char,
    params: *const Params,
    out_model: *mut *mut Model,
) -> Status {
    guard(|| {
        // SAFETY: (all blocks) the caller upholds the documented contract.
        let out = unsafe { arg_mut(out_model, "out_model") }?;
        *out = null_mut();
        let params = unsafe { read_params(params) }?;
        let files = if path.is_null() {
            crate::demo::files()?
        } else {
            let path = unsafe { path_arg(path) }?;
            // Checked here because the runtime's own error would name `config.json` inside it.
            if !path.exists() {
                return Err(FfiError::NotFound(path.display().to_string()));
            }
            ModelFiles::read(&path)?
        };
        let options = RuntimeOptions {
            backend: params.backend.choice(),
            ..Default::default()
        };
        let engine = Engine::new(files, device::select(options.backend)?, &options)?;
        let device = c_string(&engine.selected.describe());
        let engine = Arc::new(engine);
        *out = Box::into_raw(Box::new(Model { engine, device }));
        Ok(())
    })
}

/// Frees a model. NULL is ignored. Contexts made from it stay usable until freed.
///
/// # Safety
/// `model` is NULL or a handle from `minimax_model_load()` that has not been freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_model_free(model: *mut Model) {
    guard(|| {
        if !model.is_null() {
            // SAFETY: the handle came from `Box::into_raw` in `minimax_model_load`.
            drop(unsafe { Box::from_raw(model) });
        }
        Ok(())
    });
}

/// The device the model runs on, e.g. "NVIDIA H100 (Vulkan, DiscreteGpu)" or
/// "CPU (Burn Flex)"; NULL for a NULL model. Valid until the model is freed.
///
/// # Safety
/// `model` is NULL or a live model handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_model_device(model: *const Model) -> *const c_char {
    // SAFETY: the caller passes NULL or a live handle.
    guard_value(std::ptr::null(), || Ok(unsafe { arg(model, "model") }?.device.as_ptr()))
}

/// Tokenizes `text` (with the special tokens the tokenizer adds, as `minimax run --prompt`
/// does) into `tokens[0..capacity]`.
///
/// `*n_tokens` receives the number of ids; when it exceeds `capacity` the call returns
/// `MINIMAX_STATUS_BUFFER_TOO_SMALL` and writes nothing, so a call with capacity 0 asks the size.
///
/// # Safety
/// `model` is a live handle; `text` a NUL-terminated string; `tokens` NULL or `capacity`
/// writable ids; `n_tokens` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_tokenize(
    model: *const Model,
    text: *const c_char,
    tokens: *mut u32,
    capacity: usize,
    n_tokens: *mut usize,
) -> Status {
    guard(|| {
        // SAFETY: (all blocks) the caller upholds the documented contract.
        let n_tokens = unsafe { arg_mut(n_tokens, "n_tokens") }?;
        *n_tokens = 0;
        let model = unsafe { arg(model, "model") }?;
        let ids = model.engine.encode(unsafe { self::text(text, "text") }?)?;
        *n_tokens = ids.len();
        if ids.len() > capacity {
            return Err(FfiError::BufferTooSmall { needed: ids.len(), capacity });
        }
        unsafe { slice_mut(tokens, capacity, "tokens") }?[..ids.len()].copy_from_slice(&ids);
        Ok(())
    })
}

/// Turns ids back into text (special tokens skipped), NUL-terminated, into
/// `text[0..capacity]`.
///
/// `*n_bytes` receives the text's length in bytes without the NUL; when `capacity` is not
/// larger the call returns `MINIMAX_STATUS_BUFFER_TOO_SMALL` and writes nothing.
///
/// # Safety
/// `model` is a live handle; `tokens` NULL or `n_tokens` readable ids; `text` NULL or
/// `capacity` writable bytes; `n_bytes` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_detokenize(
    model: *const Model,
    tokens: *const u32,
    n_tokens: usize,
    text: *mut c_char,
    capacity: usize,
    n_bytes: *mut usize,
) -> Status {
    guard(|| {
        // SAFETY: (all blocks) the caller upholds the documented contract.
        let n_bytes = unsafe { arg_mut(n_bytes, "n_bytes") }?;
        *n_bytes = 0;
        let model = unsafe { arg(model, "model") }?;
        let ids = unsafe { slice(tokens, n_tokens, "tokens") }?;
        let decoded = model.engine.tokenizer()?.decode(ids)?;
        *n_bytes = decoded.len();
        if decoded.len() >= capacity {
            return Err(FfiError::BufferTooSmall { needed: decoded.len() + 1, capacity });
        }
        let out = unsafe { slice_mut(text.cast::<u8>(), capacity, "text") }?;
        out[..decoded.len()].copy_from_slice(decoded.as_bytes());
        out[decoded.len()] = 0;
        Ok(())
    })
}
