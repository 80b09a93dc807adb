//! Running models with ONNX Runtime, loaded at run time from an installed shared library.
//!
//! The `ort` crate is built with `load-dynamic`: nothing is linked or downloaded at build time,
//! and the library is opened by [`load`] the first time onnxruntime is asked for. Any other
//! `ort` call before a successful load would try to open a library itself and panic when there
//! is none, so every entry point here calls [`load`] first. One ONNX Runtime environment is
//! created per process.
//!
//! `Session::run` needs `&mut Session`: an [`OrtModel`] keeps a small pool of sessions of the
//! same model (one per thread that runs it concurrently), each with an explicit intra-op
//! thread count.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::FixedInput;
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{
    DynMapValueType, DynSequenceValueType, DynValue, TensorElementType, TensorRef, ValueType,
};

use crate::error::{Error, Result};
use crate::model::proto::{Message, ModelProto, ValueInfoProto};

const RUNTIME: &str = "onnxruntime";

/// Environment variable naming the ONNX Runtime shared library (or a folder holding it).
pub const LIBRARY_ENV: &str = "EDGEFIT_ONNXRUNTIME_LIB";

/// `ort`'s own environment variable for the library, honoured too.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// How to enable onnxruntime, for messages.
pub const HOW_TO_ENABLE: &str = "to enable it, `pip install onnxruntime` (its wheel holds the library) or set EDGEFIT_ONNXRUNTIME_LIB=/path/to/libonnxruntime.so.X";

/// The session option that tells onnxruntime where external-data files are when the model is
/// given as bytes.
const EXTERNAL_DATA_FOLDER: &str = "session.model_external_initializers_file_folder_path";

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        runtime: RUNTIME,
        reason: reason.to_string(),
    }
}

fn ort_error(context: &str, error: impl std::fmt::Display) -> Error {
    runtime_error(format!("{context}: {error}"))
}

mod library;
mod ort_format;

pub use ort_format::ort_format_bytes;

use library::ENVIRONMENT;
pub use library::{load, loaded_library};

/// Element type of the model input, as fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputType {
    F32,
    F64,
    /// Whole numbers (token ids, indices) in the f32 samples.
    I64,
    I32,
    U8,
    I8,
    Bool,
}

/// A model ready to run in onnxruntime.
pub struct OrtModel {
    /// The model as given to onnxruntime (with any extra outputs added).
    bytes: Arc<[u8]>,
    model_dir: Option<PathBuf>,
    /// Sessions not in use; a thread that finds none builds another.
    idle: Mutex<Vec<Session>>,
    input_name: String,
    input_type: InputType,
    /// Shape of the input tensor, batch included.
    pub input_shape: Vec<usize>,
    /// Names of the outputs, in order: the model's first output, then the extra tensors.
    pub output_names: Vec<String>,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// Inputs held at a value, fed as inputs on every run (not baked into the graph:
    /// onnxruntime 1.32 crashes while constant-folding some `If` models, e.g. silero-vad,
    /// whose state inputs were made initializers).
    fixed: Vec<(FixedInput, InputType)>,
}

impl OrtModel {
    /// Builds `model` for one input of `input_shape` (fed as f32, or f64 for a double input),
    /// with the model's first output plus the intermediate tensors named in `extra_outputs`,
    /// each inference on `threads` intra-op threads. `model_dir` is where external data is
    /// read from.
    pub fn build(
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
        threads: usize,
        fixed_inputs: &[FixedInput],
    ) -> Result<Self> {
        load(None)?;
        let threads = threads.max(1);
        // Constants above a quarter of the memory budget (onnxruntime folds them at load) are
        // refused before the session exists; the rest of onnxruntime validates itself.
        let size = Message::compute_size(model);
        let budget = crate::model::guard::memory_budget_bytes(size) / 4;
        if let Some(h) = crate::model::guard::hazards(model, budget)
            .into_iter()
            .find(|h| h.message.contains("memory budget"))
        {
            return Err(runtime_error(format!(
                "the model would exhaust memory ({h}); --memory-budget raises the limit"
            )));
        }
        let view = crate::model::graph::GraphView::new(model);
        for f in fixed_inputs {
            if !view.inputs.iter().any(|i| i.name == f.name) {
                return Err(runtime_error(format!(
                    "the model has no input `{}`",
                    f.name
                )));
            }
        }
        let inputs: Vec<String> = view
            .inputs
            .iter()
            .filter(|i| !fixed_inputs.iter().any(|f| f.name == i.name))
            .map(|i| i.name.clone())
            .collect();
        if inputs.len() != 1 {
            return Err(runtime_error(super::one_input_only(&view)));
        }
        let first_output = model
            .graph
            .as_ref()
            .and_then(|g| g.output.first())
            .map(|o| o.name().to_owned())
            .ok_or_else(|| runtime_error("the model has no output"))?;
        let mut bytes = model.write_to_bytes().map_err(runtime_error)?;
        bytes.extend(extra_outputs_message(model, extra_outputs)?);
        let mut output_names = vec![first_output];
        output_names.extend(extra_outputs.iter().cloned());
        let mut built = Self {
            bytes: bytes.into(),
            model_dir: model_dir.map(Path::to_path_buf),
            idle: Mutex::new(Vec::new()),
            input_name: inputs[0].clone(),
            input_type: InputType::F32,
            input_shape: input_shape.to_vec(),
            output_names,
            threads,
            fixed: Vec::new(),
        };
        let session = built.new_session()?;
        let type_of = |name: &str| -> Result<InputType> {
            let input = session
                .inputs()
                .iter()
                .find(|i| i.name() == name)
                .ok_or_else(|| runtime_error(format!("the session has no input `{name}`")))?;
            Ok(match input.dtype().tensor_type() {
                Some(TensorElementType::Float32) => InputType::F32,
                Some(TensorElementType::Float64) => InputType::F64,
                Some(TensorElementType::Int64) => InputType::I64,
                Some(TensorElementType::Int32) => InputType::I32,
                Some(TensorElementType::Uint8) => InputType::U8,
                Some(TensorElementType::Int8) => InputType::I8,
                Some(TensorElementType::Bool) => InputType::Bool,
                other => {
                    return Err(runtime_error(format!(
                        "input `{name}` is {}; data can feed float32, float64, int64, int32, uint8, int8 and bool inputs",
                        other.map_or_else(|| "not a tensor".to_owned(), |t| format!("{t:?}"))
                    )));
                }
            })
        };
        built.input_type = type_of(&built.input_name)?;
        built.fixed = fixed_inputs
            .iter()
            .map(|f| Ok((f.clone(), type_of(&f.name)?)))
            .collect::<Result<_>>()?;
        for name in &built.output_names {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(runtime_error(format!("no output called `{name}`")));
            }
        }
        built
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
        Ok(built)
    }

    fn new_session(&self) -> Result<Session> {
        let environment = ENVIRONMENT
            .get()
            .ok_or_else(|| runtime_error("the ONNX Runtime library is not loaded"))?;
        let build = || -> Result<Session> {
            let mut builder = Session::builder(environment)
                .map_err(|e| ort_error("creating a session", e))?
                .with_log_level(LogLevel::Fatal)
                .map_err(|e| ort_error("setting the log level", e))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| ort_error("setting the optimization level", e))?
                .with_intra_threads(self.threads)
                .map_err(|e| ort_error("setting the thread count", e))?
                .with_inter_threads(1)
                .map_err(|e| ort_error("setting the thread count", e))?;
            if let Some(dir) = &self.model_dir {
                builder = builder
                    .with_config_entry(EXTERNAL_DATA_FOLDER, dir.to_string_lossy())
                    .map_err(|e| ort_error("setting the external data folder", e))?;
            }
            builder
                .commit_from_memory(&self.bytes)
                .map_err(|e| ort_error("loading the model", e))
        };
        catch_unwind(AssertUnwindSafe(build))
            .unwrap_or_else(|_| Err(runtime_error("onnxruntime crashed while loading the model")))
    }

    /// Runs one sample (its values in C order, `input_shape` elements) and returns every
    /// selected output flattened, as f32.
    pub fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        self.run_overriding(sample, &[])
    }

    /// [`run`](Self::run) with some float32 initializers replaced for this run only. The model
    /// must list them among its graph inputs (onnxruntime's overridable initializers, see
    /// [`with_overridable_initializers`]): one session then serves every variant of the
    /// weights, with no rebuild (the per-layer sensitivity sweep).
    pub fn run_overriding(
        &self,
        sample: &[f32],
        overrides: &[InitializerOverride<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut session = match idle {
            Some(s) => s,
            None => self.new_session()?,
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.run_in(&mut session, sample, overrides)
        }))
        .unwrap_or_else(|_| Err(runtime_error("onnxruntime crashed while running")));
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
        result
    }

    fn run_in(
        &self,
        session: &mut Session,
        sample: &[f32],
        overrides: &[InitializerOverride<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        let expected: usize = self.input_shape.iter().product();
        if sample.len() != expected {
            return Err(runtime_error(format!(
                "a sample has {} values but the input {:?} takes {expected}",
                sample.len(),
                self.input_shape
            )));
        }
        let shaping = |e| ort_error("shaping the input", e);
        let mut inputs: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(1 + self.fixed.len());
        let main = match self.input_type {
            InputType::F32 => TensorRef::from_array_view((self.input_shape.clone(), sample))
                .map_err(shaping)?
                .into(),
            other => tensor_of(
                other,
                &self.input_shape,
                sample.iter().map(|&v| f64::from(v)),
            )
            .map_err(shaping)?,
        };
        inputs.push((self.input_name.as_str().into(), main));
        for (f, ty) in &self.fixed {
            let count: usize = f.shape.iter().product();
            let value = tensor_of(*ty, &f.shape, std::iter::repeat_n(f.value, count))
                .map_err(|e| ort_error(&format!("making input `{}`", f.name), e))?;
            inputs.push((f.name.as_str().into(), value));
        }
        for o in overrides {
            let value = TensorRef::from_array_view((o.shape.to_vec(), o.values))
                .map_err(|e| ort_error(&format!("making initializer `{}`", o.name), e))?;
            inputs.push((o.name.into(), value.into()));
        }
        // One inference may not run forever: a Loop whose condition never turns false is a
        // valid ONNX model that would (found by the fuzzer). A watchdog terminates runs past
        // the deadline (--run-timeout).
        let options =
            Arc::new(ort::session::RunOptions::new().map_err(|e| ort_error("preparing a run", e))?);
        let watched = deadline::watch(options.clone());
        let outputs = session.run_with_options(inputs, &options);
        let timed_out = deadline::release(watched);
        let outputs = outputs.map_err(|e| {
            if timed_out {
                runtime_error(format!(
                    "one inference ran past the {} s deadline and was stopped (--run-timeout)",
                    crate::model::guard::run_timeout().as_secs()
                ))
            } else {
                ort_error("running", e)
            }
        })?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name.as_str())
                    .ok_or_else(|| runtime_error(format!("no output called `{name}`")))?;
                to_f32(name, value)
            })
            .collect()
    }
}

/// Deadlines of onnxruntime runs: one watchdog thread terminates the runs past theirs.
mod deadline;

/// A float32 initializer's values for one run (see [`OrtModel::run_overriding`]).
#[derive(Clone, Copy, Debug)]
pub struct InitializerOverride<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub values: &'a [f32],
}

/// A copy of `model` whose float32 main-graph initializers named in `names` are also graph
/// inputs: onnxruntime then lets each run replace them (and does not constant-fold them).
/// Main-graph `Constant` nodes (a tensor `value`) that output one of `names` become
/// initializers first (PaddlePaddle exports keep every weight in one).
pub fn with_overridable_initializers(model: &ModelProto, names: &[&str]) -> ModelProto {
    let mut copy = model.clone();
    if let Some(graph) = copy.graph.as_mut() {
        let mut kept = Vec::with_capacity(graph.node.len());
        for node in std::mem::take(&mut graph.node) {
            let output = node.output.first().map(String::as_str).unwrap_or_default();
            let value = (node.op_type() == "Constant" && names.contains(&output))
                .then(|| node.attribute.iter().find(|a| a.name() == "value"))
                .flatten()
                .and_then(|a| a.t.as_ref());
            match value {
                Some(tensor) => {
                    let mut tensor = tensor.clone();
                    tensor.set_name(output.to_owned());
                    graph.initializer.push(tensor);
                }
                None => kept.push(node),
            }
        }
        graph.node = kept;
        let declared: std::collections::HashSet<String> =
            graph.input.iter().map(|i| i.name().to_owned()).collect();
        let added: Vec<ValueInfoProto> = graph
            .initializer
            .iter()
            .filter(|t| {
                t.data_type() == crate::model::dtype::DType::FLOAT32.0
                    && names.contains(&t.name())
                    && !declared.contains(t.name())
            })
            .map(|t| crate::model::graph_edit::value_info(t.name(), &t.dims))
            .collect();
        graph.input.extend(added);
    }
    copy
}

/// A tensor of `ty` holding `values` (whole numbers for integer types: `as` saturates).
fn tensor_of(
    ty: InputType,
    shape: &[usize],
    values: impl Iterator<Item = f64>,
) -> ort::Result<ort::session::SessionInputValue<'static>> {
    let shape = shape.to_vec();
    Ok(match ty {
        InputType::F32 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as f32).collect::<Vec<_>>()))?
                .into()
        }
        InputType::F64 => {
            ort::value::Tensor::from_array((shape, values.collect::<Vec<_>>()))?.into()
        }
        InputType::I64 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i64).collect::<Vec<_>>()))?
                .into()
        }
        InputType::I32 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i32).collect::<Vec<_>>()))?
                .into()
        }
        InputType::U8 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as u8).collect::<Vec<_>>()))?
                .into()
        }
        InputType::I8 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i8).collect::<Vec<_>>()))?
                .into()
        }
        InputType::Bool => {
            ort::value::Tensor::from_array((shape, values.map(|v| v != 0.0).collect::<Vec<_>>()))?
                .into()
        }
    })
}

/// A sequence of maps (a scikit-learn classifier's ZipMap probabilities): each map's values
/// in key order, maps one after the other.
fn sequence_of_maps(name: &str, value: &DynValue) -> Result<Vec<f32>> {
    let read = |e: ort::Error| ort_error(&format!("reading output `{name}`"), e);
    let maps = value
        .view()
        .downcast::<DynSequenceValueType>()
        .map_err(read)?
        .try_extract_sequence::<DynMapValueType>()
        .map_err(read)?;
    let mut values = Vec::new();
    for map in &maps {
        match map.dtype() {
            ValueType::Map {
                key: TensorElementType::Int64,
                ..
            } => {
                let mut pairs = map.try_extract_key_values::<i64, f32>().map_err(read)?;
                pairs.sort_by_key(|(k, _)| *k);
                values.extend(pairs.into_iter().map(|(_, v)| v));
            }
            ValueType::Map {
                key: TensorElementType::String,
                ..
            } => {
                let mut pairs = map.try_extract_key_values::<String, f32>().map_err(read)?;
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                values.extend(pairs.into_iter().map(|(_, v)| v));
            }
            other => {
                return Err(runtime_error(format!(
                    "output `{name}` holds {other}; only maps of int64 or string keys to float are read"
                )));
            }
        }
    }
    Ok(values)
}

/// An output tensor's values as f32 (a sequence of maps: see [`sequence_of_maps`]).
fn to_f32(name: &str, value: &DynValue) -> Result<Vec<f32>> {
    if let ValueType::Sequence(inner) = value.dtype() {
        if matches!(**inner, ValueType::Map { .. }) {
            return sequence_of_maps(name, value);
        }
        // A sequence of tensors (SplitToSequence, a Loop's scan outputs): their values one
        // after the other.
        let read = |e: ort::Error| ort_error(&format!("reading output `{name}`"), e);
        let tensors = value
            .view()
            .downcast::<DynSequenceValueType>()
            .map_err(read)?
            .try_extract_sequence::<ort::value::DynTensorValueType>()
            .map_err(read)?;
        let mut values = Vec::new();
        for t in tensors {
            values.extend(to_f32(name, &t.into_dyn())?);
        }
        return Ok(values);
    }
    let read = |e| ort_error(&format!("reading output `{name}`"), e);
    let ty = value.dtype().tensor_type();
    Ok(match ty {
        Some(TensorElementType::Float32) => {
            value.try_extract_tensor::<f32>().map_err(read)?.1.to_vec()
        }
        Some(TensorElementType::Float64) => value
            .try_extract_tensor::<f64>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int64) => value
            .try_extract_tensor::<i64>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int32) => value
            .try_extract_tensor::<i32>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int8) => value
            .try_extract_tensor::<i8>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| f32::from(v))
            .collect(),
        Some(TensorElementType::Uint8) => value
            .try_extract_tensor::<u8>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| f32::from(v))
            .collect(),
        Some(TensorElementType::Bool) => value
            .try_extract_tensor::<bool>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| if v { 1.0 } else { 0.0 })
            .collect(),
        other => {
            return Err(runtime_error(format!(
                "output `{name}` is {}; only numeric tensors are read",
                other.map_or_else(|| "not a tensor".to_owned(), |t| format!("{t:?}"))
            )));
        }
    })
}

/// The serialized extra graph outputs `extra` (those the model does not already list), as
/// a message to append to the model's own bytes: protobuf merges concatenated messages
/// (repeated fields append), so the runtime reads the model with those outputs added —
/// without copying the model (a copy of a 400 MB model per session was most of a build).
fn extra_outputs_message(model: &ModelProto, extra: &[String]) -> Result<Vec<u8>> {
    let Some(graph) = model.graph.as_ref() else {
        return Ok(Vec::new());
    };
    let mut outputs = crate::model::proto::GraphProto::new();
    for name in extra {
        if !graph.output.iter().any(|o| o.name() == name.as_str())
            && !outputs.output.iter().any(|o| o.name() == name.as_str())
        {
            let mut info = ValueInfoProto::new();
            info.set_name(name.clone());
            outputs.output.push(info);
        }
    }
    if outputs.output.is_empty() {
        return Ok(Vec::new());
    }
    let mut message = ModelProto::new();
    message.graph = Some(outputs).into();
    message.write_to_bytes().map_err(runtime_error)
}
