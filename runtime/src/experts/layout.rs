//! Where one expert's matrices sit inside its record: the same bytes in a pack file and in a
//! GPU cache slot, so a record is copied verbatim from disk (or an HTTP Range response) into a
//! slot and the kernels address it with a word offset.
//!
//! A record of an expert with hidden size `C` and FFN size `F`, in format `dtype`:
//!
//! | bytes                         | contents                                                     |
//! |-------------------------------|--------------------------------------------------------------|
//! | `0 .. G`                      | gate_up `[2F, C]`: rows `0..F` are w1 (gate), `F..2F` w3 (up) |
//! | `G .. G'` (`G'` = G to 16)    | zero padding                                                 |
//! | `G' .. G' + D`                | down `[C, F]` (w2)                                           |
//! | `G' + D .. bytes` (to 16)     | zero padding                                                 |
//!
//! Each matrix is row-major, each row `cols` elements encoded as in [`crate::weights::quant`]
//! (rows are whole blocks, so `C` and `F` must be multiples of 32 for q8/q4 and even for f16).
//! Matrices start on 16-byte boundaries so that kernels can read them as `u32` (or `vec4<u32>`)
//! words. Cache slots are [`ExpertLayout::slot_bytes`] apart: the record rounded up to 256
//! bytes, WebGPU's storage-offset alignment.

use crate::weights::StoredDType;

/// One matrix of an expert record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QMatrix {
    pub dtype: StoredDType,
    pub rows: usize,
    pub cols: usize,
    /// Byte offset inside the record (a multiple of 16).
    pub offset: usize,
}

impl QMatrix {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.dtype.row_bytes(self.cols).expect("checked by ExpertLayout::new")
    }

    /// Bytes of the whole matrix.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes()
    }
}

/// The record geometry shared by every expert of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpertLayout {
    pub dtype: StoredDType,
    /// `C`.
    pub hidden: usize,
    /// `F`.
    pub ffn: usize,
}

/// Records are padded to this many bytes between matrices.
pub const MATRIX_ALIGN: usize = 16;
/// Slot stride alignment in a GPU pool (WebGPU's `minStorageBufferOffsetAlignment`).
pub const SLOT_ALIGN: usize = 256;

pub(crate) const fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// The largest hidden or FFN size of an expert ([`crate::config::MAX_INTERMEDIATE`], the
/// config's own bound). Sizes come from files (`pack.json`); the bound, and the checked byte
/// counts in [`ExpertLayout::new`], keep [`ExpertLayout::bytes`] and
/// [`ExpertLayout::slot_bytes`] from overflowing, on wasm32 too.
pub const MAX_EXPERT_DIM: usize = crate::config::MAX_INTERMEDIATE;

impl ExpertLayout {
    /// Checks that both matrices' rows are whole blocks of `dtype`, and that the sizes are
    /// within [`MAX_EXPERT_DIM`].
    pub fn new(dtype: StoredDType, hidden: usize, ffn: usize) -> Result<Self, String> {
        let ok = |n: usize| dtype.row_bytes(n).is_some();
        if !matches!(dtype, StoredDType::F32 | StoredDType::F16 | StoredDType::Q8_0 | StoredDType::Q4_1) {
            return Err(format!("experts cannot be stored as {}", dtype.name()));
        }
        // The byte counts below (`bytes`, `slot_bytes`) must fit a usize, wasm32's included.
        let slot = || {
            let gate_up = ffn.checked_mul(2)?.checked_mul(dtype.row_bytes(hidden)?)?;
            let down = hidden.checked_mul(dtype.row_bytes(ffn)?)?;
            gate_up.checked_next_multiple_of(MATRIX_ALIGN)?.checked_add(down)?.checked_next_multiple_of(SLOT_ALIGN)
        };
        if hidden > MAX_EXPERT_DIM || ffn > MAX_EXPERT_DIM || (ok(hidden) && ok(ffn) && slot().is_none()) {
            return Err(format!("experts of {hidden}x{ffn} are larger than this runtime supports ({MAX_EXPERT_DIM})"));
        }
        if !ok(hidden) || !ok(ffn) || (dtype == StoredDType::F16 && (hidden % 2 != 0 || ffn % 2 != 0)) {
            let unit = if dtype.is_quantized() { dtype.block_elems() } else { 2 };
            return Err(format!(
                "{} experts need hidden size and FFN size in multiples of {unit} (got {hidden} and {ffn})",
                dtype.name()
            ));
        }
        Ok(Self { dtype, hidden, ffn })
    }

    /// `[2F, C]` at offset 0.
    pub fn gate_up(&self) -> QMatrix {
        QMatrix {
            dtype: self.dtype,
            rows: 2 * self.ffn,
            cols: self.hidden,
            offset: 0,
        }
    }

    /// `[C, F]` after gate_up.
    pub fn down(&self) -> QMatrix {
        QMatrix {
            dtype: self.dtype,
            rows: self.hidden,
            cols: self.ffn,
            offset: align(self.gate_up().bytes(), MATRIX_ALIGN),
        }
    }

    /// Bytes of a record (both matrices and their padding).
    pub fn bytes(&self) -> usize {
        let down = self.down();
        align(down.offset + down.bytes(), MATRIX_ALIGN)
    }

    /// Distance between cache slots.
    pub fn slot_bytes(&self) -> usize {
        align(self.bytes(), SLOT_ALIGN)
    }

    /// A record from the three f32 matrices `w1 [F, C]`, `w3 [F, C]`, `w2 [C, F]` (row-major).
    pub fn encode(&self, w1: &[f32], w3: &[f32], w2: &[f32]) -> Vec<u8> {
        let (c, f) = (self.hidden, self.ffn);
        assert_eq!((w1.len(), w3.len(), w2.len()), (f * c, f * c, c * f), "expert matrix sizes");
        let q = |v: &[f32]| crate::weights::quantize::quantize(self.dtype, v);
        self.assemble(&[q(w1), q(w3)].concat(), &q(w2))
    }

    /// A record from its two matrices already in the record's format: `gate_up` (w1's rows,
    /// then w3's) and `down`.
    pub fn assemble(&self, gate_up: &[u8], down: &[u8]) -> Vec<u8> {
        assert_eq!((gate_up.len(), down.len()), (self.gate_up().bytes(), self.down().bytes()), "expert matrix bytes");
        let mut out = gate_up.to_vec();
        out.resize(self.down().offset, 0);
        out.extend_from_slice(down);
        out.resize(self.bytes(), 0);
        out
    }

    /// The f32 matrices `(gate_up [2F, C], down [C, F])` of a record (the reference decoding).
    pub fn decode(&self, record: &[u8]) -> (Vec<f32>, Vec<f32>) {
        let (g, d) = (self.gate_up(), self.down());
        let dq = |m: QMatrix| crate::weights::quant::dequantize(m.dtype, &record[m.offset..m.offset + m.bytes()]);
        (dq(g), dq(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_geometry() {
        // Q8_0 rows of 64 are 68 bytes: gate_up [64, 64] is 4352 bytes, down [64, 32] 2176.
        let l = ExpertLayout::new(StoredDType::Q8_0, 64, 32).unwrap();
        assert_eq!((l.gate_up().bytes(), l.down().offset, l.down().bytes()), (4352, 4352, 2176));
        assert_eq!((l.bytes(), l.slot_bytes()), (6528, 6656));
        // An FFN of 16 is half a block.
        assert!(ExpertLayout::new(StoredDType::Q4_1, 96, 16).is_err());
        let l = ExpertLayout::new(StoredDType::F16, 6, 10).unwrap();
        assert_eq!((l.gate_up().bytes(), l.down().offset, l.bytes()), (240, 240, 368));
        assert!(ExpertLayout::new(StoredDType::Q4_0, 64, 64).is_err());
        // Sizes from a pack.json whose records would not fit a usize are refused.
        let e = ExpertLayout::new(StoredDType::F32, 1 << 40, 1 << 40).unwrap_err();
        assert!(e.contains("larger than this runtime supports"), "{e}");
        assert!(ExpertLayout::new(StoredDType::Q8_0, MAX_EXPERT_DIM, MAX_EXPERT_DIM).is_ok());
    }

    #[test]
    fn encode_then_decode() {
        let l = ExpertLayout::new(StoredDType::F32, 3, 2).unwrap();
        let w1 = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let w3 = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let w2 = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let record = l.encode(&w1, &w3, &w2);
        assert_eq!(record.len(), l.bytes());
        let (gu, d) = l.decode(&record);
        assert_eq!(gu, [w1, w3].concat());
        assert_eq!(d, w2);
    }
}
