//! `minimax serve`: an OpenAI-compatible HTTP server (the `minimax-server` crate) over one
//! loaded model.

use minimax_server::{ServerConfig, ServerState, model_id_for_path};

use crate::common::{ModelArgs, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; 0 picks a free one (the address is printed on startup).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model name clients send in `model` (default: the model's directory or file name,
    /// or `minimax-demo` for the embedded model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// `max_tokens` for requests that give none (capped by the context).
    #[arg(long, default_value_t = 256)]
    pub default_max_tokens: usize,
    /// Requests that may wait for the engine; more get 503.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// MiB of sequence states kept so that prompts starting alike (a system prompt, the
    /// earlier turns of a chat) skip the part already read; 0 turns the cache off.
    #[arg(long, default_value_t = 1024)]
    pub prefix_cache_mb: u64,
}

pub fn main(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let model_id = match (&args.served_model_name, &args.model.model) {
        (Some(name), _) => name.clone(),
        (None, Some(path)) => model_id_for_path(path),
        (None, None) => "minimax-demo".into(),
    };
    let device = engine.selected.describe();
    let config = ServerConfig {
        default_max_tokens: args.default_max_tokens,
        queue: args.queue,
        prefix_cache_bytes: args.prefix_cache_mb << 20,
        ..ServerConfig::default()
    };
    let state = ServerState::new(engine, model_id.clone(), config)?;
    minimax_server::serve_blocking(&args.host, args.port, state, |addr| {
        // Scripts and tests read the bound address (the real port with --port 0) from here.
        println!("listening on http://{addr} (model `{model_id}` on {device})");
    })?;
    Ok(())
}
