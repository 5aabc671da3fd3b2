//! A ring of host-visible staging buffers for expert uploads (native wgpu).
//!
//! `queue.write_buffer` makes a fresh mapped buffer for every write and copies into it on the
//! calling thread. For 100 MB records that costs page faults on every upload, and cubecl waits
//! for the whole GPU queue after every 64 writes. The ring instead keeps a few buffers of one
//! record each, mapped once:
//!
//! 1. reader threads take a mapped buffer and copy a record into it ([`Staged::fill_at`]);
//! 2. the cache unmaps it and records one `copy_buffer_to_buffer` into the pool slot
//!    ([`Staged::copy_to`]), submitted after cubecl's queued work so that queue order keeps
//!    kernels that read the slot's old record ahead of the copy;
//! 3. `map_async` hands the buffer back to the ring once the GPU has finished the copy.
//!
//! A [`Staged`] dropped without being copied goes straight back (it is still mapped).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use burn::tensor::wgpu::wgpu;

pub struct StagingRing {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// Bytes per buffer (a record, rounded up to 4).
    bytes: u64,
    free: Mutex<Vec<wgpu::Buffer>>,
    returned: Condvar,
}

impl std::fmt::Debug for StagingRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingRing").field("bytes", &self.bytes).finish()
    }
}

impl StagingRing {
    /// `count` mapped buffers of `record_bytes` each.
    pub fn new(device: wgpu::Device, queue: wgpu::Queue, record_bytes: usize, count: usize) -> Arc<Self> {
        let bytes = (record_bytes as u64).next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let free = (0..count)
            .map(|_| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("expert staging"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_WRITE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: true,
                })
            })
            .collect();
        Arc::new(Self {
            device,
            queue,
            bytes,
            free: Mutex::new(free),
            returned: Condvar::new(),
        })
    }

    /// A mapped buffer, if one is free now (after collecting finished copies).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Staged> {
        let _ = self.device.poll(wgpu::PollType::Poll);
        let buffer = self.free.lock().expect("staging lock").pop()?;
        Some(Staged {
            ring: self.clone(),
            buffer: Some(buffer),
        })
    }

    /// Waits a little for a buffer to come back: drives the device so that finished copies
    /// run their `map_async` callbacks.
    pub fn wait(&self) {
        let _ = self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout: Some(Duration::from_millis(20)),
        });
        let free = self.free.lock().expect("staging lock");
        if free.is_empty() {
            let _ = self.returned.wait_timeout(free, Duration::from_millis(1));
        }
    }

    fn give_back(&self, buffer: wgpu::Buffer) {
        self.free.lock().expect("staging lock").push(buffer);
        self.returned.notify_all();
    }
}

/// One mapped staging buffer, on loan from its ring.
#[derive(Debug)]
pub struct Staged {
    ring: Arc<StagingRing>,
    buffer: Option<wgpu::Buffer>,
}

impl Staged {
    /// Bytes the GPU copy moves (the record rounded up to 4).
    pub fn copy_bytes(&self) -> u64 {
        self.ring.bytes
    }

    /// Copies `bytes` into the mapped buffer at byte `start` (a multiple of 8). Threads may
    /// fill disjoint ranges at once.
    pub fn fill_at(&self, start: usize, bytes: &[u8]) {
        let buffer = self.buffer.as_ref().expect("staged buffer");
        let end = (start + bytes.len()).next_multiple_of(4) as u64;
        assert!(end <= self.ring.bytes, "bytes past the end of the staging buffer");
        let mut view = buffer.get_mapped_range_mut(start as u64..end).expect("staging buffer is mapped");
        view.slice(..bytes.len()).copy_from_slice(bytes);
    }

    /// Copies the buffer's contents into `dst` at byte `offset`, after everything queued so
    /// far (the caller has flushed cubecl's work). The buffer returns to the ring when the
    /// GPU is done with it.
    pub fn copy_to(mut self, dst: &wgpu::Buffer, offset: u64) {
        let buffer = self.buffer.take().expect("staged buffer");
        let ring = self.ring.clone();
        buffer.unmap();
        let mut encoder = ring.device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("expert upload"),
        });
        encoder.copy_buffer_to_buffer(&buffer, 0, dst, offset, ring.bytes);
        ring.queue.submit([encoder.finish()]);
        let back = buffer.clone();
        buffer.map_async(wgpu::MapMode::Write, .., move |result| {
            // A failed map (device lost) retires the buffer; the ring then runs with fewer.
            if result.is_ok() {
                ring.give_back(back);
            }
        });
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.ring.give_back(buffer);
        }
    }
}
