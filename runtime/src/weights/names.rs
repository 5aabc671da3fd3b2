//! The one table of checkpoint tensor names.
//!
//! MiniMax checkpoints come in two expert layouts:
//! - per expert: `…block_sparse_moe.experts.{e}.w1/w2/w3.weight` (original remote code and
//!   transformers 4.x), with w1 the gate, w3 the up and w2 the down projection;
//! - fused: `…mlp.experts.gate_up_proj` `[E, 2F, C]` (gate rows first, then up) and
//!   `…mlp.experts.down_proj` `[E, C, F]` (transformers 5).
//!
//! Llama-family dense MLPs are `…mlp.gate_proj/up_proj/down_proj.weight`.
//!
//! The saved lightning decay buffers (`slope_rate`, `query_decay`, `key_decay`,
//! `diagonal_decay`) are never read: the rates are recomputed from the config.

/// Name builder for one checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names;

/// The prefixes under which a layer's MoE block may be stored.
pub const MOE_PREFIXES: [&str; 2] = ["block_sparse_moe", "mlp"];

impl Names {
    pub fn embed(&self) -> String {
        "model.embed_tokens.weight".into()
    }
    pub fn final_norm(&self) -> String {
        "model.norm.weight".into()
    }
    pub fn lm_head(&self) -> String {
        "lm_head.weight".into()
    }
    fn layer(&self, i: usize, rest: &str) -> String {
        format!("model.layers.{i}.{rest}")
    }
    pub fn input_norm(&self, i: usize) -> String {
        self.layer(i, "input_layernorm.weight")
    }
    pub fn post_attention_norm(&self, i: usize) -> String {
        self.layer(i, "post_attention_layernorm.weight")
    }
    /// `self_attn.{part}.weight`: qkv_proj, output_gate, out_proj, norm (lightning) or
    /// q_proj, k_proj, v_proj, o_proj (softmax).
    pub fn attn(&self, i: usize, part: &str) -> String {
        self.layer(i, &format!("self_attn.{part}.weight"))
    }
    /// `self_attn.{part}.bias` (Qwen2's q, k and v biases).
    pub fn attn_bias(&self, i: usize, part: &str) -> String {
        self.layer(i, &format!("self_attn.{part}.bias"))
    }
    /// A dense MLP's `gate_proj`, `up_proj` or `down_proj` (Llama family).
    pub fn mlp(&self, i: usize, part: &str) -> String {
        self.layer(i, &format!("mlp.{part}.weight"))
    }
    pub fn router(&self, i: usize, prefix: &str) -> String {
        self.layer(i, &format!("{prefix}.gate.weight"))
    }
    /// Per-expert projection `w` (w1, w2 or w3).
    pub fn expert(&self, i: usize, prefix: &str, e: usize, w: &str) -> String {
        self.layer(i, &format!("{prefix}.experts.{e}.{w}.weight"))
    }
    /// Fused stacked experts: `gate_up_proj` or `down_proj`.
    pub fn fused_experts(&self, i: usize, prefix: &str, part: &str) -> String {
        self.layer(i, &format!("{prefix}.experts.{part}"))
    }
}
