//! libFuzzer entry for the `chat_template` target; the target itself is [`minimax_fuzz::chat_template`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| minimax_fuzz::chat_template(data));
