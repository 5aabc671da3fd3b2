//! Block formats of stored tensors, as data: the one place that knows how many elements and
//! bytes a block has, and how a block decodes.
//!
//! The quantized formats are ggml's (llama.cpp), bit for bit, so GGUF tensors are used as
//! stored. They are also the runtime's own q8/q4 formats for GPU kernels. A row of `cols`
//! elements is `cols / 32` blocks back to back (`cols` must be a multiple of 32). All numbers are
//! little-endian; `f16` is IEEE binary16.
//!
//! | format | block bytes | layout of one block of 32 elements                  | element j          |
//! |--------|-------------|-----------------------------------------------------|--------------------|
//! | Q8_0   | 34          | `d: f16`, `q: [i8; 32]`                             | `d * q[j]`         |
//! | Q4_0   | 18          | `d: f16`, `q: [u8; 16]`                             | `d * (nib(j) - 8)` |
//! | Q4_1   | 20          | `d: f16`, `m: f16`, `q: [u8; 16]`                   | `d * nib(j) + m`   |
//!
//! with `nib(j) = q[j] & 0xF` for `j < 16` and `q[j - 16] >> 4` for `j >= 16`: the low nibbles
//! hold the first half of the block, the high nibbles the second half (not interleaved). The
//! products are f32 products of the f16 scale widened to f32, with no fused multiply-add, which
//! is what ggml and `gguf.quants.dequantize` compute.
//!
//! Blocks are only 2-byte aligned (34, 18 and 20 bytes), so a shader reading a row as `u32`s
//! must assemble the scale of odd blocks from two words.
//!
//! F32, F16 and BF16 are "blocks" of one element.

use super::StoredDType;

/// Elements in one block of every quantized format.
pub const QK: usize = 32;

impl StoredDType {
    /// Elements per block (1 for F32, F16 and BF16).
    pub const fn block_elems(self) -> usize {
        match self {
            StoredDType::F32 | StoredDType::F16 | StoredDType::BF16 => 1,
            StoredDType::Q8_0 | StoredDType::Q4_0 | StoredDType::Q4_1 => QK,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            StoredDType::F32 => 4,
            StoredDType::F16 | StoredDType::BF16 => 2,
            StoredDType::Q8_0 => 2 + QK,
            StoredDType::Q4_0 => 2 + QK / 2,
            StoredDType::Q4_1 => 4 + QK / 2,
        }
    }

    /// Whether the format has per-block scales (rows must then be whole blocks).
    pub const fn is_quantized(self) -> bool {
        self.block_elems() > 1
    }

    /// The block format the kernels run a stored one as (blocks are never quantized again):
    /// Q8_0 as stored, Q4_0 (rewritten losslessly) and Q4_1 as Q4_1; `None` for floats.
    pub const fn runs_as(self) -> Option<Self> {
        match self {
            StoredDType::Q8_0 => Some(StoredDType::Q8_0),
            StoredDType::Q4_0 | StoredDType::Q4_1 => Some(StoredDType::Q4_1),
            _ => None,
        }
    }

    /// Bytes of one row of `cols` elements; `None` unless `cols` is a whole number of blocks
    /// and the byte count fits a `usize` (`cols` may come from a file).
    pub const fn row_bytes(self, cols: usize) -> Option<usize> {
        if cols % self.block_elems() == 0 {
            (cols / self.block_elems()).checked_mul(self.block_bytes())
        } else {
            None
        }
    }

    /// The ggml name of the format (as llama.cpp prints it).
    pub const fn name(self) -> &'static str {
        match self {
            StoredDType::F32 => "F32",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
            StoredDType::Q8_0 => "Q8_0",
            StoredDType::Q4_0 => "Q4_0",
            StoredDType::Q4_1 => "Q4_1",
        }
    }
}

/// A ggml tensor type as numbered in GGUF files, with its block geometry, known for every type
/// so that a file can be checked even where its tensors cannot be decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType {
    pub id: u32,
    pub name: &'static str,
    pub block_elems: usize,
    pub block_bytes: usize,
}

/// `(id, name, elements per block, bytes per block)`, from ggml's `type_traits` (ggml.c).
const GGML_TYPES: [(u32, &str, usize, usize); 34] = [
    (0, "F32", 1, 4),
    (1, "F16", 1, 2),
    (2, "Q4_0", 32, 18),
    (3, "Q4_1", 32, 20),
    (6, "Q5_0", 32, 22),
    (7, "Q5_1", 32, 24),
    (8, "Q8_0", 32, 34),
    (9, "Q8_1", 32, 40),
    (10, "Q2_K", 256, 84),
    (11, "Q3_K", 256, 110),
    (12, "Q4_K", 256, 144),
    (13, "Q5_K", 256, 176),
    (14, "Q6_K", 256, 210),
    (15, "Q8_K", 256, 292),
    (16, "IQ2_XXS", 256, 66),
    (17, "IQ2_XS", 256, 74),
    (18, "IQ3_XXS", 256, 98),
    (19, "IQ1_S", 256, 50),
    (20, "IQ4_NL", 32, 18),
    (21, "IQ3_S", 256, 110),
    (22, "IQ2_S", 256, 82),
    (23, "IQ4_XS", 256, 136),
    (24, "I8", 1, 1),
    (25, "I16", 1, 2),
    (26, "I32", 1, 4),
    (27, "I64", 1, 8),
    (28, "F64", 1, 8),
    (29, "IQ1_M", 256, 56),
    (30, "BF16", 1, 2),
    (34, "TQ1_0", 256, 54),
    (35, "TQ2_0", 256, 66),
    (39, "MXFP4", 32, 17),
    (40, "NVFP4", 64, 36),
    (41, "Q1_0", 128, 18),
];

impl GgmlType {
    /// The type numbered `id`, if ggml has one.
    pub fn from_id(id: u32) -> Option<Self> {
        GGML_TYPES.iter().find(|t| t.0 == id).map(|&(id, name, block_elems, block_bytes)| GgmlType {
            id,
            name,
            block_elems,
            block_bytes,
        })
    }

    /// The stored type this decodes as, if supported.
    pub fn stored(self) -> Option<StoredDType> {
        Some(match self.id {
            0 => StoredDType::F32,
            1 => StoredDType::F16,
            2 => StoredDType::Q4_0,
            3 => StoredDType::Q4_1,
            8 => StoredDType::Q8_0,
            30 => StoredDType::BF16,
            _ => return None,
        })
    }
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// One Q8_0 block (34 bytes) into 32 values.
pub fn decode_q8_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    for (o, &q) in out[..QK].iter_mut().zip(&block[2..2 + QK]) {
        *o = d * f32::from(q as i8);
    }
}

/// One Q4_0 block (18 bytes) into 32 values.
pub fn decode_q4_0(block: &[u8], out: &mut [f32]) {
    let d = f16_at(block, 0);
    for (j, &q) in block[2..2 + QK / 2].iter().enumerate() {
        out[j] = d * f32::from((q & 0xF) as i8 - 8);
        out[j + QK / 2] = d * f32::from((q >> 4) as i8 - 8);
    }
}

/// One Q4_1 block (20 bytes) into 32 values.
pub fn decode_q4_1(block: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(block, 0), f16_at(block, 2));
    for (j, &q) in block[4..4 + QK / 2].iter().enumerate() {
        out[j] = d * f32::from(q & 0xF) + m;
        out[j + QK / 2] = d * f32::from(q >> 4) + m;
    }
}

/// Q4_0 blocks rewritten as Q4_1 with the same values: `d·(q − 8) = d·q + m` with `m = −8d`,
/// which f16 holds exactly (a power-of-two multiple) unless it overflows; `None` then. The
/// nibble order is the same in both formats.
pub fn q4_0_to_q4_1(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / 18 * 20);
    for block in bytes.chunks_exact(StoredDType::Q4_0.block_bytes()) {
        let m = half::f16::from_f32(-8.0 * f16_at(block, 0));
        if !m.is_finite() {
            return None;
        }
        out.extend_from_slice(&block[..2]);
        out.extend_from_slice(&m.to_le_bytes());
        out.extend_from_slice(&block[2..]);
    }
    Some(out)
}

/// Decodes whole blocks of `dtype` to f32 (little-endian storage; works on unaligned bytes).
/// A trailing partial block is ignored.
pub fn dequantize(dtype: StoredDType, bytes: &[u8]) -> Vec<f32> {
    let blocks = bytes.chunks_exact(dtype.block_bytes());
    match dtype {
        StoredDType::F32 => blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        StoredDType::F16 => blocks.map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        StoredDType::BF16 => blocks.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        StoredDType::Q8_0 | StoredDType::Q4_0 | StoredDType::Q4_1 => {
            let decode = match dtype {
                StoredDType::Q8_0 => decode_q8_0,
                StoredDType::Q4_0 => decode_q4_0,
                _ => decode_q4_1,
            };
            let mut out = vec![0.0; blocks.len() * QK];
            for (block, o) in blocks.zip(out.chunks_exact_mut(QK)) {
                decode(block, o);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn geometry() {
        assert_eq!(StoredDType::Q8_0.row_bytes(64), Some(68));
        assert_eq!(StoredDType::Q4_0.row_bytes(96), Some(54));
        assert_eq!(StoredDType::Q4_1.row_bytes(32), Some(20));
        assert_eq!(StoredDType::F16.row_bytes(3), Some(6));
        assert_eq!(StoredDType::Q4_0.row_bytes(48), None);
        // A column count from a file that overflows the row's bytes.
        assert_eq!(StoredDType::F32.row_bytes(usize::MAX / 2), None);
        for t in [StoredDType::F32, StoredDType::F16, StoredDType::BF16, StoredDType::Q8_0, StoredDType::Q4_0, StoredDType::Q4_1] {
            let g = GGML_TYPES.iter().find(|g| g.1 == t.name()).unwrap();
            assert_eq!((g.2, g.3), (t.block_elems(), t.block_bytes()), "{}", t.name());
            assert_eq!(GgmlType::from_id(g.0).unwrap().stored(), Some(t));
        }
        assert_eq!(GgmlType::from_id(12).map(|t| (t.name, t.stored())), Some(("Q4_K", None)));
        assert_eq!(GgmlType::from_id(4), None, "ids 4 and 5 were removed from ggml");
    }

    #[test]
    fn q4_0_rewrites_as_q4_1_exactly() {
        let mut bytes = Vec::new();
        for (b, d) in [0.25f32, -3.5, 1e-3].into_iter().enumerate() {
            bytes.extend(f16(d));
            bytes.extend((0..16).map(|j| (j * 17 + b * 5) as u8));
        }
        let q41 = q4_0_to_q4_1(&bytes).unwrap();
        assert_eq!(q41.len(), 3 * 20);
        assert_eq!(dequantize(StoredDType::Q4_1, &q41), dequantize(StoredDType::Q4_0, &bytes));
        let mut huge = f16(60000.0).to_vec();
        huge.extend([0u8; 16]);
        assert_eq!(q4_0_to_q4_1(&huge), None, "-8d overflows f16");
    }

    #[test]
    fn q8_0_block() {
        let mut block = f16(0.5).to_vec();
        block.extend((0..32).map(|j| (j as i8 * 4 - 64) as u8));
        let x = dequantize(StoredDType::Q8_0, &block);
        let want: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 * 4.0 - 64.0)).collect();
        assert_eq!(x, want);
        assert_eq!((x[0], x[31]), (-32.0, 30.0));
    }

    #[test]
    fn q4_0_block_nibble_order() {
        // Byte j holds element j (low nibble) and element j + 16 (high nibble).
        let mut block = f16(0.25).to_vec();
        block.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let x = dequantize(StoredDType::Q4_0, &block);
        for j in 0..16 {
            assert_eq!(x[j], 0.25 * (j as f32 - 8.0), "element {j}");
            assert_eq!(x[j + 16], 0.25 * (7.0 - j as f32), "element {}", j + 16);
        }
    }

    #[test]
    fn q4_1_block_and_rows() {
        let block = |d: f32, m: f32| {
            let mut b = [f16(d), f16(m)].concat();
            b.extend((0..16u8).map(|j| j | (j << 4)));
            b
        };
        let two = [block(2.0, -1.5), block(-0.5, 3.0)].concat();
        let x = dequantize(StoredDType::Q4_1, &two);
        assert_eq!(x.len(), 64);
        for j in 0..16 {
            let q = j as f32;
            assert_eq!((x[j], x[j + 16]), (2.0 * q - 1.5, 2.0 * q - 1.5));
            assert_eq!((x[32 + j], x[48 + j]), (-0.5 * q + 3.0, -0.5 * q + 3.0));
        }
    }

    #[test]
    fn scale_is_an_f16() {
        // 0.1 is not an f16: the decoded scale is the f16 nearest to it, not 0.1.
        let mut block = f16(0.1).to_vec();
        block.extend([1u8; 32]);
        let x = dequantize(StoredDType::Q8_0, &block);
        assert_eq!(x[0], half::f16::from_f32(0.1).to_f32());
        assert_ne!(x[0], 0.1);
    }
}
