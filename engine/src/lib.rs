//! Edgefit engine: load → analyse → plan → apply → evaluate → export, for ONNX models.
//!
//! The engine never depends on a GUI crate. Long jobs are synchronous functions that take a
//! [`ProgressSink`] and a [`CancelToken`]; the caller (the studio or the CLI) decides which
//! thread runs them.

pub mod analysis;
pub mod compress;
pub mod dataset;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod export;
pub mod fold;
pub mod graph;
mod graph_edit;
pub mod guard;
pub mod job;
pub mod layer_inputs;
pub mod layout;
pub mod load;
pub mod macs;
pub mod opset;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod proto;
pub mod prune_mask;
pub mod quant;
pub mod reconstruct;
pub mod report;
pub mod runtime;
pub mod schema;
pub mod shapes;
pub mod staged;
pub mod stats;
pub mod structured;
pub mod synthetic;
pub mod tensor;
pub mod write;

pub use analysis::{AnalysisOptions, LayerReport, ModelAnalysis, TensorReport, analyse};
pub use error::{Error, Result};
pub use job::{CancelToken, NoProgress, Progress, ProgressSink};
pub use load::{LoadedModel, load_model};
pub use write::write_model_atomic;
