//! The encoding side of [`super::quant`]: f32 values into the block formats the GPU kernels
//! read. Rounding follows ggml's reference quantizers (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_1_ref`), so a pack made here and a GGUF made by llama.cpp agree.

use super::StoredDType;
use super::quant::QK;

/// Encodes `values` (whole blocks of 32 for the quantized formats) as `dtype`, on all cores
/// natively (quantizing a checkpoint at load is otherwise minutes of one core).
///
/// # Panics
/// For BF16 and Q4_0 (not produced by the runtime) and when a quantized format gets a length
/// that is not a multiple of 32.
pub fn quantize(dtype: StoredDType, values: &[f32]) -> Vec<u8> {
    let (per, bytes): (usize, usize) = match dtype {
        StoredDType::F32 => (1, 4),
        StoredDType::F16 => (1, 2),
        StoredDType::Q8_0 => (QK, 34),
        StoredDType::Q4_1 => (QK, 20),
        StoredDType::BF16 | StoredDType::Q4_0 => panic!("the runtime does not encode {}", dtype.name()),
    };
    assert!(values.len() % per == 0, "{} values are not whole blocks of {per}", values.len());
    let mut out = vec![0u8; values.len() / per * bytes];
    let encode = |x: &[f32], o: &mut [u8]| {
        for (x, o) in x.chunks_exact(per).zip(o.chunks_exact_mut(bytes)) {
            match dtype {
                StoredDType::F32 => o.copy_from_slice(&x[0].to_le_bytes()),
                StoredDType::F16 => o.copy_from_slice(&half::f16::from_f32(x[0]).to_le_bytes()),
                StoredDType::Q8_0 => q8_0(x, o),
                _ => q4_1(x, o),
            }
        }
    };
    // Blocks are independent: split them over threads in whole blocks (wasm has one thread).
    let threads = if cfg!(target_arch = "wasm32") || values.len() < 1 << 16 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let blocks = (values.len() / per).div_ceil(threads).max(1);
    if threads == 1 {
        encode(values, &mut out);
    } else {
        std::thread::scope(|scope| {
            for (x, o) in values.chunks(blocks * per).zip(out.chunks_mut(blocks * bytes)) {
                scope.spawn(move || encode(x, o));
            }
        });
    }
    out
}

/// `d = max|x| / 127`, `q = round(x / d)`.
fn q8_0(x: &[f32], out: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    for (o, v) in out[2..].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// `d = (max - min) / 15`, `q = round((x - min) / d)` clamped to 0..=15; element j in the low
/// nibble of byte j, element j + 16 in its high nibble.
fn q4_1(x: &[f32], out: &mut [u8]) {
    let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| (((v - min) * id + 0.5) as u8).min(15);
    out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
    out[2..4].copy_from_slice(&half::f16::from_f32(min).to_le_bytes());
    for j in 0..QK / 2 {
        out[4 + j] = q(x[j]) | (q(x[j + QK / 2]) << 4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::quant::dequantize;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect()
    }

    #[test]
    fn round_trips_within_half_a_step() {
        let x = ramp(96);
        for dtype in [StoredDType::Q8_0, StoredDType::Q4_1] {
            let bytes = quantize(dtype, &x);
            assert_eq!(Some(bytes.len()), dtype.row_bytes(96));
            let y = dequantize(dtype, &bytes);
            for (b, (xs, ys)) in x.chunks(QK).zip(y.chunks(QK)).enumerate() {
                let (lo, hi) = xs.iter().fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let step = match dtype {
                    StoredDType::Q8_0 => hi.abs().max(lo.abs()) / 127.0,
                    _ => (hi - lo) / 15.0,
                };
                for (a, b2) in xs.iter().zip(ys) {
                    // Half a step, plus the f16 rounding of the scale (and minimum).
                    assert!((a - b2).abs() <= 0.5 * step * 1.01 + 2e-3, "{} block {b}: {a} vs {b2}", dtype.name());
                }
            }
        }
        assert_eq!(dequantize(StoredDType::F16, &quantize(StoredDType::F16, &[1.5, -2.0])), vec![1.5, -2.0]);
    }

    #[test]
    fn constant_blocks_are_exact() {
        let zeros = vec![0.0; 32];
        assert_eq!(dequantize(StoredDType::Q8_0, &quantize(StoredDType::Q8_0, &zeros)), zeros);
        let sevens = vec![7.0; 32];
        assert_eq!(dequantize(StoredDType::Q4_1, &quantize(StoredDType::Q4_1, &sevens)), sevens);
    }

    /// A long input is encoded on several threads in pieces of whole blocks: the pieces must
    /// join into exactly the bytes that encoding block by block gives.
    #[test]
    fn threaded_encoding_matches_block_by_block() {
        let x = ramp(QK * 5003); // an odd number of blocks, past the threading threshold
        for dtype in [StoredDType::Q8_0, StoredDType::Q4_1, StoredDType::F16] {
            let whole = quantize(dtype, &x);
            let blockwise: Vec<u8> = x.chunks(QK).flat_map(|b| quantize(dtype, b)).collect();
            assert_eq!(whole, blockwise, "{}", dtype.name());
        }
    }
}
