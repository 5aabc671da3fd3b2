//! Fuzz targets: every parser of untrusted bytes in the runtime and the server, one function
//! per target taking the raw input.
//!
//! The libFuzzer binaries (`fuzz_targets/`, built by `fuzz/build.sh`) and the corpus replay of
//! the test suite (`tests/fuzz_corpus.rs`, stable Rust, no instrumentation) call these same
//! functions, so what CI replays is what was fuzzed. A target must not panic, hang or
//! allocate without bound on any input: a typed error is the expected outcome of a bad one.
//! Each target goes on past the parser through what a load does next with the parsed value
//! (tensor reads, the derived config numbers, a render, one decode step), because that is
//! where unchecked counts and offsets turn into crashes.
//!
//! Corpora live in `fuzz/corpus/<target>/`; [`seeds`] makes their `seed-*` files from the
//! repository's fixtures. See FUZZING.md.

pub mod models;
pub mod seeds;

use std::sync::Arc;

use minimax_runtime::chat::{ChatTemplate, Conversation, Message};
use minimax_runtime::config::ModelConfig;
use minimax_runtime::device::Selected;
use minimax_runtime::experts::pack::ExpertPack;
use minimax_runtime::model::{Logits, PREFILL_BUDGET_BYTES, prefill_chunk, snapshot};
use minimax_runtime::tokenizer::Tokenizer;
use minimax_runtime::weights::{
    ByteSource, GgufFile, SafetensorsSet, ShardBytes, TensorStore, WeightSource, shard_files_from_index,
};
use minimax_runtime::{Engine, ModelFiles, RuntimeOptions};
use minimax_server::Endpoint;
use minimax_runtime::stop::{Pushed, StopMatcher};

/// One fuzz target: its name (the binary's and the corpus directory's) and its function.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target, in the order FUZZING.md lists them.
pub const TARGETS: [Target; 8] = [
    Target { name: "gguf", run: gguf },
    Target { name: "safetensors", run: safetensors },
    Target { name: "config", run: config },
    Target { name: "tokenizer", run: tokenizer },
    Target { name: "chat_template", run: chat_template },
    Target { name: "pack", run: pack },
    Target { name: "snapshot", run: snapshot },
    Target { name: "server_request", run: server_request },
];

fn bytes(data: &[u8]) -> ShardBytes {
    Arc::new(data.to_vec())
}

/// A GGUF file: header, metadata of every type, tensor infos and alignment; then everything a
/// load derives from it (the Hugging Face config, the tokenizer, the chat template, each
/// tensor) and, when the config is valid, the model itself on the CPU backend.
pub fn gguf(data: &[u8]) {
    let Ok(file) = GgufFile::parse("fuzz.gguf".into(), bytes(data)) else { return };
    let _ = (file.version(), file.architecture(), file.chat_template(), file.metadata_keys().count());
    read_store(&file);
    let Ok(files) = ModelFiles::from_gguf(file, None, None) else { return };
    load(files);
}

/// A safetensors file (header, then tensor reads), and the same bytes as a sharded
/// checkpoint's `model.safetensors.index.json`.
pub fn safetensors(data: &[u8]) {
    let _ = shard_files_from_index(&String::from_utf8_lossy(data), "fuzz.index.json");
    let Ok(set) = SafetensorsSet::from_shards([("fuzz.safetensors".to_string(), bytes(data))]) else { return };
    read_store(&set);
    let source = WeightSource::Files(Arc::new(set));
    let _ = (source.stored_bytes(), source.is_narrow(), source.stored_blocks(), source.embedding_is_f16());
}

/// `config.json` in every dialect (Hugging Face MiniMax, the original remote code, the Llama
/// family), and the numbers a load derives from a valid one.
pub fn config(data: &[u8]) {
    let Ok(config) = ModelConfig::from_json(&String::from_utf8_lossy(data)) else { return };
    derive(&config);
}

/// What a load and the CLI's `info` compute from a validated config.
fn derive(config: &ModelConfig) {
    for layer in 0..config.num_layers() {
        let _ = config.lightning_rates(layer);
    }
    let _ = (config.parameter_counts(), config.prefill_bytes_per_token());
    let _ = prefill_chunk(config, PREFILL_BUDGET_BYTES, Some(128 << 20));
}

/// A `tokenizer.json`, then encoding, decoding and streamed decoding with it.
pub fn tokenizer(data: &[u8]) {
    let Ok(t) = Tokenizer::from_bytes(data) else { return };
    use_tokenizer(&t);
}

fn use_tokenizer(t: &Tokenizer) {
    const TEXT: &str = "Once upon a time, 42 naïve <|im_start|>cats\n\tsaid: \"héllo\" 🐈 <s></s>";
    let vocab = t.vocab_size();
    let _ = t.token_id("<|endoftext|>");
    for ids in [t.encode(TEXT), t.encode_plain(TEXT)].into_iter().flatten() {
        let _ = t.decode(&ids);
        let mut stream = t.stream();
        for &id in &ids {
            let _ = stream.push(id);
        }
    }
    // Ids past the vocabulary, as a client may send them.
    let odd = [0, 1, vocab.saturating_sub(1) as u32, vocab as u32, u32::MAX];
    let _ = t.decode(&odd);
    let mut stream = t.stream();
    for id in odd {
        let _ = stream.push(id);
    }
}

/// The messages a chat template renders in the targets: the input's, when it gives some
/// (user and assistant in turn, as templates that check the order want them).
fn messages(parts: &[&str]) -> Vec<Message> {
    if parts.is_empty() {
        return vec![Message::new("system", "Be brief."), Message::new("user", "Hi!"), Message::new("assistant", "Hello.")];
    }
    parts.iter().enumerate().map(|(i, content)| Message::new(["user", "assistant"][i % 2], content)).collect()
}

/// Whether the first parser of `target` accepts `data` (its error otherwise): the seeds must
/// all be accepted, so that fuzzing starts deep in the code and the checks against hostile
/// files are seen to refuse none of the real ones (`tests/fuzz_corpus.rs`).
pub fn accepts(target: &str, data: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(data);
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match target {
        "gguf" => GgufFile::parse("seed.gguf".into(), bytes(data)).map(drop).map_err(|x| e(&x)),
        "safetensors" if data.starts_with(b"{") => shard_files_from_index(&text, "seed.json").map(drop).map_err(|x| e(&x)),
        "safetensors" => SafetensorsSet::from_shards([("seed".to_string(), bytes(data))]).map(drop).map_err(|x| e(&x)),
        "config" => ModelConfig::from_json(&text).map(drop).map_err(|x| e(&x)),
        "tokenizer" => Tokenizer::from_bytes(data).map(drop).map_err(|x| e(&x)),
        "chat_template" => match ChatTemplate::from_tokenizer_config(&text) {
            Ok(Some(t)) => t.render(&messages(&[]), true).map(drop).map_err(|x| e(&x)),
            _ => {
                let mut parts = text.split('\0');
                let t = ChatTemplate::new(parts.next().unwrap_or_default(), "<s>", "</s>");
                t.render(&messages(&parts.collect::<Vec<_>>()), true).map(drop).map_err(|x| e(&x))
            }
        },
        "pack" => {
            let (json, experts, _) = split_pack(data);
            ExpertPack::from_source(&String::from_utf8_lossy(json), Box::new(bytes(experts)), "seed").map(drop).map_err(|x| e(&x))
        }
        "snapshot" => snapshot::load(&models::fixture_engine().model, data).map(drop).map_err(|x| e(&x)),
        "server_request" => {
            let (&pick, body) = data.split_first().ok_or("empty")?;
            let endpoint = if pick & 1 == 1 { Endpoint::ChatCompletions } else { Endpoint::Completions };
            models::fixture_server(pick & 2 == 2).check_request(endpoint, body).map(drop).map_err(|x| e(&x))
        }
        other => Err(format!("no target {other}")),
    }
}

/// A Jinja chat template as a model file gives it (the text up to the first NUL byte; the
/// NUL-separated pieces after it are message contents), rendered both ways; and the same
/// text as a `tokenizer_config.json`.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(Some(t)) = ChatTemplate::from_tokenizer_config(&text) {
        let _ = t.render(&messages(&[]), true);
    }
    let mut parts = text.split('\0');
    let source = parts.next().unwrap_or_default().to_string();
    let contents: Vec<&str> = parts.collect();
    let t = ChatTemplate::new(source, "<s>", "</s>");
    let messages = messages(&contents);
    let _ = t.render(&messages, true);
    let _ = t.render(&messages[..messages.len() / 2], false);
}

/// Splits `data` into the three files of an expert pack. The input is framed as
/// `[u32 n][n bytes of pack.json][u32 m][m bytes of experts.bin][dense.safetensors]`, lengths
/// little-endian and cut to what is there, so that mutations keep the parts apart.
pub fn split_pack(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    fn part(data: &[u8]) -> (&[u8], &[u8]) {
        let Some((len, rest)) = data.split_first_chunk::<4>() else { return (&[], &[]) };
        rest.split_at((u32::from_le_bytes(*len) as usize).min(rest.len()))
    }
    let (json, rest) = part(data);
    let (experts, dense) = part(rest);
    (json, experts, dense)
}

/// An expert pack: `pack.json` with `experts.bin` (every record read and CRC-checked, then
/// decoded) and `dense.safetensors` (checked against the index, then read).
pub fn pack(data: &[u8]) {
    let (json, experts, dense) = split_pack(data);
    let experts: Box<dyn ByteSource> = Box::new(bytes(experts));
    let Ok(pack) = ExpertPack::from_source(&String::from_utf8_lossy(json), experts, "fuzz") else { return };
    let index = pack.index();
    let layout = pack.layout();
    for entry in &index.experts {
        if let Ok(record) = pack.read_expert(entry.layer, entry.expert) {
            let _ = layout.decode(&record);
        }
    }
    // Experts that are not in the pack are refused, not read.
    let last = index.moe_layers.last().copied().unwrap_or(0);
    let _ = pack.read_expert(last.saturating_add(1), 0);
    let _ = pack.read_expert(last, index.num_experts);
    let source = bytes(dense);
    let _ = pack.verify_dense(&source, &mut |_| {});
    if let Ok(set) = pack.dense_store_from(Box::new(source), "fuzz/dense.safetensors") {
        read_store(&set);
    }
}

/// A state file restored into the fixture model it was saved from: as a raw state, and as a
/// conversation (`/load` in `minimax chat`, the one caller), which then takes one decode step
/// as the next chat turn would. The raw state is not stepped: `snapshot::load` leaves the KV
/// caches' head layout to its caller to check (see FUZZING.md).
pub fn snapshot(data: &[u8]) {
    let engine = models::fixture_engine();
    let model = &engine.model;
    let _ = snapshot::load(model, data);
    if let Ok(mut conversation) = Conversation::load(model, data) {
        step(engine, &mut conversation.state);
    }
}

/// One token through `engine` from `state`, when the state leaves room for it.
fn step(engine: &Engine, state: &mut minimax_runtime::model::State) {
    if engine.model.check_context(state.position + 1).is_ok() {
        let _ = pollster::block_on(engine.model.forward(&[1], state, Logits::Last));
    }
}

/// An HTTP request body for the server's generation routes. The first byte picks the route
/// (bit 0: chat) and the server (bit 1: the model with a chat template, else the plain chat
/// prompt); the rest is the body. Accepted requests also run their stop sequences over the
/// body's text, as the streamed reply would.
pub fn server_request(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else { return };
    let endpoint = if pick & 1 == 1 { Endpoint::ChatCompletions } else { Endpoint::Completions };
    let server = models::fixture_server(pick & 2 == 2);
    let Ok(checked) = server.check_request(endpoint, body) else { return };
    let mut matcher = StopMatcher::new(checked.stop);
    for piece in String::from_utf8_lossy(body).split_inclusive(' ') {
        if let Pushed::Stopped(_) = matcher.push(piece) {
            return;
        }
    }
    let _ = matcher.finish();
}

/// Reads every tensor of a store the ways the loader does: shape, size, type, the whole
/// tensor decoded to f32 and its first row.
fn read_store(store: &dyn TensorStore) {
    for name in store.names() {
        let _ = (store.contains(&name), store.byte_len(&name), store.dtype_of(&name));
        let Ok(Some(shape)) = store.shape_of(&name) else { continue };
        if let Ok(Some(t)) = store.get(&name) {
            let _ = t.to_f32();
        }
        // The loader asks for rows only of a tensor whose shape it checked: one that has rows.
        let cols = shape.last().copied().unwrap_or(1);
        let rows = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).map(|n| n / cols.max(1));
        if rows.is_some_and(|r| r > 0) {
            if let Ok(Some(t)) = store.get_rows(&name, 0, 1, cols) {
                let _ = t.to_f32();
            }
        }
    }
}

/// What loading `files` derives from them, and the model itself on the CPU backend when the
/// config is valid (its shapes are checked against the tensors before anything is built).
fn load(files: ModelFiles) {
    let Ok(config) = ModelConfig::from_json(&files.config_json) else { return };
    derive(&config);
    if let Some(Ok(t)) = files.tokenizer_json.as_deref().map(Tokenizer::from_bytes) {
        use_tokenizer(&t);
    }
    if let Some(Ok(Some(t))) = files.tokenizer_config_json.as_deref().map(ChatTemplate::from_tokenizer_config) {
        let _ = t.render(&messages(&[]), true);
    }
    let _ = Engine::new(files, Selected::cpu(None), &RuntimeOptions::default());
}
