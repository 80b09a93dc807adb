//! Checking a split: the original against head → tail, sample by sample, in each runtime.
//!
//! The runtimes feed one data input per model, so the tail (which takes every sent tensor)
//! is run with one of its inputs fed and the others made initializers holding the values the
//! head computed for that sample (rebuilt per sample when it has several inputs). What is
//! sent is passed through the transfer format first: float32 as is, float16 rounded,
//! int8 quantized per tensor and dequantized.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use super::{SplitModels, Transfer};
use crate::error::{Error, Result};
use crate::job::{CancelToken, ProgressSink, report};
use crate::measure::dataset::Dataset;
use crate::measure::eval::{Difference, json_db, json_float, run_dataset_outputs};
use crate::measure::runtime::{BuildOptions, FixedInput, Runnable, RunnableModel, RuntimeKind};
use crate::model::dtype::DType;
use crate::model::load::LoadedModel;
use crate::model::proto::{ModelProto, TensorProto, type_proto};

/// The largest max abs error of a float32 transfer that passes.
pub const FP32_TOLERANCE: f64 = 1e-5;

/// What [`verify_split`] runs on.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions<'a> {
    /// Samples for the model's data input.
    pub data: &'a Dataset,
    /// The input the data feeds.
    pub input: &'a str,
    /// Its concrete shape, batch included.
    pub input_shape: &'a [usize],
    /// The other model inputs, held at a value.
    pub fixed_inputs: &'a [FixedInput],
    /// Runtimes to check in (one that is not available is reported as not run).
    pub runtimes: &'a [RuntimeKind],
    /// The format the sent tensors travel in.
    pub transfer: Transfer,
}

/// One graph output compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputCheck {
    pub name: String,
    /// `device` (an output of the head) or `server` (of the tail).
    pub computed_on: &'static str,
    #[serde(serialize_with = "json_float")]
    pub max_abs_error: f64,
    /// Output SQNR in dB against the original (`null`: identical).
    #[serde(serialize_with = "json_db")]
    pub sqnr_db: Option<f64>,
}

/// The check in one runtime.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuntimeCheck {
    pub runtime: &'static str,
    /// False when the runtime is not available or cannot run the original model (see
    /// `note`): nothing was compared.
    pub ran: bool,
    pub passed: bool,
    /// Largest |original − split| over every output and sample.
    #[serde(serialize_with = "json_float")]
    pub max_abs_error: f64,
    /// SQNR in dB of the split's outputs against the original's, over every output (`null`:
    /// identical).
    #[serde(serialize_with = "json_db")]
    pub sqnr_db: Option<f64>,
    /// What passing means here.
    pub criterion: String,
    /// Why it did not run or did not pass.
    pub note: Option<String>,
    pub outputs: Vec<OutputCheck>,
}

/// The result of [`verify_split`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitVerification {
    pub transfer: Transfer,
    pub samples: usize,
    /// Where the samples came from.
    pub data: String,
    /// True when the inputs were generated, not read: fidelity only.
    pub generated_inputs: bool,
    /// The tensors sent, in the tail's input order.
    pub sent: Vec<String>,
    /// Bytes sent per sample in the transfer format, when every size is known.
    pub sent_bytes_per_sample: Option<u64>,
    /// Every runtime that ran passed (and at least one ran).
    pub passed: bool,
    pub runtimes: Vec<RuntimeCheck>,
}

/// Runs the original model and head → tail on every sample of `options.data` in each runtime
/// of `options.runtimes` and compares every graph output.
///
/// With [`Transfer::Fp32`] a runtime passes when the max abs error is at most
/// [`FP32_TOLERANCE`]; with a lossy transfer when every output is finite (the SQNR says how
/// close). A runtime that is not available, or cannot run the original, is reported as not
/// run; one that runs the original but not a half fails with the error as its note.
pub fn verify_split(
    model: &LoadedModel,
    split: &SplitModels,
    options: &VerifyOptions<'_>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<SplitVerification> {
    let shapes = SentShapes::new(model, split, options)?;
    let sent_bytes_per_sample = shapes.bytes(options.transfer);
    let mut runtimes = Vec::new();
    for &runtime in options.runtimes {
        cancel.check()?;
        let criterion = match options.transfer {
            Transfer::Fp32 => format!("max abs error ≤ {FP32_TOLERANCE:e}"),
            lossy => format!("{lossy} transfer: every output finite (SQNR reported)"),
        };
        let not_run = |note: String| RuntimeCheck {
            runtime: runtime.name(),
            ran: false,
            passed: false,
            max_abs_error: f64::NAN,
            sqnr_db: None,
            criterion: criterion.clone(),
            note: Some(note),
            outputs: Vec::new(),
        };
        if let Err(e) = runtime.available() {
            runtimes.push(not_run(format!("not available: {e}")));
            continue;
        }
        let original = match run_original(model, options, runtime, progress, cancel) {
            Ok(o) => o,
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                runtimes.push(not_run(format!("cannot run the original model: {e}")));
                continue;
            }
        };
        let mut check = match run_split(model, split, options, &shapes, runtime, progress, cancel) {
            Ok(outputs) => compare(model, split, &original, &outputs, runtime, options.transfer),
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => RuntimeCheck {
                ran: true,
                note: Some(format!("the split does not run: {e}")),
                ..not_run(String::new())
            },
        };
        check.criterion = criterion;
        runtimes.push(check);
    }
    let passed = runtimes.iter().any(|r| r.ran) && runtimes.iter().all(|r| !r.ran || r.passed);
    Ok(SplitVerification {
        transfer: options.transfer,
        samples: options.data.len(),
        data: options.data.description.clone(),
        generated_inputs: options.data.generated,
        sent: split.sent.clone(),
        sent_bytes_per_sample,
        passed,
        runtimes,
    })
}

/// Per sample, per graph output name: values.
type Outputs = Vec<HashMap<String, Vec<f32>>>;

fn model_dir(model: &LoadedModel) -> Option<&Path> {
    model.path.parent()
}

fn output_names(proto: &ModelProto) -> Vec<String> {
    proto
        .graph
        .as_ref()
        .map(|g| g.output.iter().map(|o| o.name().to_owned()).collect())
        .unwrap_or_default()
}

/// `proto` built in `runtime` with every graph output selected, the data input fed.
fn build_all_outputs(
    proto: &ModelProto,
    dir: Option<&Path>,
    runtime: RuntimeKind,
    input_shape: &[usize],
    fixed: &[FixedInput],
) -> Result<(RunnableModel, Vec<String>)> {
    let names = output_names(proto);
    let inputs: Vec<&str> = proto
        .graph
        .as_ref()
        .map(|g| g.input.iter().map(|i| i.name()).collect())
        .unwrap_or_default();
    let fixed_inputs: Vec<FixedInput> = fixed
        .iter()
        .filter(|f| inputs.contains(&f.name.as_str()))
        .cloned()
        .collect();
    let build = BuildOptions {
        threads: 1,
        fixed_inputs,
        output: None,
    };
    let extra = names.get(1..).unwrap_or_default();
    let built = RunnableModel::build_with(runtime, proto, dir, input_shape, extra, &build)?;
    Ok((built, names))
}

fn by_name(names: &[String], runs: Vec<Vec<Vec<f32>>>) -> Outputs {
    runs.into_iter()
        .map(|outputs| names.iter().cloned().zip(outputs).collect())
        .collect()
}

fn run_original(
    model: &LoadedModel,
    options: &VerifyOptions<'_>,
    runtime: RuntimeKind,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Outputs> {
    report(progress, &format!("original in {runtime}"), 0, 1);
    let (built, names) = build_all_outputs(
        &model.proto,
        model_dir(model),
        runtime,
        options.input_shape,
        options.fixed_inputs,
    )?;
    let runs = run_dataset_outputs(&built, options.data, progress, cancel)?;
    Ok(by_name(&names, runs))
}

/// The concrete shape and type of every sent tensor at the data's input shape.
struct SentShapes {
    /// Per sent tensor (in `split.sent` order): its dims and element type.
    tensors: Vec<(Vec<usize>, DType)>,
}

impl SentShapes {
    fn new(model: &LoadedModel, split: &SplitModels, options: &VerifyOptions<'_>) -> Result<Self> {
        let concrete = model.with_input_shape(options.input_shape);
        let tail_inputs = split
            .tail
            .graph
            .as_ref()
            .map(|g| g.input.as_slice())
            .unwrap_or_default();
        let mut tensors = Vec::new();
        for name in &split.sent {
            let dtype = tail_inputs
                .iter()
                .find(|i| i.name() == name)
                .and_then(|i| i.type_.as_ref())
                .and_then(|t| match &t.value {
                    Some(type_proto::Value::TensorType(t)) => Some(DType(t.elem_type())),
                    _ => None,
                })
                .unwrap_or(DType::FLOAT32);
            let dims: Option<Vec<usize>> = if name == options.input {
                Some(options.input_shape.to_vec())
            } else if let Some(f) = options.fixed_inputs.iter().find(|f| &f.name == name) {
                Some(f.shape.clone())
            } else {
                concrete.shapes.get(name).and_then(|f| {
                    f.shape
                        .as_ref()?
                        .iter()
                        .map(|d| usize::try_from(d.known()?).ok())
                        .collect()
                })
            };
            let dims = dims.ok_or_else(|| Error::Device {
                what: format!("verifying the split at `{name}`"),
                reason: format!(
                    "the shape of `{name}` is not known at input shape {:?}, so it cannot be fed to the server half",
                    options.input_shape
                ),
            })?;
            tensors.push((dims, dtype));
        }
        Ok(Self { tensors })
    }

    fn bytes(&self, transfer: Transfer) -> Option<u64> {
        self.tensors.iter().try_fold(0u64, |a, (dims, dtype)| {
            let elements = dims.iter().product::<usize>() as u64;
            Some(a.saturating_add(transfer.bytes(Some(*dtype), elements)?))
        })
    }
}

/// Head → transfer → tail for every sample: per sample, every graph output by name.
fn run_split(
    model: &LoadedModel,
    split: &SplitModels,
    options: &VerifyOptions<'_>,
    shapes: &SentShapes,
    runtime: RuntimeKind,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Outputs> {
    let dir = model_dir(model);
    let head_inputs: Vec<String> = split
        .head
        .graph
        .as_ref()
        .map(|g| g.input.iter().map(|i| i.name().to_owned()).collect())
        .unwrap_or_default();
    if !head_inputs.iter().any(|i| i == options.input) {
        return Err(Error::Device {
            what: "verifying the split".to_owned(),
            reason: format!(
                "the device half does not read the data input `{}`; only splits whose device half reads it are run",
                options.input
            ),
        });
    }
    report(progress, &format!("device half in {runtime}"), 0, 1);
    let (head, head_names) = build_all_outputs(
        &split.head,
        dir,
        runtime,
        options.input_shape,
        options.fixed_inputs,
    )?;
    let head_runs = by_name(
        &head_names,
        run_dataset_outputs(&head, options.data, progress, cancel)?,
    );
    drop(head);
    // The tail's fed input: the first float tensor sent (else the first).
    let fed = shapes
        .tensors
        .iter()
        .position(|(_, dtype)| *dtype == DType::FLOAT32)
        .unwrap_or(0);
    let tail_names = output_names(&split.tail);
    let mut cached: Option<RunnableModel> = None;
    let total = options.data.len() as u64;
    let mut results = Vec::with_capacity(options.data.len());
    for (i, head_out) in head_runs.into_iter().enumerate() {
        cancel.check()?;
        report(
            progress,
            &format!("server half in {runtime}"),
            i as u64,
            total,
        );
        let mut sent: Vec<Vec<f32>> = Vec::with_capacity(split.sent.len());
        for name in &split.sent {
            let mut values = if let Some(v) = head_out.get(name) {
                v.clone()
            } else if name == options.input {
                options.data.sample(i).to_vec()
            } else if let Some(f) = options.fixed_inputs.iter().find(|f| &f.name == name) {
                vec![f.value as f32; f.shape.iter().product()]
            } else {
                return Err(Error::Device {
                    what: "verifying the split".to_owned(),
                    reason: format!("no value for the sent tensor `{name}`"),
                });
            };
            let dtype = shapes.tensors[sent.len()].1;
            if dtype.is_float() {
                apply_transfer(options.transfer, &mut values);
            }
            sent.push(values);
        }
        let tail = match cached.take() {
            Some(t) => t,
            None => {
                let proto = tail_with_values(&split.tail, split, shapes, &sent, fed)?;
                let extra = tail_names.get(1..).unwrap_or_default();
                RunnableModel::build(runtime, &proto, dir, &shapes.tensors[fed].0, extra)?
            }
        };
        let outputs = tail.run(&sent[fed])?;
        if split.sent.len() == 1 {
            cached = Some(tail);
        }
        let mut all: HashMap<String, Vec<f32>> = tail_names.iter().cloned().zip(outputs).collect();
        for name in &split.device_outputs {
            if let Some(v) = head_out.get(name) {
                all.insert(name.clone(), v.clone());
            }
        }
        results.push(all);
    }
    report(progress, &format!("server half in {runtime}"), total, total);
    Ok(results)
}

/// The tail with every sent tensor but `fed` made an initializer holding `values`.
fn tail_with_values(
    tail: &ModelProto,
    split: &SplitModels,
    shapes: &SentShapes,
    values: &[Vec<f32>],
    fed: usize,
) -> Result<ModelProto> {
    let mut proto = tail.clone();
    let Some(graph) = proto.graph.as_mut() else {
        return Ok(proto);
    };
    for (i, name) in split.sent.iter().enumerate() {
        if i == fed {
            continue;
        }
        graph.input.retain(|input| input.name() != name);
        let (dims, dtype) = &shapes.tensors[i];
        graph
            .initializer
            .push(tensor_of(name, *dtype, dims, &values[i])?);
    }
    Ok(proto)
}

/// A tensor of `dtype` and `dims` holding `values` (converted; integers rounded).
fn tensor_of(name: &str, dtype: DType, dims: &[usize], values: &[f32]) -> Result<TensorProto> {
    let expected: usize = dims.iter().product();
    if values.len() != expected {
        return Err(Error::Device {
            what: "verifying the split".to_owned(),
            reason: format!(
                "`{name}` has {} values but its shape {dims:?} takes {expected}",
                values.len()
            ),
        });
    }
    let raw: Vec<u8> = match dtype {
        DType::FLOAT32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::FLOAT64 => values
            .iter()
            .flat_map(|&v| f64::from(v).to_le_bytes())
            .collect(),
        DType::FLOAT16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BFLOAT16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::INT64 => values
            .iter()
            .flat_map(|&v| (v.round() as i64).to_le_bytes())
            .collect(),
        DType::INT32 => values
            .iter()
            .flat_map(|&v| (v.round() as i32).to_le_bytes())
            .collect(),
        DType::INT16 => values
            .iter()
            .flat_map(|&v| (v.round() as i16).to_le_bytes())
            .collect(),
        DType::INT8 => values
            .iter()
            .flat_map(|&v| (v.round() as i8).to_le_bytes())
            .collect(),
        DType::UINT64 => values
            .iter()
            .flat_map(|&v| (v.round() as u64).to_le_bytes())
            .collect(),
        DType::UINT32 => values
            .iter()
            .flat_map(|&v| (v.round() as u32).to_le_bytes())
            .collect(),
        DType::UINT16 => values
            .iter()
            .flat_map(|&v| (v.round() as u16).to_le_bytes())
            .collect(),
        DType::UINT8 => values.iter().map(|&v| v.round() as u8).collect(),
        DType::BOOL => values.iter().map(|&v| u8::from(v != 0.0)).collect(),
        other => {
            return Err(Error::Device {
                what: "verifying the split".to_owned(),
                reason: format!("`{name}` is {}; such tensors cannot be fed", other.name()),
            });
        }
    };
    let mut tensor = TensorProto::new();
    tensor.set_name(name.to_owned());
    tensor.set_data_type(dtype.0);
    tensor.dims = dims.iter().map(|&d| d as i64).collect();
    tensor.set_raw_data(raw);
    Ok(tensor)
}

/// `values` as the server receives them in `transfer`.
pub(crate) fn apply_transfer(transfer: Transfer, values: &mut [f32]) {
    match transfer {
        Transfer::Fp32 => {}
        Transfer::Fp16 => {
            for v in values.iter_mut() {
                *v = half::f16::from_f32(*v).to_f32();
            }
        }
        Transfer::Int8 => {
            let (lo, hi) = values
                .iter()
                .filter(|v| v.is_finite())
                .fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            if hi <= lo {
                return;
            }
            let scale = (hi - lo) / 255.0;
            let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0);
            for v in values.iter_mut().filter(|v| v.is_finite()) {
                let q = ((*v / scale).round() + zero_point).clamp(-128.0, 127.0);
                *v = (q - zero_point) * scale;
            }
        }
    }
}

fn compare(
    model: &LoadedModel,
    split: &SplitModels,
    original: &Outputs,
    outputs: &Outputs,
    runtime: RuntimeKind,
    transfer: Transfer,
) -> RuntimeCheck {
    let mut total = Difference::default();
    let mut checks = Vec::new();
    let mut missing = None;
    for name in output_names(&model.proto) {
        let mut diff = Difference::default();
        for (o, s) in original.iter().zip(outputs) {
            match (o.get(&name), s.get(&name)) {
                (Some(a), Some(b)) if a.len() == b.len() => {
                    diff.add(a, b);
                    total.add(a, b);
                }
                _ => missing = Some(name.clone()),
            }
        }
        checks.push(OutputCheck {
            computed_on: if split.device_outputs.contains(&name) {
                "device"
            } else {
                "server"
            },
            name,
            max_abs_error: diff.max_abs(),
            sqnr_db: diff.sqnr_db(),
        });
    }
    let max_abs_error = total.max_abs();
    let (passed, note) = match (&missing, transfer) {
        (Some(name), _) => (
            false,
            Some(format!("output `{name}` is missing or of another size")),
        ),
        (None, Transfer::Fp32) if max_abs_error <= FP32_TOLERANCE => (true, None),
        (None, Transfer::Fp32) => (
            false,
            Some(format!(
                "max abs error {max_abs_error:e} is above {FP32_TOLERANCE:e}"
            )),
        ),
        (None, _) if total.nonfinite == 0 => (true, None),
        (None, _) => (
            false,
            Some(format!("{} output values are not finite", total.nonfinite)),
        ),
    };
    RuntimeCheck {
        runtime: runtime.name(),
        ran: true,
        passed,
        max_abs_error,
        sqnr_db: total.sqnr_db(),
        criterion: String::new(),
        note,
        outputs: checks,
    }
}
