//! Edgefit Studio's application crate: the studio window (`gui`) and the headless
//! subcommands (`cli`), both thin layers over `edgefit-engine`. The `edgefit` binary is
//! `main.rs`; the library exists so UI tests can drive the real app.

pub mod cli;
pub mod exit;
pub mod format;
pub mod gui;
pub mod samples;
