//! The reference of `qgemv` in plain Burn ops (also the CPU path): the input read of each
//! [`XMode`], the epilogues, and the matmul over records decoded on the host.

use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::{Epilogue, Gated, XMode};
use crate::experts::QMatrix;
use crate::weights::quant;

/// An elementwise epilogue in plain Burn ops (the reference, and the path for many rows).
pub fn apply(y: Tensor<2>, epilogue: Epilogue) -> Tensor<2> {
    match epilogue {
        Epilogue::None => y,
        Epilogue::Silu => silu(y),
        Epilogue::Gate(o) => burn::tensor::activation::sigmoid(y) * o,
        Epilogue::NormGate { o, eps } => {
            let (n, width) = (y.dims()[1], o.dims()[1]);
            let inv = (o.clone().narrow(1, n, width - n).sum_dim(1) / n as f32 + eps).sqrt().recip();
            burn::tensor::activation::sigmoid(y) * o.narrow(1, 0, n) * inv
        }
        Epilogue::SiluSigmoid { split } => {
            let n = y.dims()[1];
            let split = split.min(n);
            let gate = burn::tensor::activation::sigmoid(y.clone().narrow(1, split, n - split));
            Tensor::cat(vec![silu(y.narrow(1, 0, split)), gate], 1)
        }
        Epilogue::Combine(_) => unreachable!("a combine sums pairs: see reference"),
    }
}

/// `xin` as a `[P, K]` tensor (the reference's input read).
pub(crate) fn xin(x: Tensor<2>, mode: XMode, k: usize) -> Tensor<2> {
    let [r, _] = x.dims();
    match mode {
        XMode::Rows { per } => x.unsqueeze_dim::<3>(1).repeat_dim(1, per as usize).reshape([r * per as usize, k]),
        XMode::SwiGlu => silu(x.clone().narrow(1, 0, k)) * x.narrow(1, k, k),
        XMode::NormGated { .. } => unreachable!("a gated input needs its gate: see norm_gated_input"),
    }
}

/// `xin` of [`XMode::NormGated`] as a `[T, K]` tensor (the reference's input read).
pub fn norm_gated_input(x: Tensor<2>, gated: &Gated, k: usize) -> Tensor<2> {
    let width = x.dims()[1];
    let inv = (x.clone().narrow(1, k, width - k).sum_dim(1) / k as f32 + gated.eps).sqrt().recip();
    x.narrow(1, 0, k) * gated.values.clone().narrow(1, gated.offset, k) * inv
}

/// Matrix `m` of the record at word `record` of `pool`, decoded on the host to `[N, K]`.
pub(crate) fn host_matrix(pool: &Tensor<1, Int>, record: usize, m: &QMatrix, device: &Device) -> Tensor<2> {
    let start = record + m.offset / 4;
    let words = m.bytes().div_ceil(4);
    let data = pool.clone().narrow(0, start, words).into_data().convert::<i64>();
    // Each word was stored as a signed or unsigned integer of at least 4 bytes: truncating to
    // u32 recovers its bits either way.
    let bytes: Vec<u8> = data.iter::<i64>().flat_map(|w| (w as u32).to_le_bytes()).collect();
    let w = quant::dequantize(m.dtype, &bytes[..m.bytes()]);
    Tensor::from_data(TensorData::new(w, [m.rows, m.cols]), device)
}

fn host_ints(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().try_to_vec::<i64>().expect("converted to i64")
}

/// The reference in plain Burn ops over host-decoded weights (also the CPU path): the pairs'
/// rows into `y` (zeros when `None`), then the epilogue (for a combine, the weighted sum per
/// token, added to `y` when given).
#[allow(clippy::too_many_arguments)]
pub fn reference(
    x: Tensor<2>,
    ids: Tensor<1, Int>,
    table: &Tensor<1, Int>,
    pool: &Tensor<1, Int>,
    y: Option<Tensor<2>>,
    epilogue: Epilogue,
    m: QMatrix,
    mode: XMode,
) -> Tensor<2> {
    let device = x.device();
    let xin = xin(x, mode, m.cols);
    let pairs = xin.dims()[0];
    let ids = host_ints(ids);
    let table = host_ints(table.clone());
    let mut rows = match (&epilogue, &y) {
        (Epilogue::Combine(_), _) | (_, None) => Tensor::zeros([pairs, m.rows], &device),
        (_, Some(y)) => y.clone(),
    };
    let mut experts: Vec<i64> = ids.clone();
    experts.sort_unstable();
    experts.dedup();
    for e in experts {
        let Some(&record) = usize::try_from(e).ok().and_then(|e| table.get(e)) else {
            continue;
        };
        if record as u32 == u32::MAX {
            continue;
        }
        let w = host_matrix(pool, record as u32 as usize, &m, &device);
        for (pair, _) in ids.iter().enumerate().filter(|(_, i)| **i == e) {
            let row = xin.clone().narrow(0, pair, 1).matmul(w.clone().transpose());
            rows = rows.slice_assign([pair..pair + 1, 0..m.rows], row);
        }
    }
    let Epilogue::Combine(weights) = epilogue else { return apply(rows, epilogue) };
    let [t, g] = weights.dims();
    let sum = (rows.reshape([t, g, m.rows]) * weights.reshape([t, g, 1])).sum_dim(1).reshape([t, m.rows]);
    match y {
        Some(y) => y + sum,
        None => sum,
    }
}

