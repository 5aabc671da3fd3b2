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

/// Random quantized blocks with sane scales: random bytes for the quants, then every block's
/// f16 scale (and minimum) set so that values span about ±2·std.
fn random_record(layout: &ExpertLayout, seed: u64, std: f32) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ seed);
    let mut bytes = vec![0u8; layout.bytes()];
    rng.fill(&mut bytes[..]);
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    for m in [layout.gate_up(), layout.down()] {
        let region = &mut bytes[m.offset..m.offset + m.bytes()];
        match m.dtype {
            StoredDType::Q8_0 => {
                for block in region.chunks_exact_mut(m.dtype.block_bytes()) {
                    block[..2].copy_from_slice(&f16(2.0 * std / 127.0));
                }
            }
            StoredDType::Q4_1 => {
                for block in region.chunks_exact_mut(m.dtype.block_bytes()) {
                    block[..2].copy_from_slice(&f16(4.0 * std / 15.0));
                    block[2..4].copy_from_slice(&f16(-2.0 * std));
                }
            }
            StoredDType::F16 | StoredDType::F32 => {
                let values: Vec<f32> = (0..m.rows * m.cols).map(|_| rng.random_range(-2.0 * std..2.0 * std)).collect();
                region.copy_from_slice(&crate::weights::quantize::quantize(m.dtype, &values));
            }
            _ => unreachable!("ExpertLayout::new admits no other format"),
        }
        debug_assert!(m.dtype.block_elems() == 1 || m.cols % QK == 0);
    }
    bytes
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
