//! Getting a model's files into the worker: small JSON files as text, weight files as
//! [`ByteSource`]s. Weight files are streamed into the Origin Private File System (or the Cache
//! API where OPFS is missing) with progress, and read back tensor by tensor; when storage is
//! unavailable or over quota, they are read with HTTP Range requests instead.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect, Uint8Array};
use minimax_runtime::weights::ByteSource;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, Cache, FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle, ReadableStreamDefaultReader, RequestInit, Response,
    WorkerGlobalScope,
};

use crate::js_error;
use crate::sources::{BlobSource, OpfsSource, RangeSource};

fn scope() -> WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

async fn wait<T: JsCast>(promise: js_sys::Promise) -> Result<T, String> {
    JsFuture::from(promise)
        .await
        .map_err(|e| js_error(&e))?
        .dyn_into::<T>()
        .map_err(|_| "unexpected value".to_string())
}

/// Reports download and load progress to a JS callback:
/// `{ phase, file, loaded, total, percent, notice? }`.
#[derive(Clone)]
pub struct Progress {
    callback: Option<Function>,
    pub total: Rc<Cell<f64>>,
    pub loaded: Rc<Cell<f64>>,
}

impl Progress {
    pub fn new(callback: Option<Function>) -> Self {
        Self {
            callback,
            total: Rc::new(Cell::new(0.0)),
            loaded: Rc::new(Cell::new(0.0)),
        }
    }

    pub fn report(&self, phase: &str, file: &str, notice: Option<&str>) {
        let Some(callback) = &self.callback else { return };
        let event = Object::new();
        let total = self.total.get();
        let percent = if total > 0.0 { 100.0 * self.loaded.get() / total } else { 0.0 };
        for (key, value) in [
            ("phase", JsValue::from_str(phase)),
            ("file", JsValue::from_str(file)),
            ("loaded", JsValue::from_f64(self.loaded.get())),
            ("total", JsValue::from_f64(total)),
            ("percent", JsValue::from_f64(percent.min(100.0))),
        ] {
            let _ = Reflect::set(&event, &key.into(), &value);
        }
        if let Some(notice) = notice {
            let _ = Reflect::set(&event, &"notice".into(), &notice.into());
        }
        let _ = callback.call1(&JsValue::NULL, &event);
    }
}

/// Where downloaded weight files are kept.
pub enum Store {
    Opfs(FileSystemDirectoryHandle),
    CacheApi(Cache),
    /// No persistent cache: Range requests.
    None,
}

/// The best storage this browser offers (OPFS, then the Cache API), or none if `enabled` is
/// false.
pub async fn open_store(enabled: bool) -> Store {
    if !enabled {
        return Store::None;
    }
    let opfs = async {
        let root: FileSystemDirectoryHandle = wait(scope().navigator().storage().get_directory()).await?;
        let options = FileSystemGetDirectoryOptions::new();
        options.set_create(true);
        wait::<FileSystemDirectoryHandle>(root.get_directory_handle_with_options("minimax-cache", &options)).await
    };
    if let Ok(dir) = opfs.await {
        return Store::Opfs(dir);
    }
    match scope().caches() {
        Ok(caches) => match wait::<Cache>(caches.open("minimax")).await {
            Ok(cache) => Store::CacheApi(cache),
            Err(_) => Store::None,
        },
        Err(_) => Store::None,
    }
}

/// `GET url` as text; `None` on 404.
pub async fn fetch_text(url: &str) -> Result<Option<String>, String> {
    let response: Response = wait(scope().fetch_with_str(url)).await?;
    match response.status() {
        404 => Ok(None),
        200..=299 => {
            let text = JsFuture::from(response.text().map_err(|e| js_error(&e))?)
                .await
                .map_err(|e| js_error(&e))?;
            Ok(text.as_string())
        }
        s => Err(format!("HTTP {s} for {url}")),
    }
}

/// `HEAD url`: the length and a validator (ETag or Last-Modified) for cache checks.
async fn head(url: &str) -> Result<(u64, String), String> {
    let init = RequestInit::new();
    init.set_method("HEAD");
    let response: Response = wait(scope().fetch_with_str_and_init(url, &init)).await?;
    if !response.ok() {
        return Err(format!("HTTP {} for {url}", response.status()));
    }
    let headers = response.headers();
    let len = headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{url}: the server sent no Content-Length"))?;
    let validator = ["etag", "last-modified"]
        .iter()
        .find_map(|h| headers.get(h).ok().flatten())
        .unwrap_or_default();
    Ok((len, validator))
}

/// The length of `url` (for progress totals).
pub async fn length(url: &str) -> Result<u64, String> {
    head(url).await.map(|(len, _)| len)
}

/// A cache file name for `url` (FNV-1a of the URL).
fn key(url: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn is_quota_error(e: &JsValue) -> bool {
    e.dyn_ref::<web_sys::DomException>().is_some_and(|d| d.name() == "QuotaExceededError")
}

/// Streams the body of `url`, calling `chunk` for every piece.
async fn stream(url: &str, mut chunk: impl FnMut(&Uint8Array) -> Result<(), JsValue>) -> Result<(), JsValue> {
    let response: Response = JsFuture::from(scope().fetch_with_str(url)).await?.dyn_into()?;
    if !response.ok() {
        return Err(JsValue::from_str(&format!("HTTP {} for {url}", response.status())));
    }
    let body = response.body().ok_or_else(|| JsValue::from_str("empty body"))?;
    let reader: ReadableStreamDefaultReader = body.get_reader().dyn_into()?;
    loop {
        let step = JsFuture::from(reader.read()).await?;
        if Reflect::get(&step, &"done".into())?.as_bool().unwrap_or(true) {
            return Ok(());
        }
        chunk(&Reflect::get(&step, &"value".into())?.dyn_into::<Uint8Array>()?)?;
    }
}

/// A weight file as a byte source, downloaded into `store` first when there is one.
pub async fn weights(url: &str, store: &Store, progress: &Progress) -> Result<Box<dyn ByteSource>, String> {
    let (len, validator) = head(url).await?;
    match store {
        Store::Opfs(dir) => match opfs(url, len, &validator, dir, progress).await {
            Ok(source) => return Ok(source),
            Err(Some(notice)) => progress.report("download", url, Some(&notice)),
            Err(None) => {}
        },
        Store::CacheApi(cache) => return cache_api(url, len, cache, progress).await,
        Store::None => {}
    }
    Ok(Box::new(RangeSource { url: url.to_string(), len }))
}

/// A pack's `experts.bin` read record by record with Range requests, cached in OPFS when the
/// store is OPFS (see [`crate::experts`]).
pub async fn expert_ranges(url: &str, store: &Store) -> Result<Box<dyn ByteSource>, String> {
    let (len, validator) = head(url).await?;
    let opfs = match store {
        Store::Opfs(dir) => {
            let create = FileSystemGetFileOptions::new();
            create.set_create(true);
            let name = key(url);
            let open = |file: String| {
                let promise = dir.get_file_handle_with_options(&file, &create);
                async move {
                    let handle: FileSystemFileHandle = wait(promise).await?;
                    wait::<FileSystemSyncAccessHandle>(handle.create_sync_access_handle()).await
                }
            };
            match (open(format!("{name}.experts")).await, open(format!("{name}.experts.list")).await) {
                (Ok(data), Ok(list)) => Some((data, list)),
                _ => None,
            }
        }
        _ => None,
    };
    Ok(Box::new(crate::experts::CachedRanges::open(url, len, &format!("{len} {validator}"), opfs)))
}

/// Downloads `url` into OPFS unless an identical copy is there. `Err(Some(notice))` when the
/// quota is exceeded (the caller falls back to Range requests).
async fn opfs(
    url: &str,
    len: u64,
    validator: &str,
    dir: &FileSystemDirectoryHandle,
    progress: &Progress,
) -> Result<Box<dyn ByteSource>, Option<String>> {
    let name = key(url);
    let create = FileSystemGetFileOptions::new();
    create.set_create(true);
    let open = |file: String| {
        let promise = dir.get_file_handle_with_options(&file, &create);
        async move {
            let handle: FileSystemFileHandle = wait(promise).await?;
            wait::<FileSystemSyncAccessHandle>(handle.create_sync_access_handle()).await
        }
    };
    let stamp = format!("{len} {validator}");
    let meta = open(format!("{name}.meta")).await.map_err(|_| None)?;
    let data = open(name.clone()).await.map_err(|_| None)?;
    let size = data.get_size().unwrap_or(0.0) as u64;
    let mut stored = vec![0u8; meta.get_size().unwrap_or(0.0) as usize];
    let _ = meta.read_with_u8_array(&mut stored);
    if size == len && stored == stamp.as_bytes() {
        progress.loaded.set(progress.loaded.get() + len as f64);
        progress.report("cached", url, None);
        meta.close();
        return Ok(Box::new(OpfsSource {
            path: url.to_string(),
            handle: data,
            len,
        }));
    }
    // Invalidate first, so an interrupted download is never taken for a complete one.
    let _ = meta.truncate_with_f64(0.0);
    let _ = data.truncate_with_f64(0.0);
    let at = Cell::new(0f64);
    let written = stream(url, |chunk| {
        let options = FileSystemReadWriteOptions::new();
        options.set_at(at.get());
        let bytes = chunk.to_vec();
        data.write_with_u8_array_and_options(&bytes, &options)?;
        at.set(at.get() + bytes.len() as f64);
        progress.loaded.set(progress.loaded.get() + bytes.len() as f64);
        progress.report("download", url, None);
        Ok(())
    })
    .await;
    match written {
        Ok(()) if at.get() as u64 == len => {
            let _ = meta.write_with_u8_array(stamp.as_bytes());
            let _ = meta.flush();
            let _ = data.flush();
            meta.close();
            Ok(Box::new(OpfsSource {
                path: url.to_string(),
                handle: data,
                len,
            }))
        }
        other => {
            meta.close();
            data.close();
            let _ = JsFuture::from(dir.remove_entry(&name)).await;
            progress.loaded.set(progress.loaded.get() - at.get());
            match other {
                Err(e) if is_quota_error(&e) => Err(Some(format!(
                    "browser storage quota exceeded while caching {url}: loading without a cache"
                ))),
                Err(e) => Err(Some(format!("caching {url} failed ({}): loading without a cache", js_error(&e)))),
                Ok(()) => Err(Some(format!("{url} changed while downloading: loading without a cache"))),
            }
        }
    }
}

/// The Cache API path: keep the response, read it as a `Blob`.
async fn cache_api(url: &str, len: u64, cache: &Cache, progress: &Progress) -> Result<Box<dyn ByteSource>, String> {
    if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await
        && let Ok(response) = hit.dyn_into::<Response>()
    {
        let blob: Blob = wait(response.blob().map_err(|e| js_error(&e))?).await?;
        if blob.size() as u64 == len {
            progress.loaded.set(progress.loaded.get() + len as f64);
            progress.report("cached", url, None);
            return Ok(Box::new(BlobSource { path: url.to_string(), blob }));
        }
    }
    let parts = js_sys::Array::new();
    stream(url, |chunk| {
        parts.push(chunk);
        progress.loaded.set(progress.loaded.get() + chunk.length() as f64);
        progress.report("download", url, None);
        Ok(())
    })
    .await
    .map_err(|e| js_error(&e))?;
    let blob = Blob::new_with_u8_array_sequence(&parts).map_err(|e| js_error(&e))?;
    let response = Response::new_with_opt_blob(Some(&blob)).map_err(|e| js_error(&e))?;
    if let Err(e) = JsFuture::from(cache.put_with_str(url, &response)).await {
        let notice = if is_quota_error(&e) {
            "browser storage quota exceeded: this model will not be cached".to_string()
        } else {
            format!("caching failed ({}): this model will not be cached", js_error(&e))
        };
        progress.report("download", url, Some(&notice));
    }
    Ok(Box::new(BlobSource { path: url.to_string(), blob }))
}
