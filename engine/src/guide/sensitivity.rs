//! Per-layer sensitivity: each compressible layer set ALONE to each candidate setting, and the
//! model's outputs measured against the original's on the same samples.
//!
//! How it stays fast: in onnxruntime the model is built once with every candidate weight
//! declared an overridable initializer, and each (layer, candidate) cell is one batch of runs
//! that feeds that layer's compressed weight in place of the original — no rebuild, samples
//! in parallel on every core. Cells the override cannot express (tract, weights that live in
//! subgraphs, structured pruning that changes shapes) rebuild the
//! model with only that layer changed. Both paths compute what a weight-only export with that
//! one layer changed computes (the fp32 export's weights are the compressed values).

use std::collections::HashSet;
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::analyse::analysis::{AnalysisOptions, ModelAnalysis, analyse};
use crate::compress::compressor::{Compressor, LayerCompression, SkippedLayer};
use crate::compress::plan::{LayerOverride, Precision, Recipe};
use crate::error::Result;
use crate::export::build::{ExportFormat, build_export};
use crate::job::{CancelToken, NoProgress, ProgressSink, report};
use crate::measure::dataset::Dataset;
use crate::measure::eval::{
    Difference, accuracy, json_db, json_db_read, json_floats, json_floats_read, top_k,
};
use crate::measure::inputs::{InputShapes, resolve_inputs};
use crate::measure::runtime::onnxruntime::{
    InitializerOverride, OrtModel, with_overridable_initializers,
};
use crate::measure::runtime::{BuildOptions, RunnableModel, RuntimeKind};
use crate::model::dtype::DType;
use crate::model::load::{LoadedModel, WeightOrigin};
use crate::pipeline::{CompareOutputs, structured_pass};

/// The `schema` of [`Sensitivity`] as JSON.
pub const SENSITIVITY_SCHEMA: &str = "edgefit.sensitivity/1";

/// One setting tried on each layer alone: a weight precision, a prune ratio (by the base
/// recipe's method), or both.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub precision: Precision,
    pub prune_ratio: f32,
}

impl Candidate {
    /// `int4`, `fp16`, `prune 50%`, `int8 + prune 50%`.
    pub fn label(&self) -> String {
        let precision = match self.precision {
            Precision::Float32 => None,
            Precision::Float16 => Some("fp16".to_owned()),
            Precision::Int { bits } => Some(format!("int{bits}")),
        };
        let prune =
            (self.prune_ratio > 0.0).then(|| format!("prune {:.0}%", self.prune_ratio * 100.0));
        match (precision, prune) {
            (Some(p), Some(r)) => format!("{p} + {r}"),
            (Some(p), None) => p,
            (None, Some(r)) => r,
            (None, None) => "fp32".to_owned(),
        }
    }
}

/// The candidates of a sweep: integer `bits` (as given), float16 when asked, then each of
/// `prune_ratios` at float32.
pub fn candidates(bits: &[u8], float16: bool, prune_ratios: &[f32]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = bits
        .iter()
        .map(|&bits| Candidate {
            precision: Precision::Int { bits },
            prune_ratio: 0.0,
        })
        .collect();
    if float16 {
        out.push(Candidate {
            precision: Precision::Float16,
            prune_ratio: 0.0,
        });
    }
    out.extend(prune_ratios.iter().map(|&prune_ratio| Candidate {
        precision: Precision::Float32,
        prune_ratio,
    }));
    out
}

/// What [`sensitivity`] runs on.
#[derive(Clone, Copy)]
pub struct SensitivityOptions<'a> {
    /// The settings each candidate starts from (symmetry, per-channel scales, clipping, the
    /// prune method); its per-layer overrides are not used — every other layer stays float.
    pub base: &'a Recipe,
    pub candidates: &'a [Candidate],
    pub data: &'a Dataset,
    pub runtime: RuntimeKind,
    pub input_shapes: &'a InputShapes,
    /// The evaluated output instead of the model's first.
    pub output: Option<&'a str>,
}

/// One layer at one candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The lowest SQNR over the compared float outputs (`null`: identical, `"-inf"`: some
    /// value became NaN or infinite).
    #[serde(serialize_with = "json_db", deserialize_with = "json_db_read")]
    pub output_sqnr_db: Option<f64>,
    /// Per compared output (see [`Sensitivity::outputs`]): the noise power over the signal
    /// power — what the search adds up across layers (`"inf"` in JSON when infinite).
    #[serde(serialize_with = "json_floats", deserialize_with = "json_floats_read")]
    pub noise_ratio: Vec<f64>,
    /// Fraction of samples whose top-1 class of the evaluated output is the original's.
    pub top1_agreement: f64,
    /// Top-1 accuracy on labelled data.
    pub accuracy: Option<f64>,
    /// The layer's weight SQNR against its original values.
    #[serde(serialize_with = "json_db", deserialize_with = "json_db_read")]
    pub weight_sqnr_db: Option<f64>,
    /// Bytes of the layer's weight as the export stores it, and MACs after (this layer's own
    /// figures: structured pruning also shrinks the next layer, which is not counted here).
    pub bytes: u64,
    pub macs: Option<u64>,
}

impl Cell {
    /// The noise power ratio of the worst output.
    pub fn worst_noise(&self) -> f64 {
        self.noise_ratio.iter().copied().fold(0.0, f64::max)
    }
}

/// A layer's row of the sensitivity table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerSensitivity {
    pub name: String,
    pub op: String,
    pub weight: String,
    pub parameters: u64,
    /// The weight's float32 bytes and the layer's MACs, before compression.
    pub bytes: u64,
    pub macs: Option<u64>,
    /// Parallel to [`Sensitivity::candidates`]; `null` where the candidate does not apply
    /// (structured pruning of an op that has no output channels to remove).
    pub cells: Vec<Option<Cell>>,
}

/// Every compressible layer's output error at each candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    /// [`SENSITIVITY_SCHEMA`].
    pub schema: String,
    pub model: String,
    /// The model file's size and modification time when it was measured: a saved table
    /// is used again only for the same file.
    pub model_file: FileStamp,
    pub data: String,
    pub samples: usize,
    /// Whether the data was generated (no labels: fidelity only).
    pub generated_data: bool,
    pub runtime: RuntimeKind,
    pub input_shape: Vec<usize>,
    pub base: Recipe,
    pub candidates: Vec<Candidate>,
    /// `candidates` for people, in the same order.
    pub labels: Vec<String>,
    /// The outputs compared (the evaluated one first, then the model's other float outputs).
    pub outputs: Vec<String>,
    /// Top-1 accuracy of the original model on labelled data.
    pub original_accuracy: Option<f64>,
    pub layers: Vec<LayerSensitivity>,
    pub skipped: Vec<SkippedLayer>,
    /// Model runs (one sample each) and model builds the sweep took, and its wall time.
    pub model_runs: u64,
    pub model_builds: u64,
    pub wall_time_s: f64,
    /// How the cells were measured.
    pub method: String,
}

/// A file's size and modification time (seconds since 1970), to tell whether it changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStamp {
    pub size_bytes: u64,
    pub modified_unix_s: u64,
}

impl FileStamp {
    /// The stamp of `path` now (zeros when it cannot be read).
    pub fn of(path: &std::path::Path) -> Self {
        let Ok(meta) = std::fs::metadata(path) else {
            return Self::default();
        };
        Self {
            size_bytes: meta.len(),
            modified_unix_s: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        }
    }
}

impl Sensitivity {
    /// Whether this table still describes `model` measured on `data` at `input_shape`: the
    /// same file (size and modification time), samples and input shape. (Other default
    /// settings are shown against it: see [`Self::same_defaults`].)
    pub fn describes(&self, model: &LoadedModel, data: &Dataset, input_shape: &[usize]) -> bool {
        self.model == model.path.display().to_string()
            && self.model_file == FileStamp::of(&model.path)
            && self.model_file != FileStamp::default()
            && self.data == data.description
            && self.samples == data.len()
            && self.input_shape == input_shape
    }

    /// Whether `recipe` has the defaults the cells depend on (symmetry, per-channel scales,
    /// clipping, prune method) that this table was measured with.
    pub fn same_defaults(&self, recipe: &Recipe) -> bool {
        let (a, b) = (&self.base.defaults, &recipe.defaults);
        a.symmetric == b.symmetric
            && a.per_channel == b.per_channel
            && a.clipping == b.clipping
            && a.prune_method == b.prune_method
    }
}

/// How one cell's model is run.
enum Runner {
    /// One onnxruntime session; the layers whose weights can be overridden per run.
    Override {
        model: Box<OrtModel>,
        overridable: HashSet<String>,
    },
    /// A model built per cell.
    Rebuild,
}

/// Measures every compressible layer of `model` alone at every candidate (see the module
/// documentation for how).
pub fn sensitivity(
    model: &LoadedModel,
    analysis: &ModelAnalysis,
    options: &SensitivityOptions<'_>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<Sensitivity> {
    let started = Instant::now();
    let mut compressor = Compressor::new(model, analysis);
    let inputs = resolve_inputs(model, Some(options.data), options.input_shapes)?;
    let compare = CompareOutputs::of(model, options.output);
    let build_options = BuildOptions {
        fixed_inputs: inputs.fixed.clone(),
        output: options.output.map(str::to_owned),
        ..BuildOptions::default()
    };
    let build = |proto: &crate::model::proto::ModelProto| {
        RunnableModel::build_with(
            options.runtime,
            proto,
            model.path.parent(),
            &inputs.shape,
            &compare.extra,
            &build_options,
        )
    };
    let mut counts = Counts::default();

    // The runner, and the original outputs computed by it (the same session for both, so a
    // cell differs from the reference only by its weight).
    let overridable: HashSet<String> = compressor
        .layers
        .iter()
        .filter(|l| {
            let w = &model.weights[l.weight_index];
            w.graph.is_empty()
                && matches!(
                    w.origin,
                    WeightOrigin::Initializer | WeightOrigin::ConstantNode
                )
                && w.dtype == DType::FLOAT32
        })
        .map(|l| l.weight.clone())
        .collect();
    report(progress, "sensitivity: building the model", 0, 1);
    let runnable_proto = model.runnable_proto()?;
    let (runner, reference) = if options.runtime == RuntimeKind::OnnxRuntime {
        let names: Vec<&str> = overridable.iter().map(String::as_str).collect();
        let proto = with_overridable_initializers(&runnable_proto, &names);
        let RunnableModel::OnnxRuntime(ort) = build(&proto)? else {
            return Err(crate::error::Error::Runtime {
                runtime: "onnxruntime",
                reason: "the model was not built in onnxruntime".to_owned(),
            });
        };
        counts.builds += 1;
        let reference = run_overriding(&ort, options.data, &[], cancel)?;
        counts.runs += options.data.len() as u64;
        (
            Runner::Override {
                model: Box::new(ort),
                overridable,
            },
            reference,
        )
    } else {
        let runnable = build(&runnable_proto)?;
        counts.builds += 1;
        let reference = crate::measure::eval::run_dataset_outputs(
            &runnable,
            options.data,
            &NoProgress,
            cancel,
        )?;
        counts.runs += options.data.len() as u64;
        (Runner::Rebuild, reference)
    };
    drop(runnable_proto);
    let original_accuracy = options
        .data
        .labels
        .as_ref()
        .map(|labels| accuracy(&first_outputs(&reference), labels).top1);

    let total = (compressor.layers.len() * options.candidates.len()) as u64;
    let mut done = 0u64;
    let mut layers = Vec::with_capacity(compressor.layers.len());
    for i in 0..compressor.layers.len() {
        let layer = compressor.layers[i].clone();
        let mut cells = Vec::with_capacity(options.candidates.len());
        for candidate in options.candidates {
            cancel.check()?;
            report(
                progress,
                &format!("sensitivity: {}", layer.name),
                done,
                total,
            );
            done += 1;
            let structured =
                candidate.prune_ratio > 0.0 && options.base.defaults.prune_method.is_structured();
            if structured && !layer.structured_ok {
                cells.push(None);
                continue;
            }
            let recipe = one_layer(options.base, &layer.name, *candidate);
            let compression = compressor.apply(&recipe, cancel)?;
            let result = compression.layers[i].clone();
            let outputs = match &runner {
                Runner::Override {
                    model: ort,
                    overridable,
                } if !structured && overridable.contains(&layer.weight) => {
                    let dims: Vec<usize> = model.weights[layer.weight_index]
                        .dims
                        .iter()
                        .map(|&d| d.max(0) as usize)
                        .collect();
                    let replaced = [InitializerOverride {
                        name: &layer.weight,
                        shape: &dims,
                        values: &result.values,
                    }];
                    run_overriding(ort, options.data, &replaced, cancel)?
                }
                _ => {
                    let proto = if structured {
                        // No channel of this layer can go (the graph does not allow it).
                        let Some(proto) = with_structured(model, analysis, &recipe, cancel)? else {
                            cells.push(None);
                            continue;
                        };
                        proto
                    } else {
                        build_export(
                            model,
                            &compressor,
                            &compression,
                            ExportFormat::Fp32,
                            None,
                            None,
                        )?
                        .proto
                    };
                    let runnable = build(&proto)?;
                    counts.builds += 1;
                    crate::measure::eval::run_dataset_outputs(
                        &runnable,
                        options.data,
                        &NoProgress,
                        cancel,
                    )?
                }
            };
            counts.runs += options.data.len() as u64;
            cells.push(Some(cell(
                &reference,
                &outputs,
                &compare.float,
                options.data.labels.as_deref(),
                &result.report,
            )));
        }
        layers.push(LayerSensitivity {
            name: layer.name.clone(),
            op: layer.op.clone(),
            weight: layer.weight.clone(),
            parameters: compressor.original(i).len() as u64,
            bytes: compressor.original(i).len() as u64 * 4,
            macs: layer.macs,
            cells,
        });
    }
    report(progress, "sensitivity: done", total, total);
    let method = match &runner {
        Runner::Override { overridable, .. } if overridable.len() == compressor.layers.len() => {
            "onnxruntime, one session: each layer's compressed weight fed per run".to_owned()
        }
        Runner::Override { overridable, .. } => format!(
            "onnxruntime, one session: {} of {} layers' compressed weights fed per run, the \
             others (weights in subgraphs or not float32) rebuilt per cell",
            overridable.len(),
            compressor.layers.len()
        ),
        Runner::Rebuild => format!("{}, the model rebuilt per cell", options.runtime.name()),
    };
    Ok(Sensitivity {
        schema: SENSITIVITY_SCHEMA.to_owned(),
        model: model.path.display().to_string(),
        model_file: FileStamp::of(&model.path),
        data: options.data.description.clone(),
        samples: options.data.len(),
        generated_data: options.data.generated,
        runtime: options.runtime,
        input_shape: inputs.shape,
        base: options.base.clone(),
        candidates: options.candidates.to_vec(),
        labels: options.candidates.iter().map(Candidate::label).collect(),
        outputs: compare
            .names
            .iter()
            .zip(&compare.float)
            .filter(|(_, f)| **f)
            .map(|(n, _)| n.clone())
            .collect(),
        original_accuracy,
        layers,
        skipped: compressor.skipped.clone(),
        model_runs: counts.runs,
        model_builds: counts.builds,
        wall_time_s: started.elapsed().as_secs_f64(),
        method,
    })
}

#[derive(Default)]
struct Counts {
    runs: u64,
    builds: u64,
}

/// `base`'s defaults with every layer float and unpruned, except `layer` at `candidate`.
pub fn one_layer(base: &Recipe, layer: &str, candidate: Candidate) -> Recipe {
    let mut recipe = base.clone();
    recipe.defaults.precision = Precision::Float32;
    recipe.defaults.prune_ratio = 0.0;
    recipe.defaults.exclude = false;
    recipe.layers.clear();
    recipe.layers.insert(
        layer.to_owned(),
        LayerOverride {
            precision: Some(candidate.precision),
            prune_ratio: Some(candidate.prune_ratio),
            ..LayerOverride::default()
        },
    );
    recipe
}

/// The model with `recipe`'s structured pruning applied (channels removed) and its other
/// settings compressed into an fp32 export; `None` when no channel can be removed.
fn with_structured(
    model: &LoadedModel,
    analysis: &ModelAnalysis,
    recipe: &Recipe,
    cancel: &CancelToken,
) -> Result<Option<crate::model::proto::ModelProto>> {
    let Some(pass) = structured_pass(model, analysis, recipe, cancel)?
        .filter(|pass| pass.removals.iter().any(|r| r.removed > 0))
    else {
        return Ok(None);
    };
    let shrunk_analysis = analyse(
        &pass.model,
        &AnalysisOptions { histogram_bins: 1 },
        &NoProgress,
        cancel,
    )?;
    let mut compressor = Compressor::new(&pass.model, &shrunk_analysis);
    let compression = compressor.apply(&pass.recipe, cancel)?;
    Ok(Some(
        build_export(
            &pass.model,
            &compressor,
            &compression,
            ExportFormat::Fp32,
            None,
            None,
        )?
        .proto,
    ))
}

/// Every sample of `data` through `model` with `overrides`, in parallel: `[sample][output]`.
fn run_overriding(
    model: &OrtModel,
    data: &Dataset,
    overrides: &[InitializerOverride<'_>],
    cancel: &CancelToken,
) -> Result<Vec<Vec<Vec<f32>>>> {
    (0..data.len())
        .into_par_iter()
        .map(|i| {
            cancel.check()?;
            model.run_overriding(data.sample(i), overrides)
        })
        .collect()
}

fn first_outputs(all: &[Vec<Vec<f32>>]) -> Vec<Vec<f32>> {
    all.iter()
        .map(|s| s.first().cloned().unwrap_or_default())
        .collect()
}

/// The cell of `outputs` against `reference` (`[sample][output][value]`).
fn cell(
    reference: &[Vec<Vec<f32>>],
    outputs: &[Vec<Vec<f32>>],
    float: &[bool],
    labels: Option<&[i64]>,
    layer: &LayerCompression,
) -> Cell {
    let judged: Vec<usize> = if float.iter().any(|&f| f) {
        (0..float.len()).filter(|&j| float[j]).collect()
    } else {
        (0..float.len()).collect()
    };
    let noise_ratio: Vec<f64> = judged
        .iter()
        .map(|&j| {
            let mut d = Difference::default();
            for (r, o) in reference.iter().zip(outputs) {
                if let (Some(r), Some(o)) = (r.get(j), o.get(j)) {
                    d.add(r, o);
                }
            }
            noise_ratio(&d)
        })
        .collect();
    let worst = noise_ratio.iter().copied().fold(0.0, f64::max);
    let agree = reference
        .iter()
        .zip(outputs)
        .filter(|(r, o)| match (r.first(), o.first()) {
            (Some(r), Some(o)) => top_k(r, 1) == top_k(o, 1),
            _ => false,
        })
        .count();
    Cell {
        output_sqnr_db: sqnr_of_noise(worst),
        noise_ratio,
        top1_agreement: agree as f64 / reference.len().max(1) as f64,
        accuracy: labels.map(|l| accuracy(&first_outputs(outputs), l).top1),
        weight_sqnr_db: layer.sqnr_db,
        bytes: layer.bytes_after,
        macs: layer.macs_after,
    }
}

/// Noise power over signal power (infinite when a value became NaN/Inf or the signal is 0
/// and the noise is not).
fn noise_ratio(d: &Difference) -> f64 {
    if d.nonfinite > 0 {
        f64::INFINITY
    } else if d.noise == 0.0 {
        0.0
    } else if d.signal > 0.0 {
        d.noise / d.signal
    } else {
        f64::INFINITY
    }
}

/// The SQNR (dB) of a noise power ratio: `None` for no noise, −∞ for infinite noise.
pub fn sqnr_of_noise(ratio: f64) -> Option<f64> {
    if ratio <= 0.0 {
        None
    } else if ratio.is_infinite() {
        Some(f64::NEG_INFINITY)
    } else {
        Some(-10.0 * ratio.log10())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cells_read_back_what_they_wrote_infinities_included() {
        let cell = Cell {
            output_sqnr_db: Some(f64::NEG_INFINITY),
            noise_ratio: vec![f64::INFINITY, 0.25, 0.0],
            top1_agreement: 0.5,
            accuracy: None,
            weight_sqnr_db: None,
            bytes: 7,
            macs: Some(3),
        };
        let json = serde_json::to_string(&cell).unwrap();
        assert!(json.contains(r#""output_sqnr_db":"-inf""#), "{json}");
        assert!(json.contains(r#""noise_ratio":["inf",0.25,0.0]"#), "{json}");
        assert_eq!(serde_json::from_str::<Cell>(&json).unwrap(), cell);
        assert!(serde_json::from_str::<Cell>(&json.replace("\"inf\"", "\"big\"")).is_err());
    }
}
