//! Model inputs: the settings given for them (shapes for symbolic dims, values for inputs the
//! data does not feed), their parsing from the command line, and their resolution against a
//! model and its data into the input the data feeds, its concrete shape and the fixed others.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::measure::dataset::Dataset;
use crate::measure::runtime::FixedInput;
use crate::model::load::LoadedModel;

/// What is given for one model input: a concrete shape (batch included), a value to hold it
/// at for every sample, or both (from the command line's `--input-shape name=1,3,224,224` and
/// `--input-value name=0`, or a form in the studio).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InputSetting {
    pub name: String,
    pub shape: Option<Vec<usize>>,
    pub value: Option<f64>,
}

impl InputSetting {
    /// A concrete shape for input `name`.
    pub fn shape(name: &str, dims: Vec<usize>) -> Self {
        Self {
            name: name.to_owned(),
            shape: Some(dims),
            value: None,
        }
    }

    /// A constant value for input `name`.
    pub fn value(name: &str, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            shape: None,
            value: Some(value),
        }
    }
}

/// Settings of model inputs (shapes for symbolic dims, values for inputs the data does not
/// feed); empty when the model's one input is fully described by the model or the data.
pub type InputShapes = [InputSetting];

fn split_setting<'t>(text: &'t str, example: &str) -> Result<(&'t str, &'t str)> {
    let bad = |reason: String| Error::InvalidArgument {
        what: "input setting",
        reason,
    };
    let (name, rest) = text
        .split_once('=')
        .ok_or_else(|| bad(format!("`{text}` is not NAME=… (e.g. {example})")))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(bad(format!("`{text}` has no input name before `=`")));
    }
    Ok((name, rest.trim()))
}

/// Parses `name=1,3,224,224` (dims separated by `,` or `x`; every dim at least 1; `name=`
/// alone is a scalar).
pub fn parse_input_shape(text: &str) -> Result<InputSetting> {
    let (name, dims) = split_setting(text, "input=1,3,224,224")?;
    if dims.is_empty() {
        return Ok(InputSetting::shape(name, Vec::new()));
    }
    let dims: Vec<usize> = dims
        .split([',', 'x'])
        .map(|d| match d.trim().parse::<usize>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(Error::InvalidArgument {
                what: "input shape",
                reason: format!(
                    "`{text}`: `{}` is not a dimension (a whole number of at least 1)",
                    d.trim()
                ),
            }),
        })
        .collect::<Result<_>>()?;
    Ok(InputSetting::shape(name, dims))
}

/// Parses `name=16000` (a number; `true`/`false` for booleans).
pub fn parse_input_value(text: &str) -> Result<InputSetting> {
    let (name, value) = split_setting(text, "sr=16000")?;
    let value = match value {
        "true" => 1.0,
        "false" => 0.0,
        v => v
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| Error::InvalidArgument {
                what: "input value",
                reason: format!("`{text}`: `{v}` is not a number"),
            })?,
    };
    Ok(InputSetting::value(name, value))
}

/// Combines settings of the same input (a shape and a value); giving either twice is an error.
pub fn merge_input_settings(settings: Vec<InputSetting>) -> Result<Vec<InputSetting>> {
    let mut merged: Vec<InputSetting> = Vec::new();
    for s in settings {
        match merged.iter_mut().find(|m| m.name == s.name) {
            None => merged.push(s),
            Some(m) => {
                if (m.shape.is_some() && s.shape.is_some())
                    || (m.value.is_some() && s.value.is_some())
                {
                    return Err(Error::InvalidArgument {
                        what: "input setting",
                        reason: format!("input `{}` is given twice", s.name),
                    });
                }
                m.shape = m.shape.take().or(s.shape);
                m.value = m.value.take().or(s.value);
            }
        }
    }
    Ok(merged)
}

/// The model's input shape with every dimension concrete (batch 1), from the analysis, else
/// from `data`. See [`resolve_input_shape`] to give shapes explicitly.
pub fn concrete_input_shape(model: &LoadedModel, data: Option<&Dataset>) -> Result<Vec<usize>> {
    resolve_input_shape(model, data, &[])
}

/// How a model's inputs are fed in a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedInputs {
    /// The input the data feeds.
    pub input: String,
    /// Its concrete shape, batch included.
    pub shape: Vec<usize>,
    /// The other inputs, held at a value.
    pub fixed: Vec<FixedInput>,
}

/// [`resolve_inputs`]' shape of the input the data feeds.
pub fn resolve_input_shape(
    model: &LoadedModel,
    data: Option<&Dataset>,
    settings: &InputShapes,
) -> Result<Vec<usize>> {
    resolve_inputs(model, data, settings).map(|r| r.shape)
}

/// Which input the data feeds and at what shape, and the values of the others.
///
/// The data feeds the one input without a value in `settings` (a one-input model: its input).
/// Its shape is
/// 1. the shape given for it in `settings` (it must agree with the known declared dims);
/// 2. the declared shape, when every dim is known;
/// 3. batch 1 followed by the shape of a sample of `data`, filling the symbolic dims (known
///    dims must agree).
///
/// Every other input needs a value, and a shape unless its declared one is fully known.
/// Otherwise an [`Error::InvalidArgument`] naming the input, its declared shape, and how to
/// give what is missing (`--input-shape NAME=DIMS`, `--input-value NAME=V`).
pub fn resolve_inputs(
    model: &LoadedModel,
    data: Option<&Dataset>,
    settings: &InputShapes,
) -> Result<ResolvedInputs> {
    let bad = |reason: String| Error::InvalidArgument {
        what: "input shape",
        reason,
    };
    let inputs = &model.graph.inputs;
    if inputs.is_empty() {
        return Err(Error::InvalidArgument {
            what: "model",
            reason: "it has no input".to_owned(),
        });
    }
    let listed = || {
        inputs
            .iter()
            .map(|i| format!("`{}`", i.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for s in settings {
        if !inputs.iter().any(|i| i.name == s.name) {
            return Err(bad(format!(
                "the model has no input `{}` (its inputs: {})",
                s.name,
                listed()
            )));
        }
    }
    let setting = |name: &str| settings.iter().find(|s| s.name == name);
    let fed: Vec<&crate::model::graph::ValueDesc> = inputs
        .iter()
        .filter(|i| setting(&i.name).is_none_or(|s| s.value.is_none()))
        .collect();
    let input = match fed.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(format!(
                "every input ({}) has a value; one must be left for the data",
                listed()
            )));
        }
        several => {
            let names: Vec<String> = several.iter().map(|i| format!("`{}`", i.name)).collect();
            return Err(bad(format!(
                "the model has {} inputs without a value ({}); the data feeds one: give the others a value (--input-value NAME=V, and --input-shape NAME=DIMS where their shape is not fixed)",
                names.len(),
                names.join(", ")
            )));
        }
    };
    let declared_of = |i: &crate::model::graph::ValueDesc| {
        model
            .shapes
            .get(&i.name)
            .and_then(|f| f.shape.clone())
            .or_else(|| i.shape.clone())
    };
    // Where `dims` disagrees with a known declared dim, which one.
    let clash =
        |declared: &Option<Vec<crate::model::graph::Dim>>, dims: &[usize]| -> Option<String> {
            let declared = declared.as_ref()?;
            if declared.len() != dims.len() {
                return Some(format!("rank {} instead of {}", dims.len(), declared.len()));
            }
            declared
                .iter()
                .zip(dims)
                .enumerate()
                .find_map(|(i, (d, &v))| {
                    // Exporters write -1 (or 0) for a dynamic dim: only positive dims are fixed.
                    d.known()
                        .filter(|&k| k > 0 && k != v as i64)
                        .map(|k| format!("dim {i} is {v} but the model fixes it to {k}"))
                })
        };
    let fully_known = |declared: &Option<Vec<crate::model::graph::Dim>>| -> Option<Vec<usize>> {
        declared
            .as_ref()?
            .iter()
            .map(|d| {
                d.known()
                    .filter(|&v| v > 0)
                    .and_then(|v| usize::try_from(v).ok())
            })
            .collect()
    };
    let example = |declared: &Option<Vec<crate::model::graph::Dim>>| -> String {
        let dims: Vec<String> = declared
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|d| {
                d.known()
                    .filter(|&v| v > 0)
                    .map_or("N".to_owned(), |v| v.to_string())
            })
            .collect();
        if dims.is_empty() {
            "1,3,224,224".to_owned()
        } else {
            dims.join(",")
        }
    };

    let mut fixed = Vec::new();
    for i in inputs.iter().filter(|i| i.name != input.name) {
        let Some(s) = setting(&i.name) else { continue };
        let Some(value) = s.value else { continue };
        let declared = declared_of(i);
        let shape = match &s.shape {
            Some(dims) => {
                if let Some(problem) = clash(&declared, dims) {
                    return Err(bad(format!(
                        "input `{}` is declared {}; the shape given, {dims:?}, does not fit it: {problem}",
                        i.name,
                        crate::model::graph::format_shape(declared.as_deref())
                    )));
                }
                dims.clone()
            }
            None => fully_known(&declared).ok_or_else(|| {
                bad(format!(
                    "input `{}` has shape {}; give the shape to hold it at (--input-shape {}={})",
                    i.name,
                    crate::model::graph::format_shape(declared.as_deref()),
                    i.name,
                    example(&declared)
                ))
            })?,
        };
        fixed.push(FixedInput {
            name: i.name.clone(),
            shape,
            value,
        });
    }

    let declared = declared_of(input);
    let shown = crate::model::graph::format_shape(declared.as_deref());
    let done = |shape: Vec<usize>| ResolvedInputs {
        input: input.name.clone(),
        shape,
        fixed: fixed.clone(),
    };
    if let Some(dims) = setting(&input.name).and_then(|s| s.shape.as_ref()) {
        if let Some(problem) = clash(&declared, dims) {
            return Err(bad(format!(
                "input `{}` is declared {shown}; the shape given, {dims:?}, does not fit it: {problem}",
                input.name
            )));
        }
        return Ok(done(dims.clone()));
    }
    if let Some(known) = fully_known(&declared) {
        return Ok(done(known));
    }
    if let Some(data) = data {
        let mut shape = vec![1];
        shape.extend(&data.sample_shape);
        // A model input without a batch dim takes a sample as it is.
        if declared
            .as_ref()
            .is_some_and(|d| d.len() == data.sample_shape.len())
        {
            shape.remove(0);
        }
        if let Some(problem) = clash(&declared, &shape) {
            return Err(bad(format!(
                "input `{}` is declared {shown} but the data's samples are {:?} ({problem}); give its shape with --input-shape {}=DIMS",
                input.name, data.sample_shape, input.name
            )));
        }
        return Ok(done(shape));
    }
    Err(bad(format!(
        "input `{}` has shape {shown} with unknown dimensions; give data of a fixed shape or a concrete shape (--input-shape {}={})",
        input.name,
        input.name,
        example(&declared)
    )))
}

/// Inputs generated for `model` when no data is given (fidelity only): the first input fed
/// [`super::generate::GENERATED_SAMPLES`] samples, every other input held at a value, unknown dims
/// chosen — see [`super::generate::auto_inputs`]. Returns the data and the settings to run it with
/// (`settings` plus the automatic choices, which the data's description lists).
pub fn generated_data(
    model: &LoadedModel,
    settings: &InputShapes,
) -> Result<(Dataset, Vec<InputSetting>)> {
    let auto = super::generate::auto_inputs(model, settings);
    let data = super::generate::generated_for(model, &auto)?;
    Ok((data, auto.settings))
}
