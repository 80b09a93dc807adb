//! Stage 2, what the model is, without running it: per-layer analysis (parameters, MACs,
//! weight statistics and histograms) and the layered graph layout the studio draws.

pub mod analysis;
pub mod layout;
pub mod macs;
pub mod stats;
