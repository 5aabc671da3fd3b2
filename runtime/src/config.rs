//! Model configuration: a raw serde mirror of `config.json`, validated into one checked
//! [`ModelConfig`].
//!
//! Two MiniMax dialects are accepted:
//! - Hugging Face transformers (`model_type: "minimax"`): `layer_types`, `*_alpha_factor` /
//!   `*_beta_factor`, `rope_parameters` (or `rope_theta`), always post-norm.
//! - The original remote code (`MiniMaxText01ForCausalLM`, `MiniMaxM1ForCausalLM`):
//!   `attn_type_list` (0 lightning, 1 softmax), `layernorm_*_alpha/beta`, `rotary_dim`,
//!   `postnorm`.
//!
//! Llama-family configs (`llama`, `mistral`, `mixtral`, `qwen2`) are the degenerate case of
//! the same architecture: every layer softmax, pre-norm residuals, a dense SwiGLU MLP or a
//! MoE, full RoPE.
//!
//! Layer kinds always come from the config's list, never from a `i % 8 == 7` rule.

use serde::Deserialize;
use serde_json::Value;

use crate::error::ConfigError;

/// What the token mixer of a layer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Lightning (linear) attention with a per-head decay.
    Lightning,
    /// Softmax attention with a KV cache.
    Softmax,
}

/// Where the residual branch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x' = alpha * norm(x) + beta * f(norm(x))` (MiniMax).
    Post,
    /// `x' = alpha * x + beta * f(norm(x))` (Llama, Mixtral; alpha = beta = 1).
    Pre,
}

/// Which formula gives the per-head lightning decay rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlopeSchedule {
    /// transformers: `2^(-8(h+1)/H) * (1 - l/(L-1+1e-5) + 1e-5)`.
    HuggingFace,
    /// Original MiniMax code: ALiBi slopes (interpolated for non-powers of two)
    /// times `(1 - l/(L-1) + 1e-5)`.
    Original,
}

/// One decoder layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    pub kind: LayerKind,
    /// Residual weights around the attention: `alpha * residual + beta * attn`.
    pub attn_alpha: f32,
    pub attn_beta: f32,
    /// Residual weights around the FFN.
    pub mlp_alpha: f32,
    pub mlp_beta: f32,
}

/// A sparse mixture of SwiGLU experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    pub num_experts: usize,
    pub top_k: usize,
    pub intermediate_size: usize,
}

/// The feed-forward block of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ffn {
    Moe(MoeConfig),
    /// One SwiGLU MLP (Llama, Mistral, Qwen2).
    Dense { intermediate_size: usize },
}

impl Ffn {
    pub fn intermediate_size(&self) -> usize {
        match self {
            Ffn::Moe(m) => m.intermediate_size,
            Ffn::Dense { intermediate_size } => *intermediate_size,
        }
    }

    /// `(experts per layer, experts used per token)`; a dense MLP counts as one of one.
    pub fn experts(&self) -> (usize, usize) {
        match self {
            Ffn::Moe(m) => (m.num_experts, m.top_k),
            Ffn::Dense { .. } => (1, 1),
        }
    }
}

/// A validated model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `model_type` as written in config.json.
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Leading dims of each softmax head that RoPE rotates (NeoX rotate-half pairing).
    pub rotary_dim: usize,
    pub rope_theta: f64,
    pub rms_norm_eps: f32,
    /// Block size of the original blocked lightning prefill (informational: the math does not
    /// depend on it; our kernels take their own).
    pub block_size: usize,
    pub max_position_embeddings: usize,
    pub norm: NormPlacement,
    pub slopes: SlopeSchedule,
    pub ffn: Ffn,
    /// Biases on the q, k and v projections (Qwen2).
    pub attention_bias: bool,
    /// Softmax layers attend only to this many past positions (Mistral v0.1); inputs beyond it
    /// are rejected rather than computed wrongly.
    pub sliding_window: Option<usize>,
    pub layers: Vec<LayerConfig>,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// Epsilon of the RMSNorm over all heads of a lightning layer (fixed in MiniMax).
pub const LIGHTNING_NORM_EPS: f32 = 1e-6;

/// Upper bounds on a config's sizes, far above any released model (MiniMax-Text-01: 80
/// layers, hidden 6144, 64 heads of 128, 32 experts of 9216, 200064 tokens). A config.json is
/// untrusted input: these keep every count and product a load derives from it (layer lists,
/// slope tables, parameter and activation byte counts in u64) finite and cheap, so that a
/// hostile file fails here, with its field named, rather than as an overflow or a huge
/// allocation later (as llama.cpp bounds `n_layer`, `n_head` and `n_expert`).
pub const MAX_LAYERS: usize = 1024;
pub const MAX_HIDDEN: usize = 1 << 16;
pub const MAX_INTERMEDIATE: usize = 1 << 18;
pub const MAX_HEADS: usize = 1024;
pub const MAX_HEAD_DIM: usize = 1024;
pub const MAX_EXPERTS: usize = 1024;
pub const MAX_VOCAB: usize = 1 << 22;

impl ModelConfig {
    /// Parses and validates a `config.json` text.
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_str(text)?;
        raw.validate()
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Per-head decay rates `s_h` of lightning layer `layer` (global index): the state decays by
    /// `exp(-s_h)` per token.
    pub fn lightning_rates(&self, layer: usize) -> Vec<f32> {
        let h = self.num_heads;
        let l = layer as f64;
        let n = self.num_layers() as f64;
        match self.slopes {
            SlopeSchedule::HuggingFace => {
                let base = 1.0 / 2f64.powf(8.0 / h as f64);
                let factor = 1.0 - l / (n - 1.0 + 1e-5) + 1e-5;
                (0..h)
                    .map(|i| (base.powi(i as i32 + 1) as f32) * factor as f32)
                    .collect()
            }
            SlopeSchedule::Original => {
                let factor = if n > 1.0 { 1.0 - l / (n - 1.0) + 1e-5 } else { 1.0 + 1e-5 };
                alibi_slopes(h)
                    .into_iter()
                    .map(|s| (s as f32) * factor as f32)
                    .collect()
            }
        }
    }

    /// Number of parameters, split into (total, active per token).
    pub fn parameter_counts(&self) -> (u64, u64) {
        let c = self.hidden_size as u64;
        let hd = (self.num_heads * self.head_dim) as u64;
        let kvd = (self.num_kv_heads * self.head_dim) as u64;
        let f = self.ffn.intermediate_size() as u64;
        let (e, k) = self.ffn.experts();
        let (e, k) = (e as u64, k as u64);
        let vocab = self.vocab_size as u64;
        let mut total = vocab * c + c; // embeddings + final norm
        if !self.tie_word_embeddings {
            total += vocab * c;
        }
        let mut active = total;
        for layer in &self.layers {
            let attn = match layer.kind {
                LayerKind::Lightning => c * 3 * hd + c * hd + hd * c + hd,
                LayerKind::Softmax => c * hd + 2 * c * kvd + hd * c,
            };
            let router = if matches!(self.ffn, Ffn::Moe(_)) { e * c } else { 0 };
            let common = attn + router + 2 * c;
            total += common + e * 3 * c * f;
            active += common + k * 3 * c * f;
        }
        (total, active)
    }

    /// `(all, largest)`: bytes of f32 activations that one prompt token holds at once in the
    /// largest step of a layer, and in the largest single tensor of a prefill. The feed-forward
    /// block gathers each token's top-k inputs and holds their gate/up and down outputs; the
    /// attention block holds q, k, v, the gate and the output; the residual stream and the
    /// norms a few rows of `hidden`; the logits a row of `vocab` when every position's are
    /// asked for.
    pub fn prefill_bytes_per_token(&self) -> (u64, u64) {
        let c = self.hidden_size as u64;
        let hd = (self.num_heads * self.head_dim) as u64;
        let f = self.ffn.intermediate_size() as u64;
        let k = self.ffn.experts().1 as u64;
        let vocab = self.vocab_size as u64;
        let ffn = k * (2 * f + 2 * c);
        let attention = 4 * hd + 2 * (self.num_kv_heads * self.head_dim) as u64;
        let all = ffn.max(attention) + 8 * c;
        let largest = (k * 2 * f).max(3 * hd).max(vocab);
        (4 * all, 4 * largest)
    }
}

/// ALiBi slopes as in the original MiniMax code (and the ALiBi paper): geometric for a power
/// of two, otherwise the closest power of two plus every other slope of the next one.
fn alibi_slopes(n: usize) -> Vec<f64> {
    fn power_of_2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    }
    if n.is_power_of_two() {
        return power_of_2(n);
    }
    let closest = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let mut slopes = power_of_2(closest);
    slopes.extend(
        alibi_slopes(2 * closest)
            .into_iter()
            .step_by(2)
            .take(n - closest),
    );
    slopes
}

/// The fields of `config.json` we read, all optional so that every dialect parses.
#[derive(Debug, Deserialize, Default)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    num_local_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    partial_rotary_factor: Option<f64>,
    rotary_dim: Option<usize>,
    sliding_window: Option<Value>,
    shared_intermediate_size: Option<Value>,
    block_size: Option<usize>,
    layer_types: Option<Vec<String>>,
    attn_type_list: Option<Vec<u8>>,
    postnorm: Option<bool>,
    full_attn_alpha_factor: Option<f64>,
    full_attn_beta_factor: Option<f64>,
    linear_attn_alpha_factor: Option<f64>,
    linear_attn_beta_factor: Option<f64>,
    mlp_alpha_factor: Option<f64>,
    mlp_beta_factor: Option<f64>,
    layernorm_full_attention_alpha: Option<f64>,
    layernorm_full_attention_beta: Option<f64>,
    layernorm_linear_attention_alpha: Option<f64>,
    layernorm_linear_attention_beta: Option<f64>,
    layernorm_mlp_alpha: Option<f64>,
    layernorm_mlp_beta: Option<f64>,
    attention_bias: Option<bool>,
    use_sliding_window: Option<bool>,
}

/// Which config dialect a file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    HuggingFace,
    RemoteCode,
    /// Llama, Mistral, Mixtral, Qwen2: softmax only, pre-norm.
    Llama,
}

fn token_ids(value: &Option<Value>) -> Result<Vec<u32>, ConfigError> {
    // A token id past u32 would otherwise wrap to some other token.
    let id = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| ConfigError::Invalid(format!("bad token id {v}")))
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v @ Value::Number(_)) => Ok(vec![id(v)?]),
        Some(Value::Array(items)) => items.iter().map(id).collect(),
        Some(other) => Err(ConfigError::Invalid(format!("bad token id {other}"))),
    }
}

/// `value` of the field `name`, checked against `max`.
fn at_most(name: &str, value: usize, max: usize) -> Result<usize, ConfigError> {
    if value > max {
        return Err(ConfigError::Invalid(format!("{name} {value} is more than this runtime supports ({max})")));
    }
    Ok(value)
}

/// A JSON value that is absent, null, zero or false.
fn is_unset(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

impl RawConfig {
    fn dialect(&self) -> Result<Dialect, ConfigError> {
        let remote = self
            .architectures
            .iter()
            .any(|a| a == "MiniMaxText01ForCausalLM" || a == "MiniMaxM1ForCausalLM")
            || matches!(
                self.model_type.as_deref(),
                Some("minimax_text_01" | "minimax_m1")
            );
        if remote {
            return Ok(Dialect::RemoteCode);
        }
        match self.model_type.as_deref() {
            Some("minimax") => Ok(Dialect::HuggingFace),
            Some("llama" | "mistral" | "mixtral" | "qwen2") => Ok(Dialect::Llama),
            Some(other) => Err(ConfigError::Unsupported(format!(
                "model_type `{other}` (supported: minimax, minimax_text_01, minimax_m1, llama, mistral, mixtral, qwen2)"
            ))),
            None => Err(ConfigError::Missing("model_type")),
        }
    }

    fn validate(self) -> Result<ModelConfig, ConfigError> {
        let dialect = self.dialect()?;
        let hidden_size = self.hidden_size.ok_or(ConfigError::Missing("hidden_size"))?;
        let hidden_size = at_most("hidden_size", hidden_size, MAX_HIDDEN)?;
        let vocab_size = self.vocab_size.ok_or(ConfigError::Missing("vocab_size"))?;
        let vocab_size = at_most("vocab_size", vocab_size, MAX_VOCAB)?;
        let num_layers = self
            .num_hidden_layers
            .ok_or(ConfigError::Missing("num_hidden_layers"))?;
        let num_layers = at_most("num_hidden_layers", num_layers, MAX_LAYERS)?;
        let num_heads = self
            .num_attention_heads
            .ok_or(ConfigError::Missing("num_attention_heads"))?;
        let num_heads = at_most("num_attention_heads", num_heads, MAX_HEADS)?;
        let num_kv_heads = self.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(ConfigError::Invalid(format!(
                "num_attention_heads ({num_heads}) must be a positive multiple of num_key_value_heads ({num_kv_heads})"
            )));
        }
        if hidden_size == 0 || vocab_size == 0 || num_layers == 0 {
            return Err(ConfigError::Invalid(
                "hidden_size, vocab_size and num_hidden_layers must be positive".into(),
            ));
        }
        let head_dim = at_most("head_dim", self.head_dim.unwrap_or(hidden_size / num_heads), MAX_HEAD_DIM)?;
        if head_dim == 0 {
            return Err(ConfigError::Invalid("head_dim must be positive".into()));
        }
        if let Some(act) = &self.hidden_act
            && act != "silu"
        {
            return Err(ConfigError::Unsupported(format!("hidden_act `{act}` (only silu)")));
        }
        // Qwen2 writes a window but disables it with `use_sliding_window: false`.
        let sliding_window = match (&self.sliding_window, self.use_sliding_window) {
            (_, Some(false)) => None,
            (w, _) if is_unset(w) => None,
            (Some(Value::Number(n)), _) => n.as_u64().map(|n| n as usize),
            (Some(other), _) => return Err(ConfigError::Invalid(format!("sliding_window {other}"))),
            (None, _) => None,
        };
        if !is_unset(&self.shared_intermediate_size) {
            return Err(ConfigError::Unsupported("shared experts (shared_intermediate_size > 0)".into()));
        }

        let (rope_theta, rotary_dim) = self.rope(dialect, head_dim)?;
        let kinds = self.layer_kinds(dialect, num_layers)?;
        let layers = self.residual_factors(dialect, &kinds);

        let intermediate_size = self
            .intermediate_size
            .ok_or(ConfigError::Missing("intermediate_size"))?;
        let intermediate_size = at_most("intermediate_size", intermediate_size, MAX_INTERMEDIATE)?;
        let ffn = match (dialect, self.num_local_experts) {
            (Dialect::Llama, None) => Ffn::Dense { intermediate_size },
            (_, None) => return Err(ConfigError::Missing("num_local_experts")),
            (_, Some(num_experts)) => {
                let num_experts = at_most("num_local_experts", num_experts, MAX_EXPERTS)?;
                let top_k = self.num_experts_per_tok.unwrap_or(2);
                if num_experts == 0 || top_k == 0 || top_k > num_experts {
                    return Err(ConfigError::Invalid(format!(
                        "num_experts_per_tok ({top_k}) must be in 1..={num_experts}"
                    )));
                }
                Ffn::Moe(MoeConfig {
                    num_experts,
                    top_k,
                    intermediate_size,
                })
            }
        };

        let norm = match (dialect, self.postnorm) {
            (Dialect::HuggingFace, _) => NormPlacement::Post,
            (Dialect::RemoteCode, Some(false)) | (Dialect::Llama, _) => NormPlacement::Pre,
            (Dialect::RemoteCode, _) => NormPlacement::Post,
        };
        let qwen2 = self.model_type.as_deref() == Some("qwen2");

        Ok(ModelConfig {
            model_type: self.model_type.clone().unwrap_or_default(),
            vocab_size,
            hidden_size,
            num_heads,
            num_kv_heads,
            head_dim,
            rotary_dim,
            rope_theta,
            rms_norm_eps: self.rms_norm_eps.unwrap_or(1e-5) as f32,
            block_size: self.block_size.unwrap_or(256),
            max_position_embeddings: self.max_position_embeddings.unwrap_or(4096 * 32),
            norm,
            slopes: match dialect {
                Dialect::RemoteCode => SlopeSchedule::Original,
                Dialect::HuggingFace | Dialect::Llama => SlopeSchedule::HuggingFace,
            },
            ffn,
            attention_bias: self.attention_bias.unwrap_or(qwen2),
            sliding_window,
            layers,
            tie_word_embeddings: self.tie_word_embeddings.unwrap_or(false),
            bos_token_id: token_ids(&self.bos_token_id)?.first().copied(),
            eos_token_ids: token_ids(&self.eos_token_id)?,
        })
    }

    /// RoPE base and rotated width. HF keeps them in `rope_parameters` (transformers 5) or at the
    /// top level (4.x); the original code has `rotary_dim`.
    fn rope(&self, dialect: Dialect, head_dim: usize) -> Result<(f64, usize), ConfigError> {
        let params = self.rope_parameters.as_ref().filter(|v| !v.is_null());
        if let Some(p) = params
            && let Some(kind) = p.get("rope_type").and_then(Value::as_str)
            && kind != "default"
        {
            return Err(ConfigError::Unsupported(format!("rope_type `{kind}`")));
        }
        if let Some(s) = self.rope_scaling.as_ref().filter(|v| !v.is_null()) {
            let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(Value::as_str);
            if kind != Some("default") {
                return Err(ConfigError::Unsupported(format!("rope_scaling {s}")));
            }
        }
        let theta = params
            .and_then(|p| p.get("rope_theta"))
            .and_then(Value::as_f64)
            .or(self.rope_theta)
            .unwrap_or(match dialect {
                Dialect::HuggingFace => 1e6,
                Dialect::RemoteCode | Dialect::Llama => 1e4,
            });
        let factor = params
            .and_then(|p| p.get("partial_rotary_factor"))
            .and_then(Value::as_f64)
            .or(self.partial_rotary_factor);
        let rotary_dim = match (self.rotary_dim, factor) {
            (Some(d), _) => d,
            (None, Some(f)) => (head_dim as f64 * f).round() as usize,
            (None, None) => head_dim,
        };
        if rotary_dim == 0 || rotary_dim > head_dim || rotary_dim % 2 != 0 {
            return Err(ConfigError::Invalid(format!(
                "rotary_dim {rotary_dim} must be even and in 2..={head_dim}"
            )));
        }
        Ok((theta, rotary_dim))
    }

    fn layer_kinds(&self, dialect: Dialect, num_layers: usize) -> Result<Vec<LayerKind>, ConfigError> {
        let kinds: Vec<LayerKind> = match dialect {
            Dialect::HuggingFace => {
                let types = self.layer_types.as_ref().ok_or(ConfigError::Missing("layer_types"))?;
                types
                    .iter()
                    .map(|t| match t.as_str() {
                        "linear_attention" => Ok(LayerKind::Lightning),
                        "full_attention" => Ok(LayerKind::Softmax),
                        other => Err(ConfigError::Unsupported(format!("layer type `{other}`"))),
                    })
                    .collect::<Result<_, _>>()?
            }
            Dialect::Llama => vec![LayerKind::Softmax; num_layers],
            Dialect::RemoteCode => {
                let types = self
                    .attn_type_list
                    .as_ref()
                    .ok_or(ConfigError::Missing("attn_type_list"))?;
                types
                    .iter()
                    .map(|t| match t {
                        0 => Ok(LayerKind::Lightning),
                        1 => Ok(LayerKind::Softmax),
                        other => Err(ConfigError::Unsupported(format!("attn_type {other}"))),
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        if kinds.len() != num_layers {
            return Err(ConfigError::Invalid(format!(
                "{} layer types for {num_layers} layers",
                kinds.len()
            )));
        }
        Ok(kinds)
    }

    fn residual_factors(&self, dialect: Dialect, kinds: &[LayerKind]) -> Vec<LayerConfig> {
        let f = |v: Option<f64>| v.unwrap_or(1.0) as f32;
        let (full, linear, mlp) = match dialect {
            Dialect::HuggingFace => (
                (f(self.full_attn_alpha_factor), f(self.full_attn_beta_factor)),
                (f(self.linear_attn_alpha_factor), f(self.linear_attn_beta_factor)),
                (f(self.mlp_alpha_factor), f(self.mlp_beta_factor)),
            ),
            Dialect::Llama => ((1.0, 1.0), (1.0, 1.0), (1.0, 1.0)),
            Dialect::RemoteCode => (
                (
                    f(self.layernorm_full_attention_alpha),
                    f(self.layernorm_full_attention_beta),
                ),
                (
                    f(self.layernorm_linear_attention_alpha),
                    f(self.layernorm_linear_attention_beta),
                ),
                (f(self.layernorm_mlp_alpha), f(self.layernorm_mlp_beta)),
            ),
        };
        kinds
            .iter()
            .map(|&kind| {
                let (attn_alpha, attn_beta) = match kind {
                    LayerKind::Lightning => linear,
                    LayerKind::Softmax => full,
                };
                LayerConfig {
                    kind,
                    attn_alpha,
                    attn_beta,
                    mlp_alpha: mlp.0,
                    mlp_beta: mlp.1,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
