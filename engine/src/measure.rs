//! Stage 3, running models: the two runtimes (tract and onnxruntime), datasets and the inputs
//! that feed a model (given, or generated when there is no data), and the measurements made on
//! them — accuracy, output fidelity, latency and per-layer time.

pub mod dataset;
pub mod eval;
pub mod generate;
pub mod inputs;
pub mod profile;
pub mod runtime;
