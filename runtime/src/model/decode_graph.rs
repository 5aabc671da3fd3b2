//! Decode steps recorded once and replayed (wgpu): the host work of ~100 launches per token
//! becomes one replay (see [`crate::kernels::graph`]). Greedy decoding picks each next token on
//! the device; sampled decoding writes the host's choice into the input ([`DecodeGraph::feed`]).
//!
//! A replay runs the recorded kernels on the buffers they were recorded with, so a step here
//! keeps everything that changes in place and reads everything that differs on the device:
//! - the input id `[1]`, which each step overwrites with the token it chose ([`decode_step`]);
//! - the position `[1]`, which RoPE, the KV append and attention read, and each step advances;
//! - each lightning state, updated in place, its previous value kept as a backup;
//! - each KV cache, in buffers of its own sized for every position the steps reach.
//!
//! The first step runs eagerly (the warm-up, which fills cubecl's pools with the memory the
//! recording needs), the same step is then recorded without running, and every later step is a
//! replay. The host keeps `State`'s position and KV lengths in step. On the CPU backend (and
//! where recording is off) the same device steps run eagerly, which tests the step itself.

use burn::tensor::{DType, Int, IntDType, Tensor, TensorData};

use super::layer::Mixer;
use super::rope::tables;
use super::state::{DeviceStep, LayerState, State};
use super::{Logits, Model, f32_rows};
use crate::error::Error;
use crate::kernels::argmax::argmax;
use crate::kernels::decode_step::decode_step;
use crate::kernels::graph::{self, Recording};
use crate::kernels::uses_wgsl;

/// Decode steps on the device from a given state (see the module docs).
pub struct DecodeGraph {
    /// `[1]` i32: the next step's input; each step leaves its choice here.
    ids: Tensor<1, Int>,
    step: DeviceStep,
    /// Positions the KV caches and RoPE tables cover: steps may feed positions below it.
    end: usize,
    record: bool,
    recording: Option<Recording>,
    /// The recorded step's logits `[1, vocab]`, which every replay writes.
    logits: Option<Tensor<2>>,
    /// Whether the last step can be undone (its backups are the state before it).
    undoable: bool,
}

impl std::fmt::Debug for DecodeGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodeGraph").field("end", &self.end).field("recorded", &self.recording.is_some()).finish()
    }
}

impl Model {
    /// Whether greedy decode runs as recorded [`DecodeGraph`] steps: on wgpu, natively (in a
    /// browser the launches are not yet recorded), with the embedding table in one block (its
    /// lookup stays on the device) and no expert streaming (a miss is loaded by the host).
    /// `MINIMAX_DECODE_GRAPH=0` turns it off.
    pub fn decodes_on_device(&self) -> bool {
        let one_block = self.embed.float_parts().is_some_and(|p| p.len() == 1);
        let resident = self.experts.as_ref().is_none_or(|c| c.lock().expect("cache lock").all_resident());
        let enabled = std::env::var("MINIMAX_DECODE_GRAPH").map_or(true, |v| v != "0");
        cfg!(not(target_arch = "wasm32")) && uses_wgsl(&self.device) && one_block && resident && enabled
    }

    /// One step of a [`DecodeGraph`]: feeds `ids`, leaves the greedy choice in `ids` and
    /// advances `step.pos`; the host advances `state.position` and the KV lengths. Returns the
    /// step's logits `[1, vocab]`.
    async fn device_step(&self, ids: &mut Tensor<1, Int>, state: &mut State, step: &mut DeviceStep) -> Result<Tensor<2>, Error> {
        let parts = self.embed.float_parts().expect("embeddings stay float");
        let x = f32_rows(parts[0].clone().select(0, ids.clone()));
        let logits = self.run(x, state, Logits::Last, Some(step)).await?;
        let chosen = argmax(logits.clone())?;
        decode_step(&chosen, ids, &mut step.pos)?;
        Ok(logits)
    }
}

impl DecodeGraph {
    /// Prepares up to `steps` steps from `state`, whose next input is `ids` (`[1]`, the
    /// argmax of the last logits): the KV caches get buffers of their own for every position
    /// the steps reach, each lightning state a copy of its own (a replay writes them in place,
    /// and another state, such as a prefix-cache entry, may share them).
    pub fn new(model: &Model, state: &mut State, ids: Tensor<1, Int>, steps: usize) -> Result<Self, Error> {
        let device = ids.device();
        let end = state.position + steps;
        let mut backups = Vec::with_capacity(state.layers.len());
        for layer in &mut state.layers {
            match layer {
                LayerState::Lightning(s) => {
                    // A new buffer: the addition's input is still referenced, so it is not
                    // reused in place.
                    *s = s.clone().add_scalar(0.0);
                    backups.push(Some(Tensor::zeros(s.dims(), (&device, DType::F32))));
                }
                LayerState::Softmax(cache) => {
                    cache.reserve_own(end);
                    backups.push(None);
                }
            }
        }
        // Every softmax layer rotates by the model's one RoPE: tables from the first.
        let rope = model.layers.iter().find_map(|layer| match &layer.mixer {
            Mixer::Softmax(attention) => {
                let (rotary, theta) = attention.rotary();
                let (cos, sin) = tables(state.position, steps.max(1), rotary, theta, &device);
                Some((cos, sin, state.position))
            }
            Mixer::Lightning(_) => None,
        });
        let pos = Tensor::<1, Int>::from_data(TensorData::new(vec![state.position as i32], [1]), &device).cast(IntDType::I32);
        Ok(Self {
            ids: ids.cast(IntDType::I32) + 0,
            step: DeviceStep { pos, rope, backups },
            end,
            record: uses_wgsl(&device),
            recording: None,
            logits: None,
            undoable: false,
        })
    }

    /// `[1]`: the token the last step chose (before any step, the one given to [`Self::new`]).
    pub fn ids(&self) -> &Tensor<1, Int> {
        &self.ids
    }

    /// Whether another step fits (it feeds position `state.position`).
    pub fn can_step(&self, state: &State) -> bool {
        state.position < self.end
    }

    /// Enqueues one step that feeds `id`, chosen on the host (sampled decoding), and returns
    /// its logits `[1, vocab]`: read them before the next step, which writes the same buffer.
    pub async fn feed(&mut self, model: &Model, state: &mut State, id: u32) -> Result<Tensor<2>, Error> {
        crate::kernels::graph::write_ints(&mut self.ids, &[id as i32]);
        self.step(model, state).await
    }

    /// Enqueues one step: feeds the token in [`Self::ids`] at `state.position` and leaves the
    /// greedy choice there. Returns the step's logits `[1, vocab]` (see [`Self::feed`]).
    pub async fn step(&mut self, model: &Model, state: &mut State) -> Result<Tensor<2>, Error> {
        debug_assert!(self.can_step(state));
        let logits = match &self.recording {
            Some(recording) => {
                recording.replay()?;
                state.position += 1;
                for layer in &mut state.layers {
                    if let LayerState::Softmax(cache) = layer {
                        cache.grow_len(1);
                    }
                }
                self.logits.clone().expect("a recording keeps its logits")
            }
            None if self.record => {
                // The warm-up is this step; then the same step is recorded, not run, and the
                // host's lengths are put back to where the warm-up left them.
                graph::prepare(&self.ids)?;
                let logits = model.device_step(&mut self.ids, state, &mut self.step).await?;
                let lengths = lengths(state);
                let recording = match graph::start(&self.ids) {
                    Ok(()) => {
                        let recorded = model.device_step(&mut self.ids, state, &mut self.step).await;
                        let recording = graph::stop(&self.ids);
                        recorded.and_then(|logits| Ok((recording?, logits)))
                    }
                    Err(e) => Err(e.into()),
                };
                restore(state, lengths);
                match recording {
                    Ok((recording, recorded_logits)) => {
                        self.recording = Some(recording);
                        self.logits = Some(recorded_logits);
                    }
                    // Nothing recorded has run: the warm-up was the step, and the steps go on
                    // unrecorded (slower, same tokens).
                    Err(e) => {
                        tracing::warn!("decode steps are not recorded: {e}");
                        self.record = false;
                    }
                }
                logits
            }
            None => model.device_step(&mut self.ids, state, &mut self.step).await?,
        };
        self.undoable = true;
        Ok(logits)
    }

    /// Undoes the last step (once): each lightning state becomes its backup, and the position
    /// and KV lengths go back by one. The graph is done after this.
    pub fn undo(mut self, state: &mut State) {
        assert!(self.undoable, "one step can be undone, after a step");
        for (layer, backup) in state.layers.iter_mut().zip(self.step.backups.iter_mut()) {
            match layer {
                LayerState::Lightning(s) => *s = backup.take().expect("a backup per lightning layer"),
                LayerState::Softmax(cache) => cache.truncate(cache.len() - 1),
            }
        }
        state.position -= 1;
    }
}

/// The host's position and KV lengths.
fn lengths(state: &State) -> (usize, Vec<usize>) {
    let kv = state
        .layers
        .iter()
        .map(|l| match l {
            LayerState::Softmax(cache) => cache.len(),
            LayerState::Lightning(_) => 0,
        })
        .collect();
    (state.position, kv)
}

fn restore(state: &mut State, (position, kv): (usize, Vec<usize>)) {
    state.position = position;
    for (layer, len) in state.layers.iter_mut().zip(kv) {
        if let LayerState::Softmax(cache) = layer {
            cache.truncate(len);
        }
    }
}
