//! Stage 2, what the model is, without running it: per-layer analysis (parameters, MACs,
//! weight statistics and histograms), the layered graph layout the studio draws, and the diff
//! of two models (nodes added, removed and changed; weights compared).

pub mod analysis;
pub mod diff;
pub mod layout;
pub mod macs;
pub mod stats;
