//! Experts that do not all fit on the GPU: their record format, the packs that store them and
//! the cache that streams them into fixed GPU slots on demand.

pub mod cache;
pub mod convert;
pub mod layout;
pub mod pack;
pub mod pool;
pub mod reader;
#[cfg(not(target_arch = "wasm32"))]
pub mod staging;
pub mod store_source;
pub mod synthetic;

pub use cache::{CacheStats, ExpertCache, ExpertSource};
pub use layout::{ExpertLayout, QMatrix};
