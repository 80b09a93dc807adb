//! Deployment targets: device profiles, and what a model (original or planned) needs and
//! does there — peak activation memory from an arena planner, weight bytes, latency and
//! energy estimates on the device's roofline, which nodes its accelerator takes, and where
//! to split the model between the device and a server.
//!
//! Every latency and energy figure here is an estimate with a stated basis, not a
//! measurement: see [`estimate`].

mod built_in;
pub mod device;
pub mod estimate;
pub mod fit;
pub mod graph;
pub mod memory;
pub mod partition;
pub mod split;
pub mod split_cost;
