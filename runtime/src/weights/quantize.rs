//! The encoding side of [`super::quant`]: f32 values into the block formats the GPU kernels
//! read. Rounding follows ggml's reference quantizers (`quantize_row_q8_0_ref`,
//! `quantize_row_q4_1_ref`), so a pack made here and a GGUF made by llama.cpp agree.

use super::StoredDType;
use super::quant::QK;

/// Encodes `values` (whole blocks of 32 for the quantized formats) as `dtype`.
///
/// # Panics
/// For BF16 and Q4_0 (not produced by the runtime) and when a quantized format gets a length
/// that is not a multiple of 32.
pub fn quantize(dtype: StoredDType, values: &[f32]) -> Vec<u8> {
    match dtype {
        StoredDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        StoredDType::F16 => values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect(),
        StoredDType::Q8_0 => blocks(values).flat_map(q8_0).collect(),
        StoredDType::Q4_1 => blocks(values).flat_map(q4_1).collect(),
        StoredDType::BF16 | StoredDType::Q4_0 => panic!("the runtime does not encode {}", dtype.name()),
    }
}

fn blocks(values: &[f32]) -> std::slice::ChunksExact<'_, f32> {
    assert!(values.len() % QK == 0, "{} values are not whole blocks of {QK}", values.len());
    values.chunks_exact(QK)
}

/// `d = max|x| / 127`, `q = round(x / d)`.
fn q8_0(x: &[f32]) -> Vec<u8> {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut out = half::f16::from_f32(d).to_le_bytes().to_vec();
    out.extend(x.iter().map(|v| (v * id).round() as i8 as u8));
    out
}

/// `d = (max - min) / 15`, `q = round((x - min) / d)` clamped to 0..=15; element j in the low
/// nibble of byte j, element j + 16 in its high nibble.
fn q4_1(x: &[f32]) -> Vec<u8> {
    let (min, max) = x.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let q = |v: f32| (((v - min) * id + 0.5) as u8).min(15);
    let mut out = half::f16::from_f32(d).to_le_bytes().to_vec();
    out.extend(half::f16::from_f32(min).to_le_bytes());
    out.extend((0..QK / 2).map(|j| q(x[j]) | (q(x[j + QK / 2]) << 4)));
    out
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
}
