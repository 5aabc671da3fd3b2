//! A Hugging Face `tokenizer.json` built from a GGUF file's `tokenizer.ggml.*` metadata, for
//! byte-level BPE vocabularies (`tokenizer.ggml.model == "gpt2"`).
//!
//! The vocabulary is `tokenizer.ggml.tokens` (ids are positions), the merges are
//! `tokenizer.ggml.merges` (`"a b"`), and `tokenizer.ggml.token_type` marks added tokens:
//! 3 (control, e.g. `<|im_end|>`) become special added tokens, 4 (user-defined, e.g. `<think>`)
//! plain added tokens, as transformers' GGUF loader does; both are matched whole in the text,
//! as llama.cpp does. BOS/EOS are added by a template when `tokenizer.ggml.add_bos_token` /
//! `add_eos_token` say so.
//!
//! The pre-tokenizer follows `tokenizer.ggml.pre` the way llama.cpp's `src/llama-vocab.cpp`
//! does (see [`pre_tokenizer`]). Notably "smollm" (like "starcoder", "refact", "command-r", …)
//! splits `\p{N}` (each digit alone) before the GPT-2 regex, which is SmolLM2's own
//! `tokenizer.json`: `Digits { individual_digits: true }` then `ByteLevel`. An unknown `pre`
//! value is an error rather than a silently different tokenization.
//!
//! SentencePiece (`"llama"`) and other tokenizer models are not supported yet: for them
//! [`GgufFile::tokenizer_json`] returns `Ok(None)`, and a `tokenizer.json` beside the file is used.

use serde_json::{Value, json};

use super::gguf::{GgufFile, MetaValue};
use crate::error::WeightsError;

/// GPT-2's regex pre-tokenization, done by `ByteLevel` itself (`use_regex`).
const GPT2_PRES: [&str; 6] = ["gpt2", "gpt-2", "phi-2", "mpt", "olmo", "exaone4"];
/// `\p{N}` first, then the GPT-2 regex.
const DIGITS_PRES: [&str; 8] = ["smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"];
const LLAMA3_PRES: [&str; 5] = ["llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral"];
const QWEN2_PRES: [&str; 3] = ["qwen2", "deepseek-r1-qwen", "megrez"];

/// The split regexes of Llama 3's and Qwen2's `tokenizer.json` (llama.cpp spells the
/// contractions out instead of `(?i:…)`).
const LLAMA3_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How `pre` splits text: `(pre_tokenizer, BPE ignore_merges, BOS by default)`, or `None` for a
/// value this builder does not know. A missing `pre` is GPT-2 (as in transformers).
fn pre_tokenizer(pre: Option<&str>) -> Option<(Value, bool, bool)> {
    let byte_level = |use_regex: bool| {
        json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex })
    };
    let split = |regex: &str| {
        json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Split", "pattern": { "Regex": regex }, "behavior": "Isolated", "invert": false },
            byte_level(false),
        ] })
    };
    let pre = pre.unwrap_or("gpt2");
    Some(if GPT2_PRES.contains(&pre) {
        (byte_level(true), false, false)
    } else if DIGITS_PRES.contains(&pre) {
        let digits = json!({ "type": "Digits", "individual_digits": true });
        (json!({ "type": "Sequence", "pretokenizers": [digits, byte_level(true)] }), false, false)
    } else if LLAMA3_PRES.contains(&pre) {
        (split(LLAMA3_SPLIT), true, true)
    } else if QWEN2_PRES.contains(&pre) {
        (split(QWEN2_SPLIT), false, false)
    } else {
        return None;
    })
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`): printable Latin-1 bytes
/// stand for themselves, the other 68 bytes for U+0100 onwards.
fn byte_chars() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256;
    for (b, c) in map.iter_mut().enumerate() {
        let printable = matches!(b, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable { b as u32 } else { next };
        next += u32::from(!printable);
        *c = char::from_u32(code).expect("below U+0200");
    }
    map
}

impl GgufFile {
    /// A Hugging Face `tokenizer.json` (as the `tokenizers` crate parses it) for a byte-level
    /// BPE vocabulary; `Ok(None)` for SentencePiece and other tokenizer models, or a file with no
    /// vocabulary.
    pub fn tokenizer_json(&self) -> Result<Option<String>, WeightsError> {
        let pre = self.metadata("tokenizer.ggml.pre").and_then(MetaValue::as_str);
        self.tokenizer_json_with(pre, None)
    }

    /// [`Self::tokenizer_json`] with the pre-tokenizer and the BOS flag given.
    fn tokenizer_json_with(&self, pre: Option<&str>, add_bos: Option<bool>) -> Result<Option<String>, WeightsError> {
        let fail = |reason: String| WeightsError::Format {
            path: self.path().to_string(),
            reason,
        };
        let meta = |key: &str| self.metadata(&format!("tokenizer.ggml.{key}"));
        if meta("model").and_then(MetaValue::as_str) != Some("gpt2") {
            return Ok(None);
        }
        let tokens = meta("tokens").and_then(MetaValue::as_array).ok_or_else(|| fail("no tokenizer.ggml.tokens".into()))?;
        let (pre_tokenizer, ignore_merges, bos_by_default) = pre_tokenizer(pre).ok_or_else(|| {
            fail(format!(
                "tokenizer.ggml.pre `{}` is not supported yet; put the model's tokenizer.json beside the file",
                pre.unwrap_or_default()
            ))
        })?;
        let types: Vec<u64> = match meta("token_type").and_then(MetaValue::as_array) {
            Some(t) => t.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
            None => Vec::new(),
        };

        let chars = byte_chars();
        let in_alphabet = |c: char| chars.contains(&c);
        let mut vocab = serde_json::Map::new();
        let mut added = Vec::new();
        for (id, token) in tokens.iter().enumerate() {
            let token = token.as_str().ok_or_else(|| fail(format!("token {id} is not a string")))?;
            let kind = types.get(id).copied().unwrap_or(1);
            let spelled = if matches!(kind, 3 | 4) || token.chars().all(in_alphabet) {
                token.to_string()
            } else {
                // A token written as text rather than in the byte alphabet (llama.cpp writes some
                // that way): spell its UTF-8 bytes.
                token.bytes().map(|b| chars[usize::from(b)]).collect()
            };
            if matches!(kind, 3 | 4) {
                added.push(json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": kind == 3,
                }));
            }
            vocab.insert(spelled, id.into());
        }
        let merges = match meta("merges").and_then(MetaValue::as_array) {
            Some(m) => m
                .iter()
                .map(|m| {
                    let (a, b) = m.as_str().and_then(|m| m.split_once(' ')).ok_or_else(|| fail(format!("bad merge {m:?}")))?;
                    Ok(json!([a, b]))
                })
                .collect::<Result<Vec<_>, WeightsError>>()?,
            None => Vec::new(),
        };

        let flag = |key: &str, default: bool| meta(key).and_then(MetaValue::as_bool).unwrap_or(default);
        let add_bos = add_bos.unwrap_or_else(|| flag("add_bos_token", bos_by_default));
        let add_eos = flag("add_eos_token", false);
        let special = |key: &str, on: bool| -> Option<(String, u64)> {
            let id = meta(key).and_then(MetaValue::as_u64).filter(|_| on)?;
            Some((tokens.get(id as usize)?.as_str()?.to_string(), id))
        };
        let (bos, eos) = (special("bos_token_id", add_bos), special("eos_token_id", add_eos));
        let byte_level_post = json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true });
        let post_processor = if bos.is_none() && eos.is_none() {
            byte_level_post
        } else {
            let piece = |t: &Option<(String, u64)>, type_id: u32| {
                t.as_ref().map(|(content, _)| json!({ "SpecialToken": { "id": content, "type_id": type_id } }))
            };
            let seq = |id: &str, type_id: u32| Some(json!({ "Sequence": { "id": id, "type_id": type_id } }));
            let single: Vec<Value> = [piece(&bos, 0), seq("A", 0), piece(&eos, 0)].into_iter().flatten().collect();
            let pair: Vec<Value> = [piece(&bos, 0), seq("A", 0), piece(&eos, 0), piece(&bos, 1), seq("B", 1), piece(&eos, 1)]
                .into_iter()
                .flatten()
                .collect();
            let specials: serde_json::Map<String, Value> = [&bos, &eos]
                .into_iter()
                .flatten()
                .map(|(content, id)| (content.clone(), json!({ "id": content, "ids": [id], "tokens": [content] })))
                .collect();
            json!({ "type": "Sequence", "processors": [
                byte_level_post,
                { "type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials },
            ] })
        };

        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges,
            },
        });
        Ok(Some(tokenizer.to_string()))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::weights::gguf::testing;
    use std::sync::Arc;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gguf/");

    fn fixture(stem: &str) -> GgufFile {
        let bytes = std::fs::read(format!("{DIR}{stem}.gguf")).unwrap();
        GgufFile::parse(stem.into(), Arc::new(bytes)).unwrap()
    }

    fn reference() -> Value {
        serde_json::from_slice(&std::fs::read(format!("{DIR}tokenizer-reference.json")).unwrap()).unwrap()
    }

    fn load(json: Option<String>) -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_bytes(json.expect("a byte-level BPE tokenizer").as_bytes()).unwrap()
    }

    fn check(tok: &tokenizers::Tokenizer, reference: &Value, key: &str) {
        let samples = reference["samples"].as_array().unwrap();
        let bos = if key.ends_with("+bos") { "<|endoftext|>" } else { "" };
        for (sample, want) in samples.iter().zip(reference["by_pre"][key].as_array().unwrap()) {
            let sample = sample.as_str().unwrap();
            let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let ids = tok.encode(sample, true).unwrap().get_ids().to_vec();
            assert_eq!(ids, want, "{key}: {sample:?}");
            assert_eq!(tok.decode(&ids, false).unwrap(), format!("{bos}{sample}"), "{key}: round trip");
        }
    }

    #[test]
    fn every_pre_tokenizer_matches_hugging_face() {
        let reference = reference();
        let file = fixture("tiny-llama");
        for key in reference["by_pre"].as_object().unwrap().keys() {
            let (pre, bos) = (key.trim_end_matches("+bos"), key.ends_with("+bos"));
            check(&load(file.tokenizer_json_with(Some(pre), Some(bos)).unwrap()), &reference, key);
        }
    }

    #[test]
    fn each_fixture_uses_its_own_metadata() {
        let reference = reference();
        // tiny-llama: pre "smollm", add_bos_token true; tiny-mixtral: "gpt2" without the flag.
        for (stem, key) in [("tiny-llama", "smollm+bos"), ("tiny-mixtral", "gpt2"), ("tiny-qwen2", "qwen2")] {
            let tok = load(fixture(stem).tokenizer_json().unwrap());
            check(&tok, &reference, key);
            assert_eq!(tok.get_vocab_size(true), 301, "{stem}: added tokens reuse their ids");
        }
        let by = &reference["by_pre"];
        assert_ne!(by["smollm"][1], by["gpt2"][1], "the digit sample must tell the pipelines apart");
    }

    #[test]
    fn control_tokens_are_special_and_user_defined_ones_are_not() {
        let tok = load(fixture("tiny-mixtral").tokenizer_json().unwrap());
        let ids = tok.encode("<|im_start|>hi<think>", false).unwrap().get_ids().to_vec();
        assert_eq!((ids[0], ids[ids.len() - 1]), (1, 300));
        assert_eq!(tok.decode(&ids, true).unwrap(), "hi<think>");
    }

    #[test]
    fn other_tokenizers_are_declined_or_refused() {
        let file = |kv: &[(&str, u32, Vec<u8>)]| GgufFile::parse("t.gguf".into(), Arc::new(testing::file(kv, &[]))).unwrap();
        let model = |m: &str| ("tokenizer.ggml.model", 8, testing::string(m));
        let tokens = ("tokenizer.ggml.tokens", 9, [8u32.to_le_bytes().as_slice(), &1u64.to_le_bytes(), &testing::string("a")].concat());
        assert!(file(&[]).tokenizer_json().unwrap().is_none());
        assert!(file(&[model("llama"), tokens.clone()]).tokenizer_json().unwrap().is_none());
        let pre = ("tokenizer.ggml.pre", 8, testing::string("deepseek-llm"));
        let e = file(&[model("gpt2"), tokens, pre]).tokenizer_json().err().unwrap().to_string();
        assert!(e.contains("`deepseek-llm` is not supported yet"), "{e}");
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let chars = byte_chars();
        assert_eq!((chars[b' ' as usize], chars[b'\n' as usize], chars[b'A' as usize]), ('Ġ', 'Ċ', 'A'));
        assert_eq!((chars[0], chars[0xAD]), ('\u{100}', '\u{143}'));
    }
}
