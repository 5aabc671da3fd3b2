//! Shared helpers for the integration tests: fixture paths, oracle references, comparisons
//! and the `minimax` binary.

use std::path::{Path, PathBuf};

use minimax_runtime::device::BackendChoice;
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::{Engine, MatrixDType, RuntimeOptions};

/// All committed fixture models (see `tests/oracle/README.md`).
pub const FIXTURES: [&str; 7] = [
    "minimax-7to1",
    "minimax-sharded-bf16",
    "minimax-remote-code",
    "minimax-partial-rope",
    "llama-tied",
    "mixtral-moe",
    "qwen2-bias",
];

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The embedded demo model's directory.
pub fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/minimax-demo")
}

/// A story prompt, tokenized by `engine`'s tokenizer (the demo model's).
pub fn demo_prompt(engine: &Engine) -> Vec<u32> {
    engine.encode("Once upon a time, there was a little dog named Max. He liked to").unwrap()
}

/// `n` greedy tokens after `prompt`, from a fresh state, never stopping at EOS.
pub fn greedy(engine: &Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let options = GenerateOptions {
        max_tokens: n,
        stop_on_eos: false,
        ..Default::default()
    };
    let mut state = engine.new_state();
    pollster::block_on(engine.generate(&mut state, prompt, &options, |_| true)).unwrap().tokens
}

/// The logits after feeding `tokens` into `state` (the last position's), on the host.
pub fn last_logits(engine: &Engine, tokens: &[u32], state: &mut minimax_runtime::model::State) -> Vec<f32> {
    let l = pollster::block_on(engine.model.forward(tokens, state, minimax_runtime::model::Logits::Last)).unwrap();
    l.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// The argmax of each `vocab`-wide row of `logits`.
pub fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<usize> {
    logits
        .chunks(vocab)
        .map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0)
        .collect()
}

/// A fixture's oracle data.
pub struct Reference {
    pub prompt: Vec<u32>,
    pub greedy: Vec<u32>,
    /// `[prompt.len(), vocab]` row-major.
    pub logits: Vec<f32>,
    /// `[greedy.len(), vocab]`: row i predicts `greedy[i]`.
    pub greedy_logits: Vec<f32>,
    pub vocab: usize,
    pub tolerance: f32,
}

pub fn read_npy(path: &Path) -> (Vec<u64>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("valid npy");
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().expect("f32 npy"))
}

pub fn reference(name: &str) -> Reference {
    let dir = fixture(name);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let ids = |key: &str| -> Vec<u32> {
        json[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
    };
    let (shape, logits) = read_npy(&dir.join("logits.npy"));
    let (_, greedy_logits) = read_npy(&dir.join("greedy_logits.npy"));
    Reference {
        prompt: ids("prompt"),
        greedy: ids("greedy"),
        logits,
        greedy_logits,
        vocab: shape[1] as usize,
        tolerance: json["tolerance_max_abs"].as_f64().unwrap() as f32,
    }
}

/// Largest absolute difference.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The backends the tests run on: the CPU always, the GPU when wgpu finds any adapter
/// (llvmpipe in CI); its absence is reported loudly.
pub fn backends() -> Vec<BackendChoice> {
    let mut v = vec![BackendChoice::Cpu];
    if minimax_runtime::device::test_gpu_or_skip("the GPU half of this test").is_some() {
        v.push(BackendChoice::Gpu);
    }
    v
}

/// Loads a fixture with f32 matrices on `backend`.
pub fn engine(name: &str, backend: BackendChoice) -> Engine {
    engine_at(&fixture(name), backend)
}

/// Loads the model directory `dir` with f32 matrices on `backend`.
pub fn engine_at(dir: &Path, backend: BackendChoice) -> Engine {
    engine_with(dir, backend, MatrixDType::F32, None)
}

/// Loads `dir` on `backend` with matrices stored as `dtype`, splitting tensors larger than
/// `max_binding_bytes`.
pub fn engine_with(dir: &Path, backend: BackendChoice, dtype: MatrixDType, max_binding_bytes: Option<u64>) -> Engine {
    let options = RuntimeOptions {
        backend,
        matrix_dtype: dtype,
        max_binding_bytes,
        expert_cache_bytes: None,
        no_expert_prefetch: false,
        ..Default::default()
    };
    Engine::load_dir(dir, &options).unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// The `minimax` binary built next to the test executable (cargo builds the workspace's
/// binaries before running integration tests).
pub fn minimax_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join(format!("minimax{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} not built: run `cargo build --release -p minimax-native` first (tests/run does)", bin.display());
    bin
}
