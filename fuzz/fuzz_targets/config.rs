//! libFuzzer entry for the `config` target; the target itself is [`minimax_fuzz::config`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::config(data));
