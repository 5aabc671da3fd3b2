//! The embedded demo model (`models/minimax-demo`, trained by `tools/train/`) against the
//! samples transformers produced at export time (`eval.json`): same prompt ids, same greedy
//! continuation.

use std::path::Path;

use minimax_runtime::device::BackendChoice;
use minimax_runtime::generate::GenerateOptions;
use minimax_tests::{backends, engine_at};

struct Sample {
    prompt: String,
    prompt_ids: Vec<u32>,
    new_ids: Vec<u32>,
}

fn greedy_samples() -> Vec<Sample> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo/eval.json");
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    eval["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "greedy")
        .map(|s| Sample {
            prompt: s["prompt"].as_str().unwrap().to_string(),
            prompt_ids: ids(&s["prompt_ids"]),
            new_ids: ids(&s["new_ids"]),
        })
        .collect()
}

#[test]
fn greedy_samples_match_transformers() {
    let samples = greedy_samples();
    assert!(samples.len() >= 4);
    for backend in backends() {
        let e = engine_at(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo"), backend);
        // The software GPU adapter is slow: check one prompt's first 40 tokens there.
        let (take, steps) = if backend == BackendChoice::Cpu { (samples.len(), 200) } else { (1, 40) };
        for s in &samples[..take] {
            assert_eq!(e.encode(&s.prompt).unwrap(), s.prompt_ids, "tokenizer on {:?}", s.prompt);
            let options = GenerateOptions {
                max_tokens: steps.min(s.new_ids.len()),
                stop_on_eos: false,
                ..Default::default()
            };
            let mut state = e.new_state();
            let g = pollster::block_on(e.generate(&mut state, &s.prompt_ids, &options, |_| true)).unwrap();
            assert_eq!(g.tokens, s.new_ids[..options.max_tokens], "{:?} on {backend:?}", s.prompt);
        }
    }
}

/// A reply cut by `max_tokens` leaves its last token sampled but not fed; the conversation must
/// record exactly what the state consumed, or the next turn is one token off.
#[test]
fn a_conversation_records_exactly_what_its_state_consumed() {
    use minimax_runtime::chat::{ChatTemplate, Conversation};
    let e = engine_at(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo"), BackendChoice::Cpu);
    let config = serde_json::json!({"chat_template": "{% for m in messages %}{{ m.content }}\n{% endfor %}"}).to_string();
    let template = ChatTemplate::from_tokenizer_config(&config).unwrap().unwrap();
    let mut options = GenerateOptions::default();
    options.max_tokens = 6;
    options.stop_on_eos = false;
    let mut conv = Conversation::new(&e.model);
    let tokenizer = e.tokenizer().unwrap();
    let encode = |s: &str| tokenizer.encode(s);
    let reply = pollster::block_on(conv.reply(&e.model, &template, encode, "Once upon a time", &options, |_| true)).unwrap();
    assert_eq!(reply.tokens.len(), 6);
    assert_eq!(conv.fed.len(), conv.state.position, "fed tokens and state disagree");
    // Continuing the state and feeding `fed` from scratch must give the same next logits.
    let next = 42;
    let mut fresh = e.new_state();
    let mut all = conv.fed.clone();
    all.push(next);
    let (a, b) = (minimax_tests::last_logits(&e, &[next], &mut conv.state), minimax_tests::last_logits(&e, &all, &mut fresh));
    assert!(minimax_tests::max_abs(&a, &b) < 1e-3, "{}", minimax_tests::max_abs(&a, &b));
}

/// Greedy generation enqueues each step before reading back the token it feeds, and undoes
/// the one step enqueued past the end. Whatever ends it (the token limit, an end token, the
/// callback), the tokens and the state must be those of the plain loop: feed a token only
/// after reading it, never feed the last one. Checked on both layer kinds (the demo model
/// has lightning layers and a KV cache).
#[test]
fn pipelined_greedy_decoding_ends_in_the_state_of_the_plain_loop() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo");
    for backend in backends() {
        let e = engine_at(&demo, backend);
        let prompt = minimax_tests::demo_prompt(&e);
        let logits = |tokens: &[u32], state: &mut minimax_runtime::model::State| minimax_tests::last_logits(&e, tokens, state);
        // The plain loop's 6 greedy tokens.
        let mut state = e.new_state();
        let mut row = logits(&prompt, &mut state);
        let mut plain = Vec::new();
        for _ in 0..6 {
            let id = minimax_runtime::sampling::argmax(&row);
            plain.push(id);
            row = logits(&[id], &mut state);
        }
        // (options, callback stop after n tokens) → tokens returned, tokens fed.
        let end = plain.iter().position(|&t| t == plain[3]).unwrap();
        let cases: [(usize, Vec<u32>, usize, usize, usize); 4] = [
            (4, vec![], usize::MAX, 4, 3),         // the limit: the 4th is not fed
            (6, vec![plain[3]], usize::MAX, end, end), // an end token: not returned, not fed
            (6, vec![], 2, 2, 1),                  // the callback stops at the 2nd
            (1, vec![], usize::MAX, 1, 0),
        ];
        for (max_tokens, stop_tokens, cancel_at, returned, fed) in cases {
            let options = GenerateOptions { max_tokens, stop_on_eos: false, stop_tokens, ..Default::default() };
            let mut state = e.new_state();
            let mut seen = 0;
            let g = pollster::block_on(e.generate(&mut state, &prompt, &options, |_| {
                seen += 1;
                seen < cancel_at
            }))
            .unwrap();
            assert_eq!(g.tokens, plain[..returned], "{backend:?} max {max_tokens}");
            assert_eq!(state.position, prompt.len() + fed, "{backend:?} max {max_tokens}");
            // The state goes on exactly as one that was fed the same tokens from scratch.
            let mut fresh = e.new_state();
            let all: Vec<u32> = prompt.iter().chain(&plain[..fed]).chain(&[42]).copied().collect();
            let (a, b) = (logits(&[42], &mut state), logits(&all, &mut fresh));
            assert!(minimax_tests::max_abs(&a, &b) < 1e-3, "{backend:?} max {max_tokens}: {}", minimax_tests::max_abs(&a, &b));
        }
    }
}

/// Entries of the prefix cache share their tensors with the states resumed from them. Two
/// sequences that resume from one entry and go different ways must not disturb each other
/// or the entry: a KV append must never write into a buffer an entry still reads (the demo
/// model has a softmax layer), so the first branch's own saved state stays right after the
/// second branch has run.
#[test]
fn prefix_cache_entries_survive_the_branches_resumed_from_them() {
    use minimax_runtime::prefix_cache::PrefixCache;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo");
    for backend in backends() {
        let e = engine_at(&demo, backend);
        let logits = |tokens: &[u32], state: &mut minimax_runtime::model::State| minimax_tests::last_logits(&e, tokens, state);
        let cold = |tokens: &[u32]| logits(tokens, &mut e.new_state());
        let base: Vec<u32> = (1..40).collect();
        // Both branches fit the capacity the entry's KV buffer has (64 rows), where an append in place
        // would overwrite the other branch's rows.
        let (x, y): (Vec<u32>, Vec<u32>) = ((100..120).collect(), (200..215).collect());
        let mut cache = PrefixCache::new(1 << 30);
        let mut state = e.new_state();
        logits(&base, &mut state);
        cache.insert(&base, &state);
        // Branch X, saved; then branch Y from the same entry.
        let with = |tail: &[u32]| base.iter().chain(tail).copied().collect::<Vec<u32>>();
        let (at, mut sx) = cache.resume(&with(&x)).unwrap();
        assert_eq!(at, base.len());
        logits(&x, &mut sx);
        cache.insert(&with(&x), &sx);
        let (_, mut sy) = cache.resume(&with(&y)).unwrap();
        let got_y = logits(&y, &mut sy);
        assert!(minimax_tests::max_abs(&got_y, &cold(&with(&y))) < 1e-3, "{backend:?}: branch Y");
        // Branch X's saved state, and the entry itself, still continue as cold runs do.
        let next = [7u32];
        let (at, mut sx) = cache.resume(&[with(&x), next.to_vec()].concat()).unwrap();
        assert_eq!(at, base.len() + x.len());
        let got = logits(&next, &mut sx);
        assert!(minimax_tests::max_abs(&got, &cold(&[with(&x), next.to_vec()].concat())) < 1e-3, "{backend:?}: branch X");
        let (at, mut s) = cache.resume(&[base.clone(), next.to_vec()].concat()).unwrap();
        assert_eq!(at, base.len());
        let got = logits(&next, &mut s);
        assert!(minimax_tests::max_abs(&got, &cold(&[base.clone(), next.to_vec()].concat())) < 1e-3, "{backend:?}: entry");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.entries), (4, 2), "{stats:?}");
    }
}
