//! The context handle: one sequence's `State`, so that successive `minimax_generate` calls
//! continue one conversation, and generation with a token callback.

use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::Arc;

use minimax_runtime::Engine;
use minimax_runtime::model::State;

use super::error::{guard, guard_value};
use super::model::Model;
use super::types::{Params, Status, TokenCallback, read_params};
use super::{FfiError, arg, arg_mut, c_string, slice, slice_mut};

/// One conversation with a model: the sequence state that successive `minimax_generate`
/// calls continue.
pub struct Context {
    engine: Arc<Engine>,
    state: State,
    /// Tokens of the conversation that `state` has not read yet. `generate` does not feed its
    /// last token back (nothing needed its logits), so the next call starts with it.
    pending: Vec<u32>,
}

impl Context {
    fn new(engine: Arc<Engine>) -> Self {
        let state = engine.new_state();
        Self { engine, state, pending: Vec::new() }
    }

    fn reset(&mut self) {
        self.state = self.engine.new_state();
        self.pending.clear();
    }

    /// Feeds the pending tokens and `prompt`, then streams up to `params.max_tokens` (and
    /// `limit`) new tokens into `out` and `callback`. Returns how many were written to `out`.
    fn generate(
        &mut self,
        prompt: &[u32],
        params: &Params,
        limit: Option<usize>,
        out: &mut [u32],
        callback: TokenCallback,
        user_data: *mut c_void,
    ) -> Result<usize, FfiError> {
        let ids: Vec<u32> = self.pending.iter().chain(prompt).copied().collect();
        let options = params.generate_options(limit);
        let engine = self.engine.clone();
        let mut stream = engine.tokenizer.as_ref().map(|t| t.stream());
        let mut written = 0;
        let mut failure = None;
        let before = self.state.position;
        let generated = pollster::block_on(engine.generate(&mut self.state, &ids, &options, |id| {
            if let Some(slot) = out.get_mut(written) {
                *slot = id;
                written += 1;
            }
            // `None` without a tokenizer; `Some("")` while a character is incomplete.
            let piece = match stream.as_mut().map(|s| s.push(id)).transpose() {
                Ok(piece) => piece.map(|p| c_string(&p.unwrap_or_default())),
                Err(e) => {
                    failure = Some(e);
                    return false;
                }
            };
            let Some(callback) = callback else { return true };
            let piece = piece.as_ref().map_or(std::ptr::null(), |p| p.as_ptr());
            // SAFETY: the caller supplied the callback and its user data for this call.
            unsafe { callback(id, piece, user_data) }
        }))?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        // What the state has read, counted rather than assumed, decides what is still pending.
        let fed = self.state.position - before;
        let conversation: Vec<u32> = ids.into_iter().chain(generated.tokens).collect();
        self.pending = conversation.get(fed..).map(<[u32]>::to_vec).unwrap_or_default();
        Ok(written)
    }
}

/// Starts a conversation with `model` and writes its handle to `*out_context` (NULL on
/// failure). Free it with `minimax_context_free()`.
///
/// # Safety
/// `model` is a live model handle; `out_context` points to writable storage for a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_context_new(model: *const Model, out_context: *mut *mut Context) -> Status {
    guard(|| {
        // SAFETY: (both blocks) the caller upholds the documented contract.
        let out = unsafe { arg_mut(out_context, "out_context") }?;
        *out = null_mut();
        let model = unsafe { arg(model, "model") }?;
        *out = Box::into_raw(Box::new(Context::new(model.engine.clone())));
        Ok(())
    })
}

/// Frees a context. NULL is ignored.
///
/// # Safety
/// `context` is NULL or a handle from `minimax_context_new()` that has not been freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_context_free(context: *mut Context) {
    guard(|| {
        if !context.is_null() {
            // SAFETY: the handle came from `Box::into_raw` in `minimax_context_new`.
            drop(unsafe { Box::from_raw(context) });
        }
        Ok(())
    });
}

/// Forgets the conversation: the next `minimax_generate` starts from an empty context.
///
/// # Safety
/// `context` is NULL or a live context handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_context_reset(context: *mut Context) -> Status {
    // SAFETY: the caller passes NULL or a live handle.
    guard(|| {
        unsafe { arg_mut(context, "context") }?.reset();
        Ok(())
    })
}

/// The number of tokens in the conversation so far (prompts and generated tokens); 0 for NULL.
///
/// # Safety
/// `context` is NULL or a live context handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn minimax_context_length(context: *const Context) -> usize {
    guard_value(0, || {
        // SAFETY: the caller passes NULL or a live handle.
        let context = unsafe { arg(context, "context") }?;
        Ok(context.state.position + context.pending.len())
    })
}

/// Continues the conversation: reads `prompt[0..n_prompt]` after everything earlier calls read
/// or generated, then generates up to `params->max_tokens` tokens (greedy when
/// `params->temperature` is 0; `params` may be NULL for the defaults).
///
/// Each token is passed to `callback` (may be NULL) as soon as it is chosen; the callback
/// returns false to stop. Generation also stops at an end-of-sequence token (not returned)
/// unless `params->ignore_eos`. The ids are written to `out_tokens`: when it is not NULL, at
/// most `capacity` tokens are generated. `*n_generated` receives the number written (0 on
/// failure).
///
/// `n_prompt` may be 0 to continue generating where the previous call stopped. A failure once
/// the model has started reading resets the context, since it may have read part of the input;
/// argument errors leave it as it was.
///
/// # Safety
/// `context` is a live handle, used by no other call meanwhile (the callback must not use it);
/// `prompt` NULL or `n_prompt` readable ids; `params` NULL or a `minimax_params`; `out_tokens`
/// NULL or `capacity` writable ids; `n_generated` writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "a flat C signature, like llama.h's")]
pub unsafe extern "C" fn minimax_generate(
    context: *mut Context,
    prompt: *const u32,
    n_prompt: usize,
    params: *const Params,
    callback: TokenCallback,
    user_data: *mut c_void,
    out_tokens: *mut u32,
    capacity: usize,
    n_generated: *mut usize,
) -> Status {
    // Set once the model may have read input: only then does a failure reset the context.
    let mut started = false;
    let status = guard(|| {
        // SAFETY: (all blocks) the caller upholds the documented contract.
        let n_generated = unsafe { arg_mut(n_generated, "n_generated") }?;
        *n_generated = 0;
        let context = unsafe { arg_mut(context, "context") }?;
        let prompt = unsafe { slice(prompt, n_prompt, "prompt") }?;
        let params = unsafe { read_params(params) }?;
        let out = unsafe { slice_mut(out_tokens, capacity, "out_tokens") }?;
        if prompt.is_empty() && context.pending.is_empty() {
            return Err(FfiError::NothingToContinue);
        }
        started = true;
        let limit = (!out_tokens.is_null()).then_some(capacity);
        *n_generated = context.generate(prompt, &params, limit, out, callback, user_data)?;
        Ok(())
    });
    if status != Status::Ok && started {
        // A failure (or panic) may leave the state half-updated; start over rather than
        // continue from an unknown point. The first error stays the reported one.
        // SAFETY: `context` is live, and the failed call's borrow of it has ended.
        guard(|| {
            unsafe { &mut *context }.reset();
            Ok(())
        });
    }
    status
}
