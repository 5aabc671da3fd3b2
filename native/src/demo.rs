//! The embedded default model: a small MiniMax-01-architecture model trained by the project
//! (`models/minimax-demo`, recipe in `tools/train/`), compiled into the library (and so into the
//! `minimax` binary and `libminimax`) so that `minimax run` works with no download.

#[cfg(feature = "embedded-demo")]
use std::sync::Arc;

use minimax_runtime::ModelFiles;
#[cfg(feature = "embedded-demo")]
use minimax_runtime::weights::ShardBytes;

const DIR: &str = "models/minimax-demo";

/// Builds without the `embedded-demo` feature (23 MB smaller, e.g. for apps that ship their
/// own model) say so instead.
#[cfg(not(feature = "embedded-demo"))]
pub fn files() -> minimax_runtime::Result<ModelFiles> {
    Err(minimax_runtime::error::WeightsError::Format {
        path: format!("{DIR} (embedded)"),
        reason: "this build has no embedded demo model (the `embedded-demo` feature is off): give a model path".into(),
    }
    .into())
}

#[cfg(feature = "embedded-demo")]
static CONFIG: &str = include_str!("../../models/minimax-demo/config.json");
#[cfg(feature = "embedded-demo")]
static WEIGHTS: &[u8] = include_bytes!("../../models/minimax-demo/model.safetensors");
#[cfg(feature = "embedded-demo")]
static TOKENIZER: &[u8] = include_bytes!("../../models/minimax-demo/tokenizer.json");
#[cfg(feature = "embedded-demo")]
static TOKENIZER_CONFIG: &str = include_str!("../../models/minimax-demo/tokenizer_config.json");

/// The demo model's files, borrowed from the library's own bytes.
#[cfg(feature = "embedded-demo")]
pub fn files() -> minimax_runtime::Result<ModelFiles> {
    ModelFiles::from_safetensors(
        CONFIG.to_string(),
        vec![(format!("{DIR}/model.safetensors (embedded)"), Arc::new(WEIGHTS) as ShardBytes)],
        Some(TOKENIZER.to_vec()),
        Some(TOKENIZER_CONFIG.to_string()),
    )
}
