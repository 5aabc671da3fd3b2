//! GPU pools: a few large `u32` buffers cut into fixed slots, each holding one expert record
//! byte for byte (see [`super::layout`]). Kernels bind a whole pool once and address a slot by
//! its word offset, so no bind group is made per expert.
//!
//! A record lands in its slot with an in-place queue write into that byte range of the pool.
//! cubecl orders the write after the work already queued on the pool: a kernel that read the
//! old record has run before the slot is overwritten.

use burn::backend::Dispatch;
use burn::backend::backend_extension;
use burn::backend::tensor::IntTensor;
use burn::tensor::{Device, Int, Tensor};

use crate::kernels::graph::ClientOps;
use crate::kernels::uses_wgsl;

/// Copies into a pool in place (wgpu only; the CPU path keeps decoded experts instead).
/// Queue writes go through [`ClientOps::write_in_place`].
#[backend_extension(Cube)]
pub trait PoolOps: burn::backend::Backend {
    /// Submits cubecl's queued work, then hands `copy` the pool's wgpu buffer and the byte
    /// offset where the pool starts in it (cubecl may place a tensor inside a larger buffer).
    fn pool_raw(pool: IntTensor<Self>, copy: RawCopy) -> IntTensor<Self>;
}

/// A copy into a pool's raw wgpu buffer, called with `(buffer, pool_start)`.
pub type CopyFn = dyn FnOnce(&burn::tensor::wgpu::wgpu::Buffer, u64);

/// A [`CopyFn`] to run on a pool.
pub struct RawCopy(pub Box<CopyFn>);

impl std::fmt::Debug for RawCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RawCopy")
    }
}

impl PoolOps for burn::backend::wgpu::CubeBackend {
    fn pool_raw(pool: IntTensor<Self>, copy: RawCopy) -> IntTensor<Self> {
        use cubecl::wgpu::{AutoCompiler, WgpuServer};
        // Queue order is what makes the copy safe: kernels already queued that read the
        // slot's old record are submitted first, kernels queued later read the new one.
        pool.client.flush().expect("flush the queued GPU work");
        let resource = pool
            .client
            .get_resource::<WgpuServer<AutoCompiler>>(pool.handle.clone())
            .expect("the pool's wgpu buffer");
        let resource = resource.resource();
        (copy.0)(&resource.buffer, resource.offset);
        pool
    }
}

/// One pool buffer and its slot geometry.
#[derive(Debug, Clone)]
pub struct Pool {
    /// `[slots * slot_words]` words (i32 storage, read as `u32` by the kernels).
    pub words: Tensor<1, Int>,
    pub slots: usize,
}

impl Pool {
    /// A zeroed pool of `slots` slots of `slot_bytes` bytes on `device` (a wgpu device).
    pub fn new(slots: usize, slot_bytes: usize, device: &Device) -> Self {
        debug_assert!(uses_wgsl(device), "pools live on wgpu devices");
        let words = slots * slot_bytes / 4;
        Self {
            // Filled on the device: a host buffer of the pool's size is never made.
            words: Tensor::zeros([words], device),
            slots,
        }
    }

    /// Copies `record` into slot `slot` (`slot_bytes` apart), in pieces of at most
    /// [`write_chunk`] bytes: wgpu stages each queue write in a mapped buffer of its size, and
    /// a fresh 100 MB staging buffer per expert costs more than the copy itself.
    pub fn write(&mut self, slot: usize, slot_bytes: usize, record: Vec<u8>) {
        let mut bytes = record;
        bytes.resize(bytes.len().div_ceil(4) * 4, 0);
        let device = self.words.device();
        let mut words = std::mem::replace(&mut self.words, Tensor::empty([0], &device)).into_dispatch();
        let chunk = write_chunk();
        let base = (slot * slot_bytes) as u64;
        if bytes.len() <= chunk {
            words = Dispatch::write_in_place(words, base, bytes);
        } else {
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                words = Dispatch::write_in_place(words, base + (i * chunk) as u64, piece.to_vec());
            }
        }
        self.words = Tensor::from_dispatch(words);
    }
}

impl Pool {
    /// Copies a staged record into slot `slot` with one GPU copy (see [`super::staging`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn copy_staged(&mut self, slot: usize, slot_bytes: usize, staged: super::staging::Staged) {
        assert!(staged.copy_bytes() <= slot_bytes as u64, "staged record larger than a slot");
        let device = self.words.device();
        let words = std::mem::replace(&mut self.words, Tensor::empty([0], &device)).into_dispatch();
        let offset = (slot * slot_bytes) as u64;
        let copy = RawCopy(Box::new(move |buffer, start| staged.copy_to(buffer, start + offset)));
        self.words = Tensor::from_dispatch(Dispatch::pool_raw(words, copy));
    }
}

/// Largest single queue write into a pool (1 MiB, the fastest of 1, 4, 16 and 128 MiB on an H100; `MINIMAX_POOL_WRITE_CHUNK` overrides it, in
/// bytes, for measurements).
pub fn write_chunk() -> usize {
    static CHUNK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CHUNK.get_or_init(|| {
        std::env::var("MINIMAX_POOL_WRITE_CHUNK")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .map_or(1 << 20, |c| (c.max(4) / 4) * 4)
    })
}
