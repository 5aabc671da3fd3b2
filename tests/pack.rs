//! Expert packs: `minimax convert` on the fixtures, checked against the source weights.
//!
//! The records must decode to the source matrices within each format's rounding bound, per
//! block of 32 values of a row, with `δ(v) = max(|v|·2⁻¹¹, 2⁻²⁵)` the error of storing `v` as
//! an f16 (half an ulp, or half the smallest subnormal step):
//! - F16: `δ(x)`;
//! - Q8_0, `d = max|x| / 127`: `d/2 + 127·δ(d)` (half a step, plus the f16 scale's error
//!   times the largest quant);
//! - Q4_1, `d = (max - min) / 15`: `d/2 + 15·δ(d) + δ(min)`;
//!
//! each plus 1e-5 relative slack for the f32 arithmetic of encoder and decoder.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use minimax_runtime::experts::ExpertLayout;
use minimax_runtime::experts::convert::{self, ConvertOptions};
use minimax_runtime::experts::pack::{self, ALIGNMENT, ExpertPack};
use minimax_runtime::weights::{Names, StoredDType, TensorStore, WeightSource};
use minimax_tests::{fixture, minimax_bin};

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("minimax-pack-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn store(dir: &Path) -> std::sync::Arc<dyn TensorStore> {
    match WeightSource::open_dir(dir).unwrap() {
        WeightSource::Files(store) => store,
        WeightSource::Random { .. } => unreachable!(),
    }
}

fn cli_convert(model: &Path, out: &Path, quant: &str, extra: &[&str]) {
    let run = Command::new(minimax_bin())
        .args(["convert", "--quant", quant, "--model"])
        .arg(model)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "minimax convert failed: {stderr}");
}

fn lib_convert(model: &Path, out: &Path, quant: StoredDType) {
    convert::convert(model, out, &ConvertOptions { quant, dense: None }, &mut |_| {}).unwrap_or_else(|e| panic!("{}: {e}", model.display()));
}

/// The source's `(w1, w3, w2)` of one expert, in f32, in either layout.
fn source_expert(store: &dyn TensorStore, layer: usize, e: usize, [c, f]: [usize; 2]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = Names;
    let get = |name: String| store.get(&name).unwrap().unwrap_or_else(|| panic!("{name}")).to_f32();
    if store.contains(&n.expert(layer, "block_sparse_moe", e, "w1")) {
        let w = |w| get(n.expert(layer, "block_sparse_moe", e, w));
        return (w("w1"), w("w3"), w("w2"));
    }
    let gate_up = get(n.fused_experts(layer, "mlp", "gate_up_proj"));
    let down = get(n.fused_experts(layer, "mlp", "down_proj"));
    let gu = &gate_up[e * 2 * f * c..(e + 1) * 2 * f * c];
    (gu[..f * c].to_vec(), gu[f * c..].to_vec(), down[e * c * f..(e + 1) * c * f].to_vec())
}

/// The largest ratio of error to bound over `decoded` vs `source`; panics past 1.
fn check_within_bound(dtype: StoredDType, source: &[f32], decoded: &[f32], what: &str) -> f32 {
    let delta = |v: f32| (v.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
    let mut worst = 0f32;
    for (b, (xs, ys)) in source.chunks(32).zip(decoded.chunks(32)).enumerate() {
        let (lo, hi) = xs.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let amax = lo.abs().max(hi.abs());
        for (&x, &y) in xs.iter().zip(ys) {
            let bound = match dtype {
                StoredDType::F16 => delta(x),
                StoredDType::Q8_0 => amax / 127.0 / 2.0 + 127.0 * delta(amax / 127.0),
                StoredDType::Q4_1 => (hi - lo) / 15.0 / 2.0 + 15.0 * delta((hi - lo) / 15.0) + delta(lo),
                other => panic!("{other:?}"),
            } * (1.0 + 1e-5)
                + 1e-5 * amax;
            assert!((x - y).abs() <= bound, "{what} block {b}: {x} decoded as {y} (bound {bound})");
            worst = worst.max((x - y).abs() / bound);
        }
    }
    worst
}

/// Whether the converter should quantize dense tensor `name` of `shape`: the weight of a
/// linear layer, not the embedding table nor a router.
fn is_linear(name: &str, shape: &[usize]) -> bool {
    let named = name.ends_with("_proj.weight") || name == "lm_head.weight" || name.ends_with("output_gate.weight");
    named && shape.len() == 2 && shape[1] % 32 == 0
}

/// Checks a converted pack against its source model, tensor by tensor. `dense`: the block
/// format of its linear layers (`None`: every dense tensor copied as stored).
fn check_pack(model: &Path, dir: &Path, dtype: StoredDType, dense: Option<StoredDType>) {
    let src = store(model);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    let [c, f, e, layers] = ["hidden_size", "intermediate_size", "num_local_experts", "num_hidden_layers"]
        .map(|k| config[k].as_u64().unwrap() as usize);
    let pack = ExpertPack::open(dir).unwrap();
    let index = pack.index();
    let layout = ExpertLayout::new(dtype, c, f).unwrap();
    assert_eq!((index.format.as_str(), index.version, index.quant.as_str()), ("minimax-expert-pack", 1, dtype.name()));
    assert_eq!((index.hidden, index.ffn, index.num_experts), (c, f, e));
    assert_eq!(index.moe_layers, (0..layers).collect::<Vec<_>>());
    assert_eq!((index.record_bytes, index.alignment, pack.layout()), (layout.bytes() as u64, 4096, layout));
    let stride = (layout.bytes() as u64).next_multiple_of(ALIGNMENT);
    for (i, r) in index.experts.iter().enumerate() {
        assert_eq!((r.layer, r.expert, r.offset, r.bytes), (i / e, i % e, i as u64 * stride, layout.bytes() as u64));
    }
    let experts_len = std::fs::metadata(dir.join("experts.bin")).unwrap().len();
    assert_eq!(experts_len, index.experts.last().map(|r| r.offset + r.bytes).unwrap());
    let dense_file = std::fs::read(dir.join("dense.safetensors")).unwrap();
    assert_eq!((index.dense.bytes, index.dense.crc32), (dense_file.len() as u64, pack::crc32(&dense_file)));
    // A standard safetensors file: the reference parser checks header padding and that the
    // data offsets tile the data section.
    safetensors::SafeTensors::deserialize(&dense_file).expect("dense.safetensors parses");
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert_eq!(std::fs::read(dir.join(name)).unwrap(), std::fs::read(model.join(name)).unwrap(), "{name}");
    }
    assert!(!dir.join("model.safetensors.index.json").exists());

    let mut worst = 0f32;
    for layer in 0..layers {
        for x in 0..e {
            let (gate_up, down) = layout.decode(&pack.read_expert(layer, x).unwrap());
            let (w1, w3, w2) = source_expert(src.as_ref(), layer, x, [c, f]);
            let what = format!("{} layer {layer} expert {x}", dtype.name());
            worst = worst.max(check_within_bound(dtype, &[w1, w3].concat(), &gate_up, &format!("{what} gate_up")));
            worst = worst.max(check_within_bound(dtype, &w2, &down, &format!("{what} down")));
        }
    }
    // The bound is tight: a quantizer that rounds wrongly would exceed it somewhere.
    assert!(worst > 0.2, "{}: worst error only {worst} of the bound", dtype.name());
    eprintln!("{} {}: worst error {worst:.3} of the bound", model.display(), dtype.name());

    // Dense tensors: everything but the experts, byte for byte, or the linear layers' weights
    // as blocks within their format's bound.
    let store = pack.dense_store().unwrap();
    let is_expert = |n: &str| n.contains(".experts.");
    let want: HashSet<String> = src.names().into_iter().filter(|n| !is_expert(n)).collect();
    assert_eq!(store.names().into_iter().collect::<HashSet<_>>(), want);
    let mut quantized = 0;
    for name in &want {
        let (a, b) = (src.get(name).unwrap().unwrap(), store.get(name).unwrap().unwrap());
        match dense.filter(|_| is_linear(name, &a.shape)) {
            Some(q) => {
                assert_eq!((b.dtype, &b.shape), (q, &a.shape), "{name}");
                check_within_bound(q, &a.to_f32(), &b.to_f32(), name);
                quantized += 1;
            }
            None => {
                assert_eq!((a.dtype, &a.shape), (b.dtype, &b.shape), "{name}");
                assert!(a.bytes == b.bytes, "{name}: bytes differ");
            }
        }
    }
    assert_eq!(quantized > 0, dense.is_some(), "{quantized} linear layers quantized");
}

#[test]
fn converts_each_quant_with_the_cli() {
    let model = fixture("minimax-7to1");
    // q4 and q8 quantize the linear layers too, unless --experts-only; f16 never does.
    for (quant, dtype, dense) in [
        ("q4", StoredDType::Q4_1, Some(StoredDType::Q4_1)),
        ("q8", StoredDType::Q8_0, Some(StoredDType::Q8_0)),
        ("f16", StoredDType::F16, None),
    ] {
        let out = TempDir::new(quant);
        cli_convert(&model, &out.0, quant, &[]);
        check_pack(&model, &out.0, dtype, dense);
    }
    let out = TempDir::new("experts-only");
    cli_convert(&model, &out.0, "q4", &["--experts-only"]);
    check_pack(&model, &out.0, StoredDType::Q4_1, None);
}

#[test]
fn converts_a_sharded_bf16_fused_checkpoint() {
    let model = fixture("minimax-sharded-bf16");
    let out = TempDir::new("sharded");
    lib_convert(&model, &out.0, StoredDType::Q8_0);
    check_pack(&model, &out.0, StoredDType::Q8_0, None);
    assert_eq!(ExpertPack::open(&out.0).unwrap().index().source["expert_layout"], "fused");
}

/// A copy of `model` (f32, per-expert) with its experts fused as transformers 5 stores them.
fn fuse(model: &Path, out: &Path) {
    let src = store(model);
    let n = Names;
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    let [layers, e] = ["num_hidden_layers", "num_local_experts"].map(|k| config[k].as_u64().unwrap() as usize);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in src.names().into_iter().filter(|n| !n.contains(".experts.")) {
        let t = src.get(&name).unwrap().unwrap();
        tensors.push((name.replace("block_sparse_moe.gate", "mlp.gate"), t.shape.clone(), t.bytes.to_vec()));
    }
    for layer in 0..layers {
        let (mut gate_up, mut down, mut shape) = (Vec::new(), Vec::new(), vec![]);
        for x in 0..e {
            for w in ["w1", "w3"] {
                let t = src.get(&n.expert(layer, "block_sparse_moe", x, w)).unwrap().unwrap();
                shape = t.shape.clone();
                gate_up.extend_from_slice(&t.bytes);
            }
            down.extend_from_slice(&src.get(&n.expert(layer, "block_sparse_moe", x, "w2")).unwrap().unwrap().bytes);
        }
        let (f, c) = (shape[0], shape[1]);
        tensors.push((n.fused_experts(layer, "mlp", "gate_up_proj"), vec![e, 2 * f, c], gate_up));
        tensors.push((n.fused_experts(layer, "mlp", "down_proj"), vec![e, c, f], down));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap()));
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model.join(name), out.join(name)).unwrap();
    }
}

#[test]
fn both_expert_layouts_give_identical_records() {
    let model = fixture("minimax-7to1");
    let fused = TempDir::new("fused-model");
    fuse(&model, &fused.0);
    for dtype in [StoredDType::Q4_1, StoredDType::F16] {
        let (a, b) = (TempDir::new("per-expert-pack"), TempDir::new("fused-pack"));
        lib_convert(&model, &a.0, dtype);
        lib_convert(&fused.0, &b.0, dtype);
        let (pa, pb) = (ExpertPack::open(&a.0).unwrap(), ExpertPack::open(&b.0).unwrap());
        assert_eq!(pa.index().experts, pb.index().experts, "offsets and CRCs");
        assert_eq!(pb.index().source["expert_layout"], "fused");
        let bin = |d: &Path| std::fs::read(d.join("experts.bin")).unwrap();
        assert!(bin(&a.0) == bin(&b.0), "{}: experts.bin differs between layouts", dtype.name());
        check_pack(&fused.0, &b.0, dtype, None);
    }
}

#[test]
fn corruption_and_truncation_are_reported_with_their_place() {
    let out = TempDir::new("corrupt");
    lib_convert(&fixture("minimax-7to1"), &out.0, StoredDType::Q8_0);
    let bin = out.0.join("experts.bin");
    let mut bytes = std::fs::read(&bin).unwrap();
    let entry = ExpertPack::open(&out.0).unwrap().entry(5, 3).unwrap().clone();
    bytes[entry.offset as usize + 123] ^= 0x10;
    std::fs::write(&bin, &bytes).unwrap();

    let pack = ExpertPack::open(&out.0).expect("a flipped byte is only found when its record is read");
    let err = pack.read_expert(5, 3).unwrap_err().to_string();
    for part in ["layer 5, expert 3", &format!("record at byte {}", entry.offset), "CRC-32", "experts.bin"] {
        assert!(err.contains(part), "`{err}` should mention `{part}`");
    }
    pack.read_expert(5, 2).unwrap();
    pack.read_expert(5, 4).unwrap();
    let err = convert::verify(&out.0, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("layer 5, expert 3"), "{err}");

    // Cut into the last record.
    std::fs::File::options().write(true).open(&bin).unwrap().set_len(bytes.len() as u64 - 1000).unwrap();
    let err = ExpertPack::open(&out.0).err().expect("truncation must be found on open").to_string();
    let last = (bytes.len() - pack.layout().bytes()) as u64;
    for part in ["layer 7, expert 7", &format!("record at byte {last}"), "truncated"] {
        assert!(err.contains(part), "`{err}` should mention `{part}`");
    }

    // With the records repaired, a damaged dense file fails verification.
    bytes[entry.offset as usize + 123] ^= 0x10;
    std::fs::write(&bin, &bytes).unwrap();
    convert::verify(&out.0, &mut |_| {}).unwrap();
    let dense = out.0.join("dense.safetensors");
    let mut d = std::fs::read(&dense).unwrap();
    *d.last_mut().unwrap() ^= 1;
    std::fs::write(&dense, &d).unwrap();
    ExpertPack::open(&out.0).unwrap().dense_store().expect("the header is intact");
    let err = convert::verify(&out.0, &mut |_| {}).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("dense.safetensors") && err.contains("CRC-32"), "`{err}`");
}

#[test]
fn refuses_models_without_experts() {
    let out = TempDir::new("dense");
    let run = Command::new(minimax_bin())
        .args(["convert", "--quant", "q4", "--experts-only", "--model"])
        .arg(fixture("llama-tied"))
        .arg("--out")
        .arg(&out.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success() && stderr.contains("no experts to pack"), "{stderr}");
    assert!(!stderr.contains("note:"), "--experts-only silences the dense note: {stderr}");
    assert!(!out.0.join("pack.json").exists());
}

/// A copy of the mixtral fixture cut to hidden 48 and FFN 40 (head_dim kept at 16): no Q8_0
/// block fits an expert row, nor a row of the linear layers that read the hidden state.
fn odd_shaped(out: &Path) {
    let model = fixture("mixtral-moe");
    let src = store(&model);
    let (hidden, ffn) = (48, 40);
    let cut = |t: &[f32], shape: &[usize], rows: usize, cols: usize| -> Vec<f32> {
        let c = shape[1];
        (0..rows).flat_map(|r| t[r * c..r * c + cols].to_vec()).collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in src.names() {
        let t = src.get(&name).unwrap().unwrap();
        let values = t.to_f32();
        let (shape, values) = match t.shape[..] {
            [_] => (vec![hidden], values[..hidden].to_vec()),
            [r, c] => {
                // Rows are the hidden state in o_proj and w2, the FFN in w1 and w3; every
                // other matrix reads the hidden state (its columns), and w2 the FFN.
                let rows = if name.contains("o_proj") || name.contains(".w2.") {
                    hidden
                } else if name.contains(".w1.") || name.contains(".w3.") {
                    ffn
                } else {
                    r
                };
                let cols = if name.contains(".w2.") { ffn } else if name.contains("o_proj") { c } else { hidden };
                (vec![rows, cols], cut(&values, &t.shape, rows, cols))
            }
            _ => unreachable!("{name}"),
        };
        tensors.push((name, shape, values.iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).unwrap()));
    safetensors::serialize_to_file(views, None, &out.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    config["hidden_size"] = hidden.into();
    config["intermediate_size"] = ffn.into();
    config["head_dim"] = 16.into();
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(model.join(name), out.join(name)).unwrap();
    }
}

/// `convert --quant q8` never refuses a shape it can store: experts whose rows are
/// not whole blocks become F16, linear layers likewise stay as stored, each said on the
/// console and in pack.json; and the pack runs, streamed or resident, to the same logits.
#[test]
fn a_shape_no_block_fits_falls_back_instead_of_failing() {
    let model = TempDir::new("odd-model");
    odd_shaped(&model.0);
    let out = TempDir::new("odd-pack");
    let run = Command::new(minimax_bin())
        .args(["convert", "--quant", "q8", "--model"])
        .arg(&model.0)
        .arg("--out")
        .arg(&out.0)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "{stderr}");
    assert!(stdout.contains("experts: F16 instead of Q8_0"), "{stdout}");
    assert!(stdout.contains("model.layers.0.self_attn.q_proj.weight: F32 instead of Q8_0 (48 columns"), "{stdout}");
    let pack = ExpertPack::open(&out.0).unwrap();
    let index = pack.index();
    assert_eq!(index.quant, "F16");
    assert_eq!(index.source["requested_quant"], "Q8_0");
    let notes = index.source["fallbacks"].as_array().unwrap();
    // The expert records and every linear layer reading the hidden state; o_proj reads 64.
    assert!(notes.iter().any(|n| n.as_str().unwrap().starts_with("experts:")), "{notes:?}");
    assert!(!notes.iter().any(|n| n.as_str().unwrap().contains("o_proj")), "{notes:?}");

    // Resident and through a 3-slot cache: the same logits.
    use minimax_runtime::device::{self, BackendChoice};
    use minimax_runtime::{Engine, MatrixDType, ModelFiles, RuntimeOptions};
    let load = |dir: &Path, budget: Option<u64>| {
        let options = RuntimeOptions { backend: BackendChoice::Cpu, matrix_dtype: MatrixDType::F32, expert_cache_bytes: budget, ..Default::default() };
        Engine::new(ModelFiles::read(dir).unwrap(), device::select(BackendChoice::Cpu).unwrap(), &options).unwrap()
    };
    let ids: Vec<u32> = (1..20).collect();
    let source = pollster::block_on(load(&model.0, None).logits(&ids, None)).unwrap();
    let resident = pollster::block_on(load(&out.0, None).logits(&ids, None)).unwrap();
    let streamed = pollster::block_on(load(&out.0, Some(3 * pack.layout().slot_bytes() as u64)).logits(&ids, None)).unwrap();
    assert_eq!(minimax_tests::max_abs(&resident, &streamed), 0.0);
    // With the linear layers as stored (`--experts-only`), only the F16 rounding of the
    // experts separates the pack from its source. (With o_proj in Q8_0 a routing choice may
    // flip in this random model, which moves logits by far more than the rounding.)
    let only = TempDir::new("odd-pack-experts");
    let run = Command::new(minimax_bin()).args(["convert", "--quant", "q8", "--experts-only", "--model"]).arg(&model.0).arg("--out").arg(&only.0).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let f16_only = pollster::block_on(load(&only.0, None).logits(&ids, None)).unwrap();
    let (d, scale) = (minimax_tests::max_abs(&source, &f16_only), source.iter().fold(0f32, |m, v| m.max(v.abs())));
    assert!(d < 1e-3 * scale, "the F16 experts drift {d} from their source (logits up to {scale})");
}
