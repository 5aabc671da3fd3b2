//! `minimax bench`: prefill tokens/s at several prompt lengths and decode tokens/s, with the
//! bandwidth decode achieves (bytes of active weights per token ÷ step time).

use std::time::Instant;

use clap::ValueEnum;
use minimax_runtime::config::{LayerKind, ModelConfig};
use minimax_runtime::device;
use minimax_runtime::generate::{greedy_decode, read_logits};
use minimax_runtime::model::Logits;
use minimax_runtime::weights::WeightSource;
use minimax_runtime::{Engine, ModelFiles};

use crate::common::{ModelArgs, Result, bytes};

/// Built-in synthetic models with random weights, generated on the device.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Synthetic {
    /// MiniMax-Text-01 per-layer dimensions: hidden 6144, 64 heads x 128, 8 KV heads,
    /// 32 experts top-2, FFN 9216, vocabulary 200064.
    Text01,
    /// A small model of the same shape family, for quick runs.
    Small,
}

/// Attention kinds of a synthetic model's layers.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    /// MiniMax-01's 7:1: every 8th layer softmax (and the last one if fewer than 8).
    Hybrid,
    /// Every layer softmax attention: the Transformer the lightning layers replace.
    Softmax,
    /// Every layer lightning attention.
    Lightning,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Benchmark a synthetic random-weight model instead of `--model`.
    #[arg(long, value_enum, conflicts_with = "model")]
    pub synthetic: Option<Synthetic>,
    /// Layers of the synthetic model (see `--layout`).
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Attention kinds of the synthetic model's layers.
    #[arg(long, value_enum, default_value_t = Layout::Hybrid, requires = "synthetic")]
    pub layout: Layout,
    /// Prompt lengths to time prefill at.
    #[arg(long, default_value = "128,512,2048", value_delimiter = ',')]
    pub prompt_lengths: Vec<usize>,
    /// Decode steps to time (after a prefill of `--context` tokens).
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Context length before the timed decode steps.
    #[arg(long, default_value_t = 512)]
    pub context: usize,
    /// Timed repetitions of each prefill (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also time the building blocks of a decode step in isolation: a host read-back, and
    /// one-row matmuls with the model's projection shapes.
    #[arg(long)]
    pub components: bool,
    /// Stream the synthetic model's experts in this format from host memory through the
    /// expert cache (budget: `--expert-cache-mb`), instead of generating them resident.
    #[arg(long, value_enum, requires = "synthetic")]
    pub experts: Option<crate::bench_experts::ExpertQuant>,
    /// Measure the adapter's read bandwidth with our own WGSL streaming kernel (1 GiB, or the
    /// binding limit) and report decode as a fraction of it.
    #[arg(long)]
    pub roofline: bool,
    /// Profile decode steps: kernel launches and device time per kernel (timestamp queries),
    /// and the host time to enqueue a step.
    #[arg(long)]
    pub profile: bool,
    /// Time the decode matmul kernel alone on the model's weight shapes in F16, Q8_0 and Q4_1,
    /// for every workgroup size and reduction.
    #[arg(long)]
    pub kernels: bool,
}

/// One timed building block.
struct Component {
    name: String,
    seconds: f64,
    bytes: u64,
}

/// Times, in isolation, what a decode step is made of: the host round trip that every MoE
/// layer and every sampled token pays, and `[1, in] x [in, out]` matmuls of the model's
/// weight shapes (the dense projections are plain Burn matmuls for now).
fn components(model: &minimax_runtime::model::Model) -> Result<Vec<Component>> {
    use burn::tensor::{Distribution, Tensor};
    let c = &model.config;
    let device = &model.device;
    // Burn matmuls of float matrices (the quantized kernels are timed by their own benchmark).
    let dtype = model.matrices.float;
    let reps = 20;
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let mut v = Vec::new();
        for _ in 0..reps {
            let start = Instant::now();
            f()?;
            v.push(start.elapsed().as_secs_f64());
        }
        Ok(median(v))
    };
    let read = |t: Tensor<2>| -> Result<()> {
        pollster::block_on(read_logits(t))?;
        Ok(())
    };
    let mut out = Vec::new();
    let tiny = Tensor::<2>::ones([1, 8], device);
    out.push(Component {
        name: "host read-back of 8 floats".into(),
        seconds: time(&mut || read(tiny.clone() + 1.0))?,
        bytes: 0,
    });
    let (h, f, hd) = (c.hidden_size, c.ffn.intermediate_size(), c.num_heads * c.head_dim);
    let shapes = [
        ("lightning qkv_proj", 3 * hd, h),
        ("expert gate_up (w1+w3)", 2 * f, h),
        ("expert down (w2)", h, f),
        ("lm_head block", c.vocab_size.min(1 << 16), h),
    ];
    for (name, rows, cols) in shapes {
        let w = Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 0.02), (device, dtype));
        let x = Tensor::<2>::random([1, cols], Distribution::Normal(0.0, 1.0), (device, dtype));
        let seconds = time(&mut || read(x.clone().matmul(w.clone().transpose()).narrow(1, 0, 8)))?;
        out.push(Component {
            name: format!("{name} [1, {cols}] x [{cols}, {rows}]"),
            seconds,
            bytes: (rows * cols * dtype.size()) as u64,
        });
    }
    Ok(out)
}

fn synthetic_config(kind: Synthetic, layers: usize, layout: Layout) -> String {
    let (vocab, hidden, heads, kv, dim, experts, ffn) = match kind {
        Synthetic::Text01 => (200064, 6144, 64, 8, 128, 32, 9216),
        Synthetic::Small => (32000, 512, 8, 2, 64, 8, 1024),
    };
    let softmax = |i: usize| match layout {
        Layout::Hybrid => i % 8 == 7 || (layers < 8 && i + 1 == layers),
        Layout::Softmax => true,
        Layout::Lightning => false,
    };
    let types: Vec<&str> = (0..layers).map(|i| if softmax(i) { "full_attention" } else { "linear_attention" }).collect();
    serde_json::json!({
        "model_type": "minimax", "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": ffn, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": dim, "num_local_experts": experts,
        "num_experts_per_tok": 2, "layer_types": types, "block_size": 256,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.5},
        "max_position_embeddings": 1 << 20, "rms_norm_eps": 1e-5,
        "linear_attn_alpha_factor": 3.5565588, "full_attn_alpha_factor": 3.5565588, "mlp_alpha_factor": 3.5565588
    })
    .to_string()
}

/// Bytes of weights one decoded token reads: every non-expert matrix, top-k experts per layer,
/// the router (f32), one embedding row and the lm_head.
fn active_bytes(c: &ModelConfig, per_weight: f64) -> u64 {
    let (h, d) = (c.hidden_size as u64, c.head_dim as u64);
    let hd = c.num_heads as u64 * d;
    let kvd = c.num_kv_heads as u64 * d;
    let f = c.ffn.intermediate_size() as u64;
    let (experts, top_k) = c.ffn.experts();
    let router = if experts > 1 { experts as u64 * h } else { 0 };
    let mut matrices = h + c.vocab_size as u64 * h;
    let mut f32s = 0;
    for layer in &c.layers {
        matrices += match layer.kind {
            LayerKind::Lightning => 3 * h * hd + 2 * h * hd,
            LayerKind::Softmax => 2 * h * hd + 2 * h * kvd,
        };
        matrices += top_k as u64 * 3 * h * f;
        f32s += router;
    }
    (matrices as f64 * per_weight) as u64 + f32s * 4
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Deterministic pseudo-random prompt ids.
fn prompt(len: usize, vocab: usize, salt: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 7919 + salt * 104729 + 17) % (vocab - 3) + 3) as u32).collect()
}

pub fn main(args: Args) -> Result<()> {
    let load_start = Instant::now();
    let (files, name) = match args.synthetic {
        Some(kind) => {
            let config_json = synthetic_config(kind, args.layers, args.layout);
            let experts = match args.experts {
                Some(quant) => {
                    let c = ModelConfig::from_json(&config_json)?;
                    let (e, _) = c.ffn.experts();
                    Some(crate::bench_experts::source(quant, c.hidden_size, c.ffn.intermediate_size(), e)?)
                }
                None => None,
            };
            let files = ModelFiles {
                config_json,
                weights: WeightSource::Random { std: 0.02 },
                tokenizer_json: None,
                tokenizer_config_json: None,
                experts,
            };
            (files, format!("synthetic {kind:?} ({} layers, {:?})", args.layers, args.layout))
        }
        None => {
            let name = args.model.model.as_ref().map_or("embedded demo model".into(), |d| d.display().to_string());
            (args.model.files()?, name)
        }
    };
    let engine = Engine::new(files, device::select(args.model.backend)?, &args.model.options())?;
    if let Some(notice) = &engine.selected.notice {
        eprintln!("note: {notice}");
    }
    let model = &engine.model;
    let config = &model.config;
    let vocab = config.vocab_size;
    let per_weight = model.matrices.bytes_per_weight();
    // Make sure the weights are on the device before timing anything.
    let mut warm = model.new_state();
    pollster::block_on(async { read_logits(model.forward(&prompt(8, vocab, 0), &mut warm, Logits::Last).await?).await })?;
    let load_secs = load_start.elapsed().as_secs_f64();

    let mut prefill_rows = Vec::new();
    for &len in &args.prompt_lengths {
        let mut times = Vec::new();
        for r in 0..args.repeats.max(1) {
            let tokens = prompt(len, vocab, r + 1);
            let mut state = model.new_state();
            let start = Instant::now();
            pollster::block_on(async { read_logits(model.forward(&tokens, &mut state, Logits::Last).await?).await })?;
            times.push(start.elapsed().as_secs_f64());
        }
        let t = median(times);
        prefill_rows.push((len, t, len as f64 / t));
    }

    let mut state = model.new_state();
    let context = prompt(args.context.max(1), vocab, 99);
    let logits = pollster::block_on(model.forward(&context, &mut state, Logits::Last))?;
    let stats_before = engine.expert_stats();
    let decode_start = Instant::now();
    // Greedy decoding as generation runs it (picked on the device, pipelined): the time
    // between tokens, after three untimed ones (the first waits for the prompt).
    const UNTIMED: usize = 3;
    let mut arrivals = Vec::new();
    pollster::block_on(greedy_decode(model, &mut state, logits, UNTIMED + args.decode_tokens.max(1), |_| {
        arrivals.push(Instant::now());
        true
    }))?;
    let decode_seconds = decode_start.elapsed().as_secs_f64();
    let step = median(arrivals[UNTIMED - 1..].windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect());
    let streamed = match (stats_before, engine.expert_stats()) {
        (Some((before, _)), Some((after, slots))) => Some((crate::bench_experts::delta(after, before), slots)),
        _ => None,
    };
    // Experts resident by construction (a checkpoint's or a synthetic model's, all loaded up
    // front) stream nothing: only a streaming cache's figures are worth printing.
    let all_resident = model.experts.as_ref().is_some_and(|c| c.lock().is_ok_and(|c| c.all_resident()));
    let streamed = streamed.filter(|_| args.experts.is_some() || !all_resident);
    let copy = if streamed.is_some() { crate::bench_experts::host_to_gpu(model, 8)? } else { None };
    let parts = if args.components { components(model)? } else { Vec::new() };
    let gpu = engine.selected.adapter.is_some();
    let roofline = match (args.roofline, &engine.selected.adapter) {
        (true, Some(a)) => Some(crate::bench_profile::roofline(model, (1u64 << 30).min(a.max_storage_buffer_binding_size))?),
        _ => None,
    };
    let profile = if args.profile { Some(crate::bench_profile::profile_decode(model, &mut state, args.decode_tokens.max(1))?) } else { None };
    let prefill_profile = match (args.profile, args.prompt_lengths.first()) {
        (true, Some(&len)) => Some((len, crate::bench_profile::profile_prefill(model, &prompt(len, vocab, 7))?)),
        _ => None,
    };
    let subgroups = engine.selected.adapter.as_ref().is_some_and(|a| a.subgroups);
    let kernel_rows = if args.kernels && gpu { crate::bench_profile::kernels(model, subgroups)? } else { Vec::new() };
    let mut active = active_bytes(config, per_weight);
    if let Some(cache) = &model.experts {
        // The experts are records, not matrices of the dense dtype.
        let record = cache.lock().map_err(|_| "expert cache lock")?.layout().bytes() as u64;
        let (_, top_k) = config.ffn.experts();
        let (h, f) = (config.hidden_size as u64, config.ffn.intermediate_size() as u64);
        active = active - config.layers.len() as u64 * top_k as u64 * ((3 * h * f) as f64 * per_weight) as u64
            + config.layers.len() as u64 * top_k as u64 * record;
    }
    let gbps = active as f64 / step / 1e9;
    let of_roofline = |bytes_per_s: f64| roofline.map(|r| 100.0 * bytes_per_s / r);

    if args.json {
        let out = serde_json::json!({
            "model": name, "device": engine.selected.describe(),
            "cooperative_matrices": engine.selected.adapter.as_ref().is_some_and(|a| a.cooperative_f16),
            "matrix_dtype": model.matrices.linear().name(), "load_seconds": load_secs,
            "prefill": prefill_rows.iter().map(|(len, t, tps)| serde_json::json!({"tokens": len, "seconds": t, "tokens_per_second": tps})).collect::<Vec<_>>(),
            "decode": {"context": args.context, "steps": args.decode_tokens, "seconds_per_token": step, "tokens_per_second": 1.0 / step,
                       "active_weight_bytes_per_token": active, "achieved_gb_per_s": gbps},
            "expert_cache": streamed.map(|(s, slots)| serde_json::json!({"slots": slots, "hits": s.hits, "misses": s.misses,
                "evictions": s.evictions, "hit_rate": s.hit_rate(), "bytes_streamed": s.bytes_streamed, "stall_seconds": s.stall_seconds,
                "streamed_gb_per_s": s.bytes_streamed as f64 / decode_seconds / 1e9, "prefetched": s.prefetched,
                "staged": s.staged, "prediction_accuracy": s.prediction_accuracy()})),
            "host_to_gpu_gb_per_s": copy.as_ref().map(|c| c.bytes as f64 / c.queue_write / 1e9),
            "host_to_gpu_staged_gb_per_s": copy.as_ref().and_then(|c| c.staged).zip(copy.as_ref()).map(|(t, c)| c.bytes as f64 / t / 1e9),
            "components": parts.iter().map(|p| serde_json::json!({"name": p.name, "seconds": p.seconds,
                "gb_per_s": p.bytes as f64 / p.seconds / 1e9})).collect::<Vec<_>>(),
            "roofline_gb_per_s": roofline.map(|r| r / 1e9),
            "decode_percent_of_roofline": of_roofline(active as f64 / step),
            "prefill_profile": prefill_profile.as_ref().map(|(len, (seconds, t))| serde_json::json!({
                "tokens": len, "seconds": seconds, "launches": t.launches(), "device_seconds": t.seconds(),
                "kernels": t.kernels.iter().map(|k| serde_json::json!({"name": k.name, "launches": k.launches,
                    "seconds": k.seconds})).collect::<Vec<_>>(),
            })),
            "profile": profile.as_ref().map(|p| serde_json::json!({
                "steps": p.steps, "step_seconds": p.step, "enqueue_seconds": p.enqueue,
                "launches_per_step": p.launches.launches() as f64 / p.steps as f64,
                "device_seconds_per_step": p.timed.seconds() / p.steps as f64,
                "host_timed_launches": p.timed.host_timed,
                "launch_host_seconds": p.launch.0, "launch_seconds": p.launch.1,
                "kernels": p.timed.kernels.iter().map(|k| serde_json::json!({"name": k.name,
                    "launches_per_step": k.launches as f64 / p.steps as f64,
                    "seconds_per_step": k.seconds.map(|s| s / p.steps as f64)})).collect::<Vec<_>>(),
            })),
            "kernels": kernel_rows.iter().map(|k| serde_json::json!({"name": k.name, "launch": k.launch,
                "seconds": k.seconds, "gb_per_s": k.bytes as f64 / k.seconds / 1e9,
                "percent_of_roofline": of_roofline(k.bytes as f64 / k.seconds)})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("model    {name}");
        let coop = engine.selected.adapter.as_ref().is_some_and(|a| a.cooperative_f16);
        let matmul = if coop { "prefill matmuls on cooperative f16 matrices" } else { "prefill matmuls on scalar tiles" };
        println!("device   {} ({matmul})", engine.selected.describe());
        println!("weights  {} matrices, load + warm-up {:.1} s", model.matrices.linear().name(), load_secs);
        println!();
        println!("| phase   | tokens | time (s) | tokens/s |");
        println!("|---------|-------:|---------:|---------:|");
        for (len, t, tps) in &prefill_rows {
            println!("| prefill | {len:>6} | {t:>8.3} | {tps:>8.1} |");
        }
        println!("| decode  | {:>6} | {:>8.4} | {:>8.2} |", 1, step, 1.0 / step);
        println!();
        println!(
            "decode reads {} of active weights per token: {gbps:.1} GB/s achieved (context {}, median of {} pipelined steps){}",
            bytes(active),
            args.context,
            args.decode_tokens,
            roofline
                .zip(of_roofline(active as f64 / step))
                .map(|(r, pct)| format!(", {pct:.1}% of the {:.0} GB/s roofline (stream_read, this run)", r / 1e9))
                .unwrap_or_default()
        );
        if let Some((len, (seconds, timed))) = &prefill_profile {
            crate::bench_profile::print_prefill_profile(*len, *seconds, timed);
        }
        if let Some(p) = &profile {
            crate::bench_profile::print_profile(p);
        }
        if !kernel_rows.is_empty() {
            println!();
            println!("| qgemv, 1 row (median of 5 x 40 calls) | launch | µs | GB/s | % roofline |");
            println!("|---|---|---:|---:|---:|");
            for k in &kernel_rows {
                let rate = k.bytes as f64 / k.seconds;
                let pct = of_roofline(rate).map(|p| format!("{p:.1}")).unwrap_or_else(|| "—".into());
                println!("| {} | {} | {:.1} | {:.0} | {pct} |", k.name, k.launch, k.seconds * 1e6, rate / 1e9);
            }
        }
        if let Some((s, slots)) = streamed {
            println!(
                "expert cache during decode: {slots} slots, {} hits / {} misses ({:.1}% hits), {} evictions, {} prefetched{}",
                s.hits,
                s.misses,
                100.0 * s.hit_rate(),
                s.evictions,
                s.prefetched,
                s.prediction_accuracy().map(|a| format!(", next-layer prediction {:.1}% right", 100.0 * a)).unwrap_or_default()
            );
            println!(
                "streamed {} in {decode_seconds:.2} s of decode: {:.2} GB/s; {:.3} s stalled on misses",
                bytes(s.bytes_streamed),
                s.bytes_streamed as f64 / decode_seconds / 1e9,
                s.stall_seconds
            );
        }
        if let Some(c) = copy {
            let rate = |t: f64| format!("{:.2} ms = {:.2} GB/s", t * 1e3, c.bytes as f64 / t / 1e9);
            println!("host→GPU copy of 8 expert records ({}): queue writes {}", bytes(c.bytes), rate(c.queue_write));
            if let Some(t) = c.staged {
                println!("host→GPU copy of 8 expert records ({}): staging ring {}", bytes(c.bytes), rate(t));
            }
        }
        if !parts.is_empty() {
            println!();
            println!("| component (median of 20, including one read-back) | ms | GB/s |");
            println!("|---|---:|---:|");
            for p in &parts {
                println!("| {} | {:.3} | {:.1} |", p.name, p.seconds * 1e3, p.bytes as f64 / p.seconds / 1e9);
            }
        }
    }
    Ok(())
}
