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
