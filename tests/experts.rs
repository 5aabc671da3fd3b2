//! Experts streamed from a pack into a small cache: the same output as all resident, counted
//! by the cache's statistics, and quantized output close to the f32 model.
//!
//! The model is the embedded demo model (`models/minimax-demo`: 8 layers × 8 experts, hidden
//! 256, FFN 160), converted once per run into f16, q8 and q4 packs in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use minimax_runtime::device::{self, BackendChoice};
use minimax_runtime::experts::convert::{ConvertOptions, convert};
use minimax_runtime::model::Logits;
use minimax_runtime::profile::Profiler;
use minimax_runtime::weights::StoredDType;
use minimax_runtime::{Engine, MatrixDType, ModelFiles, RuntimeOptions};
use minimax_tests::{argmax_rows, backends, demo_dir, demo_prompt as prompt, greedy, max_abs, minimax_bin};

/// The demo model converted to `quant` (once per test process).
fn pack(quant: StoredDType) -> PathBuf {
    static PACKS: OnceLock<std::sync::Mutex<Vec<(StoredDType, PathBuf)>>> = OnceLock::new();
    let packs = PACKS.get_or_init(Default::default);
    let mut packs = packs.lock().unwrap();
    if let Some((_, p)) = packs.iter().find(|(q, _)| *q == quant) {
        return p.clone();
    }
    let out = std::env::temp_dir().join(format!("minimax-experts-{}-{}", std::process::id(), quant.name()));
    let _ = std::fs::remove_dir_all(&out);
    convert(&demo_dir(), &out, &ConvertOptions { quant, dense: None }, &mut |_| {}).expect("convert");
    packs.push((quant, out.clone()));
    out
}

fn load(dir: &Path, backend: BackendChoice, budget: Option<u64>) -> Engine {
    let options = RuntimeOptions {
        backend,
        matrix_dtype: MatrixDType::F32,
        max_binding_bytes: None,
        expert_cache_bytes: budget,
        no_expert_prefetch: false,
        ..Default::default()
    };
    let files = ModelFiles::read(dir).unwrap();
    Engine::new(files, device::select(backend).unwrap(), &options).unwrap()
}

/// Bytes of `slots` cache slots of a pack.
fn slots(dir: &Path, slots: u64) -> u64 {
    let pack = minimax_runtime::experts::pack::ExpertPack::open(dir).unwrap();
    slots * pack.layout().slot_bytes() as u64
}

#[test]
fn streaming_through_small_caches_matches_all_resident() {
    let dir = pack(StoredDType::Q4_1);
    for backend in backends() {
        let resident = load(&dir, backend, None);
        let (stats, count) = resident.expert_stats().unwrap();
        assert_eq!(count, 64, "{backend:?}: the default budget holds all 64 experts");
        assert_eq!(stats.misses, 0);

        let ids = prompt(&resident);
        let a = pollster::block_on(resident.logits(&ids, None)).unwrap();
        let ga = greedy(&resident, &ids, 24);
        // 3 slots for 64 experts thrash (every expert is read again and again); 32 keep some.
        for count in [3, 32] {
            let small = load(&dir, backend, Some(slots(&dir, count)));
            assert_eq!(small.expert_stats().unwrap().1, count as usize);
            // Prefill (grouped path) and decode (per-pair path on the GPU).
            let b = pollster::block_on(small.logits(&ids, None)).unwrap();
            assert_eq!(max_abs(&a, &b), 0.0, "{backend:?}, {count} slots: prefill logits differ");
            let gb = greedy(&small, &ids, 24);
            assert_eq!(ga, gb, "{backend:?}, {count} slots: greedy tokens differ");
            let (s, _) = small.expert_stats().unwrap();
            assert!(s.misses > 0 && s.evictions > 0, "{backend:?}, {count} slots: {s:?}");
            assert!(s.bytes_streamed >= s.misses * dir_record_bytes(&dir), "{backend:?}: {s:?}");
            if count == 32 {
                assert!(s.hits > 0, "{backend:?}, {count} slots: {s:?}");
            }
            // On a wgpu device every record goes through the staging ring (one GPU copy).
            let want = if backend == BackendChoice::Cpu { 0 } else { s.misses + s.prefetched };
            assert_eq!(s.staged, want, "{backend:?}, {count} slots: {s:?}");
            eprintln!("{backend:?}: {count} slots: {s:?}, hit rate {:.2}", s.hit_rate());
        }
        let (r, _) = resident.expert_stats().unwrap();
        assert_eq!((r.misses, r.evictions, r.bytes_streamed), (0, 0, 0), "{backend:?}: {r:?}");
    }
}

/// A checkpoint's experts (safetensors, not a pack) on a GPU are encoded at load into
/// resident pools, so decode routes on the device: no grouping of tokens by expert and no
/// read-back of expert ids, with the same tokens as the CPU backend.
#[test]
fn checkpoint_experts_decode_without_read_back() {
    if minimax_runtime::device::test_gpu_or_skip("resident checkpoint experts test").is_none() {
        return;
    }
    let gpu = load(&demo_dir(), BackendChoice::Gpu, None);
    let (stats, slots) = gpu.expert_stats().expect("a checkpoint's experts live in pools on a GPU");
    assert_eq!((slots, stats.misses), (64, 0), "all 8 × 8 experts resident: {stats:?}");
    let ids = prompt(&gpu);
    let mut state = gpu.new_state();
    pollster::block_on(gpu.model.forward(&ids, &mut state, Logits::Last)).unwrap();
    let profiler = Profiler::start(false);
    let logits = pollster::block_on(gpu.model.forward(&[ids[1]], &mut state, Logits::Last)).unwrap();
    let _ = logits.into_data();
    let profile = pollster::block_on(profiler.finish());
    let launches = |name: &str| profile.kernels.iter().find(|k| k.name == name).map_or(0, |k| k.launches);
    assert_eq!(launches("moe_gather") + launches("moe_scatter"), 0, "decode grouped tokens: {profile:?}");
    // Per MoE layer, gate_up for both experts and down with the combine, one pool each.
    assert!(launches("qgemv") >= 2 * 8, "{profile:?}");
    let cpu = load(&demo_dir(), BackendChoice::Cpu, None);
    assert_eq!(greedy(&gpu, &ids, 16), greedy(&cpu, &ids, 16), "greedy tokens, GPU pools against the CPU");
}

fn dir_record_bytes(dir: &Path) -> u64 {
    minimax_runtime::experts::pack::ExpertPack::open(dir).unwrap().layout().bytes() as u64
}

#[test]
fn prefetch_predictions_are_scored_on_the_gpu() {
    if minimax_runtime::device::test_gpu_or_skip("prefetch test").is_none() {
        return;
    }
    let dir = pack(StoredDType::Q8_0);
    // Half the experts: decode streams, predicts the next layer's experts and prefetches them.
    let engine = load(&dir, BackendChoice::Gpu, Some(slots(&dir, 32)));
    let ids = prompt(&engine);
    greedy(&engine, &ids, 16);
    let (s, _) = engine.expert_stats().unwrap();
    let accuracy = s.prediction_accuracy().expect("predictions were made");
    assert!(s.prefetched > 0, "{s:?}");
    // Chance is top_k / E = 25 %; the residual stream makes the next router's pick predictable.
    assert!(accuracy > 0.25, "prediction accuracy {accuracy:.2} is no better than chance: {s:?}");
    eprintln!("prefetch: {s:?}, accuracy {accuracy:.2}, hit rate {:.2}", s.hit_rate());
}

/// Max-abs logit error of each pack format against the f32 model, and top-1 agreement. The
/// bounds are the measured errors (see BENCHMARKS.md) with headroom.
#[test]
fn quantized_logits_stay_close_to_f32() {
    let f32_engine = load(&demo_dir(), BackendChoice::Cpu, None);
    let ids = prompt(&f32_engine);
    let reference = pollster::block_on(f32_engine.logits(&ids, None)).unwrap();
    let vocab = f32_engine.model.config.vocab_size;
    let top1 = argmax_rows(&reference, vocab);
    for (quant, bound, agree) in [
        (StoredDType::F16, 0.02, 1.0),
        (StoredDType::Q8_0, 0.15, 0.9),
        (StoredDType::Q4_1, 1.5, 0.75),
    ] {
        for backend in backends() {
            let engine = load(&pack(quant), backend, None);
            let logits = pollster::block_on(engine.logits(&ids, None)).unwrap();
            let e = max_abs(&logits, &reference);
            let same = argmax_rows(&logits, vocab).iter().zip(&top1).filter(|(a, b)| a == b).count() as f64 / top1.len() as f64;
            eprintln!("{} on {backend:?}: max-abs logit error {e:.4}, top-1 agreement {same:.2}", quant.name());
            assert!(e <= bound, "{}: {e} > {bound}", quant.name());
            assert!(same >= agree, "{}: top-1 agreement {same}", quant.name());
        }
    }
}

#[test]
fn run_prints_cache_statistics() {
    let dir = pack(StoredDType::Q4_1);
    let mb = (slots(&dir, 3) + 64) as f64 / (1 << 20) as f64;
    let out = Command::new(minimax_bin())
        .args(["run", "--backend", "cpu", "--stats", "--max-tokens", "8", "--prompt", "Once upon a time"])
        .arg("--model")
        .arg(&dir)
        .args(["--expert-cache-mb", &format!("{mb:.9}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("expert cache: 3 slots;") && err.contains("evictions"), "{err}");
}

/// The fixture `mixtral-moe` (3 layers × 8 experts, hidden 64, FFN 96) with every expert
/// matrix stored as Q8_0 blocks (`U8` tensors named in the header, as packs and GGUF files
/// hold blocks), in a temporary directory.
fn mixtral_with_q8_0_experts() -> PathBuf {
    use minimax_runtime::weights::{SafetensorsSet, TensorStore};
    let src = minimax_tests::fixture("mixtral-moe");
    let out = std::env::temp_dir().join(format!("minimax-q8-experts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(src.join(f), out.join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let set = SafetensorsSet::from_shards([("model.safetensors".to_string(), std::sync::Arc::new(bytes) as _)]).unwrap();
    let (mut header, mut metadata, mut data) = (serde_json::Map::new(), serde_json::Map::new(), Vec::new());
    for name in set.names() {
        let t = set.get(&name).unwrap().unwrap();
        let (dtype, shape, raw) = if name.contains(".experts.") {
            let q = minimax_runtime::weights::quantize::quantize(StoredDType::Q8_0, &t.to_f32());
            metadata.insert(format!("ggml:{name}"), "Q8_0".into());
            ("U8".to_string(), vec![t.shape[0], q.len() / t.shape[0]], q)
        } else {
            (t.dtype.name().to_string(), t.shape.clone(), t.bytes.to_vec())
        };
        header.insert(name, serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [data.len(), data.len() + raw.len()]}));
        data.extend(raw);
    }
    header.insert("__metadata__".into(), metadata.into());
    let mut text = serde_json::to_vec(&header).unwrap();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut file = (text.len() as u64).to_le_bytes().to_vec();
    file.extend(text);
    file.extend(data);
    std::fs::write(out.join("model.safetensors"), file).unwrap();
    out
}

#[test]
fn experts_stored_as_blocks_are_resident_as_stored() {
    // A checkpoint whose experts are Q8_0 blocks (a GGUF's usually are) decodes from GPU pools
    // of Q8_0 records made of those very blocks: no read-back at decode, and the CPU's tokens
    // (which dequantizes the same blocks) and logits.
    let dir = mixtral_with_q8_0_experts();
    let cpu = load(&dir, BackendChoice::Cpu, None);
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 320).collect();
    let want = pollster::block_on(cpu.logits(&ids, None)).unwrap();
    if minimax_runtime::device::test_gpu_or_skip("GPU half of the block-stored experts test").is_none() {
        return;
    }
    let gpu = load(&dir, BackendChoice::Gpu, None);
    let (stats, slots) = gpu.expert_stats().expect("block-stored experts live in pools on a GPU");
    assert_eq!((slots, stats.misses), (24, 0), "all 3 × 8 experts resident: {stats:?}");
    let cache = gpu.model.experts.as_ref().unwrap().lock().unwrap();
    assert_eq!(cache.layout().dtype, StoredDType::Q8_0, "records keep the stored blocks");
    drop(cache);
    let got = pollster::block_on(gpu.logits(&ids, None)).unwrap();
    let err = max_abs(&got, &want);
    assert!(err <= 1e-4, "GPU pools against the CPU: max-abs {err}");
    let mut state = gpu.new_state();
    pollster::block_on(gpu.model.forward(&ids, &mut state, Logits::Last)).unwrap();
    let profiler = Profiler::start(false);
    let _ = pollster::block_on(gpu.model.forward(&[ids[1]], &mut state, Logits::Last)).unwrap().into_data();
    let profile = pollster::block_on(profiler.finish());
    let launches = |name: &str| profile.kernels.iter().find(|k| k.name == name).map_or(0, |k| k.launches);
    assert_eq!(launches("moe_gather") + launches("moe_scatter"), 0, "decode grouped tokens: {profile:?}");
    assert_eq!(greedy(&gpu, &ids, 12), greedy(&cpu, &ids, 12), "greedy tokens, GPU pools against the CPU");
}
