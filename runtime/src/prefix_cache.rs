//! The prefix-state cache: the state after some tokens, kept so that a later sequence that
//! starts with the same tokens resumes from it instead of reading them again (a repeated
//! system prompt, the earlier turns of a chat, a few-shot preamble).
//!
//! Hybrid models make this cheap: a lightning layer's state is one `[H, D, D]` tensor however
//! long the prefix, and only softmax layers add their KV rows. Entries share their tensors
//! with the states handed out: kernels write new tensors rather than update old ones, and a
//! KV append to a shared buffer copies it first, so a resumed sequence never changes an
//! entry. Bounded in bytes; the least recently used entry goes first.

use serde::Serialize;

use crate::model::State;

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrefixStats {
    /// Sequences looked up.
    pub lookups: u64,
    /// Of which resumed from an entry.
    pub hits: u64,
    /// Tokens not fed thanks to the hits.
    pub tokens_saved: u64,
    pub entries: u64,
    pub bytes: u64,
    pub evictions: u64,
}

#[derive(Debug)]
struct Entry {
    tokens: Vec<u32>,
    state: State,
    bytes: u64,
    used: u64,
}

/// States after token prefixes, within a byte budget.
#[derive(Debug)]
pub struct PrefixCache {
    budget: u64,
    entries: Vec<Entry>,
    clock: u64,
    stats: PrefixStats,
}

impl PrefixCache {
    /// A cache of at most `budget` bytes of state (0 disables it).
    pub fn new(budget: u64) -> Self {
        Self { budget, entries: Vec::new(), clock: 0, stats: PrefixStats::default() }
    }

    /// The state of the longest cached prefix of `tokens` that leaves at least one token to
    /// feed (the last token's logits are what generation starts from), and that prefix's
    /// length.
    pub fn resume(&mut self, tokens: &[u32]) -> Option<(usize, State)> {
        self.stats.lookups += 1;
        self.clock += 1;
        let best = self
            .entries
            .iter_mut()
            .filter(|e| e.tokens.len() < tokens.len() && tokens.starts_with(&e.tokens))
            .max_by_key(|e| e.tokens.len())?;
        best.used = self.clock;
        self.stats.hits += 1;
        self.stats.tokens_saved += best.tokens.len() as u64;
        Some((best.tokens.len(), best.state.clone()))
    }

    /// Keeps `state` as the state after `tokens` (replacing an entry for the same tokens),
    /// then drops the least recently used entries until the cache fits its budget. A state
    /// larger than the whole budget is not kept.
    pub fn insert(&mut self, tokens: &[u32], state: &State) {
        debug_assert_eq!(state.position, tokens.len(), "a state after {} tokens", state.position);
        let bytes = state.bytes();
        if tokens.is_empty() || bytes > self.budget {
            return;
        }
        self.clock += 1;
        self.entries.retain(|e| e.tokens != tokens);
        self.entries.push(Entry { tokens: tokens.to_vec(), state: state.clone(), bytes, used: self.clock });
        while self.entries.iter().map(|e| e.bytes).sum::<u64>() > self.budget {
            let oldest = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used).expect("over budget, so not empty");
            self.entries.swap_remove(oldest);
            self.stats.evictions += 1;
        }
    }

    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            entries: self.entries.len() as u64,
            bytes: self.entries.iter().map(|e| e.bytes).sum(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    /// A state of a one-lightning-layer model (4 heads of 8: 1 KiB) after `n` tokens.
    fn state(n: usize) -> State {
        let config = serde_json::json!({
            "model_type": "minimax", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
            "num_local_experts": 4, "num_experts_per_tok": 2, "layer_types": ["linear_attention"],
        });
        let config = ModelConfig::from_json(&config.to_string()).unwrap();
        let cpu = crate::device::select(crate::device::BackendChoice::Cpu).unwrap().device;
        let mut s = State::new(&config, &cpu);
        s.position = n;
        s
    }

    #[test]
    fn the_longest_prefix_that_leaves_a_token_wins_and_the_least_recent_goes_first() {
        let bytes = state(0).bytes();
        assert_eq!(bytes, 4 * 8 * 8 * 4);
        let mut cache = PrefixCache::new(3 * bytes);
        cache.insert(&[1, 2], &state(2));
        cache.insert(&[1, 2, 3, 4], &state(4));
        cache.insert(&[5], &state(1));
        assert_eq!(cache.resume(&[1, 2, 3, 4, 9]).map(|r| r.0), Some(4));
        // The whole prompt cached leaves nothing to feed: the shorter entry serves it.
        assert_eq!(cache.resume(&[1, 2, 3, 4]).map(|r| r.0), Some(2));
        assert_eq!(cache.resume(&[7, 1, 2]).map(|r| r.0), None);
        // Full: a fourth entry evicts the least recently used one, [5].
        cache.insert(&[6, 6], &state(2));
        assert_eq!(cache.resume(&[5, 0]).map(|r| r.0), None);
        assert_eq!(cache.resume(&[1, 2, 0]).map(|r| r.0), Some(2));
        let s = cache.stats();
        assert_eq!((s.lookups, s.hits, s.tokens_saved, s.entries, s.bytes, s.evictions), (5, 3, 8, 3, 3 * bytes, 1));
        // A state larger than the whole budget is not kept.
        let mut small = PrefixCache::new(bytes - 1);
        small.insert(&[1], &state(1));
        assert_eq!(small.stats().entries, 0);
    }
}
