//! GGUF under Hugging Face names: llama.cpp's tensor names mapped back, q/k rows put back in
//! Hugging Face order, and a transformers-style `config.json` built from the metadata.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{GgufFile, MetaValue, View};
use crate::error::WeightsError;

/// GGUF name in a block (`blk.{i}.…`) → Hugging Face name in a layer (`model.layers.{i}.…`).
const LAYER_NAMES: [(&str, &str); 14] = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("ffn_norm.weight", "post_attention_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_q.bias", "self_attn.q_proj.bias"),
    ("attn_k.bias", "self_attn.k_proj.bias"),
    ("attn_v.bias", "self_attn.v_proj.bias"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("attn_output.bias", "self_attn.o_proj.bias"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
    ("ffn_gate_inp.weight", "block_sparse_moe.gate.weight"),
];

/// Expert projections: GGUF `ffn_{x}_exps` (stacked) or `ffn_{x}.{e}` (older per-expert files)
/// → Mixtral's `w1` (gate), `w2` (down), `w3` (up).
const EXPERT_NAMES: [(&str, &str); 3] = [("gate", "w1"), ("down", "w2"), ("up", "w3")];

const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Architectures renamed to Hugging Face names, and whether their q/k rows are permuted.
pub(super) fn hf_family(arch: &str) -> Option<bool> {
    match arch {
        "llama" => Some(true),
        "qwen2" => Some(false),
        _ => None,
    }
}

impl GgufFile {
    /// Maps every tensor to its Hugging Face name and view (or keeps its GGUF name).
    pub(super) fn hf_index(&self) -> HashMap<String, (usize, View)> {
        let permuted = self.architecture().and_then(hf_family);
        let mut index = HashMap::new();
        for (t, info) in self.tensors.iter().enumerate() {
            let name = info.name.as_str();
            let mapped = permuted.and_then(|permuted| {
                if let Some((_, hf)) = GLOBAL_NAMES.iter().find(|(g, _)| *g == name) {
                    return Some(vec![(hf.to_string(), View::Whole)]);
                }
                let (layer, rest) = name.strip_prefix("blk.")?.split_once('.')?;
                let layer: usize = layer.parse().ok()?;
                let prefix = format!("model.layers.{layer}");
                if let Some((g, hf)) = LAYER_NAMES.iter().find(|(g, _)| *g == rest) {
                    // Missing head counts give 0 heads, which `get` reports.
                    let heads = match g.split_once('.').map(|s| s.0) {
                        Some("attn_q") if permuted => Some(self.heads(layer, false).unwrap_or(0)),
                        Some("attn_k") if permuted => Some(self.heads(layer, true).unwrap_or(0)),
                        _ => None,
                    };
                    let view = heads.map_or(View::Whole, |heads| View::Unpermute { heads });
                    return Some(vec![(format!("{prefix}.{hf}"), view)]);
                }
                let expert = |e: usize, w: &str| format!("{prefix}.block_sparse_moe.experts.{e}.{w}.weight");
                for (g, w) in EXPERT_NAMES {
                    // Only a tensor of a known type has its bytes checked at parse, which bounds
                    // its expert count; others keep their GGUF name (and fail on use).
                    if rest == format!("ffn_{g}_exps.weight") && info.dims.len() == 3 && info.len.is_some() {
                        return Some((0..info.dims[2]).map(|e| (expert(e, w), View::Expert { index: e })).collect());
                    }
                    let e = rest.strip_prefix(&format!("ffn_{g}.")).and_then(|r| r.strip_suffix(".weight"));
                    if let Some(e) = e.and_then(|e| e.parse().ok()) {
                        return Some(vec![(expert(e, w), View::Whole)]);
                    }
                }
                None
            });
            for (hf, view) in mapped.unwrap_or_else(|| vec![(name.to_string(), View::Whole)]) {
                index.insert(hf, (t, view));
            }
        }
        index
    }

    /// Heads of layer `layer`'s q (or k) projection, for the row un-permutation.
    fn heads(&self, layer: usize, kv: bool) -> Option<usize> {
        let q = self.arch_u64("attention.head_count", layer)?;
        let n = if kv { self.arch_u64("attention.head_count_kv", layer).unwrap_or(q) } else { q };
        usize::try_from(n).ok()
    }

    /// `{arch}.{key}`, a number, or the `layer`-th number of a per-layer array.
    fn arch_u64(&self, key: &str, layer: usize) -> Option<u64> {
        let v = self.metadata.get(&format!("{}.{key}", self.architecture()?))?;
        v.as_u64().or_else(|| v.as_array()?.get(layer)?.as_u64())
    }

    pub(super) fn has_tensor(&self, gguf_name: &str) -> bool {
        self.tensors.iter().any(|t| t.name == gguf_name)
    }

    /// A transformers-style `config.json` for llama (Mistral; Mixtral when `llama.expert_count`
    /// is set) and qwen2 files, from the metadata (keys listed in the body).
    pub fn hf_config(&self) -> Result<Value, WeightsError> {
        let fail = |reason: String| WeightsError::Format {
            path: self.path.clone(),
            reason,
        };
        let arch = self.architecture().ok_or_else(|| fail("no `general.architecture`".into()))?;
        if hf_family(arch).is_none() {
            return Err(fail(format!("architecture `{arch}` has no config mapping (supported: llama, qwen2)")));
        }
        let get = |key: &str| self.metadata.get(&format!("{arch}.{key}"));
        let need = |key: &str| {
            get(key).and_then(MetaValue::as_u64).ok_or_else(|| fail(format!("missing or non-integer metadata `{arch}.{key}`")))
        };
        let layers = need("block_count")?;
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let kv_heads = match get("attention.head_count_kv") {
            None => heads,
            Some(v) => v.as_u64().or_else(|| {
                let all: Vec<_> = v.as_array()?.iter().map(MetaValue::as_u64).collect::<Option<_>>()?;
                all.windows(2).all(|w| w[0] == w[1]).then(|| all.first().copied()).flatten()
            }).ok_or_else(|| fail(format!("`{arch}.attention.head_count_kv` must be one number, found {v:?}")))?,
        };
        let experts = get("expert_count").and_then(MetaValue::as_u64).filter(|&e| e > 0);
        let (model_type, class) = match (arch, experts) {
            ("qwen2", _) => ("qwen2", "Qwen2ForCausalLM"),
            (_, Some(_)) => ("mixtral", "MixtralForCausalLM"),
            _ => ("llama", "LlamaForCausalLM"),
        };
        let vocab = match self.metadata.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array) {
            Some(tokens) => tokens.len() as u64,
            None => need("vocab_size")?,
        };
        let Value::Object(mut c) = json!({
            "architectures": [class],
            "model_type": model_type,
            "num_hidden_layers": layers,
            "hidden_size": hidden,
            "intermediate_size": need("feed_forward_length")?,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "rope_theta": get("rope.freq_base").and_then(MetaValue::as_f64).unwrap_or(10000.0),
            "rms_norm_eps": get("attention.layer_norm_rms_epsilon").and_then(MetaValue::as_f64).unwrap_or(1e-5),
            "vocab_size": vocab,
            "hidden_act": "silu",
            "tie_word_embeddings": !self.has_tensor("output.weight"),
            "attention_bias": self.has_tensor("blk.0.attn_q.bias"),
        }) else {
            unreachable!("an object literal")
        };
        if let Some(n) = get("context_length").and_then(MetaValue::as_u64) {
            c.insert("max_position_embeddings".into(), n.into());
        }
        let default_head_dim = hidden / heads.max(1);
        let head_dim = get("attention.key_length").and_then(MetaValue::as_u64);
        let rope_dim = get("rope.dimension_count").and_then(MetaValue::as_u64);
        // llama.cpp writes key_length only for an explicit `head_dim`; for llama the rotary
        // width is the head dim.
        let head_dim = head_dim.or(if arch == "llama" { rope_dim } else { None }).unwrap_or(default_head_dim);
        if head_dim != default_head_dim {
            c.insert("head_dim".into(), head_dim.into());
        }
        if let Some(r) = rope_dim.filter(|&r| r != head_dim) {
            c.insert("partial_rotary_factor".into(), (r as f64 / head_dim as f64).into());
        }
        if let Some(e) = experts {
            c.insert("num_local_experts".into(), e.into());
            c.insert("num_experts_per_tok".into(), need("expert_used_count")?.into());
        }
        for (key, hf) in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")] {
            if let Some(id) = self.metadata.get(&format!("tokenizer.ggml.{key}")).and_then(MetaValue::as_u64) {
                c.insert(hf.into(), id.into());
            }
        }
        // RoPE scaling is passed on, so that a runtime without it refuses the model rather than
        // running it wrong. llama3-style scaling lives only in the `rope_freqs.weight` tensor.
        let scaling = get("rope.scaling.type").and_then(MetaValue::as_str).filter(|t| *t != "none");
        let factor = get("rope.scaling.factor").or_else(|| get("rope.scale_linear")).and_then(MetaValue::as_f64);
        if let Some(kind) = scaling.or(factor.map(|_| "linear")) {
            let mut s = json!({ "rope_type": kind, "factor": factor });
            if let Some(n) = get("rope.scaling.original_context_length").and_then(MetaValue::as_u64) {
                s["original_max_position_embeddings"] = n.into();
            }
            c.insert("rope_scaling".into(), s);
        } else if self.has_tensor("rope_freqs.weight") {
            c.insert("rope_scaling".into(), json!({ "rope_type": "llama3", "factors_tensor": "rope_freqs.weight" }));
        }
        Ok(Value::Object(c))
    }
}

/// Rows of a `[rows, row_bytes]` byte matrix from llama.cpp's q/k order back to Hugging Face
/// order. llama.cpp stores, within each head of `2 * half` rows, HF row `j * half + i` at row
/// `2 * i + j` (rotary pairs interleaved); this inverts that.
pub(super) fn unpermute_rows(bytes: &[u8], rows: usize, heads: usize) -> Vec<u8> {
    let row = bytes.len() / rows;
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let src = h * 2 * half + 2 * i + j;
                out.extend_from_slice(&bytes[src * row..(src + 1) * row]);
            }
        }
    }
    out
}
