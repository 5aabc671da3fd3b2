//! Linear layers in Q8_0 and Q4_1 blocks (`--dtype q8|q4`) on the embedded demo model.
//!
//! - The GPU's quantized kernels against the CPU backend, which runs the same blocks decoded
//!   at load: the same weights, so only summation order differs. Prompts longer than 8 tokens
//!   take `qgemm`, decode steps `qgemv`, and a small binding limit splits every matrix into
//!   row blocks.
//! - The quantization error against f32 weights, with the bounds measured here (see
//!   BENCHMARKS.md).

use std::path::Path;

use minimax_runtime::MatrixDType;
use minimax_runtime::device::BackendChoice;
use minimax_runtime::weights::StoredDType;
use minimax_tests::{argmax_rows, backends, demo_dir, demo_prompt as prompt, engine_with, greedy, max_abs};

#[test]
fn gpu_kernels_match_the_cpu_on_the_same_blocks() {
    if !backends().contains(&BackendChoice::Gpu) {
        return;
    }
    let dir = demo_dir();
    // What summation order alone does to this model: f32 weights on both backends.
    let cpu = engine_with(&dir, BackendChoice::Cpu, MatrixDType::F32, None);
    let ids = prompt(&cpu);
    let want = pollster::block_on(cpu.logits(&ids, None)).unwrap();
    let gpu = engine_with(&dir, BackendChoice::Gpu, MatrixDType::F32, None);
    let float_err = max_abs(&pollster::block_on(gpu.logits(&ids, None)).unwrap(), &want);
    eprintln!("F32: GPU against CPU, max-abs {float_err:.2e}");
    for (dtype, block) in [(MatrixDType::Q8, StoredDType::Q8_0), (MatrixDType::Q4, StoredDType::Q4_1)] {
        let cpu = engine_with(&dir, BackendChoice::Cpu, dtype, None);
        let ids = prompt(&cpu);
        assert!(ids.len() > 8, "the prompt must take the qgemm path");
        let want = pollster::block_on(cpu.logits(&ids, None)).unwrap();
        let g_cpu = greedy(&cpu, &ids, 16);
        // Whole matrices, then every matrix split into 16 KiB row blocks.
        for limit in [None, Some(16 << 10)] {
            let gpu = engine_with(&dir, BackendChoice::Gpu, dtype, limit);
            assert_eq!(gpu.model.matrices.linear(), block);
            let got = pollster::block_on(gpu.logits(&ids, None)).unwrap();
            let err = max_abs(&got, &want);
            eprintln!("{dtype:?}, binding limit {limit:?}: GPU against CPU, max-abs {err:.2e}");
            // Same weights: the gap stays of the order of the float path's.
            assert!(err < 10.0 * float_err.max(1e-4), "{dtype:?}, {limit:?}: {err} (f32: {float_err})");
            assert_eq!(greedy(&gpu, &ids, 16), g_cpu, "{dtype:?}, {limit:?}: greedy tokens differ");
        }
    }
}

/// Max-abs logit error against f32 weights, and top-1 agreement over the prompt's positions.
#[test]
fn quantized_logits_stay_close_to_f32() {
    let dir = demo_dir();
    let f32_engine = engine_with(&dir, BackendChoice::Cpu, MatrixDType::F32, None);
    let ids = prompt(&f32_engine);
    let reference = pollster::block_on(f32_engine.logits(&ids, None)).unwrap();
    let vocab = f32_engine.model.config.vocab_size;
    let top1 = argmax_rows(&reference, vocab);
    for (dtype, bound, agree) in [(MatrixDType::Q8, 0.15, 1.0), (MatrixDType::Q4, 2.5, 0.9)] {
        let e = engine_with(&dir, BackendChoice::Cpu, dtype, None);
        let logits = pollster::block_on(e.logits(&ids, None)).unwrap();
        let err = max_abs(&logits, &reference);
        let same = argmax_rows(&logits, vocab).iter().zip(&top1).filter(|(a, b)| a == b).count() as f64 / top1.len() as f64;
        eprintln!("{dtype:?}: max-abs {err:.3} against f32, top-1 agreement {:.0} %", 100.0 * same);
        assert!(err > 0.0, "{dtype:?}: no quantization happened");
        assert!(err < bound, "{dtype:?}: {err}");
        assert!(same >= agree, "{dtype:?}: top-1 agreement {same}");
    }
}

/// `minimax convert --quant q8` also stores the linear layers as Q8_0 blocks. The pack then
/// loads them as blocks by default (`auto`), with the same weights as quantizing the source at
/// load (`--dtype q8`), and its dense file is smaller than an `--experts-only` pack's.
#[test]
fn a_pack_with_quantized_linear_layers_runs_them_as_stored() {
    use minimax_runtime::experts::convert::{ConvertOptions, convert};
    let dir = demo_dir();
    let tmp = std::env::temp_dir().join(format!("minimax-quantized-pack-{}", std::process::id()));
    let (quantized, plain) = (tmp.join("q8"), tmp.join("experts-only"));
    for (out, dense) in [(&quantized, Some(StoredDType::Q8_0)), (&plain, None)] {
        let _ = std::fs::remove_dir_all(out);
        convert(&dir, out, &ConvertOptions { quant: StoredDType::Q8_0, dense }, &mut |_| {}).unwrap();
    }
    let size = |d: &Path| std::fs::metadata(d.join("dense.safetensors")).unwrap().len();
    eprintln!("dense.safetensors: {} bytes with Q8_0 linear layers, {} as stored", size(&quantized), size(&plain));
    assert!(size(&quantized) * 10 < size(&plain) * 7, "Q8_0 linear layers (about half of f16; the embedding stays f16) should shrink the dense file");

    let source = engine_with(&dir, BackendChoice::Cpu, MatrixDType::Q8, None);
    let ids = prompt(&source);
    let want = pollster::block_on(source.logits(&ids, None)).unwrap();
    for backend in backends() {
        let pack = engine_with(&quantized, backend, MatrixDType::Auto, None);
        if backend == BackendChoice::Gpu {
            assert_eq!(pack.model.matrices.linear(), StoredDType::Q8_0);
        }
        let got = pollster::block_on(pack.logits(&ids, None)).unwrap();
        let err = max_abs(&got, &want);
        eprintln!("{backend:?}: pack with Q8_0 linear layers against --dtype q8 on the source, max-abs {err:.2e}");
        let bound = if backend == BackendChoice::Cpu { 0.0 } else { 1e-4 };
        assert!(err <= bound, "{backend:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
