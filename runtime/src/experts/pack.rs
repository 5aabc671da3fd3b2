//! The expert pack: a converted model directory in which every expert is one contiguous,
//! aligned, checksummed record, so that one `pread` (natively) or one HTTP Range request (in a
//! browser) fetches exactly one expert, ready to copy into a GPU cache slot.
//!
//! # Files
//!
//! | file                                   | contents                                              |
//! |----------------------------------------|-------------------------------------------------------|
//! | `pack.json`                            | the index below; written last, so an interrupted conversion leaves no loadable pack |
//! | `experts.bin`                          | the expert records, nothing else                      |
//! | `dense.safetensors`                    | every tensor that is not an expert matrix            |
//! | `config.json`, `tokenizer.json`, ...   | the source's small JSON files, copied unchanged       |
//!
//! # `experts.bin`
//!
//! No header. It holds one record per (layer, expert), in layer-major order: the layers of
//! `moe_layers` ascending, and within a layer experts `0..E`. Record `i` in that order starts at
//! byte `i * align(record_bytes, alignment)` (`alignment` = 4096, the page size and a multiple
//! of every disk's sector size). The bytes between records are zero. The file ends right after
//! the last record. Readers take each record's `offset` from `pack.json` and check it, without
//! recomputing it. A record is `record_bytes` bytes in the pack's `quant`, laid out by
//! [`ExpertLayout`] (all matrices row-major, each row whole blocks as in
//! [`crate::weights::quant`]):
//!
//! | record bytes                          | contents                                             |
//! |---------------------------------------|------------------------------------------------------|
//! | `0 .. G`                              | w1 (gate) `[F, C]`, then w3 (up) `[F, C]`: the `[2F, C]` gate_up |
//! | `G .. D0`                             | zeros, so that `D0 = align(G, 16)`                   |
//! | `D0 .. D0 + D`                        | w2 (down) `[C, F]`                                   |
//! | `D0 + D .. record_bytes`              | zeros, so that `record_bytes = align(D0 + D, 16)`    |
//!
//! with `G = 2F * row_bytes(C)` and `D = C * row_bytes(F)`. Q4_1 rows are `n / 32 * 20` bytes,
//! Q8_0 rows `n / 32 * 34`, F16 rows `2n`. Each record's `crc32` is the IEEE CRC-32 (zlib's,
//! as computed by `crc32fast`) of its `record_bytes` bytes, padding between records excluded.
//!
//! # `dense.safetensors`
//!
//! A standard safetensors file: a little-endian `u64` header length `N`, `N` bytes of JSON
//! header padded with spaces to a multiple of 8, then the data. It holds every source tensor
//! that is not an expert matrix (embeddings, attention, norms, routers, lm_head, and the saved
//! lightning decay buffers), under its source name. Each is copied byte for byte in its stored
//! dtype: no pack quantizes dense tensors yet. Tensors are stored back to back in name order,
//! so a sharded source and a single-file source give the same bytes. `__metadata__` is
//! `{"format": "pt"}`.
//!
//! # `pack.json`
//!
//! ```json
//! {"format": "minimax-expert-pack", "version": 1, "quant": "Q4_1" | "Q8_0" | "F16",
//!  "hidden": C, "ffn": F, "num_experts": E, "moe_layers": [0, 1, ...],
//!  "record_bytes": n, "alignment": 4096,
//!  "experts": [{"layer": l, "expert": e, "offset": o, "bytes": n, "crc32": c}, ...],
//!  "dense": {"file": "dense.safetensors", "bytes": b, "crc32": c},
//!  "source": {free-form: where the pack came from}}
//! ```
//!
//! `experts` lists every record in file order. `dense.crc32` covers the whole dense file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ExpertLayout;
use super::layout::align;
use crate::error::WeightsError;
use crate::weights::{ByteSource, SafetensorsSet, StoredDType};

/// `pack.json`'s `format`.
pub const FORMAT: &str = "minimax-expert-pack";
/// The version this code reads and writes.
pub const VERSION: u32 = 1;
/// Record alignment in `experts.bin`.
pub const ALIGNMENT: u64 = 4096;
pub const INDEX_FILE: &str = "pack.json";
pub const EXPERTS_FILE: &str = "experts.bin";
pub const DENSE_FILE: &str = "dense.safetensors";

/// One record of `experts.bin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertEntry {
    pub layer: usize,
    pub expert: usize,
    pub offset: u64,
    pub bytes: u64,
    pub crc32: u32,
}

/// The dense tensors' file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenseEntry {
    pub file: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// The contents of `pack.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackIndex {
    pub format: String,
    pub version: u32,
    /// `Q4_1`, `Q8_0` or `F16`.
    pub quant: String,
    pub hidden: usize,
    pub ffn: usize,
    pub num_experts: usize,
    pub moe_layers: Vec<usize>,
    pub record_bytes: u64,
    pub alignment: u64,
    pub experts: Vec<ExpertEntry>,
    pub dense: DenseEntry,
    #[serde(default)]
    pub source: serde_json::Value,
}

/// The formats a pack may store experts in, by their `pack.json` names.
pub fn pack_dtype(name: &str) -> Option<StoredDType> {
    [StoredDType::Q4_1, StoredDType::Q8_0, StoredDType::F16].into_iter().find(|d| d.name() == name)
}

/// Distance between record starts in `experts.bin`.
pub fn record_stride(record_bytes: u64, alignment: u64) -> u64 {
    align(record_bytes as usize, alignment as usize) as u64
}

/// The checksum of a record or file.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// An opened pack: its validated index and a source for `experts.bin`.
pub struct ExpertPack {
    index: PackIndex,
    layout: ExpertLayout,
    experts: Box<dyn ByteSource>,
    /// `experts.bin`'s path (or URL) for messages.
    name: String,
    /// The pack's directory, when it was opened from one.
    dir: Option<PathBuf>,
}

impl ExpertPack {
    /// Opens the pack in `dir`, reading `experts.bin` with positioned reads.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &Path) -> Result<Self, WeightsError> {
        let index_path = dir.join(INDEX_FILE);
        let text = std::fs::read_to_string(&index_path).map_err(|source| WeightsError::Io {
            path: index_path.display().to_string(),
            source,
        })?;
        let experts = crate::weights::file_source::FileSource::open(&dir.join(EXPERTS_FILE))?;
        let mut pack = Self::from_source(&text, Box::new(experts), &dir.display().to_string())?;
        pack.dir = Some(dir.to_path_buf());
        Ok(pack)
    }

    /// A pack from `pack.json`'s text and a source for `experts.bin` (a file natively; HTTP
    /// Range requests or OPFS in a browser). `name` (the pack's path or URL) labels errors.
    pub fn from_source(pack_json: &str, experts: Box<dyn ByteSource>, name: &str) -> Result<Self, WeightsError> {
        let base = name.trim_end_matches('/');
        let name = format!("{base}/{EXPERTS_FILE}");
        let bad = |reason: String| WeightsError::Format {
            path: format!("{base}/{INDEX_FILE}"),
            reason,
        };
        let index: PackIndex = serde_json::from_str(pack_json).map_err(|e| bad(e.to_string()))?;
        if index.format != FORMAT || index.version != VERSION {
            let (format, version) = (&index.format, index.version);
            return Err(bad(format!("format {format:?} version {version} is not {FORMAT:?} version {VERSION}")));
        }
        let dtype = pack_dtype(&index.quant).ok_or_else(|| bad(format!("unknown quant {:?}", index.quant)))?;
        let layout = ExpertLayout::new(dtype, index.hidden, index.ffn).map_err(bad)?;
        if index.record_bytes != layout.bytes() as u64 {
            let (q, c, f) = (&index.quant, index.hidden, index.ffn);
            return Err(bad(format!("record_bytes {} is not the {} bytes of a {q} {c}x{f} expert", index.record_bytes, layout.bytes())));
        }
        if !index.alignment.is_power_of_two() {
            return Err(bad(format!("alignment {} is not a power of two", index.alignment)));
        }
        if index.moe_layers.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad("moe_layers are not strictly ascending".into()));
        }
        let (layers, e) = (index.moe_layers.len(), index.num_experts);
        // At least one record, so that the sizes above are backed by bytes in experts.bin.
        if layers == 0 || e == 0 || layers.checked_mul(e) != Some(index.experts.len()) {
            return Err(bad(format!("{} records listed for {layers} layers of {e} experts", index.experts.len())));
        }
        let total = experts.len();
        let mut end = 0u64;
        for (i, entry) in index.experts.iter().enumerate() {
            let corrupt = |reason: String| WeightsError::CorruptExpert {
                path: name.clone(),
                layer: entry.layer,
                expert: entry.expert,
                offset: entry.offset,
                reason,
            };
            let want = (index.moe_layers[i / e], i % e);
            if (entry.layer, entry.expert) != want {
                return Err(corrupt(format!("listed where layer {} expert {} belongs (not layer-major)", want.0, want.1)));
            }
            if entry.bytes != index.record_bytes {
                return Err(corrupt(format!("{} bytes, not record_bytes {}", entry.bytes, index.record_bytes)));
            }
            if entry.offset % index.alignment != 0 || entry.offset < end {
                return Err(corrupt(format!("offset is not {}-aligned or overlaps the previous record", index.alignment)));
            }
            end = entry.offset.saturating_add(entry.bytes);
            if end > total {
                return Err(corrupt(format!("the record ends at byte {end}, past the end of the {total}-byte file (truncated?)")));
            }
        }
        if total != end {
            return Err(WeightsError::Format {
                path: name,
                reason: format!("{total} bytes, but pack.json's records end at byte {end}"),
            });
        }
        Ok(Self { index, layout, experts, name, dir: None })
    }

    pub fn layout(&self) -> ExpertLayout {
        self.layout
    }

    pub fn index(&self) -> &PackIndex {
        &self.index
    }

    /// The directory the pack was opened from (none for [`ExpertPack::from_source`]).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The index entry of one expert, if the pack has it.
    pub fn entry(&self, layer: usize, expert: usize) -> Option<&ExpertEntry> {
        let at = self.index.moe_layers.binary_search(&layer).ok()?;
        (expert < self.index.num_experts).then(|| &self.index.experts[at * self.index.num_experts + expert])
    }

    /// Reads one expert's record (`layout().bytes()` bytes) and checks its CRC.
    pub fn read_expert(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
        let mut bytes = vec![0u8; self.layout().bytes()];
        self.read_expert_into(layer, expert, &mut bytes)?;
        Ok(bytes)
    }

    /// [`Self::read_expert`] into `out` (the record's length), with one positioned read.
    pub fn read_expert_into(&self, layer: usize, expert: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        self.read_expert_part(layer, expert, 0, out)?;
        self.check_expert(layer, expert, crc32(out))
    }

    /// Bytes `start .. start + out.len()` of a record, unchecked (see [`Self::check_expert`]).
    pub fn read_expert_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        let entry = self.record_entry(layer, expert)?;
        if (start + out.len()) as u64 > entry.bytes {
            return Err(self.corrupt(layer, expert, entry, format!("bytes {start}..{} of a {}-byte record", start + out.len(), entry.bytes)));
        }
        self.experts
            .read_into(entry.offset + start as u64, out)
            .map_err(|e| self.corrupt(layer, expert, entry, e.to_string()))
    }

    /// Checks a record's CRC-32 (`crc`, of the bytes read) against pack.json.
    pub fn check_expert(&self, layer: usize, expert: usize, crc: u32) -> Result<(), WeightsError> {
        let entry = self.record_entry(layer, expert)?;
        if crc != entry.crc32 {
            let reason = format!("CRC-32 {crc:08x} does not match pack.json's {:08x} (corrupted file?)", entry.crc32);
            return Err(self.corrupt(layer, expert, entry, reason));
        }
        Ok(())
    }

    fn record_entry(&self, layer: usize, expert: usize) -> Result<&ExpertEntry, WeightsError> {
        let (layers, e) = (&self.index.moe_layers, self.index.num_experts);
        let entry = self.entry(layer, expert).ok_or_else(|| WeightsError::Format {
            path: self.name.clone(),
            reason: format!("no record for layer {layer} expert {expert} (layers {layers:?}, {e} experts each)"),
        })?;
        if entry.bytes != self.layout().bytes() as u64 {
            let reason = format!("pack.json gives {} bytes, the layout {}", entry.bytes, self.layout().bytes());
            return Err(self.corrupt(layer, expert, entry, reason));
        }
        Ok(entry)
    }

    fn corrupt(&self, layer: usize, expert: usize, entry: &ExpertEntry, reason: String) -> WeightsError {
        WeightsError::CorruptExpert {
            path: self.name.clone(),
            layer,
            expert,
            offset: entry.offset,
            reason,
        }
    }

    /// `dense.safetensors`'s length checked against pack.json (`name` labels the error).
    fn check_dense_len(&self, source: &dyn ByteSource, name: &str) -> Result<(), WeightsError> {
        let (found, want) = (source.len(), self.index.dense.bytes);
        (found == want).then_some(()).ok_or_else(|| WeightsError::Format {
            path: name.to_string(),
            reason: format!("{found} bytes, pack.json says {want} (truncated or from another pack?)"),
        })
    }

    /// The dense tensors, read from `source` (`dense.safetensors`; `name` labels errors).
    pub fn dense_store_from(&self, source: Box<dyn ByteSource>, name: &str) -> Result<SafetensorsSet, WeightsError> {
        self.check_dense_len(source.as_ref(), name)?;
        SafetensorsSet::from_sources([(name.to_string(), source)])
    }

    /// `dense.safetensors` beside `pack.json`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn dense_path(&self) -> Result<PathBuf, WeightsError> {
        let file = &self.index.dense.file;
        let bad = |reason: String| WeightsError::Format { path: self.name.clone(), reason };
        // pack.json is data: never let it name a file outside the pack.
        if file.is_empty() || file.contains(['/', '\\']) || file.starts_with('.') {
            return Err(bad(format!("dense file name {file:?} is not a plain file name")));
        }
        let dir = self.dir.as_ref().ok_or_else(|| bad("the pack was not opened from a directory".into()))?;
        Ok(dir.join(file))
    }

    /// The dense tensors as a [`crate::weights::TensorStore`], read with positioned reads.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn dense_store(&self) -> Result<SafetensorsSet, WeightsError> {
        let path = self.dense_path()?;
        let source = crate::weights::file_source::FileSource::open(&path)?;
        self.dense_store_from(Box::new(source), &path.display().to_string())
    }

    /// Reads the whole dense file from `source` in 8 MiB pieces and checks its length and
    /// CRC; `progress` gets the bytes checked so far.
    pub fn verify_dense(&self, source: &dyn ByteSource, progress: &mut dyn FnMut(u64)) -> Result<(), WeightsError> {
        let (name, total) = (&self.index.dense.file, self.index.dense.bytes);
        self.check_dense_len(source, name)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut at = 0;
        while at < total {
            let n = (total - at).min(8 << 20);
            hasher.update(&source.read(at, n as usize)?);
            at += n;
            progress(at);
        }
        let (found, want) = (hasher.finalize(), self.index.dense.crc32);
        (found == want).then_some(()).ok_or_else(|| WeightsError::Format {
            path: name.clone(),
            reason: format!("CRC-32 {found:08x} does not match pack.json's {want:08x} (corrupted file?)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::ShardBytes;
    use std::sync::Arc;

    /// A 2-layer, 2-expert Q8_0 pack of 32x32 experts in memory, with its index.
    fn pack() -> (PackIndex, Vec<u8>) {
        let layout = ExpertLayout::new(StoredDType::Q8_0, 32, 32).unwrap();
        let stride = record_stride(layout.bytes() as u64, ALIGNMENT);
        let (mut file, mut experts) = (Vec::new(), Vec::new());
        for (i, (layer, expert)) in [(1, 0), (1, 1), (3, 0), (3, 1)].into_iter().enumerate() {
            let w: Vec<f32> = (0..32 * 32).map(|j| ((i * 7 + j) % 13) as f32 - 6.0).collect();
            let record = layout.encode(&w, &w, &w);
            file.resize(i * stride as usize, 0);
            experts.push(ExpertEntry { layer, expert, offset: file.len() as u64, bytes: record.len() as u64, crc32: crc32(&record) });
            file.extend(record);
        }
        let dense = DenseEntry { file: DENSE_FILE.into(), bytes: 0, crc32: 0 };
        let index = PackIndex {
            format: FORMAT.into(), version: VERSION, quant: "Q8_0".into(), hidden: 32, ffn: 32, num_experts: 2,
            moe_layers: vec![1, 3], record_bytes: layout.bytes() as u64, alignment: ALIGNMENT, experts, dense,
            source: serde_json::Value::Null,
        };
        (index, file)
    }

    fn open(index: &PackIndex, file: Vec<u8>) -> Result<ExpertPack, WeightsError> {
        let source: Box<dyn ByteSource> = Box::new(Arc::new(file) as ShardBytes);
        ExpertPack::from_source(&serde_json::to_string(index).unwrap(), source, "mem")
    }

    #[test]
    fn reads_records_and_checks_crcs() {
        let (index, mut file) = pack();
        let p = open(&index, file.clone()).unwrap();
        let record = p.read_expert(3, 1).unwrap();
        assert_eq!(record.len(), p.layout().bytes());
        assert_eq!(p.index().experts[3].offset, 3 * ALIGNMENT, "3264-byte records are 4096 apart");
        assert!(p.read_expert(2, 0).is_err() && p.read_expert(1, 2).is_err());
        file[index.experts[2].offset as usize + 100] ^= 1;
        let err = open(&index, file).unwrap().read_expert(3, 0).unwrap_err().to_string();
        assert!(err.contains("layer 3, expert 0") && err.contains("byte 8192") && err.contains("CRC"), "{err}");
    }

    #[test]
    fn refuses_bad_indexes() {
        let (index, file) = pack();
        let fails = |index: &PackIndex, file: Vec<u8>, what: &str| {
            let err = open(index, file).err().expect(what).to_string();
            assert!(err.contains(what), "{err} should mention {what}");
        };
        fails(&index, file[..file.len() - 1].to_vec(), "layer 3, expert 1, record at byte 12288");
        fails(&index, [file.clone(), vec![0]].concat(), "records end at byte");
        let mut bad = index.clone();
        bad.version = 2;
        fails(&bad, file.clone(), "version 2");
        let mut bad = index.clone();
        bad.experts[1].offset += 16;
        fails(&bad, file.clone(), "aligned");
        let mut bad = index.clone();
        bad.experts.swap(0, 1);
        fails(&bad, file.clone(), "layer-major");
        let mut bad = index.clone();
        bad.record_bytes += 1;
        fails(&bad, file.clone(), "record_bytes");
        // Counts and offsets that would overflow, or no records to back the sizes.
        let mut bad = index.clone();
        bad.num_experts = usize::MAX / 2 + 1;
        fails(&bad, file.clone(), "records listed for 2 layers");
        let mut bad = index.clone();
        (bad.moe_layers, bad.num_experts, bad.experts) = (Vec::new(), 0, Vec::new());
        fails(&bad, Vec::new(), "0 records listed for 0 layers of 0 experts");
        let mut bad = index;
        bad.experts[3].offset = u64::MAX - 4095;
        fails(&bad, file, "past the end");
    }
}
