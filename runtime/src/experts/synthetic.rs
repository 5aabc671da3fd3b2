//! Random expert records held in host memory, for benchmarks of models too large to convert:
//! `minimax bench --synthetic text01 --experts q4` streams these exactly as it would stream a
//! pack's records, minus the disk. A few distinct records are generated and shared by all
//! experts, which keeps host memory small; copying one into a slot costs the same.

use std::sync::Arc;

use rand::{RngExt, SeedableRng, rngs::StdRng};

use super::cache::ExpertSource;
use super::layout::ExpertLayout;
use crate::error::WeightsError;
use crate::weights::StoredDType;
use crate::weights::quant::QK;

pub struct SyntheticExperts {
    layout: ExpertLayout,
    num_experts: usize,
    records: Vec<Arc<Vec<u8>>>,
}

impl SyntheticExperts {
    /// `distinct` random records of `layout`, with weights of roughly N(0, std²)'s scale.
    pub fn new(layout: ExpertLayout, num_experts: usize, distinct: usize, std: f32) -> Self {
        let records = (0..distinct.max(1))
            .map(|i| Arc::new(random_record(&layout, i as u64, std)))
            .collect();
        Self {
            layout,
            num_experts,
            records,
        }
    }
}

/// A random record: each matrix from [`random_matrix`].
fn random_record(layout: &ExpertLayout, seed: u64, std: f32) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ seed);
    let mut bytes = vec![0u8; layout.bytes()];
    for m in [layout.gate_up(), layout.down()] {
        let matrix = random_matrix(m.dtype, m.rows, m.cols, rng.random(), std);
        bytes[m.offset..m.offset + m.bytes()].copy_from_slice(&matrix);
    }
    bytes
}

/// A random `[rows, cols]` matrix stored as `dtype`, with weights of roughly N(0, std²)'s
/// scale. Quantized blocks get random bytes for the quants (fast: no float is drawn), then
/// every block's f16 scale (and minimum) is set so that values span about ±2·std.
pub fn random_matrix(dtype: StoredDType, rows: usize, cols: usize, seed: u64, std: f32) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let len = dtype.row_bytes(cols).expect("whole blocks") * rows;
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match dtype {
        StoredDType::Q8_0 | StoredDType::Q4_1 => {
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes[..]);
            for block in bytes.chunks_exact_mut(dtype.block_bytes()) {
                if dtype == StoredDType::Q8_0 {
                    block[..2].copy_from_slice(&f16(2.0 * std / 127.0));
                } else {
                    block[..2].copy_from_slice(&f16(4.0 * std / 15.0));
                    block[2..4].copy_from_slice(&f16(-2.0 * std));
                }
            }
            debug_assert!(cols % QK == 0);
            bytes
        }
        StoredDType::F16 | StoredDType::F32 => {
            let values: Vec<f32> = (0..rows * cols).map(|_| rng.random_range(-2.0 * std..2.0 * std)).collect();
            crate::weights::quantize::quantize(dtype, &values)
        }
        _ => unreachable!("no random {} matrices", dtype.name()),
    }
}

impl ExpertSource for SyntheticExperts {
    fn layout(&self) -> ExpertLayout {
        self.layout
    }

    fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
        let i = (layer * self.num_experts + expert) % self.records.len();
        Ok(self.records[i].as_ref().clone())
    }

    fn read_into(&self, layer: usize, expert: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        self.read_part(layer, expert, 0, out)
    }

    fn read_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
        let i = (layer * self.num_experts + expert) % self.records.len();
        out.copy_from_slice(&self.records[i][start..start + out.len()]);
        Ok(())
    }
}
