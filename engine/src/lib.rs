//! Edgefit engine: load → analyse → measure → compress → export → recover, for ONNX models,
//! one module per stage; a stage imports only the stages above it in this list
//! (`tests/tests/engine_layers.rs` enforces it):
//!
//! - [`error`], [`job`]: the error type, progress and cancellation, shared by every stage;
//! - [`model`]: the ONNX model of record — load, tensors, graph, shapes, editing, write;
//! - [`analyse`]: parameters, MACs and weight statistics per layer; the graph layout;
//! - [`measure`]: the runtimes (tract, onnxruntime), datasets and inputs, accuracy/fidelity;
//! - [`compress`]: the recipe and what it does to weights — quantize, prune, fold;
//! - [`export`]: the written model in each format, and its verification;
//! - [`recover`]: data-aware passes — calibration, batch-norm re-estimation, reconstruction;
//! - [`pipeline`]: the jobs the CLI and the studio run (preview, optimize) and their reports;
//! - [`guide`]: per-layer sensitivity and the search for the best plan within a budget;
//! - [`deploy`]: device profiles; memory, latency, accelerator partitions and splits there.
//!
//! The engine never depends on a GUI crate. Long jobs are synchronous functions that take a
//! [`ProgressSink`] and a [`CancelToken`]; the caller (the studio or the CLI) decides which
//! thread runs them.

pub mod error;
pub mod job;

pub mod model;

pub mod analyse;

pub mod measure;

pub mod compress;

pub mod export;

pub mod recover;

pub mod pipeline;

pub mod guide;

pub mod deploy;

pub use analyse::analysis::{AnalysisOptions, LayerReport, ModelAnalysis, TensorReport, analyse};
pub use error::{Error, Result};
pub use job::{CancelToken, NoProgress, Progress, ProgressSink};
pub use model::load::{LoadedModel, load_model};
pub use model::write::write_model_atomic;
