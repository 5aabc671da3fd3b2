//! The `minimax` command line as users and scripts drive it.

use std::process::Command;

use minimax_tests::{fixture, max_abs, minimax_bin, read_npy, reference};

fn ids(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(minimax_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn logits_command_writes_the_oracle_logits() {
    let r = reference("minimax-7to1");
    let dir = std::env::temp_dir().join(format!("minimax-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = fixture("minimax-7to1");
    for chunk in [None, Some("7")] {
        let out = dir.join(format!("logits-{}.npy", chunk.unwrap_or("all")));
        let mut args: Vec<String> = ["logits", "--model", model.to_str().unwrap(), "--backend", "cpu"]
            .map(String::from)
            .to_vec();
        args.extend(["--tokens".into(), ids(&r.prompt), "--out".into(), out.display().to_string()]);
        if let Some(c) = chunk {
            args.extend(["--prefill-chunk".into(), c.into()]);
        }
        let (ok, _, err) = run(&args);
        assert!(ok, "{err}");
        let (shape, logits) = read_npy(&out);
        assert_eq!(shape, vec![r.prompt.len() as u64, r.vocab as u64]);
        let e = max_abs(&logits, &r.logits);
        assert!(e <= r.tolerance, "chunk {chunk:?}: {e}");
    }
}

#[test]
fn run_prints_greedy_ids() {
    let r = reference("minimax-remote-code");
    let model = fixture("minimax-remote-code");
    let prompt = ids(&r.prompt);
    let n = r.greedy.len().to_string();
    let (ok, out, err) = run(&[
        "run", "--model", model.to_str().unwrap(), "--backend", "cpu", "--tokens", &prompt,
        "--max-tokens", &n, "--ignore-eos", "--format", "ids",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), ids(&r.greedy));
}

#[test]
fn run_stats_report_time_to_first_token() {
    // A prompt of 5 chunks of 2 tokens: chunked prefill, then the statistics on stderr.
    let (ok, out, err) = run(&[
        "run", "--backend", "cpu", "--tokens", "1,2,3,4,5,6,7,8,9,10", "--prefill-chunk", "2", "--max-tokens", "4",
        "--ignore-eos", "--format", "ids", "--stats",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().split(',').count(), 4, "{out}");
    assert!(err.contains("10 prompt + 4 generated tokens"), "{err}");
    let ttft = err.lines().find(|l| l.starts_with("time to first token ")).unwrap_or_else(|| panic!("{err}"));
    assert!(ttft.contains("prompt tokens/s), then ") && ttft.ends_with(" tokens/s"), "{ttft}");
}

#[test]
fn run_streams_text_from_a_prompt() {
    let model = fixture("minimax-7to1");
    let (ok, out, err) = run(&[
        "run", "--model", model.to_str().unwrap(), "--backend", "cpu", "--prompt",
        "The lighthouse keeper", "--max-tokens", "8", "--temperature", "0.8", "--top-p", "0.9",
        "--seed", "3",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("The lighthouse keeper"), "{out}");
    assert!(out.trim().len() > "The lighthouse keeper".len(), "nothing generated: {out:?}");
}

#[test]
fn auto_backend_falls_back_to_the_cpu_with_a_notice() {
    let model = fixture("minimax-7to1");
    let (ok, out, err) = run(&[
        "run", "--model", model.to_str().unwrap(), "--tokens", "5,6", "--max-tokens", "2",
        "--format", "ids",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim().split(',').count(), 2, "{out}");
    let notice = err.lines().filter(|l| l.starts_with("note: no GPU adapter found")).count();
    if minimax_runtime::device::has_hardware_adapter() {
        assert_eq!(notice, 0, "{err}");
    } else {
        assert_eq!(notice, 1, "a one-line notice is expected without a GPU: {err}");
    }
}

#[test]
fn info_describes_the_layout() {
    let model = fixture("minimax-7to1");
    let (ok, out, err) = run(&["info", "--model", model.to_str().unwrap(), "--backend", "cpu"]);
    assert!(ok, "{err}");
    assert!(out.contains("LLLLLLLS"), "{out}");
    assert!(out.contains("8 per layer, top-2"), "{out}");
}

#[test]
fn bench_reports_prefill_and_decode() {
    let model = fixture("minimax-7to1");
    let (ok, out, err) = run(&[
        "bench", "--model", model.to_str().unwrap(), "--backend", "cpu", "--prompt-lengths", "16,40",
        "--decode-tokens", "4", "--context", "8", "--repeats", "1", "--json",
    ]);
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["prefill"].as_array().unwrap().len(), 2);
    assert!(json["decode"]["tokens_per_second"].as_f64().unwrap() > 0.0);
}

/// A prefill chunk whose largest tensor a storage binding cannot hold is refused before any
/// work, in one line naming the limit and the chunk that fits; without `--prefill-chunk` the
/// chunk is sized to fit, and the logits of every position, read back chunk by chunk, are
/// those of an unlimited run (none of them needs one buffer for all positions).
#[test]
fn prefill_chunks_respect_the_binding_limit() {
    let model = fixture("minimax-7to1");
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 320).collect();
    let dir = std::env::temp_dir().join(format!("minimax-binding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let logits = |extra: &[&str], out: &str| {
        let out = dir.join(out);
        let mut args = vec!["logits", "--model", model.to_str().unwrap(), "--backend", "cpu", "--tokens"];
        let ids = ids(&tokens);
        args.push(&ids);
        args.extend_from_slice(&["--out", out.to_str().unwrap()]);
        args.extend_from_slice(extra);
        let (ok, _, err) = run(&args);
        (ok, err, out)
    };
    // The fixture's largest tensor per token is its logits row: 320 × 4 bytes.
    let (ok, err, _) = logits(&["--max-binding-bytes", "4096", "--prefill-chunk", "40"], "refused.npy");
    assert!(!ok && !err.contains("panicked"), "{err}");
    let line = err.lines().find(|l| l.contains("storage-binding limit")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("40 tokens") && line.contains("4.00 KiB") && line.contains("--prefill-chunk 3 or less"), "{line}");
    let (ok, err, capped) = logits(&["--max-binding-bytes", "4096"], "capped.npy");
    assert!(ok, "{err}");
    let (ok, err, free) = logits(&[], "free.npy");
    assert!(ok, "{err}");
    let ((shape, a), (_, b)) = (read_npy(&capped), read_npy(&free));
    assert_eq!(shape, [40, 320]);
    assert!(max_abs(&a, &b) < 1e-4, "{}", max_abs(&a, &b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A synthetic model's layers follow `--layout`: all softmax (q, k, v, o projections and a KV
/// cache) against all lightning (qkv, gate, out) give different weights per token, and the
/// default is the 7:1 hybrid.
#[test]
fn bench_synthetic_layouts() {
    let bench = |layout: &str| {
        let (ok, out, err) = run(&[
            "bench", "--synthetic", "small", "--layers", "2", "--layout", layout, "--backend", "cpu",
            "--prompt-lengths", "8", "--decode-tokens", "1", "--context", "8", "--repeats", "1", "--json",
        ]);
        assert!(ok, "{layout}: {err}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let name = json["model"].as_str().unwrap().to_string();
        (name, json["decode"]["active_weight_bytes_per_token"].as_u64().unwrap())
    };
    let (softmax, lightning, hybrid) = (bench("softmax"), bench("lightning"), bench("hybrid"));
    assert!(softmax.0.contains("Softmax") && lightning.0.contains("Lightning"), "{softmax:?} {lightning:?}");
    assert_ne!(softmax.1, lightning.1);
    // Two layers in the hybrid layout: one lightning, then the last one softmax.
    assert_eq!(2 * hybrid.1, softmax.1 + lightning.1, "{softmax:?} {lightning:?} {hybrid:?}");
}

/// `--backend vulkan` pins wgpu to Vulkan (lavapipe here) and gives the same tokens as any
/// adapter; an API this machine lacks is a clear error, not a silent fallback.
#[test]
fn named_graphics_apis() {
    let ids = |backend: &str| {
        run(&["run", "--backend", backend, "--prompt", "Once upon a time", "--max-tokens", "6", "--format", "ids"])
    };
    let (ok, out, err) = ids("vulkan");
    if minimax_runtime::device::test_gpu().is_some() {
        assert!(ok, "{err}");
        let (ok_gpu, gpu, err_gpu) = ids("gpu");
        assert!(ok_gpu, "{err_gpu}");
        assert_eq!(out, gpu);
    }
    if cfg!(target_os = "linux") {
        let (ok, _, err) = ids("metal");
        assert!(!ok, "Metal cannot exist on Linux");
        assert!(err.contains("no Metal adapter"), "{err}");
    }
    let (ok, _, err) = ids("glide");
    assert!(!ok && err.contains("vulkan, metal, dx12, gl"), "{err}");
}

/// A GPU lost in the middle of generating (provoked: `MINIMAX_LOSE_DEVICE_AFTER` destroys the
/// wgpu device after that many tokens, as a driver reset would lose it) ends the command with
/// one line that says what happened, not a hang or a panic.
#[test]
fn a_lost_gpu_ends_the_command_in_one_line() {
    if minimax_runtime::device::test_gpu().is_none() {
        return;
    }
    let out = Command::new(minimax_bin())
        .args(["run", "--backend", "gpu", "--prompt", "Once upon a time", "--max-tokens", "40", "--format", "ids"])
        .env("MINIMAX_LOSE_DEVICE_AFTER", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().filter(|l| !l.trim().is_empty()).last().unwrap_or_default();
    assert!(last.starts_with("error: the GPU device was lost"), "{err}");
}

/// Without a desktop session (no XDG_RUNTIME_DIR, as on a server or in CI), finding the GPU
/// must print nothing: Mesa's device-select layer used to make libwayland print
/// "error: XDG_RUNTIME_DIR is invalid …" twice per adapter enumeration.
#[test]
fn a_headless_machine_finds_its_gpu_silently() {
    if minimax_runtime::device::test_gpu().is_none() {
        return;
    }
    let out = Command::new(minimax_bin())
        .args(["info", "--backend", "vulkan"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR") && !err.contains("error"), "{err}");
}

/// `info --dtype q8` on float weights says that loading will quantize them and that
/// `minimax convert` stores them quantized once; f32 loading says nothing of it.
#[test]
fn info_suggests_convert_when_loading_would_quantize() {
    let model = fixture("minimax-7to1");
    let model = model.to_str().unwrap();
    let (ok, out, err) = run(&["info", "--model", model, "--backend", "cpu", "--dtype", "q8"]);
    assert!(ok, "{err}");
    let line = out.lines().find(|l| l.starts_with("load ")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("to Q8_0 while loading") && line.contains("minimax convert --quant q8"), "{line}");
    let (ok, out, _) = run(&["info", "--model", model, "--backend", "cpu", "--dtype", "f32"]);
    assert!(ok && !out.lines().any(|l| l.starts_with("load ")), "{out}");
}

/// `minimax chat` with no arguments talks to the embedded demo model in the plain format, the
/// one the server's chat completions use: each reply is that of a completion of the rendered
/// conversation, cut at "\nUser:", and a second turn goes on from the first.
#[test]
fn chat_works_with_no_model_in_the_plain_format() {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(minimax_bin())
        .args(["chat", "--backend", "cpu", "--max-tokens", "24"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Tell me a story about a cat.\nAnd then?\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("User:"), "{stdout:?}");

    // The first reply is the greedy completion of the plain prompt (which `run` echoes before
    // its continuation), cut at "\nUser:"; the second follows it.
    let prompt = "User: Tell me a story about a cat.\nAssistant:";
    let (ok, completion, err) = run(&["run", "--backend", "cpu", "--max-tokens", "24", "--prompt", prompt]);
    assert!(ok, "{err}");
    let continuation = completion.strip_prefix(prompt).unwrap_or_else(|| panic!("{completion:?}"));
    let first = continuation.split("\nUser:").next().unwrap().trim_end_matches('\n');
    assert!(stdout.starts_with(&format!("{first}\n")), "chat {stdout:?} against run {completion:?}");
    assert!(stdout.len() > first.len() + 1, "a second reply: {stdout:?}");
}
