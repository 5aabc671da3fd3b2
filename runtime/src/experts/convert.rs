//! Converts a Hugging Face MiniMax checkpoint (one safetensors file or shards, either expert
//! layout) into an expert pack (format in [`super::pack`]).
//!
//! The source is memory-mapped and read one tensor (or one expert's rows of a fused tensor)
//! at a time, and the outputs are written as they are produced. Peak memory is one expert in
//! f32 plus its encoded record, so checkpoints larger than RAM convert. `pack.json` is written
//! last, through a rename, so an interrupted conversion never leaves a pack that opens.

#![cfg(not(target_arch = "wasm32"))]

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::ExpertLayout;
use super::store_source::{Stored, encode_expert, expert_tensor_names, plan_layers};
use super::pack::{
    self, ALIGNMENT, DENSE_FILE, DenseEntry, EXPERTS_FILE, ExpertEntry, ExpertPack, FORMAT, INDEX_FILE, PackIndex, VERSION,
};
use crate::config::{Ffn, ModelConfig};
use crate::error::{ConfigError, Error, WeightsError};
use crate::weights::file_source::FileSource;
use crate::weights::quantize::quantize;
use crate::weights::safetensors::GGML_PREFIX;
use crate::weights::{MOE_PREFIXES, Names, STAGING_BYTES, StoredDType, TensorStore, WeightSource};

/// What to convert to.
#[derive(Debug, Clone, Copy)]
pub struct ConvertOptions {
    /// Format of the expert records: Q4_1, Q8_0 or F16.
    pub quant: crate::weights::StoredDType,
    /// Block format (Q8_0 or Q4_1) of the linear layers' weights in `dense.safetensors`;
    /// `None` copies every dense tensor as stored.
    pub dense: Option<crate::weights::StoredDType>,
}

/// What a conversion is doing when it reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Copying dense tensors into `dense.safetensors`.
    Dense,
    /// Encoding expert records into `experts.bin`.
    Experts,
    /// Re-reading the finished pack and checking every CRC.
    Verify,
}

/// Progress in bytes. Dense and Experts share one total (both output files), Verify has its
/// own (the same bytes read back).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub stage: Stage,
    pub done: u64,
    pub total: u64,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct ConvertSummary {
    pub index: PackIndex,
    pub dense_tensors: usize,
    /// The JSON files copied from the source.
    pub copied: Vec<String>,
    /// What could not be stored as asked and was stored in another format instead, one line
    /// each (also in `pack.json`, under `source.fallbacks`).
    pub fallbacks: Vec<String>,
}


/// JSON files beside the weights that are not copied: the shard index describes files the
/// pack does not have, and a source `pack.json` would be overwritten anyway.
const SKIPPED_JSON: [&str; 2] = ["model.safetensors.index.json", INDEX_FILE];
/// Larger JSON files are not "small files" of a model directory; they are skipped.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Converts the checkpoint in `model` into a pack in `out` (created if needed), then re-opens
/// it and checks every record's and the dense file's CRC.
pub fn convert(model: &Path, out: &Path, options: &ConvertOptions, progress: &mut dyn FnMut(Progress)) -> Result<ConvertSummary, Error> {
    let span = tracing::info_span!("convert", model = %model.display(), quant = options.quant.name());
    let _enter = span.enter();
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| WeightsError::Io { path, source }
    };
    let config_path = model.join("config.json");
    let config = ModelConfig::from_json(&std::fs::read_to_string(&config_path).map_err(io(&config_path))?)?;
    let Ffn::Moe(moe) = config.ffn else {
        return Err(ConfigError::Unsupported(format!("{} has a dense MLP: there are no experts to pack", model.display())).into());
    };
    let (c, f, e) = (config.hidden_size, moe.intermediate_size, moe.num_experts);
    if pack::pack_dtype(options.quant.name()).is_none() {
        return Err(ConfigError::Unsupported(format!("packs store experts as Q4_1, Q8_0 or F16, not {}", options.quant.name())).into());
    }
    // As llama-quantize does, a shape the asked format cannot store falls back to the nearest
    // format that can (F16 stores any even size) instead of refusing the model.
    let mut fallbacks = Vec::new();
    let quant = match ExpertLayout::new(options.quant, c, f) {
        Ok(_) => options.quant,
        Err(reason) => {
            fallbacks.push(format!("experts: F16 instead of {} ({reason})", options.quant.name()));
            StoredDType::F16
        }
    };
    let layout = ExpertLayout::new(quant, c, f).map_err(ConfigError::Unsupported)?;
    if let Some(q) = options.dense.filter(|q| !matches!(q, StoredDType::Q8_0 | StoredDType::Q4_1)) {
        return Err(ConfigError::Unsupported(format!("linear layers are quantized to Q8_0 or Q4_1, not {}", q.name())).into());
    }
    let WeightSource::Files(store) = WeightSource::open_dir(model)? else {
        unreachable!("open_dir reads files")
    };
    let store = store.as_ref();
    let plan = plan_layers(store, config.num_layers(), [c, f, e])?;
    if plan.is_empty() {
        return Err(WeightsError::Missing {
            name: Names.expert(0, MOE_PREFIXES[0], 0, "w1"),
            expected: vec![f, c],
        }
        .into());
    }
    let expert_names: HashSet<String> = plan.iter().flat_map(|(l, s)| expert_tensor_names(*l, s, e)).collect();
    let mut dense_names: Vec<String> = store.names().into_iter().filter(|n| !expert_names.contains(n)).collect();
    dense_names.sort();

    // Never convert onto the source: copying config.json onto itself would truncate it.
    let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
    std::fs::create_dir_all(out).map_err(io(out))?;
    if same(model, out) {
        return Err(WeightsError::Format {
            path: out.display().to_string(),
            reason: "the pack must go into another directory than the model".into(),
        }
        .into());
    }
    // A stale index must not describe the files about to be rewritten.
    let index_path = out.join(INDEX_FILE);
    if index_path.exists() {
        std::fs::remove_file(&index_path).map_err(io(&index_path))?;
    }
    let copied = copy_json(model, out)?;

    let records = plan.len() * e;
    let stride = pack::record_stride(layout.bytes() as u64, ALIGNMENT);
    let experts_bytes = (records as u64 - 1) * stride + layout.bytes() as u64;
    let mut formats = Vec::with_capacity(dense_names.len());
    for name in &dense_names {
        let (format, fallback) = dense_format(store, name, options.dense)?;
        formats.push(format);
        fallbacks.extend(fallback);
    }
    for note in &fallbacks {
        tracing::info!("fallback: {note}");
    }
    let (header, dense_data) = dense_header(store, &dense_names, &formats)?;
    let dense_bytes = 8 + header.len() as u64 + dense_data;
    let total = dense_bytes + experts_bytes;

    // dense.safetensors: the header, computed from the source headers, then the tensors.
    let dense_path = out.join(DENSE_FILE);
    let mut dense = CrcWriter::new(File::create(&dense_path).map_err(io(&dense_path))?);
    let mut done = 0;
    dense.write_all(&(header.len() as u64).to_le_bytes()).map_err(io(&dense_path))?;
    dense.write_all(&header).map_err(io(&dense_path))?;
    done += 8 + header.len() as u64;
    for (name, format) in dense_names.iter().zip(&formats) {
        let Some(q) = *format else {
            let tensor = store.get(name)?.expect("listed by the store");
            dense.write_all(&tensor.bytes).map_err(io(&dense_path))?;
            done += tensor.bytes.len() as u64;
            progress(Progress { stage: Stage::Dense, done, total });
            continue;
        };
        // Quantized in pieces of rows, so that a 2 GB lm_head never sits in memory as f32.
        let [rows, cols] = store.shape_of(name)?.expect("listed by the store")[..] else { unreachable!("2-D") };
        let per = (STAGING_BYTES / (cols * 4)).max(1);
        for start in (0..rows).step_by(per) {
            let raw = store.get_rows(name, start, per.min(rows - start), cols)?.expect("listed by the store");
            let blocks = quantize(q, &raw.to_f32());
            dense.write_all(&blocks).map_err(io(&dense_path))?;
            done += blocks.len() as u64;
            progress(Progress { stage: Stage::Dense, done, total });
        }
    }
    let dense_crc = dense.finish().map_err(io(&dense_path))?;

    // experts.bin: records at aligned offsets, zeros between them.
    let experts_path = out.join(EXPERTS_FILE);
    let mut file = BufWriter::new(File::create(&experts_path).map_err(io(&experts_path))?);
    let mut entries = Vec::with_capacity(records);
    let mut at = 0u64;
    for (layer, stored) in &plan {
        let _layer = tracing::debug_span!("layer", layer).entered();
        for expert in 0..e {
            let record = encode_expert(store, &layout, *layer, stored, expert, e)?;
            let offset = entries.len() as u64 * stride;
            file.write_all(&vec![0; (offset - at) as usize]).map_err(io(&experts_path))?;
            file.write_all(&record).map_err(io(&experts_path))?;
            at = offset + record.len() as u64;
            let crc32 = pack::crc32(&record);
            entries.push(ExpertEntry { layer: *layer, expert, offset, bytes: record.len() as u64, crc32 });
            progress(Progress { stage: Stage::Experts, done: done + at, total });
        }
    }
    let file = file.into_inner().map_err(|e| io(&experts_path)(e.into_error()))?;
    file.sync_all().map_err(io(&experts_path))?;

    let layouts: HashSet<&str> = plan.iter().map(|(_, s)| if matches!(s, Stored::Fused(_)) { "fused" } else { "per-expert" }).collect();
    let index = PackIndex {
        format: FORMAT.into(),
        version: VERSION,
        quant: quant.name().into(),
        hidden: c,
        ffn: f,
        num_experts: e,
        moe_layers: plan.iter().map(|(l, _)| *l).collect(),
        record_bytes: layout.bytes() as u64,
        alignment: ALIGNMENT,
        experts: entries,
        dense: DenseEntry { file: DENSE_FILE.into(), bytes: dense_bytes, crc32: dense_crc },
        source: serde_json::json!({
            "model": model.display().to_string(),
            "model_type": config.model_type,
            "expert_layout": if layouts.len() == 1 { layouts.into_iter().next().unwrap() } else { "mixed" },
            "dense": "copied byte for byte in the stored dtype",
            "requested_quant": options.quant.name(),
            "requested_dense": options.dense.map(|q| q.name()),
            "fallbacks": fallbacks,
            "converter": concat!("minimax-runtime ", env!("CARGO_PKG_VERSION")),
        }),
    };
    let tmp = out.join(format!("{INDEX_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(&index).expect("serializable")).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &index_path).map_err(io(&index_path))?;

    verify(out, progress)?;
    tracing::info!(records, dense = dense_names.len(), "pack written and verified");
    Ok(ConvertSummary { index, dense_tensors: dense_names.len(), copied, fallbacks })
}

/// Re-opens the pack in `dir` and reads back every record (checking its CRC) and the dense
/// file (checking its CRC), reporting [`Stage::Verify`] progress.
pub fn verify(dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<(), WeightsError> {
    let pack = ExpertPack::open(dir)?;
    let experts: u64 = pack.index().experts.iter().map(|r| r.bytes).sum();
    let total = experts + pack.index().dense.bytes;
    let mut done = 0;
    for entry in &pack.index().experts {
        pack.read_expert(entry.layer, entry.expert)?;
        done += entry.bytes;
        progress(Progress { stage: Stage::Verify, done, total });
    }
    let dense = FileSource::open(&pack.dense_path()?)?;
    pack.verify_dense(&dense, &mut |n| progress(Progress { stage: Stage::Verify, done: done + n, total }))
}

/// The block format a dense tensor is written in: `dense` for the weight of a linear layer
/// (2-D, whole blocks per row; not the embedding table, whose rows are looked up, nor a
/// router, which stays f32), `None` (as stored) for everything else; and, for a linear
/// layer whose rows are not whole blocks, the note that it stays as stored.
fn dense_format(store: &dyn TensorStore, name: &str, dense: Option<StoredDType>) -> Result<(Option<StoredDType>, Option<String>), WeightsError> {
    let Some(q) = dense else { return Ok((None, None)) };
    let linear = name.ends_with(".weight") && !name.contains("embed_tokens") && !name.ends_with(".gate.weight");
    let shape = store.shape_of(name)?.unwrap_or_default();
    Ok(match shape[..] {
        [_, cols] if linear && q.row_bytes(cols).is_some() => (Some(q), None),
        [_, cols] if linear => {
            let stored = store.dtype_of(name)?.map_or("as stored", |d| d.name());
            (None, Some(format!("{name}: {stored} instead of {} ({cols} columns are not whole blocks of 32)", q.name())))
        }
        _ => (None, None),
    })
}

/// The safetensors header of the dense file (space-padded to 8 bytes, so that the data starts
/// aligned) and the data section's length. Over memory maps, `get` reads no tensor bytes.
/// Tensors with a block format are `U8` `[rows, row_bytes]`, named in the metadata (see
/// [`GGML_PREFIX`]).
fn dense_header(store: &dyn TensorStore, names: &[String], formats: &[Option<StoredDType>]) -> Result<(Vec<u8>, u64), WeightsError> {
    let mut header = serde_json::Map::new();
    let mut metadata = serde_json::Map::new();
    metadata.insert("format".into(), "pt".into());
    let mut at = 0u64;
    for (name, format) in names.iter().zip(formats) {
        let t = store.get(name)?.expect("listed by the store");
        let (dtype, shape, len) = match *format {
            Some(q) => {
                let row_bytes = q.row_bytes(t.shape[1]).expect("checked by dense_format");
                metadata.insert(format!("{GGML_PREFIX}{name}"), q.name().into());
                ("U8", vec![t.shape[0], row_bytes], (t.shape[0] * row_bytes) as u64)
            }
            None => (t.dtype.name(), t.shape.clone(), t.bytes.len() as u64),
        };
        header.insert(name.clone(), serde_json::json!({ "dtype": dtype, "shape": shape, "data_offsets": [at, at + len] }));
        at += len;
    }
    header.insert("__metadata__".into(), metadata.into());
    let mut bytes = serde_json::to_vec(&header).expect("serializable");
    bytes.resize(bytes.len().next_multiple_of(8), b' ');
    Ok((bytes, at))
}

/// Copies the source's small JSON files (config, tokenizer, generation config...).
fn copy_json(model: &Path, out: &Path) -> Result<Vec<String>, WeightsError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| WeightsError::Io { path, source }
    };
    let mut copied = Vec::new();
    for entry in std::fs::read_dir(model).map_err(io(model))? {
        let path = entry.map_err(io(model))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let small = path.metadata().is_ok_and(|m| m.is_file() && m.len() <= MAX_JSON_BYTES);
        if small && name.ends_with(".json") && !SKIPPED_JSON.contains(&name.as_str()) {
            std::fs::copy(&path, out.join(&name)).map_err(io(&path))?;
            copied.push(name);
        }
    }
    copied.sort();
    Ok(copied)
}

/// A buffered file writer that computes the CRC-32 of everything written.
struct CrcWriter {
    inner: BufWriter<File>,
    hasher: crc32fast::Hasher,
}

impl CrcWriter {
    fn new(file: File) -> Self {
        Self { inner: BufWriter::new(file), hasher: crc32fast::Hasher::new() }
    }

    /// Flushes and syncs the file, returning the CRC.
    fn finish(self) -> std::io::Result<u32> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(self.hasher.finalize())
    }
}

impl Write for CrcWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
