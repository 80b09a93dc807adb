//! `edgefit fit` and `edgefit devices`: will the model (and the plan) fit each deployment
//! target, and roughly how fast it runs there (estimates, labelled as such).

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgefit_engine::analyse;
use edgefit_engine::deploy::device::{DeviceCatalog, DeviceProfile, user_profile_dir};
use edgefit_engine::deploy::fit::{DeviceFit, FitTargets, fit_devices};
use edgefit_engine::deploy::graph::DeviceGraph;
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::{AnalysisOptions, LoadedModel, load_model};

use super::{interruptible, progress_bar, sink};
use crate::format::{bytes, fit, signed_bytes, terminal_safe};

/// `edgefit fit`.
#[derive(Debug, clap::Args)]
pub struct FitArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// A device id (see `edgefit devices`), or `all` (repeatable; default `all`).
    #[arg(long = "device", value_name = "ID|all")]
    pub devices: Vec<String>,
    /// A device profile file of your own (repeatable; same schema as assets/devices/*.json).
    #[arg(long = "device-file", value_name = "PATH")]
    pub device_files: Vec<PathBuf>,
    /// The plan to check next to the original (JSON recipe, as written by `optimize`).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Weight precision of a plan without a recipe: integer bits 2–8, or `fp16`.
    #[arg(long, value_parser = ["2", "3", "4", "5", "6", "7", "8", "fp16", "fp32"])]
    pub bits: Option<String>,
    /// Global prune ratio of a plan without a recipe, 0–0.99.
    #[arg(long, value_parser = super::optimize::prune_ratio)]
    pub prune: Option<f32>,
    /// Export format of the plan (`fp32` with no recipe, bits or prune checks only the original).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16", "weights-int8", "qdq-int8", "dynamic-int8"])]
    pub format: String,
    /// The latency an inference must stay under on the device, ms (an estimate is compared).
    #[arg(long, value_name = "MS")]
    pub max_latency_ms: Option<f64>,
    /// Concrete shape for an input with symbolic or -1 dims, batch included (default: the
    /// symbolic dims at 1).
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shape: Vec<String>,
    /// Exit with status 5 when some device's verdict (RAM, flash, latency) is red.
    #[arg(long)]
    pub require_fit: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `edgefit devices`.
#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    /// Also read this profile file (repeatable).
    #[arg(long = "device-file", value_name = "PATH")]
    pub device_files: Vec<PathBuf>,
    /// Print one JSON object with every profile.
    #[arg(long)]
    pub json: bool,
}

/// The built-in and user profiles plus `files`; a user file that does not parse is a warning
/// unless it was named on the command line.
pub(crate) fn catalog(files: &[PathBuf]) -> Result<DeviceCatalog> {
    let mut catalog = DeviceCatalog::load();
    for problem in &catalog.problems {
        eprintln!("warning: {}", terminal_safe(problem));
    }
    for file in files {
        catalog
            .add_file(file)
            .with_context(|| format!("reading the device profile {}", file.display()))?;
    }
    Ok(catalog)
}

/// `edgefit devices`: the profiles there are.
pub fn devices_cmd(args: &DevicesArgs) -> Result<()> {
    let catalog = catalog(&args.device_files)?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Listing<'a> {
            user_profile_dir: Option<String>,
            devices: &'a [DeviceProfile],
        }
        return super::print_json(
            "devices",
            &Listing {
                user_profile_dir: user_profile_dir().map(|d| d.display().to_string()),
                devices: &catalog.profiles,
            },
        );
    }
    let mut out = String::new();
    for p in &catalog.profiles {
        let _ = writeln!(
            out,
            "{:<20} {:<44} RAM {:>9}  {:>15}  fp32 {:>6.1} GOPS  {}",
            terminal_safe(&p.id),
            fit(&terminal_safe(&p.name), 44),
            bytes(p.memory.ram_bytes),
            p.memory
                .flash_bytes
                .map_or_else(String::new, |f| format!("flash {}", bytes(f))),
            p.throughput_gops.fp32.unwrap_or(0.0),
            p.accelerator
                .as_ref()
                .map_or_else(String::new, |a| format!("+ {}", terminal_safe(&a.name))),
        );
    }
    if let Some(dir) = user_profile_dir() {
        let _ = writeln!(out, "\nyour own profiles: {}", dir.display());
    }
    print!("{out}");
    Ok(())
}

/// The JSON of `edgefit fit`.
#[derive(serde::Serialize)]
struct FitJson {
    model: String,
    /// The form the `devices` verdicts are for: the plan's format, or `original`.
    format: String,
    devices: Vec<DeviceFit>,
    /// The original model's verdicts when `devices` are a plan's.
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<Vec<DeviceFit>>,
    estimates_note: &'static str,
}

const ESTIMATES_NOTE: &str = "latency_ms and energy_mj are estimates from each device's roofline (see latency_basis), not measurements";

/// `edgefit fit`.
pub fn fit_cmd(args: &FitArgs) -> Result<()> {
    let catalog = catalog(&args.device_files)?;
    let mut wanted: Vec<&DeviceProfile> = Vec::new();
    let ids: Vec<&str> = if args.devices.is_empty() {
        vec!["all"]
    } else {
        args.devices.iter().flat_map(|d| d.split(',')).collect()
    };
    for id in ids {
        if id == "all" {
            wanted.extend(catalog.profiles.iter());
        } else {
            wanted.push(catalog.require(id)?);
        }
    }
    // Files named on the command line count as asked for.
    for file in &args.device_files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Ok(p) = DeviceProfile::from_json(&text, "")
            && let Some(p) = catalog.get(&p.id)
            && !wanted.iter().any(|w| w.id == p.id)
        {
            wanted.push(p);
        }
    }
    wanted.dedup_by(|a, b| a.id == b.id);

    let bar = progress_bar();
    let cancel = interruptible();
    let mut model = load_model(&args.model, &sink(&bar), &cancel)?;
    model = concrete(model, &args.input_shape)?;
    let format = ExportFormat::parse(&args.format).unwrap_or_default();
    let planned = args.recipe.is_some()
        || args.bits.is_some()
        || args.prune.is_some()
        || format != ExportFormat::Fp32;
    let targets = FitTargets {
        max_latency_ms: args.max_latency_ms,
    };
    let original = DeviceGraph::original(&model);
    let (_, original_fits) = fit_devices(&original, wanted.iter().copied(), targets);
    let original_fits: Vec<DeviceFit> = original_fits.into_iter().map(|d| d.fit).collect();
    let plan_fits = if planned {
        let analysis = analyse(
            &model,
            &AnalysisOptions { histogram_bins: 16 },
            &sink(&bar),
            &cancel,
        )?;
        let recipe = plan_recipe(args, format)?;
        let graph = DeviceGraph::of_recipe(&model, &analysis, &recipe, format, &cancel)
            .context("applying the plan")?;
        let (_, fits) = fit_devices(&graph, wanted.iter().copied(), targets);
        Some(fits.into_iter().map(|d| d.fit).collect::<Vec<_>>())
    } else {
        None
    };
    bar.finish_and_clear();

    let all_fit = plan_fits
        .as_ref()
        .unwrap_or(&original_fits)
        .iter()
        .all(DeviceFit::fits);
    if args.json {
        let (devices, original) = match plan_fits {
            Some(plan) => (plan, Some(original_fits)),
            None => (original_fits, None),
        };
        super::print_json(
            "fit",
            &FitJson {
                model: args.model.display().to_string(),
                format: devices
                    .first()
                    .map_or_else(|| "original".to_owned(), |d| d.form.clone()),
                devices,
                original,
                estimates_note: ESTIMATES_NOTE,
            },
        )?;
    } else {
        print!(
            "{}",
            fit_table(&original_fits, plan_fits.as_deref(), args.max_latency_ms)
        );
    }
    if args.require_fit && !all_fit {
        return Err(crate::exit::Failure::DoesNotFit(
            "a device's RAM, flash or latency verdict is red".to_owned(),
        )
        .into());
    }
    Ok(())
}

fn concrete(model: LoadedModel, input_shapes: &[String]) -> Result<LoadedModel> {
    let settings = input_shapes
        .iter()
        .map(|t| edgefit_engine::pipeline::parse_input_shape(t))
        .collect::<edgefit_engine::Result<Vec<_>>>()?;
    let symbolic = model.graph.inputs.iter().any(|i| {
        i.shape
            .as_ref()
            .is_none_or(|dims| dims.iter().any(|d| d.known().is_none_or(|v| v < 0)))
    });
    if settings.is_empty() && !symbolic {
        return Ok(model);
    }
    match edgefit_engine::pipeline::resolve_input_shape(&model, None, &settings) {
        Ok(shape) => Ok(model.with_input_shape(&shape)),
        // Named shapes that do not resolve are the user's error; symbolic dims alone are not:
        // the figures go on with unknown sizes counted as zero (and say so).
        Err(e) if settings.is_empty() => {
            eprintln!(
                "warning: activation sizes stay unknown ({}); give --input-shape NAME=DIMS",
                terminal_safe(&e.to_string())
            );
            Ok(model)
        }
        Err(e) => Err(e).context("choosing a concrete input shape"),
    }
}

fn plan_recipe(
    args: &FitArgs,
    format: ExportFormat,
) -> Result<edgefit_engine::compress::plan::Recipe> {
    let mut recipe = super::optimize::read_recipe(args.recipe.as_deref())?;
    let d = &mut recipe.defaults;
    if let Some(p) = args.prune {
        d.prune_ratio = p;
    }
    if let Some(p) =
        super::optimize::precision_of(args.bits.as_deref(), args.recipe.is_some(), format)?
    {
        d.precision = p;
    }
    if format.has_integer_kernels() {
        recipe.activations.int8 = true;
    }
    Ok(recipe)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok " } else { "NO " }
}

/// The compact table: one row per device (two with a plan: original, then plan).
pub(crate) fn fit_table(
    original: &[DeviceFit],
    plan: Option<&[DeviceFit]>,
    max_latency_ms: Option<f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:<28} {:<26} {:>16}  {:>10}  accelerator",
        "device", "form", "RAM need (margin)", "flash/storage (margin)", "latency (est.)", "energy"
    );
    let row = |out: &mut String, f: &DeviceFit| {
        let flash = match (f.fits_flash, f.flash_margin_bytes) {
            (Some(ok), Some(m)) => format!(
                "{}{} ({})",
                verdict(ok),
                bytes(f.weight_bytes),
                signed_bytes(m)
            ),
            _ => format!("    {}", bytes(f.weight_bytes)),
        };
        let latency = format!(
            "{}{:.2} ms",
            f.meets_latency.map_or("", verdict),
            f.latency_ms
        );
        let acc = f.accelerator.as_ref().map_or_else(String::new, |a| {
            let refused: Vec<String> = a
                .unsupported
                .iter()
                .take(4)
                .map(|u| format!("{} x{}", u.op, u.nodes))
                .collect();
            format!(
                "{}/{} nodes, {} partitions{}",
                a.accelerator_nodes,
                a.accelerator_nodes + a.cpu_nodes,
                a.partitions,
                if refused.is_empty() {
                    String::new()
                } else {
                    format!("; refuses {}", refused.join(", "))
                }
            )
        });
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:<28} {:<26} {:>16}  {:>7.2} mJ  {}",
            terminal_safe(&f.device),
            f.form,
            format!(
                "{}{} ({})",
                verdict(f.fits_ram),
                bytes(f.ram_needed_bytes),
                signed_bytes(f.ram_margin_bytes)
            ),
            flash,
            latency,
            f.energy_mj,
            terminal_safe(&acc)
        );
    };
    for (i, f) in original.iter().enumerate() {
        row(&mut out, f);
        if let Some(p) = plan.and_then(|p| p.get(i)) {
            row(&mut out, p);
        }
    }
    let first = plan.and_then(|p| p.first()).or(original.first());
    if let Some(f) = first {
        let _ = writeln!(
            out,
            "\npeak activations {} (planner; lower bound {}, no reuse {}); inputs {}, outputs {}",
            bytes(f.peak_activation_bytes),
            bytes(f.activation_lower_bound_bytes),
            bytes(f.naive_activation_bytes),
            bytes(f.input_bytes),
            bytes(f.output_bytes),
        );
    }
    if let Some(l) = max_latency_ms {
        let _ = writeln!(out, "latency target: {l} ms");
    }
    let _ = writeln!(out, "{ESTIMATES_NOTE}.");
    let notes: std::collections::BTreeSet<String> = original
        .iter()
        .chain(plan.unwrap_or(&[]))
        .flat_map(|f| f.notes.iter().map(move |n| format!("{}: {n}", f.device)))
        .collect();
    for n in notes {
        let _ = writeln!(out, "note: {}", terminal_safe(&n));
    }
    out
}

/// `edgefit ort-format`.
#[derive(Debug, clap::Args)]
pub struct OrtFormatArgs {
    /// The ONNX model (an export of `optimize`, or any model onnxruntime runs).
    pub model: PathBuf,
    /// Where to write the `.ort` file (`OUT.required_operators.config` goes beside it).
    #[arg(long, short)]
    pub out: PathBuf,
    /// The ONNX Runtime shared library to convert with (a file, or a folder holding
    /// libonnxruntime.so*). Default: $EDGEFIT_ONNXRUNTIME_LIB, $ORT_DYLIB_PATH, a
    /// pip-installed onnxruntime wheel, system library folders.
    #[arg(long, value_name = "PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `edgefit ort-format`: the model in onnxruntime's ORT format for ORT Mobile, and the
/// operators a reduced onnxruntime build needs for it.
pub fn ort_format_cmd(args: &OrtFormatArgs) -> Result<()> {
    let library =
        edgefit_engine::measure::runtime::onnxruntime::load(args.onnxruntime_lib.as_deref())?;
    let bar = progress_bar();
    let cancel = interruptible();
    let model = load_model(&args.model, &sink(&bar), &cancel)?;
    bar.finish_and_clear();
    let written = edgefit_engine::export::ort_format::write_ort_format(&model, &args.out)
        .context("converting to the ORT format")?;
    if args.json {
        #[derive(serde::Serialize)]
        struct Json<'a> {
            model: String,
            onnxruntime_library: String,
            #[serde(flatten)]
            written: &'a edgefit_engine::export::ort_format::OrtFormatExport,
        }
        return super::print_json(
            "ort-format",
            &Json {
                model: args.model.display().to_string(),
                onnxruntime_library: library.display().to_string(),
                written: &written,
            },
        );
    }
    println!(
        "wrote {} ({}, ORT format, basic optimizations, loaded back in onnxruntime {})",
        written.path.display(),
        bytes(written.size_bytes),
        library.display()
    );
    println!(
        "operators for a reduced build (--include_ops_by_config): {}",
        written.config_path.display()
    );
    for set in &written.operators {
        println!(
            "  {};{}: {}",
            terminal_safe(&set.domain),
            set.opset,
            terminal_safe(&set.ops.join(", "))
        );
    }
    Ok(())
}
