//! `minimax convert`: a Hugging Face MiniMax checkpoint into an expert pack (one aligned,
//! checksummed record per expert; format in `minimax_runtime::experts::pack`).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use minimax_runtime::experts::convert::{self, ConvertOptions, Stage};
use minimax_runtime::weights::StoredDType;

use crate::common::{Result, bytes};

/// The expert record formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Quant {
    /// Q4_1: 4-bit with an f16 scale and minimum per 32 values (5 bits per weight).
    Q4,
    /// Q8_0: 8-bit with an f16 scale per 32 values (8.5 bits per weight).
    Q8,
    /// F16: IEEE half precision.
    F16,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hugging Face model directory (config.json and model.safetensors or sharded
    /// model-*.safetensors), with experts stored per expert or fused.
    #[arg(long)]
    pub model: PathBuf,
    /// Directory to write the pack into (created if needed; must not be the model directory).
    #[arg(long)]
    pub out: PathBuf,
    /// Format of the expert records.
    #[arg(long, value_enum)]
    pub quant: Quant,
    /// Convert only the experts and copy every dense tensor as stored. Without it, q4 and q8
    /// also quantize the linear layers (attention, lm_head, dense MLPs) to the same blocks;
    /// embeddings, norms and routers are always copied as stored.
    #[arg(long)]
    pub experts_only: bool,
}

pub fn main(args: Args) -> Result<()> {
    let quant = match args.quant {
        Quant::Q4 => StoredDType::Q4_1,
        Quant::Q8 => StoredDType::Q8_0,
        Quant::F16 => StoredDType::F16,
    };
    let dense = (!args.experts_only && quant != StoredDType::F16).then_some(quant);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut stage = None;
    let summary = convert::convert(&args.model, &args.out, &ConvertOptions { quant, dense }, &mut |p| {
        if stage != Some(p.stage) {
            stage = Some(p.stage);
            // The verify pass re-reads everything: restart the bar so its rate and ETA are its own.
            if p.stage == Stage::Verify {
                bar.reset();
            }
            bar.set_message(match p.stage {
                Stage::Dense => "copying dense tensors",
                Stage::Experts => "encoding experts",
                Stage::Verify => "verifying CRC-32s",
            });
        }
        bar.set_length(p.total);
        bar.set_position(p.done);
    });
    let summary = match summary {
        Ok(s) => s,
        Err(e) => {
            bar.abandon();
            return Err(e.into());
        }
    };
    bar.finish_with_message("verified");
    let index = &summary.index;
    let experts_bytes = index.experts.last().map_or(0, |r| r.offset + r.bytes);
    println!(
        "{}: {} experts in {} layers as {} ({} records of {}, {} in experts.bin), {} dense tensors ({}), copied {}",
        args.out.display(),
        index.num_experts,
        index.moe_layers.len(),
        index.quant,
        index.experts.len(),
        bytes(index.record_bytes),
        bytes(experts_bytes),
        summary.dense_tensors,
        bytes(index.dense.bytes),
        summary.copied.join(", "),
    );
    if !summary.fallbacks.is_empty() {
        println!("stored in another format than asked, where the shape allows no other (also in pack.json):");
        for note in &summary.fallbacks {
            println!("  {note}");
        }
    }
    Ok(())
}
