//! `tokenizer.json` through the `tokenizers` crate (the same code natively and in wasm).

use crate::error::RuntimeError;

/// A loaded Hugging Face tokenizer.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({} tokens)", self.vocab_size())
    }
}

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Parses the bytes of a `tokenizer.json`.
    ///
    /// The `tokenizers` crate trusts parts of the file that a hostile or corrupt one can get
    /// wrong, and panics on them (found by fuzzing, see FUZZING.md): a syntax error inside
    /// `decoder` (`expect("Helper")` while deserializing), BPE merges longer than any
    /// vocabulary entry (a slice out of range while building the model), a `Strip` decoder
    /// cutting from the end (an underflow on short tokens when decoding), and post-processor
    /// templates that name special tokens the file does not define (an index panic on every
    /// encode). All are checked here first and become errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RuntimeError> {
        let json: serde_json::Value = serde_json::from_slice(bytes).map_err(err)?;
        if let Some(processor) = json.get("post_processor") {
            check_post_processor(processor).map_err(|e| err(format!("post_processor: {e}")))?;
        }
        if let Some(decoder) = json.get("decoder") {
            check_decoder(decoder).map_err(|e| err(format!("decoder: {e}")))?;
        }
        if let Some(model) = json.get("model").and_then(serde_json::Value::as_object) {
            check_bpe_merges(model).map_err(|e| err(format!("model: {e}")))?;
        }
        Ok(Self {
            inner: serde_json::from_value(json).map_err(err)?,
        })
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(self.inner.encode(text, true).map_err(err)?.get_ids().to_vec())
    }

    /// Token ids of `text` without added special tokens (for text that already spells them,
    /// such as a rendered chat template).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(self.inner.encode(text, false).map_err(err)?.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, RuntimeError> {
        self.inner.decode(ids, true).map_err(err)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// An incremental decoder: yields text only once it forms complete characters, so that
    /// streamed output never shows half a UTF-8 sequence.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream {
            tokenizer: self,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }
}

/// The `tokenizers` crate's `Strip` decoder cuts `stop` characters from the end of each
/// token by counting down from its length, which underflows (a panic) on a token shorter
/// than `stop`, the empty text of a fused decode included. Converted models only strip from
/// the start (`stop: 0`), so a decoder anywhere in the chain that strips from the end is
/// refused.
fn check_decoder(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().try_for_each(check_decoder),
        Value::Object(map) => {
            if map.get("stop").and_then(Value::as_f64).is_some_and(|stop| stop != 0.0) {
                return Err("a Strip decoder with `stop` > 0 is not supported".into());
            }
            map.values().try_for_each(check_decoder)
        }
        _ => Ok(()),
    }
}

/// What the `tokenizers` crate's BPE builder assumes of the merges: it assembles each merged
/// token in a buffer as long as the longest vocabulary entry, and strips
/// `continuing_subword_prefix` from the second part by length, before it checks anything. A
/// merge must therefore make a token no longer than that entry, from a second part that
/// starts with the prefix. Merges are pairs or, in older files, `"a b"` strings.
fn check_bpe_merges(model: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    use serde_json::Value;
    let (Some(vocab), Some(merges)) = (model.get("vocab").and_then(Value::as_object), model.get("merges").and_then(Value::as_array)) else {
        return Ok(());
    };
    let longest = vocab.keys().map(String::len).max().unwrap_or(0);
    let prefix = model.get("continuing_subword_prefix").and_then(Value::as_str).unwrap_or("");
    for (i, merge) in merges.iter().enumerate() {
        let (a, b) = match merge {
            Value::Array(pair) if pair.len() == 2 => (pair[0].as_str(), pair[1].as_str()),
            Value::String(line) => line.split_once(' ').map_or((None, None), |(a, b)| (Some(a), Some(b))),
            _ => (None, None),
        };
        // Anything else the crate refuses by itself.
        let (Some(a), Some(b)) = (a, b) else { continue };
        let rest = b.strip_prefix(prefix).ok_or_else(|| format!("merge {i}: `{b}` does not start with the continuing_subword_prefix"))?;
        if a.len() + rest.len() > longest {
            return Err(format!("merge {i} (`{a}` `{b}`) makes a token longer than any in the vocabulary"));
        }
    }
    Ok(())
}

/// What the `tokenizers` crate's `TemplateProcessing` assumes of its templates without
/// checking when it is deserialized (its builder checks the first two): every special token
/// a template names is defined, the pair template uses both sequences, the single template
/// only the first, and each special token has as many token strings as ids. Processors nest
/// in `Sequence`s, and the crate recognises a template by its fields alone (its `type` is not
/// checked), so every object under `post_processor` with a template's fields is checked.
fn check_post_processor(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter().try_for_each(check_post_processor),
        Value::Object(map) => {
            if ["single", "pair", "special_tokens"].iter().all(|k| map.contains_key(*k)) {
                check_template(map)?;
            }
            map.values().try_for_each(check_post_processor)
        }
        _ => Ok(()),
    }
}

fn check_template(processor: &serde_json::Map<String, serde_json::Value>) -> Result<(), String> {
    use serde_json::Value;
    let specials = processor["special_tokens"].as_object().ok_or("`special_tokens` is not an object")?;
    for (name, token) in specials {
        let len = |key: &str| token.get(key).and_then(Value::as_array).map(Vec::len);
        if len("ids").is_none() || len("ids") != len("tokens") {
            return Err(format!("special token `{name}` needs as many `tokens` as `ids`"));
        }
    }
    for (template, allowed) in [("single", &["A"][..]), ("pair", &["A", "B"][..])] {
        let pieces = processor[template].as_array().ok_or_else(|| format!("the {template} template is not a list"))?;
        let mut used = Vec::new();
        for piece in pieces {
            if let Some(id) = piece.pointer("/SpecialToken/id").and_then(Value::as_str)
                && !specials.contains_key(id)
            {
                return Err(format!("the {template} template uses the undefined special token `{id}`"));
            }
            if let Some(id) = piece.pointer("/Sequence/id").and_then(Value::as_str) {
                if !allowed.contains(&id) {
                    return Err(format!("the {template} template uses sequence {id}"));
                }
                used.push(id);
            }
        }
        if allowed.iter().any(|id| !used.contains(id)) {
            return Err(format!("the {template} template must use sequences {allowed:?}"));
        }
    }
    Ok(())
}

/// Streaming detokenisation (the prefix/read-offset scheme of HF's `TextStreamer`): decode a
/// short window of recent ids and emit what it adds beyond the already-emitted prefix.
pub struct TextStream<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl TextStream<'_> {
    /// Feeds one id; returns the new text, if any is complete.
    pub fn push(&mut self, id: u32) -> Result<Option<String>, RuntimeError> {
        self.ids.push(id);
        let before = self.tokenizer.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tokenizer.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let text = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(text))
        } else {
            Ok(None)
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/minimax-7to1/tokenizer.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn load(json: &Value) -> Result<Tokenizer, RuntimeError> {
        Tokenizer::from_bytes(json.to_string().as_bytes())
    }

    /// Inputs on which the `tokenizers` crate panics (found by fuzzing; see FUZZING.md) are
    /// errors instead.
    #[test]
    fn files_the_tokenizers_crate_trusts_are_checked() {
        let good = fixture();
        let t = load(&good).unwrap();
        assert_eq!(t.decode(&t.encode("hello").unwrap()).unwrap(), "hello");
        // A syntax error inside `decoder` (the crate's `expect("Helper")`).
        let text = good.to_string().replacen(r#""decoder":{"#, r#""decoder":{"x" 1,"#, 1);
        assert!(text.contains(r#""x" 1"#));
        let e = Tokenizer::from_bytes(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("expected `:`"), "{e}");
        // Templates that name undefined special tokens, or the wrong sequences.
        let template = |single: Value, specials: Value| {
            let mut j = good.clone();
            j["post_processor"] = json!({"type": "Sequence", "processors": [{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}, {
                "type": "TemplateProcessing", "single": single, "special_tokens": specials,
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}]}]});
            load(&j).map(|_| ()).map_err(|e| e.to_string())
        };
        let s = json!([{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]);
        let defined = json!({"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}});
        assert_eq!(template(s.clone(), defined.clone()), Ok(()));
        let e = template(s.clone(), json!({"<t>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}})).unwrap_err();
        assert!(e.contains("undefined special token `<s>`"), "{e}");
        let e = template(s, json!({"<s>": {"id": "<s>", "ids": [1, 2], "tokens": ["<s>"]}})).unwrap_err();
        assert!(e.contains("as many `tokens` as `ids`"), "{e}");
        let e = template(json!([{"Sequence": {"id": "B", "type_id": 0}}]), defined).unwrap_err();
        assert!(e.contains("the single template uses sequence B"), "{e}");
        // A decoder stripping from the end of tokens.
        let mut j = good.clone();
        j["decoder"] = json!({"type": "Sequence", "decoders": [{"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 2}]});
        let e = load(&j).err().unwrap().to_string();
        assert!(e.contains("Strip decoder with `stop` > 0"), "{e}");
        // A merge longer than any vocabulary entry.
        let mut j = good.clone();
        let long = "a".repeat(200);
        j["model"]["vocab"][&long] = json!(400);
        j["model"]["merges"] = json!([[long, long]]);
        let e = load(&j).err().unwrap().to_string();
        assert!(e.contains("merge 0") && e.contains("longer than any in the vocabulary"), "{e}");
        // The crate takes a template by its fields, whatever its `type` says.
        let mut j = good.clone();
        j["post_processor"] = json!({"single": [{"SpecialToken": {"id": "<x>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}], "special_tokens": {}, "typo": "TemplateProcessing"});
        let e = load(&j).err().unwrap().to_string();
        assert!(e.contains("undefined special token `<x>`"), "{e}");
    }
}
