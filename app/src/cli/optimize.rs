//! `optimize`, `eval`, `bench` and `compare`: the compression engine from the command line.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefit_engine::dataset::{Dataset, generated_inputs, load_calibration, load_dataset};
use edgefit_engine::eval::{Accuracy, Fidelity, Latency, accuracy, fidelity, latency, run_dataset};
use edgefit_engine::export::ExportFormat;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, concrete_input_shape, optimize};
use edgefit_engine::plan::{BatchNormRecalibration, Clipping, Precision, PruneMethod, Recipe};
use edgefit_engine::runtime::TractModel;
use edgefit_engine::{CancelToken, LoadedModel, load_model};
use serde::Serialize;

use super::{progress_bar, sink};
use crate::format::bytes;

/// Where the evaluation data comes from.
#[derive(Debug, clap::Args)]
pub struct DataArgs {
    /// Evaluation data: a folder with dataset.json, an image folder (one sub-folder per class),
    /// an .npz, or an .npy. Default: the dataset.json beside the model if there is one, else
    /// generated inputs (fidelity only).
    #[arg(long, value_name = "PATH")]
    pub data: Option<PathBuf>,
    /// Use at most this many samples.
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
}

/// Number of generated inputs when no data is given.
const GENERATED_SAMPLES: usize = 64;

impl DataArgs {
    /// Loads the data for `model` (and its calibration split, when the source has one).
    pub fn load(&self, model: &LoadedModel) -> Result<(Dataset, Option<Dataset>)> {
        let beside = model
            .path
            .parent()
            .map(|d| d.join("dataset.json"))
            .filter(|p| p.is_file());
        let source = self
            .data
            .clone()
            .or_else(|| beside.and_then(|p| p.parent().map(Path::to_path_buf)));
        let (mut data, calibration) = match source {
            Some(path) => {
                let data = load_dataset(&path, None)
                    .with_context(|| format!("reading data from {}", path.display()))?;
                let calibration = if path.is_dir() {
                    load_calibration(&path)?
                } else {
                    None
                };
                (data, calibration)
            }
            None => {
                let shape = concrete_input_shape(model, None)?;
                (generated_inputs(&shape[1..], GENERATED_SAMPLES, 0), None)
            }
        };
        if let Some(n) = self.samples {
            data = data.first(n);
        }
        Ok((data, calibration))
    }
}

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
    #[arg(long)]
    pub prune: Option<f32>,
    /// Pruning method.
    #[arg(long, value_parser = ["magnitude", "channels-l1", "channels-l2"])]
    pub prune_method: Option<String>,
    /// Weight precision: integer bits 2–8, or `fp16` / `fp32`.
    #[arg(long)]
    pub bits: Option<String>,
    /// Asymmetric integer quantization (default symmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// One scale per tensor instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Clipping: `minmax`, `mse`, or `percentile:99.99`.
    #[arg(long)]
    pub clipping: Option<String>,
    /// Re-estimate BatchNormalization statistics on the calibration data after compression:
    /// `when-pruned` (default), `always` or `never`.
    #[arg(long, value_parser = ["when-pruned", "always", "never"])]
    pub recalibrate_batchnorm: Option<String>,
    /// Export format.
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16", "weights-int8", "qdq-int8"])]
    pub format: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Latency runs per model (0 skips latency).
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn recipe_from(args: &OptimizeArgs, format: ExportFormat) -> Result<Recipe> {
    let mut recipe = match &args.recipe {
        Some(path) => {
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
            Some(("percentile", p)) => Clipping::Percentile {
                percentile: p.parse().with_context(|| format!("bad percentile `{p}`"))?,
            },
            _ => bail!("--clipping takes minmax, mse or percentile:P, not `{c}`"),
        };
    }
    if format == ExportFormat::QdqInt8 {
        recipe.activations.int8 = true;
    }
    if let Some(mode) = &args.recalibrate_batchnorm {
        recipe.recalibrate_batchnorm = match mode.as_str() {
            "always" => BatchNormRecalibration::Always,
            "never" => BatchNormRecalibration::Never,
            _ => BatchNormRecalibration::WhenPruned,
        };
    }
    Ok(recipe)
}

pub fn optimize_cmd(args: &OptimizeArgs) -> Result<()> {
    let format = ExportFormat::parse(&args.format).context("unknown format")?;
    let recipe = recipe_from(args, format)?;
    let bar = progress_bar();
    let cancel = CancelToken::new();
    let model = load_model(&args.model, &sink(&bar), &cancel)?;
    let (data, calibration) = args.data.load(&model)?;
    let options = OptimizeOptions {
        recipe: &recipe,
        format,
        data: &data,
        calibration: calibration.as_ref(),
        latency_runs: args.runs,
    };
    let report = optimize(&model, &options, &args.out, &sink(&bar), &cancel)?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_optimize(&report);
    }
    if !report.verification.passed {
        bail!("verification failed: {}", report.verification.message);
    }
    Ok(())
}

fn print_optimize(r: &OptimizeReport) {
    let acc =
        |m: &Option<Accuracy>| m.map_or("–".to_owned(), |a| format!("{:.2}%", a.top1 * 100.0));
    let lat = |l: &Option<Latency>| {
        l.as_ref()
            .map_or("–".to_owned(), |l| format!("{:.3} ms", l.median))
    };
    println!("wrote {} ({})", r.output, r.format.name());
    println!("data: {}", r.data);
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
    println!(
        "fidelity: top-1 agreement {:.2}%, output SQNR {}, max abs error {:.3e}",
        r.fidelity.agreement * 100.0,
        r.fidelity
            .sqnr_db
            .map_or("∞".to_owned(), |s| format!("{s:.1} dB")),
        r.fidelity.max_abs_err
    );
    println!(
        "verification: {} ({})",
        if r.verification.passed {
            "passed"
        } else {
            "FAILED"
        },
        r.verification.message
    );
    let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for s in &r.skipped {
        by_reason.entry(&s.reason).or_default().push(&s.name);
    }
    for (reason, layers) in by_reason {
        println!("left as is ({}): {reason}", layers.join(", "));
    }
    if !r.structured.is_empty() {
        println!(
            "MACs: {} → {} (channels physically removed)",
            r.macs_before, r.macs_after
        );
    }
    for n in &r.notes {
        println!("note: {n}");
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `eval` prints.
#[derive(Debug, Serialize)]
pub struct EvalOutput {
    pub model: String,
    pub runtime: &'static str,
    pub data: String,
    pub samples: usize,
    pub accuracy: Option<Accuracy>,
    pub fidelity: Option<Fidelity>,
    pub latency_ms: Option<Latency>,
    pub size_bytes: u64,
}

fn outputs_of(
    model: &LoadedModel,
    data: &Dataset,
    shape: &[usize],
    bar: &indicatif::ProgressBar,
    cancel: &CancelToken,
) -> Result<(TractModel, Vec<Vec<f32>>)> {
    let runnable = TractModel::build(&model.proto, model.path.parent(), shape, &[])?;
    let outputs = run_dataset(&runnable, data, &sink(bar), cancel)?;
    Ok((runnable, outputs))
}

fn evaluate(
    path: &Path,
    data_args: &DataArgs,
    reference: Option<&Path>,
    runs: usize,
) -> Result<EvalOutput> {
    let bar = progress_bar();
    let cancel = CancelToken::new();
    let model = load_model(path, &sink(&bar), &cancel)?;
    let (data, _) = data_args.load(&model)?;
    let shape = concrete_input_shape(&model, Some(&data))?;
    let (runnable, outputs) = outputs_of(&model, &data, &shape, &bar, &cancel)?;
    let fidelity = match reference {
        Some(r) => {
            let reference = load_model(r, &sink(&bar), &cancel)?;
            let (_, expected) = outputs_of(&reference, &data, &shape, &bar, &cancel)?;
            Some(fidelity(&expected, &outputs))
        }
        None => None,
    };
    let latency_ms = if runs > 0 && !data.is_empty() {
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
    Ok(EvalOutput {
        model: model.path.display().to_string(),
        runtime: "tract",
        data: data.description.clone(),
        samples: data.len(),
        accuracy: data.labels.as_deref().map(|l| accuracy(&outputs, l)),
        fidelity,
        latency_ms,
        size_bytes: model.file_size_bytes,
    })
}

fn print_eval(e: &EvalOutput) {
    println!(
        "{} ({}, {} samples of {})",
        e.model,
        bytes(e.size_bytes),
        e.samples,
        e.data
    );
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
            f.sqnr_db.map_or("∞".to_owned(), |s| format!("{s:.1} dB")),
            f.max_abs_err
        );
    }
    if let Some(l) = &e.latency_ms {
        println!(
            "latency ({}, {} thread): median {:.3} ms, p90 {:.3} ms over {} runs",
            l.runtime, l.threads, l.median, l.p90, l.runs
        );
    }
}

pub fn eval_cmd(args: &EvalArgs) -> Result<()> {
    let out = evaluate(
        &args.model,
        &args.data,
        args.reference.as_deref(),
        args.runs,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_eval(&out);
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let data = DataArgs {
        data: None,
        samples: Some(1),
    };
    let out = evaluate(&args.model, &data, None, args.runs.max(1))?;
    if args.json {
        let json = serde_json::json!({ "model": out.model, "latency_ms": out.latency_ms, "size_bytes": out.size_bytes });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_eval(&EvalOutput {
            accuracy: None,
            ..out
        });
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn compare_cmd(args: &CompareArgs) -> Result<()> {
    let a = evaluate(&args.a, &args.data, None, args.runs)?;
    let b = evaluate(&args.b, &args.data, Some(&args.a), args.runs)?;
    if args.json {
        let json = serde_json::json!({ "a": a, "b": b, "fidelity": b.fidelity });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_eval(&a);
        print_eval(&b);
    }
    Ok(())
}
