//! `minimax run`: streamed generation.

use std::io::Write;

use clap::ValueEnum;
use minimax_runtime::generate::GenerateOptions;
use minimax_runtime::sampling::SamplingParams;

use crate::common::{ModelArgs, Result, parse_ids};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The generated text, streamed.
    Text,
    /// Only the generated token ids, comma-separated on one line.
    Ids,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text (needs the model's tokenizer.json).
    #[arg(long, conflicts_with = "tokens", required_unless_present = "tokens")]
    pub prompt: Option<String>,
    /// Prompt as token ids, e.g. `1,2,3`.
    #[arg(long)]
    pub tokens: Option<String>,
    /// Maximum number of new tokens.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Drop tokens below this fraction of the top probability (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// Penalty for tokens already seen (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Feed the prompt this many tokens at a time.
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn main(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let prompt = match (&args.prompt, &args.tokens) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) => engine.encode(text)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let options = GenerateOptions {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            min_p: args.min_p,
            repetition_penalty: args.repetition_penalty,
            seed: args.seed,
        },
        max_tokens: args.max_tokens,
        stop_on_eos: !args.ignore_eos,
        prefill_chunk: args.prefill_chunk,
    };
    let mut state = engine.new_state();
    let mut out = std::io::stdout().lock();
    let generated = match args.format {
        Format::Ids => {
            let g = pollster::block_on(engine.generate(&mut state, &prompt, &options, |_| true))?;
            let ids: Vec<String> = g.tokens.iter().map(u32::to_string).collect();
            writeln!(out, "{}", ids.join(","))?;
            g
        }
        Format::Text => {
            let tokenizer = engine.tokenizer()?;
            let mut stream = tokenizer.stream();
            let mut failure = None;
            if let Some(text) = &args.prompt {
                write!(out, "{text}")?;
                out.flush()?;
            }
            let g = pollster::block_on(engine.generate(&mut state, &prompt, &options, |id| {
                let shown = stream
                    .push(id)
                    .map_err(|e| e.to_string())
                    .and_then(|piece| {
                        if let Some(piece) = piece {
                            write!(out, "{piece}").and_then(|_| out.flush()).map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    });
                match shown {
                    Ok(()) => true,
                    Err(e) => {
                        failure = Some(e);
                        false
                    }
                }
            }))?;
            writeln!(out)?;
            if let Some(e) = failure {
                return Err(e.into());
            }
            g
        }
    };
    tracing::info!(tokens = generated.tokens.len(), stop = ?generated.stop, "done");
    Ok(())
}
