//! The model against the transformers oracle (`tests/oracle/make_fixtures.py`), on the CPU
//! backend and on wgpu: logits within max-abs 1e-4 (f32), identical greedy tokens, and the
//! same logits whether the prompt is fed at once, in chunks or token by token.

use minimax_runtime::generate::read_logits;
use minimax_runtime::model::Logits;
use minimax_runtime::generate::GenerateOptions;
use minimax_tests::{FIXTURES, backends, engine, greedy, last_logits, max_abs, reference};

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

#[test]
fn a_stopped_decode_leaves_the_state_of_the_tokens_fed() {
    // Greedy decode enqueues the step that feeds a token before it reads the token, so a stop
    // undoes one step (on wgpu a replayed one, whose lightning states were updated in place).
    // The state must then be that of the prompt and the tokens accepted before the stop, and
    // decoding on from it must go on as from a fresh state: twice, as a chat's turns do.
    for backend in backends() {
        let name = "minimax-7to1";
        let r = reference(name);
        let e = engine(name, backend);
        let options = GenerateOptions { max_tokens: 16, stop_on_eos: false, ..Default::default() };
        let mut state = e.new_state();
        let mut fed = r.prompt.clone();
        for turn in 0..2 {
            let mut seen = 0;
            let prompt = if turn == 0 { r.prompt.clone() } else { vec![r.greedy[0]] };
            let got = pollster::block_on(e.generate(&mut state, &prompt, &options, |_| {
                seen += 1;
                seen < 3
            }))
            .unwrap();
            if turn == 1 {
                fed.push(r.greedy[0]);
            }
            // The third token stopped decoding: it was chosen, not fed.
            assert_eq!(got.tokens.len(), 3, "{backend:?} turn {turn}");
            fed.extend(&got.tokens[..2]);
            assert_eq!(state.position, fed.len(), "{backend:?} turn {turn}: positions fed");
            let next = got.tokens[2];
            let resumed = last_logits(&e, &[next], &mut state.clone());
            let fresh = last_logits(&e, &[fed.as_slice(), &[next]].concat(), &mut e.new_state());
            let err = max_abs(&resumed, &fresh);
            println!("{backend:?} turn {turn}: resumed against fresh max-abs {err:.2e}");
            assert!(err <= 1e-4, "{backend:?} turn {turn}: {err}");
            if turn == 0 {
                assert_eq!(got.tokens, r.greedy[..3], "{backend:?}: the oracle's tokens");
            }
        }
    }
}
