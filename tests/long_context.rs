//! Prompts of any length: a prompt is prefilled in chunks sized by the runtime (so memory does
//! not grow with it), with the same logits as any other chunking, and a context may pass the
//! length the model was trained for unless the runtime was given a cap.

use minimax_runtime::error::{Error, RuntimeError};
use minimax_runtime::generate::{prefill, read_logits};
use minimax_runtime::model::Logits;
use minimax_runtime::{Engine, MatrixDType, RuntimeOptions};
use minimax_tests::{backends, demo_dir, max_abs};

fn demo(backend: minimax_runtime::device::BackendChoice, prefill_chunk: Option<usize>, max_context: Option<usize>) -> Engine {
    let options = RuntimeOptions { backend, matrix_dtype: MatrixDType::F32, prefill_chunk, max_context, ..Default::default() };
    Engine::load_dir(&demo_dir(), &options).unwrap()
}

/// `n` token ids spread over the demo's vocabulary of 4096 (a fixed linear congruence).
fn prompt(n: usize) -> Vec<u32> {
    (0..n as u64).map(|i| ((i * 2_654_435_761 + 12_345) % 4093 + 3) as u32).collect()
}

/// The last position's logits after feeding `tokens` `chunk` tokens at a time (`None`: the
/// engine's default chunk).
fn last_logits(e: &Engine, tokens: &[u32], chunk: Option<usize>) -> Result<Vec<f32>, Error> {
    let mut state = e.new_state();
    let logits = pollster::block_on(prefill(&e.model, &mut state, tokens, chunk, Logits::Last))?;
    assert_eq!(state.position, tokens.len());
    pollster::block_on(read_logits(logits))
}

#[test]
fn a_long_prompt_passes_the_trained_length_in_any_chunks() {
    // 3000 tokens through a model trained for 2048 positions: the engine's own chunking (here
    // 1100 tokens, which divides nothing), explicit chunks of 1024, and one piece agree.
    let tokens = prompt(3000);
    for backend in backends() {
        let e = demo(backend, Some(1100), None);
        assert!(e.model.config.max_position_embeddings < tokens.len());
        let auto = last_logits(&e, &tokens, None).unwrap();
        for chunk in [1024, tokens.len()] {
            let other = last_logits(&e, &tokens, Some(chunk)).unwrap();
            let err = max_abs(&auto, &other);
            println!("{backend:?}: automatic chunks of 1100 against chunks of {chunk}: max-abs {err:.2e}");
            assert!(err <= 1e-4, "{backend:?} chunk {chunk}: {err}");
        }
    }
}

#[test]
fn the_default_chunk_bounds_prefill_memory() {
    let e = demo(minimax_runtime::device::BackendChoice::Cpu, None, None);
    let (all, largest) = e.model.config.prefill_bytes_per_token();
    let chunk = e.model.prefill_chunk;
    assert!(chunk >= 16 && chunk % 16 == 0 && chunk <= 8192, "{chunk}");
    assert!(chunk as u64 * all <= minimax_runtime::model::PREFILL_BUDGET_BYTES, "{chunk} x {all}");
    // A binding limit (a browser's default is 128 MiB) shrinks it so the largest tensor fits.
    let c = &e.model.config;
    let small = minimax_runtime::model::prefill_chunk(c, minimax_runtime::model::PREFILL_BUDGET_BYTES, Some(largest * 100));
    assert_eq!(small, 96);
}

#[test]
fn text01_chunks_are_sized_by_the_budget() {
    // MiniMax-Text-01's per-layer dimensions: 0.44 MB of activations per prompt token, so a
    // chunk within 1 GiB is 2416 tokens; its 200K-entry logits rows cap it under a small binding.
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(demo_dir().join("config.json")).unwrap()).unwrap();
    for (key, value) in [("hidden_size", 6144), ("num_attention_heads", 64), ("head_dim", 128), ("num_key_value_heads", 8),
        ("num_local_experts", 32), ("intermediate_size", 9216), ("vocab_size", 200_064)] {
        config[key] = value.into();
    }
    let c = minimax_runtime::config::ModelConfig::from_json(&config.to_string()).unwrap();
    let budget = minimax_runtime::model::PREFILL_BUDGET_BYTES;
    let chunk = minimax_runtime::model::prefill_chunk(&c, budget, Some(2 << 30));
    assert_eq!(chunk, 2416);
    assert_eq!(minimax_runtime::model::prefill_chunk(&c, budget, Some(128 << 20)), 160, "128 MiB / 800 KB logits rows");
}

#[test]
fn a_context_cap_is_a_wall() {
    for backend in backends() {
        let e = demo(backend, None, Some(100));
        assert!(last_logits(&e, &prompt(100), None).is_ok());
        match last_logits(&e, &prompt(101), None) {
            Err(Error::Runtime(RuntimeError::ContextOverflow { needed: 101, max: 100 })) => {}
            other => panic!("{backend:?}: {:?}", other.map(|l| l.len())),
        }
    }
}
