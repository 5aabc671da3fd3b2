//! Recording a sequence of launches once and replaying it (cubecl's graph capture, wgpu only).
//!
//! A decode step is ~100 short dependent launches, and on a discrete GPU each one costs ~20 µs
//! of host work in cubecl (pipeline lookup, binding resolution, metadata upload, bind group
//! creation): as much as the step's kernels take on the device. A recording resolves all of
//! that once; a replay re-encodes the prebuilt dispatches in a tight loop (WebGPU has no
//! re-submittable command buffers, so the encoding itself remains).
//!
//! A replay runs the recorded kernels on the buffers they were recorded with. So everything a
//! step changes lives in buffers it updates in place (the position, the next input id, the
//! lightning states, the KV caches), and everything that differs between steps is read on the
//! device ([`super::rope::rope_at`], [`super::kv_append`], [`super::attention_decode::attention_decode_at`],
//! [`super::decode_step`]). Between [`prepare`] and [`start`], one run of the same code (the
//! warm-up) leaves in cubecl's pools the memory the recorded run will ask for: nothing may be
//! allocated anew, read back or written from the host inside the window.

use burn::backend::Dispatch;
use burn::backend::backend_extension;
use burn::backend::tensor::IntTensor;
use burn::tensor::{Int, Tensor};

use crate::error::RuntimeError;

/// A call on the cubecl client of a wgpu tensor's device.
pub struct ClientCall(pub Box<dyn FnOnce(&cubecl::client::Client)>);

impl std::fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientCall")
    }
}

#[backend_extension(Cube)]
pub trait ClientOps: burn::backend::Backend {
    fn with_client(t: IntTensor<Self>, call: ClientCall) -> IntTensor<Self>;
    /// Writes `bytes` into `t` from byte `byte_offset` on, in place: a queue write, ordered
    /// after the work already queued on `t` (the inputs of a recording between replays, an
    /// expert record into its pool slot).
    fn write_in_place(t: IntTensor<Self>, byte_offset: u64, bytes: Vec<u8>) -> IntTensor<Self>;
}

impl ClientOps for burn::backend::wgpu::CubeBackend {
    fn with_client(t: IntTensor<Self>, call: ClientCall) -> IntTensor<Self> {
        (call.0)(&t.client);
        t
    }

    fn write_in_place(t: IntTensor<Self>, byte_offset: u64, bytes: Vec<u8>) -> IntTensor<Self> {
        let total = t.handle.size_in_used();
        let len = bytes.len() as u64;
        assert!(byte_offset % 4 == 0 && len % 4 == 0 && byte_offset + len <= total, "write out of range");
        let target = t.handle.clone().offset_start(byte_offset).offset_end(total - byte_offset - len);
        t.client.write(&target, cubecl::bytes::Bytes::from_bytes_vec(bytes));
        t
    }
}

/// Writes `values` into `t` (`[n]` i32 on wgpu) in place, between replays: a recording reads
/// its inputs from the buffers it was recorded with. Elsewhere `t` is replaced.
pub fn write_ints(t: &mut Tensor<1, Int>, values: &[i32]) {
    if crate::kernels::uses_wgsl(&t.device()) {
        assert_eq!(t.dims(), [values.len()], "a write covers the whole tensor");
        let _ = Dispatch::write_in_place(t.clone().into_dispatch(), 0, bytemuck::cast_slice(values).to_vec());
    } else {
        *t = Tensor::from_data(burn::tensor::TensorData::new(values.to_vec(), [values.len()]), &t.device());
    }
}

/// Runs `f` on the client of `like`'s device (a wgpu device) and returns its result.
fn on_client<T: 'static>(
    like: &Tensor<1, Int>,
    f: impl FnOnce(&cubecl::client::Client) -> Result<T, cubecl::server::ServerError> + 'static,
) -> Result<T, RuntimeError> {
    let out = std::rc::Rc::new(std::cell::RefCell::new(None));
    let slot = out.clone();
    let _ = Dispatch::with_client(
        like.clone().into_dispatch(),
        ClientCall(Box::new(move |client| *slot.borrow_mut() = Some(f(client)))),
    );
    let result = out.borrow_mut().take().expect("with_client runs its call");
    result.map_err(|e| RuntimeError::Gpu(format!("graph capture: {e}")))
}

/// A recorded launch sequence.
pub struct Recording(cubecl::client::Graph);

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recording")
    }
}

/// Prepares the stream of `like`'s device for a recording; run the warm-up after this.
pub fn prepare(like: &Tensor<1, Int>) -> Result<(), RuntimeError> {
    on_client(like, |c| c.graph_prepare())
}

/// Opens the recording window: launches are recorded from here on, not run.
pub fn start(like: &Tensor<1, Int>) -> Result<(), RuntimeError> {
    on_client(like, |c| c.start_capture())
}

/// Closes the window and returns what it recorded.
pub fn stop(like: &Tensor<1, Int>) -> Result<Recording, RuntimeError> {
    on_client(like, |c| c.stop_capture()).map(Recording)
}

impl Recording {
    /// Enqueues the recorded launches once more.
    ///
    /// The recording owns (guards) every pool page its launches were given; the caller keeps
    /// alive the tensors it made before the window and the recorded launches use, and issues
    /// everything from the thread that recorded (cubecl's stream is per thread).
    pub fn replay(&self) -> Result<(), RuntimeError> {
        // SAFETY: the buffers are the caller's to keep alive (see above), and nothing else
        // touches them while the replay runs: decode owns its state.
        unsafe { self.0.replay() }.map_err(|e| RuntimeError::Gpu(format!("graph replay: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::stream_read::stream_read;
    use crate::kernels::testing::gpu;
    use std::time::Instant;

    /// Host time per launch, eager against replayed, over a chain of 1000 trivial launches
    /// (`cargo test --release -p minimax-runtime --lib -- --ignored --nocapture launch_cost`).
    /// On lavapipe both are bound by the CPU running the kernels; a discrete GPU shows the host
    /// work a replay saves. The recorded output, which recording itself never computes, must
    /// hold the recorded input's sum after the replays.
    #[test]
    #[ignore]
    fn launch_cost_eager_and_replayed() {
        let Some(device) = gpu() else { return };
        let data = Tensor::<1>::ones([64], &device);
        let like = Tensor::<1, Int>::zeros([1], &device);
        let n = 1000;
        let chain = |data: &Tensor<1>| (0..n).map(|_| stream_read(data, 16).unwrap()).last().unwrap();
        let time = |run: &mut dyn FnMut() -> Tensor<1>| {
            for _ in 0..4 {
                let t = Instant::now();
                let last = run();
                let enqueue = t.elapsed().as_secs_f64();
                let _ = last.into_data();
                let total = t.elapsed().as_secs_f64();
                eprintln!("{:.1} µs/launch to enqueue, {:.1} µs/launch until done", enqueue / n as f64 * 1e6, total / n as f64 * 1e6);
            }
        };
        eprintln!("eager:");
        time(&mut || chain(&data));
        prepare(&like).unwrap();
        let _ = chain(&data);
        // The recorded launches read other values than the warm-up's, whose outputs the
        // recording's may reuse: only a replay puts their sum into `out`.
        let twos = Tensor::<1>::ones([64], &device) * 2.0;
        start(&like).unwrap();
        let out = chain(&twos);
        let recording = stop(&like).unwrap();
        eprintln!("replayed:");
        time(&mut || {
            recording.replay().unwrap();
            out.clone()
        });
        assert_eq!(out.sum().into_scalar::<f32>(), 128.0, "the replays ran the recorded launches");
    }
}
