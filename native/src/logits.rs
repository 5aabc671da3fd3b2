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
    let mut bytes = npy_header(&[tokens.len() as u64, vocab]);
    bytes.extend(logits.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(&args.out, bytes).map_err(|e| format!("{}: {e}", args.out.display()))?;
    Ok(())
}

/// The header of a little-endian float32 C-order .npy file (format 1.0): magic, version, a
/// u16 header length, then a Python dict literal padded with spaces to a 64-byte boundary and
/// ended by a newline. Written by hand: the npy crates pull in a parser with assembly that
/// does not cross-compile.
fn npy_header(shape: &[u64]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(u64::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out
}
