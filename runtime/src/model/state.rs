//! The per-sequence state, passed into the model explicitly: an f32 `[H, D, D]` state per
//! lightning layer (constant size, whatever the context length) and a KV cache per softmax
//! layer.

use burn::tensor::{DType, Device, Int, Tensor};

use crate::config::{LayerKind, ModelConfig};
use crate::error::KernelError;
use crate::kernels::kv_append::kv_append;

/// Growable KV cache of one softmax layer: `[capacity, Hkv, D]` buffers of which the first
/// `len` rows are valid.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Tensor<3>,
    v: Tensor<3>,
    len: usize,
}

impl KvCache {
    fn new(kv_heads: usize, head_dim: usize, device: &Device) -> Self {
        let empty = Tensor::zeros([0, kv_heads, head_dim], (device, DType::F32));
        Self {
            k: empty.clone(),
            v: empty,
            len: 0,
        }
    }

    /// A cache holding exactly `k` and `v` (`[len, Hkv, D]`), as restored from a snapshot.
    pub fn from_parts(k: Tensor<3>, v: Tensor<3>) -> Self {
        let len = k.dims()[0];
        Self { k, v, len }
    }

    /// The valid part of the cache: `[len, Hkv, D]` for K and V.
    pub fn valid(&self) -> (Tensor<3>, Tensor<3>) {
        (self.k.clone().narrow(0, 0, self.len), self.v.clone().narrow(0, 0, self.len))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `T` positions. Capacity doubles when full, so appends are amortised O(T).
    /// [`Self::valid`] (a copy, unless the length is aligned) or [`Self::buffers`] then read it.
    pub fn append(&mut self, k: Tensor<3>, v: Tensor<3>) {
        let t = k.dims()[0];
        let needed = self.len + t;
        let capacity = self.k.dims()[0];
        if needed > capacity {
            self.move_to_new_buffers(needed.max(2 * capacity).max(64));
        }
        // `inplace` hands over the only reference, so the assignment can reuse the buffer.
        let range = self.len..needed;
        self.k.inplace(|cache| cache.slice_assign([range.clone()], k));
        self.v.inplace(|cache| cache.slice_assign([range], v));
        self.len = needed;
    }

    /// Gives the cache buffers of its own, of at least `capacity` positions, holding the valid
    /// rows. A decode step replayed from a graph writes the buffers in place, so they must
    /// hold every position it will reach and be shared with no other state (a clone of this
    /// one kept by the prefix cache, say, shares them until either appends).
    pub fn reserve_own(&mut self, capacity: usize) {
        self.move_to_new_buffers(capacity.max(self.len).max(1));
    }

    /// Moves K and V into new zeroed buffers of `capacity` positions, the valid rows copied.
    fn move_to_new_buffers(&mut self, capacity: usize) {
        let [_, h, d] = self.k.dims();
        let (device, len) = (self.k.device(), self.len);
        let moved = |old: Tensor<3>| {
            let fresh = Tensor::zeros([capacity, h, d], (&device, DType::F32));
            if len == 0 { fresh } else { fresh.slice_assign([0..len], old.narrow(0, 0, len)) }
        };
        self.k.inplace(moved);
        self.v.inplace(moved);
    }

    /// Appends `T` positions at row `pos[0]`, read on the device (which is [`Self::len`]), in
    /// place: the buffers must hold them (see [`Self::reserve_own`]).
    pub fn append_at(&mut self, k: Tensor<3>, v: Tensor<3>, pos: &Tensor<1, Int>) -> Result<(), KernelError> {
        let t = k.dims()[0];
        let (kc, vc) = kv_append(self.k.clone(), self.v.clone(), k, v, pos)?;
        (self.k, self.v) = (kc, vc);
        self.len += t;
        Ok(())
    }

    /// Counts `n` more valid positions, which a replayed step has written (see
    /// [`Self::append_at`]).
    pub fn grow_len(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.capacity());
        self.len += n;
    }

    /// Positions the buffers hold.
    pub fn capacity(&self) -> usize {
        self.k.dims()[0]
    }

    /// Forgets every position from `len` on (a no-op if the cache is shorter). The rows stay
    /// in the buffers, dead, until an append writes over them.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The whole buffers `[capacity, Hkv, D]` for K and V, of which the first [`Self::len`]
    /// positions are valid (for kernels that take a length, without copying a view).
    pub fn buffers(&self) -> (Tensor<3>, Tensor<3>) {
        (self.k.clone(), self.v.clone())
    }
}

/// What a decode step replayed from a graph keeps on the device besides the [`State`] (see
/// [`crate::model::decode_graph`]): the position, which RoPE, the KV append and attention read
/// there; the RoPE tables of every position the steps reach; and, per lightning layer, the
/// state before the last step, to undo a step run ahead.
#[derive(Debug, Clone)]
pub struct DeviceStep {
    /// `[1]` i32: the position of the token the next step feeds.
    pub pos: Tensor<1, Int>,
    /// cos and sin `[N, rotary / 2]` of positions `base..base + N`, and `base`; `None` for a
    /// model without softmax layers.
    pub rope: Option<(Tensor<2>, Tensor<2>, usize)>,
    /// Per layer: a lightning layer's state before the last step (`None` for softmax layers).
    pub backups: Vec<Option<Tensor<3>>>,
}

/// The state of one layer.
#[derive(Debug, Clone)]
pub enum LayerState {
    /// `[H, D, D]` f32: `S = Σ_t λ^(T-t) k_tᵀ v_t`.
    Lightning(Tensor<3>),
    Softmax(KvCache),
}

/// Everything the model remembers about one sequence.
#[derive(Debug, Clone)]
pub struct State {
    /// Number of tokens consumed so far (the position of the next one).
    pub position: usize,
    pub layers: Vec<LayerState>,
}

/// A point [`State::rewind`] can return to: the position, each lightning state and each KV
/// length. Cheap to take: the lightning kernels write a new state instead of updating one,
/// so holding the old tensor copies nothing, and a KV cache only appends, so rows past a
/// length are simply dead.
#[derive(Debug, Clone)]
pub struct Mark {
    position: usize,
    layers: Vec<MarkedLayer>,
}

#[derive(Debug, Clone)]
enum MarkedLayer {
    Lightning(Tensor<3>),
    Softmax(usize),
}

impl State {
    /// Device bytes the state holds: each lightning state, and each KV cache's buffers at
    /// their capacity.
    pub fn bytes(&self) -> u64 {
        let tensor = |t: &Tensor<3>| t.dims().iter().product::<usize>() as u64 * t.dtype().size() as u64;
        self.layers
            .iter()
            .map(|layer| match layer {
                LayerState::Lightning(s) => tensor(s),
                LayerState::Softmax(cache) => {
                    let (k, v) = cache.buffers();
                    tensor(&k) + tensor(&v)
                }
            })
            .sum()
    }

    /// A mark to [`rewind`](Self::rewind) to, undoing the tokens fed after it.
    pub fn mark(&self) -> Mark {
        let layers = self
            .layers
            .iter()
            .map(|layer| match layer {
                LayerState::Lightning(s) => MarkedLayer::Lightning(s.clone()),
                LayerState::Softmax(cache) => MarkedLayer::Softmax(cache.len()),
            })
            .collect();
        Mark { position: self.position, layers }
    }

    /// Returns to `mark`, taken from this state: as if no token had been fed since.
    pub fn rewind(&mut self, mark: Mark) {
        debug_assert!(mark.position <= self.position && mark.layers.len() == self.layers.len());
        for (layer, marked) in self.layers.iter_mut().zip(mark.layers) {
            match (layer, marked) {
                (LayerState::Lightning(s), MarkedLayer::Lightning(old)) => *s = old,
                (LayerState::Softmax(cache), MarkedLayer::Softmax(len)) => cache.truncate(len),
                _ => unreachable!("a mark has the layout of the state it was taken from"),
            }
        }
        self.position = mark.position;
    }

    /// The state before any token.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let layers = config
            .layers
            .iter()
            .map(|layer| match layer.kind {
                LayerKind::Lightning => LayerState::Lightning(Tensor::zeros(
                    [config.num_heads, config.head_dim, config.head_dim],
                    (device, DType::F32),
                )),
                LayerKind::Softmax => LayerState::Softmax(KvCache::new(config.num_kv_heads, config.head_dim, device)),
            })
            .collect();
        Self { position: 0, layers }
    }
}
