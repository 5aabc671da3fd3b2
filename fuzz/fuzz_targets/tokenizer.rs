//! libFuzzer entry for the `tokenizer` target; the target itself is [`minimax_fuzz::tokenizer`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::tokenizer(data));
