//! `optimize`: the compression engine from the command line (`eval`, `bench` and `compare`
//! are in [`super::measure`]).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use edgefit_engine::compress::plan::{
    BatchNormRecalibration, Clipping, Precision, PruneMask, PruneMethod, Recipe, Target,
    WeightRange,
};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::eval::{Accuracy, Latency};
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};

use super::args::{DataArgs, RuntimeArgs};
use super::measure::ms;
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
    /// Integer weights with error compensation (GPTQ): each output row's weights rounded one
    /// at a time, each rounding error spread over the rest so the layer's output on the
    /// calibration data moves the least (Conv/Gemm/MatMul).
    #[arg(long)]
    pub gptq: bool,
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
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16", "weights-int8", "qdq-int8", "dynamic-int8"])]
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
    /// The CPU a qdq-int8 or dynamic-int8 file is meant for: `portable` (default; exact on every CPU),
    /// `x86-64` (no VNNI), `x86-64-vnni`, `arm64`, or `host` (this machine's kind). It decides
    /// the weight range of the integer layers.
    #[arg(long, value_parser = ["portable", "x86-64", "x86-64-vnni", "arm64", "host"], conflicts_with = "device")]
    pub target: Option<String>,
    /// The device the file is for (see `edgefit devices`): its profile's CPU decides the
    /// target of the integer layers (the same setting as --target).
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// A device profile file of your own, for --device (repeatable).
    #[arg(long = "device-file", value_name = "PATH")]
    pub device_files: Vec<std::path::PathBuf>,
    /// Weight codes of qdq-int8 and dynamic-int8 integer layers: `auto` (default: the widest range the target
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
pub(crate) fn prune_ratio(text: &str) -> std::result::Result<f32, String> {
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
pub(crate) fn clipping_name(text: &str) -> std::result::Result<String, String> {
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

/// `--prune-method` (checked by clap) as the recipe's method.
pub(crate) fn prune_method(name: &str) -> PruneMethod {
    match name {
        "channels-l1" => PruneMethod::ChannelsL1,
        "channels-l2" => PruneMethod::ChannelsL2,
        _ => PruneMethod::Magnitude,
    }
}

/// `--clipping` (checked by [`clipping_name`]) as the recipe's clipping.
pub(crate) fn clipping(c: &str) -> Result<Clipping> {
    Ok(match c.split_once(':') {
        None if c == "minmax" => Clipping::MinMax,
        None if c == "mse" => Clipping::Mse,
        None if c == "output-mse" => Clipping::OutputMse,
        Some(("percentile", p)) => Clipping::Percentile {
            percentile: p.parse().with_context(|| format!("bad percentile `{p}`"))?,
        },
        _ => bail!("--clipping takes minmax, mse, output-mse or percentile:P, not `{c}`"),
    })
}

/// The weight precision `--bits` asks for; without it and without a recipe, the one `format`
/// implies (int8 for the integer formats, fp16 for fp16); `None`: the recipe's stays.
pub(crate) fn precision_of(
    bits: Option<&str>,
    has_recipe: bool,
    format: ExportFormat,
) -> Result<Option<Precision>> {
    Ok(match bits {
        Some("fp32") => Some(Precision::Float32),
        Some("fp16") => Some(Precision::Float16),
        Some(bits) => {
            let bits: u8 = bits
                .parse()
                .with_context(|| format!("--bits takes 2–8, fp16 or fp32, not `{bits}`"))?;
            Some(Precision::Int { bits })
        }
        None if !has_recipe => Some(match format {
            ExportFormat::Fp32 => Precision::Float32,
            ExportFormat::Fp16 => Precision::Float16,
            ExportFormat::WeightsInt8 | ExportFormat::QdqInt8 | ExportFormat::DynamicInt8 => {
                Precision::Int { bits: 8 }
            }
        }),
        None => None,
    })
}

/// The recipe of `--recipe PATH`, or the defaults without one.
pub(crate) fn read_recipe(path: Option<&std::path::Path>) -> Result<Recipe> {
    Ok(match path {
        Some(path) => {
            edgefit_engine::model::guard::regular_file(path, "recipe")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Recipe::from_json(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Recipe::default(),
    })
}

fn recipe_from(args: &OptimizeArgs, format: ExportFormat) -> Result<Recipe> {
    let mut recipe = read_recipe(args.recipe.as_deref())?;
    let d = &mut recipe.defaults;
    if let Some(p) = args.prune {
        d.prune_ratio = p;
    }
    if let Some(m) = &args.prune_method {
        d.prune_method = prune_method(m);
    }
    if let Some(p) = precision_of(args.bits.as_deref(), args.recipe.is_some(), format)? {
        d.precision = p;
    }
    if args.asymmetric {
        d.symmetric = false;
    }
    if args.per_tensor {
        d.per_channel = false;
    }
    if let Some(c) = &args.clipping {
        d.clipping = clipping(c)?;
    }
    if args.gptq {
        d.error_compensation = true;
    }
    if format.has_integer_kernels() {
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
    if let Some(id) = &args.device {
        let catalog = super::deploy::catalog(&args.device_files)?;
        recipe.target = catalog.require(id)?.cpu.integer_target;
    }
    if let Some(range) = args.weight_range.as_deref().and_then(WeightRange::parse) {
        recipe.activations.weight_range = range;
        if range == WeightRange::Full
            && format.has_integer_kernels()
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
    let shapes = args.runtime_args.shapes()?;
    let bar = progress_bar();
    let cancel = super::interruptible();
    let (model, loaded, runtime) = super::args::load_for_job(
        &args.model,
        &args.data,
        &args.runtime,
        &args.runtime_args,
        &shapes,
        &bar,
        &cancel,
    )?;
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
    verdict(&report)
}

/// The exit status of a written export: a failed verification or quality floor is an error
/// with its own status (the file stays written, its report marked).
pub(crate) fn verdict(report: &OptimizeReport) -> Result<()> {
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

pub(crate) fn print_optimize(r: &OptimizeReport) {
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
            // Top-1 agreement only for class scores: elsewhere it means nothing.
            let agreement = match r.outputs.first() {
                Some(first) if first.class_scores => {
                    format!("top-1 agreement {:.2}%, ", f.agreement * 100.0)
                }
                _ => String::new(),
            };
            println!(
                "fidelity{which}: {agreement}output SQNR {}, cosine {:.4}, max abs error {:.3e}",
                f.sqnr_text(),
                f.cosine,
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
