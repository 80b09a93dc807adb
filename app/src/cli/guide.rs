//! `sensitivity` and `search`: guided compression from the command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::guide::sensitivity::{
    Candidate, Sensitivity, SensitivityOptions, candidates, sensitivity,
};
use edgefit_engine::{AnalysisOptions, analyse};

use super::args::{DataArgs, RuntimeArgs, load_for_job};
use super::optimize::{clipping, clipping_name, prune_method, prune_ratio};
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
    /// per layer and falls back to `mse` here).
    #[arg(long, value_parser = clipping_name)]
    pub clipping: Option<String>,
}

impl CandidateArgs {
    /// The base recipe and the candidates.
    pub fn resolve(&self) -> Result<(Recipe, Vec<Candidate>)> {
        let mut recipe = match &self.recipe {
            Some(path) => {
                edgefit_engine::model::guard::regular_file(path, "recipe")?;
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                Recipe::from_json(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => Recipe::default(),
        };
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

/// `edgefit sensitivity`.
#[derive(Debug, clap::Args)]
pub struct SensitivityArgs {
    /// The ONNX model to analyse.
    pub model: PathBuf,
    #[command(flatten)]
    pub candidates: CandidateArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Runtime: `auto` (onnxruntime when installed and it runs the model: one session serves
    /// every cell), `tract` or `onnxruntime`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "tract", "onnxruntime"])]
    pub runtime: String,
    #[command(flatten)]
    pub runtime_args: RuntimeArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn sensitivity_cmd(args: &SensitivityArgs) -> Result<()> {
    let (base, candidates) = args.candidates.resolve()?;
    let shapes = args.runtime_args.shapes()?;
    let bar = progress_bar();
    let cancel = super::interruptible();
    let (model, loaded, runtime) = load_for_job(
        &args.model,
        &args.data,
        &args.runtime,
        &args.runtime_args,
        &shapes,
        &bar,
        &cancel,
    )?;
    let analysis = analyse(
        &model,
        &AnalysisOptions { histogram_bins: 1 },
        &sink(&bar),
        &cancel,
    )?;
    let options = SensitivityOptions {
        base: &base,
        candidates: &candidates,
        data: &loaded.data,
        runtime,
        input_shapes: &loaded.settings,
        output: args.runtime_args.output.as_deref(),
    };
    let result = sensitivity(&model, &analysis, &options, &sink(&bar), &cancel)?;
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
