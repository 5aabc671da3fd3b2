//! The embedded default model: a small MiniMax-01-architecture model trained by the project
//! (`models/minimax-demo`, recipe in `tools/train/`), compiled into the binary so that
//! `minimax run` works with no download.

use std::sync::Arc;

use minimax_runtime::ModelFiles;
use minimax_runtime::weights::ShardBytes;

const DIR: &str = "models/minimax-demo";
static CONFIG: &str = include_str!("../../models/minimax-demo/config.json");
static WEIGHTS: &[u8] = include_bytes!("../../models/minimax-demo/model.safetensors");
static TOKENIZER: &[u8] = include_bytes!("../../models/minimax-demo/tokenizer.json");
static TOKENIZER_CONFIG: &str = include_str!("../../models/minimax-demo/tokenizer_config.json");

/// The demo model's files, borrowed from the binary.
pub fn files() -> minimax_runtime::Result<ModelFiles> {
    ModelFiles::from_safetensors(
        CONFIG.to_string(),
        vec![(format!("{DIR}/model.safetensors (embedded)"), Arc::new(WEIGHTS) as ShardBytes)],
        Some(TOKENIZER.to_vec()),
        Some(TOKENIZER_CONFIG.to_string()),
    )
}
