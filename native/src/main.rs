//! `minimax`: run MiniMax-01-style models on any GPU through wgpu, or on the CPU.

mod bench;
mod bench_experts;
mod bench_profile;
mod chat;
mod common;
mod convert;
mod info;
mod logits;
mod run;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "minimax", version, about = "MiniMax-01 (lightning attention + MoE) inference on WebGPU")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text (streamed) from a prompt or token ids.
    Run(run::Args),
    /// Chat in the terminal with the model's chat template.
    Chat(chat::Args),
    /// Write the logits of every position of a token sequence to a .npy file.
    Logits(logits::Args),
    /// Show the model layout, parameter counts, memory needs and the chosen adapter.
    Info(info::Args),
    /// Measure prefill and decode speed.
    Bench(bench::Args),
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve(serve::Args),
    /// Convert a Hugging Face checkpoint into an expert pack (experts as Q4_1, Q8_0 or F16).
    Convert(convert::Args),
}

/// Warnings, except cubecl's device thread's report of a failed task: a multi-line dump
/// (error chain, backtrace) of a failure that also reaches the command, which prints it as one
/// line (an allocation the GPU refused, a lost device). `RUST_LOG` overrides this.
const DEFAULT_LOG: &str = "warn,cubecl_common::device::handle=error";

fn main() {
    quiet_headless_vulkan();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG.into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::main(args),
        Command::Chat(args) => chat::main(args),
        Command::Logits(args) => logits::main(args),
        Command::Info(args) => info::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Serve(args) => serve::main(args),
        Command::Convert(args) => convert::main(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// On a machine without a desktop session, Mesa's implicit Vulkan layer `device_select`
/// probes for a Wayland display while wgpu enumerates adapters, and libwayland prints
/// "error: XDG_RUNTIME_DIR is invalid or not set in the environment." twice per enumeration:
/// an "error:" before anything has gone wrong. The layer only reorders GPUs for programs that
/// take the first one (wgpu looks at them all), so without a session it is switched off, by
/// the variable Mesa reads for that. Set here, before any thread exists.
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: called first in `main`, while the process has a single thread.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
