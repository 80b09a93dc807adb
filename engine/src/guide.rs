//! Guided compression: what each layer can take, and which plan to choose.
//!
//! - [`sensitivity`]: every compressible layer set alone to each candidate setting (integer
//!   bits, float16, prune ratios), with the model's output error measured against the
//!   original's on the same samples;
//! - [`search`]: from those curves, the plans on the size/error front (under an additive
//!   output-noise model), a few of them measured for real, the best within a budget returned.
//!
//! This stage sits above [`crate::pipeline`]: it plans and measures with the same jobs the
//! CLI's `optimize` and the studio run.

pub mod search;
pub mod sensitivity;
