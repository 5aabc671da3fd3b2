//! The model against the transformers oracle (`tests/oracle/make_fixtures.py`), on the CPU
//! backend and on wgpu: logits within max-abs 1e-4 (f32), identical greedy tokens, and the
//! same logits whether the prompt is fed at once, in chunks or token by token.

use minimax_runtime::generate::read_logits;
use minimax_runtime::model::Logits;
use minimax_tests::{FIXTURES, backends, engine, greedy, max_abs, reference};

#[test]
fn logits_match_the_oracle() {
    for backend in backends() {
        for name in FIXTURES {
            let r = reference(name);
            let e = engine(name, backend);
            let logits = pollster::block_on(e.logits(&r.prompt, None)).unwrap();
            let err = max_abs(&logits, &r.logits);
            println!("{name} {backend:?}: max-abs {err:.2e}");
            assert!(err <= r.tolerance, "{name} on {backend:?}: max-abs {err} > {}", r.tolerance);
        }
    }
}

#[test]
fn chunked_prefill_matches_one_shot() {
    for backend in backends() {
        let name = "minimax-7to1";
        let r = reference(name);
        let e = engine(name, backend);
        let whole = pollster::block_on(e.logits(&r.prompt, None)).unwrap();
        for chunk in [1, 7, 64] {
            let chunked = pollster::block_on(e.logits(&r.prompt, Some(chunk))).unwrap();
            let err = max_abs(&chunked, &whole);
            let oracle = max_abs(&chunked, &r.logits);
            println!("{backend:?} chunk {chunk}: vs one-shot {err:.2e}, vs oracle {oracle:.2e}");
            assert!(err <= 1e-4 && oracle <= r.tolerance, "{backend:?} chunk {chunk}: {err} / {oracle}");
        }
    }
}

#[test]
fn greedy_decoding_matches_the_oracle() {
    for backend in backends() {
        for name in FIXTURES {
            let r = reference(name);
            let e = engine(name, backend);
            assert_eq!(greedy(&e, &r.prompt, r.greedy.len()), r.greedy, "{name} on {backend:?}");
        }
    }
}

#[test]
fn recurrent_decode_logits_match_the_oracle() {
    // Prefill the prompt, then feed the greedy tokens one at a time through the decode
    // kernels: every step's logits must match the oracle's full recomputation.
    for backend in backends() {
        let name = "minimax-7to1";
        let r = reference(name);
        let e = engine(name, backend);
        let mut state = e.new_state();
        let mut rows = Vec::new();
        let first = pollster::block_on(async {
            read_logits(e.model.forward(&r.prompt, &mut state, Logits::Last).await.unwrap()).await
        })
        .unwrap();
        rows.extend(first);
        for &id in &r.greedy[..r.greedy.len() - 1] {
            let row = pollster::block_on(async {
                read_logits(e.model.forward(&[id], &mut state, Logits::Last).await.unwrap()).await
            })
            .unwrap();
            rows.extend(row);
        }
        let err = max_abs(&rows, &r.greedy_logits);
        println!("{backend:?}: decode steps max-abs {err:.2e}");
        assert!(err <= r.tolerance, "{backend:?}: {err}");
    }
}
