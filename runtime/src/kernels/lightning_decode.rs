//! `lightning_decode`: one token of lightning attention, `S' = λ S + kᵀ v` and `o = q S'`,
//! fused in one pass over the state. Its reference is the one-token case of
//! [`lightning_prefill::reference`](super::lightning_prefill::reference).
//!
//! The kernel also does the first half of the RMSNorm over all heads that follows: it returns
//! `o ⊙ norm` followed by partial sums of `o²` ([`Normed`]), and the output gate's matmul
//! finishes the norm in its epilogue ([`Epilogue::NormGate`](super::qgemv::Epilogue)). A norm
//! over all heads needs every head's `o`, which no workgroup of this kernel has; the gate's
//! matmul reads all of them anyway, so the norm costs no launch of its own.

use burn::backend::Dispatch;
use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Tensor};

use super::launch::{Wgsl, bind, dims, empty, dispatch, params};
use super::lightning_prefill::check;
use super::{Kernels, float, uses_wgsl};
use crate::error::KernelError;

/// Mirrors `Params` in `shaders/lightning_decode.wgsl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Params {
    pub heads: u32,
    pub col_tiles: u32,
    pub _pad0: u32,
    pub _pad1: u32,
}

/// Columns per workgroup (consecutive threads read consecutive state columns).
const COLS: usize = 32;
/// Row groups per workgroup: `COLS * ROWS` = 256 invocations.
const ROWS: usize = 8;

/// `o ⊙ norm` and partial sums of `o²`, `[1, H * D + P]`: the values, then `P ≥ 1` partial
/// sums whose total is `Σ o²` over all heads (how many is the kernel's business).
pub type Normed = Tensor<2>;

/// Splits a [`Normed`] output into `(o ⊙ norm [1, H * D], Σ o² [1, 1])` (tests and references).
pub fn split_normed(o: Normed, hd: usize) -> (Tensor<2>, Tensor<2>) {
    let width = o.dims()[1];
    (o.clone().narrow(1, 0, hd), o.narrow(1, hd, width - hd).sum_dim(1))
}

fn check_norm(norm: &Tensor<1>, state: &Tensor<3>) -> Result<(), KernelError> {
    let [h, d, _] = state.dims();
    if norm.dims() != [h * d] {
        return Err(KernelError::Shape {
            kernel: "lightning_decode",
            reason: format!("norm weight {:?} for {h} heads of {d}", norm.dims()),
        });
    }
    Ok(())
}

/// The `[1, 3 H D]` q | k | v of `qkv`, which may have more columns after them (a projection
/// fused with the output gate's): only the first `3 H D` are read.
fn qkv_columns(qkv: &Tensor<2>, state: &Tensor<3>) -> Tensor<2> {
    let [h, d, _] = state.dims();
    let width = qkv.dims()[1];
    if width > 3 * h * d { qkv.clone().narrow(1, 0, 3 * h * d) } else { qkv.clone() }
}

/// One decode step, with `norm` (`[H * D]`) the weight of the RMSNorm over all heads.
///
/// # Shapes
/// - `qkv`: `[1, ≥ H * 3 * D]` (columns past `3 H D` are not read); `state`: `[H, D, D]` f32;
///   `rates`: `[H]`; `norm`: `[H * D]`;
/// - returns `(o [1, H * D + P] (see [`Normed`]), state' [H, D, D])`.
pub fn lightning_decode(
    qkv: Tensor<2>,
    state: Tensor<3>,
    rates: &Tensor<1>,
    norm: &Tensor<1>,
) -> Result<(Normed, Tensor<3>), KernelError> {
    let (t, _, _) = check("lightning_decode", &qkv_columns(&qkv, &state), &state, rates)?;
    check_norm(norm, &state)?;
    if t != 1 {
        return Err(KernelError::Shape {
            kernel: "lightning_decode",
            reason: format!("decode takes one token, got {t}"),
        });
    }
    if !uses_wgsl(&qkv.device()) {
        let (o, s) = reference(qkv_columns(&qkv, &state), state, rates);
        return Ok((normed(o, norm), s));
    }
    let (o, s) = Dispatch::lightning_decode(
        qkv.into_dispatch(),
        state.into_dispatch(),
        rates.clone().into_dispatch(),
        norm.clone().into_dispatch(),
    );
    Ok((float(o), float(s)))
}

/// The reference's [`Normed`] output: `o ⊙ norm`, then `Σ o²` as one partial sum.
pub fn normed(o: Tensor<2>, norm: &Tensor<1>) -> Normed {
    let ss = o.clone().square().sum_dim(1);
    Tensor::cat(vec![o * norm.clone().unsqueeze_dim::<2>(0), ss], 1)
}

/// [`lightning_decode`] updating `state` in place (on wgpu; a decode step replayed from a graph
/// keeps its state in the buffers it was recorded with) and writing the state as it was into
/// `backup`, so that the step can be undone by taking `backup` as the state. Returns `o`
/// `[1, H * D + P]` ([`Normed`]). `qkv` is as for [`lightning_decode`]. On other backends the
/// tensors are replaced, with the same values.
pub fn lightning_decode_in_place(
    qkv: Tensor<2>,
    state: &mut Tensor<3>,
    backup: &mut Tensor<3>,
    rates: &Tensor<1>,
    norm: &Tensor<1>,
) -> Result<Normed, KernelError> {
    let (t, _, _) = check("lightning_decode", &qkv_columns(&qkv, state), state, rates)?;
    check_norm(norm, state)?;
    if t != 1 || backup.dims() != state.dims() {
        return Err(KernelError::Shape {
            kernel: "lightning_decode",
            reason: format!("decode takes one token, got {t}; backup {:?}", backup.dims()),
        });
    }
    if !uses_wgsl(&qkv.device()) {
        let (o, next) = reference(qkv_columns(&qkv, state), state.clone(), rates);
        *backup = std::mem::replace(state, next);
        return Ok(normed(o, norm));
    }
    Ok(float(Dispatch::lightning_decode_in_place(
        qkv.into_dispatch(),
        state.clone().into_dispatch(),
        backup.clone().into_dispatch(),
        rates.clone().into_dispatch(),
        norm.clone().into_dispatch(),
    )))
}

/// The reference: the recurrence for one token.
pub fn reference(qkv: Tensor<2>, state: Tensor<3>, rates: &Tensor<1>) -> (Tensor<2>, Tensor<3>) {
    super::lightning_prefill::reference(qkv, state, rates, 1)
}

pub(super) fn launch(qkv: CubeTensor, state: CubeTensor, rates: CubeTensor, norm: CubeTensor) -> (CubeTensor, CubeTensor) {
    let state_out = empty(&qkv, dims(&state), DType::F32);
    let out = launch_into(qkv, state, rates, norm, state_out.clone(), false);
    (out, state_out)
}

/// In place: `state` is updated where it lies and `backup` receives it as it was.
pub(super) fn launch_in_place(
    qkv: CubeTensor,
    state: CubeTensor,
    backup: CubeTensor,
    rates: CubeTensor,
    norm: CubeTensor,
) -> CubeTensor {
    assert!(state.is_contiguous() && backup.is_contiguous(), "lightning_decode writes whole states in place");
    launch_into(qkv, state, rates, norm, backup, true)
}

fn launch_into(
    qkv: CubeTensor,
    state: CubeTensor,
    rates: CubeTensor,
    norm: CubeTensor,
    state_out: CubeTensor,
    in_place: bool,
) -> CubeTensor {
    let shape = state.meta.shape();
    let (h, d) = (shape[0], shape[1]);
    let cols = COLS.min(d.next_power_of_two());
    let col_tiles = d.div_ceil(cols);
    let (qkv, qb) = bind(qkv);
    let (_state, sb) = bind(state);
    let (_rates, rb) = bind(rates);
    let (_norm, nb) = bind(norm);
    // The values, then one partial Σ o² per workgroup.
    let out = empty(&qkv, [1, h * d + h * col_tiles], DType::F32);
    let p = Params {
        heads: h as u32,
        col_tiles: col_tiles as u32,
        _pad0: 0,
        _pad1: 0,
    };
    let kernel = Wgsl::new("lightning_decode", include_str!("../../../shaders/lightning_decode.wgsl"))
        .with("head_dim", d)
        .with("cols", cols)
        .with("rows", ROWS)
        .with("in_place", in_place);
    dispatch(
        &qkv,
        kernel,
        (cols * ROWS) as u32,
        cubecl::CubeCount::Static((h * col_tiles) as u32, 1, 1),
        vec![
            qb,
            sb,
            rb,
            out.handle.clone().binding(),
            state_out.handle.clone().binding(),
            nb,
        ],
        params(&p),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{diff, gpu, random};
    use burn::tensor::TensorData;

    /// `o ⊙ norm` against `want ⊙ norm`, and the partials' total against `Σ want²`
    /// (relative: the sum grows with H·D).
    fn check_normed(o: Normed, want: Tensor<2>, norm: &Tensor<1>, what: &str) {
        let hd = want.dims()[1];
        let (values, ss) = split_normed(o, hd);
        let (rvalues, rss) = split_normed(normed(want, norm), hd);
        let (ev, _) = diff(values, rvalues);
        let (_, ess) = diff(ss, rss);
        assert!(ev < 1e-3 && ess < 1e-4, "{what}: o {ev}, Σ o² relative {ess}");
    }

    fn norm_weight(n: usize, device: &burn::tensor::Device) -> Tensor<1> {
        random(99, [1, n], 1.0, device).reshape([n])
    }

    #[test]
    fn kernel_matches_reference_and_prefill() {
        let Some(device) = gpu() else { return };
        for (i, &(h, d)) in [(1, 4), (2, 16), (3, 20), (4, 128), (3, 40)].iter().enumerate() {
            let qkv = random(i as u64, [1, 3 * h * d], 1.0, &device);
            let state = random(i as u64 + 7, [h, d, d], 1.0, &device);
            let rates: Vec<f32> = (0..h).map(|x| 0.3 * (x as f32 + 1.0)).collect();
            let rates = Tensor::<1>::from_data(TensorData::new(rates, [h]), &device);
            let norm = norm_weight(h * d, &device);
            let (o, s) = lightning_decode(qkv.clone(), state.clone(), &rates, &norm).unwrap();
            // Columns after q | k | v (a fused projection's gate) are not read.
            let wider = Tensor::cat(vec![qkv.clone(), random(5, [1, h * d], 9.0, &device)], 1);
            let (ow, _) = lightning_decode(wider, state.clone(), &rates, &norm).unwrap();
            let (same, _) = diff(ow, o.clone());
            assert_eq!(same, 0.0, "H{h} D{d}: a wider qkv changed o");
            let (ro, rs) = reference(qkv.clone(), state.clone(), &rates);
            let (po, ps) = super::super::lightning_prefill::lightning_prefill(qkv, state, &rates, 16).unwrap();
            check_normed(o.clone(), ro, &norm, &format!("H{h} D{d}"));
            let (es, _) = diff(s.clone(), rs);
            assert!(es < 1e-5, "H{h} D{d}: state {es}");
            check_normed(o, po, &norm, &format!("decode vs prefill H{h} D{d}"));
            let (es, _) = diff(s, ps);
            assert!(es < 1e-5, "decode vs prefill H{h} D{d}: state {es}");
        }
    }

    #[test]
    fn in_place_update_keeps_the_old_state_as_backup() {
        let Some(device) = gpu() else { return };
        let (h, d) = (3, 20);
        let qkv = random(1, [1, 3 * h * d], 1.0, &device);
        let old = random(2, [h, d, d], 1.0, &device);
        let rates = Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.5, 2.0], [h]), &device);
        let norm = norm_weight(h * d, &device);
        let (ro, rs) = reference(qkv.clone(), old.clone(), &rates);
        // A copy, since the kernel writes the state's buffer.
        let mut state = old.clone() + 0.0;
        let mut backup = Tensor::<3>::zeros([h, d, d], &device);
        let o = lightning_decode_in_place(qkv, &mut state, &mut backup, &rates, &norm).unwrap();
        for (got, want, what) in [(state, rs, "state"), (backup, old, "backup")] {
            let (e, _) = diff(got, want);
            assert!(e < 1e-5, "{what}: {e}");
        }
        check_normed(o, ro, &norm, "in place");
    }
}
