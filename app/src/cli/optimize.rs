//! `optimize`, `eval`, `bench` and `compare`: the compression engine from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefit_engine::compress::plan::{
    BatchNormRecalibration, Clipping, Precision, PruneMask, PruneMethod, Recipe, Target,
    WeightRange,
};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::Dataset;
use edgefit_engine::measure::eval::{
    Accuracy, Fidelity, Latency, accuracy, fidelity, latency, run_dataset,
};
use edgefit_engine::measure::runtime::{BuildOptions, FixedInput, RunnableModel, RuntimeKind};
use edgefit_engine::pipeline::{
    InputSetting, OptimizeOptions, OptimizeReport, ResolvedInputs, optimize, resolve_inputs,
};
use edgefit_engine::{CancelToken, LoadedModel, load_model};
use serde::Serialize;

use super::args::{DataArgs, RuntimeArgs, runtime_of};
use super::{progress_bar, sink};
use crate::format::bytes;

/// `edgefit optimize`.
#[derive(Debug, clap::Args)]
pub struct OptimizeArgs {
    /// The ONNX model to compress (never overwritten).
    pub model: PathBuf,
    /// Where to write the compressed model; the recipe and report are written beside it.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Start from this recipe (JSON); the flags below override its defaults.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Global prune ratio, 0–0.99.
    #[arg(long, value_parser = prune_ratio)]
    pub prune: Option<f32>,
    /// Pruning method.
    #[arg(long, value_parser = ["magnitude", "channels-l1", "channels-l2"])]
    pub prune_method: Option<String>,
    /// Weight precision: integer bits 2–8, or `fp16` / `fp32`.
    #[arg(long, value_parser = ["2", "3", "4", "5", "6", "7", "8", "fp16", "fp32"])]
    pub bits: Option<String>,
    /// Asymmetric integer quantization (default symmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// One scale per tensor instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Clipping: `minmax`, `mse` (weight error), `output-mse` (layer output error on the
    /// calibration data), or `percentile:99.99`.
    #[arg(long, value_parser = clipping_name)]
    pub clipping: Option<String>,
    /// Re-estimate BatchNormalization statistics on the calibration data after compression:
    /// `when-pruned` (default), `always` or `never`.
    #[arg(long, value_parser = ["when-pruned", "always", "never"])]
    pub recalibrate_batchnorm: Option<String>,
    /// After magnitude pruning, re-solve the kept weights of each pruned Conv/Gemm/MatMul on
    /// the calibration data to reproduce the original layer outputs (no training).
    #[arg(long)]
    pub reconstruct: bool,
    /// Which weights `--reconstruct` prunes: `obs` (default; Optimal Brain Surgeon saliency on
    /// the calibration inputs), `magnitude` (|w|) or `activation` (|w|·‖x‖, Wanda).
    #[arg(long, value_parser = ["obs", "magnitude", "activation"], requires = "reconstruct")]
    pub reconstruct_mask: Option<String>,
    /// Export format.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16", "weights-int8", "qdq-int8"])]
    pub format: String,
    /// The lowest output SQNR (dB) accepted against the original, over every float output
    /// (default 20; the recipe's `quality.min_output_sqnr_db`). Below it the file is still
    /// written, its report marked failed, and the exit status is 4.
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// For class scores (labelled data): the top-1 agreement with the original that passes
    /// an output below the SQNR floor (default 0.97).
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    pub min_agreement: Option<f64>,
    /// The CPU a qdq-int8 file is meant for: `portable` (default; exact on every CPU),
    /// `x86-64` (no VNNI), `x86-64-vnni`, `arm64`, or `host` (this machine's kind). It decides
    /// the weight range of the integer layers.
    #[arg(long, value_parser = ["portable", "x86-64", "x86-64-vnni", "arm64", "host"])]
    pub target: Option<String>,
    /// Weight codes of qdq-int8 integer layers: `auto` (default: the widest range the target
    /// computes exactly), `reduced` (7-bit, exact everywhere) or `full` (8-bit; only for
    /// x86-64-vnni and arm64, where onnxruntime's u8×s8 kernels do not saturate).
    #[arg(long, value_parser = ["auto", "reduced", "full"])]
    pub weight_range: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Latency runs per model (0 skips latency).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Runtime of the preview (accuracy, fidelity, calibration), latency and verification of
    /// the written file.
    /// `auto` (default): onnxruntime when it is installed and runs the model (the runtime most
    /// deployments ship with, and several times faster), else tract. The file is verified in
    /// both either way.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tract", "onnxruntime"])]
    pub runtime: String,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--prune`: a ratio in 0–0.99, checked before anything loads.
fn prune_ratio(text: &str) -> std::result::Result<f32, String> {
    match text.parse::<f32>() {
        Ok(v) if (0.0..=0.99).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a prune ratio in 0–0.99")),
    }
}

/// `--min-agreement`: a fraction in 0–1.
fn fraction(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{text}` is not a fraction in 0–1")),
    }
}

/// `--clipping`: `minmax`, `mse`, `output-mse` or `percentile:P` with P in 50–100.
fn clipping_name(text: &str) -> std::result::Result<String, String> {
    let ok = match text.split_once(':') {
        None => ["minmax", "mse", "output-mse"].contains(&text),
        Some(("percentile", p)) => p.parse::<f32>().is_ok_and(|p| (50.0..=100.0).contains(&p)),
        Some(_) => false,
    };
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "`{text}` is not one of minmax, mse, output-mse, percentile:P (P in 50–100)"
        ))
    }
}

fn recipe_from(args: &OptimizeArgs, format: ExportFormat) -> Result<Recipe> {
    let mut recipe = match &args.recipe {
        Some(path) => {
            edgefit_engine::model::guard::regular_file(path, "recipe")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Recipe::from_json(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Recipe::default(),
    };
    let d = &mut recipe.defaults;
    if let Some(p) = args.prune {
        d.prune_ratio = p;
    }
    if let Some(m) = &args.prune_method {
        d.prune_method = match m.as_str() {
            "channels-l1" => PruneMethod::ChannelsL1,
            "channels-l2" => PruneMethod::ChannelsL2,
            _ => PruneMethod::Magnitude,
        };
    }
    match args.bits.as_deref() {
        Some("fp32") => d.precision = Precision::Float32,
        Some("fp16") => d.precision = Precision::Float16,
        Some(bits) => {
            let bits: u8 = bits
                .parse()
                .with_context(|| format!("--bits takes 2–8, fp16 or fp32, not `{bits}`"))?;
            d.precision = Precision::Int { bits };
        }
        None if args.recipe.is_none() => {
            d.precision = match format {
                ExportFormat::Fp32 => Precision::Float32,
                ExportFormat::Fp16 => Precision::Float16,
                ExportFormat::WeightsInt8 | ExportFormat::QdqInt8 => Precision::Int { bits: 8 },
            }
        }
        None => {}
    }
    if args.asymmetric {
        d.symmetric = false;
    }
    if args.per_tensor {
        d.per_channel = false;
    }
    if let Some(c) = &args.clipping {
        d.clipping = match c.split_once(':') {
            None if c == "minmax" => Clipping::MinMax,
            None if c == "mse" => Clipping::Mse,
            None if c == "output-mse" => Clipping::OutputMse,
            Some(("percentile", p)) => Clipping::Percentile {
                percentile: p.parse().with_context(|| format!("bad percentile `{p}`"))?,
            },
            _ => bail!("--clipping takes minmax, mse, output-mse or percentile:P, not `{c}`"),
        };
    }
    if format == ExportFormat::QdqInt8 {
        recipe.activations.int8 = true;
    }
    if let Some(db) = args.min_sqnr {
        recipe.quality.min_output_sqnr_db = db;
    }
    if let Some(a) = args.min_agreement {
        recipe.quality.min_top1_agreement = a;
    }
    if let Some(target) = args.target.as_deref().and_then(Target::parse) {
        recipe.target = target;
    }
    if let Some(range) = args.weight_range.as_deref().and_then(WeightRange::parse) {
        recipe.activations.weight_range = range;
        if range == WeightRange::Full
            && format == ExportFormat::QdqInt8
            && !recipe.target.full_range_exact()
        {
            return Err(crate::exit::Failure::Usage(format!(
                "--weight-range full needs a target whose integer kernels do not saturate \
                 (--target x86-64-vnni or arm64, or --target host on such a CPU); `{}` ({}) \
                 saturates full-range int8 weights",
                recipe.target.name(),
                recipe.target.describe()
            ))
            .into());
        }
    }
    if let Some(mode) = &args.recalibrate_batchnorm {
        recipe.recalibrate_batchnorm = match mode.as_str() {
            "always" => BatchNormRecalibration::Always,
            "never" => BatchNormRecalibration::Never,
            _ => BatchNormRecalibration::WhenPruned,
        };
    }
    if args.reconstruct {
        recipe.reconstruct.enabled = true;
    }
    if let Some(mask) = &args.reconstruct_mask {
        recipe.reconstruct.mask = match mask.as_str() {
            "activation" => PruneMask::Activation,
            "magnitude" => PruneMask::Magnitude,
            _ => PruneMask::Obs,
        };
    }
    Ok(recipe)
}

pub fn optimize_cmd(args: &OptimizeArgs) -> Result<()> {
    let format = ExportFormat::parse(&args.format).context("unknown format")?;
    let recipe = recipe_from(args, format)?;
    let auto = args.runtime == "auto";
    let mut runtime = if auto {
        RuntimeKind::Tract
    } else {
        runtime_of(&args.runtime)?
    };
    let shapes = args.runtime_args.shapes()?;
    args.runtime_args.prepare(&[runtime])?;
    let bar = progress_bar();
    let cancel = super::interruptible();
    let model = load_model(&args.model, &sink(&bar), &cancel)?;
    let loaded = args.data.load(&model, &shapes)?;
    if auto {
        let (chosen, why) = edgefit_engine::pipeline::choose_runtime(
            &model,
            &loaded.data,
            &loaded.settings,
            args.runtime_args.onnxruntime_lib.as_deref(),
        );
        runtime = chosen;
        if let Some(why) = why {
            bar.suspend(|| eprintln!("note: {}", crate::format::terminal_safe(&why)));
        }
    }
    let options = OptimizeOptions {
        recipe: &recipe,
        format,
        data: &loaded.data,
        calibration: loaded.calibration.as_ref(),
        latency_runs: args.runs,
        runtime,
        input_shapes: &loaded.settings,
        output: args.runtime_args.output.as_deref(),
    };
    let report = optimize(&model, &options, &args.out, &sink(&bar), &cancel).map_err(|e| {
        // Generated inputs at shapes edgefit chose: a model that needs other dims fails in
        // the runtime, and the runtime's message does not say that the shape was a guess.
        let guessed: Vec<String> = loaded
            .settings
            .iter()
            .filter_map(|s| {
                let dims = s.shape.as_ref()?;
                let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
                Some(format!("{}={}", s.name, dims.join(",")))
            })
            .collect();
        let runtime_failed = matches!(e, edgefit_engine::Error::Runtime { .. });
        if loaded.data.generated && runtime_failed && !guessed.is_empty() {
            anyhow::Error::from(e).context(format!(
                "the model could not run on generated inputs at shapes edgefit chose ({}); if it \
                 needs other dims, give them with --input-shape NAME=DIMS (or give --data)",
                guessed.join(" ")
            ))
        } else {
            e.into()
        }
    })?;
    bar.finish_and_clear();
    if args.json {
        super::print_json("optimize", &report)?;
    } else {
        print_optimize(&report);
    }
    if !report.verification.passed {
        return Err(crate::exit::Failure::Verification(report.verification.message.clone()).into());
    }
    if let Some(q) = report.quality.as_ref().filter(|q| !q.passed) {
        let worst: Vec<String> = q.layers.iter().take(5).map(|l| l.describe()).collect();
        return Err(crate::exit::Failure::Quality(format!(
            "{}; the file was written and its report marked failed{}",
            q.message,
            if worst.is_empty() {
                String::new()
            } else {
                format!(
                    "; the layers adding the most error: {} — exclude them or give them more bits",
                    worst.join(", ")
                )
            }
        ))
        .into());
    }
    Ok(())
}

fn print_optimize(r: &OptimizeReport) {
    let acc =
        |m: &Option<Accuracy>| m.map_or("–".to_owned(), |a| format!("{:.2}%", a.top1 * 100.0));
    let lat = |l: &Option<Latency>| l.as_ref().map_or("–".to_owned(), |l| ms(l.median));
    println!("wrote {} ({})", r.output, r.format.name());
    println!("data: {}", r.data);
    println!(
        "runtime: {} (input {:?}; preview, latency and verification)",
        r.runtime, r.input_shape
    );
    if let Some(k) = &r.integer_kernels {
        println!(
            "integer kernels: target {}, {}-bit weight codes, exact on {}",
            k.target.name(),
            k.weight_bits,
            k.exact_on
        );
    }
    println!(
        "{:<12} {:>9} {:>12} {:>14}",
        "", "top-1", "size", "latency (p50)"
    );
    println!(
        "{:<12} {:>9} {:>12} {:>14}",
        "original",
        acc(&r.original.accuracy),
        bytes(r.original.size_bytes),
        lat(&r.original.latency_ms)
    );
    println!(
        "{:<12} {:>9} {:>12} {:>14}",
        "compressed",
        acc(&r.compressed.accuracy),
        bytes(r.compressed.size_bytes),
        lat(&r.compressed.latency_ms)
    );
    match &r.fidelity {
        Some(f) => {
            // With several outputs, say which one this is: a first output that echoes the
            // input (token ids) is identical while the embeddings after it are not.
            let which = match r.outputs.first() {
                Some(first) if r.outputs.len() > 1 => format!(" of `{}`", first.name),
                _ => String::new(),
            };
            println!(
                "fidelity{which}: top-1 agreement {:.2}%, output SQNR {}, max abs error {:.3e}",
                f.agreement * 100.0,
                f.sqnr_text(),
                f.max_abs_err
            );
            let worst = r.outputs.iter().filter(|o| o.float).min_by(|a, b| {
                a.fidelity
                    .sqnr_or_inf()
                    .total_cmp(&b.fidelity.sqnr_or_inf())
            });
            if let Some(w) = worst
                && r.outputs.len() > 1
                && r.outputs.first().is_some_and(|first| first.name != w.name)
            {
                let floats = r.outputs.iter().filter(|o| o.float).count();
                let which = if floats == 1 {
                    "the float output".to_owned()
                } else {
                    format!("lowest over the {floats} float outputs:")
                };
                println!(
                    "  {which} `{}`: output SQNR {}",
                    w.name,
                    w.fidelity.sqnr_text()
                );
            }
        }
        None => println!(
            "fidelity: NOT MEASURED ({})",
            r.not_measured.as_deref().unwrap_or("the model was not run")
        ),
    }
    if let Some(q) = &r.quality {
        println!(
            "quality: {} ({})",
            if q.passed { "passed" } else { "FAILED" },
            q.message
        );
        for l in q.layers.iter().take(5) {
            println!("  {}", l.describe());
        }
    }
    println!(
        "verification: {} ({})",
        if r.verification.passed {
            "passed"
        } else {
            "FAILED"
        },
        r.verification.message
    );
    let ratio = r.compressed.size_bytes as f64 / r.original.size_bytes.max(1) as f64;
    if r.format != ExportFormat::Fp32 && ratio > 0.8 && !r.uncompressed.is_empty() {
        let float_bytes: u64 = r.uncompressed.iter().map(|u| u.bytes).sum();
        let mut reasons: Vec<&str> = r.uncompressed.iter().map(|u| u.reason.as_str()).collect();
        reasons.dedup();
        println!(
            "warning: the file barely shrank ({ratio:.2}× the original): {} float tensors ({}) stay float — {}",
            r.uncompressed.len(),
            bytes(float_bytes),
            reasons.into_iter().take(3).collect::<Vec<_>>().join("; ")
        );
    }
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &r.skipped {
        by_reason.entry(&s.reason).or_default().push(&s.name);
    }
    for (reason, layers) in by_reason {
        println!(
            "{}",
            crate::format::terminal_safe(&format!("left as is ({}): {reason}", layers.join(", ")))
        );
    }
    if !r.structured.is_empty() {
        println!(
            "MACs: {} → {} (channels physically removed)",
            r.macs_before, r.macs_after
        );
    }
    for l in &r.reconstruction {
        println!(
            "reconstructed {}: output error {:.4} → {:.4} (relative; sparsity {:.1}%, {}/{} rows)",
            l.name,
            l.relative_error_pruned,
            l.relative_error_reconstructed,
            l.sparsity * 100.0,
            l.rows_solved,
            l.rows
        );
    }
    for n in &r.notes {
        println!("note: {}", crate::format::terminal_safe(n));
    }
}

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
fn ms(v: f64) -> String {
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
        let json = if runtimes.len() == 1 {
            serde_json::json!({
                "model": model_name,
                "input_shape": shape,
                "latency_ms": results.first(),
                "size_bytes": model.file_size_bytes,
                "onnxruntime_library": library,
            })
        } else {
            serde_json::json!({
                "model": model_name,
                "input_shape": shape,
                "latency_ms": results,
                "tract_over_onnxruntime": ratio,
                "size_bytes": model.file_size_bytes,
                "onnxruntime_library": library,
            })
        };
        super::print_json("bench", &json)?;
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
