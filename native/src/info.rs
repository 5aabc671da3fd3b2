//! `minimax info`: layout, sizes and the adapter, without loading the weights.

use minimax_runtime::config::{Ffn, LayerKind, ModelConfig};
use minimax_runtime::device;

use crate::common::{ModelArgs, Result, bytes};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn main(args: Args) -> Result<()> {
    let files = args.model.files()?;
    let config = ModelConfig::from_json(&files.config_json)?;
    let stored = files.weights.stored_bytes();

    let layout: String = config
        .layers
        .iter()
        .map(|l| if l.kind == LayerKind::Lightning { 'L' } else { 'S' })
        .collect();
    let lightning = config.layers.iter().filter(|l| l.kind == LayerKind::Lightning).count();
    let (total, active) = config.parameter_counts();
    println!("model type        {}", config.model_type);
    println!("layers            {} ({lightning} lightning, {} softmax): {layout}", config.num_layers(), config.num_layers() - lightning);
    println!("hidden            {}, {} heads x {} (KV heads {}), RoPE on {} dims, theta {}", config.hidden_size, config.num_heads, config.head_dim, config.num_kv_heads, config.rotary_dim, config.rope_theta);
    println!("residuals         {:?}-norm", config.norm);
    match config.ffn {
        Ffn::Moe(m) => println!("experts           {} per layer, top-{}, FFN {}", m.num_experts, m.top_k, m.intermediate_size),
        Ffn::Dense { intermediate_size } => println!("ffn               dense SwiGLU, {intermediate_size}"),
    }
    println!("vocabulary        {}", config.vocab_size);
    println!("parameters        {} total, {} active per token", count(total), count(active));
    println!("stored weights    {}", bytes(stored));
    println!("device memory     {} (f32 matrices), {} (f16 matrices)", bytes(total * 4), bytes(total * 2));
    let state = lightning as u64 * (config.num_heads * config.head_dim * config.head_dim * 4) as u64;
    let kv_per_token = (config.num_layers() - lightning) as u64 * (2 * config.num_kv_heads * config.head_dim * 4) as u64;
    println!("sequence state    {} lightning state + {} KV cache per token", bytes(state), bytes(kv_per_token));
    if let Some(note) = files.quantizes_at_load(args.model.dtype).and_then(|q| args.model.convert_hint(q, 0)) {
        println!("load              {note}");
    }

    let selected = device::select(args.model.backend)?;
    if let Some(notice) = &selected.notice {
        println!("note              {notice}");
    }
    println!("device            {}", selected.describe());
    if let Some(a) = &selected.adapter {
        println!("  driver          {}", a.driver);
        println!("  max buffer      {}", bytes(a.max_buffer_size));
        println!("  max binding     {}", bytes(a.max_storage_buffer_binding_size));
        println!("  workgroup mem   {}", bytes(a.max_compute_workgroup_storage_size as u64));
        println!("  invocations     {} per workgroup", a.max_compute_invocations_per_workgroup);
        println!("  storage buffers {} per stage", a.max_storage_buffers_per_shader_stage);
        println!("  shader-f16      {}", a.shader_f16);
        println!("  subgroups       {}", a.subgroups);
        println!("  coop matrices   {} (f16 16×16×16 into f32, prefill matmuls)", a.cooperative_f16);
    }
    Ok(())
}

/// 1234567 -> "1.23 M".
fn count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.2} B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2} M", n as f64 / 1e6),
        n => format!("{:.1} K", n as f64 / 1e3),
    }
}
