//! GGUF, llama.cpp's single-file format, read as a [`TensorStore`] under Hugging Face names.
//!
//! A file (v2 or v3, little-endian) is:
//! `"GGUF"`, `version: u32`, `n_tensors: u64`, `n_kv: u64`, then `n_kv` metadata pairs
//! (`key: string`, `type: u32`, value), then `n_tensors` infos (`name: string`, `n_dims: u32`,
//! `dims: [u64; n_dims]` innermost first, `ggml_type: u32`, `offset: u64`), padding to
//! `general.alignment` (default 32), and the data section; each offset is relative to it. A
//! string is `len: u64` + UTF-8 bytes; an array is `elem_type: u32`, `len: u64`, elements.
//!
//! Only the metadata and the tensor infos are parsed; tensor bytes are sliced out on demand.
//! GGUF dims `[ne0, ne1, …]` are the Hugging Face shape reversed, in the same memory order.
//!
//! For `general.architecture` `llama` (which also covers Mistral, and Mixtral through
//! `llama.expert_count`) and `qwen2`, tensors are renamed to Hugging Face names (see
//! `hf::LAYER_NAMES`), stacked experts are sliced per expert, and q/k rows are put back in Hugging
//! Face order: llama.cpp's converter (`LlamaModel.permute` in `convert_hf_to_gguf.py`) stores
//! them for its interleaved-pair RoPE (`LLAMA_ROPE_TYPE_NORM`). It does not do so for qwen2,
//! which llama.cpp runs with NeoX RoPE. Tensors of other architectures, and ones without a
//! Hugging Face counterpart (such as `rope_freqs.weight`), keep their GGUF names.

mod hf;
mod reader;

use std::borrow::Cow;
use std::collections::HashMap;

use super::quant::GgmlType;
use super::{RawTensor, ShardBytes, TensorStore};
use crate::error::WeightsError;
use hf::unpermute_rows;
use reader::Reader;
pub use reader::MetaValue;

/// The largest `general.alignment` accepted (real files use 32 to 4096).
const MAX_ALIGNMENT: usize = 1 << 20;

/// One tensor as the file describes it.
#[derive(Debug, Clone)]
struct TensorInfo {
    name: String,
    /// GGUF order: innermost (contiguous) dimension first.
    dims: Vec<usize>,
    ggml_type: u32,
    /// Absolute offset in the file.
    start: usize,
    /// `None` for a ggml type this reader does not know.
    len: Option<usize>,
}

/// How a Hugging Face tensor is cut from a GGUF tensor.
#[derive(Debug, Clone, Copy)]
enum View {
    Whole,
    /// q/k rows of `heads` heads, stored in llama.cpp's rotary order.
    Unpermute { heads: usize },
    /// Expert `index` of a stacked `[E, rows, cols]` tensor.
    Expert { index: usize },
}

/// A parsed GGUF file: metadata and tensor infos over the file's bytes.
pub struct GgufFile {
    path: String,
    bytes: ShardBytes,
    version: u32,
    metadata: HashMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    /// Hugging Face (or kept GGUF) name → (tensor index, view).
    index: HashMap<String, (usize, View)>,
}

impl GgufFile {
    /// Memory-maps and parses the GGUF file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Self, WeightsError> {
        let shown = path.display().to_string();
        let io = |source| WeightsError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file modified while mapped is a user error that at
        // worst yields wrong values, as with any mmap-based loader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::parse(shown.clone(), std::sync::Arc::new(map))
    }

    /// Parses the header, metadata and tensor infos of a GGUF v2/v3 file and checks that every
    /// tensor lies inside it. `path` is only used in messages.
    pub fn parse(path: String, bytes: ShardBytes) -> Result<Self, WeightsError> {
        let data: &[u8] = (*bytes).as_ref();
        let mut r = Reader {
            bytes: data,
            pos: 0,
            path: &path,
            what: "the header".into(),
            values_left: reader::MAX_META_VALUES,
        };
        if r.take(4)? != b"GGUF" {
            return Err(r.fail("not a GGUF file (bad magic; expected \"GGUF\")".into()));
        }
        let version = r.u32()?;
        match version {
            2 | 3 => {}
            1 => return Err(r.fail("GGUF v1 is not supported (re-convert the model with a current llama.cpp)".into())),
            v if (1..=3).contains(&v.swap_bytes()) => return Err(r.fail("big-endian GGUF files are not supported".into())),
            v => return Err(r.fail(format!("unsupported GGUF version {v} (supported: 2, 3)"))),
        }
        // A tensor info takes at least 28 bytes, a metadata pair at least 13.
        let n_tensors = r.count(28)?;
        let n_kv = r.count(13)?;

        let mut metadata = HashMap::new();
        for i in 0..n_kv {
            r.what = format!("metadata pair #{i}");
            let key = r.string()?;
            r.what = format!("metadata `{key}`");
            let ty = r.u32()?;
            let value = r.value(ty, 0)?;
            // As llama.cpp: a repeated key is a corrupt file, not a value to pick from.
            if metadata.contains_key(&key) {
                return Err(r.fail(format!("metadata key `{key}` occurs twice")));
            }
            metadata.insert(key, value);
        }

        let mut infos = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            r.what = format!("tensor info #{i}");
            let name = r.string()?;
            r.what = format!("tensor info `{name}`");
            let n_dims = r.u32()? as usize;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.fail(format!("tensor `{name}` has {n_dims} dimensions (1 to 4 allowed)")));
            }
            let dims = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>, _>>()?;
            // ggml keeps dims and their product in i64 (llama.cpp's gguf checks both); an
            // empty dim is refused too, so that every count derived from the dims (experts
            // of a stacked tensor, rows of a matrix) is bounded by the bytes behind them.
            let elems = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
            let dims: Option<Vec<usize>> = dims.iter().map(|&d| usize::try_from(d).ok()).collect();
            let (Some(dims), Some(_)) = (dims, elems) else {
                return Err(r.fail(format!("tensor `{name}`: dimensions overflow")));
            };
            if dims.contains(&0) {
                return Err(r.fail(format!("tensor `{name}` has an empty dimension {dims:?}")));
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            infos.push((name, dims, ggml_type, offset));
        }

        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .and_then(|a| usize::try_from(a).ok())
                .filter(|a| a.is_power_of_two() && *a <= MAX_ALIGNMENT)
                .ok_or_else(|| r.fail(format!("general.alignment {v:?} is not a power of two up to {MAX_ALIGNMENT}")))?,
        };
        let data_start = r.pos.next_multiple_of(alignment);

        let mut tensors = Vec::with_capacity(infos.len());
        let mut seen = std::collections::HashSet::new();
        for (name, dims, ggml_type, offset) in infos {
            let fail = |reason: String| r.fail(format!("tensor `{name}`: {reason}"));
            let len = match GgmlType::from_id(ggml_type) {
                None => None,
                Some(t) => {
                    if dims[0] % t.block_elems != 0 {
                        return Err(fail(format!("{} elements per row is not a multiple of the {} block ({})", dims[0], t.name, t.block_elems)));
                    }
                    let elems = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
                    Some(elems.and_then(|n| (n / t.block_elems).checked_mul(t.block_bytes)).ok_or_else(|| fail(format!("dims {dims:?} overflow")))?)
                }
            };
            if offset % alignment as u64 != 0 {
                return Err(fail(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
            }
            let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
            let end = start.and_then(|s| s.checked_add(len.unwrap_or(0)));
            if end.is_none_or(|e| e > data.len()) {
                return Err(fail(format!(
                    "{} bytes at offset {} run past the end of the file ({} bytes): truncated?",
                    len.unwrap_or(0),
                    (data_start as u64).saturating_add(offset),
                    data.len()
                )));
            }
            if !seen.insert(name.clone()) {
                return Err(fail("the name occurs twice".into()));
            }
            let start = start.expect("checked above");
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                start,
                len,
            });
        }

        let mut file = GgufFile {
            path,
            bytes,
            version,
            metadata,
            tensors,
            index: HashMap::new(),
        };
        file.index = file.hf_index();
        Ok(file)
    }

    /// The path given at parse time.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The metadata value under `key` (llama.cpp's key names, e.g. `llama.block_count`).
    pub fn metadata(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// All metadata keys, in no particular order.
    pub fn metadata_keys(&self) -> impl Iterator<Item = &str> {
        self.metadata.keys().map(String::as_str)
    }

    /// `general.architecture` (e.g. `llama`, `qwen2`).
    pub fn architecture(&self) -> Option<&str> {
        self.metadata.get("general.architecture")?.as_str()
    }

    /// The Jinja chat template (`tokenizer.chat_template`), if the file has one.
    pub fn chat_template(&self) -> Option<String> {
        Some(self.metadata.get("tokenizer.chat_template")?.as_str()?.to_string())
    }

    fn dtype_error(&self, name: &str, info: &TensorInfo) -> WeightsError {
        let ty = GgmlType::from_id(info.ggml_type).map_or(format!("ggml type {}", info.ggml_type), |t| t.name.to_string());
        WeightsError::DType {
            name: format!("{name} (`{}` in {})", info.name, self.path),
            dtype: format!("{ty} (not supported yet; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"),
        }
    }
}

impl TensorStore for GgufFile {
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn names(&self) -> Vec<String> {
        self.index.keys().cloned().collect()
    }

    fn get(&self, name: &str) -> Result<Option<RawTensor<'_>>, WeightsError> {
        let Some(&(t, view)) = self.index.get(name) else {
            return Ok(None);
        };
        let info = &self.tensors[t];
        let dtype = GgmlType::from_id(info.ggml_type).and_then(GgmlType::stored);
        let (Some(dtype), Some(len)) = (dtype, info.len) else {
            return Err(self.dtype_error(name, info));
        };
        let bytes = &(*self.bytes).as_ref()[info.start..info.start + len];
        let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
        Ok(Some(match view {
            View::Whole => RawTensor {
                dtype,
                shape,
                bytes: Cow::Borrowed(bytes),
            },
            View::Expert { index } => {
                let per = len / shape[0];
                RawTensor {
                    dtype,
                    shape: shape[1..].to_vec(),
                    bytes: Cow::Borrowed(&bytes[index * per..(index + 1) * per]),
                }
            }
            View::Unpermute { heads } => {
                // A 1-D bias permutes single elements, which needs an unblocked type. The head
                // count comes from the metadata: it is checked against the rows, never trusted.
                let rows = shape[0];
                let whole_heads = heads.checked_mul(2).is_some_and(|h| h > 0 && rows % h == 0);
                if !whole_heads || (shape.len() == 1 && dtype.is_quantized()) {
                    return Err(WeightsError::Format {
                        path: self.path.clone(),
                        reason: format!("cannot undo the q/k row order of `{}` ({} {shape:?}) for {heads} heads", info.name, dtype.name()),
                    });
                }
                RawTensor {
                    dtype,
                    shape,
                    bytes: Cow::Owned(unpermute_rows(bytes, rows, heads)),
                }
            }
        }))
    }
}


/// Hand-built GGUF files for tests.
#[cfg(test)]
pub(super) mod testing {
    /// A string value (type 8).
    pub fn string(s: &str) -> Vec<u8> {
        [(s.len() as u64).to_le_bytes().as_slice(), s.as_bytes()].concat()
    }

    /// A GGUF v3 file: metadata `(key, value type, value bytes)`, tensors `(name, GGUF dims,
    /// ggml type, data)`, with the default alignment of 32.
    pub fn file(kv: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, Vec<u8>)]) -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend((tensors.len() as u64).to_le_bytes());
        f.extend((kv.len() as u64).to_le_bytes());
        for (key, ty, value) in kv {
            f.extend(string(key));
            f.extend(ty.to_le_bytes());
            f.extend(value);
        }
        let mut offset = 0u64;
        for (name, dims, ty, data) in tensors {
            f.extend(string(name));
            f.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| f.extend(d.to_le_bytes()));
            f.extend(ty.to_le_bytes());
            f.extend(offset.to_le_bytes());
            offset += (data.len() as u64).next_multiple_of(32);
        }
        for (_, _, _, data) in tensors {
            f.resize(f.len().next_multiple_of(32), 0);
            f.extend(data);
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use crate::weights::{SafetensorsSet, StoredDType};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gguf/");

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{DIR}{name}")).unwrap_or_else(|e| panic!("{DIR}{name}: {e} (see tests/oracle/README-gguf.md)"))
    }

    fn parse(name: &str, bytes: Vec<u8>) -> Result<GgufFile, WeightsError> {
        GgufFile::parse(name.to_string(), Arc::new(bytes))
    }

    fn fixture(stem: &str) -> GgufFile {
        parse(stem, read(&format!("{stem}.gguf"))).unwrap()
    }

    fn err(bytes: Vec<u8>) -> String {
        parse("bad.gguf", bytes).err().expect("must fail").to_string()
    }

    const STEMS: [&str; 3] = ["tiny-llama", "tiny-mixtral", "tiny-qwen2"];

    #[test]
    fn every_tensor_matches_the_reference_exactly() {
        let reference = SafetensorsSet::from_shards([("reference".into(), Arc::new(read("reference.safetensors")) as ShardBytes)]).unwrap();
        let mut dtypes = BTreeSet::new();
        for stem in STEMS {
            let file = fixture(stem);
            let want: BTreeSet<String> =
                reference.names().iter().filter_map(|n| n.strip_prefix(&format!("{stem}/")).map(String::from)).collect();
            assert_eq!(file.names().into_iter().collect::<BTreeSet<_>>(), want, "{stem}: tensor names");
            for name in &want {
                let t = file.get(name).unwrap().unwrap();
                let r = reference.get(&format!("{stem}/{name}")).unwrap().unwrap();
                assert_eq!(t.shape, r.shape, "{stem}/{name}");
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                assert!(bits(t.to_f32()) == bits(r.to_f32()), "{stem}/{name} ({:?}) differs from the reference", t.dtype);
                dtypes.insert(t.dtype.name());
            }
        }
        let all = [StoredDType::F32, StoredDType::F16, StoredDType::BF16, StoredDType::Q8_0, StoredDType::Q4_0, StoredDType::Q4_1];
        assert_eq!(dtypes, all.iter().map(|d| d.name()).collect::<BTreeSet<_>>(), "the fixtures must cover every format");
    }

    #[test]
    fn qk_rows_go_back_to_hugging_face_order() {
        // HF rows 0..8 of 2 heads, as llama.cpp's converter stores them: per head of 4 rows,
        // (r0, r1 | r2, r3) -> (r0, r2, r1, r3).
        assert_eq!(unpermute_rows(&[0, 2, 1, 3, 4, 6, 5, 7], 8, 2), (0..8).collect::<Vec<u8>>());
        let wide: Vec<u8> = [0u8, 2, 1, 3].iter().flat_map(|&r| [r; 3]).collect();
        assert_eq!(unpermute_rows(&wide, 4, 1), [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        // llama q/k are permuted (4 and 2 heads), v is not; qwen2 keeps its rows.
        let llama = fixture("tiny-llama");
        let view = |f: &GgufFile, n: &str| f.index[&format!("model.layers.1.self_attn.{n}")].1;
        assert!(matches!(view(&llama, "q_proj.weight"), View::Unpermute { heads: 4 }));
        assert!(matches!(view(&llama, "k_proj.weight"), View::Unpermute { heads: 2 }));
        assert!(matches!(view(&llama, "v_proj.weight"), View::Whole));
        let mixtral = fixture("tiny-mixtral");
        assert!(matches!(mixtral.index["model.layers.0.self_attn.k_proj.weight"].1, View::Unpermute { heads: 1 }));
        let qwen = fixture("tiny-qwen2");
        assert!(matches!(qwen.index["model.layers.0.self_attn.q_proj.weight"].1, View::Whole));
        assert!(matches!(qwen.index["model.layers.0.self_attn.k_proj.bias"].1, View::Whole));
        // The stored q differs from the HF q: the permutation is not the identity here.
        let q = llama.get("model.layers.1.self_attn.q_proj.weight").unwrap().unwrap();
        let info = &llama.tensors[llama.index["model.layers.1.self_attn.q_proj.weight"].0];
        let stored = &(*llama.bytes).as_ref()[info.start..info.start + info.len.unwrap()];
        assert_ne!(q.bytes.as_ref(), stored);
    }

    #[test]
    fn hf_config_matches_the_metadata() {
        let expected: Value = serde_json::from_slice(&read("expected-config.json")).unwrap();
        for stem in STEMS {
            let config = fixture(stem).hf_config().unwrap();
            for (key, want) in expected[stem].as_object().unwrap() {
                let got = &config[key];
                let same = match (got.as_f64(), want.as_f64()) {
                    (Some(g), Some(w)) => g == w && got.is_f64() == want.is_f64(),
                    _ => got == want,
                };
                assert!(same, "{stem}: `{key}` is {got}, expected {want}");
            }
            assert_eq!(config["attention_bias"], stem == "tiny-qwen2", "{stem}");
        }
        assert!(fixture("tiny-llama").hf_config().unwrap().get("head_dim").is_none());
        assert!(fixture("tiny-llama").chat_template().unwrap().starts_with("{% for m in messages %}<|im_start|>"));
        assert_eq!(fixture("tiny-mixtral").chat_template(), None);
        assert_eq!(fixture("tiny-mixtral").metadata("general.alignment"), Some(&MetaValue::U32(64)));
    }

    #[test]
    fn broken_headers_are_named() {
        let good = read("tiny-llama.gguf");
        let with = |at: usize, patch: &[u8]| {
            let mut b = good.clone();
            b[at..at + patch.len()].copy_from_slice(patch);
            b
        };
        assert!(err(with(0, b"GGUX")).contains("bad magic"));
        assert!(err(with(4, &1u32.to_le_bytes())).contains("GGUF v1 is not supported"));
        assert!(err(with(4, &7u32.to_le_bytes())).contains("unsupported GGUF version 7"));
        assert!(err(with(4, &3u32.to_be_bytes())).contains("big-endian"));
        assert!(err(with(16, &u64::MAX.to_le_bytes())).contains("claims"));
        let e = err(good[..10].to_vec());
        assert!(e.contains("truncated") && e.contains("the header"), "{e}");
        let e = err(good[..2000].to_vec());
        assert!(e.contains("truncated") && e.contains("metadata"), "{e}");
        assert!(e.contains("bad.gguf"), "{e}");
    }

    #[test]
    fn truncated_data_names_the_tensor() {
        let good = read("tiny-llama.gguf");
        let file = fixture("tiny-llama");
        let last = file.tensors.iter().max_by_key(|t| t.start).unwrap();
        let e = err(good[..good.len() - 100].to_vec());
        assert!(e.contains(&format!("tensor `{}`", last.name)) && e.contains("past the end"), "{e}");
        assert!(e.contains(&format!("offset {}", last.start)), "{e}");
    }

    #[test]
    fn unsupported_types_fail_on_use_with_their_name() {
        let arch = ("general.architecture", 8, testing::string("llama"));
        let bytes = testing::file(
            &[arch.clone()],
            &[
                ("blk.0.ffn_down.weight", &[256, 1], 12, vec![0; 144]),
                ("blk.0.ffn_up.weight", &[4, 1], 99, vec![0; 4]),
                ("output_norm.weight", &[3], 0, [1.5f32, -2.0, 0.25].iter().flat_map(|x| x.to_le_bytes()).collect()),
            ],
        );
        let file = parse("q4k.gguf", bytes).unwrap();
        let e = file.get("model.layers.0.mlp.down_proj.weight").err().unwrap().to_string();
        assert!(e.contains("Q4_K (not supported yet") && e.contains("blk.0.ffn_down.weight") && e.contains("q4k.gguf"), "{e}");
        let e = file.get("model.layers.0.mlp.up_proj.weight").err().unwrap().to_string();
        assert!(e.contains("ggml type 99"), "{e}");
        // The default alignment (32) places the data section.
        assert_eq!(file.get("model.norm.weight").unwrap().unwrap().to_f32(), [1.5, -2.0, 0.25]);
        // Rows that are not whole blocks, and misaligned offsets, are refused.
        let e = err(testing::file(&[arch.clone()], &[("x", &[48, 1], 8, vec![0; 51])]));
        assert!(e.contains("tensor `x`") && e.contains("not a multiple of the Q8_0 block"), "{e}");
        let mut b = testing::file(&[arch], &[("x", &[4], 0, vec![0; 16]), ("y", &[4], 0, vec![0; 16])]);
        let at = b.windows(2).rposition(|w| w == b"y\x01").unwrap() + 1 + 4 + 8 + 4;
        b[at..at + 8].copy_from_slice(&8u64.to_le_bytes());
        assert!(err(b).contains("not a multiple of the alignment 32"));
    }

    #[test]
    fn llama_without_head_count_refuses_qk() {
        let bytes = testing::file(
            &[("general.architecture", 8, testing::string("llama"))],
            &[("blk.0.attn_q.weight", &[4, 4], 0, vec![0; 64])],
        );
        let e = parse("x.gguf", bytes).unwrap().get("model.layers.0.self_attn.q_proj.weight").err().unwrap();
        assert!(e.to_string().contains("cannot undo the q/k row order"), "{e}");
    }

    /// Counts, dims and offsets that overflow or claim more than the file holds (the
    /// llama.cpp CVE classes, and what fuzzing found here; see FUZZING.md) are refused.
    #[test]
    fn hostile_sizes_are_refused() {
        let arch = ("general.architecture", 8, testing::string("llama"));
        let f32s = |n: usize| vec![0u8; 4 * n];
        let e = err(testing::file(&[arch.clone()], &[("x", &[4, 0], 0, Vec::new())]));
        assert!(e.contains("tensor `x` has an empty dimension"), "{e}");
        let e = err(testing::file(&[arch.clone()], &[("x", &[1 << 32, 1 << 32], 0, f32s(1))]));
        assert!(e.contains("tensor `x`: dimensions overflow"), "{e}");
        let e = err(testing::file(&[arch.clone(), ("general.alignment", 4, (1u32 << 30).to_le_bytes().to_vec())], &[]));
        assert!(e.contains("not a power of two up to 1048576"), "{e}");
        let e = err(testing::file(&[arch.clone(), arch.clone()], &[]));
        assert!(e.contains("`general.architecture` occurs twice"), "{e}");
        // Stacked experts of a type whose size is unknown (ggml type 99) have no checked bytes:
        // their expert count is never trusted (a fuzzed file's 1.8e19 once overflowed the
        // name table).
        let file = parse("x.gguf", testing::file(&[arch.clone()], &[("blk.0.ffn_up_exps.weight", &[32, 1, 1 << 40], 99, f32s(1))])).unwrap();
        assert_eq!(file.names(), ["blk.0.ffn_up_exps.weight"]);
        // A head count whose double overflows cannot undo q/k rows.
        let heads = ("llama.attention.head_count", 10, (u64::MAX / 2 + 1).to_le_bytes().to_vec());
        let file = parse("x.gguf", testing::file(&[arch, heads], &[("blk.0.attn_q.weight", &[4, 4], 0, f32s(16))])).unwrap();
        let e = file.get("model.layers.0.self_attn.q_proj.weight").err().unwrap().to_string();
        assert!(e.contains("cannot undo the q/k row order"), "{e}");
    }

    #[test]
    fn metadata_numbers() {
        assert_eq!(MetaValue::F32(1e-5).as_f64(), Some(1e-5));
        assert_eq!(MetaValue::I32(-1).as_u64(), None);
        assert_eq!(MetaValue::U16(7).as_u64(), Some(7));
        let file = fixture("tiny-llama");
        let tokens = file.metadata("tokenizer.ggml.tokens").and_then(MetaValue::as_array).unwrap();
        assert_eq!(tokens[0].as_str(), Some("<|endoftext|>"));
        assert_eq!(file.version(), 3);
    }
}
