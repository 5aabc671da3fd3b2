//! Reading expert records off the critical path.
//!
//! The cache asks for the records it predicts a layer will need ([`Reader::request`]); on
//! native builds a few reader threads read them from the [`ExpertSource`] (a `pread` of the
//! pack plus its CRC check, or a copy from host memory) into staging buffers while the GPU
//! computes. When the layer comes, [`Reader::take`] hands over a record that is ready, waits
//! for one being read, or reads it on the spot when nobody asked for it in time (a miss).
//!
//! - **Bounded.** Records wait in staging buffers. Workers start a read only while the records
//!   of the current request, ready or being read, number fewer than [`Reader::capacity`], so
//!   a read that starts always finds a buffer once the GPU returns one.
//! - **Fresh requests win.** A new request replaces the queue of reads not yet started: a
//!   prediction for an earlier layer is stale once a later layer asks. Stale records that
//!   were never taken give up their buffers first.
//! - **No threads on wasm.** The browser has no blocking threads here; [`Reader::workers`] is
//!   0 and the cache reads synchronously, as a miss would.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

#[cfg(not(target_arch = "wasm32"))]
use super::staging::{Staged, StagingRing};
use super::cache::ExpertSource;
use crate::error::WeightsError;

/// `(layer, expert)`.
pub type Key = (usize, usize);

/// A record read and waiting to be placed in a slot.
#[derive(Debug)]
pub enum Record {
    /// In host memory: the CPU backend decodes it, a wgpu device gets it by queue writes.
    Host(Vec<u8>),
    /// In a mapped staging buffer, ready for one GPU copy.
    #[cfg(not(target_arch = "wasm32"))]
    Staged(Staged),
}

#[derive(Default)]
struct State {
    /// Requested, not started.
    queue: VecDeque<Key>,
    /// Being read by a worker.
    reading: HashSet<Key>,
    ready: HashMap<Key, Result<Record, WeightsError>>,
    /// Ready keys, oldest first (the first to give up their buffer).
    order: VecDeque<Key>,
    /// The latest request: its ready records are kept, others may be dropped for room.
    wanted: HashSet<Key>,
    stop: bool,
}

struct Shared {
    source: Arc<dyn ExpertSource>,
    #[cfg(not(target_arch = "wasm32"))]
    ring: Option<Arc<StagingRing>>,
    /// Threads one staged record is read on.
    #[cfg(not(target_arch = "wasm32"))]
    parts: usize,
    /// Host buffers the pieces are read through, kept: a fresh 100 MB allocation per record
    /// page-faults its way in at a fraction of copy speed.
    #[cfg(not(target_arch = "wasm32"))]
    scratch: Mutex<Vec<Vec<u8>>>,
    capacity: usize,
    state: Mutex<State>,
    changed: Condvar,
}

pub struct Reader {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("workers", &self.workers.len()).finish()
    }
}

impl Reader {
    /// A reader with `workers` background threads (0: every read happens in [`Self::take`])
    /// holding at most `capacity` records read ahead. `ring`: staging buffers to read into
    /// (wgpu, at least `capacity` of them), each record on `parts` threads; without one,
    /// records stay in host memory.
    pub fn new(
        source: Arc<dyn ExpertSource>,
        #[cfg(not(target_arch = "wasm32"))] ring: Option<(Arc<StagingRing>, usize)>,
        workers: usize,
        capacity: usize,
    ) -> Self {
        #[cfg(not(target_arch = "wasm32"))]
        let (ring, parts) = match ring {
            Some((ring, parts)) => (Some(ring), parts.max(1)),
            None => (None, 1),
        };
        let shared = Arc::new(Shared {
            source,
            #[cfg(not(target_arch = "wasm32"))]
            ring,
            #[cfg(not(target_arch = "wasm32"))]
            parts,
            #[cfg(not(target_arch = "wasm32"))]
            scratch: Mutex::new(Vec::new()),
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let workers = (0..workers)
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("expert-reader-{i}"))
                    .spawn(move || shared.work())
                    .expect("spawn an expert reader thread")
            })
            .collect();
        Self { shared, workers }
    }

    /// How many background threads read ahead.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Starts reading `keys` in the background (those not already ready or being read), in
    /// place of any reads requested earlier and not started yet.
    pub fn request(&self, keys: &[Key]) {
        if self.workers.is_empty() {
            return;
        }
        let mut state = self.shared.state.lock().expect("reader lock");
        state.queue.clear();
        state.wanted = keys.iter().copied().collect();
        for &key in keys {
            if !state.ready.contains_key(&key) && !state.reading.contains(&key) {
                state.queue.push_back(key);
            }
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Moves `keys` (those not ready or being read) to the front of the queue, keeping the
    /// rest of the latest request: someone is about to wait for them.
    pub fn expedite(&self, keys: &[Key]) {
        if self.workers.is_empty() {
            return;
        }
        let mut state = self.shared.state.lock().expect("reader lock");
        for &key in keys.iter().rev() {
            state.wanted.insert(key);
            if !state.ready.contains_key(&key) && !state.reading.contains(&key) {
                state.queue.retain(|&k| k != key);
                state.queue.push_front(key);
            }
        }
        drop(state);
        self.shared.changed.notify_all();
    }

    /// The ready keys of `layer`.
    pub fn ready_of(&self, layer: usize) -> Vec<Key> {
        let state = self.shared.state.lock().expect("reader lock");
        state.order.iter().copied().filter(|k| k.0 == layer).collect()
    }

    /// The record of `expert` of `layer`: the one read ahead, the one being read (waiting
    /// for it), or one read now on this thread.
    pub fn take(&self, layer: usize, expert: usize) -> Result<Record, WeightsError> {
        let key = (layer, expert);
        let mut state = self.shared.state.lock().expect("reader lock");
        loop {
            if let Some(record) = state.remove_ready(key) {
                drop(state);
                // A worker may be waiting for room.
                self.shared.changed.notify_all();
                return record;
            }
            if !state.reading.contains(&key) {
                state.queue.retain(|&k| k != key);
                drop(state);
                return self.shared.read(key, true);
            }
            state = self.shared.changed.wait(state).expect("reader lock");
        }
    }
}

impl State {
    fn remove_ready(&mut self, key: Key) -> Option<Result<Record, WeightsError>> {
        let record = self.ready.remove(&key)?;
        self.order.retain(|&k| k != key);
        Some(record)
    }
}

impl Shared {
    fn work(&self) {
        loop {
            let key = {
                let mut state = self.state.lock().expect("reader lock");
                loop {
                    if state.stop {
                        return;
                    }
                    let held = state.reading.len() + state.order.iter().filter(|k| state.wanted.contains(k)).count();
                    if held < self.capacity
                        && let Some(key) = state.queue.pop_front()
                    {
                        state.reading.insert(key);
                        break key;
                    }
                    state = self.changed.wait(state).expect("reader lock");
                }
            };
            let record = self.read(key, false);
            let mut state = self.state.lock().expect("reader lock");
            state.reading.remove(&key);
            state.ready.insert(key, record);
            state.order.push_back(key);
            drop(state);
            self.changed.notify_all();
        }
    }

    /// Reads one record, into a staging buffer when there is a ring. `urgent`: someone waits
    /// for it, so any untaken record may give up its buffer.
    fn read(&self, (layer, expert): Key, urgent: bool) -> Result<Record, WeightsError> {
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(staged) = self.staging(urgent) {
            self.read_staged(layer, expert, &staged)?;
            return Ok(Record::Staged(staged));
        }
        let _ = urgent;
        let mut bytes = vec![0u8; self.source.layout().bytes()];
        self.source.read_into(layer, expert, &mut bytes)?;
        Ok(Record::Host(bytes))
    }

    /// Reads a record into `staged` in up to `parts` pieces on as many threads: one thread
    /// copies a 100 MB record at a few GB/s, well under what the page cache, an NVMe disk
    /// and PCIe each give. Each piece goes through a reused host buffer (the CRC is taken
    /// there: reading back from write-combined staging memory is slow), and the pieces'
    /// CRCs are combined and checked once.
    #[cfg(not(target_arch = "wasm32"))]
    fn read_staged(&self, layer: usize, expert: usize, staged: &Staged) -> Result<(), WeightsError> {
        let len = self.source.layout().bytes();
        // Pieces start on 1 MiB boundaries (mapped ranges must start 8-byte aligned).
        let step = len.div_ceil(self.parts).next_multiple_of(1 << 20).max(1 << 20);
        let pieces: Vec<(usize, usize)> = (0..len).step_by(step).map(|s| (s, (s + step).min(len))).collect();
        let piece = |(start, end): (usize, usize)| -> Result<crc32fast::Hasher, WeightsError> {
            let mut buf = self.scratch.lock().expect("scratch lock").pop().unwrap_or_default();
            buf.resize(end - start, 0);
            let read = self.source.read_part(layer, expert, start, &mut buf);
            let mut crc = crc32fast::Hasher::new();
            if read.is_ok() {
                crc.update(&buf);
                staged.fill_at(start, &buf);
            }
            self.scratch.lock().expect("scratch lock").push(buf);
            read.map(|()| crc)
        };
        let crcs: Vec<_> = if pieces.len() == 1 {
            vec![piece(pieces[0])]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = pieces.iter().map(|&p| s.spawn(move || piece(p))).collect();
                handles.into_iter().map(|h| h.join().expect("expert reader piece")).collect()
            })
        };
        let mut crc = crc32fast::Hasher::new();
        for part in crcs {
            crc.combine(&part?);
        }
        self.source.check(layer, expert, crc.finalize())
    }

    /// A free staging buffer: one the GPU has finished with, or the buffer of the oldest
    /// record nobody took (outside the latest request unless `urgent`). `None` without a
    /// ring, or when none frees up for a long while (the record then goes by queue write).
    #[cfg(not(target_arch = "wasm32"))]
    fn staging(&self, urgent: bool) -> Option<Staged> {
        let ring = self.ring.as_ref()?;
        for _ in 0..1000 {
            if let Some(staged) = ring.try_acquire() {
                return Some(staged);
            }
            let oldest = {
                let mut state = self.state.lock().expect("reader lock");
                let key = state.order.iter().copied().find(|k| urgent || !state.wanted.contains(k));
                key.and_then(|k| state.remove_ready(k))
            };
            // Dropping an untaken record puts its buffer back in the ring.
            if oldest.is_none() {
                ring.wait();
            }
        }
        tracing::warn!("no staging buffer came back in time; uploading by queue write");
        None
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.state.lock().expect("reader lock").stop = true;
        self.shared.changed.notify_all();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::experts::ExpertLayout;
    use crate::weights::StoredDType;
    use std::time::Duration;

    /// Records whose bytes name their key; expert 13 fails. Counts reads.
    struct Counting {
        layout: ExpertLayout,
        reads: Mutex<Vec<Key>>,
    }

    impl ExpertSource for Counting {
        fn layout(&self) -> ExpertLayout {
            self.layout
        }

        fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
            std::thread::sleep(Duration::from_millis(5));
            self.reads.lock().unwrap().push((layer, expert));
            if expert == 13 {
                return Err(WeightsError::Format { path: "test".into(), reason: "bad record".into() });
            }
            let mut bytes = vec![0u8; self.layout.bytes()];
            bytes[0] = layer as u8;
            bytes[1] = expert as u8;
            Ok(bytes)
        }
    }

    fn source() -> Arc<Counting> {
        Arc::new(Counting {
            layout: ExpertLayout::new(StoredDType::F32, 4, 4).unwrap(),
            reads: Mutex::new(Vec::new()),
        })
    }

    fn wait_until(mut done: impl FnMut() -> bool) {
        for _ in 0..400 {
            if done() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("timed out");
    }

    fn bytes(record: Record) -> Vec<u8> {
        match record {
            Record::Host(b) => b,
            Record::Staged(_) => unreachable!("no ring"),
        }
    }

    #[test]
    fn reads_ahead_within_capacity_and_reads_misses_on_the_spot() {
        let src = source();
        let reader = Reader::new(src.clone(), None, 2, 2);
        reader.request(&[(1, 0), (1, 1), (1, 2)]);
        wait_until(|| reader.ready_of(1).len() == 2);
        std::thread::sleep(Duration::from_millis(30));
        // The third waits for room: only `capacity` records are held.
        assert_eq!(reader.ready_of(1).len(), 2);
        assert!(reader.ready_of(1).contains(&(1, 0)));
        assert_eq!(&bytes(reader.take(1, 0).unwrap())[..2], &[1, 0]);
        wait_until(|| reader.ready_of(1).contains(&(1, 2)));
        // Not requested: read now, on this thread.
        assert_eq!(&bytes(reader.take(2, 5).unwrap())[..2], &[2, 5]);
        // Each record was read once.
        let mut reads = src.reads.lock().unwrap().clone();
        reads.sort();
        assert_eq!(reads, vec![(1, 0), (1, 1), (1, 2), (2, 5)]);
    }

    #[test]
    fn a_new_request_replaces_reads_not_started_and_errors_reach_the_taker() {
        let src = source();
        let reader = Reader::new(src.clone(), None, 1, 1);
        reader.request(&[(0, 13), (0, 1), (0, 2)]);
        wait_until(|| reader.ready_of(0).len() == 1);
        reader.request(&[(3, 4)]);
        let err = reader.take(0, 13).unwrap_err().to_string();
        assert!(err.contains("bad record"), "{err}");
        assert_eq!(&bytes(reader.take(3, 4).unwrap())[..2], &[3, 4]);
        assert!(!src.reads.lock().unwrap().contains(&(0, 2)), "a replaced request was still read");
    }

    #[test]
    fn expedited_records_jump_the_queue_without_dropping_it() {
        let src = source();
        let reader = Reader::new(src.clone(), None, 1, 10);
        reader.request(&[(0, 1), (0, 2), (0, 3)]);
        reader.expedite(&[(0, 9)]);
        wait_until(|| reader.ready_of(0).len() == 4);
        let reads = src.reads.lock().unwrap().clone();
        // The worker may have started (0, 1) already; (0, 9) comes next at the latest.
        let at = reads.iter().position(|&k| k == (0, 9)).unwrap();
        assert!(at <= 1, "{reads:?}");
        assert_eq!(reads.len(), 4, "{reads:?}");
    }

    #[test]
    fn without_workers_nothing_is_read_ahead() {
        let src = source();
        let reader = Reader::new(src.clone(), None, 0, 4);
        reader.request(&[(0, 1)]);
        std::thread::sleep(Duration::from_millis(20));
        assert!(src.reads.lock().unwrap().is_empty());
        assert!(reader.ready_of(0).is_empty());
        assert_eq!(&bytes(reader.take(0, 1).unwrap())[..2], &[0, 1]);
    }

    /// A source of synthetic records that can corrupt one byte of what it reads and checks
    /// CRCs against the true records.
    struct Flaky {
        inner: crate::experts::synthetic::SyntheticExperts,
        corrupt_at: Option<usize>,
    }

    impl ExpertSource for Flaky {
        fn layout(&self) -> ExpertLayout {
            self.inner.layout()
        }

        fn read(&self, layer: usize, expert: usize) -> Result<Vec<u8>, WeightsError> {
            self.inner.read(layer, expert)
        }

        fn read_part(&self, layer: usize, expert: usize, start: usize, out: &mut [u8]) -> Result<(), WeightsError> {
            self.inner.read_part(layer, expert, start, out)?;
            if let Some(at) = self.corrupt_at.filter(|at| (start..start + out.len()).contains(at)) {
                out[at - start] ^= 1;
            }
            Ok(())
        }

        fn check(&self, layer: usize, expert: usize, crc: u32) -> Result<(), WeightsError> {
            let want = crc32fast::hash(&self.inner.read(layer, expert)?);
            (crc == want)
                .then_some(())
                .ok_or_else(|| WeightsError::Format { path: "flaky".into(), reason: format!("crc {crc:08x} != {want:08x}") })
        }
    }

    /// A record read in 3 pieces on 3 threads into a staging buffer, copied into a pool slot,
    /// reads back byte for byte; a flipped byte in the middle piece fails the combined CRC.
    #[test]
    fn records_read_in_pieces_land_whole_and_checked() {
        let Some(device) = crate::device::test_gpu_or_skip("staged read test") else { return };
        let (wgpu_device, queue) = crate::device::wgpu_queue().expect("selected above");
        // 4 MiB gate_up + 2 MiB down: three 2 MiB pieces.
        let layout = ExpertLayout::new(StoredDType::F32, 512, 1024).unwrap();
        let inner = crate::experts::synthetic::SyntheticExperts::new(layout, 4, 3, 0.5);
        let want = inner.read(1, 2).unwrap();
        for corrupt_at in [None, Some(layout.bytes() / 2 + 5)] {
            let source = Arc::new(Flaky {
                inner: crate::experts::synthetic::SyntheticExperts::new(layout, 4, 3, 0.5),
                corrupt_at,
            });
            let ring = StagingRing::new(wgpu_device.clone(), queue.clone(), layout.bytes(), 2);
            let reader = Reader::new(source, Some((ring, 3)), 1, 2);
            let record = reader.take(1, 2);
            let Some(_) = corrupt_at else {
                let Record::Staged(staged) = record.unwrap() else { panic!("not staged") };
                let mut pool = crate::experts::pool::Pool::new(2, layout.slot_bytes(), &device);
                pool.copy_staged(1, layout.slot_bytes(), staged);
                let words = pool.words.into_data().convert::<i32>().try_to_vec::<i32>().unwrap();
                let got: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
                let slot = layout.slot_bytes();
                assert!(got[slot..slot + want.len()] == want[..], "slot 1 differs from the record");
                assert!(got[..slot].iter().all(|&b| b == 0), "slot 0 was written");
                continue;
            };
            let err = record.unwrap_err().to_string();
            assert!(err.contains("crc"), "{err}");
        }
    }
}
