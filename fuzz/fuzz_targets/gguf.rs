//! libFuzzer entry for the `gguf` target; the target itself is [`minimax_fuzz::gguf`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::gguf(data));
