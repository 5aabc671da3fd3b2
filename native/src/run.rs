//! `minimax run`: streamed generation.

use std::io::Write;

use clap::ValueEnum;
use crate::common::{ModelArgs, Result, SamplingArgs, parse_ids};

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
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Feed the prompt this many tokens at a time (default: sized by the runtime to bound
    /// prefill memory).
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print timing and, for a model whose experts stream from a pack, the expert cache's
    /// statistics to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

pub fn main(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let prompt = match (&args.prompt, &args.tokens) {
        (_, Some(ids)) => parse_ids(ids)?,
        (Some(text), None) => engine.encode(text)?,
        (None, None) => unreachable!("clap requires one of them"),
    };
    let options = args.sampling.options(args.prefill_chunk);
    let mut state = engine.new_state();
    let bar = crate::common::prompt_bar(prompt.len(), args.prefill_chunk.unwrap_or(engine.model.prefill_chunk));
    let mut on_prefill = |fed: usize| bar.set_position(fed as u64);
    let started = std::time::Instant::now();
    let mut first_token = None;
    let mut out = std::io::stdout().lock();
    // For tests of a lost GPU: the device is destroyed after this many tokens, as a driver
    // reset would lose it. Called for each token.
    let lose_after: Option<usize> = std::env::var("MINIMAX_LOSE_DEVICE_AFTER").ok().and_then(|v| v.parse().ok());
    let mut count = 0;
    let mut maybe_lose_device = || {
        count += 1;
        if lose_after == Some(count) {
            minimax_runtime::device::lose_device();
        }
    };
    let generated = match args.format {
        Format::Ids => {
            let g = pollster::block_on(engine.generate_with(&mut state, &prompt, &options, &mut on_prefill, |_| {
                first_token.get_or_insert_with(|| started.elapsed());
                maybe_lose_device();
                true
            }))?;
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
            let g = pollster::block_on(engine.generate_with(&mut state, &prompt, &options, &mut on_prefill, |id| {
                first_token.get_or_insert_with(|| started.elapsed());
                maybe_lose_device();
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
            }));
            // The text streamed so far ends its line, also before an error's.
            writeln!(out)?;
            let g = g?;
            if let Some(e) = failure {
                return Err(e.into());
            }
            g
        }
    };
    bar.finish_and_clear();
    tracing::info!(tokens = generated.tokens.len(), stop = ?generated.stop, "done");
    if args.stats {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{} prompt + {} generated tokens in {seconds:.2} s on {}",
            prompt.len(),
            generated.tokens.len(),
            engine.selected.describe()
        );
        // The first token comes after the whole prompt; the rest one forward step each.
        if let Some(first) = first_token {
            let first = first.as_secs_f64();
            let rest = generated.tokens.len().saturating_sub(1);
            eprintln!(
                "time to first token {first:.3} s ({:.1} prompt tokens/s), then {} tokens/s",
                prompt.len() as f64 / first,
                if rest > 0 { format!("{:.1}", rest as f64 / (seconds - first).max(1e-9)) } else { "—".into() }
            );
        }
        match engine.expert_stats() {
            Some((s, slots)) => eprintln!(
                "expert cache: {slots} slots; {} hits, {} misses ({:.1}% hits), {} evictions, {:.1} MiB streamed, {:.3} s stalled, {} prefetched{}",
                s.hits,
                s.misses,
                100.0 * s.hit_rate(),
                s.evictions,
                s.bytes_streamed as f64 / (1 << 20) as f64,
                s.stall_seconds,
                s.prefetched,
                s.prediction_accuracy()
                    .map(|a| format!(", next-layer prediction {:.1}% right", 100.0 * a))
                    .unwrap_or_default()
            ),
            None => eprintln!("expert cache: none (experts are loaded whole)"),
        }
    }
    Ok(())
}
