//! Tests of `qgemv` (a file of their own: the kernel module is long enough).

use super::*;
use crate::kernels::testing::{check, diff, expert_pool, gpu, ints, random, wgsl_fields};
use crate::weights::quant;

pub const FORMATS: [StoredDType; 4] = [StoredDType::F32, StoredDType::F16, StoredDType::Q8_0, StoredDType::Q4_1];

/// The launches to compare against the reference: the default, the portable tree
/// reduction at the smallest and largest workgroups, and subgroups where the adapter has them.
fn launches() -> Vec<Option<Launch>> {
    let mut v = vec![None];
    for workgroup in [32, 256] {
        v.push(Some(Launch { workgroup, subgroups: false, unroll: None }));
    }
    if crate::device::has_subgroups() {
        v.push(Some(Launch { workgroup: 64, subgroups: true, unroll: None }));
    }
    v
}

#[test]
fn kernel_matches_reference() {
    let Some(device) = gpu() else { return };
    // Experts 0..5 at scattered slots, expert 2 in another pool.
    let slots = [Some(3), Some(0), None, Some(1), Some(4)];
    let ids = [4, 1, 0, 2, 3, 1];
    for (i, dtype) in FORMATS.into_iter().enumerate() {
        // 96 and 160 columns are 3 and 5 blocks (odd blocks shift Q8_0 rows off words), and
        // take the 16-byte reads; F32 and F16 rows of 44 and 42 columns end in a ragged unit
        // of 8 and take scalar reads.
        let mut shapes = vec![(96, 160)];
        if dtype.is_quantized() {
            shapes.push((160, 96));
        } else {
            shapes.push((44, 42));
        }
        for (hidden, ffn) in shapes {
            let (layout, words, table) = expert_pool(i as u64, dtype, hidden, ffn, &slots);
            let (pool, table) = (ints(&words, &device), ints(&table, &device));
            // A 37-row prefix of gate_up: N is not a multiple of ROWS.
            let g = layout.gate_up();
            for m in [g, QMatrix { rows: 37, ..g }, layout.down()] {
                for (mode, p, x_rows, x_cols) in [
                    (XMode::Rows { per: 1 }, 5, 5, m.cols),
                    (XMode::Rows { per: 2 }, 6, 3, m.cols),
                    (XMode::SwiGlu, 3, 3, 2 * m.cols),
                ] {
                    for launch in launches() {
                        let what = format!("{} {hidden}x{ffn} {m:?} {mode:?} {launch:?}", dtype.name());
                        let x = random(7 + i as u64, [x_rows, x_cols], 1.0, &device);
                        let pair_ids = ints(&ids[..p], &device);
                        let y0 = random(11, [p, m.rows], 1.0, &device);
                        let words = Pool::Words(&pool);
                        let y = run(x.clone(), pair_ids.clone(), &table, words, Some(y0.clone()), Epilogue::None, m, mode, launch)
                            .unwrap();
                        let r = reference(x.clone(), pair_ids.clone(), &table, &pool, Some(y0.clone()), Epilogue::None, m, mode);
                        // The pair of expert 2 keeps its row exactly.
                        if let Some(j) = ids[..p].iter().position(|&e| e == 2) {
                            let (d, _) = diff(y.clone().narrow(0, j, 1), y0.narrow(0, j, 1));
                            assert_eq!(d, 0.0, "{what}: a row of an absent expert changed");
                        }
                        check(y, r, &what);
                        // Combined per token of `per` pairs (pairs of expert 2 add nothing),
                        // written fresh and then added to.
                        if let XMode::Rows { per: 2 } = mode {
                            let w = random(13, [3, 2], 1.0, &device);
                            let combine = || Epilogue::Combine(w.clone());
                            let fresh = run(x.clone(), pair_ids.clone(), &table, words, None, combine(), m, mode, launch).unwrap();
                            let want = reference(x.clone(), pair_ids.clone(), &table, &pool, None, combine(), m, mode);
                            check(fresh, want.clone(), &format!("{what} combined"));
                            let base = random(17, [3, m.rows], 1.0, &device);
                            let added = run(x.clone(), pair_ids.clone(), &table, words, Some(base.clone()), combine(), m, mode, launch)
                                .unwrap();
                            check(added, want + base, &format!("{what} combined, accumulated"));
                            // The elementwise epilogues, on pairs whose experts are all here.
                            let present = ints(&[4, 1, 0, 3, 3, 1], &device);
                            let o = random(19, [6, m.rows], 1.0, &device);
                            // Normed: values, then partial sums of squares (non-negative).
                            let normed = random(23, [6, m.rows + 37], 1.0, &device).abs();
                            let split = Epilogue::SiluSigmoid { split: m.rows / 2 + 3 };
                            for epilogue in [Epilogue::Silu, Epilogue::Gate(o), Epilogue::NormGate { o: normed, eps: 1e-6 }, split] {
                                let got = run(x.clone(), present.clone(), &table, words, None, epilogue.clone(), m, mode, launch).unwrap();
                                let want = reference(x.clone(), present.clone(), &table, &pool, None, epilogue.clone(), m, mode);
                                check(got, want, &format!("{what} {epilogue:?}"));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// out_proj's gated input ([`XMode::NormGated`]): normalised values times a gate read from
/// another tensor at an offset, in every format, against the input formed first; partial sums
/// fewer and more than a workgroup's threads, rows not a multiple of 8 columns.
#[test]
fn norm_gated_input_matches_reference() {
    let Some(device) = gpu() else { return };
    for dtype in FORMATS {
        for (n, k) in [(19, 96), (40, 32 * 6)] {
            let bytes = crate::experts::synthetic::random_matrix(dtype, n, k, 9, 0.1);
            let words = crate::weights::quantized::words(bytes.clone(), &device);
            let m = QMatrix { dtype, rows: n, cols: k, offset: 0 };
            let w = Tensor::<2>::from_data(TensorData::new(quant::dequantize(dtype, &bytes), [n, k]), &device);
            for (t, parts) in [(1, 5), (3, 300)] {
                let v = random(10 + t as u64, [t, k], 1.0, &device);
                let sums = random(11, [t, parts], 1.0, &device).abs();
                let x = Tensor::cat(vec![v, sums], 1);
                let gated = Gated { values: random(12, [t, 11 + k + 7], 1.0, &device), offset: 11, eps: 1e-6 };
                let want = norm_gated_input(x.clone(), &gated, k).matmul(w.clone().transpose());
                let what = format!("{} [{n}, {k}] x {t} rows, {parts} partial sums", dtype.name());
                check(gemv_norm_gated(x.clone(), gated.clone(), Pool::Words(&words), m).unwrap(), want.clone(), &what);
                if !dtype.is_quantized() {
                    let wf = w.clone().cast(if dtype == StoredDType::F16 { DType::F16 } else { DType::F32 });
                    check(gemv_norm_gated(x, gated, Pool::Float(&wf), m).unwrap(), want, &format!("{what}, float weight"));
                }
            }
        }
    }
}

/// Two steps per thread at once (`MINIMAX_QGEMV_UNROLL=2`) and one at a time, each against
/// the reference, in every format: rows whose steps per thread are odd (a remainder step) and
/// even, on the small workgroup so that a thread takes several.
#[test]
fn unrolled_steps_match_reference() {
    let Some(device) = gpu() else { return };
    for dtype in FORMATS {
        for (n, k) in [(19, 32 * 24), (8, 32 * 9)] {
            let m = QMatrix { dtype, rows: n, cols: k, offset: 0 };
            let bytes = crate::experts::synthetic::random_matrix(dtype, n, k, 5, 0.1);
            let words = crate::weights::quantized::words(bytes, &device);
            let x = random(8, [2, k], 1.0, &device);
            let table = ints(&[0], &device);
            let ids = ints(&[0, 0], &device);
            let want = reference(x.clone(), ids.clone(), &table, &words, None, Epilogue::None, m, XMode::Rows { per: 1 });
            for unroll in [1, 2] {
                let launch = Some(Launch { workgroup: 32, subgroups: false, unroll: Some(unroll) });
                let got = run(x.clone(), ids.clone(), &table, Pool::Words(&words), None, Epilogue::None, m, XMode::Rows { per: 1 }, launch)
                    .unwrap();
                check(got, want.clone(), &format!("{} [{n}, {k}] unroll {unroll}", dtype.name()));
            }
        }
    }
}

/// A float linear weight through the decode kernel against Burn's matmul, for aligned
/// (16-byte reads) and ragged rows, every row count up to MAX_ROWS.
#[test]
fn float_weights_match_matmul() {
    let Some(device) = gpu() else { return };
    for dtype in [DType::F32, DType::F16] {
        for (n, k) in [(70, 96), (33, 42), (8, 256)] {
            let w = random(3, [n, k], 0.5, &device).cast(dtype);
            for t in [1, 3, MAX_ROWS] {
                let x = random(4 + t as u64, [t, k], 1.0, &device);
                let want = x.clone().matmul(w.clone().cast(DType::F32).transpose());
                let rows = XMode::Rows { per: 1 };
                let what = format!("{dtype:?} [{n}, {k}] x {t} rows");
                check(gemv_float(x.clone(), &w, rows, Epilogue::None).unwrap(), want.clone(), &what);
                let o = random(5, [t, n], 1.0, &device);
                let gated = apply(want, Epilogue::Gate(o.clone()));
                check(gemv_float(x.clone(), &w, rows, Epilogue::Gate(o)).unwrap(), gated, &format!("{what}, gated"));
                let split = Epilogue::SiluSigmoid { split: n / 3 };
                let want_split = apply(x.clone().matmul(w.clone().cast(DType::F32).transpose()), split.clone());
                check(gemv_float(x.clone(), &w, rows, split).unwrap(), want_split, &format!("{what}, silu | sigmoid"));
                // More partial sums than threads in a workgroup.
                let normed = Epilogue::NormGate { o: random(7, [t, n + 300], 1.0, &device).abs(), eps: 1e-6 };
                let want_normed = apply(x.clone().matmul(w.clone().cast(DType::F32).transpose()), normed.clone());
                check(gemv_float(x, &w, rows, normed).unwrap(), want_normed, &format!("{what}, normed gate"));
                // SwiGLU of a [t, 2k] gate_up output fused into the input read.
                let h = random(6 + t as u64, [t, 2 * k], 1.0, &device);
                let want = xin(h.clone(), XMode::SwiGlu, k).matmul(w.clone().cast(DType::F32).transpose());
                check(gemv_float(h, &w, XMode::SwiGlu, Epilogue::None).unwrap(), want, &format!("{what}, SwiGLU"));
            }
        }
    }
}

/// The reference (the CPU path) against a plain loop over `ExpertLayout::decode`.
#[test]
fn reference_matches_dense_loop() {
    let device = Device::flex();
    let slots = [Some(1), None, Some(0)];
    let (layout, words, table) = expert_pool(5, StoredDType::Q8_0, 64, 32, &slots);
    let ids = [2, 0, 1];
    let (pool, tt) = (ints(&words, &device), ints(&table, &device));
    let x = random(6, [3, 2 * 32], 1.0, &device);
    let y0 = Tensor::zeros([3, 64], &device);
    let y = qgemv(x.clone(), ints(&ids, &device), &tt, &pool, Some(y0), layout.down(), XMode::SwiGlu).unwrap();
    let xs = x.into_data().try_to_vec::<f32>().unwrap();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut expect = vec![0f32; 3 * 64];
    for (p, &e) in ids.iter().enumerate() {
        let Some(slot) = slots[e as usize] else { continue };
        let at = slot * layout.slot_bytes();
        let (_, down) = layout.decode(&bytes[at..at + layout.bytes()]);
        for n in 0..64 {
            let silu_mul = |k: usize| {
                let (a, b) = (xs[p * 64 + k], xs[p * 64 + 32 + k]);
                a / (1.0 + (-a).exp()) * b
            };
            expect[p * 64 + n] = (0..32).map(|k| down[n * 32 + k] * silu_mul(k)).sum();
        }
    }
    check(y, Tensor::from_data(TensorData::new(expect, [3, 64]), &device), "dense loop");
}

#[test]
fn rejects_bad_shapes() {
    let device = Device::flex();
    let (layout, words, table) = expert_pool(1, StoredDType::Q4_1, 32, 32, &[Some(0)]);
    let (pool, tt) = (ints(&words, &device), ints(&table, &device));
    let ids = ints(&[0, 0], &device);
    let y = || Some(Tensor::<2>::zeros([2, 64], &device));
    let g = layout.gate_up();
    let x = random(1, [1, 32], 1.0, &device);
    assert!(qgemv(x.clone(), ids.clone(), &tt, &pool, y(), g, XMode::Rows { per: 2 }).is_ok());
    let w = random(1, [1, 3], 1.0, &device);
    assert!(qgemv_combine(x, ids.clone(), &tt, &pool, w, None, g, XMode::Rows { per: 2 }).is_err(), "1x3 weights for 2 pairs");
    let x = random(1, [2, 32], 1.0, &device);
    let bad = |m: QMatrix, mode| qgemv(x.clone(), ids.clone(), &tt, &pool, y(), m, mode).is_err();
    assert!(bad(g, XMode::Rows { per: 2 }), "x rows for per = 2");
    assert!(bad(g, XMode::SwiGlu), "SwiGLU needs 2K columns");
    assert!(bad(QMatrix { cols: 48, ..g }, XMode::Rows { per: 1 }), "half a block");
    assert!(bad(QMatrix { rows: 63, ..g }, XMode::Rows { per: 1 }), "y width");
    assert!(bad(QMatrix { dtype: StoredDType::Q4_0, ..g }, XMode::Rows { per: 1 }), "Q4_0");
}

#[test]
fn params_mirror_wgsl() {
    let fields = wgsl_fields(include_str!("../../../shaders/qgemv.wgsl"));
    let names = [
        "pairs", "rows", "cols", "per", "x_stride", "row_bytes", "offset_words", "experts", "group", "accumulate",
        "norm_parts", "norm_eps", "split", "gate_offset", "gate_stride", "_pad",
    ];
    assert_eq!(fields, names);
    assert_eq!(size_of::<Params>(), 4 * fields.len());
}
