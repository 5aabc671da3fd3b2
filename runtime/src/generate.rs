//! Prefill and token-by-token generation with streaming: each new token is handed to a
//! callback as soon as it is sampled, and the callback may stop generation.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use burn::tensor::{Int, Tensor};

use crate::error::{Error, RuntimeError};
use crate::kernels::argmax::argmax;
use crate::model::decode_graph::DecodeGraph;
use crate::model::{Logits, Model, State};
use crate::sampling::{Sampler, SamplingParams};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Stop at an end-of-sequence token of the model config (which is not returned).
    pub stop_on_eos: bool,
    /// More ids that end generation (not returned), e.g. a chat template's end-of-turn token.
    pub stop_tokens: Vec<u32>,
    /// Feed the prompt this many tokens at a time (`None`: the model's default chunk, sized
    /// to bound prefill memory; see [`crate::model::prefill_chunk`]).
    pub prefill_chunk: Option<usize>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingParams::default(),
            max_tokens: 128,
            stop_on_eos: true,
            stop_tokens: Vec::new(),
            prefill_chunk: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    MaxTokens,
    Eos,
    /// The token callback asked to stop.
    Cancelled,
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generated {
    pub tokens: Vec<u32>,
    pub stop: StopReason,
}

/// Reads a `[rows, vocab]` logits tensor back to the host.
pub async fn read_logits(logits: Tensor<2>) -> Result<Vec<f32>, Error> {
    let data = logits
        .into_data_async()
        .await
        .map_err(RuntimeError::readback)?;
    Ok(data.try_into_vec_as::<f32>().map_err(RuntimeError::readback)?)
}

/// Feeds `tokens` through `state`, `chunk` tokens at a time (`None`: the model's default
/// chunk, [`Model::prefill_chunk`]). With [`Logits::All`] the logits
/// of every token are concatenated; with [`Logits::Last`] only the last token's are returned.
pub async fn prefill(
    model: &Model,
    state: &mut State,
    tokens: &[u32],
    chunk: Option<usize>,
    mode: Logits,
) -> Result<Tensor<2>, Error> {
    prefill_with(model, state, tokens, chunk, mode, &mut |_| {}).await
}

/// The chunk `tokens` are fed in (`chunk`, or the model's default), refused before any work
/// if the model cannot take it, as an empty prompt is.
fn prefill_chunk(model: &Model, tokens: &[u32], chunk: Option<usize>) -> Result<usize, Error> {
    if tokens.is_empty() {
        return Err(RuntimeError::EmptyInput.into());
    }
    let chunk = chunk.unwrap_or(model.prefill_chunk).max(1);
    model.check_chunk(chunk.min(tokens.len()))?;
    Ok(chunk)
}

/// [`prefill`], calling `progress(tokens fed)` after each chunk has been enqueued.
pub async fn prefill_with(
    model: &Model,
    state: &mut State,
    tokens: &[u32],
    chunk: Option<usize>,
    mode: Logits,
    progress: &mut dyn FnMut(usize),
) -> Result<Tensor<2>, Error> {
    let chunk = prefill_chunk(model, tokens, chunk)?;
    let start = state.position;
    let mut outputs = Vec::new();
    let pieces: Vec<&[u32]> = tokens.chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        let want = if mode == Logits::All || last { mode } else { Logits::Last };
        let logits = model.forward(piece, state, want).await?;
        if !last {
            // Let the device finish the chunk before the next is enqueued: `progress` then
            // tells the truth on a GPU, and at most one chunk's work is in flight. One logit
            // read back per thousands of tokens costs nothing measurable, and an async read
            // is the wait a browser allows (it cannot block).
            let done = logits.clone().slice([0..1, 0..1]);
            done.into_data_async().await.map_err(RuntimeError::readback)?;
        }
        if mode == Logits::All || last {
            outputs.push(logits);
        }
        progress(state.position - start);
    }
    Ok(Tensor::cat(outputs, 0))
}

/// The logits of every token of `tokens` fed through `state`, `chunk` tokens at a time, read
/// back chunk by chunk into host memory `[T × vocab]`: the logits of a long sequence need not
/// fit one device buffer (a storage binding is 128 MiB to 2 GiB; 9000 positions of a 4096-
/// token vocabulary already pass 128 MiB).
pub async fn prefill_logits(
    model: &Model,
    state: &mut State,
    tokens: &[u32],
    chunk: Option<usize>,
) -> Result<Vec<f32>, Error> {
    let chunk = prefill_chunk(model, tokens, chunk)?;
    let mut out = Vec::with_capacity(tokens.len() * model.config.vocab_size);
    for piece in tokens.chunks(chunk) {
        out.extend(read_logits(model.forward(piece, state, Logits::All).await?).await?);
    }
    Ok(out)
}

/// Generates up to `max_tokens` tokens after `prompt`, calling `on_token(id)` for each one as
/// soon as it is chosen; `on_token` returns `false` to stop.
pub async fn generate(
    model: &Model,
    state: &mut State,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: impl FnMut(u32) -> bool,
) -> Result<Generated, Error> {
    generate_with(model, state, prompt, options, &mut |_| {}, on_token).await
}

/// [`generate`], calling `on_prefill(prompt tokens fed)` as the prompt's chunks go in (for a
/// progress bar over a long prompt).
pub async fn generate_with(
    model: &Model,
    state: &mut State,
    prompt: &[u32],
    options: &GenerateOptions,
    on_prefill: &mut dyn FnMut(usize),
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generated, Error> {
    let mut sampler = Sampler::new(options.sampling.clone());
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    if options.max_tokens == 0 {
        return Ok(Generated {
            tokens,
            stop: StopReason::MaxTokens,
        });
    }
    let mut logits = prefill_with(model, state, prompt, options.prefill_chunk, Logits::Last, on_prefill).await?;
    let ends = |id: u32| (options.stop_on_eos && model.config.eos_token_ids.contains(&id)) || options.stop_tokens.contains(&id);
    if sampler.is_greedy() {
        let mut stop = StopReason::MaxTokens;
        greedy_decode(model, state, logits, options.max_tokens, |id| {
            if ends(id) {
                stop = StopReason::Eos;
                return false;
            }
            tokens.push(id);
            if !on_token(id) {
                stop = StopReason::Cancelled;
                return false;
            }
            true
        })
        .await?;
        return Ok(Generated { tokens, stop });
    }
    // Every token but the last is fed, within the context cap.
    let mut steps = FedSteps::new(model, (options.max_tokens - 1).min(model.room(state.position)));
    loop {
        let id = sampler.sample(&read_logits(logits).await?, &history);
        if ends(id) {
            return Ok(Generated {
                tokens,
                stop: StopReason::Eos,
            });
        }
        tokens.push(id);
        history.push(id);
        if !on_token(id) {
            return Ok(Generated {
                tokens,
                stop: StopReason::Cancelled,
            });
        }
        if tokens.len() >= options.max_tokens {
            return Ok(Generated {
                tokens,
                stop: StopReason::MaxTokens,
            });
        }
        logits = match steps.as_mut() {
            Some(steps) => steps.feed(model, state, id).await?,
            None => model.forward(&[id], state, Logits::Last).await?,
        };
    }
}

/// Sampled decoding's steps as recorded [`DecodeGraph`]s, in segments: the host writes each
/// sampled id into the recording's input and reads its logits back.
struct FedSteps {
    graph: Option<DecodeGraph>,
    segments: Segments,
}

impl FedSteps {
    /// For up to `steps` fed tokens, where the model decodes on the device.
    fn new(model: &Model, steps: usize) -> Option<Self> {
        (steps > 0 && model.decodes_on_device()).then(|| Self { graph: None, segments: Segments::new(steps, GRAPH_SEGMENT) })
    }

    async fn feed(&mut self, model: &Model, state: &mut State, id: u32) -> Result<Tensor<2>, Error> {
        if !self.graph.as_ref().is_some_and(|g| g.can_step(state)) {
            let Some(n) = self.segments.next() else {
                // Only the context cap ends the segments early: feeding is refused there.
                return model.forward(&[id], state, Logits::Last).await;
            };
            let ids = Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(vec![id as i32], [1]), &model.device);
            self.graph = Some(DecodeGraph::new(model, state, ids, n)?);
        }
        self.graph.as_mut().expect("a segment").feed(model, state, id).await
    }
}

/// Greedy decoding of up to `max_tokens` tokens after `logits` (`[1, vocab]`, the last fed
/// position's), pipelined: each token is picked on the device, and the step that feeds it is
/// enqueued *before* it is read back, so the host enqueues step n + 1 while the device still
/// runs step n, and a step costs the larger of the two instead of their sum.
///
/// `accept(id)` sees each token in order and returns whether to go on. The state ends having
/// fed every token given to `accept` except the last one, exactly as the unpipelined loop
/// (a token refused, or the last of `max_tokens`, is never fed): the one step enqueued past
/// the end is undone with [`State::rewind`]. Falls back to reading each id before feeding it
/// where the id cannot be fed from the device ([`Model::forward_on_device`]), or where feeding
/// it could pass the context cap before `accept` has seen it.
///
/// Where the model allows ([`Model::decodes_on_device`]), the steps are recorded once and
/// replayed ([`DecodeGraph`]).
pub async fn greedy_decode(
    model: &Model,
    state: &mut State,
    logits: Tensor<2>,
    max_tokens: usize,
    mut accept: impl FnMut(u32) -> bool,
) -> Result<(), Error> {
    if max_tokens == 0 {
        return Ok(());
    }
    let mut ids = argmax(logits)?;
    // Steps the loop may feed: every token but the last, within the context cap.
    let steps = (max_tokens - 1).min(model.room(state.position));
    if steps > 0 && model.decodes_on_device() {
        return graph_decode(model, state, ids, max_tokens, steps, GRAPH_SEGMENT, accept).await;
    }
    let mut read = start_read(ids.clone());
    for n in 0..max_tokens {
        let last = n + 1 == max_tokens;
        let mut ahead = None;
        if !last && model.fits(state.position + 1) {
            let mark = state.mark();
            if let Some(logits) = model.forward_on_device(ids.clone(), state, Logits::Last).await? {
                let next = argmax(logits)?;
                ahead = Some((mark, next.clone(), start_read(next)));
            }
        }
        let id = finish(read).await?[0] as u32;
        if !accept(id) || last {
            if let Some((mark, ..)) = ahead {
                state.rewind(mark);
            }
            return Ok(());
        }
        ids = match ahead {
            Some((_, next, next_read)) => {
                read = next_read;
                next
            }
            None => {
                let next = argmax(model.forward(&[id], state, Logits::Last).await?)?;
                read = start_read(next.clone());
                next
            }
        };
    }
    Ok(())
}

/// Steps per recording of decode steps ([`DecodeGraph`]).
const GRAPH_SEGMENT: usize = 1024;

/// Steps to record, handed out a segment at a time: each recording's KV buffers and RoPE
/// tables are sized for its segment, not for a `max_tokens` that may be far larger than what
/// is generated.
struct Segments {
    left: usize,
    size: usize,
}

impl Segments {
    fn new(steps: usize, size: usize) -> Self {
        Self { left: steps, size }
    }

    /// The next segment's steps, `None` once all are handed out.
    fn next(&mut self) -> Option<usize> {
        let n = self.left.min(self.size);
        self.left -= n;
        (n > 0).then_some(n)
    }
}

/// [`greedy_decode`] through [`DecodeGraph`]s of up to `steps` steps in all: the same pipeline
/// (the step that feeds a token is enqueued before the token is read), each step a replay.
async fn graph_decode(
    model: &Model,
    state: &mut State,
    ids: Tensor<1, Int>,
    max_tokens: usize,
    steps: usize,
    segment_steps: usize,
    mut accept: impl FnMut(u32) -> bool,
) -> Result<(), Error> {
    let mut segments = Segments::new(steps, segment_steps);
    let first = segments.next().expect("at least one step");
    let mut graph = DecodeGraph::new(model, state, ids, first)?;
    // Read before the next step overwrites the id buffer: queue order keeps them apart.
    let mut read = start_read(graph.ids().clone());
    for n in 0..max_tokens {
        let last = n + 1 == max_tokens;
        if !last && !graph.can_step(state) {
            // The next segment starts from this one's input id (copied, after the read above).
            if let Some(next) = segments.next() {
                graph = DecodeGraph::new(model, state, graph.ids().clone(), next)?;
            }
        }
        let ahead = !last && graph.can_step(state);
        if ahead {
            graph.step(model, state).await?;
        }
        let id = finish(read).await?[0] as u32;
        if !accept(id) || last {
            if ahead {
                graph.undo(state);
            }
            return Ok(());
        }
        if !ahead {
            // Only the context cap stops the steps early: feeding this token is refused, as
            // in the eager loop.
            model.check_context(state.position + 1)?;
            return Err(RuntimeError::ContextOverflow { needed: state.position + 1, max: state.position }.into());
        }
        read = start_read(graph.ids().clone());
    }
    Ok(())
}

type Values = Pin<Box<dyn Future<Output = Result<Vec<usize>, Error>>>>;

/// A read-back under way ([`start_read`]).
struct Read {
    values: Values,
    /// Natively: an empty submission right behind the read's copy, to wait for.
    #[cfg(not(target_arch = "wasm32"))]
    fence: Option<(burn::tensor::wgpu::wgpu::Device, burn::tensor::wgpu::wgpu::SubmissionIndex)>,
}

/// Starts reading `ids` back and returns the read under way. Burn's reads are lazy futures;
/// polling this one once enqueues the copy and flushes the queue, so the device works on
/// while more is enqueued behind it, and finishing it later only waits for that copy.
fn start_read(ids: Tensor<1, Int>) -> Read {
    #[cfg(not(target_arch = "wasm32"))]
    let on_wgpu = crate::kernels::uses_wgsl(&ids.device());
    let mut values: Values = Box::pin(crate::model::moe::read_ints(ids));
    if let Poll::Ready(v) = values.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        values = Box::pin(std::future::ready(v));
    }
    Read {
        values,
        // cubecl's polling thread waits for the newest submission at the time it starts
        // waiting, so the copy's callback would come only after the next step, enqueued
        // meanwhile, had finished too: the pipeline would stall a step. An empty submission
        // marks where this read ends in the queue, and `finish` waits for just that.
        #[cfg(not(target_arch = "wasm32"))]
        fence: crate::device::wgpu_queue().filter(|_| on_wgpu).map(|(device, queue)| {
            let index = queue.submit([]);
            (device, index)
        }),
    }
}

/// The values of a read under way. (In a browser the page's event loop delivers them as
/// soon as the copy is done.)
async fn finish(read: Read) -> Result<Vec<usize>, Error> {
    #[cfg(not(target_arch = "wasm32"))]
    if let Some((device, index)) = read.fence {
        use burn::tensor::wgpu::wgpu::PollType;
        // Also delivers the copy's callback; errors surface through the read itself.
        let _ = device.poll(PollType::Wait { submission_index: Some(index), timeout: None });
    }
    read.values.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::BackendChoice;
    use crate::engine::{Engine, RuntimeOptions};

    /// The 7:1 fixture model on the GPU (`None`, loudly, without one: see `test_gpu_or_skip`).
    fn fixture_on_gpu(what: &str) -> Option<Engine> {
        crate::device::test_gpu_or_skip(what)?;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/minimax-7to1");
        let options = RuntimeOptions { backend: BackendChoice::Gpu, ..Default::default() };
        Some(Engine::load_dir(&dir, &options).unwrap())
    }

    /// The fusions of a decode step hold (hardware independent, so a test and not a benchmark):
    /// a lightning layer's token is three matmuls and the recurrence, the router and its top-k
    /// ride in the norm's launch, and nothing launches the norm over heads or `moe_route`.
    #[test]
    fn a_decoded_token_launches_the_fused_kernels() {
        let Some(engine) = fixture_on_gpu("decode launch count") else { return };
        let model = &engine.model;
        let mut state = engine.new_state();
        pollster::block_on(model.forward(&[5, 17, 3], &mut state, Logits::Last)).unwrap();
        let profiler = crate::profile::Profiler::start(false);
        pollster::block_on(model.forward(&[9], &mut state, Logits::Last)).unwrap();
        let profile = pollster::block_on(profiler.finish());
        let count = |name: &str| profile.kernels.iter().filter(|k| k.name == name).map(|k| k.launches).sum::<usize>();
        let kinds = &model.config.layers;
        let lightning = kinds.iter().filter(|l| l.kind == crate::config::LayerKind::Lightning).count();
        let (layers, softmax) = (kinds.len(), kinds.len() - lightning);
        assert!(lightning > 0 && softmax > 0, "the fixture has both kinds of layer");
        let names: Vec<_> = profile.kernels.iter().map(|k| (k.name, k.launches)).collect();
        assert_eq!(count("moe_route"), 0, "{names:?}");
        // Two norms per layer (the second routing) and the final one.
        assert_eq!(count("rms_norm"), 2 * layers + 1, "{names:?}");
        assert_eq!(count("lightning_decode"), lightning, "{names:?}");
        // Lightning: qkv | gate, out_proj, gate_up, down; softmax: q, k, v, o, gate_up, down;
        // and the lm_head.
        assert_eq!(count("qgemv"), 4 * lightning + 6 * softmax + 1, "{names:?}");
    }

    #[test]
    fn recordings_in_short_segments_decode_the_same_tokens() {
        // Segments of 3 steps: the graph is recorded anew every 3 tokens, from the last one's
        // input id, KV lengths and lightning states.
        let Some(engine) = fixture_on_gpu("recorded decode segments") else { return };
        let model = &engine.model;
        let prompt = [5u32, 17, 3, 44, 9];
        let decode = |segment: usize| {
            let mut state = engine.new_state();
            let mut tokens = Vec::new();
            pollster::block_on(async {
                let logits = model.forward(&prompt, &mut state, Logits::Last).await.unwrap();
                let ids = argmax(logits).unwrap();
                graph_decode(model, &mut state, ids, 11, 10, segment, |id| {
                    tokens.push(id);
                    true
                })
                .await
                .unwrap();
            });
            (tokens, state.position)
        };
        let whole = decode(GRAPH_SEGMENT);
        assert_eq!(whole.1, prompt.len() + 10, "every token but the last is fed");
        assert_eq!(decode(3), whole);
        assert_eq!(decode(1), whole);
    }

    #[test]
    fn sampled_steps_through_recordings_match_launched_steps() {
        // The host writes each sampled id into the recording's input and reads the replay's
        // logits: the same tokens and logits as feeding each id with a fresh forward pass.
        let Some(engine) = fixture_on_gpu("recorded sampled decode") else { return };
        let model = &engine.model;
        let params = SamplingParams { temperature: 1.5, top_p: 0.95, seed: 7, ..Default::default() };
        let run = |recorded: bool| {
            let mut state = engine.new_state();
            let mut sampler = Sampler::new(params.clone());
            // Segments of 5 steps: a new recording twice on the way.
            let mut steps = recorded.then(|| FedSteps { graph: None, segments: Segments::new(12, 5) });
            let (mut tokens, mut rows) = (Vec::new(), Vec::new());
            pollster::block_on(async {
                let mut logits = model.forward(&[5, 17, 3], &mut state, Logits::Last).await.unwrap();
                for _ in 0..12 {
                    let row = read_logits(logits).await.unwrap();
                    let id = sampler.sample(&row, &tokens);
                    tokens.push(id);
                    rows.push(row);
                    logits = match steps.as_mut() {
                        Some(steps) => steps.feed(model, &mut state, id).await.unwrap(),
                        None => model.forward(&[id], &mut state, Logits::Last).await.unwrap(),
                    };
                }
            });
            (tokens, rows.concat(), state.position)
        };
        let (launched, recorded) = (run(false), run(true));
        assert_eq!((&recorded.0, recorded.2), (&launched.0, launched.2));
        let err = recorded.1.iter().zip(&launched.1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(err < 1e-4, "logits differ by {err}");
    }
}
