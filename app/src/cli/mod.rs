//! Headless subcommands: thin wrappers over the same engine calls the studio makes.

pub mod args;
pub mod bench_scaling;
pub mod deploy;
pub mod diff;
pub mod guide;
pub mod measure;
pub mod optimize;
pub mod split;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use edgefit_engine::{
    AnalysisOptions, CancelToken, ModelAnalysis, NoProgress, Progress, analyse, load_model,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::format::{bytes, display_width, fit, si, terminal_safe, thousands};

/// `edgefit inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The ONNX model to inspect.
    pub model: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bins per weight histogram.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub bins: u32,
    /// Include every tensor's histogram in the JSON output.
    #[arg(long)]
    pub histograms: bool,
    /// Concrete shape for an input with symbolic or -1 dims, batch included (repeatable):
    /// shapes and MACs are then inferred at that shape.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shape: Vec<String>,
}

/// A terminal progress bar fed by engine progress reports; hidden when stderr is not a terminal.
pub(crate) fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new(1);
    let style = ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// A cancel token that Ctrl-C sets: the job stops at its next check, removes its temporary
/// files and the command exits with status 130. A second Ctrl-C exits at once.
pub(crate) fn interruptible() -> CancelToken {
    static TOKEN: std::sync::OnceLock<CancelToken> = std::sync::OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = CancelToken::new();
            let handler = token.clone();
            // Without a handler (e.g. one is already set) Ctrl-C keeps its default: exit.
            let _ = ctrlc::set_handler(move || {
                if handler.is_cancelled() {
                    std::process::exit(i32::from(crate::exit::CANCELLED));
                }
                handler.cancel();
            });
            token
        })
        .clone()
}

/// The progress sink of a CLI job: the bar, and with `EDGEFIT_PROGRESS_LOG=1` one line per
/// stage on stderr with the seconds since the job started (the bar is hidden when stderr is
/// not a terminal; the log says where a long job spends its time, in CI logs too).
pub(crate) fn sink(bar: &ProgressBar) -> impl Fn(Progress) + Send + Sync + '_ {
    let log = std::env::var_os("EDGEFIT_PROGRESS_LOG").is_some_and(|v| v == "1");
    let started = std::time::Instant::now();
    let last_stage = std::sync::Mutex::new(String::new());
    move |p: Progress| {
        if log {
            let mut last = last_stage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last != p.stage {
                eprintln!(
                    "[{:7.2} s{}] {}",
                    started.elapsed().as_secs_f64(),
                    resident_mb().map_or(String::new(), |mb| format!(", {mb:.0} MB resident")),
                    p.stage
                );
                last.clone_from(&p.stage);
            }
        }
        bar.set_message(p.stage);
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
    }
}

/// This process's resident memory (Linux: `/proc/self/status`), for the progress log.
fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Loads and analyses `model`, drawing a progress bar on the terminal.
fn load_and_analyse(
    model: &std::path::Path,
    bins: usize,
    input_shapes: &[String],
) -> Result<ModelAnalysis> {
    let bar = progress_bar();
    let cancel = CancelToken::new();
    let mut loaded = load_model(model, &sink(&bar), &cancel)?;
    if !input_shapes.is_empty() {
        let settings = input_shapes
            .iter()
            .map(|t| edgefit_engine::pipeline::parse_input_shape(t))
            .collect::<edgefit_engine::Result<Vec<_>>>()?;
        let shape = edgefit_engine::pipeline::resolve_input_shape(&loaded, None, &settings)?;
        loaded = loaded.with_input_shape(&shape);
    }
    let analysis = analyse(
        &loaded,
        &AnalysisOptions {
            histogram_bins: bins,
        },
        &sink(&bar),
        &cancel,
    )?;
    bar.finish_and_clear();
    Ok(analysis)
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let mut analysis = load_and_analyse(&args.model, args.bins as usize, &args.input_shape)?;
    if args.json {
        if !args.histograms {
            analysis.tensors.iter_mut().for_each(|t| t.histogram = None);
        }
        print_json("inspect", &analysis)?;
    } else {
        print!("{}", inspect_table(&analysis));
    }
    Ok(())
}

/// Version of the JSON every `--json` output prints; raised when a field changes meaning or
/// goes away (new fields do not raise it).
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Prints `value` as pretty JSON with `"schema": "edgefit.COMMAND/VERSION"` as its first
/// field, so scripts can check what they parse.
pub fn print_json(command: &str, value: &impl serde::Serialize) -> Result<()> {
    print_json_version(command, JSON_SCHEMA_VERSION, value)
}

/// [`print_json`] for a command whose JSON changed shape: `edgefit.COMMAND/VERSION`.
pub fn print_json_version(
    command: &str,
    version: u32,
    value: &impl serde::Serialize,
) -> Result<()> {
    let body = serde_json::to_value(value).context("encoding JSON")?;
    let mut object = serde_json::Map::new();
    object.insert(
        "schema".to_owned(),
        serde_json::Value::String(format!("edgefit.{command}/{version}")),
    );
    match body {
        serde_json::Value::Object(fields) => object.extend(fields),
        other => {
            object.insert("value".to_owned(), other);
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::Value::Object(object))?
    );
    Ok(())
}

/// The readable report of `edgefit inspect`.
pub fn inspect_table(a: &ModelAnalysis) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let opsets: Vec<String> = a
        .opsets
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    let _ = writeln!(out, "Model       {}", terminal_safe(&a.path));
    let _ = writeln!(
        out,
        "            {} on disk, IR {}, opsets {}, producer {}",
        bytes(a.file_size_bytes),
        a.ir_version,
        opsets.join(" "),
        if a.producer.is_empty() {
            "?".to_owned()
        } else {
            terminal_safe(&a.producer)
        }
    );
    for (label, values) in [("Inputs", &a.inputs), ("Outputs", &a.outputs)] {
        for (i, v) in values.iter().enumerate() {
            let dtype = v.dtype.map_or("?".to_owned(), |d| d.name());
            let shape = edgefit_engine::model::graph::format_shape(v.shape.as_deref());
            let kind = if v.kind == "tensor" {
                String::new()
            } else {
                format!(" ({})", v.kind)
            };
            let head = if i == 0 { label } else { "" };
            let _ = writeln!(
                out,
                "{head:<12}{} {dtype} {}{kind}",
                terminal_safe(&v.name),
                terminal_safe(&shape)
            );
        }
    }
    let by_dtype: Vec<String> = a
        .bytes_by_dtype
        .iter()
        .map(|(d, b)| format!("{d} {}", bytes(*b)))
        .collect();
    let _ = writeln!(
        out,
        "Parameters  {} ({} as stored: {})",
        thousands(a.parameters),
        bytes(a.weight_bytes),
        by_dtype.join(", ")
    );
    let _ = writeln!(
        out,
        "MACs        {}{}",
        si(a.macs),
        if a.macs_complete {
            ""
        } else {
            " (some layers unknown, see below)"
        }
    );
    let mut ops: Vec<(&String, &usize)> = a.ops.iter().collect();
    ops.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    let ops: Vec<String> = ops
        .iter()
        .map(|(o, n)| format!("{} {n}", terminal_safe(o)))
        .collect();
    let _ = writeln!(out, "Nodes       {} ({})", a.nodes, ops.join(", "));
    let _ = writeln!(out);
    let name_width = a
        .layers
        .iter()
        .map(|l| display_width(&terminal_safe(&l.name)))
        .max()
        .unwrap_or(4)
        .clamp(5, 40);
    let _ = writeln!(
        out,
        "{:<name_width$}  {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>6}",
        "Layer", "Op", "Params", "MACs", "Size", "Min", "Max", "Std", "Zeros"
    );
    for l in &a.layers {
        let macs = l.macs.map_or("?".to_owned(), si);
        let (min, max, std, zeros) = match &l.stats {
            Some(s) => (
                format!("{:.4}", s.min),
                format!("{:.4}", s.max),
                format!("{:.4}", s.std),
                format!("{:.1}%", s.zero_fraction * 100.0),
            ),
            None => Default::default(),
        };
        let name = fit(&l.name, name_width);
        let _ = writeln!(
            out,
            "{name}  {} {:>10} {macs:>10} {:>10} {min:>10} {max:>10} {std:>9} {zeros:>6}",
            fit(&l.op, 18),
            thousands(l.parameters),
            bytes(l.bytes),
        );
    }
    let unknown: Vec<String> = a
        .layers
        .iter()
        .filter_map(|l| {
            l.macs_note
                .as_ref()
                .map(|n| format!("  {}: {}", terminal_safe(&l.name), terminal_safe(n)))
        })
        .collect();
    if !unknown.is_empty() {
        let _ = writeln!(out, "\nMACs not counted:");
        for line in unknown {
            let _ = writeln!(out, "{line}");
        }
    }
    if !a.warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in &a.warnings {
            let _ = writeln!(out, "  - {}", terminal_safe(w));
        }
    }
    out
}

/// `edgefit bench-analysis`.
#[derive(Debug, clap::Args)]
pub struct BenchAnalysisArgs {
    /// Target parameter count of the synthetic model.
    #[arg(long, default_value_t = 25_000_000)]
    pub parameters: u64,
    /// Target node count (MatMul → Add → Relu blocks, 3 nodes each).
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Instead: time load + analysis of the synthetic residual CNN at each of these node
    /// counts (e.g. `2500,5000,10000,20000`) and print the time per node (linear = flat).
    #[arg(long, value_name = "NODES,NODES,…")]
    pub scaling: Option<String>,
}

pub fn bench_analysis(args: &BenchAnalysisArgs) -> Result<()> {
    if let Some(sizes) = &args.scaling {
        let sizes = bench_scaling::parse_sizes(sizes)?;
        return bench_scaling::bench_scaling(&sizes, args.runs, args.json);
    }
    let blocks = (args.nodes / 3).max(1);
    let width = ((args.parameters as f64 / blocks as f64).sqrt().round() as usize).max(1);
    let model = edgefit_engine::model::synthetic::mlp_chain(width, blocks);
    let dir = tempfile_dir()?;
    let path = dir.join("synthetic.onnx");
    let encoded = edgefit_engine::model::proto::Message::write_to_bytes(&model)?;
    edgefit_engine::model::write::write_bytes_atomic(&path, &encoded)?;
    drop(model);
    let mut load_times = Vec::new();
    let mut analysis_times = Vec::new();
    let mut last = None;
    for _ in 0..args.runs.max(1) {
        let cancel = CancelToken::new();
        let start = Instant::now();
        let loaded = load_model(&path, &NoProgress, &cancel)?;
        let loaded_at = Instant::now();
        let analysis = analyse(&loaded, &AnalysisOptions::default(), &NoProgress, &cancel)?;
        let done = Instant::now();
        load_times.push(loaded_at - start);
        analysis_times.push(done - loaded_at);
        last = Some(analysis);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let analysis = last.context("no run")?;
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1e3
    };
    let load_ms = median(&mut load_times);
    let analysis_ms = median(&mut analysis_times);
    let total_ms = load_ms + analysis_ms;
    if args.json {
        let json = serde_json::json!({
            "parameters": analysis.parameters,
            "nodes": analysis.nodes,
            "file_size_bytes": analysis.file_size_bytes,
            "threads": rayon::current_num_threads(),
            "load_ms": load_ms,
            "analysis_ms": analysis_ms,
            "total_ms": total_ms,
            "target_ms": 1000.0,
        });
        print_json("bench-analysis", &json)?;
    } else {
        println!(
            "synthetic model: {} parameters, {} nodes, {} on disk",
            thousands(analysis.parameters),
            analysis.nodes,
            bytes(analysis.file_size_bytes)
        );
        println!(
            "load {load_ms:.0} ms + analysis {analysis_ms:.0} ms = {total_ms:.0} ms (median of {} runs, {} threads; target < 1000 ms)",
            args.runs.max(1),
            rayon::current_num_threads()
        );
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("edgefit-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `edgefit bench-apply`.
#[derive(Debug, clap::Args)]
pub struct BenchApplyArgs {
    /// Target parameter count of the synthetic model.
    #[arg(long, default_value_t = 25_000_000)]
    pub parameters: u64,
    /// Target node count.
    #[arg(long, default_value_t = 1_000)]
    pub nodes: usize,
    /// Timed repetitions of each measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Print the figures as JSON (`edgefit.bench-apply/1`).
    #[arg(long)]
    pub json: bool,
}

/// Times applying recipes to a synthetic model: a whole-model change (every layer recomputed)
/// and a one-layer change (one layer recomputed, the rest from the cache).
pub fn bench_apply(args: &BenchApplyArgs) -> Result<()> {
    use edgefit_engine::compress::compressor::Compressor;
    use edgefit_engine::compress::plan::{LayerOverride, Precision, Recipe};
    let blocks = (args.nodes / 3).max(1);
    let width = ((args.parameters as f64 / blocks as f64).sqrt().round() as usize).max(1);
    let dir = tempfile_dir()?;
    let path = dir.join("synthetic.onnx");
    let encoded = edgefit_engine::model::proto::Message::write_to_bytes(
        &edgefit_engine::model::synthetic::mlp_chain(width, blocks),
    )?;
    edgefit_engine::model::write::write_bytes_atomic(&path, &encoded)?;
    drop(encoded);
    let cancel = CancelToken::new();
    let loaded = load_model(&path, &NoProgress, &cancel)?;
    let analysis = analyse(&loaded, &AnalysisOptions::default(), &NoProgress, &cancel)?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut compressor = Compressor::new(&loaded, &analysis);
    let layer_name = compressor
        .layers
        .first()
        .map(|l| l.name.clone())
        .context("no compressible layer")?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut whole_ms = Vec::new();
    let mut one_ms = Vec::new();
    for run in 0..args.runs.max(1) {
        // Alternate the global settings so every layer is stale each time.
        let mut recipe = Recipe::default();
        recipe.defaults.prune_ratio = if run % 2 == 0 { 0.5 } else { 0.4 };
        recipe.defaults.precision = Precision::Int { bits: 8 };
        let start = Instant::now();
        let all = compressor.apply(&recipe, &cancel)?;
        whole_ms.push(start.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            all.recomputed == compressor.layers.len(),
            "whole-model change recomputed {} layers",
            all.recomputed
        );
        recipe.layers.insert(
            layer_name.clone(),
            LayerOverride {
                prune_ratio: Some(0.3),
                ..Default::default()
            },
        );
        let start = Instant::now();
        let one = compressor.apply(&recipe, &cancel)?;
        one_ms.push(start.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            one.recomputed == 1,
            "one-layer change recomputed {} layers",
            one.recomputed
        );
    }
    let (whole, one) = (median(whole_ms), median(one_ms));
    if args.json {
        return print_json(
            "bench-apply",
            &serde_json::json!({
                "parameters": analysis.parameters,
                "layers": compressor.layers.len(),
                "threads": rayon::current_num_threads(),
                "runs": args.runs.max(1),
                "whole_model_change_ms": whole,
                "whole_model_change_target_ms": 200.0,
                "one_layer_change_ms": one,
                "one_layer_change_target_ms": 16.0,
                "one_layer_parameters": width as u64 * width as u64,
            }),
        );
    }
    println!(
        "synthetic model: {} parameters in {} compressible layers ({} threads)",
        thousands(analysis.parameters),
        compressor.layers.len(),
        rayon::current_num_threads()
    );
    println!(
        "whole-model change (prune 50% + int8 per-channel, every layer): {whole:.1} ms median (target < 200 ms)",
    );
    println!(
        "one-layer change ({} parameters recomputed, rest cached): {one:.2} ms median (target < 16 ms)",
        thousands(width as u64 * width as u64),
    );
    Ok(())
}

/// `edgefit profile`.
#[derive(Debug, clap::Args)]
pub struct ProfileArgs {
    /// The ONNX model to profile.
    pub model: PathBuf,
    /// Inferences to average over.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where one inference spends its time, per ONNX node, in tract (one thread). tract fuses
/// ops while optimizing (Conv + BatchNormalization + Relu become one step); fused work is
/// credited to the node whose name tract keeps, often the activation.
pub fn profile(args: &ProfileArgs) -> Result<()> {
    let cancel = CancelToken::new();
    let model = load_model(&args.model, &NoProgress, &cancel)?;
    let shape = edgefit_engine::pipeline::concrete_input_shape(&model, None)
        .context("the profile needs a model whose input dimensions are all known")?;
    let sample = vec![0.5f32; shape.iter().product()];
    let runnable = edgefit_engine::measure::runtime::TractModel::build(
        &model.proto,
        model.path.parent(),
        &shape,
        &[],
    )?;
    let times =
        edgefit_engine::measure::profile::layer_times(&runnable, &model.graph, &sample, args.runs)?;
    let total_ms: f64 = times.iter().map(|t| t.ms).sum();
    if args.json {
        let json = serde_json::json!({
            "model": model.path.display().to_string(),
            "runtime": "tract",
            "threads": 1,
            "runs": args.runs.max(1),
            "total_ms": total_ms,
            "layers": times,
        });
        print_json("profile", &json)?;
        return Ok(());
    }
    println!(
        "{} — tract, 1 thread, mean of {} runs: {total_ms:.3} ms",
        model.path.display(),
        args.runs.max(1)
    );
    println!("{:<40} {:<20} {:>10} {:>7}", "node", "op", "ms", "share");
    for t in &times {
        println!(
            "{:<40} {:<20} {:>10.4} {:>6.1}%",
            t.name,
            t.op,
            t.ms,
            t.fraction * 100.0
        );
    }
    Ok(())
}
