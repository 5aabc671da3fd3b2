//! A pack's `experts.bin` in the browser: each expert record is one HTTP Range request, kept
//! in OPFS as a second-level cache so that a record crosses the network once per browser.
//!
//! OPFS holds one sparse file per pack (records written at their own offsets) and a list of
//! the offsets present, both stamped with the server's length and validator so that a changed
//! pack is never read from a stale cache. Reads are synchronous: the expert cache calls this
//! from inside the forward pass, in the worker.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;

use minimax_runtime::error::WeightsError;
use minimax_runtime::weights::ByteSource;
use web_sys::{FileSystemReadWriteOptions, FileSystemSyncAccessHandle};

use crate::js_error;
use crate::sources::range_request;

pub struct CachedRanges {
    pub url: String,
    pub len: u64,
    /// The sparse copy and the list of cached record offsets (u64 LE after the stamp line).
    pub opfs: Option<(FileSystemSyncAccessHandle, FileSystemSyncAccessHandle)>,
    pub present: RefCell<HashSet<u64>>,
    /// Set when a write failed (quota): the cache stops growing, reads still work.
    pub full: Cell<bool>,
    pub fetched: Cell<u64>,
}

// SAFETY: single-threaded wasm; see `sources.rs`.
unsafe impl Send for CachedRanges {}
unsafe impl Sync for CachedRanges {}

impl Drop for CachedRanges {
    fn drop(&mut self) {
        if let Some((data, list)) = &self.opfs {
            let _ = data.flush();
            let _ = list.flush();
            data.close();
            list.close();
        }
    }
}

fn at(offset: u64) -> FileSystemReadWriteOptions {
    let options = FileSystemReadWriteOptions::new();
    options.set_at(offset as f64);
    options
}

impl CachedRanges {
    /// Reads the list of cached offsets, or resets both files when `stamp` (length and
    /// validator of the served file) differs from the one they were made for.
    pub fn open(url: &str, len: u64, stamp: &str, opfs: Option<(FileSystemSyncAccessHandle, FileSystemSyncAccessHandle)>) -> Self {
        let mut present = HashSet::new();
        if let Some((data, list)) = &opfs {
            let mut bytes = vec![0u8; list.get_size().unwrap_or(0.0) as usize];
            let _ = list.read_with_u8_array_and_options(&mut bytes, &at(0));
            let header = format!("{stamp}\n");
            if bytes.starts_with(header.as_bytes()) {
                present.extend(bytes[header.len()..].chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())));
            } else {
                let _ = data.truncate_with_f64(0.0);
                let _ = list.truncate_with_f64(0.0);
                let _ = list.write_with_u8_array_and_options(header.as_bytes(), &at(0));
                let _ = list.flush();
            }
        }
        Self {
            url: url.to_string(),
            len,
            opfs,
            present: RefCell::new(present),
            full: Cell::new(false),
            fetched: Cell::new(0),
        }
    }

    fn read_cached(&self, data: &FileSystemSyncAccessHandle, offset: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let n = data.read_with_u8_array_and_options(&mut buf, &at(offset)).ok()?;
        (n as usize == len).then_some(buf)
    }

    fn store(&self, data: &FileSystemSyncAccessHandle, list: &FileSystemSyncAccessHandle, offset: u64, bytes: &[u8]) {
        if self.full.get() {
            return;
        }
        // Data first, then its entry: a crash in between leaves an unlisted record, not a
        // listed hole. (The pack's CRC would catch a hole anyway.)
        let mut copy = bytes.to_vec();
        let written = data
            .write_with_u8_array_and_options(&mut copy, &at(offset))
            .and_then(|_| {
                let end = list.get_size()?;
                list.write_with_u8_array_and_options(&mut offset.to_le_bytes(), &at(end as u64))
            });
        match written {
            Ok(_) => {
                self.present.borrow_mut().insert(offset);
            }
            Err(e) => {
                web_sys::console::warn_1(
                    &format!("caching expert records stopped ({}): reading them from the server", js_error(&e)).into(),
                );
                self.full.set(true);
            }
        }
    }
}

impl ByteSource for CachedRanges {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        if let Some((data, list)) = &self.opfs {
            if self.present.borrow().contains(&offset)
                && let Some(bytes) = self.read_cached(data, offset, len)
            {
                return Ok(Cow::Owned(bytes));
            }
            let bytes = self.fetch(offset, len)?;
            self.store(data, list, offset, &bytes);
            return Ok(Cow::Owned(bytes));
        }
        Ok(Cow::Owned(self.fetch(offset, len)?))
    }
}

impl CachedRanges {
    fn fetch(&self, offset: u64, len: usize) -> Result<Vec<u8>, WeightsError> {
        self.fetched.set(self.fetched.get() + len as u64);
        range_request(&self.url, offset, len).map_err(|reason| WeightsError::Format {
            path: self.url.clone(),
            reason: format!("read failed: {reason}"),
        })
    }
}
