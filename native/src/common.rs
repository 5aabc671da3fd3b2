//! Option groups and helpers shared by the subcommands.

use std::path::PathBuf;

use clap::Args;
use minimax_runtime::device::{self, BackendChoice};
use minimax_runtime::{Engine, MatrixDType, ModelFiles, RuntimeOptions};

/// The result type of the subcommands.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Where the model comes from and where it runs.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json); the
    /// embedded demo model when absent.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Backend: auto (a hardware GPU, else the CPU), gpu (any wgpu adapter) or cpu.
    #[arg(long, default_value = "auto")]
    pub backend: BackendChoice,
    /// Storage type of the large matrices: f32, f16 (GPUs with shader-f16) or auto.
    #[arg(long, default_value = "auto")]
    pub dtype: MatrixDType,
}

impl ModelArgs {
    pub fn options(&self) -> RuntimeOptions {
        RuntimeOptions {
            backend: self.backend,
            matrix_dtype: self.dtype,
        }
    }

    /// The model's files: a directory's, or the embedded demo model's.
    pub fn files(&self) -> Result<ModelFiles> {
        match &self.model {
            None => Ok(crate::demo::files()?),
            Some(dir) if !dir.join("config.json").exists() => {
                Err(format!("{} has no config.json", dir.display()).into())
            }
            Some(dir) => Ok(ModelFiles::read_dir(dir)?),
        }
    }

    /// Loads the model, printing the CPU fallback notice if there is one.
    pub fn load(&self) -> Result<Engine> {
        let files = self.files()?;
        let engine = Engine::new(files, device::select(self.backend)?, &self.options())?;
        if let Some(notice) = &engine.selected.notice {
            eprintln!("note: {notice}");
        }
        Ok(engine)
    }
}

/// Parses `1,2,3` into token ids.
pub fn parse_ids(text: &str) -> Result<Vec<u32>> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().map_err(|e| format!("bad token id `{s}`: {e}").into()))
        .collect()
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.2} {}", UNITS[unit]) }
}
