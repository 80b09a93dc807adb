//! Running models with tract: a model built from an ONNX protobuf (the exact bytes an export
//! writes), fixed to a concrete input shape, run sample by sample.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::proto::{Message, ModelProto};

const RUNTIME: &str = "tract";

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        runtime: RUNTIME,
        reason: reason.to_string(),
    }
}

fn tract_error(context: &str, error: &TractError) -> Error {
    let root = error.root_cause().to_string();
    let top = error.to_string();
    let reason = if root == top {
        format!("{context}: {top}")
    } else {
        format!("{context}: {top}: {root}")
    };
    runtime_error(reason)
}

/// A model ready to run in tract.
#[derive(Clone)]
pub struct TractModel {
    plan: Arc<TypedRunnableModel>,
    /// Shape of the input tensor, batch included (e.g. `[1, 1, 28, 28]`).
    pub input_shape: Vec<usize>,
    /// Names of the outputs, in order: the model's first output, then any extra tensors asked for.
    pub output_names: Vec<String>,
}

impl TractModel {
    /// Builds `model` for one f32 input of `input_shape`, with the model's first output plus
    /// the intermediate tensors named in `extra_outputs` (for calibration).
    pub fn build(
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self> {
        catch_unwind(AssertUnwindSafe(|| {
            Self::build_inner(model, model_dir, input_shape, extra_outputs)
        }))
        .unwrap_or_else(|_| Err(runtime_error("tract crashed while preparing the model")))
    }

    fn build_inner(
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
    ) -> Result<Self> {
        let bytes = model.write_to_bytes().map_err(runtime_error)?;
        let onnx = tract_onnx::onnx();
        let pb = onnx
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| tract_error("reading the model", &e))?;
        let parsed = onnx
            .parse(&pb, model_dir.and_then(Path::to_str))
            .map_err(|e| tract_error("loading the model", &e))?;
        let mut inference = parsed.model;
        if inference.input_outlets().map_or(0, <[_]>::len) != 1 {
            return Err(runtime_error(
                "only models with exactly one input are evaluated for now",
            ));
        }
        inference
            .set_input_fact(0, f32::fact(input_shape).into())
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
        let typed = inference.into_optimized().map_err(|e| {
            let unsupported = e.to_string();
            tract_error("analysing the model", &e.context(unsupported))
        })?;
        let plan = typed
            .into_runnable()
            .map_err(|e| tract_error("planning", &e))?;
        Ok(Self {
            plan,
            input_shape: input_shape.to_vec(),
            output_names,
        })
    }

    /// Runs one sample (its values in C order, `input_shape` elements) and returns every
    /// output flattened.
    pub fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        let input = Tensor::from_shape(&self.input_shape, sample)
            .map_err(|e| tract_error("shaping the input", &e))?;
        let outputs = self
            .plan
            .run(tvec!(input.into()))
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
