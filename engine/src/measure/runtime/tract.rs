//! Running models with tract: a model built from an ONNX protobuf (the exact bytes an export
//! writes), fixed to a concrete input shape, run sample by sample.
//!
//! When tract cannot run a model, the error names the op and the node and suggests
//! onnxruntime; tract's own analysis text is reduced to its root cause.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::model::dtype::DType;
use crate::model::graph::GraphView;
use crate::model::proto::{Message, ModelProto};
use crate::model::shapes::tract_supports_op;

const RUNTIME: &str = "tract";

/// What to tell a user whose model tract cannot run.
const TRY_ORT: &str = "onnxruntime may run it: use `--runtime onnxruntime`";

/// Longest root cause quoted from tract.
const MAX_CAUSE: usize = 240;

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        runtime: RUNTIME,
        reason: reason.to_string(),
    }
}

/// The first line of `text`, at most [`MAX_CAUSE`] characters.
fn short(text: &str) -> String {
    let line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_end_matches('.');
    if line.chars().count() > MAX_CAUSE {
        let cut: String = line.chars().take(MAX_CAUSE).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

fn tract_error(context: &str, error: &TractError) -> Error {
    let root = short(&error.root_cause().to_string());
    let top = short(&error.to_string());
    let reason = if root == top {
        format!("{context}: {top}")
    } else {
        format!("{context}: {top}: {root}")
    };
    runtime_error(reason)
}

/// The ONNX node a tract error is about, from the `node #12 "name" Op` contexts tract adds.
fn failing_node(error: &TractError) -> Option<String> {
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let at = text.find("node #")?;
        let rest = &text[at..];
        let open = rest.find('"')?;
        let close = rest[open + 1..].find('"')?;
        Some(rest[open + 1..open + 1 + close].to_owned())
    })
}

/// A readable error for a model tract failed to analyse, optimize or plan: the node (its ONNX
/// name and op) when tract says which, tract's root cause, and the onnxruntime suggestion.
fn analysis_error(stage: &str, error: &TractError, view: &GraphView) -> Error {
    let root = short(&error.root_cause().to_string());
    let node = failing_node(error).map(|typed| {
        // Typed nodes are named after the ONNX node, with a suffix for the parts an op was
        // split into (`conv1.bias`): find the ONNX node by name, output, or prefix.
        let found = view
            .main_nodes()
            .find(|n| n.name == typed || n.outputs.first().is_some_and(|o| *o == typed))
            .or_else(|| {
                view.main_nodes()
                    .filter(|n| typed.starts_with(&format!("{}.", n.name)))
                    .max_by_key(|n| n.name.len())
            });
        match found {
            Some(n) => format!("node `{}` ({})", n.name, n.op_type),
            None => format!("node `{typed}`"),
        }
    });
    let reason = match node {
        Some(node) => format!("{stage} failed at {node}: {root}; {TRY_ORT}"),
        None => format!("{stage} failed: {root}; {TRY_ORT}"),
    };
    runtime_error(reason)
}

/// The ops of `view` that tract does not implement, with their first node, as one message.
fn unsupported_ops(view: &GraphView) -> Option<String> {
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    for node in &view.nodes {
        if tract_supports_op(&node.op_type) {
            continue;
        }
        let op = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        match seen.iter_mut().find(|(o, _, _)| *o == op) {
            Some(entry) => entry.2 += 1,
            None => {
                let place = if node.graph.is_empty() {
                    format!("node `{}`", node.name)
                } else {
                    format!("node `{}` in subgraph `{}`", node.name, node.graph)
                };
                seen.push((op, place, 1));
            }
        }
    }
    if seen.is_empty() {
        return None;
    }
    let listed: Vec<String> = seen
        .iter()
        .map(|(op, place, count)| {
            if *count > 1 {
                format!("`{op}` ({place} and {} more)", count - 1)
            } else {
                format!("`{op}` ({place})")
            }
        })
        .collect();
    Some(format!(
        "tract does not implement op {}; {TRY_ORT}",
        listed.join(", ")
    ))
}

/// A model ready to run in tract.
#[derive(Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    /// Shape of the input tensor, batch included (e.g. `[1, 1, 28, 28]`).
    pub input_shape: Vec<usize>,
    /// Element type of the input: samples (f32) are converted to it.
    input_type: DatumType,
    /// Names of the outputs, in order: the model's first output, then any extra tensors asked for.
    pub output_names: Vec<String>,
}

impl TractModel {
    /// Builds `model` for one f32 input of `input_shape`, with the model's first output plus
    /// the intermediate tensors named in `extra_outputs` (for calibration).
    ///
    /// A model whose input has symbolic dims is fixed to `input_shape` first (see
    /// [`super::with_concrete_input`]): the symbols are substituted and the stored shapes of
    /// intermediate values dropped, so tract's analysis does not clash with them.
    pub fn build(
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self> {
        let view = GraphView::new(model);
        if let Some(message) = unsupported_ops(&view) {
            return Err(runtime_error(message));
        }
        let size = crate::model::proto::Message::compute_size(model);
        // tract holds a folded constant several times over (the fold, the optimized model, the
        // plan): a quarter of the budget per constant.
        let hazards =
            crate::model::guard::hazards(model, crate::model::guard::memory_budget_bytes(size) / 4);
        if let Some(h) = hazards.first() {
            return Err(runtime_error(format!(
                "the model would crash, hang or exhaust memory in tract ({h}); {TRY_ORT}"
            )));
        }
        // BatchNormalization on an input of rank < 2 crashes tract's shape rule: the ranks are
        // inferred first with BatchNorm taken out.
        if view.nodes.iter().any(|n| n.op_type == "BatchNormalization") {
            let concrete = if super::declares_shape(&view, input_shape) {
                model.clone()
            } else {
                super::with_concrete_input(model, input_shape)
            };
            let mut warnings = Vec::new();
            let facts = crate::model::shapes::infer_shapes(&concrete, model_dir, &mut warnings);
            if let Some(problem) = crate::model::shapes::batchnorm_hazard(&concrete, &facts) {
                return Err(runtime_error(format!(
                    "the model would crash tract ({problem}); {TRY_ORT}"
                )));
            }
        }
        crate::model::guard::quietly(|| {
            Self::build_inner(model, &view, model_dir, input_shape, extra_outputs)
        })
        .unwrap_or_else(|_| {
            Err(runtime_error(format!(
                "tract crashed while preparing the model; {TRY_ORT}"
            )))
        })
    }

    fn build_inner(
        model: &ModelProto,
        view: &GraphView,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self> {
        let bytes = if super::declares_shape(view, input_shape) {
            model.write_to_bytes()
        } else {
            super::with_concrete_input(model, input_shape).write_to_bytes()
        }
        .map_err(runtime_error)?;
        let onnx = tract_onnx::onnx();
        let pb = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| tract_error("reading the model", &e))?;
        drop(bytes);
        let parsed = onnx
            .parse(&pb, model_dir.and_then(Path::to_str))
            .map_err(|e| analysis_error("loading the model", &e, view))?;
        drop(pb);
        let mut inference = parsed.model;
        if inference.input_outlets().map_or(0, <[_]>::len) != 1 {
            return Err(runtime_error(super::one_input_only(view)));
        }
        let input_type = input_datum_type(view)?;
        inference
            .set_input_fact(0, input_type.fact(input_shape).into())
            .map_err(|e| tract_error("setting the input shape", &e))?;
        let first_output = *inference
            .output_outlets()
            .map_err(|e| tract_error("reading outputs", &e))?
            .first()
            .ok_or_else(|| runtime_error("the model has no output"))?;
        let mut outputs = vec![first_output];
        let mut output_names = vec![
            inference
                .outlet_label(first_output)
                .unwrap_or("output")
                .to_owned(),
        ];
        for name in extra_outputs {
            let outlet = parsed
                .outlets_by_name
                .get(name)
                .ok_or_else(|| runtime_error(format!("no tensor called `{name}`")))?;
            outputs.push(*outlet);
            output_names.push(name.clone());
        }
        inference
            .select_output_outlets(&outputs)
            .map_err(|e| tract_error("selecting outputs", &e))?;
        let typed = inference
            .into_optimized()
            .map_err(|e| analysis_error("analysing the model", &e, view))?;
        let plan = typed
            .into_runnable()
            .map_err(|e| analysis_error("planning the model", &e, view))?;
        Ok(Self {
            plan,
            input_shape: input_shape.to_vec(),
            input_type,
            output_names,
        })
    }

    /// `sample` as the model's input tensor, in the input's element type (integer inputs such
    /// as token ids come as whole numbers in the f32 samples).
    fn input_tensor(&self, sample: &[f32]) -> Result<Tensor> {
        let input = Tensor::from_shape(&self.input_shape, sample)
            .map_err(|e| tract_error("shaping the input", &e))?;
        if self.input_type == DatumType::F32 {
            return Ok(input);
        }
        input
            .cast_to_dt(self.input_type)
            .map(std::borrow::Cow::into_owned)
            .map_err(|e| tract_error("converting the input", &e))
    }

    /// Runs `sample` `runs` times and returns the time spent in each of tract's (optimized)
    /// nodes, in milliseconds summed over the runs, with the node's name and op.
    pub fn profile(&self, sample: &[f32], runs: usize) -> Result<Vec<(String, String, f64)>> {
        let model = self.plan.model();
        let mut total_ms = vec![0f64; model.nodes().len()];
        for _ in 0..runs.max(1) {
            let input = self.input_tensor(sample)?;
            let mut state = self.plan.spawn().map_err(|e| tract_error("running", &e))?;
            state
                .run_plan_with_eval(tvec!(input.into()), |ctx, op_state, node, inputs| {
                    let start = std::time::Instant::now();
                    let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
                    total_ms[node.id] += start.elapsed().as_secs_f64() * 1e3;
                    out
                })
                .map_err(|e| tract_error("profiling", &e))?;
        }
        Ok(model
            .nodes()
            .iter()
            .map(|n| (n.name.clone(), n.op().name().to_string(), total_ms[n.id]))
            .collect())
    }

    /// Runs one sample (its values in C order, `input_shape` elements) and returns every
    /// output flattened.
    pub fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        let input = self.input_tensor(sample)?;
        let outputs = crate::model::guard::quietly(|| self.plan.run(tvec!(input.into())))
            .map_err(|_| {
                runtime_error(format!("tract crashed while running the model; {TRY_ORT}"))
            })?
            .map_err(|e| tract_error("running", &e))?;
        outputs
            .iter()
            .map(|t| {
                let t = t
                    .cast_to::<f32>()
                    .map_err(|e| tract_error("reading an output", &e))?;
                let view = t
                    .to_plain_array_view::<f32>()
                    .map_err(|e| tract_error("reading an output", &e))?;
                Ok(view.iter().copied().collect())
            })
            .collect()
    }
}

/// tract's element type for the model's data input (its first input), as declared.
fn input_datum_type(view: &GraphView) -> Result<DatumType> {
    let declared = view.inputs.first().and_then(|i| i.dtype);
    Ok(match declared {
        None | Some(DType::FLOAT32) => DatumType::F32,
        Some(DType::FLOAT64) => DatumType::F64,
        Some(DType::FLOAT16) => DatumType::F16,
        Some(DType::INT64) => DatumType::I64,
        Some(DType::INT32) => DatumType::I32,
        Some(DType::INT16) => DatumType::I16,
        Some(DType::INT8) => DatumType::I8,
        Some(DType::UINT8) => DatumType::U8,
        Some(DType::UINT16) => DatumType::U16,
        Some(DType::BOOL) => DatumType::Bool,
        Some(other) => {
            return Err(runtime_error(format!(
                "input `{}` is {}; data can feed float, integer and bool inputs",
                view.inputs.first().map_or("", |i| i.name.as_str()),
                other.name()
            )));
        }
    })
}
