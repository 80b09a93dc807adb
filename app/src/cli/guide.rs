//! `sensitivity` and `search`: guided compression from the command line.

use std::path::PathBuf;

use anyhow::Result;
use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::guide::search::{
    Constraint, SearchOptions, SearchReport, format_of, search, size_candidates,
};
use edgefit_engine::guide::sensitivity::{
    Candidate, Sensitivity, SensitivityOptions, candidates, sensitivity,
};
use edgefit_engine::pipeline::{OptimizeOptions, optimize};
use edgefit_engine::{AnalysisOptions, analyse};

use super::args::{DataArgs, RuntimeArgs, load_for_job};
use super::optimize::{clipping, clipping_name, prune_method, prune_ratio, read_recipe};
use super::{progress_bar, sink};
use crate::format::{bytes, fit, terminal_safe};

/// The settings every layer is tried at, shared by `sensitivity` and `search`.
#[derive(Debug, clap::Args)]
pub struct CandidateArgs {
    /// Integer weight precisions to try, in bits (2–8), e.g. 8,6,4.
    #[arg(long, value_name = "BITS,..", value_delimiter = ',', default_value = "8,6,4,3,2",
          value_parser = clap::value_parser!(u8).range(2..=8))]
    pub bits: Vec<u8>,
    /// Do not try float16 weights.
    #[arg(long)]
    pub no_fp16: bool,
    /// Prune ratios to try (0–0.99), e.g. 0.25,0.5.
    #[arg(long, value_name = "R,..", value_delimiter = ',', default_value = "0.25,0.5,0.75,0.9",
          value_parser = prune_ratio)]
    pub prune_ratios: Vec<f32>,
    /// Do not try pruning.
    #[arg(long, conflicts_with = "prune_ratios")]
    pub no_prune: bool,
    /// Pruning method of the prune candidates.
    #[arg(long, default_value = "magnitude", value_parser = ["magnitude", "channels-l1", "channels-l2"])]
    pub prune_method: String,
    /// Start from this recipe's defaults (symmetry, per-channel, clipping, method).
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Asymmetric integer quantization (default symmetric).
    #[arg(long)]
    pub asymmetric: bool,
    /// One scale per tensor instead of one per output channel.
    #[arg(long)]
    pub per_tensor: bool,
    /// Clipping: `minmax`, `mse` or `percentile:P` (`output-mse` needs calibration inputs
    /// per layer: the sweep falls back to `mse`; the search's measured picks use it).
    #[arg(long, value_parser = clipping_name)]
    pub clipping: Option<String>,
    /// Integer weights with error compensation (GPTQ) in the plans the search measures and
    /// writes (the sweep's cells round plainly: it has no per-layer calibration inputs).
    #[arg(long)]
    pub gptq: bool,
}

impl CandidateArgs {
    /// The base recipe and the candidates.
    pub fn resolve(&self) -> Result<(Recipe, Vec<Candidate>)> {
        let mut recipe = read_recipe(self.recipe.as_deref())?;
        let d = &mut recipe.defaults;
        d.prune_method = prune_method(&self.prune_method);
        if self.asymmetric {
            d.symmetric = false;
        }
        if self.per_tensor {
            d.per_channel = false;
        }
        if let Some(c) = &self.clipping {
            d.clipping = clipping(c)?;
        }
        if self.gptq {
            d.error_compensation = true;
        }
        let mut bits = self.bits.clone();
        bits.sort_unstable_by(|a, b| b.cmp(a));
        bits.dedup();
        let ratios: &[f32] = if self.no_prune {
            &[]
        } else {
            &self.prune_ratios
        };
        Ok((recipe, candidates(&bits, !self.no_fp16, ratios)))
    }
}

/// The model, candidates, data and runtime of a sweep: what `sensitivity` and `search` share.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// The ONNX model (never overwritten).
    pub model: PathBuf,
    #[command(flatten)]
    pub candidates: CandidateArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Runtime of the sweep (and of the search's measured picks and preview; a written file
    /// is verified in both runtimes either way): `auto` (onnxruntime when installed and it
    /// runs the model: one session serves every cell), `tract` or `onnxruntime`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tract", "onnxruntime"])]
    pub runtime: String,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
}

/// `edgefit sensitivity`.
#[derive(Debug, clap::Args)]
pub struct SensitivityArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A model, its data and analysis, and its sensitivity table: the start of both commands.
struct Swept {
    model: edgefit_engine::LoadedModel,
    loaded: super::args::LoadedData,
    runtime: edgefit_engine::measure::runtime::RuntimeKind,
    base: Recipe,
    sensitivity: Sensitivity,
}

fn sweep(
    args: &SweepArgs,
    base: Recipe,
    candidates: &[Candidate],
    needs_labels: bool,
    bar: &indicatif::ProgressBar,
    cancel: &edgefit_engine::CancelToken,
) -> Result<Swept> {
    let SweepArgs {
        model: path,
        data,
        runtime,
        runtime_args,
        ..
    } = args;
    let shapes = runtime_args.shapes()?;
    let (model, loaded, runtime) =
        load_for_job(path, data, runtime, runtime_args, &shapes, bar, cancel)?;
    if needs_labels && loaded.data.labels.is_none() {
        anyhow::bail!(
            "--max-drop is a top-1 accuracy drop and needs labelled data ({}); give --data with \
             labels, or --min-sqnr DB",
            loaded.data.description
        );
    }
    let analysis = analyse(
        &model,
        &AnalysisOptions { histogram_bins: 1 },
        &sink(bar),
        cancel,
    )?;
    let options = SensitivityOptions {
        base: &base,
        candidates,
        data: &loaded.data,
        runtime,
        input_shapes: &loaded.settings,
        output: runtime_args.output.as_deref(),
    };
    let sensitivity = sensitivity(&model, &analysis, &options, &sink(bar), cancel)?;
    Ok(Swept {
        model,
        loaded,
        runtime,
        base,
        sensitivity,
    })
}

pub fn sensitivity_cmd(args: &SensitivityArgs) -> Result<()> {
    let bar = progress_bar();
    let cancel = super::interruptible();
    let (base, candidates) = args.sweep.candidates.resolve()?;
    let swept = sweep(&args.sweep, base, &candidates, false, &bar, &cancel)?;
    let result = swept.sensitivity;
    bar.finish_and_clear();
    if args.json {
        super::print_json("sensitivity", &result)?;
    } else {
        print!("{}", sensitivity_table(&result));
    }
    Ok(())
}

/// `12.3`, `∞` (identical) or `-∞`.
fn db(v: Option<f64>) -> String {
    match v {
        None => "∞".to_owned(),
        Some(v) if v == f64::NEG_INFINITY => "-∞".to_owned(),
        Some(v) => format!("{v:.1}"),
    }
}

/// The readable sensitivity table: one row per layer, the output SQNR (dB) at each candidate.
pub fn sensitivity_table(s: &Sensitivity) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Output SQNR (dB, lowest over {} output{}) with ONLY that layer changed; {} samples of {}",
        s.outputs.len(),
        if s.outputs.len() == 1 { "" } else { "s" },
        s.samples,
        terminal_safe(&s.data)
    );
    let name_width = s
        .layers
        .iter()
        .map(|l| crate::format::display_width(&l.name))
        .max()
        .unwrap_or(5)
        .clamp(5, 36);
    let _ = write!(out, "{:<name_width$}  {:>9}", "layer", "fp32 size");
    for label in &s.labels {
        let _ = write!(out, "  {:>9}", fit(label, 9).trim_end());
    }
    let _ = writeln!(out);
    for layer in &s.layers {
        let name = fit(&terminal_safe(&layer.name), name_width);
        let pad = name_width.saturating_sub(crate::format::display_width(&name));
        let _ = write!(out, "{name}{}  {:>9}", " ".repeat(pad), bytes(layer.bytes));
        for cell in &layer.cells {
            let text = cell
                .as_ref()
                .map_or("n/a".to_owned(), |c| db(c.output_sqnr_db));
            let _ = write!(out, "  {text:>9}");
        }
        let _ = writeln!(out);
    }
    if let Some(a) = s.original_accuracy {
        let _ = writeln!(
            out,
            "original top-1 accuracy {:.2}% (per-cell accuracy in --json)",
            a * 100.0
        );
    }
    if !s.skipped.is_empty() {
        let _ = writeln!(
            out,
            "{} layers not compressible (see --json)",
            s.skipped.len()
        );
    }
    let _ = writeln!(
        out,
        "{} model runs, {} model builds, {:.1} s ({}; runtime {})",
        s.model_runs,
        s.model_builds,
        s.wall_time_s,
        s.method,
        s.runtime.name()
    );
    out
}

/// `edgefit search`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("constraint").required(true).args(["min_sqnr", "max_drop"])))]
pub struct SearchArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Where to write the chosen plan's export; its recipe and report go beside it.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Keep the output SQNR (dB, the lowest over float outputs) at or above this — the same
    /// floor as `optimize --min-sqnr`.
    #[arg(long, value_name = "DB")]
    pub min_sqnr: Option<f64>,
    /// Keep the top-1 accuracy drop at or below this many percentage points (labelled data).
    #[arg(long, value_name = "PP")]
    pub max_drop: Option<f64>,
    /// A size budget for the written file, in KiB: the most faithful plan whose file fits.
    #[arg(long, value_name = "KIB")]
    pub budget_kib: Option<u64>,
    /// Full evaluations of front points (the final export's verification not counted).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub max_evaluations: u16,
    /// Latency runs per model for the export's report (0 skips latency).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Print JSON: the sweep's figures, the search and the export's report.
    #[arg(long)]
    pub json: bool,
}

/// What `search --json` prints.
#[derive(serde::Serialize)]
struct SearchOutput<'a> {
    /// Candidates left out of the sweep, and why.
    dropped_candidates: &'a [String],
    sensitivity: SweepSummary<'a>,
    search: &'a SearchReport,
    export: Option<&'a edgefit_engine::pipeline::OptimizeReport>,
}

/// The sweep's cost, for the search's JSON (the full table is `edgefit sensitivity --json`).
#[derive(serde::Serialize)]
struct SweepSummary<'a> {
    labels: &'a [String],
    layers: usize,
    model_runs: u64,
    model_builds: u64,
    wall_time_s: f64,
}

pub fn search_cmd(args: &SearchArgs) -> Result<()> {
    let constraint = match (args.min_sqnr, args.max_drop) {
        (Some(db), _) => Constraint::MinSqnrDb(db),
        (None, Some(pp)) => Constraint::MaxDropPp(pp),
        (None, None) => anyhow::bail!("give --min-sqnr DB or --max-drop PP"),
    };
    let bar = progress_bar();
    let cancel = super::interruptible();
    let (base, candidates) = args.sweep.candidates.resolve()?;
    // Only what can make the file smaller is worth sweeping for a size search.
    let (candidates, dropped) = size_candidates(&candidates, base.defaults.prune_method);
    if candidates.is_empty() {
        return Err(crate::exit::Failure::Usage(format!(
            "no candidate can make the file smaller: {}",
            dropped.join("; ")
        ))
        .into());
    }
    let swept = sweep(
        &args.sweep,
        base,
        &candidates,
        matches!(constraint, Constraint::MaxDropPp(_)),
        &bar,
        &cancel,
    )?;
    let measure = OptimizeOptions {
        recipe: &swept.base,
        format: edgefit_engine::export::build::ExportFormat::Fp32,
        data: &swept.loaded.data,
        calibration: swept.loaded.calibration.as_ref(),
        latency_runs: 0,
        runtime: swept.runtime,
        input_shapes: &swept.loaded.settings,
        output: args.sweep.runtime_args.output.as_deref(),
    };
    let options = SearchOptions {
        constraint,
        budget_bytes: args.budget_kib.map(|k| k * 1024),
        max_evaluations: usize::from(args.max_evaluations),
        measure,
    };
    let found = search(
        &swept.model,
        &swept.sensitivity,
        &swept.base,
        &options,
        &sink(&bar),
        &cancel,
    )?;
    let export = match found.chosen {
        Some(_) => {
            let options = OptimizeOptions {
                recipe: &found.recipe,
                format: format_of(&found.recipe),
                latency_runs: args.runs,
                ..measure
            };
            Some(optimize(
                &swept.model,
                &options,
                &args.out,
                &sink(&bar),
                &cancel,
            )?)
        }
        None => None,
    };
    bar.finish_and_clear();
    let s = &swept.sensitivity;
    if args.json {
        super::print_json(
            "search",
            &SearchOutput {
                dropped_candidates: &dropped,
                sensitivity: SweepSummary {
                    labels: &s.labels,
                    layers: s.layers.len(),
                    model_runs: s.model_runs,
                    model_builds: s.model_builds,
                    wall_time_s: s.wall_time_s,
                },
                search: &found,
                export: export.as_ref(),
            },
        )?;
    } else {
        if !dropped.is_empty() {
            println!("left out of the sweep: {}", dropped.join("; "));
        }
        print!("{}", search_summary(s, &found));
        if let Some(report) = &export {
            super::optimize::print_optimize(report);
        }
    }
    match &export {
        Some(report) => super::optimize::verdict(report),
        None => Err(crate::exit::Failure::Quality(format!(
            "no plan on the front met {} ({} measured, the rest predicted below it); nothing \
             was written (try a looser constraint, or other candidates)",
            describe(found.constraint),
            found.evaluations.len()
        ))
        .into()),
    }
}

fn describe(c: Constraint) -> String {
    match c {
        Constraint::MinSqnrDb(db) => format!("output SQNR ≥ {db} dB"),
        Constraint::MaxDropPp(pp) => format!("a top-1 drop ≤ {pp} points"),
    }
}

/// The search for people: the sweep's cost, then each measured pick, predicted vs measured.
pub fn search_summary(s: &Sensitivity, r: &SearchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sensitivity: {} layers × {} candidates, {} model runs, {} builds, {:.1} s",
        s.layers.len(),
        s.labels.len(),
        s.model_runs,
        s.model_builds,
        s.wall_time_s
    );
    let _ = writeln!(
        out,
        "search: {}{}; {} plans on the front, {} measured ({:.1} s)",
        describe(r.constraint),
        r.budget_bytes
            .map_or(String::new(), |b| format!(" within {}", bytes(b))),
        r.front.len(),
        r.evaluations.len(),
        r.wall_time_s
    );
    let pct = |a: Option<f64>| a.map_or("–".to_owned(), |a| format!("{:.2}%", a * 100.0));
    let _ = writeln!(
        out,
        "  {:>5}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  verdict",
        "plan", "size", "pred. dB", "meas. dB", "pred. acc", "meas. acc"
    );
    for e in &r.evaluations {
        let _ = writeln!(
            out,
            "  {:>5}  {:>10}  {:>10}  {:>10}  {:>9}  {:>9}  {}",
            e.point,
            bytes(e.size_bytes),
            db(e.predicted_sqnr_db),
            db(e.measured_sqnr_db),
            pct(e.predicted_accuracy),
            pct(e.measured_accuracy),
            if e.passed { "passes" } else { "fails" }
        );
    }
    match r.chosen {
        Some(i) => {
            let _ = writeln!(
                out,
                "chosen: plan {i} ({} of {} layers compressed)",
                r.front[i].choice.iter().filter(|c| c.is_some()).count(),
                s.layers.len()
            );
        }
        None => {
            let _ = writeln!(out, "chosen: none");
        }
    }
    out
}
