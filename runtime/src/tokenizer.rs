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
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RuntimeError> {
        Ok(Self {
            inner: tokenizers::Tokenizer::from_bytes(bytes).map_err(err)?,
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
