//! `eval`, `bench` and `compare`: running models from the command line (accuracy or fidelity,
//! latency, two models side by side), in tract, onnxruntime or both.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use edgefit_engine::measure::dataset::Dataset;
use edgefit_engine::measure::eval::{
    Accuracy, Fidelity, Latency, accuracy, fidelity, latency, run_dataset,
};
use edgefit_engine::measure::runtime::{BuildOptions, FixedInput, RunnableModel, RuntimeKind};
use edgefit_engine::pipeline::{InputSetting, ResolvedInputs, resolve_inputs};
use edgefit_engine::{CancelToken, LoadedModel, load_model};
use serde::Serialize;

use super::args::{DataArgs, RuntimeArgs, runtime_of};
use super::{progress_bar, sink};
use crate::format::bytes;

/// `edgefit eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The ONNX model to evaluate.
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Also measure fidelity against this model's outputs on the same samples.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Latency runs (0 skips latency).
    #[arg(long, default_value_t = 0)]
    pub runs: usize,
    /// Runtime to evaluate in; `both` evaluates in tract and onnxruntime and compares their
    /// outputs.
    #[arg(long, default_value = "tract", value_parser = ["tract", "onnxruntime", "both"])]
    pub runtime: String,
    /// Threads per inference for the latency measurement (onnxruntime's intra-op threads;
    /// tract runs on one). Accuracy runs samples in parallel, one thread each.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `eval` prints.
#[derive(Debug, Serialize)]
pub struct EvalOutput {
    pub model: String,
    pub runtime: &'static str,
    /// The input shape the model ran at (batch included).
    pub input_shape: Vec<usize>,
    /// Inputs held at a value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixed_inputs: Vec<FixedInput>,
    pub data: String,
    pub samples: usize,
    pub accuracy: Option<Accuracy>,
    pub fidelity: Option<Fidelity>,
    pub latency_ms: Option<Latency>,
    pub size_bytes: u64,
}

/// How to run models for `eval`, `bench` and `compare`.
struct RunSettings {
    runtime: RuntimeKind,
    shapes: Vec<InputSetting>,
    output: Option<String>,
    /// Threads per inference for latency.
    threads: usize,
}

fn build(
    model: &LoadedModel,
    runtime: RuntimeKind,
    inputs: &ResolvedInputs,
    output: Option<&str>,
    threads: usize,
) -> Result<RunnableModel> {
    // onnxruntime reads the model from memory: external data goes inline.
    let proto = match runtime {
        RuntimeKind::OnnxRuntime if model.has_external_data() => model.self_contained_proto()?,
        _ => model.proto.clone(),
    };
    Ok(RunnableModel::build_with(
        runtime,
        &proto,
        model.path.parent(),
        &inputs.shape,
        &[],
        &BuildOptions {
            threads,
            fixed_inputs: inputs.fixed.clone(),
            output: output.map(str::to_owned),
        },
    )?)
}

fn outputs_of(
    model: &LoadedModel,
    data: &Dataset,
    inputs: &ResolvedInputs,
    output: Option<&str>,
    runtime: RuntimeKind,
    bar: &indicatif::ProgressBar,
    cancel: &CancelToken,
) -> Result<Vec<Vec<f32>>> {
    let runnable = build(model, runtime, inputs, output, 1)?;
    Ok(run_dataset(&runnable, data, &sink(bar), cancel)?)
}

fn evaluate(
    path: &Path,
    data_args: &DataArgs,
    reference: Option<&Path>,
    runs: usize,
    settings: &RunSettings,
) -> Result<EvalOutput> {
    evaluate_with_outputs(path, data_args, reference, runs, settings).map(|(e, _)| e)
}

/// [`evaluate`], also returning the model's outputs on every sample.
fn evaluate_with_outputs(
    path: &Path,
    data_args: &DataArgs,
    reference: Option<&Path>,
    runs: usize,
    settings: &RunSettings,
) -> Result<(EvalOutput, Vec<Vec<f32>>)> {
    let bar = progress_bar();
    let cancel = CancelToken::new();
    let model = load_model(path, &sink(&bar), &cancel)?;
    let loaded = data_args.load(&model, &settings.shapes)?;
    let data = loaded.data;
    let inputs = resolve_inputs(&model, Some(&data), &loaded.settings)?;
    let runtime = settings.runtime;
    let output = settings.output.as_deref();
    let outputs = outputs_of(&model, &data, &inputs, output, runtime, &bar, &cancel)?;
    let fidelity = match reference {
        Some(r) => {
            let reference = load_model(r, &sink(&bar), &cancel)?;
            let expected = outputs_of(&reference, &data, &inputs, output, runtime, &bar, &cancel)?;
            Some(fidelity(&expected, &outputs))
        }
        None => None,
    };
    let latency_ms = if runs > 0 && !data.is_empty() {
        let runnable = build(&model, runtime, &inputs, output, settings.threads)?;
        Some(latency(
            &runnable,
            data.sample(0),
            runs,
            runs.div_ceil(5),
            &cancel,
        )?)
    } else {
        None
    };
    bar.finish_and_clear();
    let out = EvalOutput {
        model: model.path.display().to_string(),
        runtime: runtime.name(),
        input_shape: inputs.shape.clone(),
        fixed_inputs: inputs.fixed,
        data: data.description.clone(),
        samples: data.len(),
        accuracy: data.labels.as_deref().map(|l| accuracy(&outputs, l)),
        fidelity,
        latency_ms,
        size_bytes: model.file_size_bytes,
    };
    Ok((out, outputs))
}

/// Milliseconds with enough decimals for sub-0.1 ms times.
pub(super) fn ms(v: f64) -> String {
    if v < 0.1 {
        format!("{v:.4} ms")
    } else {
        format!("{v:.3} ms")
    }
}

fn latency_line(l: &Latency) -> String {
    format!(
        "latency ({}, {} thread{}): median {}, p90 {} over {} runs",
        l.runtime,
        l.threads,
        if l.threads == 1 { "" } else { "s" },
        ms(l.median),
        ms(l.p90),
        l.runs
    )
}

fn print_eval(e: &EvalOutput) {
    println!(
        "{} ({}, {} samples of {}; {}, input {:?})",
        e.model,
        bytes(e.size_bytes),
        e.samples,
        e.data,
        e.runtime,
        e.input_shape
    );
    for f in &e.fixed_inputs {
        println!("held: {} {:?} = {}", f.name, f.shape, f.value);
    }
    if let Some(a) = e.accuracy {
        println!(
            "accuracy: top-1 {:.2}%, top-5 {:.2}%",
            a.top1 * 100.0,
            a.top5 * 100.0
        );
    }
    if let Some(f) = e.fidelity {
        println!(
            "fidelity: top-1 agreement {:.2}%, output SQNR {}, max abs error {:.3e}",
            f.agreement * 100.0,
            f.sqnr_text(),
            f.max_abs_err
        );
    }
    if let Some(l) = &e.latency_ms {
        println!("{}", latency_line(l));
    }
}

pub fn eval_cmd(args: &EvalArgs) -> Result<()> {
    if args.runtime == "both" {
        return eval_both(args);
    }
    let settings = RunSettings {
        runtime: runtime_of(&args.runtime)?,
        shapes: args.runtime_args.shapes()?,
        output: args.runtime_args.output.clone(),
        threads: usize::from(args.threads),
    };
    args.runtime_args.prepare(&[settings.runtime])?;
    let out = evaluate(
        &args.model,
        &args.data,
        args.reference.as_deref(),
        args.runs,
        &settings,
    )?;
    if args.json {
        super::print_json("eval", &out)?;
    } else {
        print_eval(&out);
    }
    Ok(())
}

/// `eval --runtime both`: the model in tract and in onnxruntime on the same samples, and how
/// closely onnxruntime's outputs follow tract's.
fn eval_both(args: &EvalArgs) -> Result<()> {
    let shapes = args.runtime_args.shapes()?;
    args.runtime_args.prepare(&RuntimeKind::ALL)?;
    let mut results = Vec::new();
    for runtime in RuntimeKind::ALL {
        let settings = RunSettings {
            runtime,
            shapes: shapes.clone(),
            output: args.runtime_args.output.clone(),
            threads: usize::from(args.threads),
        };
        results.push(evaluate_with_outputs(
            &args.model,
            &args.data,
            args.reference.as_deref(),
            args.runs,
            &settings,
        )?);
    }
    let agreement = fidelity(&results[0].1, &results[1].1);
    if args.json {
        let json = serde_json::json!({
            "tract": results[0].0,
            "onnxruntime": results[1].0,
            "onnxruntime_vs_tract": agreement,
        });
        super::print_json("eval", &json)?;
    } else {
        for (out, _) in &results {
            print_eval(out);
        }
        println!(
            "onnxruntime vs tract: top-1 agreement {:.2}%, output SQNR {}, max abs difference {:.3e} over {} samples",
            agreement.agreement * 100.0,
            agreement.sqnr_text(),
            agreement.max_abs_err,
            agreement.samples
        );
    }
    Ok(())
}

/// `edgefit bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The ONNX model to time.
    pub model: PathBuf,
    /// Timed runs.
    #[arg(long, default_value_t = 100)]
    pub runs: usize,
    /// Runtime to time in; `both` times tract and onnxruntime in one run and prints the ratio.
    #[arg(long, default_value = "tract", value_parser = ["tract", "onnxruntime", "both"])]
    pub runtime: String,
    /// Threads per inference (onnxruntime's intra-op threads; tract runs on one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let runtimes: Vec<RuntimeKind> = if args.runtime == "both" {
        RuntimeKind::ALL.to_vec()
    } else {
        vec![runtime_of(&args.runtime)?]
    };
    let shapes = args.runtime_args.shapes()?;
    args.runtime_args.prepare(&runtimes)?;
    let threads = usize::from(args.threads);
    let cancel = CancelToken::new();
    let model = load_model(&args.model, &edgefit_engine::NoProgress, &cancel)?;
    let one = DataArgs {
        data: None,
        samples: Some(1),
        preprocess: Default::default(),
    };
    let loaded = one.load(&model, &shapes)?;
    let data = loaded.data;
    if data.is_empty() {
        bail!("no sample to time the model on");
    }
    let inputs = resolve_inputs(&model, Some(&data), &loaded.settings)?;
    let shape = inputs.shape.clone();
    let runs = args.runs.max(1);
    let mut results: Vec<Latency> = Vec::new();
    for &runtime in &runtimes {
        let runnable = build(
            &model,
            runtime,
            &inputs,
            args.runtime_args.output.as_deref(),
            threads,
        )?;
        results.push(latency(
            &runnable,
            data.sample(0),
            runs,
            runs.div_ceil(5),
            &cancel,
        )?);
        drop(runnable);
    }
    let ratio = match results.as_slice() {
        [tract, ort] if ort.median > 0.0 => Some(tract.median / ort.median),
        _ => None,
    };
    let model_name = model.path.display().to_string();
    let library = edgefit_engine::measure::runtime::onnxruntime::loaded_library();
    if args.json {
        // One shape whatever --runtime says: a list with one entry per runtime measured.
        let json = serde_json::json!({
            "model": model_name,
            "input_shape": shape,
            "latency_ms": results,
            "tract_over_onnxruntime": ratio,
            "size_bytes": model.file_size_bytes,
            "onnxruntime_library": library,
        });
        super::print_json_version("bench", 2, &json)?;
    } else {
        println!(
            "{model_name} ({}, input {shape:?})",
            bytes(model.file_size_bytes)
        );
        for l in &results {
            println!("{}", latency_line(l));
        }
        if let Some(library) = library {
            println!("onnxruntime library: {}", library.display());
        }
        if let (Some(ratio), [tract, ort]) = (ratio, results.as_slice()) {
            println!(
                "tract / onnxruntime: {ratio:.2}× (median {} / {}){}",
                ms(tract.median),
                ms(ort.median),
                if ratio >= 1.0 {
                    format!("; onnxruntime is {ratio:.2}× faster")
                } else {
                    format!("; tract is {:.2}× faster", 1.0 / ratio)
                }
            );
        }
    }
    Ok(())
}

/// `edgefit compare`.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The reference model (e.g. the original).
    pub a: PathBuf,
    /// The model compared with it (e.g. an export).
    pub b: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Latency runs per model (0 skips latency).
    #[arg(long, default_value_t = 0)]
    pub runs: usize,
    /// Runtime both models run in.
    #[arg(long, default_value = "tract", value_parser = ["tract", "onnxruntime"])]
    pub runtime: String,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn compare_cmd(args: &CompareArgs) -> Result<()> {
    let settings = RunSettings {
        runtime: runtime_of(&args.runtime)?,
        shapes: args.runtime_args.shapes()?,
        output: args.runtime_args.output.clone(),
        threads: 1,
    };
    args.runtime_args.prepare(&[settings.runtime])?;
    // Both models on the same samples: by default the data beside A, for B too.
    let data = DataArgs {
        data: args.data.data.clone().or_else(|| {
            let dir = args.a.parent()?;
            dir.join("dataset.json")
                .is_file()
                .then(|| dir.to_path_buf())
        }),
        samples: args.data.samples,
        preprocess: args.data.preprocess.clone(),
    };
    let a = evaluate(&args.a, &data, None, args.runs, &settings)?;
    let b = evaluate(&args.b, &data, Some(&args.a), args.runs, &settings)?;
    if args.json {
        let json = serde_json::json!({ "a": a, "b": b, "fidelity": b.fidelity });
        super::print_json("compare", &json)?;
    } else {
        print_eval(&a);
        print_eval(&b);
    }
    Ok(())
}
