//! `/metrics`: the server's counters in the Prometheus (OpenMetrics) text format, as
//! llama-server and vLLM expose theirs: requests by outcome, queue depth, tokens, time to first
//! token and between tokens, and the prefix cache.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use minimax_runtime::prefix_cache::PrefixStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a request ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

/// Everything `/metrics` reports. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    /// `completed`, `cancelled`, `failed`, `rejected` (queue full).
    pub requests: Family<Outcome, Counter>,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub queue_depth: Gauge,
    pub running: Gauge,
    /// From the request's arrival to its first token (queueing included).
    pub time_to_first_token: Histogram,
    pub inter_token: Histogram,
    prefix_lookups: Counter,
    prefix_hits: Counter,
    prefix_tokens_saved: Counter,
    prefix_bytes: Gauge<u64, AtomicU64>,
    prefix_entries: Gauge,
    /// The prefix counters already added to the counters above.
    prefix_seen: Mutex<PrefixStats>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("minimax");
        let requests = Family::<Outcome, Counter>::default();
        registry.register("requests", "Requests by how they ended", requests.clone());
        let prompt_tokens = Counter::default();
        registry.register("prompt_tokens", "Prompt tokens of finished requests", prompt_tokens.clone());
        let completion_tokens = Counter::default();
        registry.register("completion_tokens", "Tokens generated", completion_tokens.clone());
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Requests waiting for the engine", queue_depth.clone());
        let running = Gauge::default();
        registry.register("running", "Requests the engine is running (0 or 1)", running.clone());
        // 1 ms .. ~65 s.
        let time_to_first_token = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register("time_to_first_token_seconds", "From arrival to the first token", time_to_first_token.clone());
        // 0.1 ms .. ~3 s.
        let inter_token = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register("inter_token_seconds", "Between consecutive tokens of a request", inter_token.clone());
        let prefix_lookups = Counter::default();
        registry.register("prefix_cache_lookups", "Prompts looked up in the prefix cache", prefix_lookups.clone());
        let prefix_hits = Counter::default();
        registry.register("prefix_cache_hits", "Prompts resumed from a cached prefix", prefix_hits.clone());
        let prefix_tokens_saved = Counter::default();
        registry.register("prefix_cache_tokens_saved", "Prompt tokens not fed thanks to the cache", prefix_tokens_saved.clone());
        let prefix_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register("prefix_cache_bytes", "Bytes of state the prefix cache holds", prefix_bytes.clone());
        let prefix_entries = Gauge::default();
        registry.register("prefix_cache_entries", "States the prefix cache holds", prefix_entries.clone());
        Self {
            registry,
            requests,
            prompt_tokens,
            completion_tokens,
            queue_depth,
            running,
            time_to_first_token,
            inter_token,
            prefix_lookups,
            prefix_hits,
            prefix_tokens_saved,
            prefix_bytes,
            prefix_entries,
            prefix_seen: Mutex::new(PrefixStats::default()),
        }
    }

    /// Counts a request that ended as `outcome`.
    pub fn request(&self, outcome: &'static str) {
        self.requests.get_or_create(&Outcome { outcome }).inc();
    }

    /// Takes the prefix cache's counters as they are now.
    pub fn prefix(&self, now: PrefixStats) {
        let mut seen = self.prefix_seen.lock().unwrap_or_else(|e| e.into_inner());
        self.prefix_lookups.inc_by(now.lookups.saturating_sub(seen.lookups));
        self.prefix_hits.inc_by(now.hits.saturating_sub(seen.hits));
        self.prefix_tokens_saved.inc_by(now.tokens_saved.saturating_sub(seen.tokens_saved));
        self.prefix_bytes.set(now.bytes);
        self.prefix_entries.set(now.entries as i64);
        *seen = now;
    }

    /// The text `/metrics` serves.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
