//! Stage 4, what a recipe does to the weights: the recipe itself, the quantization and pruning
//! kernels, the per-layer compressor, structured (channel) pruning and batch-norm folding.

pub mod compensate;
pub mod compressor;
pub mod fold;
pub mod layer_inputs;
pub mod plan;
pub mod prune_mask;
pub mod quant;
pub mod structured;
