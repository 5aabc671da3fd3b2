//! The HTTP surface: request checking, prompt building, and answers as JSON or as server-sent
//! events in OpenAI's chunk format.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::hash::BuildHasher;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use minimax_runtime::chat::Message;
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::sampling::SamplingParams;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::api::*;
use crate::error::ApiError;
use crate::worker::{Event, Job};
use crate::{Inner, ServerState, unix_time};

/// The routes, with `state` applied: merge or nest the result into any axum app.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(|| async { ApiError::Route(StatusCode::NOT_FOUND, "no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::Route(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route".into())
        })
        .with_state(state)
}

/// A JSON body whose every failure (unreadable body, bad JSON, missing or mistyped fields)
/// becomes a 400 in OpenAI's format rather than axum's plain-text rejection. The content type
/// is not checked, so that `curl -d` works without a header.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::Route(e.status(), e.body_text()))?;
        parse_body(&bytes).map(JsonBody)
    }
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("invalid request body: {e}"), None))
}

/// The routes that generate, for [`ServerState::check_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/completions`.
    Completions,
    /// `POST /v1/chat/completions`.
    ChatCompletions,
}

/// What [`ServerState::check_request`] found in an acceptable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    /// The stop sequences, the chat's own included.
    pub stop: Vec<String>,
    pub stream: bool,
}

impl ServerState {
    /// Runs a request body through everything `endpoint` does before queueing it: the JSON
    /// parse, the chat template and the tokenizer, and the checks of every field. Nothing is
    /// generated. The routes run the same code; this entry exists for the fuzz targets
    /// (`fuzz/`), which feed it hostile bodies without an HTTP round trip or a generation.
    pub fn check_request(&self, endpoint: Endpoint, body: &[u8]) -> Result<CheckedRequest, ApiError> {
        let inner = &self.inner;
        let p = match endpoint {
            Endpoint::Completions => prepare_completion(inner, parse_body(body)?)?,
            Endpoint::ChatCompletions => prepare_chat(inner, parse_body(body)?)?,
        };
        Ok(CheckedRequest {
            prompt: p.prompt,
            max_tokens: p.options.max_tokens,
            stop: p.stop,
            stream: p.stream,
        })
    }
}

async fn health(State(state): State<ServerState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok", "model": state.model_id(), "stats": state.stats()}))
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics_text())
}

fn card(inner: &Inner) -> ModelCard {
    ModelCard {
        id: inner.model_id.clone(),
        object: "model",
        created: inner.created,
        owned_by: "minimax-webgpu",
        context_length: inner.context_length,
    }
}

async fn models(State(state): State<ServerState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![card(&state.inner)],
    })
}

async fn model(State(state): State<ServerState>, Path(id): Path<String>) -> Result<Json<ModelCard>, ApiError> {
    if id != state.inner.model_id {
        return Err(ApiError::ModelNotFound(id, state.inner.model_id.clone()));
    }
    Ok(Json(card(&state.inner)))
}

/// A checked request, ready for the engine.
struct Prepared {
    prompt: Vec<u32>,
    options: GenerateOptions,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
}

/// A fresh random value (std's hasher keys are random per process and per call).
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(unix_time())
}

fn check(ok: bool, param: &'static str, message: &str) -> Result<(), ApiError> {
    if ok { Ok(()) } else { Err(ApiError::invalid(message, Some(param))) }
}

/// Checks the generation fields against the model and turns them into options.
/// `prompt_param` names the field the prompt came from, for context-length errors.
fn prepare(
    inner: &Inner,
    g: GenerationFields,
    prompt: Vec<u32>,
    prompt_param: &'static str,
) -> Result<Prepared, ApiError> {
    if let Some(model) = &g.model
        && *model != inner.model_id
    {
        return Err(ApiError::ModelNotFound(model.clone(), inner.model_id.clone()));
    }
    check(g.n.is_none_or(|n| n == 1), "n", "only n = 1 is supported")?;
    check(g.frequency_penalty.is_none_or(|p| p == 0.0), "frequency_penalty", "frequency_penalty is not supported (use repetition_penalty)")?;
    check(g.presence_penalty.is_none_or(|p| p == 0.0), "presence_penalty", "presence_penalty is not supported (use repetition_penalty)")?;
    let d = &inner.config.default_sampling;
    let temperature = g.temperature.unwrap_or(d.temperature);
    check(temperature.is_finite() && temperature >= 0.0, "temperature", "temperature must be a number >= 0")?;
    let top_p = g.top_p.unwrap_or(d.top_p);
    check(top_p > 0.0 && top_p <= 1.0, "top_p", "top_p must be in (0, 1]")?;
    let min_p = g.min_p.unwrap_or(d.min_p);
    check((0.0..=1.0).contains(&min_p), "min_p", "min_p must be in [0, 1]")?;
    let repetition_penalty = g.repetition_penalty.unwrap_or(d.repetition_penalty);
    check(
        repetition_penalty.is_finite() && repetition_penalty > 0.0,
        "repetition_penalty",
        "repetition_penalty must be a number > 0",
    )?;
    let top_k = g.top_k.map_or(d.top_k, |k| usize::try_from(k).unwrap_or(usize::MAX));
    let stop = g.stop.map(Stop::into_vec).unwrap_or_default();
    check(stop.len() <= 16, "stop", "at most 16 stop sequences are supported")?;

    check(!prompt.is_empty(), prompt_param, "the prompt is empty")?;
    if let Some(&id) = prompt.iter().find(|&&id| id as usize >= inner.vocab_size) {
        return Err(ApiError::invalid(
            format!("token id {id} is out of range for a vocabulary of {}", inner.vocab_size),
            Some(prompt_param),
        ));
    }
    let context = inner.context_length;
    let requested = g.max_completion_tokens.or(g.max_tokens);
    let max_tokens = match requested {
        Some(0) => return Err(ApiError::invalid("max_tokens must be at least 1", Some("max_tokens"))),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => inner.config.default_max_tokens.min(context.saturating_sub(prompt.len())).max(1),
    };
    if prompt.len().saturating_add(max_tokens) > context {
        return Err(ApiError::ContextLength {
            context,
            prompt: prompt.len(),
            max_tokens,
            param: if requested.is_some() { "max_tokens" } else { prompt_param },
        });
    }
    let options = GenerateOptions {
        sampling: SamplingParams {
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            // Two's complement keeps negative seeds (which OpenAI allows) distinct.
            seed: g.seed.map_or_else(random_u64, |s| s as u64),
        },
        max_tokens,
        stop_on_eos: !g.ignore_eos,
        stop_tokens: Vec::new(),
        prefill_chunk: None,
    };
    Ok(Prepared {
        prompt,
        options,
        stop,
        stream: g.stream,
        include_usage: g.stream_options.is_some_and(|o| o.include_usage),
    })
}

fn tokenizer_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(format!("tokenizer: {e}"))
}

fn prepare_completion(inner: &Inner, req: CompletionRequest) -> Result<Prepared, ApiError> {
    check(!req.echo, "echo", "echo is not supported")?;
    // Plain text is encoded as `minimax run` encodes it, with the tokenizer's own special
    // tokens (e.g. a BOS).
    let prompt = match req.prompt {
        Prompt::Text(text) => inner.tokenizer.encode(&text).map_err(tokenizer_error)?,
        Prompt::Texts(texts) if texts.len() == 1 => inner.tokenizer.encode(&texts[0]).map_err(tokenizer_error)?,
        Prompt::Texts(_) => return Err(ApiError::invalid("exactly one prompt per request is supported", Some("prompt"))),
        Prompt::Tokens(ids) => ids,
    };
    prepare(inner, req.generation, prompt, "prompt")
}

fn prepare_chat(inner: &Inner, req: ChatRequest) -> Result<Prepared, ApiError> {
    let (prompt, stop_tokens, stops) = chat_prompt(inner, req.messages)?;
    let mut prepared = prepare(inner, req.generation, prompt, "messages")?;
    prepared.options.stop_tokens.extend(stop_tokens);
    prepared.stop.extend(stops);
    Ok(prepared)
}

async fn completions(State(state): State<ServerState>, JsonBody(req): JsonBody<CompletionRequest>) -> Response {
    let result = async { start(&state, prepare_completion(&state.inner, req)?, Kind::Completion).await };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn chat_completions(State(state): State<ServerState>, JsonBody(req): JsonBody<ChatRequest>) -> Response {
    let result = async { start(&state, prepare_chat(&state.inner, req)?, Kind::Chat).await };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// The token ids of a chat, the extra stop tokens and the extra stop sequences.
fn chat_prompt(inner: &Inner, messages: Vec<RequestMessage>) -> Result<(Vec<u32>, Vec<u32>, Vec<String>), ApiError> {
    check(!messages.is_empty(), "messages", "messages must not be empty")?;
    let messages = messages
        .into_iter()
        .map(|m| {
            let content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(text)) => text,
                Some(MessageContent::Parts(parts)) => parts
                    .into_iter()
                    .map(|p| match (p.kind.as_str(), p.text) {
                        ("text", Some(text)) => Ok(text),
                        _ => Err(ApiError::invalid("only text content parts are supported", Some("messages"))),
                    })
                    .collect::<Result<String, _>>()?,
            };
            Ok(Message { role: m.role, content })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let template = &inner.template;
    // A template may reject a conversation (say, roles out of order): the client's fault.
    let text = template
        .render(&messages, true)
        .map_err(|e| ApiError::invalid(e.to_string(), Some("messages")))?;
    let ids = template.encode(&inner.tokenizer, &text).map_err(tokenizer_error)?;
    // Its end-of-turn token ends the reply, whatever the config's EOS is.
    let stop_tokens = inner.tokenizer.token_id(&template.eos_token).into_iter().collect();
    Ok((ids, stop_tokens, template.stop.clone()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

/// Queues the request and answers with the whole result, or with a stream of it.
async fn start(state: &ServerState, p: Prepared, kind: Kind) -> Result<Response, ApiError> {
    let inner = &state.inner;
    let id = format!(
        "{}-{:016x}",
        if kind == Kind::Chat { "chatcmpl" } else { "cmpl" },
        random_u64()
    );
    let prompt_tokens = p.prompt.len();
    tracing::info!(%id, prompt_tokens, max_tokens = p.options.max_tokens, stream = p.stream, "queued");
    let (events, mut rx) = mpsc::unbounded_channel();
    state.submit(Job {
        id: id.clone(),
        prompt: p.prompt,
        options: p.options,
        stop: p.stop,
        events,
        arrived: std::time::Instant::now(),
    })?;
    let chunker = Chunker {
        kind,
        id,
        created: unix_time(),
        model: inner.model_id.clone(),
        prompt_tokens,
        include_usage: p.include_usage,
    };
    if p.stream {
        return Ok(stream(rx, chunker).into_response());
    }
    // Dropping this future (the client left) drops `rx`, which cancels the job.
    let mut text = String::new();
    let (completion_tokens, finish) = loop {
        match rx.recv().await {
            Some(Event::Text(piece)) => text.push_str(&piece),
            Some(Event::Done {
                completion_tokens,
                finish,
            }) => break (completion_tokens, finish),
            Some(Event::Error(e)) => return Err(e),
            None => return Err(ApiError::Internal("the engine dropped the request".into())),
        }
    };
    let usage = Usage::new(prompt_tokens, completion_tokens);
    let Chunker { id, created, model, .. } = chunker;
    Ok(match kind {
        Kind::Completion => Json(CompletionResponse {
            id,
            object: "text_completion",
            created,
            model,
            choices: vec![CompletionChoice {
                index: 0,
                text,
                logprobs: None,
                finish_reason: Some(finish),
            }],
            usage: Some(usage),
        })
        .into_response(),
        Kind::Chat => Json(ChatResponse {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: ResponseMessage {
                    role: "assistant",
                    content: text,
                },
                logprobs: None,
                finish_reason: finish,
            }],
            usage,
        })
        .into_response(),
    })
}

/// Builds the stream chunks of one request.
struct Chunker {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    prompt_tokens: usize,
    include_usage: bool,
}

fn data(value: &impl Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(value).unwrap_or_default())
}

impl Chunker {
    fn chunk(&self, text: Option<String>, role: bool, finish: Option<FinishReason>, usage: Option<Usage>) -> SseEvent {
        match self.kind {
            Kind::Completion => data(&CompletionResponse {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: vec![CompletionChoice {
                    index: 0,
                    text: text.unwrap_or_default(),
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            }),
            Kind::Chat => data(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: vec![ChunkChoice {
                    index: 0,
                    delta: Delta {
                        role: role.then_some("assistant"),
                        content: text,
                    },
                    logprobs: None,
                    finish_reason: finish,
                }],
                usage,
            }),
        }
    }

    /// The chunks before any text: the chat's role announcement.
    fn opening(&self) -> Vec<SseEvent> {
        match self.kind {
            Kind::Chat => vec![self.chunk(Some(String::new()), true, None, None)],
            Kind::Completion => Vec::new(),
        }
    }

    /// The closing chunks. With `stream_options.include_usage` the usage comes in a last chunk
    /// with no choices, as OpenAI sends it; otherwise (an extension) in the finishing chunk.
    fn closing(&self, completion_tokens: usize, finish: FinishReason) -> Vec<SseEvent> {
        let usage = Usage::new(self.prompt_tokens, completion_tokens);
        if !self.include_usage {
            return vec![self.chunk(None, false, Some(finish), Some(usage))];
        }
        let last = match self.kind {
            Kind::Completion => data(&CompletionResponse {
                id: self.id.clone(),
                object: "text_completion",
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
            Kind::Chat => data(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk",
                created: self.created,
                model: self.model.clone(),
                choices: Vec::new(),
                usage: Some(usage),
            }),
        };
        vec![self.chunk(None, false, Some(finish), None), last]
    }
}

/// The engine's events as server-sent events, ending with `data: [DONE]`. When the client
/// disconnects, axum drops this stream and with it `rx`, which cancels the job.
fn stream(rx: mpsc::UnboundedReceiver<Event>, chunker: Chunker) -> impl IntoResponse {
    let queue: VecDeque<SseEvent> = chunker.opening().into();
    let events = futures_util::stream::unfold(
        (rx, queue, chunker, false),
        |(mut rx, mut queue, chunker, mut done)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok::<_, Infallible>(event), (rx, queue, chunker, done)));
                }
                if done {
                    return None;
                }
                let last = match rx.recv().await {
                    Some(Event::Text(text)) => {
                        queue.push_back(chunker.chunk(Some(text), false, None, None));
                        continue;
                    }
                    Some(Event::Done {
                        completion_tokens,
                        finish,
                    }) => chunker.closing(completion_tokens, finish),
                    // Errors after the response has begun can only be reported in the stream.
                    Some(Event::Error(e)) => vec![data(&e.body())],
                    None => vec![data(&ApiError::Internal("the engine dropped the request".into()).body())],
                };
                queue.extend(last);
                queue.push_back(SseEvent::default().data("[DONE]"));
                done = true;
            }
        },
    );
    // Comments while waiting in the queue keep proxies from timing out, and reveal a client
    // that left before its turn.
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(5)))
}
