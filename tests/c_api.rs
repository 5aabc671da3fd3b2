//! The C library (`libminimax`, `native/include/minimax.h`) as C programs see it: the committed
//! header matches what cbindgen generates, `native/examples/c/generate.c` reproduces
//! `minimax run` token for token, and a checks program drives the error paths, tokenizer
//! buffers, conversation continuation and reset.
//!
//! `MINIMAX_BLESS=1 cargo test --release -p minimax-tests --test c_api` rewrites the header.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use minimax_tests::minimax_bin;

const PROMPT: &str = "Once upon a time";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The directory holding the cdylib `cargo build --release -p minimax-native` made.
fn lib_dir() -> PathBuf {
    let dir = minimax_bin().parent().unwrap().to_path_buf();
    let name = if cfg!(target_os = "macos") { "libminimax.dylib" } else { "libminimax.so" };
    assert!(
        dir.join(name).exists(),
        "{} not built: run `cargo build --release -p minimax-native` first (tests/run does)",
        dir.join(name).display()
    );
    dir
}

/// Compiles `source` against the header and the cdylib into a fresh executable.
fn compile(source: &Path, name: &str) -> PathBuf {
    let lib = lib_dir();
    let out_dir = std::env::temp_dir().join(format!("minimax-c-api-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(name);
    let out = Command::new(std::env::var("CC").unwrap_or_else(|_| "gcc".into()))
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-o"])
        .arg(&exe)
        .arg(source)
        .arg(format!("-I{}", root().join("native/include").display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lminimax")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .expect("running the C compiler (gcc, or $CC)");
    assert!(out.status.success(), "compiling {}:\n{}", source.display(), text(&out.stderr));
    exe
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(exe: &Path, args: &[&str]) -> Output {
    Command::new(exe).args(args).output().unwrap_or_else(|e| panic!("running {}: {e}", exe.display()))
}

#[test]
fn header_matches_cbindgen() {
    let native = root().join("native");
    let config = cbindgen::Config::from_file(native.join("cbindgen.toml")).unwrap();
    let bindings = cbindgen::Builder::new()
        .with_crate(&native)
        .with_config(config)
        .generate()
        .expect("cbindgen over native/");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let path = native.join("include/minimax.h");
    if std::env::var_os("MINIMAX_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is stale: rerun with MINIMAX_BLESS=1 to regenerate it",
        path.display()
    );
}

#[test]
fn c_example_matches_the_cli() {
    let exe = compile(&root().join("native/examples/c/generate.c"), "generate");
    let c = run(&exe, &["--backend", "cpu", "--max-tokens", "24", PROMPT]);
    assert!(c.status.success(), "generate.c failed:\n{}", text(&c.stderr));
    let cli = |format: &str| {
        let out = run(
            &minimax_bin(),
            &["run", "--prompt", PROMPT, "--max-tokens", "24", "--backend", "cpu", "--format", format],
        );
        assert!(out.status.success(), "minimax run failed:\n{}", text(&out.stderr));
        text(&out.stdout)
    };
    let ids = cli("ids");
    assert_eq!(ids.trim().split(',').count(), 24, "the CLI stopped early: {ids}");
    assert_eq!(text(&c.stdout), ids, "generated ids");
    // The streamed pieces (stderr) spell the same text as the CLI's streamed output.
    assert_eq!(text(&c.stderr).trim_end(), cli("text").trim_end(), "streamed text");
}

#[test]
fn c_example_reports_a_missing_model() {
    let exe = compile(&root().join("native/examples/c/generate.c"), "generate-missing");
    let missing = "/nonexistent/minimax-model-dir";
    let out = run(&exe, &["--model", missing, "--backend", "cpu", PROMPT]);
    // The example exits with the status: 2 is MINIMAX_STATUS_NOT_FOUND (checked by name below).
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(missing), "{}", text(&out.stderr));
}

/// Each check prints `PASS name` or `FAIL name: detail`; the test needs every name to pass.
const CHECKS: &str = r##"
#include <stdio.h>
#include <string.h>
#include "minimax.h"

static int failures = 0;
static void check(const char *name, int ok, const char *detail) {
    if (ok) printf("PASS %s\n", name);
    else { printf("FAIL %s: %s (last error: %s)\n", name, detail, minimax_last_error()); failures++; }
}

static bool stop_after_three(uint32_t token, const char *piece, void *user_data) {
    (void)token; (void)piece;
    return ++*(int *)user_data < 3;
}

static bool collect(uint32_t token, const char *piece, void *user_data) {
    (void)token;
    strcat((char *)user_data, piece);
    return true;
}

int main(void) {
    minimax_model *model = (minimax_model *)1;
    const char *missing = "/nonexistent/minimax-model-dir";
    minimax_status s = minimax_model_load(missing, NULL, &model);
    check("missing_path", s == MINIMAX_STATUS_NOT_FOUND && model == NULL
          && strstr(minimax_last_error(), missing) != NULL, "status or message");
    check("null_out", minimax_model_load(NULL, NULL, NULL) == MINIMAX_STATUS_INVALID_ARGUMENT
          && strstr(minimax_last_error(), "out_model") != NULL, "status or message");
    minimax_params params = minimax_default_params();
    params.backend = (minimax_backend)42;
    check("bad_backend", minimax_model_load(NULL, &params, &model) == MINIMAX_STATUS_INVALID_ARGUMENT, "status");
    params.backend = MINIMAX_BACKEND_CPU;
    s = minimax_model_load(NULL, &params, &model);
    check("load_demo", s == MINIMAX_STATUS_OK && model != NULL, "status");
    if (s != MINIMAX_STATUS_OK) return 1;
    check("device", strstr(minimax_model_device(model), "CPU") != NULL, minimax_model_device(model));
    check("device_null", minimax_model_device(NULL) == NULL, "not NULL");

    uint32_t prompt[64];
    size_t n_prompt = 0, n = 0;
    s = minimax_tokenize(model, "Once upon a time", NULL, 0, &n_prompt);
    check("tokenize_size", s == MINIMAX_STATUS_BUFFER_TOO_SMALL && n_prompt > 0, "status");
    s = minimax_tokenize(model, "Once upon a time", prompt, 64, &n_prompt);
    check("tokenize", s == MINIMAX_STATUS_OK && n_prompt > 0 && n_prompt < 64, "status");
    char buf[4096];
    s = minimax_detokenize(model, prompt, n_prompt, buf, 4, &n);
    check("detokenize_size", s == MINIMAX_STATUS_BUFFER_TOO_SMALL && n == strlen("Once upon a time"), "status");
    s = minimax_detokenize(model, prompt, n_prompt, buf, sizeof buf, &n);
    check("detokenize", s == MINIMAX_STATUS_OK && strcmp(buf, "Once upon a time") == 0, buf);

    minimax_context *ctx = NULL;
    check("context_new", minimax_context_new(model, &ctx) == MINIMAX_STATUS_OK, "status");
    uint32_t once[24], twice[24];
    char streamed[4096] = "";
    params.max_tokens = 24;
    s = minimax_generate(ctx, prompt, n_prompt, &params, collect, streamed, once, 24, &n);
    check("generate", s == MINIMAX_STATUS_OK && n == 24, "status or count");
    check("length", minimax_context_length(ctx) == n_prompt + 24, "length");
    minimax_detokenize(model, once, 24, buf, sizeof buf, &n);
    check("streamed_text", strcmp(buf, streamed) == 0, streamed);

    /* The same 24 tokens in two calls: the context carries the conversation over. */
    check("reset", minimax_context_reset(ctx) == MINIMAX_STATUS_OK && minimax_context_length(ctx) == 0, "length");
    size_t n1 = 0, n2 = 0;
    s = minimax_generate(ctx, prompt, n_prompt, &params, NULL, NULL, twice, 10, &n1);
    check("first_half", s == MINIMAX_STATUS_OK && n1 == 10, "status or count");
    s = minimax_generate(ctx, NULL, 0, &params, NULL, NULL, twice + 10, 14, &n2);
    check("second_half", s == MINIMAX_STATUS_OK && n2 == 14, "status or count");
    check("continuation", memcmp(once, twice, sizeof once) == 0, "ids differ from one call's");

    int calls = 0;
    minimax_context_reset(ctx);
    s = minimax_generate(ctx, prompt, n_prompt, &params, stop_after_three, &calls, twice, 24, &n);
    check("callback_stop", s == MINIMAX_STATUS_OK && n == 3 && calls == 3, "count");

    minimax_context_reset(ctx);
    s = minimax_generate(ctx, NULL, 0, &params, NULL, NULL, twice, 24, &n);
    check("nothing_to_continue", s == MINIMAX_STATUS_INVALID_ARGUMENT && n == 0, "status");
    uint32_t bad = 4000000000u;
    s = minimax_generate(ctx, &bad, 1, &params, NULL, NULL, twice, 24, &n);
    check("token_out_of_range", s == MINIMAX_STATUS_INVALID_ARGUMENT
          && strstr(minimax_last_error(), "4000000000") != NULL && minimax_context_length(ctx) == 0, "status");
    check("null_context", minimax_generate(NULL, prompt, n_prompt, &params, NULL, NULL, twice, 24, &n)
          == MINIMAX_STATUS_INVALID_ARGUMENT, "status");

    /* Contexts share the model: freeing it first is allowed. */
    minimax_model_free(model);
    s = minimax_generate(ctx, prompt, n_prompt, &params, NULL, NULL, twice, 24, &n);
    check("outlives_model", s == MINIMAX_STATUS_OK && memcmp(once, twice, sizeof once) == 0, "ids");
    minimax_context_free(ctx);
    minimax_context_free(NULL);
    minimax_model_free(NULL);
    printf("DONE\n");
    return failures;
}
"##;

#[test]
fn c_api_contract() {
    let dir = std::env::temp_dir().join(format!("minimax-c-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("checks.c");
    std::fs::write(&source, CHECKS).unwrap();
    let out = run(&compile(&source, "checks"), &[]);
    let stdout = text(&out.stdout);
    let failed: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("PASS ")).collect();
    assert!(
        out.status.success() && failed == ["DONE"],
        "C checks failed (status {:?}):\n{stdout}\n{}",
        out.status,
        text(&out.stderr)
    );
    for name in ["missing_path", "load_demo", "generate", "continuation", "callback_stop", "outlives_model"] {
        assert!(stdout.contains(&format!("PASS {name}\n")), "{name} did not run:\n{stdout}");
    }
}
