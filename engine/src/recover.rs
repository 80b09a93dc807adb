//! Stage 6, data-aware passes that run the model and rebuild what compression lost:
//! activation calibration and batch-norm re-estimation, the fold-then-quantize staged path,
//! and layer-wise weight reconstruction (with output-MSE clipping's statistics).

pub mod calibration;
pub mod reconstruct;
pub mod staged;
