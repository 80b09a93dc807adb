//! Converting a model to onnxruntime's `.ort` format (what ORT Mobile and minimal builds
//! load), through the loaded onnxruntime library itself, as its
//! `convert_onnx_models_to_ort.py` does: a session with basic graph optimizations only (the
//! hardware-independent ones: constant folding, redundant node removal, Conv+BatchNorm
//! fusion), saved in the ORT format.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::library::ENVIRONMENT;
use super::{EXTERNAL_DATA_FOLDER, load, ort_error, runtime_error};
use crate::error::{Error, Result};
use crate::model::proto::{Message, ModelProto};

/// The session option that makes onnxruntime save its optimized model in the ORT format.
const SAVE_FORMAT: &str = "session.save_model_format";
/// The session option that makes onnxruntime read a model in the ORT format.
const LOAD_FORMAT: &str = "session.load_model_format";

/// `model` in the ORT format, checked by loading it back in a new session. `model_dir` is
/// where external data is read from.
pub fn ort_format_bytes(model: &ModelProto, model_dir: Option<&Path>) -> Result<Vec<u8>> {
    load(None)?;
    let environment = ENVIRONMENT
        .get()
        .ok_or_else(|| runtime_error("the ONNX Runtime library is not loaded"))?;
    let bytes = model.write_to_bytes().map_err(runtime_error)?;
    let scratch = tempfile::Builder::new()
        .prefix("edgefit-ort-")
        .tempdir()
        .map_err(|e| Error::io("cannot create a scratch folder", std::env::temp_dir(), e))?;
    let path = scratch.path().join("model.ort");
    let convert = || -> Result<()> {
        let mut builder = Session::builder(environment)
            .map_err(|e| ort_error("creating a session", e))?
            .with_optimization_level(GraphOptimizationLevel::Level1)
            .map_err(|e| ort_error("setting the optimization level", e))?
            .with_config_entry(SAVE_FORMAT, "ORT")
            .map_err(|e| ort_error("asking for the ORT format", e))?
            .with_optimized_model_path(&path)
            .map_err(|e| ort_error("setting where the ORT file goes", e))?;
        if let Some(dir) = model_dir {
            builder = builder
                .with_config_entry(EXTERNAL_DATA_FOLDER, dir.to_string_lossy())
                .map_err(|e| ort_error("setting the external data folder", e))?;
        }
        builder
            .commit_from_memory(&bytes)
            .map_err(|e| ort_error("converting the model", e))?;
        // The file must load as what it claims to be.
        Session::builder(environment)
            .map_err(|e| ort_error("creating a session", e))?
            .with_config_entry(LOAD_FORMAT, "ORT")
            .map_err(|e| ort_error("asking for the ORT format", e))?
            .commit_from_file(&path)
            .map_err(|e| ort_error("loading the ORT file back", e))?;
        Ok(())
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(convert)).unwrap_or_else(|_| {
        Err(runtime_error(
            "onnxruntime crashed while converting the model",
        ))
    })?;
    std::fs::read(&path).map_err(|e| Error::io("cannot read the ORT file", &path, e))
}
