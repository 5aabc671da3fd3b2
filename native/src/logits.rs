//! `minimax logits`: the logits of every position, as a float32 `[T, vocab]` .npy file.

use std::path::PathBuf;

use crate::common::{ModelArgs, Result, parse_ids};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Token ids, e.g. `1,2,3`.
    #[arg(long)]
    pub tokens: String,
    /// Feed the tokens through the state this many at a time.
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// Output .npy file.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn main(args: Args) -> Result<()> {
    let tokens = parse_ids(&args.tokens)?;
    let engine = args.model.load()?;
    let logits = pollster::block_on(engine.logits(&tokens, args.prefill_chunk))?;
    let vocab = engine.model.config.vocab_size as u64;
    let file = std::fs::File::create(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    use npyz::WriterBuilder;
    let mut writer = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[tokens.len() as u64, vocab])
        .writer(std::io::BufWriter::new(file))
        .begin_nd()?;
    writer.extend(logits)?;
    writer.finish()?;
    Ok(())
}
