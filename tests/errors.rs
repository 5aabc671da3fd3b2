//! Bad inputs give clear errors, never panics: a missing directory or file, an unsupported
//! config, mis-shaped or missing tensors, token ids beyond the vocabulary.

use std::path::{Path, PathBuf};
use std::process::Command;

use minimax_tests::{fixture, minimax_bin};

fn temp_copy(name: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("minimax-err-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
}

/// Runs `minimax` expecting failure; returns stderr.
fn fails(args: &[&str]) -> String {
    let out = Command::new(minimax_bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "expected failure: {args:?}");
    assert!(!err.contains("panicked"), "panic instead of an error: {err}");
    err
}

fn logits(dir: &Path, tokens: &str) -> String {
    let out = std::env::temp_dir().join(format!("minimax-err-{}.npy", std::process::id()));
    fails(&[
        "logits", "--model", dir.to_str().unwrap(), "--backend", "cpu", "--tokens", tokens,
        "--out", out.to_str().unwrap(),
    ])
}

#[test]
fn missing_directory() {
    let err = logits(Path::new("/nonexistent/model"), "1,2");
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn missing_weights() {
    let dir = temp_copy("minimax-partial-rope", "noweights");
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = logits(&dir, "1,2");
    assert!(err.contains("no weights found"), "{err}");
}

#[test]
fn unsupported_config() {
    let dir = temp_copy("minimax-partial-rope", "config");
    edit_config(&dir, |c| c["model_type"] = "gpt2".into());
    let err = logits(&dir, "1,2");
    assert!(err.contains("unsupported model") && err.contains("gpt2"), "{err}");

    edit_config(&dir, |c| {
        c["model_type"] = "minimax".into();
        c["layer_types"] = serde_json::json!(["linear_attention", "mamba"]);
    });
    let err = logits(&dir, "1,2");
    assert!(err.contains("mamba"), "{err}");
}

#[test]
fn mis_shaped_tensor_is_named() {
    let dir = temp_copy("minimax-partial-rope", "shape");
    edit_config(&dir, |c| c["intermediate_size"] = 16.into());
    let err = logits(&dir, "1,2");
    assert!(err.contains("model.layers.0.block_sparse_moe.experts.0.w1.weight"), "{err}");
    assert!(err.contains("[16, 64]") && err.contains("[32, 64]"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = temp_copy("minimax-partial-rope", "missing");
    edit_config(&dir, |c| {
        c["num_hidden_layers"] = 3.into();
        c["layer_types"] = serde_json::json!(["linear_attention", "full_attention", "linear_attention"]);
    });
    let err = logits(&dir, "1,2");
    assert!(err.contains("missing tensor `model.layers.2.self_attn.qkv_proj.weight`"), "{err}");
    assert!(err.contains("[192, 64]"), "{err}");
}

#[test]
fn truncated_weights() {
    let dir = temp_copy("minimax-partial-rope", "truncated");
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = logits(&dir, "1,2");
    assert!(err.contains("model.safetensors"), "{err}");
}

#[test]
fn token_beyond_vocabulary() {
    let err = logits(&fixture("minimax-7to1"), "1,320");
    assert!(err.contains("token id 320") && err.contains("320"), "{err}");
    let err = fails(&["run", "--model", fixture("minimax-7to1").to_str().unwrap(), "--backend", "cpu", "--tokens", "5,x"]);
    assert!(err.contains("bad token id"), "{err}");
}
