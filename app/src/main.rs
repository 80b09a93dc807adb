//! `edgefit`: the Edgefit Studio window, and headless subcommands for scripts and CI.

use edgefit::{cli, gui};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Edgefit Studio: inspect, prune and quantize ONNX models for edge devices.
///
/// With no subcommand, opens the studio window on MODEL (or on a bundled sample model).
#[derive(Debug, Parser)]
#[command(name = "edgefit", version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Model to open in the studio (default: the bundled MNIST CNN sample).
    model: Option<PathBuf>,
    /// Save a PNG of the studio window once the model is shown, then exit.
    #[arg(long, value_name = "PNG")]
    screenshot: Option<PathBuf>,
    /// Start the studio with this compression recipe (JSON) instead of the defaults.
    #[arg(long, value_name = "JSON")]
    recipe: Option<PathBuf>,
    /// Run a scripted session in the studio: a JSON array of steps, each setting the format
    /// and recipe, selecting a layer and evaluating (see assets/screenshot-tour.json).
    #[arg(long, value_name = "JSON")]
    tour: Option<PathBuf>,
    /// The most memory a size computed from a model's declared dims may take (generated
    /// inputs, constants a runtime folds), e.g. `512M`, `16G`; default: the larger of 8 GiB and
    /// 4× the model file. Larger requests are refused before anything is allocated.
    #[arg(long, global = true, value_name = "BYTES", value_parser = byte_size)]
    memory_budget: Option<u64>,
    /// The longest one inference may run in onnxruntime before it is stopped, in seconds
    /// (default 300): a model can loop forever.
    #[arg(long, global = true, value_name = "SECONDS")]
    run_timeout: Option<u64>,
    /// More log lines on stderr (from edgefit, tract, onnxruntime and the window): `-v` info,
    /// `-vv` debug, `-vvv` trace. The default shows warnings; `RUST_LOG=debug` works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

/// Logs of every crate (`log` records too) on stderr, at the level `-v`/`-q`/`RUST_LOG` give.
/// By default edgefit's warnings and every crate's errors: the window toolkit's warnings
/// about the display (XSETTINGS, clipboard backends) are noise for a user.
fn init_logs(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<LevelFilter>().ok());
    let everything = |level| Targets::new().with_default(level);
    let filter = match (quiet, verbose, from_env) {
        (true, _, _) => everything(LevelFilter::ERROR),
        (false, 0, Some(level)) => everything(level),
        (false, 0, None) => Targets::new()
            .with_target("edgefit", LevelFilter::WARN)
            .with_target("edgefit_engine", LevelFilter::WARN)
            .with_default(LevelFilter::ERROR),
        (false, 1, _) => everything(LevelFilter::INFO),
        (false, 2, _) => everything(LevelFilter::DEBUG),
        (false, _, _) => everything(LevelFilter::TRACE),
    };
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        // Colours only for a terminal: a log file or CI log gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second subscriber (tests that call main twice) is not an error worth stopping for.
    let _ = tracing_subscriber::registry()
        .with(output)
        .with(filter)
        .try_init();
}

/// `1234`, `512K`, `512M`, `16G` (binary units).
fn byte_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|v| v.checked_mul(1u64 << shift))
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("`{text}` is not a size such as 512M or 16G"))
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the model's structure, parameters, MACs and weight statistics.
    Inspect(cli::InspectArgs),
    /// Prune and quantize a model, measure it against the original, export and verify it.
    Optimize(Box<cli::optimize::OptimizeArgs>),
    /// Accuracy (labelled data) or fidelity (against --reference) of a model, in tract or
    /// onnxruntime.
    Eval(cli::measure::EvalArgs),
    /// Single-sample latency of a model (median and p90), in tract, onnxruntime or both.
    Bench(cli::measure::BenchArgs),
    /// Compare two models on the same samples: accuracy, fidelity, size, latency.
    Compare(cli::measure::CompareArgs),
    /// What changed between two models: nodes added, removed and changed, and every weight's
    /// shape, storage, SQNR, sparsity and bits (no runtime needed).
    Diff(cli::diff::DiffArgs),
    /// Each compressible layer alone at each candidate setting (bits, fp16, prune ratios):
    /// the model's output error, to see which layers matter.
    Sensitivity(Box<cli::guide::SensitivityArgs>),
    /// The smallest plan within --min-sqnr / --max-drop (or the most faithful within
    /// --budget-kib), from the sensitivity sweep: measured, written and verified.
    Search(Box<cli::guide::SearchArgs>),
    /// Will the model (and a plan) fit each device: peak activation memory, weights against
    /// RAM and flash, estimated latency and energy, what the accelerator refuses.
    Fit(Box<cli::deploy::FitArgs>),
    /// The device profiles there are (built-in and your own).
    Devices(cli::deploy::DevicesArgs),
    /// The model in onnxruntime's ORT format (ORT Mobile), converted by onnxruntime, with the
    /// operator config of a reduced build that runs it.
    OrtFormat(cli::deploy::OrtFormatArgs),
    /// The edge–cloud split: every cut with the tensors that cross it (--list), or the device
    /// and server halves at a cut, written and verified (head → tail against the model).
    Split(Box<cli::split::SplitArgs>),
    /// Time applying recipes to a synthetic ~25M-parameter model (whole model and one layer).
    BenchApply(cli::BenchApplyArgs),
    /// Per-layer time profile of one inference (tract, one thread).
    Profile(cli::ProfileArgs),
    /// Time load + full analysis of a large synthetic model (~25M parameters, ~1,000 nodes).
    BenchAnalysis(cli::BenchAnalysisArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logs(args.verbose, args.quiet);
    if let Some(bytes) = args.memory_budget {
        edgefit_engine::model::guard::set_memory_budget_bytes(bytes);
    }
    if let Some(seconds) = args.run_timeout {
        edgefit_engine::model::guard::set_run_timeout(std::time::Duration::from_secs(seconds));
    }
    let result = match args.command {
        Some(Command::Inspect(a)) => cli::inspect(&a),
        Some(Command::BenchAnalysis(a)) => cli::bench_analysis(&a),
        Some(Command::Profile(a)) => cli::profile(&a),
        Some(Command::BenchApply(a)) => cli::bench_apply(&a),
        Some(Command::Optimize(a)) => cli::optimize::optimize_cmd(&a),
        Some(Command::Eval(a)) => cli::measure::eval_cmd(&a),
        Some(Command::Bench(a)) => cli::measure::bench_cmd(&a),
        Some(Command::Compare(a)) => cli::measure::compare_cmd(&a),
        Some(Command::Diff(a)) => cli::diff::diff_cmd(&a),
        Some(Command::Sensitivity(a)) => cli::guide::sensitivity_cmd(&a),
        Some(Command::Search(a)) => cli::guide::search_cmd(&a),
        Some(Command::Split(a)) => cli::split::split_cmd(&a),
        Some(Command::Fit(a)) => cli::deploy::fit_cmd(&a),
        Some(Command::Devices(a)) => cli::deploy::devices_cmd(&a),
        Some(Command::OrtFormat(a)) => cli::deploy::ort_format_cmd(&a),
        None => gui::run(gui::StartOptions {
            model: args.model,
            screenshot: args.screenshot,
            recipe: args.recipe,
            tour: args.tour,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Names inside the message come from the model: no escape sequence reaches the
            // terminal.
            eprintln!(
                "error: {}",
                edgefit::format::terminal_safe(&format!("{error:#}"))
            );
            edgefit::exit::status_of(&error)
        }
    }
}
