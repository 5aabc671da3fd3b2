//! An OpenAI-compatible HTTP server for [`minimax_runtime`], built on axum and embeddable in
//! other axum applications:
//!
//! ```no_run
//! # fn demo(engine: minimax_runtime::Engine) -> Result<(), minimax_server::ServerError> {
//! use minimax_server::{ServerConfig, ServerState, router};
//! let state = ServerState::new(engine, "my-model", ServerConfig::default())?;
//! let app = axum::Router::new().nest("/llm", router(state)); // or serve it alone
//! # Ok(()) }
//! ```
//!
//! Routes: `GET /health`, `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/completions`,
//! `POST /v1/chat/completions` (both with `"stream": true` as server-sent events ending in
//! `data: [DONE]`). Errors are OpenAI's `{"error": {"message", "type", "param", "code"}}`.
//!
//! The [`Engine`] lives on one thread that runs queued requests one at a time (see
//! [`worker`]); a client that disconnects cancels its generation.

pub mod api;
pub mod error;
pub mod metrics;
mod routes;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use minimax_runtime::Engine;
use minimax_runtime::chat::ChatTemplate;
use minimax_runtime::sampling::SamplingParams;
use minimax_runtime::tokenizer::Tokenizer;
use tokio::sync::mpsc;

pub use error::{ApiError, ServerError};
pub use routes::{CheckedRequest, Endpoint, router};
pub use worker::StatsSnapshot;

use metrics::Metrics;
use worker::{Job, Stats};

/// Server settings (none of them the model's).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// `max_tokens` when a request gives none (capped by what the context leaves).
    pub default_max_tokens: usize,
    /// Sampling settings for fields a request leaves out. The temperature defaults to 1 as in
    /// OpenAI's API; a request without `seed` gets a fresh one.
    pub default_sampling: SamplingParams,
    /// Requests that may wait for the engine; more are refused with 503.
    pub queue: usize,
    /// Bytes of sequence states kept for prompts that start alike (0: none).
    pub prefix_cache_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            default_max_tokens: 256,
            default_sampling: SamplingParams {
                temperature: 1.0,
                ..SamplingParams::default()
            },
            queue: 64,
            prefix_cache_bytes: 1 << 30,
        }
    }
}

/// The state behind [`router`]: the served model's description and the engine thread's queue.
/// Cheap to clone; the engine thread ends when the last clone is dropped.
#[derive(Clone)]
pub struct ServerState {
    inner: Arc<Inner>,
}

struct Inner {
    model_id: String,
    created: u64,
    context_length: usize,
    vocab_size: usize,
    tokenizer: Arc<Tokenizer>,
    /// The chat format (the model's template or the plain one).
    template: ChatTemplate,
    config: ServerConfig,
    jobs: mpsc::Sender<Job>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

impl ServerState {
    /// Moves `engine` onto its own thread and serves it under the name `model_id`.
    pub fn new(mut engine: Engine, model_id: impl Into<String>, config: ServerConfig) -> Result<Self, ServerError> {
        let tokenizer = Arc::new(engine.tokenizer.take().ok_or(ServerError::NoTokenizer)?);
        // A server promises its clients a context length: the runtime's cap (`--max-context`,
        // or a sliding window), else the length the model was trained for.
        let context_length = engine.model.max_context.unwrap_or(engine.model.config.max_position_embeddings);
        let vocab_size = engine.model.config.vocab_size;
        let template = engine.chat_format();
        let stats = Arc::new(Stats::default());
        let metrics = Arc::new(Metrics::new());
        let (jobs, queue) = mpsc::channel(config.queue.max(1));
        let worker = worker::Worker { stats: stats.clone(), metrics: metrics.clone(), prefix_cache_bytes: config.prefix_cache_bytes };
        worker::spawn(engine, tokenizer.clone(), queue, worker).map_err(ServerError::Spawn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                model_id: model_id.into(),
                created: unix_time(),
                context_length,
                vocab_size,
                tokenizer,
                template,
                config,
                jobs,
                stats,
                metrics,
            }),
        })
    }

    /// The name clients use in `model`.
    pub fn model_id(&self) -> &str {
        &self.inner.model_id
    }

    /// Prompt plus completion tokens the model can hold.
    pub fn context_length(&self) -> usize {
        self.inner.context_length
    }

    /// Queue and request counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics_text(&self) -> String {
        let (stats, metrics) = (self.inner.stats.snapshot(), &self.inner.metrics);
        metrics.queue_depth.set(stats.waiting as i64);
        metrics.running.set(i64::from(stats.running));
        metrics.prefix(stats.prefix_cache);
        metrics.encode()
    }

    /// Queues `job`; refused when the queue is full or the engine thread is gone.
    fn submit(&self, job: Job) -> Result<(), ApiError> {
        let stats = &self.inner.stats;
        stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.inner.jobs.try_send(job).map_err(|e| {
            stats.waiting.fetch_sub(1, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.inner.metrics.request("rejected");
                    ApiError::Overloaded(self.inner.config.queue)
                }
                mpsc::error::TrySendError::Closed(_) => ApiError::Internal("the engine thread has stopped".into()),
            }
        })
    }
}

/// The model name for a model path: its directory or file name.
pub fn model_id_for_path(path: &std::path::Path) -> String {
    let name = |p: &std::path::Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    name(path)
        .or_else(|| path.canonicalize().ok().as_deref().and_then(name))
        .unwrap_or_else(|| path.display().to_string())
}

/// Serves [`router`] on `listener` until Ctrl-C or (on Unix) SIGTERM, then stops accepting
/// and lets the requests in flight finish (a stream runs to its end) before returning.
pub async fn serve(listener: tokio::net::TcpListener, state: ServerState) -> Result<(), ServerError> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM (what service managers and `docker stop` send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: finishing the requests in flight"),
                _ = term.recv() => tracing::info!("SIGTERM: finishing the requests in flight"),
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C: finishing the requests in flight");
    }
}

/// Binds `host:port` (port 0: any free port), calls `on_bound` with the actual address, and
/// serves until Ctrl-C on a tokio runtime of its own: the entry point for a command-line tool
/// that is not async itself.
pub fn serve_blocking(
    host: &str,
    port: u16,
    state: ServerState,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((host, port))
            .await
            .map_err(|source| ServerError::Bind {
                addr: format!("{host}:{port}"),
                source,
            })?;
        on_bound(listener.local_addr()?);
        serve(listener, state).await
    })
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
