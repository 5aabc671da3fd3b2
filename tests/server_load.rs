//! `minimax serve` under hostile input, a crowd of clients and SIGTERM: the real binary on
//! 127.0.0.1 with the embedded demo model on the CPU. Every wait and loop here is bounded.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "server_support.rs"]
mod server_support;
use server_support::*;

/// Resident memory of a process, from /proc (Linux), in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// Sends `body` as a raw HTTP request and returns the status and the rest of the response, or
/// (with `drop_after_first_chunk`) hangs up as soon as the first streamed chunk arrives.
/// `slow` sleeps between reads, as a slow reader does.
fn raw_request(addr: &str, body: &[u8], drop_after_first_chunk: bool, slow: bool) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    socket.write_all(head.as_bytes()).unwrap();
    if socket.write_all(body).is_err() {
        // The server may answer (413) and close before a huge body is all sent.
    }
    let mut reader = BufReader::new(socket.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        rest.push_str(&line);
        if drop_after_first_chunk && line.starts_with("data: {") {
            let _ = socket.shutdown(Shutdown::Both);
            break;
        }
        if slow {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (status, rest)
}

/// Hostile bodies get clean 4xx answers, a crowd of 64 clients (some hanging up mid-stream,
/// some reading slowly) is served to the last request without a panic or a leaked slot and
/// with memory back near where it started, and SIGTERM lets a stream in flight finish before
/// the server exits. Each client makes 3 requests, or `MINIMAX_LOAD_ROUNDS` for a longer run.
#[test]
#[cfg(unix)]
fn hostile_requests_a_crowd_and_sigterm() {
    let mut server = Server::start(&[]);
    let addr = server.addr.clone();
    // Hostile bodies.
    let (status, text) = raw_request(&addr, &vec![b' '; 3 << 20], false, false);
    assert_eq!(status, 413, "an oversized body: {text}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(raw_request(&addr, deep.as_bytes(), false, false).0, 400, "deeply nested JSON");
    assert_eq!(raw_request(&addr, b"{\"prompt\": \"\xff\xfe\"}", false, false).0, 400, "invalid UTF-8");
    let stops: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    assert_eq!(raw_request(&addr, json!({"prompt": "Hi", "stop": stops}).to_string().as_bytes(), false, false).0, 400);

    // Warm up, then the crowd.
    let ok = |max: usize, stream: bool| json!({"prompt": "Once upon a time", "max_tokens": max, "temperature": 0.7, "stream": stream}).to_string();
    assert_eq!(raw_request(&addr, ok(8, false).as_bytes(), false, false).0, 200);
    let before = rss(server.child.id()).unwrap();
    let rounds: usize = std::env::var("MINIMAX_LOAD_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let started = Instant::now();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..64)
        .map(|client| {
            let (addr, answered, body) = (addr.clone(), answered.clone(), ok(6 + client % 5, client % 2 == 0));
            std::thread::spawn(move || {
                for round in 0..rounds {
                    let (hang_up, slow) = ((client + round) % 7 == 0, (client + round) % 5 == 0);
                    let (status, text) = raw_request(&addr, body.as_bytes(), hang_up, slow);
                    if hang_up {
                        continue;
                    }
                    // Either served in full, or turned away while the queue is full.
                    let streamed = text.contains("data: [DONE]");
                    let complete = text.contains("\"finish_reason\"");
                    assert!((status == 200 && (streamed || complete)) || status == 503, "client {client}: {status} {text}");
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let hung_up = (0..64).flat_map(|c| (0..rounds).map(move |r| (c + r) % 7 == 0)).filter(|&h| h).count();
    assert_eq!(answered.load(std::sync::atomic::Ordering::Relaxed), 64 * rounds - hung_up);
    // Every slot comes back: nothing waits or runs, and the next request is served.
    let mut stats = server.stats();
    for _ in 0..300 {
        if stats["waiting"] == 0 && stats["running"] == false {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        stats = server.stats();
    }
    assert_eq!((stats["waiting"].as_u64(), stats["running"].as_bool()), (Some(0), Some(false)), "{stats}");
    assert_eq!(raw_request(&addr, ok(4, false).as_bytes(), false, false).0, 200);
    // What the prefix cache keeps is bounded by its budget and counted; the rest must return.
    let after = rss(server.child.id()).unwrap();
    let cached = server.stats()["prefix_cache"]["bytes"].as_u64().unwrap();
    assert!(after < before + cached + (128 << 20), "resident memory grew from {before} to {after} bytes ({cached} in the prefix cache)");
    eprintln!(
        "{} requests from 64 clients ({hung_up} hung up mid-stream) in {:.1} s: {stats}; resident memory {} -> {} MiB, {} MiB of it in the prefix cache",
        64 * rounds,
        started.elapsed().as_secs_f64(),
        before >> 20,
        after >> 20,
        cached >> 20
    );

    // SIGTERM during a stream: the stream runs to its end, then the server exits cleanly.
    let long = json!({"prompt": "Once upon a time", "max_tokens": 120, "temperature": 0, "stream": true, "ignore_eos": true}).to_string();
    let streaming = {
        let addr = addr.clone();
        std::thread::spawn(move || raw_request(&addr, long.as_bytes(), false, true))
    };
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let (status, text) = streaming.join().unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("data: [DONE]"), "the stream in flight was cut: {text}");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "the server exited with {exit}");
}
