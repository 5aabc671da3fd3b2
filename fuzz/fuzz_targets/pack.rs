//! libFuzzer entry for the `pack` target; the target itself is [`minimax_fuzz::pack`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::pack(data));
