//! Running models: one interface over two runtimes.
//!
//! - **tract** ([`TractModel`]): built in, the default, needs nothing installed.
//! - **onnxruntime** ([`OrtModel`]): ONNX Runtime loaded at run time from an installed shared
//!   library through the `ort` crate (nothing is linked or downloaded at build time); see
//!   [`onnxruntime::load`] for where the library is looked for.
//!
//! Both build a model from an ONNX protobuf (the exact bytes an export writes), fixed to one
//! concrete input shape, and run it sample by sample. [`RunnableModel`] picks one at run time;
//! evaluation, latency, calibration and export verification take a [`RuntimeKind`].

pub mod onnxruntime;
pub mod tract;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::graph::{Dim, GraphView};
use crate::model::proto::{ModelProto, type_proto};
pub(crate) use crate::model::shapes::with_concrete_input;

pub use self::onnxruntime::OrtModel;
pub use self::tract::TractModel;

/// Which runtime runs a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// tract, built in (the default).
    #[default]
    Tract,
    /// ONNX Runtime, loaded from an installed shared library.
    #[serde(rename = "onnxruntime")]
    OnnxRuntime,
}

impl RuntimeKind {
    /// Both runtimes, tract first.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Tract, RuntimeKind::OnnxRuntime];

    /// `tract` or `onnxruntime`.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Tract => "tract",
            RuntimeKind::OnnxRuntime => "onnxruntime",
        }
    }

    /// Parses `tract` or `onnxruntime` (also `ort`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tract" => Some(RuntimeKind::Tract),
            "onnxruntime" | "ort" | "onnx-runtime" => Some(RuntimeKind::OnnxRuntime),
            _ => None,
        }
    }

    /// Whether this runtime can be used in this process now (onnxruntime: its library is
    /// found and loads; see [`onnxruntime::load`]).
    pub fn available(self) -> Result<()> {
        match self {
            RuntimeKind::Tract => Ok(()),
            RuntimeKind::OnnxRuntime => onnxruntime::load(None).map(|_| ()),
        }
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Anything that runs one sample at a time: [`TractModel`], [`OrtModel`], [`RunnableModel`].
pub trait Runnable: Sync {
    /// Runs one sample (its values in C order, [`input_shape`](Self::input_shape) elements)
    /// and returns every selected output flattened (the model's first output, then any extra
    /// tensors asked for at build time).
    fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>>;
    /// Shape of the input tensor, batch included.
    fn input_shape(&self) -> &[usize];
    /// Which runtime runs it.
    fn runtime(&self) -> RuntimeKind;
    /// Threads one inference uses.
    fn threads(&self) -> usize;
    /// The runtime's name (`tract`, `onnxruntime`).
    fn name(&self) -> &'static str {
        self.runtime().name()
    }
}

/// A model input held at one value for every sample: a recurrent state, a sample rate, a
/// mask — the inputs of a several-input model that the evaluation data does not feed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FixedInput {
    pub name: String,
    /// Its shape (`[]` for a scalar).
    pub shape: Vec<usize>,
    /// Every element's value, converted to the input's declared element type.
    pub value: f64,
}

/// Options of [`RunnableModel::build_with`].
#[derive(Clone, Debug, PartialEq)]
pub struct BuildOptions {
    /// Threads for one inference (onnxruntime's intra-op thread count; tract always uses 1).
    pub threads: usize,
    /// Inputs held at a constant value; the remaining input is fed the samples.
    pub fixed_inputs: Vec<FixedInput>,
    /// The output to read (a graph output or any intermediate tensor) instead of the model's
    /// first output (e.g. a classifier's probabilities rather than its label).
    pub output: Option<String>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            fixed_inputs: Vec::new(),
            output: None,
        }
    }
}

/// A model ready to run in the runtime chosen at run time.
pub enum RunnableModel {
    Tract(TractModel),
    OnnxRuntime(OrtModel),
}

impl RunnableModel {
    /// Builds `model` in `runtime` for one f32 input of `input_shape`, with the model's first
    /// output plus the intermediate tensors named in `extra_outputs` (for calibration), one
    /// thread per inference. `model_dir` is where external data is read from.
    pub fn build(
        runtime: RuntimeKind,
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self> {
        Self::build_with(
            runtime,
            model,
            model_dir,
            input_shape,
            extra_outputs,
            &BuildOptions::default(),
        )
    }

    /// [`build`](Self::build) with explicit options: the thread count, and inputs held at a
    /// constant value (made constants of the copy the runtime is given: the model itself keeps
    /// its inputs).
    pub fn build_with(
        runtime: RuntimeKind,
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
        options: &BuildOptions,
    ) -> Result<Self> {
        let mut copy: Option<ModelProto> = None;
        // tract runs held inputs as constants in the graph; onnxruntime is fed them on every
        // run (see `OrtModel::fixed`).
        if !options.fixed_inputs.is_empty() && runtime == RuntimeKind::Tract {
            copy = Some(with_fixed_inputs(model, &options.fixed_inputs)?);
        }
        if let Some(output) = &options.output {
            copy = Some(with_first_output(copy.as_ref().unwrap_or(model), output)?);
        }
        let model = copy.as_ref().unwrap_or(model);
        Ok(match runtime {
            RuntimeKind::Tract => RunnableModel::Tract(TractModel::build(
                model,
                model_dir,
                input_shape,
                extra_outputs,
            )?),
            RuntimeKind::OnnxRuntime => RunnableModel::OnnxRuntime(OrtModel::build(
                model,
                model_dir,
                input_shape,
                extra_outputs,
                options.threads,
                &options.fixed_inputs,
            )?),
        })
    }

    /// Names of the outputs, in order: the model's first output, then the extra tensors.
    pub fn output_names(&self) -> &[String] {
        match self {
            RunnableModel::Tract(m) => &m.output_names,
            RunnableModel::OnnxRuntime(m) => &m.output_names,
        }
    }
}

impl Runnable for RunnableModel {
    fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        match self {
            RunnableModel::Tract(m) => m.run(sample),
            RunnableModel::OnnxRuntime(m) => m.run(sample),
        }
    }

    fn input_shape(&self) -> &[usize] {
        match self {
            RunnableModel::Tract(m) => &m.input_shape,
            RunnableModel::OnnxRuntime(m) => &m.input_shape,
        }
    }

    fn runtime(&self) -> RuntimeKind {
        match self {
            RunnableModel::Tract(_) => RuntimeKind::Tract,
            RunnableModel::OnnxRuntime(_) => RuntimeKind::OnnxRuntime,
        }
    }

    fn threads(&self) -> usize {
        match self {
            RunnableModel::Tract(_) => 1,
            RunnableModel::OnnxRuntime(m) => m.threads,
        }
    }
}

impl Runnable for TractModel {
    fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        TractModel::run(self, sample)
    }

    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    fn runtime(&self) -> RuntimeKind {
        RuntimeKind::Tract
    }

    fn threads(&self) -> usize {
        1
    }
}

impl Runnable for OrtModel {
    fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        OrtModel::run(self, sample)
    }

    fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    fn runtime(&self) -> RuntimeKind {
        RuntimeKind::OnnxRuntime
    }

    fn threads(&self) -> usize {
        self.threads
    }
}

/// A copy of `model` in which each input of `fixed` is a constant (an initializer of its
/// declared element type, shape and value) instead of a graph input.
pub fn with_fixed_inputs(model: &ModelProto, fixed: &[FixedInput]) -> Result<ModelProto> {
    use crate::model::dtype::DType;
    use crate::model::proto::TensorProto;
    let bad = |reason: String| crate::error::Error::InvalidArgument {
        what: "input value",
        reason,
    };
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| bad("the model has no graph".to_owned()))?;
    for input in fixed {
        let position = graph
            .input
            .iter()
            .position(|i| i.name() == input.name)
            .ok_or_else(|| bad(format!("the model has no input `{}`", input.name)))?;
        let info = graph.input.remove(position);
        let dtype = match info.type_.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => DType(t.elem_type()),
            _ => return Err(bad(format!("input `{}` is not a tensor", input.name))),
        };
        let count: usize = input.shape.iter().product();
        let v = input.value;
        let one: Vec<u8> = match dtype {
            DType::FLOAT32 => (v as f32).to_le_bytes().to_vec(),
            DType::FLOAT64 => v.to_le_bytes().to_vec(),
            DType::FLOAT16 => half::f16::from_f64(v).to_le_bytes().to_vec(),
            DType::BFLOAT16 => half::bf16::from_f64(v).to_le_bytes().to_vec(),
            DType::INT64 => (v as i64).to_le_bytes().to_vec(),
            DType::INT32 => (v as i32).to_le_bytes().to_vec(),
            DType::INT16 => (v as i16).to_le_bytes().to_vec(),
            DType::INT8 => (v as i8).to_le_bytes().to_vec(),
            DType::UINT64 => (v as u64).to_le_bytes().to_vec(),
            DType::UINT32 => (v as u32).to_le_bytes().to_vec(),
            DType::UINT16 => (v as u16).to_le_bytes().to_vec(),
            DType::UINT8 => (v as u8).to_le_bytes().to_vec(),
            DType::BOOL => vec![u8::from(v != 0.0)],
            other => {
                return Err(bad(format!(
                    "input `{}` is {}; only numeric inputs can be held at a value",
                    input.name,
                    other.name()
                )));
            }
        };
        let mut tensor = TensorProto::new();
        tensor.set_name(input.name.clone());
        tensor.set_data_type(dtype.0);
        tensor.dims = input.shape.iter().map(|&d| d as i64).collect();
        tensor.set_raw_data(one.repeat(count));
        graph.initializer.push(tensor);
    }
    Ok(model)
}

/// A copy of `model` whose first graph output is `name`: moved to the front when it is a
/// graph output, added when it is an intermediate tensor.
pub fn with_first_output(model: &ModelProto, name: &str) -> Result<ModelProto> {
    let mut model = model.clone();
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| crate::error::Error::InvalidArgument {
            what: "output",
            reason: "the model has no graph".to_owned(),
        })?;
    if let Some(position) = graph.output.iter().position(|o| o.name() == name) {
        let output = graph.output.remove(position);
        graph.output.insert(0, output);
    } else if graph
        .node
        .iter()
        .any(|n| n.output.iter().any(|o| o == name))
    {
        let mut info = crate::model::proto::ValueInfoProto::new();
        info.set_name(name.to_owned());
        graph.output.insert(0, info);
    } else {
        let outputs: Vec<String> = graph
            .output
            .iter()
            .map(|o| format!("`{}`", o.name()))
            .collect();
        return Err(crate::error::Error::InvalidArgument {
            what: "output",
            reason: format!(
                "the model has no tensor `{name}` (its outputs: {})",
                outputs.join(", ")
            ),
        });
    }
    Ok(model)
}

/// The message for a model without exactly one (non-initializer) input.
pub(crate) fn one_input_only(view: &GraphView) -> String {
    let names: Vec<String> = view
        .inputs
        .iter()
        .map(|i| format!("`{}`", i.name))
        .collect();
    if names.is_empty() {
        "the model has no input; only models with exactly one input are evaluated for now"
            .to_owned()
    } else {
        format!(
            "the model has {} inputs ({}); the data feeds one: give the others a value (--input-value NAME=V, with --input-shape NAME=DIMS where its shape is not fixed)",
            names.len(),
            names.join(", ")
        )
    }
}

/// Whether the declared shape of the main graph's first input (in `view`) is exactly `shape`.
pub(crate) fn declares_shape(view: &GraphView, shape: &[usize]) -> bool {
    let Some(input) = view.inputs.first() else {
        return false;
    };
    input.shape.as_ref().is_some_and(|dims| {
        dims.len() == shape.len()
            && dims
                .iter()
                .zip(shape)
                .all(|(d, &s)| matches!(d, Dim::Known(v) if *v == s as i64))
    })
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;

    use super::*;
    use crate::model::proto::Message;

    fn fixture(name: &str) -> (Vec<u8>, ModelProto) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let model = ModelProto::parse_from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        (bytes, model)
    }

    /// tract with only the input fact set, as before symbolic dims were handled.
    fn tract_as_stored(bytes: &[u8], shape: &[usize]) -> TractResult<()> {
        let mut model = tract_onnx::onnx().model_for_read(&mut &bytes[..])?;
        model.set_input_fact(0, f32::fact(shape).into())?;
        model.into_optimized()?.into_runnable()?;
        Ok(())
    }

    #[test]
    fn stale_symbolic_facts_are_dropped_for_a_concrete_shape() {
        let (bytes, model) = fixture("runtimes/symbolic_chain.onnx");
        let shape = [1, 3, 16, 16];
        // The fixture's stored intermediate facts (`N`, `H`, ...) clash with a concrete input.
        let clash = tract_as_stored(&bytes, &shape)
            .err()
            .map(|e| e.root_cause().to_string());
        assert!(
            clash.as_deref().is_some_and(|c| c.contains("unify")),
            "{clash:?}"
        );
        let fixed = with_concrete_input(&model, &shape);
        let graph = fixed.graph.as_ref().unwrap_or_else(|| panic!("graph"));
        assert!(graph.value_info.is_empty());
        let view = GraphView::new(&fixed);
        assert!(declares_shape(&view, &shape));
        assert_eq!(
            view.outputs[0].shape,
            Some(vec![Dim::Known(1), Dim::Known(5)])
        );
        let fixed_bytes = fixed.write_to_bytes().unwrap_or_else(|e| panic!("{e}"));
        tract_as_stored(&fixed_bytes, &shape).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(!declares_shape(&GraphView::new(&model), &shape));
    }
}
