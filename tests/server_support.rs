//! The running server and the client helpers shared by the server tests.

#![allow(dead_code)] // each test crate uses some of them

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use minimax_tests::minimax_bin;
use serde_json::Value;

/// A running `minimax serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        let mut child = Command::new(minimax_bin())
            .args(["serve", "--backend", "cpu", "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start minimax serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("listening on http://") {
                        break rest.split_whitespace().next().unwrap_or_default().to_string();
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    panic!("the server did not print its address: {e}");
                }
            }
        };
        assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
        Self { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut resp = agent().get(self.url(path)).call().expect("GET");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, String) {
        let mut resp = agent()
            .post(self.url(path))
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().expect("body"))
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (status, text) = self.post_raw(path, &body.to_string());
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    /// A streamed request: every `data:` chunk parsed as JSON, checked to end with `[DONE]`.
    pub fn stream(&self, path: &str, body: &Value) -> Vec<Value> {
        let resp = agent()
            .post(self.url(path))
            .header("content-type", "application/json")
            .send(body.to_string())
            .expect("POST");
        assert_eq!(resp.status().as_u16(), 200);
        let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let mut chunks = Vec::new();
        let mut line = String::new();
        for _ in 0..100_000 {
            line.clear();
            let n = reader.read_line(&mut line).expect("read the stream");
            assert!(n > 0, "the stream ended without [DONE]");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() || line.starts_with(':') {
                continue; // event separator or keep-alive comment
            }
            let data = line.strip_prefix("data: ").unwrap_or_else(|| panic!("not an SSE data line: {line:?}"));
            if data == "[DONE]" {
                let mut rest = String::new();
                reader.read_to_string(&mut rest).expect("read past [DONE]");
                assert!(rest.trim().is_empty(), "data after [DONE]: {rest:?}");
                return chunks;
            }
            chunks.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("bad chunk ({e}): {data}")));
        }
        panic!("too many lines without [DONE]");
    }

    pub fn stats(&self) -> Value {
        let (status, health) = self.get("/health");
        assert_eq!(status, 200);
        health["stats"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// The text of a completion choice or a chat message.
pub fn choice_text(body: &Value) -> String {
    let choice = &body["choices"][0];
    choice["text"].as_str().or(choice["message"]["content"].as_str()).expect("text").to_string()
}

/// The streamed text, checking the chunk format on the way; returns it with the last chunk
/// that has a finish reason and the usage.
pub fn stream_text(chunks: &[Value], object: &str) -> (String, String, Value) {
    assert!(!chunks.is_empty());
    let id = chunks[0]["id"].as_str().expect("id");
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for c in chunks {
        assert_eq!(c["object"], object, "{c}");
        assert_eq!(c["id"], id, "one id per stream");
        assert_eq!(c["model"], chunks[0]["model"]);
        assert!(c["created"].as_u64().is_some());
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            assert!(usage.is_none(), "usage twice");
            usage = Some(u.clone());
        }
        let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) else { continue };
        assert!(finish.is_none(), "a chunk after the finish reason: {c}");
        let piece = choice["text"].as_str().or(choice["delta"]["content"].as_str());
        text.push_str(piece.unwrap_or_default());
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    (text, finish.expect("a finish_reason"), usage.expect("usage"))
}

pub fn check_usage(usage: &Value) -> (u64, u64) {
    let (p, c) = (usage["prompt_tokens"].as_u64().unwrap(), usage["completion_tokens"].as_u64().unwrap());
    assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c, "{usage}");
    (p, c)
}

/// What `minimax run` prints for a greedy continuation (the prompt and the final newline cut).
pub fn cli_greedy(prompt: &str, max_tokens: usize) -> String {
    let out = Command::new(minimax_bin())
        .args(["run", "--backend", "cpu", "--prompt", prompt, "--max-tokens", &max_tokens.to_string()])
        .args(["--format", "text"])
        .output()
        .expect("minimax run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.strip_prefix(prompt).and_then(|t| t.strip_suffix('\n')).expect("prompt + text + newline").to_string()
}
