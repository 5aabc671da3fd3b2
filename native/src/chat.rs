//! `minimax chat`: an interactive terminal chat with the model's own chat template, or the
//! plain `Role: content` format for a model without one (the embedded demo model).
//!
//! Replies stream as they are generated; Ctrl-C stops a reply without leaving (and leaves at
//! the prompt). `/reset`, `/save FILE`, `/load FILE` manage the conversation: a saved file holds
//! the model's state, which for lightning layers is constant-size however long the talk.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use minimax_runtime::chat::{Conversation, Message};
use minimax_runtime::stop::{Pushed, StopMatcher};

use crate::common::{ModelArgs, Result, SamplingArgs, prompt_bar};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
}

const HELP: &str = "commands: /reset, /save FILE, /load FILE, /quit; Ctrl-C stops a reply";

pub fn main(args: Args) -> Result<()> {
    let engine = args.model.load()?;
    let template = engine.chat_format();
    let tokenizer = engine.tokenizer()?;
    let mut options = args.sampling.options(None);
    // The template's end-of-turn token ends a reply, whatever the config's EOS is.
    options.stop_tokens.extend(tokenizer.token_id(&template.eos_token));

    let generating = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let (generating, interrupted) = (generating.clone(), interrupted.clone());
        ctrlc::set_handler(move || {
            if generating.load(Ordering::SeqCst) {
                interrupted.store(true, Ordering::SeqCst);
            } else {
                println!();
                std::process::exit(130);
            }
        })?;
    }

    let model = &engine.model;
    let new_conversation = || {
        let mut c = Conversation::new(model);
        if let Some(system) = &args.system {
            c.messages.push(Message::new("system", system));
        }
        c
    };
    let mut conversation = new_conversation();
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("{} on {}. {HELP}", args.model.describe(), engine.selected.describe());
    }
    let mut out = std::io::stdout();
    let mut lines = std::io::stdin().lock().lines();
    loop {
        if interactive {
            print!("> ");
            out.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        match line.split_once(' ').unwrap_or((line, "")) {
            ("", _) => continue,
            ("/quit" | "/exit", _) => break,
            ("/help", _) => println!("{HELP}"),
            ("/reset", _) => {
                conversation = new_conversation();
                println!("[conversation reset]");
            }
            ("/save", path) if !path.is_empty() => {
                let bytes = pollster::block_on(conversation.save(model))?;
                std::fs::write(path, &bytes).map_err(|e| format!("{path}: {e}"))?;
                println!("[saved {} tokens of conversation to {path}, {} bytes]", conversation.fed.len(), bytes.len());
            }
            ("/load", path) if !path.is_empty() => {
                let loaded = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| Conversation::load(model, &bytes).map_err(|e| e.to_string()));
                match loaded {
                    Ok(c) => {
                        conversation = c;
                        println!("[loaded {path}: {} messages]", conversation.messages.len());
                    }
                    Err(e) => println!("[cannot load {path}: {e}]"),
                }
            }
            (command, _) if command.starts_with('/') => println!("[unknown command; {HELP}]"),
            _ => {
                interrupted.store(false, Ordering::SeqCst);
                generating.store(true, Ordering::SeqCst);
                let mut stream = tokenizer.stream();
                // The format's stop sequences end a reply; text that may begin one is held back.
                let mut stops = StopMatcher::new(template.stop.clone());
                let mut reply = String::new();
                let mut failure = None;
                let encode = |text: &str| template.encode(tokenizer, text);
                // A long message (a pasted document) shows its prefill, as `run` does.
                let bar = std::cell::RefCell::new(None);
                let chunk = model.prefill_chunk;
                let mut on_prefill = |fed: usize, of: usize| {
                    bar.borrow_mut().get_or_insert_with(|| prompt_bar(of, chunk)).set_position(fed as u64);
                };
                let generated = pollster::block_on(conversation.reply_with(model, &template, encode, line, &options, &mut on_prefill, |id| {
                    if let Some(bar) = bar.borrow_mut().take() {
                        bar.finish_and_clear();
                    }
                    let (text, stopped) = match stream.push(id) {
                        Ok(Some(piece)) => match stops.push(&piece) {
                            Pushed::Release(text) => (text, false),
                            Pushed::Stopped(text) => (text, true),
                        },
                        _ => (String::new(), false),
                    };
                    reply.push_str(&text);
                    if let Err(e) = write!(out, "{text}").and_then(|_| out.flush()) {
                        failure = Some(e);
                    }
                    !stopped && !interrupted.load(Ordering::SeqCst) && failure.is_none()
                }));
                generating.store(false, Ordering::SeqCst);
                if let Some(bar) = bar.borrow_mut().take() {
                    bar.finish_and_clear();
                }
                generated?;
                if let Some(e) = failure {
                    return Err(e.into());
                }
                // Text held back as a possible stop sequence that never came.
                let rest = stops.finish();
                print!("{rest}");
                reply.push_str(&rest);
                if interrupted.load(Ordering::SeqCst) {
                    print!(" [stopped]");
                }
                println!();
                conversation.push_reply(&reply);
            }
        }
    }
    Ok(())
}
