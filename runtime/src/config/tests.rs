use super::*;

fn hf() -> serde_json::Value {
    serde_json::json!({
        "model_type": "minimax", "vocab_size": 100, "hidden_size": 32,
        "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "num_local_experts": 4,
        "num_experts_per_tok": 2, "layer_types": ["linear_attention", "full_attention"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        "linear_attn_alpha_factor": 2.0, "mlp_beta_factor": 0.5
    })
}

#[test]
fn hf_dialect() {
    let c = ModelConfig::from_json(&hf().to_string()).unwrap();
    assert_eq!(c.layers[0].kind, LayerKind::Lightning);
    assert_eq!(c.layers[1].kind, LayerKind::Softmax);
    assert_eq!(c.layers[0].attn_alpha, 2.0);
    assert_eq!(c.layers[1].attn_alpha, 1.0);
    assert_eq!(c.layers[1].mlp_beta, 0.5);
    assert_eq!(c.rope_theta, 10000.0);
    assert_eq!(c.rotary_dim, 8);
    assert_eq!(c.norm, NormPlacement::Post);
}

#[test]
fn remote_code_dialect() {
    let j = serde_json::json!({
        "architectures": ["MiniMaxText01ForCausalLM"], "model_type": "minimax_text_01",
        "vocab_size": 100, "hidden_size": 32, "intermediate_size": 16,
        "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
        "head_dim": 8, "rotary_dim": 4, "num_local_experts": 4, "attn_type_list": [0, 0, 1],
        "layernorm_full_attention_alpha": 3.5, "postnorm": true, "rope_theta": 1e7,
        "shared_intermediate_size": 0
    });
    let c = ModelConfig::from_json(&j.to_string()).unwrap();
    assert_eq!(c.rotary_dim, 4);
    assert_eq!(c.layers[2].kind, LayerKind::Softmax);
    assert_eq!(c.layers[2].attn_alpha, 3.5);
    assert_eq!(c.slopes, SlopeSchedule::Original);
}

#[test]
fn unsupported_inputs_are_named() {
    let mut j = hf();
    j["model_type"] = "gpt2".into();
    let e = ModelConfig::from_json(&j.to_string()).unwrap_err();
    assert!(e.to_string().contains("gpt2"), "{e}");

    let mut j = hf();
    j["layer_types"] = serde_json::json!(["linear_attention"]);
    assert!(ModelConfig::from_json(&j.to_string()).is_err());

    let mut j = hf();
    j["hidden_act"] = "gelu".into();
    assert!(ModelConfig::from_json(&j.to_string()).unwrap_err().to_string().contains("gelu"));
}

/// Sizes a hostile config.json may claim: each is refused by name before a load derives
/// counts, tables or byte sizes from it (a fuzzed GGUF's 10^9 heads once spent minutes on
/// slope tables; see FUZZING.md).
#[test]
fn sizes_are_bounded() {
    for (key, value) in [
        ("num_hidden_layers", 1u64 << 20),
        ("num_attention_heads", 1 << 30),
        ("hidden_size", 1 << 40),
        ("head_dim", 1 << 20),
        ("vocab_size", 1 << 40),
        ("intermediate_size", 1 << 30),
        ("num_local_experts", 1 << 20),
    ] {
        let mut j = hf();
        j[key] = value.into();
        let e = ModelConfig::from_json(&j.to_string()).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("more than this runtime supports"), "{key}: {e}");
    }
    let mut j = hf();
    j["eos_token_id"] = serde_json::json!([2, 1u64 << 32]);
    assert!(ModelConfig::from_json(&j.to_string()).unwrap_err().to_string().contains("bad token id 4294967296"));
    // At the bounds, every derived number is finite.
    let mut j = hf();
    j["num_hidden_layers"] = MAX_LAYERS.into();
    j["layer_types"] = vec!["linear_attention"; MAX_LAYERS].into();
    for (key, value) in [("hidden_size", MAX_HIDDEN), ("vocab_size", MAX_VOCAB), ("intermediate_size", MAX_INTERMEDIATE), ("num_local_experts", MAX_EXPERTS)] {
        j[key] = value.into();
    }
    let c = ModelConfig::from_json(&j.to_string()).unwrap();
    let (total, active) = c.parameter_counts();
    assert!(total > active && active > 0);
}

#[test]
fn llama_family() {
    let llama = serde_json::json!({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rope_theta": 100000.0, "tie_word_embeddings": true
    });
    let c = ModelConfig::from_json(&llama.to_string()).unwrap();
    assert!(c.layers.iter().all(|l| l.kind == LayerKind::Softmax && l.attn_alpha == 1.0));
    assert_eq!(c.norm, NormPlacement::Pre);
    assert_eq!(c.ffn, Ffn::Dense { intermediate_size: 64 });
    assert!(c.tie_word_embeddings && !c.attention_bias);
    assert_eq!((c.head_dim, c.rotary_dim), (8, 8));

    let mut mixtral = llama.clone();
    mixtral["model_type"] = "mixtral".into();
    mixtral["num_local_experts"] = 4.into();
    let c = ModelConfig::from_json(&mixtral.to_string()).unwrap();
    assert_eq!(c.ffn.experts(), (4, 2));

    let mut qwen = llama.clone();
    qwen["model_type"] = "qwen2".into();
    qwen["sliding_window"] = 4096.into();
    qwen["use_sliding_window"] = false.into();
    let c = ModelConfig::from_json(&qwen.to_string()).unwrap();
    assert!(c.attention_bias && c.sliding_window.is_none());

    let mut mistral = llama;
    mistral["model_type"] = "mistral".into();
    mistral["sliding_window"] = 4096.into();
    assert_eq!(ModelConfig::from_json(&mistral.to_string()).unwrap().sliding_window, Some(4096));
}

#[test]
fn slopes_match_both_formulas() {
    // For a power of two the ALiBi slopes equal transformers' `2^(-8(h+1)/H)`.
    assert_eq!(alibi_slopes(8).len(), 8);
    for (h, s) in alibi_slopes(8).iter().enumerate() {
        assert!((s - 2f64.powf(-8.0 * (h as f64 + 1.0) / 8.0)).abs() < 1e-12);
    }
    // Non-power of two: 4 geometric slopes of 4 heads, then every other one of 8.
    let s6 = alibi_slopes(6);
    assert!((s6[4] - alibi_slopes(8)[0]).abs() < 1e-12);
    assert!((s6[5] - alibi_slopes(8)[2]).abs() < 1e-12);

    let c = ModelConfig::from_json(&hf().to_string()).unwrap();
    let r0 = c.lightning_rates(0);
    assert!((r0[0] - 2f32.powf(-2.0) * (1.0 + 1e-5)).abs() < 1e-7);
    let r1 = c.lightning_rates(1);
    assert!(r1[0] < 1e-4, "the last layer barely decays: {r1:?}");
}
