//! The small models the stateful targets run against: the `minimax-7to1` test fixture (seven
//! lightning layers and one softmax layer, 64 wide, 320 tokens) on the CPU backend. It is
//! loaded once per thread and kept, so that an input costs a restore or a request check,
//! not a model load.

use std::path::{Path, PathBuf};

use minimax_runtime::chat::ChatTemplate;
use minimax_runtime::device::BackendChoice;
use minimax_runtime::{Engine, RuntimeOptions};
use minimax_server::{ServerConfig, ServerState};

/// ChatML, with a default system prompt and a check of the roles: the kind of template a
/// served model brings.
pub const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// The fixture model's directory.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/minimax-7to1")
}

/// Loads the fixture model on the CPU backend.
pub fn load_fixture() -> Engine {
    let options = RuntimeOptions { backend: BackendChoice::Cpu, ..Default::default() };
    let dir = fixture_dir();
    Engine::load_dir(&dir, &options).unwrap_or_else(|e| panic!("the fuzz fixture {} must load: {e}", dir.display()))
}

thread_local! {
    static ENGINE: &'static Engine = Box::leak(Box::new(load_fixture()));
    static SERVERS: [ServerState; 2] = [false, true].map(|template| {
        let mut engine = load_fixture();
        engine.chat_template = template.then(|| ChatTemplate::new(CHATML, "<s>", "</s>"));
        ServerState::new(engine, "fuzz", ServerConfig::default()).expect("the fixture has a tokenizer")
    });
}

/// The fixture engine of this thread.
pub fn fixture_engine() -> &'static Engine {
    ENGINE.with(|e| *e)
}

/// A server over the fixture model, with the ChatML template or without a template.
pub fn fixture_server(template: bool) -> ServerState {
    SERVERS.with(|s| s[usize::from(template)].clone())
}
