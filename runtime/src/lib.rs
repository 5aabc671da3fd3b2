//! MiniMax-01 inference: Burn model code driving hand-written WGSL kernels on wgpu, with
//! reference implementations on Burn's CPU backend.
//!
//! Data flow: [`config`] and [`weights`] → [`model`] (layers, explicit [`model::State`]) →
//! [`kernels`] (WGSL + bindings) → [`sampling`] / [`generate`] → [`engine`] for surfaces.

pub mod chat;
pub mod config;
pub mod device;
pub mod engine;
pub mod error;
pub mod experts;
pub mod generate;
pub mod kernels;
pub mod model;
pub mod prefix_cache;
pub mod profile;
pub mod sampling;
pub mod stop;
pub mod tokenizer;
pub mod weights;

pub use config::ModelConfig;
pub use engine::{Engine, MatrixDType, ModelFiles, RuntimeOptions};
pub use error::{Error, Result};
