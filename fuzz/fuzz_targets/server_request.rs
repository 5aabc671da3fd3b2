//! libFuzzer entry for the `server_request` target; the target itself is [`minimax_fuzz::server_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::server_request(data));
