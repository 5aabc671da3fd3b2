//! libFuzzer entry for the `snapshot` target; the target itself is [`minimax_fuzz::snapshot`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::snapshot(data));
