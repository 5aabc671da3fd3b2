//! The seed corpora: the repository's fixtures where they are small, and small files made here
//! where they are not (or do not exist: GGUF metadata of every type, expert packs, state
//! files). `cargo test --release --test fuzz_corpus -- --ignored write_seeds` writes them into
//! `fuzz/corpus/<target>/seed-<name>`; libFuzzer adds what it finds beside them.

use std::collections::HashMap;
use std::path::Path;

use minimax_runtime::chat::Conversation;
use minimax_runtime::experts::ExpertLayout;
use minimax_runtime::experts::pack::{self, DenseEntry, ExpertEntry, PackIndex};
use minimax_runtime::model::{Logits, snapshot};
use minimax_runtime::weights::{GgufFile, MetaValue, StoredDType};
use safetensors::Dtype;
use serde_json::json;

use crate::models::{CHATML, fixture_engine};

/// One seed: the target it belongs to, a file name and the bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn repo(path: &str) -> Vec<u8> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| seeds.push(Seed { target, name: name.into(), bytes });

    for stem in ["tiny-llama", "tiny-mixtral", "tiny-qwen2"] {
        let bytes = repo(&format!("tests/fixtures/gguf/{stem}.gguf"));
        // The tokenizers llama.cpp's metadata turns into: three pre-tokenizers.
        let file = GgufFile::parse(stem.into(), std::sync::Arc::new(bytes.clone())).expect("fixture GGUF");
        let tokenizer = file.tokenizer_json().expect("fixture tokenizer").expect("byte-level BPE");
        add("tokenizer", &format!("{stem}.json"), tokenizer.into_bytes());
        add("config", &format!("{stem}.json"), file.hf_config().expect("fixture config").to_string().into_bytes());
        if let Some(template) = file.chat_template() {
            add("chat_template", &format!("{stem}.jinja"), template.into_bytes());
        }
        add("gguf", &format!("{stem}.gguf"), bytes);
    }
    add("gguf", "every-type.gguf", every_type_gguf());

    for dir in ["llama-tied", "minimax-7to1", "minimax-partial-rope", "minimax-remote-code", "minimax-sharded-bf16", "mixtral-moe", "qwen2-bias"] {
        add("config", &format!("{dir}.json"), repo(&format!("tests/fixtures/{dir}/config.json")));
    }
    add("config", "minimax-demo.json", repo("models/minimax-demo/config.json"));
    add("tokenizer", "fixture.json", repo("tests/fixtures/minimax-7to1/tokenizer.json"));
    for (name, json) in tokenizers() {
        add("tokenizer", name, json.to_string().into_bytes());
    }

    add("safetensors", "index.json", repo("tests/fixtures/minimax-sharded-bf16/model.safetensors.index.json"));
    add("safetensors", "floats.safetensors", floats_safetensors());
    add("safetensors", "blocks.safetensors", blocks_safetensors());

    for (name, text) in templates() {
        add("chat_template", name, text.into_bytes());
    }

    for (name, hidden, ffn, quant) in [("q8", 32, 32, StoredDType::Q8_0), ("q4", 64, 32, StoredDType::Q4_1), ("f16", 6, 10, StoredDType::F16)] {
        add("pack", &format!("{name}.pack"), expert_pack(quant, hidden, ffn));
    }

    for (name, bytes) in snapshots() {
        add("snapshot", name, bytes);
    }

    for (name, bytes) in requests() {
        add("server_request", name, bytes);
    }
    seeds
}

/// Writes every seed under `corpus` (`corpus/<target>/seed-<name>`); returns how many.
pub fn write(corpus: &Path) -> std::io::Result<usize> {
    let seeds = all();
    for seed in &seeds {
        let dir = corpus.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.bytes)?;
    }
    Ok(seeds.len())
}

/// GGUF's value type ids (`gguf_type` in ggml).
fn type_id(v: &MetaValue) -> u32 {
    match v {
        MetaValue::U8(_) => 0,
        MetaValue::I8(_) => 1,
        MetaValue::U16(_) => 2,
        MetaValue::I16(_) => 3,
        MetaValue::U32(_) => 4,
        MetaValue::I32(_) => 5,
        MetaValue::F32(_) => 6,
        MetaValue::Bool(_) => 7,
        MetaValue::Str(_) => 8,
        MetaValue::Array(_) => 9,
        MetaValue::U64(_) => 10,
        MetaValue::I64(_) => 11,
        MetaValue::F64(_) => 12,
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.extend(x.to_le_bytes()),
        MetaValue::U16(x) => out.extend(x.to_le_bytes()),
        MetaValue::I16(x) => out.extend(x.to_le_bytes()),
        MetaValue::U32(x) => out.extend(x.to_le_bytes()),
        MetaValue::I32(x) => out.extend(x.to_le_bytes()),
        MetaValue::F32(x) => out.extend(x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(u8::from(*x)),
        MetaValue::Str(s) => put_string(out, s),
        MetaValue::Array(items) => {
            out.extend(items.first().map_or(0, type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            items.iter().for_each(|item| put_value(out, item));
        }
        MetaValue::U64(x) => out.extend(x.to_le_bytes()),
        MetaValue::I64(x) => out.extend(x.to_le_bytes()),
        MetaValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// A GGUF v3 file: metadata, then tensors `(name, GGUF dims, ggml type, data)` placed at
/// `alignment` (which the metadata must state when it is not 32).
fn gguf_file(kv: &[(&str, MetaValue)], tensors: &[(&str, &[u64], u32, Vec<u8>)], alignment: usize) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend(3u32.to_le_bytes());
    f.extend((tensors.len() as u64).to_le_bytes());
    f.extend((kv.len() as u64).to_le_bytes());
    for (key, value) in kv {
        put_string(&mut f, key);
        f.extend(type_id(value).to_le_bytes());
        put_value(&mut f, value);
    }
    let mut offset = 0u64;
    for (name, dims, ty, data) in tensors {
        put_string(&mut f, name);
        f.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
        f.extend(ty.to_le_bytes());
        f.extend(offset.to_le_bytes());
        offset += (data.len() as u64).next_multiple_of(alignment as u64);
    }
    for (_, _, _, data) in tensors {
        f.resize(f.len().next_multiple_of(alignment), 0);
        f.extend(data);
    }
    f
}

/// Deterministic filler bytes (an LCG): the values do not matter, only that they vary.
fn filler(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// Metadata of every value type, nested arrays included, a non-default alignment, and tensors
/// of every ggml type the reader knows plus one it does not (Q4_K) and one it has no id for.
fn every_type_gguf() -> Vec<u8> {
    use MetaValue::*;
    let s = |v: &str| Str(v.into());
    let kv = [
        ("general.architecture", s("llama")),
        ("general.alignment", U32(64)),
        ("general.name", s("every type")),
        ("t.u8", U8(7)),
        ("t.i8", I8(-7)),
        ("t.u16", U16(700)),
        ("t.i16", I16(-700)),
        ("t.u32", U32(70_000)),
        ("t.i32", I32(-70_000)),
        ("t.f32", F32(1e-5)),
        ("t.bool", Bool(true)),
        ("t.u64", U64(1 << 40)),
        ("t.i64", I64(-(1 << 40))),
        ("t.f64", F64(0.1)),
        ("t.empty", Array(Vec::new())),
        ("t.nested", Array(vec![Array(vec![s("a"), s("b")]), Array(vec![s("c")])])),
        ("t.deep", Array(vec![Array(vec![Array(vec![Array(vec![U8(1)])])])])),
        ("llama.block_count", U32(1)),
        ("llama.embedding_length", U32(32)),
        ("llama.attention.head_count", Array(vec![U32(2)])),
        ("llama.attention.head_count_kv", U32(1)),
        ("llama.feed_forward_length", U32(32)),
        ("llama.vocab_size", U32(4)),
        ("llama.rope.freq_base", F32(10000.0)),
        ("llama.expert_count", U32(2)),
        ("llama.expert_used_count", U32(1)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("qwen2")),
        ("tokenizer.ggml.tokens", Array(vec![s("<|endoftext|>"), s("a"), s("b"), s("ab")])),
        ("tokenizer.ggml.token_type", Array(vec![I32(3), I32(1), I32(1), I32(1)])),
        ("tokenizer.ggml.merges", Array(vec![s("a b")])),
        ("tokenizer.ggml.bos_token_id", U32(0)),
        ("tokenizer.ggml.add_bos_token", Bool(true)),
        ("tokenizer.chat_template", s("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")),
    ];
    let tensors: [(&str, &[u64], u32, Vec<u8>); 9] = [
        ("token_embd.weight", &[32, 4], 0, filler(32 * 4 * 4, 1)),
        ("output_norm.weight", &[32], 1, filler(64, 2)),
        ("blk.0.attn_q.weight", &[32, 4], 30, filler(256, 3)),
        ("blk.0.attn_k.weight", &[32, 2], 8, filler(2 * 34, 4)),
        ("blk.0.attn_v.weight", &[32, 2], 2, filler(2 * 18, 5)),
        ("blk.0.ffn_gate_exps.weight", &[32, 2, 2], 3, filler(4 * 20, 6)),
        ("blk.0.ffn_up.1.weight", &[32, 2], 0, filler(256, 7)),
        ("blk.0.ffn_down.weight", &[256, 1], 12, filler(144, 8)),
        ("rope_freqs.weight", &[4], 99, filler(16, 9)),
    ];
    gguf_file(&kv, &tensors, 64)
}

fn safetensors_file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], metadata: HashMap<String, String>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, data)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).expect("shape matches the data");
            (name.to_string(), view)
        })
        .collect();
    safetensors::serialize(views, Some(metadata)).expect("serializable")
}

/// Float tensors under checkpoint names: f32, f16 and bf16, a scalar and an empty tensor.
fn floats_safetensors() -> Vec<u8> {
    let tensors = [
        ("model.embed_tokens.weight", Dtype::BF16, vec![8, 4], filler(64, 10)),
        ("model.layers.0.self_attn.q_proj.weight", Dtype::F16, vec![4, 4], filler(32, 11)),
        ("model.norm.weight", Dtype::F32, vec![4], filler(16, 12)),
        ("lm_head.weight", Dtype::F32, vec![8, 4], filler(128, 13)),
        ("scalar", Dtype::F32, vec![], filler(4, 14)),
        ("empty", Dtype::F16, vec![0, 4], Vec::new()),
    ];
    safetensors_file(&tensors, HashMap::from([("format".into(), "pt".into())]))
}

/// ggml blocks stored as `U8` tensors, as expert packs' `dense.safetensors` holds quantized
/// layers (`"ggml:<name>"` metadata).
fn blocks_safetensors() -> Vec<u8> {
    let tensors = [
        ("a.weight", Dtype::U8, vec![2, 34], filler(68, 20)),
        ("b.weight", Dtype::U8, vec![3, 40], filler(120, 21)),
        ("c.weight", Dtype::U8, vec![1, 18], filler(18, 22)),
        ("d.weight", Dtype::F32, vec![2, 2], filler(16, 23)),
    ];
    let metadata = HashMap::from([
        ("format".into(), "pt".into()),
        ("ggml:a.weight".into(), "Q8_0".into()),
        ("ggml:b.weight".into(), "Q4_1".into()),
        ("ggml:c.weight".into(), "Q4_0".into()),
    ]);
    safetensors_file(&tensors, metadata)
}

/// Small tokenizers of the other pipelines `tokenizer.json` describes: SentencePiece-style
/// Unigram with byte fallback (T5, Llama 2 conversions), BPE with byte fallback and merges
/// as strings (Llama 2, Mistral), and BERT's WordPiece.
fn tokenizers() -> Vec<(&'static str, serde_json::Value)> {
    let added = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true})
    };
    let metaspace = json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    let sp_decoder = json!({"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
    let bos = json!({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}});
    let unigram = json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": metaspace, "post_processor": bos, "decoder": sp_decoder,
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": true, "vocab": [
            ["<unk>", 0.0], ["<s>", 0.0], ["▁", -2.0], ["a", -3.0], ["b", -3.5], ["▁a", -2.5], ["ab", -2.8], ["<0x41>", -10.0], ["<0xC3>", -10.0]]}});
    let byte_fallback_bpe = json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>")],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null, "post_processor": bos, "decoder": sp_decoder,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
            "vocab": {"<unk>": 0, "<s>": 1, "<0x41>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6, "ab": 7, "▁ab": 8},
            "merges": ["▁ a", "a b", "▁a b"]}});
    let wordpiece = json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [added(0, "[UNK]"), added(1, "[CLS]"), added(2, "[SEP]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100,
            "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "##b": 4, "ab": 5, "upon": 6, "time": 7, ",": 8}}});
    vec![("unigram.json", unigram), ("byte-fallback-bpe.json", byte_fallback_bpe), ("wordpiece.json", wordpiece)]
}

/// Chat templates in the styles models ship, plain and as `tokenizer_config.json`.
fn templates() -> Vec<(&'static str, String)> {
    let llama3 = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
    let mistral = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}";
    let minimax = "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<beginning_of_sentence>system ai_setting=assistant\\n' + message['content'] + '<end_of_sentence>\\n' }}{% elif message['role'] == 'user' %}{{ '<beginning_of_sentence>user name=user\\n' + message['content'] + '<end_of_sentence>\\n' }}{% else %}{{ '<beginning_of_sentence>ai name=assistant\\n' + message['content'] + '<end_of_sentence>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<beginning_of_sentence>ai name=assistant\\n' }}{% endif %}";
    let features = "{% set ns = namespace(n=0) %}{% macro show(m) %}[{{ m.role | upper }}]{{ m.content[:20] }}{% endmacro %}{% for m in messages | reverse %}{% set ns.n = ns.n + 1 %}{{ show(m) }}{% if m.content.startswith('H') %}!{% endif %}{{ m.content.split(' ') | join('|') }}{% endfor %}{{ ns.n }} {{ strftime_now('%d %B %Y') }}{{ range(3) | list | length }}{{ '%s-%d' | format('x', 2) }}";
    let config = json!({"chat_template": CHATML, "bos_token": "<s>", "eos_token": {"content": "</s>"}}).to_string();
    let named = json!({"chat_template": [{"name": "tool_use", "template": "{{ tools }}"}, {"name": "default", "template": llama3}]}).to_string();
    vec![
        ("chatml.jinja", CHATML.to_string()),
        ("llama3.jinja", llama3.to_string()),
        ("mistral.jinja", format!("{mistral}\0Hi!\0Hello.\0How are you?")),
        ("minimax.jinja", format!("{minimax}\0You are helpful.\0Hi\0Hello there")),
        ("features.jinja", format!("{features}\0Hello world\0Hi\0x")),
        ("tokenizer_config.json", config),
        ("named_tokenizer_config.json", named),
    ]
}

fn le32(n: usize) -> [u8; 4] {
    (n as u32).to_le_bytes()
}

/// A two-layer, two-expert pack in `quant`, framed as [`crate::split_pack`] reads it, with
/// records 64-byte aligned (the reader takes any power of two; 4096 would make big seeds).
fn expert_pack(quant: StoredDType, hidden: usize, ffn: usize) -> Vec<u8> {
    let layout = ExpertLayout::new(quant, hidden, ffn).expect("valid seed layout");
    let alignment = 64u64;
    let stride = pack::record_stride(layout.bytes() as u64, alignment) as usize;
    let (mut file, mut experts) = (Vec::new(), Vec::new());
    for (i, (layer, expert)) in [(0, 0), (0, 1), (2, 0), (2, 1)].into_iter().enumerate() {
        let w = |k: usize| (0..hidden * ffn).map(|j| ((i * 7 + j * k) % 13) as f32 / 4.0 - 1.5).collect::<Vec<f32>>();
        let record = layout.encode(&w(1), &w(3), &w(5));
        file.resize(i * stride, 0);
        experts.push(ExpertEntry { layer, expert, offset: file.len() as u64, bytes: record.len() as u64, crc32: pack::crc32(&record) });
        file.extend(record);
    }
    let dense = floats_safetensors();
    let index = PackIndex {
        format: pack::FORMAT.into(),
        version: pack::VERSION,
        quant: quant.name().into(),
        hidden,
        ffn,
        num_experts: 2,
        moe_layers: vec![0, 2],
        record_bytes: layout.bytes() as u64,
        alignment,
        experts,
        dense: DenseEntry { file: pack::DENSE_FILE.into(), bytes: dense.len() as u64, crc32: pack::crc32(&dense) },
        source: json!({"model": "seed"}),
    };
    let json = serde_json::to_vec(&index).expect("serializable");
    [&le32(json.len())[..], &json, &le32(file.len()), &file, &dense].concat()
}

/// States of the fixture model: fresh, after a prompt (lightning states and a KV cache), and a
/// chat conversation.
fn snapshots() -> Vec<(&'static str, Vec<u8>)> {
    let engine = fixture_engine();
    let model = &engine.model;
    let fresh = model.new_state();
    let mut fed = model.new_state();
    let tokens = [1, 42, 7, 99, 250];
    pollster::block_on(model.forward(&tokens, &mut fed, Logits::Last)).expect("forward");
    let save = |state, extra: &str| pollster::block_on(snapshot::save(model, state, extra)).expect("save");
    let conversation = Conversation {
        messages: vec![minimax_runtime::chat::Message::new("user", "Hi"), minimax_runtime::chat::Message::new("assistant", "Hello")],
        state: fed.clone(),
        fed: tokens.to_vec(),
    };
    vec![
        ("fresh.state", save(&fresh, "")),
        ("prompt.state", save(&fed, "free text")),
        ("conversation.state", pollster::block_on(conversation.save(model)).expect("save")),
    ]
}

/// Request bodies, each behind its route/server byte (see [`crate::server_request`]).
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let with = |pick: u8, body: serde_json::Value| [vec![pick], body.to_string().into_bytes()].concat();
    let chat = json!({"model": "fuzz", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
        {"role": "assistant", "content": null},
        {"role": "user", "content": "Once upon a time"}
    ], "max_completion_tokens": 4, "temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
    "repetition_penalty": 1.1, "seed": -3, "stop": ["\n", "User:"], "stream": true,
    "stream_options": {"include_usage": true}});
    vec![
        ("completion-text", with(0, json!({"prompt": "Once upon a time", "max_tokens": 8, "stop": "end", "n": 1}))),
        ("completion-ids", with(0, json!({"prompt": [1, 42, 7], "max_tokens": 3, "temperature": 0, "ignore_eos": true, "echo": false}))),
        ("completion-texts", with(2, json!({"prompt": ["a b c"], "frequency_penalty": 0, "presence_penalty": 0.0, "stream": true}))),
        ("chat-plain", with(1, chat.clone())),
        ("chat-template", with(3, chat)),
    ]
}
