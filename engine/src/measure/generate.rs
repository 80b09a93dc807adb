//! Inputs for a model run without data, chosen so that real models run out of the box: the
//! first input is fed generated samples (values in the range the model reads them in), its
//! symbolic batch is 1 and its other unknown dims take a stated default; every other input
//! is held at a value a model expects there (0 for states, 1 for masks, a constant the graph
//! compares it with for settings such as a sample rate). Every choice is listed, and a
//! setting the user gave always wins.

use std::collections::HashMap;

use crate::error::Result;
use crate::measure::dataset::Dataset;
use crate::model::dtype::DType;
use crate::model::graph::{Dim, ValueDesc};
use crate::model::load::LoadedModel;

use super::inputs::{InputSetting, resolve_input_shape};

/// How many inputs are generated when a model is evaluated without data: enough for output
/// statistics on generated inputs (which say nothing of accuracy), few enough that a large
/// model's weight-only export takes seconds.
pub const GENERATED_SAMPLES: usize = 16;

/// A spatial size for an image input's unknown height or width.
const DEFAULT_IMAGE_SIDE: usize = 224;
/// Any other unknown dim of an integer input (a number of tokens).
const DEFAULT_TOKENS: usize = 32;
/// ... of a float input (audio samples, frames): enough for the windows of audio models
/// (silero-vad takes 512 samples at 16 kHz).
const DEFAULT_LENGTH: usize = 512;

/// What [`auto_inputs`] chose.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AutoInputs {
    /// The user's settings plus the chosen ones (shape of the fed input, values of the others).
    pub settings: Vec<InputSetting>,
    /// The values the fed input's samples take: `(low, high, integer)`.
    pub range: (f32, f32, bool),
    /// Each automatic choice, for reports (`x: [1, 3, 224, 224] (batch 1, height 224 chosen)`).
    pub choices: Vec<String>,
}

/// Completes `given` so that `model` can run on generated inputs.
pub fn auto_inputs(model: &LoadedModel, given: &[InputSetting]) -> AutoInputs {
    let inputs = &model.graph.inputs;
    let setting = |name: &str| given.iter().find(|s| s.name == name);
    let mut out = AutoInputs {
        settings: given.to_vec(),
        range: (-1.0, 1.0, false),
        choices: Vec::new(),
    };
    // The data feeds the first input the user left without a value.
    let Some(fed) = inputs
        .iter()
        .find(|i| setting(&i.name).is_none_or(|s| s.value.is_none()))
    else {
        return out;
    };
    let declared = |i: &ValueDesc| -> Option<Vec<Dim>> {
        model
            .shapes
            .get(&i.name)
            .and_then(|f| f.shape.clone())
            .or_else(|| i.shape.clone())
    };
    // Symbol name → the size chosen for it (shared by every input that names it).
    let mut symbols: HashMap<String, usize> = HashMap::new();
    let fed_dims = declared(fed).unwrap_or_default();
    if let Some(shape) = setting(&fed.name).and_then(|s| s.shape.clone()) {
        for (d, &v) in fed_dims.iter().zip(&shape) {
            if let Dim::Symbol(s) = d {
                symbols.insert(s.clone(), v);
            }
        }
    } else if fed_dims.iter().any(|d| positive(d).is_none()) {
        let image = image_layout(&fed_dims);
        let integer_input = fed.dtype.is_some_and(is_integer);
        let mut why = Vec::new();
        let shape: Vec<usize> = fed_dims
            .iter()
            .enumerate()
            .map(|(axis, d)| {
                if let Some(v) = positive(d) {
                    return v;
                }
                let (v, what) = if axis == 0 && fed_dims.len() > 1 {
                    (1, "batch".to_owned())
                } else if let Some(&v) = symbol(d).and_then(|s| symbols.get(s)) {
                    (v, symbol(d).unwrap_or("?").to_owned())
                } else if image.is_some_and(|(h, w)| axis == h || axis == w) {
                    (
                        DEFAULT_IMAGE_SIDE,
                        if image.is_some_and(|(h, _)| axis == h) {
                            "height"
                        } else {
                            "width"
                        }
                        .to_owned(),
                    )
                } else if integer_input {
                    (DEFAULT_TOKENS, format!("dim {axis}"))
                } else {
                    (DEFAULT_LENGTH, format!("dim {axis}"))
                };
                if let Some(s) = symbol(d) {
                    symbols.insert(s.to_owned(), v);
                }
                why.push(format!("{what} {v}"));
                v
            })
            .collect();
        out.choices.push(format!(
            "`{}` at {shape:?} ({} chosen)",
            fed.name,
            why.join(", ")
        ));
        push_shape(&mut out.settings, &fed.name, shape);
    }
    out.range = value_range(model, fed);
    if out.range.2 {
        out.choices.push(format!(
            "`{}` values: integers in [{}, {}]",
            fed.name, out.range.0, out.range.1
        ));
    }
    for other in inputs.iter().filter(|i| i.name != fed.name) {
        let given_value = setting(&other.name).and_then(|s| s.value);
        let given_shape = setting(&other.name).and_then(|s| s.shape.clone());
        let dims = declared(other).unwrap_or_default();
        let mut chosen = Vec::new();
        if given_shape.is_none() && dims.iter().any(|d| positive(d).is_none()) {
            let shape: Vec<usize> = dims
                .iter()
                .map(|d| {
                    positive(d)
                        .or_else(|| symbol(d).and_then(|s| symbols.get(s)).copied())
                        .unwrap_or(1)
                })
                .collect();
            chosen.push(format!("at {shape:?}"));
            push_shape(&mut out.settings, &other.name, shape);
        }
        if given_value.is_none() {
            let (value, why) = held_value(model, other);
            chosen.push(format!("held at {value} ({why})"));
            match out.settings.iter_mut().find(|s| s.name == other.name) {
                Some(s) => s.value = Some(value),
                None => out.settings.push(InputSetting::value(&other.name, value)),
            }
        }
        if !chosen.is_empty() {
            out.choices
                .push(format!("`{}` {}", other.name, chosen.join(", ")));
        }
    }
    out
}

fn is_integer(d: DType) -> bool {
    ![
        DType::FLOAT32,
        DType::FLOAT16,
        DType::FLOAT64,
        DType::BFLOAT16,
    ]
    .contains(&d)
}

fn positive(d: &Dim) -> Option<usize> {
    d.known()
        .filter(|&v| v > 0)
        .and_then(|v| usize::try_from(v).ok())
}

fn symbol(d: &Dim) -> Option<&str> {
    match d {
        Dim::Symbol(s) => Some(s),
        _ => None,
    }
}

fn push_shape(settings: &mut Vec<InputSetting>, name: &str, shape: Vec<usize>) {
    match settings.iter_mut().find(|s| s.name == name) {
        Some(s) => s.shape = Some(shape),
        None => settings.push(InputSetting::shape(name, shape)),
    }
}

/// The height and width axes of a 4-D image input (NCHW or NHWC with 1–4 channels).
fn image_layout(dims: &[Dim]) -> Option<(usize, usize)> {
    if dims.len() != 4 {
        return None;
    }
    let channels = |d: &Dim| d.known().is_some_and(|c| (1..=4).contains(&c));
    if channels(&dims[1]) {
        Some((2, 3))
    } else if channels(&dims[3]) {
        Some((1, 2))
    } else {
        None
    }
}

/// The tensors `name` reaches through ops that keep its values (casts, reshapes).
fn value_aliases<'a>(model: &'a LoadedModel, name: &'a str) -> Vec<&'a str> {
    const KEEP: &[&str] = &[
        "Cast",
        "Reshape",
        "Unsqueeze",
        "Squeeze",
        "Flatten",
        "Identity",
        "Transpose",
        "Expand",
    ];
    let mut names = vec![name];
    let mut i = 0;
    while i < names.len() && names.len() < 32 {
        for &n in model
            .graph
            .consumers
            .get(names[i])
            .map_or(&[][..], Vec::as_slice)
        {
            let node = &model.graph.nodes[n];
            if KEEP.contains(&node.op_type.as_str())
                && node.inputs.first().map(String::as_str) == Some(names[i])
            {
                names.extend(node.outputs.first().map(String::as_str));
            }
        }
        i += 1;
    }
    names
}

/// The range the fed input's values are generated in: indices of an embedding table read
/// through it (`[0, rows − 1]`, integers), integers compared with a constant table (a one-hot:
/// the table's range), other integers `[0, 15]`, floats `[-1, 1]`.
fn value_range(model: &LoadedModel, input: &ValueDesc) -> (f32, f32, bool) {
    let integer = input.dtype.is_some_and(|d| {
        d != DType::FLOAT32 && d != DType::FLOAT16 && d != DType::FLOAT64 && d != DType::BFLOAT16
    });
    for alias in value_aliases(model, &input.name) {
        for &n in model
            .graph
            .consumers
            .get(alias)
            .map_or(&[][..], Vec::as_slice)
        {
            let node = &model.graph.nodes[n];
            // A one-hot over a vocabulary: `Equal(ids, table)` against a constant of several
            // values (magika compares its bytes with 0..256) — the ids range over the table.
            if integer
                && node.op_type == "Equal"
                && let Some(table) = node
                    .inputs
                    .iter()
                    .find(|t| t.as_str() != alias)
                    .and_then(|t| model.weight(t))
                    .and_then(|w| w.values.as_ref())
                    .filter(|v| v.len() > 1 && v.iter().all(|x| x.is_finite()))
            {
                let lo = table.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = table.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                return (lo, hi, true);
            }
            if node.op_type != "Gather" || node.inputs.get(1).map(String::as_str) != Some(alias) {
                continue;
            }
            let axis = node
                .attributes
                .iter()
                .find(|a| a.name == "axis")
                .and_then(|a| a.value.parse::<i64>().ok())
                .unwrap_or(0);
            let Some(table) = node.inputs.first().and_then(|t| model.weight(t)) else {
                continue;
            };
            let axis = if axis < 0 {
                axis + table.dims.len() as i64
            } else {
                axis
            };
            if let Some(&rows) = usize::try_from(axis).ok().and_then(|a| table.dims.get(a))
                && rows > 0
            {
                return (0.0, (rows - 1) as f32, true);
            }
        }
    }
    if integer {
        (0.0, 15.0, true)
    } else {
        (-1.0, 1.0, false)
    }
}

/// The value an input the data does not feed is held at, and why.
fn held_value(model: &LoadedModel, input: &ValueDesc) -> (f64, String) {
    let lower = input.name.to_ascii_lowercase();
    if input.dtype == Some(DType::BOOL) || lower.contains("mask") {
        return (1.0, "a mask: everything attended".to_owned());
    }
    // A setting the graph compares with constants (e.g. a sample rate tested against 16000).
    for alias in value_aliases(model, &input.name) {
        for &n in model
            .graph
            .consumers
            .get(alias)
            .map_or(&[][..], Vec::as_slice)
        {
            let node = &model.graph.nodes[n];
            if !matches!(
                node.op_type.as_str(),
                "Equal" | "Greater" | "Less" | "GreaterOrEqual" | "LessOrEqual"
            ) {
                continue;
            }
            let other = node.inputs.iter().find(|t| t.as_str() != alias);
            if let Some(v) = other
                .and_then(|t| model.weight(t))
                .and_then(|w| w.values.as_ref())
                .and_then(|v| (v.len() == 1).then(|| v[0]))
            {
                return (f64::from(v), format!("the graph compares it with {v}"));
            }
        }
    }
    (0.0, "a state or setting: zeros".to_owned())
}

/// [`GENERATED_SAMPLES`] inputs for the fed input of `model` under `auto` (its shape as the
/// settings resolve it, its values in `auto.range`), described with every automatic choice.
pub fn generated_for(model: &LoadedModel, auto: &AutoInputs) -> Result<Dataset> {
    let shape = resolve_input_shape(model, None, &auto.settings)?;
    let sample = match shape.split_first() {
        Some((1, rest)) if !rest.is_empty() => rest,
        _ => &shape[..],
    };
    // A declared input of absurd size must not be allocated (e.g. [1, 2^38, 4]).
    let elements = sample
        .iter()
        .try_fold(GENERATED_SAMPLES as u64, |a, &d| a.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    crate::model::guard::check_allocation(
        &format!("{GENERATED_SAMPLES} generated inputs of shape {sample:?}"),
        elements,
        4,
        model.file_size_bytes,
    )?;
    let mut data = crate::measure::dataset::generated_inputs(sample, GENERATED_SAMPLES, 0);
    let (lo, hi, integer) = auto.range;
    if integer || (lo, hi) != (-1.0, 1.0) {
        for v in data.inputs.iter_mut() {
            let unit = (*v + 1.0) / 2.0;
            let x = lo + unit * (hi - lo + if integer { 1.0 } else { 0.0 });
            *v = if integer { x.floor().min(hi) } else { x };
        }
        data.description = format!(
            "{GENERATED_SAMPLES} generated inputs ({} in [{lo}, {hi}], seed 0) — not real data",
            if integer { "integers" } else { "uniform" }
        );
    }
    if !auto.choices.is_empty() {
        data.description = format!("{}; {}", data.description, auto.choices.join("; "));
    }
    Ok(data)
}
