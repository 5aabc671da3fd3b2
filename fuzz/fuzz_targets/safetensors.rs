//! libFuzzer entry for the `safetensors` target; the target itself is [`minimax_fuzz::safetensors`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::safetensors(data));
