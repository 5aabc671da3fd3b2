//! Turning logits into the next token: greedy, or temperature / top-k / top-p / min-p
//! sampling with a repetition penalty, from a seeded generator so that runs repeat.

use rand::{RngExt, SeedableRng, rngs::StdRng};

/// Sampling settings; the defaults are greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1: off).
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one (0: off).
    pub min_p: f32,
    /// HF-style: divide positive logits of seen tokens by it, multiply negative ones (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A sampler with its own random state.
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = StdRng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// Whether this sampler always picks the largest logit (no temperature, no penalty), so
    /// that the device can pick it ([`crate::kernels::argmax`]).
    pub fn is_greedy(&self) -> bool {
        self.params.temperature <= 0.0 && self.params.repetition_penalty == 1.0
    }

    /// Picks the next token from `logits` given the tokens seen so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let p = &self.params;
        let mut logits = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            let mut seen: Vec<u32> = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(&logits);
        }
        // Weights relative to the most likely token, exp((l - l_max) / T), in the order of the
        // candidates sorted by logit, most likely first (ties: lower id first). Top-k sorts its
        // k candidates; without it the vocabulary is walked in that order lazily
        // ([`Descending`]): a full sort of 200K logits per token costs more than the decode
        // step, and top-p, min-p and the draw all stop within the first few hundred.
        let first = |a: &usize, b: &usize| by_logit(&logits, *a, *b);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        if p.top_k > 0 && p.top_k < order.len() {
            order.select_nth_unstable_by(p.top_k - 1, first);
            order.truncate(p.top_k);
        }
        let top = order.iter().copied().min_by(first).expect("logits are not empty");
        let max = logits[top] / p.temperature;
        let mut weights = vec![0.0f32; logits.len()];
        for &i in &order {
            weights[i] = (logits[i] / p.temperature - max).exp();
        }
        let total: f32 = order.iter().map(|&i| weights[i]).sum();
        let mut walk = Descending::new(&order, &logits, &weights);
        if p.top_p >= 1.0 && p.min_p <= 0.0 {
            // Nothing to cut: draw now, walking only as far as the draw lands.
            let u: f32 = self.rng.random();
            return draw(u, walk.map(|i| (i, weights[i] / total)));
        }
        // The kept candidates: the shortest prefix whose probability reaches top-p, cut where a
        // probability falls under min-p times the first one's.
        let (mut kept, mut probs) = (Vec::new(), Vec::new());
        let mut acc = 0.0;
        for i in walk.by_ref() {
            let q = weights[i] / total;
            if p.min_p > 0.0 && !probs.is_empty() && q < probs[0] * p.min_p {
                break;
            }
            kept.push(i);
            probs.push(q);
            acc += q;
            if p.top_p < 1.0 && acc >= p.top_p {
                break;
            }
        }
        normalise(&mut probs);
        let u: f32 = self.rng.random();
        draw(u, kept.into_iter().zip(probs))
    }
}

/// The order of the full sort: larger logit first, lower id first on ties.
fn by_logit(logits: &[f32], a: usize, b: usize) -> std::cmp::Ordering {
    logits[b].total_cmp(&logits[a]).then(a.cmp(&b))
}

/// Inverse-CDF draw: the first candidate whose probability is more than what is left of
/// `u`, or the last one when rounding leaves some of `u` at the end.
fn draw(mut u: f32, candidates: impl Iterator<Item = (usize, f32)>) -> u32 {
    let mut last = 0;
    for (i, q) in candidates {
        if u < q {
            return i as u32;
        }
        u -= q;
        last = i;
    }
    last as u32
}

/// Candidate ids in descending order of logit (ties: lower id first), produced lazily: ids are
/// bucketed by the binary exponent of their weight (an octave a bucket, one pass), and a
/// bucket is sorted only when the walk reaches it. Weights fall monotonically with the logit,
/// so the buckets come in the order of the full sort.
struct Descending<'a> {
    logits: &'a [f32],
    buckets: Vec<Vec<usize>>,
    bucket: usize,
    current: std::vec::IntoIter<usize>,
}

impl<'a> Descending<'a> {
    /// Exponents 0 down to -127 (subnormals share the last), then zero weights.
    const BUCKETS: usize = 129;

    fn new(ids: &[usize], logits: &'a [f32], weights: &[f32]) -> Self {
        let mut buckets = vec![Vec::new(); Self::BUCKETS];
        for &i in ids {
            // weight ≤ 1: its exponent is ≤ 0; a zero (or NaN) weight goes last.
            let w = weights[i];
            let b = if w > 0.0 { 127usize.saturating_sub(((w.to_bits() >> 23) & 0xff) as usize) } else { Self::BUCKETS - 1 };
            buckets[b.min(Self::BUCKETS - 1)].push(i);
        }
        Self { logits, buckets, bucket: 0, current: Vec::new().into_iter() }
    }
}

impl Iterator for Descending<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        loop {
            if let Some(i) = self.current.next() {
                return Some(i);
            }
            let mut next = std::mem::take(self.buckets.get_mut(self.bucket)?);
            self.bucket += 1;
            next.sort_unstable_by(|&a, &b| by_logit(self.logits, a, b));
            self.current = next.into_iter();
        }
    }
}

/// Index of the largest value, the first one on ties (as `torch.argmax`).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

fn normalise(p: &mut [f32]) {
    let sum: f32 = p.iter().sum();
    p.iter_mut().for_each(|q| *q /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_with_first_tie() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_changes_the_winner() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params);
        assert_eq!(s.sample(&[1.0, 1.5], &[1]), 0);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(Sampler::new(params).sample(&logits, &[]), argmax(&logits));
        let params = SamplingParams {
            temperature: 0.8,
            top_p: 0.9,
            min_p: 0.05,
            seed: 7,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..20).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().any(|&x| x != a[0]), "temperature 0.8 should vary: {a:?}");
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // One dominant token (p ≈ 0.9): top-p 0.5 and min-p 0.5 must always pick it.
        let logits = [5.0, 2.0, 1.0, 0.5];
        for params in [
            SamplingParams { temperature: 1.0, top_p: 0.5, ..Default::default() },
            SamplingParams { temperature: 1.0, min_p: 0.5, ..Default::default() },
        ] {
            let mut s = Sampler::new(params);
            assert!((0..100).all(|_| s.sample(&logits, &[]) == 0));
        }
    }

    /// The sampler as first written, sorting every candidate: the reference the lazy walk
    /// must agree with (same draws from the same seed).
    fn sample_sorted(params: &SamplingParams, rng: &mut StdRng, logits: &[f32]) -> u32 {
        let p = params;
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if p.top_k > 0 {
            order.truncate(p.top_k);
        }
        let max = logits[order[0]] / p.temperature;
        let mut probs: Vec<f32> = order.iter().map(|&i| (logits[i] / p.temperature - max).exp()).collect();
        normalise(&mut probs);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|&q| { acc += q; acc >= p.top_p }).map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            let keep = probs.iter().take_while(|&&q| q >= floor).count().max(1);
            probs.truncate(keep);
            order.truncate(keep);
        }
        normalise(&mut probs);
        let mut u: f32 = rng.random();
        for (&i, &q) in order.iter().zip(&probs) {
            if u < q {
                return i as u32;
            }
            u -= q;
        }
        order[probs.len() - 1] as u32
    }

    /// On random logits over a vocabulary with many ties and a long tail, for every kind of
    /// cut, the lazy walk draws the tokens the full sort draws, from the same seeds.
    #[test]
    fn the_lazy_walk_draws_what_the_full_sort_draws() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut draws = 0;
        let mut differ = 0;
        for case in 0..40 {
            let vocab = [1, 2, 7, 300, 5000][case % 5];
            // Coarse values (ties) in a wide range (weights across many buckets).
            let logits: Vec<f32> = (0..vocab).map(|_| (rng.random_range(-60.0f32..12.0) * 4.0).round() / 4.0).collect();
            for (temperature, top_k, top_p, min_p) in
                [(1.0, 0, 1.0, 0.0), (0.7, 0, 0.9, 0.0), (1.3, 0, 1.0, 0.05), (0.8, 40, 0.95, 0.02), (2.0, 3, 1.0, 0.0), (1.0, 0, 0.5, 0.2)]
            {
                let params = SamplingParams { temperature, top_k, top_p, min_p, seed: case as u64, ..Default::default() };
                let mut fast = Sampler::new(params.clone());
                let mut reference = StdRng::seed_from_u64(params.seed);
                for _ in 0..25 {
                    draws += 1;
                    let (a, b) = (fast.sample(&logits, &[]), sample_sorted(&params, &mut reference, &logits));
                    differ += usize::from(a != b);
                }
            }
        }
        // Sums taken in another order may move a draw that lands within an f32 rounding of a
        // boundary; on these draws none does.
        assert_eq!(differ, 0, "{differ} of {draws} draws differ");
    }
}

