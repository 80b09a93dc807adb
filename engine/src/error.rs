//! The engine's one error type: structured fields, messages that name the problem and put the
//! file path last.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written. (The OS error is part of the message, not a
    /// separate cause: `{:#}` printing would show it twice.)
    #[error("{action}: {cause}: {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file has no bytes.
    #[error("the file is empty (0 bytes), not an ONNX model: {path}")]
    EmptyFile { path: PathBuf },
    /// The bytes are not a valid ONNX protobuf message.
    #[error("not a valid ONNX file ({reason}): {path}")]
    NotOnnx { reason: String, path: PathBuf },
    /// A tensor's external data could not be used.
    #[error("tensor `{tensor}`: {reason}: {path}")]
    ExternalData {
        tensor: String,
        reason: String,
        path: PathBuf,
    },
    /// A tensor's stored data does not match its declared type and shape.
    #[error("tensor `{tensor}`: {reason}")]
    BadTensor { tensor: String, reason: String },
    /// A shape whose element count does not fit in 64 bits.
    #[error("`{what}` has a shape whose element count overflows: {dims:?}")]
    DimensionOverflow { what: String, dims: Vec<i64> },
    /// Evaluation data could not be read or does not fit the model.
    #[error("dataset: {reason}: {path}")]
    Dataset { reason: String, path: PathBuf },
    /// A model could not be run (built, optimized or executed) by a runtime.
    #[error("{runtime} cannot run the model: {reason}")]
    Runtime {
        runtime: &'static str,
        reason: String,
    },
    /// A compression recipe is invalid for this model.
    #[error("recipe: {reason}")]
    Recipe { reason: String },
    /// Writing would overwrite the model that was opened.
    #[error("refusing to overwrite the model that was opened; choose another path: {path}")]
    WouldOverwriteSource { path: PathBuf },
    /// The built export breaks the ONNX operator schemas (a runtime would refuse it): it was
    /// not written.
    #[error("the export would not be a valid ONNX model, so it was not written: {reason}")]
    InvalidExport { reason: String },
    /// The job was cancelled by the user.
    #[error("cancelled")]
    Cancelled,
    /// A device profile could not be read, or a device or cut asked for does not exist.
    #[error("{what}: {reason}")]
    Device { what: String, reason: String },
    /// A value given to the engine is out of range.
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error with the action that failed and the path it failed on.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            cause: source,
        }
    }
}
