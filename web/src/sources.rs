//! Where a weight file's bytes come from in the browser. Each source reads ranges
//! synchronously (possible only in a dedicated worker), so the runtime's loader pulls one
//! tensor at a time and the model never sits whole in wasm memory:
//! - [`OpfsSource`]: a file in the Origin Private File System (the download cache);
//! - [`BlobSource`]: a `Blob` (a `File` from a directory picker, or a Cache API response);
//! - [`RangeSource`]: HTTP Range requests against the server (no cache).

use std::borrow::Cow;

use js_sys::Uint8Array;
use minimax_runtime::error::WeightsError;
use minimax_runtime::weights::ByteSource;
use wasm_bindgen::JsCast;
use web_sys::{Blob, FileReaderSync, FileSystemReadWriteOptions, FileSystemSyncAccessHandle, XmlHttpRequest, XmlHttpRequestResponseType};

use crate::js_error;

fn read_error(path: &str, e: impl std::fmt::Display) -> WeightsError {
    WeightsError::Format {
        path: path.to_string(),
        reason: format!("read failed: {e}"),
    }
}

/// A file in the Origin Private File System, read through a sync access handle.
pub struct OpfsSource {
    pub path: String,
    pub handle: FileSystemSyncAccessHandle,
    pub len: u64,
}

/// A `Blob`, read with `FileReaderSync`.
pub struct BlobSource {
    pub path: String,
    pub blob: Blob,
}

/// A URL read with synchronous Range requests.
pub struct RangeSource {
    pub url: String,
    pub len: u64,
}

// SAFETY: wasm32 without threads has a single thread; the runtime's `Send + Sync` bounds exist
// for native targets, and these sources never leave the worker that created them.
unsafe impl Send for OpfsSource {}
unsafe impl Sync for OpfsSource {}
unsafe impl Send for BlobSource {}
unsafe impl Sync for BlobSource {}

impl Drop for OpfsSource {
    fn drop(&mut self) {
        self.handle.close();
    }
}

impl ByteSource for OpfsSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        let mut buf = vec![0u8; len];
        let options = FileSystemReadWriteOptions::new();
        options.set_at(offset as f64);
        let n = self
            .handle
            .read_with_u8_array_and_options(&mut buf, &options)
            .map_err(|e| read_error(&self.path, js_error(&e)))?;
        if n as usize != len {
            return Err(read_error(&self.path, format!("{n} of {len} bytes at {offset}")));
        }
        Ok(Cow::Owned(buf))
    }
}

impl ByteSource for BlobSource {
    fn len(&self) -> u64 {
        self.blob.size() as u64
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        let part = self
            .blob
            .slice_with_f64_and_f64(offset as f64, (offset + len as u64) as f64)
            .map_err(|e| read_error(&self.path, js_error(&e)))?;
        let buffer = FileReaderSync::new()
            .and_then(|r| r.read_as_array_buffer(&part))
            .map_err(|e| read_error(&self.path, js_error(&e)))?;
        Ok(Cow::Owned(Uint8Array::new(&buffer).to_vec()))
    }
}

impl ByteSource for RangeSource {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>, WeightsError> {
        if len == 0 {
            return Ok(Cow::Owned(Vec::new()));
        }
        let bytes = range_request(&self.url, offset, len).map_err(|e| read_error(&self.url, e))?;
        Ok(Cow::Owned(bytes))
    }
}

/// `GET url` with `Range: bytes=offset-(offset+len-1)`, synchronously (allowed in workers).
pub fn range_request(url: &str, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    let xhr = XmlHttpRequest::new().map_err(|e| js_error(&e))?;
    xhr.open_with_async("GET", url, false).map_err(|e| js_error(&e))?;
    xhr.set_request_header("Range", &format!("bytes={}-{}", offset, offset + len as u64 - 1))
        .map_err(|e| js_error(&e))?;
    xhr.set_response_type(XmlHttpRequestResponseType::Arraybuffer);
    xhr.send().map_err(|e| js_error(&e))?;
    let status = xhr.status().map_err(|e| js_error(&e))?;
    let body = xhr.response().map_err(|e| js_error(&e))?;
    let buffer: js_sys::ArrayBuffer = body.dyn_into().map_err(|_| "no body".to_string())?;
    let body = Uint8Array::new(&buffer);
    match status {
        206 if body.length() as usize == len => Ok(body.to_vec()),
        // A server that ignores Range sends the whole file: take the slice.
        200 if body.length() as u64 >= offset + len as u64 => {
            Ok(body.subarray(offset as u32, (offset + len as u64) as u32).to_vec())
        }
        s => Err(format!("HTTP {s} for a {len}-byte range at {offset}")),
    }
}
