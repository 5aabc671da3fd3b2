//! The fuzz smoke run of CI, on stable Rust and without instrumentation: every committed input
//! of every fuzz target (`fuzz/corpus/<target>/` and the crashes kept in
//! `fuzz/regressions/<target>/`) goes through the same function the libFuzzer binary runs
//! (`minimax_fuzz::TARGETS`), then up to 20 000 seeded random mutations of them, at most 3 s
//! per target. Any panic fails the test and names the input; a failing mutation is written
//! out so it can be replayed and kept as a regression. The tests below also check that the
//! seeds are valid inputs and that what fuzzing found fails with its error. See FUZZING.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use minimax_fuzz::{TARGETS, Target};
use minimax_runtime::chat::{Conversation, Message};
use minimax_runtime::config::LayerKind;
use minimax_runtime::device::Selected;
use minimax_runtime::model::Logits;
use minimax_runtime::tokenizer::Tokenizer;
use minimax_runtime::weights::GgufFile;
use minimax_runtime::{Engine, ModelFiles, RuntimeOptions};

/// Mutations per target, and the time they may take (whichever ends first): CI's ~30 s in all.
const MUTATIONS: usize = 20_000;
const BUDGET: Duration = Duration::from_secs(3);

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

/// splitmix64: a seeded generator, so that every run mutates in the same sequence.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that break length, count and offset checks when written over a field.
const INTERESTING: [u64; 10] = [0, 1, 2, 0x7f, 0xff, 0x7fff_ffff, 0xffff_ffff, 1 << 32, 1 << 63, u64::MAX];
/// Text that breaks JSON and template checks when spliced in.
const TOKENS: [&str; 12] = ["-1", "0", "1e400", "18446744073709551616", "null", "[[[[", "\"\\ud800\"", "{%", "}}", "{{ x * 99999 }}", "\u{0}", "\u{ffff}"];

/// One random edit of `input`, in the spirit of libFuzzer's mutators.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 => {
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let bytes = &value.to_le_bytes()[..width];
                let end = (at + width).min(out.len());
                out.splice(at..end, bytes.iter().copied());
            }
            3 => out.truncate(at),
            4 if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = rng.below((out.len() - start).min(64)) + 1;
                let copy = out[start..start + len].to_vec();
                out.splice(at..at, copy);
            }
            5 => {
                let token = TOKENS[rng.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
            _ if !out.is_empty() => {
                let start = rng.below(out.len());
                let len = rng.below((out.len() - start).min(64)) + 1;
                out.drain(start..start + len);
            }
            _ => out.push(rng.next() as u8),
        }
    }
    out
}

/// Runs `input` through `target`; the panic message, if it panicked.
fn run(target: &Target, input: &[u8]) -> Option<String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).err().map(|e| {
        e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
    })
}

fn smoke(name: &str) {
    let target = TARGETS.iter().find(|t| t.name == name).expect("a target of minimax_fuzz");
    let corpus = inputs(&fuzz_dir().join("corpus").join(name));
    assert!(corpus.iter().any(|(p, _)| p.file_name().unwrap().to_string_lossy().starts_with("seed-")), "{name}: no seed-* files in fuzz/corpus/{name}/ (see write_seeds)");
    let regressions = inputs(&fuzz_dir().join("regressions").join(name));
    let mut failures = Vec::new();
    for (path, input) in corpus.iter().chain(&regressions) {
        if let Some(message) = run(target, input) {
            failures.push(format!("{}: {message}", path.display()));
        }
    }
    let mut rng = Rng(name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)));
    let start = Instant::now();
    let mut done = 0;
    while done < MUTATIONS && start.elapsed() < BUDGET {
        let (_, seed) = &corpus[rng.below(corpus.len())];
        let input = mutate(&mut rng, seed);
        if let Some(message) = run(target, &input) {
            let path = std::env::temp_dir().join(format!("minimax-fuzz-{name}-{done}"));
            std::fs::write(&path, &input).unwrap();
            failures.push(format!("mutation {done} (saved as {}): {message}", path.display()));
        }
        done += 1;
    }
    eprintln!("{name}: {} corpus and {} regression inputs, {done} mutations in {:.1?}", corpus.len(), regressions.len(), start.elapsed());
    assert!(failures.is_empty(), "{name}: {} inputs panicked:\n{}", failures.len(), failures.join("\n"));
}

/// Writes the `seed-*` files of every corpus (see `minimax_fuzz::seeds`). Run it by hand when a
/// fixture or a file format changes:
/// `cargo test --release --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore = "rewrites fuzz/corpus/*/seed-*"]
fn write_seeds() {
    let n = minimax_fuzz::seeds::write(&fuzz_dir().join("corpus")).unwrap();
    eprintln!("{n} seeds written");
}

/// Every seed is an input its parser accepts (see `minimax_fuzz::accepts`). Seeds made from
/// the fixtures go stale when a format or the fixture model changes (a state file names the
/// model it belongs to): then rewrite them with `write_seeds`.
#[test]
fn every_seed_is_accepted() {
    for target in &TARGETS {
        for (path, input) in inputs(&fuzz_dir().join("corpus").join(target.name)) {
            if path.file_name().unwrap().to_string_lossy().starts_with("seed-") {
                minimax_fuzz::accepts(target.name, &input)
                    .unwrap_or_else(|e| panic!("{}: {e} (stale? see write_seeds)", path.display()));
            }
        }
    }
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let dirs: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for target in &TARGETS {
        assert!(dirs.contains(&target.name.to_string()), "no fuzz/corpus/{}", target.name);
    }
    for dir in &dirs {
        assert!(TARGETS.iter().any(|t| t.name == dir), "fuzz/corpus/{dir} belongs to no target");
    }
}

/// The first error of loading a GGUF as `minimax run --model FILE.gguf --backend cpu` does.
fn gguf_error(bytes: Vec<u8>) -> String {
    let load = || -> Result<Engine, minimax_runtime::Error> {
        let files = ModelFiles::from_gguf(GgufFile::parse("x.gguf".into(), Arc::new(bytes))?, None, None)?;
        Engine::new(files, Selected::cpu(None), &RuntimeOptions::default())
    };
    load().err().map(|e| e.to_string()).unwrap_or_default()
}

fn regression(target: &str, name: &str) -> Vec<u8> {
    let path = fuzz_dir().join("regressions").join(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Each crash, timeout and out-of-memory input fuzzing found (kept in fuzz/regressions/)
/// now fails with the error that names its problem. See FUZZING.md for the findings.
#[test]
fn what_fuzzing_found_fails_cleanly() {
    for (name, want) in [
        ("expert-names-capacity-overflow.gguf", "tensor `blk.0.ffn_down_exps.weight`: dimensions overflow"),
        ("unpermute-zero-rows.gguf", "tensor `blk.0.attn_k.weight` has an empty dimension"),
        ("dequantize-before-shape-check-experts.gguf", "intermediate_size 3623878688 is more than this runtime supports"),
        ("dequantize-before-shape-check-attention.gguf", "head_dim 536870928 is more than this runtime supports"),
        ("slope-tables-of-huge-head-count.gguf", "num_attention_heads 1157627906 is more than this runtime supports"),
    ] {
        let e = gguf_error(regression("gguf", name));
        assert!(!e.is_empty() && e.contains(want), "{name}: {e}");
    }
    for (name, want) in [
        ("decoder-syntax-error.json", "expected `,` or `}` at line 1 column 558"),
        ("template-undefined-special-token.json", "the single template uses the undefined special token `<|endoftext|>`"),
        ("template-without-type-tag.json", "the single template uses the undefined special token `<|endoftext|>`"),
        ("bpe-merge-longer-than-vocabulary.json", "merge 0 (`Ġ` `1`) makes a token longer than any in the vocabulary"),
        ("strip-decoder-from-the-end.json", "a Strip decoder with `stop` > 0 is not supported"),
    ] {
        let e = Tokenizer::from_bytes(&regression("tokenizer", name)).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!e.is_empty() && e.contains(want), "{name}: {e}");
    }
    for (name, want) in [
        ("format-key-inside-a-character.jinja", "format strings with keys must be ASCII"),
        ("namespace-holding-itself.jinja", "the namespace `x` may only be used through its attributes"),
    ] {
        let e = minimax_fuzz::accepts("chat_template", &regression("chat_template", name)).unwrap_err();
        assert!(e.contains(want), "{name}: {e}");
    }
}

/// A saved conversation whose KV cache has the right byte count but another head layout
/// (`[T, Hkv·D, 1]` for `[T, Hkv, D]`) is refused at load; it used to load and make the next
/// forward panic. Built here from a fresh save, so that it stays valid as the model's
/// fingerprint changes (fuzz/regressions/snapshot/ holds a copy for the replay).
#[test]
fn a_kv_cache_of_another_head_layout_is_refused() {
    let engine = minimax_fuzz::models::fixture_engine();
    let model = &engine.model;
    let mut state = engine.new_state();
    pollster::block_on(model.forward(&[1, 2, 3], &mut state, Logits::Last)).unwrap();
    let conversation = Conversation { messages: vec![Message::new("user", "a b")], state, fed: vec![1, 2, 3] };
    let good = pollster::block_on(conversation.save(model)).unwrap();
    assert!(Conversation::load(model, &good).is_ok());

    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
    let softmax = model.config.layers.iter().position(|l| l.kind == LayerKind::Softmax).expect("the fixture has a softmax layer");
    for kv in ["k", "v"] {
        let shape = &mut header[format!("layers.{softmax}.{kv}")]["shape"];
        let [t, h, d] = serde_json::from_value::<[usize; 3]>(shape.clone()).unwrap();
        *shape = serde_json::json!([t, h * d, 1]);
    }
    let mut text = header.to_string();
    text.push_str(&" ".repeat(text.len().next_multiple_of(8) - text.len()));
    let bad = [&(text.len() as u64).to_le_bytes()[..], text.as_bytes(), &good[8 + n..]].concat();
    let e = Conversation::load(model, &bad).err().expect("a cache of another layout must be refused").to_string();
    let want = format!("layers.{softmax}.k has shape [3, {}, 1]", model.config.num_kv_heads * model.config.head_dim);
    assert!(e.contains(&want), "{e}");
    // `snapshot::load` itself refuses it, for every caller.
    assert!(minimax_runtime::model::snapshot::load(model, &bad).is_err());
}

#[test]
fn gguf() {
    smoke("gguf");
}

#[test]
fn safetensors() {
    smoke("safetensors");
}

#[test]
fn config() {
    smoke("config");
}

#[test]
fn tokenizer() {
    smoke("tokenizer");
}

#[test]
fn chat_template() {
    smoke("chat_template");
}

#[test]
fn pack() {
    smoke("pack");
}

#[test]
fn snapshot() {
    smoke("snapshot");
}

#[test]
fn server_request() {
    smoke("server_request");
}
