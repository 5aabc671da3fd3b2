//! `minimax serve` as OpenAI clients drive it: the real binary on 127.0.0.1 (port 0, the
//! address read from its stdout), mostly with the embedded demo model on the CPU. Every wait
//! and every loop here is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use minimax_runtime::chat::Message;
use minimax_runtime::device::BackendChoice;
use minimax_tests::{engine_at, fixture};
use serde_json::{Value, json};

#[path = "server_support.rs"]
mod server_support;
use server_support::*;

#[test]
fn health_and_models() {
    let server = Server::start(&[]);
    let (status, health) = server.get("/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(models["object"], "list");
    let data = models["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "minimax-demo");
    assert_eq!(data[0]["object"], "model");
    assert_eq!(data[0]["context_length"], 2048);
    assert_eq!(server.get("/v1/models/minimax-demo").0, 200);
    let (status, err) = server.get("/v1/models/gpt-4");
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "model_not_found");
    let (status, err) = server.get("/v2/nothing");
    assert_eq!(status, 404);
    assert!(err["error"]["message"].is_string());
}

#[test]
fn greedy_completion_matches_the_cli_with_and_without_streaming() {
    let prompt = "Once upon a time";
    let expected = cli_greedy(prompt, 24);
    assert!(!expected.is_empty());
    let server = Server::start(&[]);
    let request = json!({"model": "minimax-demo", "prompt": prompt, "max_tokens": 24, "temperature": 0});
    let (status, body) = server.post("/v1/completions", &request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(body["model"], "minimax-demo");
    assert_eq!(body["choices"].as_array().unwrap().len(), 1);
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(choice_text(&body), expected);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let (prompt_tokens, completion_tokens) = check_usage(&body["usage"]);
    assert_eq!(completion_tokens, 24);
    assert!(prompt_tokens >= 4, "{prompt_tokens}");

    let mut streamed = request.clone();
    streamed["stream"] = true.into();
    let chunks = server.stream("/v1/completions", &streamed);
    assert!(chunks.len() > 2, "the text should come in pieces: {chunks:?}");
    assert_eq!(chunks[0]["model"], "minimax-demo");
    let (text, finish, usage) = stream_text(&chunks, "text_completion");
    assert_eq!(text, expected);
    assert_eq!(finish, "length");
    assert_eq!(check_usage(&usage), (prompt_tokens, 24));

    // `stream_options.include_usage`: OpenAI's separate last chunk with no choices.
    streamed["stream_options"] = json!({"include_usage": true});
    let chunks = server.stream("/v1/completions", &streamed);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0, "{last}");
    assert_eq!(check_usage(&last["usage"]), (prompt_tokens, 24));
    assert_eq!(stream_text(&chunks, "text_completion").0, expected);
}

#[test]
fn chat_completions_use_the_plain_template_for_a_base_model() {
    let server = Server::start(&[]);
    let messages = json!([
        {"role": "system", "content": "You tell short stories."},
        {"role": "user", "content": [{"type": "text", "text": "Tell me a story "}, {"type": "text", "text": "about a cat."}]}
    ]);
    let request = json!({"model": "minimax-demo", "messages": messages, "max_tokens": 20, "temperature": 0});
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let reply = choice_text(&body);
    let finish = body["choices"][0]["finish_reason"].as_str().unwrap().to_string();
    assert!(finish == "stop" || finish == "length", "{finish}");
    let (prompt_tokens, completion_tokens) = check_usage(&body["usage"]);
    assert!(completion_tokens <= 20 && completion_tokens > 0);

    // The documented fallback: `Role: content` lines, then `Assistant:`, stopping at "\nUser:".
    let plain = "System: You tell short stories.\nUser: Tell me a story about a cat.\nAssistant:";
    let (status, same) = server.post(
        "/v1/completions",
        &json!({"prompt": plain, "max_tokens": 20, "temperature": 0, "stop": "\nUser:"}),
    );
    assert_eq!(status, 200, "{same}");
    assert_eq!(choice_text(&same), reply);
    assert_eq!(same["usage"], body["usage"]);
    assert_eq!(same["choices"][0]["finish_reason"], finish.as_str());
    let tokenizer = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/minimax-demo/tokenizer.json")).unwrap();
    let tokenizer = minimax_runtime::tokenizer::Tokenizer::from_bytes(&tokenizer).unwrap();
    assert_eq!(tokenizer.encode(plain).unwrap().len() as u64, prompt_tokens);

    let mut streamed = request.clone();
    streamed["stream"] = true.into();
    let chunks = server.stream("/v1/chat/completions", &streamed);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant", "{}", chunks[0]);
    let (text, stream_finish, usage) = stream_text(&chunks, "chat.completion.chunk");
    assert_eq!(text, reply);
    assert_eq!(stream_finish, finish);
    assert_eq!(usage, body["usage"]);
}

#[test]
fn eight_concurrent_streams_match_single_ones() {
    let server = Arc::new(Server::start(&[]));
    let prompts = ["Once upon a time", "The little dog"];
    let request = |i: usize| {
        json!({"prompt": prompts[i % 2], "max_tokens": 32, "temperature": 0, "stream": true})
    };
    // Alone first; then 8 at once, alternating prompts so that any mix-up between requests
    // shows.
    let alone: Vec<String> = (0..2)
        .map(|i| stream_text(&server.stream("/v1/completions", &request(i)), "text_completion").0)
        .collect();
    assert_ne!(alone[0], alone[1]);
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (server, barrier, body) = (server.clone(), barrier.clone(), request(i));
            std::thread::spawn(move || {
                barrier.wait();
                stream_text(&server.stream("/v1/completions", &body), "text_completion")
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (text, finish, usage) = t.join().expect("client thread");
        assert_eq!(text, alone[i % 2], "client {i}");
        assert_eq!(finish, "length");
        assert_eq!(usage["completion_tokens"], 32);
    }
    let stats = server.stats();
    assert_eq!(stats["completed"], 10, "{stats}");
    assert_eq!(stats["waiting"], 0);
}

#[test]
fn a_disconnect_mid_stream_frees_the_engine() {
    let server = Server::start(&[]);
    // A generation that alone would take many seconds (2000 tokens, no EOS).
    let body = json!({"prompt": "Once upon a time", "max_tokens": 2000, "temperature": 0, "stream": true, "ignore_eos": true})
        .to_string();
    let mut socket = TcpStream::connect(&server.addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        socket,
        "POST /v1/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.addr,
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut line = String::new();
    let mut got_text = false;
    for _ in 0..1000 {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.starts_with("data: {") {
            got_text = true;
            break;
        }
    }
    assert!(got_text, "no first chunk");
    let dropped = Instant::now();
    socket.shutdown(Shutdown::Both).unwrap();
    drop((reader, socket));

    // The engine notices at its next tokens and moves on.
    let mut stats = server.stats();
    for _ in 0..300 {
        if stats["cancelled"] == 1 && stats["running"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stats = server.stats();
    }
    assert_eq!(stats["cancelled"], 1, "the generation was not cancelled: {stats}");
    assert_eq!(stats["completed"], 0, "{stats}");
    let (status, body) = server.post("/v1/completions", &json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["completion_tokens"], 4);
    let waited = dropped.elapsed();
    assert!(waited < Duration::from_secs(30), "the next request took {waited:?}");
    eprintln!("cancelled and served the next request {waited:?} after the disconnect");
}

#[test]
fn bad_requests_get_openai_errors() {
    let server = Server::start(&[]);
    let expect = |status: u16, body: &str, code: Option<&str>, param: Option<&str>| {
        for path in ["/v1/completions", "/v1/chat/completions"] {
            let (got, text) = server.post_raw(path, body);
            assert_eq!(got, status, "{path} {body}: {text}");
            let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
            let err = &json["error"];
            assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "{text}");
            let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
            assert_eq!(err["type"], kind, "{text}");
            for key in ["param", "code"] {
                assert!(err.get(key).is_some(), "`{key}` missing: {text}");
            }
            assert_eq!(err["code"].as_str(), code, "{text}");
            if param.is_some() {
                assert_eq!(err["param"].as_str(), param, "{text}");
            }
        }
    };
    let ok = r#""prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}]"#;
    expect(400, "{not json", None, None);
    expect(400, "", None, None);
    expect(400, r#"{"model": "minimax-demo"}"#, None, None);
    expect(400, &format!(r#"{{{ok}, "temperature": "hot"}}"#), None, None);
    expect(400, &format!(r#"{{{ok}, "temperature": -1}}"#), None, Some("temperature"));
    expect(400, &format!(r#"{{{ok}, "top_p": 0}}"#), None, Some("top_p"));
    expect(400, &format!(r#"{{{ok}, "max_tokens": 0}}"#), None, Some("max_tokens"));
    expect(400, &format!(r#"{{{ok}, "n": 2}}"#), None, Some("n"));
    expect(404, &format!(r#"{{{ok}, "model": "gpt-4o"}}"#), Some("model_not_found"), Some("model"));
    expect(400, &format!(r#"{{{ok}, "max_tokens": 100000}}"#), Some("context_length_exceeded"), None);
    expect(400, &format!(r#"{{{ok}, "max_completion_tokens": 2048}}"#), Some("context_length_exceeded"), None);
    // Streaming requests are checked before the stream starts.
    expect(400, &format!(r#"{{{ok}, "stream": true, "max_tokens": 5000}}"#), Some("context_length_exceeded"), None);
    expect(400, r#"{"prompt": [], "messages": []}"#, None, None);

    // A prompt that alone fills the context.
    let long = "word ".repeat(3000);
    let (status, text) = server.post_raw("/v1/completions", &json!({"prompt": long}).to_string());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("context_length_exceeded"), "{text}");

    let (status, text) = server.post_raw("/v1/completions", &json!({"prompt": [5, 4096]}).to_string());
    assert_eq!(status, 400, "{text}");
    let resp = agent().get(server.url("/v1/completions")).call().unwrap();
    assert_eq!(resp.status().as_u16(), 405);

    // Nothing above disturbed the server.
    assert_eq!(server.stats()["completed"], 0);
    let (status, body) = server.post("/v1/completions", &json!({"prompt": "Hi", "max_tokens": 2}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn stop_sequences_cut_the_text() {
    let server = Server::start(&[]);
    let request = json!({"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0});
    let (status, body) = server.post("/v1/completions", &request);
    assert_eq!(status, 200, "{body}");
    let full = choice_text(&body);
    // A stop sequence from the middle of the text, which likely spans tokens.
    let start = full.char_indices().map(|(i, _)| i).find(|&i| i >= full.len() / 2).unwrap();
    let stop: String = full[start..].chars().take(5).collect();
    assert!(!stop.is_empty(), "{full:?}");
    let expected = &full[..full.find(&stop).unwrap()];
    for stops in [json!(stop), json!(["never appears", stop])] {
        let mut req = request.clone();
        req["stop"] = stops;
        let (status, body) = server.post("/v1/completions", &req);
        assert_eq!(status, 200, "{body}");
        assert_eq!(choice_text(&body), expected);
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert!(body["usage"]["completion_tokens"].as_u64().unwrap() < 40);
        req["stream"] = true.into();
        let (text, finish, _) = stream_text(&server.stream("/v1/completions", &req), "text_completion");
        assert_eq!(text, expected);
        assert_eq!(finish, "stop");
    }
}

#[test]
fn chat_uses_the_model_chat_template() {
    // A tiny Llama GGUF whose metadata carries a ChatML template.
    let path = fixture("gguf").join("tiny-llama.gguf");
    let engine = engine_at(&path, BackendChoice::Cpu);
    let template = engine.chat_template.clone().expect("the fixture has a chat template");
    let messages = [Message::new("system", "Be brief."), Message::new("user", "Hi there")];
    let rendered = template.render(&messages, true).unwrap();
    let prompt_tokens = engine.tokenizer().unwrap().encode_plain(&rendered).unwrap().len() as u64;

    let server = Server::start(&["--model", path.to_str().unwrap()]);
    let (_, models) = server.get("/v1/models");
    assert_eq!(models["data"][0]["id"], "tiny-llama.gguf");
    let request = json!({
        "model": "tiny-llama.gguf",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        "max_tokens": 6,
        "temperature": 0,
    });
    let (status, body) = server.post("/v1/chat/completions", &request);
    assert_eq!(status, 200, "{body}");
    let (prompt, completion) = check_usage(&body["usage"]);
    assert_eq!(prompt, prompt_tokens, "the prompt is the rendered template");
    assert!(completion <= 6);
    let mut streamed = request.clone();
    streamed["stream"] = true.into();
    let (text, finish, usage) = stream_text(&server.stream("/v1/chat/completions", &streamed), "chat.completion.chunk");
    assert_eq!(text, choice_text(&body));
    assert_eq!(finish, body["choices"][0]["finish_reason"].as_str().unwrap());
    assert_eq!(usage, body["usage"]);
}

/// Prompts that start alike resume from the prefix cache: a repeated long prompt from its
/// last 256-token boundary (the same tokens as the cold request, computed the same way), the
/// next turn of a conversation from where the previous reply ended. `/health` counts it all,
/// and `--prefix-cache-mb 0` turns it off.
#[test]
fn prompts_that_start_alike_resume_from_the_prefix_cache() {
    let story = "Once upon a time, there was a little dog named Max. He liked to run in the park with his friends. ";
    let prompt = story.repeat(12);
    let request = |prompt: &str| json!({"model": "minimax-demo", "prompt": prompt, "max_tokens": 12, "temperature": 0});
    let server = Server::start(&[]);
    let (status, first) = server.post("/v1/completions", &request(&prompt));
    assert_eq!(status, 200, "{first}");
    let (prompt_tokens, _) = check_usage(&first["usage"]);
    assert!(prompt_tokens > 300, "a prompt past one block: {prompt_tokens}");
    let boundary = (prompt_tokens - 1) / 256 * 256;
    let cache = server.stats()["prefix_cache"].clone();
    assert_eq!((cache["lookups"].as_u64(), cache["hits"].as_u64(), cache["entries"].as_u64()), (Some(1), Some(0), Some(2)), "{cache}");

    // The same prompt again: from the boundary, to the same text.
    let (_, second) = server.post("/v1/completions", &request(&prompt));
    assert_eq!(choice_text(&second), choice_text(&first));
    let cache = server.stats()["prefix_cache"].clone();
    assert_eq!(cache["hits"], 1, "{cache}");
    assert_eq!(cache["tokens_saved"].as_u64(), Some(boundary), "{cache}");
    assert!(cache["bytes"].as_u64().unwrap() > 0, "{cache}");

    // The next turn: the prompt, the reply, more text. All but the reply's last token (never
    // fed) are in the cache, so far more than the boundary is skipped.
    let next = format!("{prompt}{} And then", choice_text(&first));
    let (status, third) = server.post("/v1/completions", &request(&next));
    assert_eq!(status, 200, "{third}");
    let cache = server.stats()["prefix_cache"].clone();
    assert_eq!(cache["hits"], 2, "{cache}");
    let saved = cache["tokens_saved"].as_u64().unwrap() - boundary;
    assert!(saved > prompt_tokens, "the next turn resumed after {saved} tokens of {prompt_tokens} + reply");

    let off = Server::start(&["--prefix-cache-mb", "0"]);
    let (_, cold) = off.post("/v1/completions", &request(&prompt));
    let (_, again) = off.post("/v1/completions", &request(&prompt));
    assert_eq!(choice_text(&cold), choice_text(&again));
    let cache = off.stats()["prefix_cache"].clone();
    assert_eq!((cache["hits"].as_u64(), cache["entries"].as_u64()), (Some(0), Some(0)), "{cache}");
}

/// `/metrics` in the Prometheus text format: requests by outcome, tokens, the latency
/// histograms and the prefix cache, consistent with what was asked.
#[test]
fn metrics_count_requests_tokens_and_latencies() {
    let server = Server::start(&[]);
    let request = json!({"model": "minimax-demo", "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0});
    let (_, body) = server.post("/v1/completions", &request);
    let (prompt_tokens, completion_tokens) = check_usage(&body["usage"]);
    let mut resp = agent().get(server.url("/metrics")).call().expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let kind = resp.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = resp.body_mut().read_to_string().unwrap();
    let value = |name: &str| -> f64 {
        let line = text.lines().find(|l| l.split([' ', '{']).next() == Some(name) && !l.starts_with('#'));
        line.unwrap_or_else(|| panic!("no {name} in:\n{text}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(text.contains(r#"minimax_requests_total{outcome="completed"} 1"#), "{text}");
    assert_eq!(value("minimax_prompt_tokens_total"), prompt_tokens as f64);
    assert_eq!(value("minimax_completion_tokens_total"), completion_tokens as f64);
    assert_eq!(value("minimax_time_to_first_token_seconds_count"), 1.0);
    assert_eq!(value("minimax_inter_token_seconds_count"), (completion_tokens - 1) as f64);
    assert!(value("minimax_time_to_first_token_seconds_sum") > 0.0);
    assert_eq!(value("minimax_queue_depth"), 0.0);
    assert_eq!(value("minimax_prefix_cache_lookups_total"), 1.0);
    assert!(value("minimax_prefix_cache_entries") >= 1.0);
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics ends with # EOF");
}
