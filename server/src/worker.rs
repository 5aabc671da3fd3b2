//! The engine thread: it owns the [`Engine`] and runs queued jobs one at a time (the runtime
//! has no batching, and GPU work is serial anyway). Each job resumes from the longest prefix
//! of its prompt in the [`PrefixCache`] (else a fresh state) and leaves two states there: at
//! the last [`SNAPSHOT_BLOCK`] boundary of its prompt (a later prompt that shares only a
//! beginning, such as a system prompt, finds it) and after all it fed (the next turn of a
//! chat finds it). Text streams back through a per-job channel; a closed channel (the client
//! went away) cancels the job at its next token.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use minimax_runtime::Engine;
use minimax_runtime::generate::{GenerateOptions, StopReason, prefill};
use minimax_runtime::model::Logits;
use minimax_runtime::prefix_cache::{PrefixCache, PrefixStats};
use minimax_runtime::tokenizer::Tokenizer;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::api::FinishReason;
use crate::error::ApiError;
use crate::metrics::Metrics;
use minimax_runtime::stop::{Pushed, StopMatcher};

/// One request for the engine.
#[derive(Debug)]
pub struct Job {
    /// For log lines.
    pub id: String,
    pub prompt: Vec<u32>,
    pub options: GenerateOptions,
    /// Stop sequences on the decoded text (cut from the output).
    pub stop: Vec<String>,
    pub events: mpsc::UnboundedSender<Event>,
    /// When the request came in (for the time to first token).
    pub arrived: Instant,
}

/// What a job reports, in order: any number of `Text`, then one `Done` or `Error`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done {
        completion_tokens: usize,
        finish: FinishReason,
    },
    Error(ApiError),
}

/// Counters shared by the handlers and the engine thread (served by `/health`).
#[derive(Debug, Default)]
pub struct Stats {
    pub waiting: AtomicU64,
    pub running: AtomicBool,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    /// The prefix cache's counters, as of the last job.
    pub prefix: Mutex<PrefixStats>,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    pub waiting: u64,
    pub running: bool,
    pub completed: u64,
    pub cancelled: u64,
    pub failed: u64,
    pub prefix_cache: PrefixStats,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            waiting: self.waiting.load(Ordering::Relaxed),
            running: self.running.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            prefix_cache: *self.prefix.lock().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Prompts leave a state in the prefix cache at their last multiple of this many tokens.
pub const SNAPSHOT_BLOCK: usize = 256;

/// What the engine thread reports to, and its prefix cache's size.
pub struct Worker {
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    pub prefix_cache_bytes: u64,
}

/// Starts the engine thread; it ends when every sender of `jobs` is gone.
pub fn spawn(
    engine: Engine,
    tokenizer: Arc<Tokenizer>,
    mut jobs: mpsc::Receiver<Job>,
    worker: Worker,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let Worker { stats, metrics, prefix_cache_bytes } = worker;
    std::thread::Builder::new().name("minimax-engine".into()).spawn(move || {
        let mut cache = PrefixCache::new(prefix_cache_bytes);
        while let Some(job) = jobs.blocking_recv() {
            stats.waiting.fetch_sub(1, Ordering::Relaxed);
            let span = tracing::info_span!("job", id = %job.id, prompt = job.prompt.len());
            let _entered = span.enter();
            if job.events.is_closed() {
                tracing::info!("client left while queued");
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                metrics.request("cancelled");
                continue;
            }
            stats.running.store(true, Ordering::Relaxed);
            let events = job.events.clone();
            // A panic in the engine fails this request, not the server.
            metrics.prompt_tokens.inc_by(job.prompt.len() as u64);
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| run(&engine, &tokenizer, &mut cache, &metrics, job)))
                .unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    Outcome::Failed(ApiError::Internal(format!("the engine panicked: {what}")))
                });
            stats.running.store(false, Ordering::Relaxed);
            *stats.prefix.lock().unwrap_or_else(|e| e.into_inner()) = cache.stats();
            match outcome {
                Outcome::Done { completion_tokens, finish } => {
                    tracing::info!(completion_tokens, ?finish, "done");
                    stats.completed.fetch_add(1, Ordering::Relaxed);
                    metrics.request("completed");
                    let _ = events.send(Event::Done { completion_tokens, finish });
                }
                Outcome::Cancelled { completion_tokens } => {
                    tracing::info!(completion_tokens, "client disconnected: cancelled");
                    stats.cancelled.fetch_add(1, Ordering::Relaxed);
                    metrics.request("cancelled");
                }
                Outcome::Failed(e) => {
                    tracing::warn!(error = %e, "failed");
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    metrics.request("failed");
                    let _ = events.send(Event::Error(e));
                }
            }
        }
        tracing::debug!("job queue closed; engine thread ends");
    })
}

enum Outcome {
    Done { completion_tokens: usize, finish: FinishReason },
    Cancelled { completion_tokens: usize },
    Failed(ApiError),
}

/// Generates one job's text, sending it as it forms.
fn run(engine: &Engine, tokenizer: &Tokenizer, cache: &mut PrefixCache, metrics: &Metrics, job: Job) -> Outcome {
    let Job {
        prompt,
        options,
        stop,
        events,
        arrived,
        ..
    } = job;
    let (start, mut state) = cache.resume(&prompt).unwrap_or_else(|| (0, engine.new_state()));
    if start > 0 {
        tracing::info!(resumed = start, "prompt prefix from the cache");
    }
    // Up to the prompt's last block boundary, then a snapshot there (generation needs at
    // least the prompt's last token left to feed).
    let boundary = (prompt.len().saturating_sub(1) / SNAPSHOT_BLOCK) * SNAPSHOT_BLOCK;
    let mut fed = start;
    if boundary > start {
        let done = pollster::block_on(prefill(&engine.model, &mut state, &prompt[start..boundary], options.prefill_chunk, Logits::Last));
        if let Err(e) = done {
            return Outcome::Failed(ApiError::Internal(e.to_string()));
        }
        cache.insert(&prompt[..boundary], &state);
        fed = boundary;
    }
    let mut text = tokenizer.stream();
    let mut stops = StopMatcher::new(stop);
    let mut gone = false;
    let mut hit_stop = false;
    let mut failure = None;
    let send = |piece: String| piece.is_empty() || events.send(Event::Text(piece)).is_ok();
    let mut last_token: Option<Instant> = None;
    let generated = pollster::block_on(engine.generate(&mut state, &prompt[fed..], &options, |id| {
        let now = Instant::now();
        match last_token.replace(now) {
            None => metrics.time_to_first_token.observe((now - arrived).as_secs_f64()),
            Some(before) => metrics.inter_token.observe((now - before).as_secs_f64()),
        }
        metrics.completion_tokens.inc();
        // A dropped receiver means the client is gone; checked every token, since a token
        // may add no text.
        if events.is_closed() {
            gone = true;
            return false;
        }
        let piece = match text.push(id) {
            Ok(Some(piece)) => piece,
            Ok(None) => return true,
            Err(e) => {
                failure = Some(ApiError::Internal(e.to_string()));
                return false;
            }
        };
        let (release, stopped) = match stops.push(&piece) {
            Pushed::Release(t) => (t, false),
            Pushed::Stopped(t) => (t, true),
        };
        if !send(release) {
            gone = true;
            return false;
        }
        hit_stop = stopped;
        !stopped
    }));
    let generated = match generated {
        Ok(g) => g,
        Err(e) => return Outcome::Failed(ApiError::Internal(e.to_string())),
    };
    let completion_tokens = generated.tokens.len();
    // The state has read the prompt and all but (at most) the last generated token.
    let read: Vec<u32> = prompt.iter().chain(&generated.tokens).take(state.position).copied().collect();
    cache.insert(&read, &state);
    if let Some(e) = failure {
        return Outcome::Failed(e);
    }
    if gone {
        return Outcome::Cancelled { completion_tokens };
    }
    if hit_stop {
        return Outcome::Done {
            completion_tokens,
            finish: FinishReason::Stop,
        };
    }
    if !send(stops.finish()) {
        return Outcome::Cancelled { completion_tokens };
    }
    let finish = match generated.stop {
        StopReason::MaxTokens => FinishReason::Length,
        StopReason::Eos | StopReason::Cancelled => FinishReason::Stop,
    };
    Outcome::Done {
        completion_tokens,
        finish,
    }
}
