//! The search for the smallest plan within a fidelity budget (or the most faithful within a
//! size budget), from a [`Sensitivity`] table.
//!
//! **Prediction.** The noise a layer's compression adds to an output is taken as independent
//! of the other layers' (as HAWQ and AIMET's AMP assume): a plan's predicted noise power on
//! each output is the sum of its layers' measured noise ratios, its predicted SQNR the lowest
//! over outputs; its predicted top-1 accuracy is the original's minus the sum of the layers'
//! measured drops.
//!
//! **Front.** Each layer's options (float32 and every candidate measured on it) are reduced
//! to their lower convex hull in (bytes, noise); the hull segments of all layers, taken in
//! order of noise added per byte saved, trace the front from the float model to the
//! smallest one (the greedy that is exact for the convex relaxation of the knapsack).
//!
//! **Measured picks.** Only a few front points are measured for real — each through the
//! optimize job itself (written to a temporary folder and verified: the pick's figures are
//! its export's), same samples, same verdict — starting at the predicted boundary, each next
//! probe corrected by the last prediction error, and points predicted just short of the
//! constraint (within the prediction's usual error) measured too (at most
//! `max_evaluations`).

use std::time::Instant;

use serde::Serialize;

use crate::compress::plan::{LayerOverride, Precision, Recipe};
use crate::error::{Error, Result};
use crate::export::build::ExportFormat;
use crate::guide::sensitivity::{Candidate, Sensitivity, sqnr_of_noise};
use crate::job::{CancelToken, NoProgress, ProgressSink, report};
use crate::measure::eval::json_db;
use crate::model::load::LoadedModel;
use crate::pipeline::{OptimizeOptions, optimize};

/// The `schema` of [`SearchReport`] as JSON.
pub const SEARCH_SCHEMA: &str = "edgefit.search/1";

/// What a plan must keep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Constraint {
    /// The lowest output SQNR (dB) over float outputs — the same floor as `optimize
    /// --min-sqnr` (top-1 agreement may vouch for class scores, as there).
    MinSqnrDb(f64),
    /// The largest top-1 accuracy drop, in percentage points (needs labels); the quality
    /// floor of the base recipe holds too.
    MaxDropPp(f64),
}

/// Options of [`search`].
pub struct SearchOptions<'a> {
    pub constraint: Constraint,
    /// A cap on the exported file's size, in bytes: then the plan is the most faithful
    /// front point whose file fits.
    pub budget_bytes: Option<u64>,
    /// Full evaluations allowed (not counting the final export's verification).
    pub max_evaluations: usize,
    /// How plans are measured: data, runtime, input shapes (`recipe` and `format` are each
    /// plan's own, see [`format_of`]).
    pub measure: OptimizeOptions<'a>,
}

/// One plan of the front.
#[derive(Clone, Debug, Serialize)]
pub struct FrontPoint {
    /// Per layer of the sensitivity table: the candidate index, `null` for float32.
    pub choice: Vec<Option<usize>>,
    /// Predicted file size: the original file's minus what the compressed layers' weights
    /// save as stored (quantization parameters and dequantize nodes add a little more).
    pub size_bytes: u64,
    #[serde(serialize_with = "json_db")]
    pub predicted_sqnr_db: Option<f64>,
    pub predicted_accuracy: Option<f64>,
}

/// A front point measured for real.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// Index into [`SearchReport::front`].
    pub point: usize,
    #[serde(serialize_with = "json_db")]
    pub predicted_sqnr_db: Option<f64>,
    #[serde(serialize_with = "json_db")]
    pub measured_sqnr_db: Option<f64>,
    pub predicted_accuracy: Option<f64>,
    pub measured_accuracy: Option<f64>,
    /// The exported file's size as built.
    pub size_bytes: u64,
    pub passed: bool,
    pub verdict: String,
    pub seconds: f64,
}

/// What [`search`] found.
#[derive(Clone, Debug, Serialize)]
pub struct SearchReport {
    /// [`SEARCH_SCHEMA`].
    pub schema: &'static str,
    pub constraint: Constraint,
    pub budget_bytes: Option<u64>,
    /// How fidelity is predicted.
    pub prediction: String,
    pub front: Vec<FrontPoint>,
    pub evaluations: Vec<Evaluation>,
    /// The chosen front point (the smallest measured one that passed); `null` when none did.
    pub chosen: Option<usize>,
    /// The chosen plan as a recipe (the float model's when none passed).
    pub recipe: Recipe,
    pub original_size_bytes: u64,
    /// The search's own time (not the sensitivity sweep's).
    pub wall_time_s: f64,
}

/// One option of one layer: float32 (`None`) or a candidate.
#[derive(Clone, Copy, Debug)]
struct Option_ {
    candidate: Option<usize>,
    bytes: u64,
    noise: f64,
}

/// The front of `s`: from all-float to the smallest plan (see the module documentation);
/// `other_bytes` is the file's size outside the layers of `s`.
pub fn front(s: &Sensitivity, other_bytes: u64) -> Vec<FrontPoint> {
    let mut choice: Vec<Option<usize>> = vec![None; s.layers.len()];
    // Per layer, the hull's steps: (slope, layer, candidate).
    let mut steps: Vec<(f64, usize, usize)> = Vec::new();
    for (l, layer) in s.layers.iter().enumerate() {
        let mut options: Vec<Option_> = layer
            .cells
            .iter()
            .enumerate()
            .filter_map(|(c, cell)| {
                let cell = cell.as_ref()?;
                let noise = cell.worst_noise();
                (noise.is_finite() && cell.bytes < layer.bytes).then_some(Option_ {
                    candidate: Some(c),
                    bytes: cell.bytes,
                    noise,
                })
            })
            .collect();
        let mut at = Option_ {
            candidate: None,
            bytes: layer.bytes,
            noise: 0.0,
        };
        loop {
            // The next hull vertex: the least noise added per byte saved (ties: more saved).
            let next = options
                .iter()
                .filter(|o| o.bytes < at.bytes)
                .map(|o| {
                    let slope = (o.noise - at.noise) / (at.bytes - o.bytes) as f64;
                    (slope, *o)
                })
                .min_by(|(a, x), (b, y)| a.total_cmp(b).then(x.bytes.cmp(&y.bytes)));
            let Some((slope, o)) = next else { break };
            if let Some(c) = o.candidate {
                steps.push((slope.max(0.0), l, c));
            }
            at = o;
            options.retain(|p| p.bytes < at.bytes);
        }
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut points = vec![point(s, &choice, other_bytes)];
    for (_, l, c) in steps {
        choice[l] = Some(c);
        points.push(point(s, &choice, other_bytes));
    }
    points
}

fn point(s: &Sensitivity, choice: &[Option<usize>], other_bytes: u64) -> FrontPoint {
    let outputs = s.outputs.len().max(1);
    let mut noise = vec![0.0f64; outputs];
    let mut drop = 0.0;
    let mut bytes = other_bytes;
    for (layer, c) in s.layers.iter().zip(choice) {
        match c.and_then(|c| layer.cells.get(c)?.as_ref()) {
            Some(cell) => {
                bytes += cell.bytes;
                for (n, r) in noise.iter_mut().zip(&cell.noise_ratio) {
                    *n += r;
                }
                if let (Some(original), Some(a)) = (s.original_accuracy, cell.accuracy) {
                    drop += (original - a).max(0.0);
                }
            }
            None => bytes += layer.bytes,
        }
    }
    FrontPoint {
        choice: choice.to_vec(),
        size_bytes: bytes,
        predicted_sqnr_db: sqnr_of_noise(noise.iter().copied().fold(0.0, f64::max)),
        predicted_accuracy: s.original_accuracy.map(|a| (a - drop).max(0.0)),
    }
}

/// The recipe of a front point: `base`'s defaults, float32 everywhere but the chosen layers.
pub fn recipe_of(s: &Sensitivity, base: &Recipe, choice: &[Option<usize>]) -> Recipe {
    let mut recipe = base.clone();
    recipe.defaults.precision = Precision::Float32;
    recipe.defaults.prune_ratio = 0.0;
    recipe.layers.clear();
    for (layer, c) in s.layers.iter().zip(choice) {
        if let Some(candidate) = c.and_then(|c| s.candidates.get(c)) {
            recipe.layers.insert(
                layer.name.clone(),
                LayerOverride {
                    precision: Some(candidate.precision),
                    prune_ratio: Some(candidate.prune_ratio),
                    ..LayerOverride::default()
                },
            );
        }
    }
    recipe
}

/// Whether a prediction, plus `correction` (measured minus predicted, in the constraint's
/// unit: dB, or accuracy as a fraction), meets `constraint`. The SQNR floor's agreement rule
/// cannot be predicted: an SQNR constraint is predicted on SQNR alone.
fn predicted_ok(
    p: &FrontPoint,
    constraint: Constraint,
    original_accuracy: Option<f64>,
    correction: f64,
) -> bool {
    match constraint {
        Constraint::MinSqnrDb(db) => p.predicted_sqnr_db.is_none_or(|s| s + correction >= db),
        Constraint::MaxDropPp(pp) => match (original_accuracy, p.predicted_accuracy) {
            (Some(o), Some(a)) => (o - (a + correction)) * 100.0 <= pp,
            _ => false,
        },
    }
}

/// How far a prediction may be off and still be worth a measurement, in `constraint`'s
/// unit: the additive model has been within 1.5 dB of the measurement on the models tried
/// (it misses interactions between layers).
fn prediction_margin(constraint: Constraint) -> f64 {
    match constraint {
        Constraint::MinSqnrDb(_) => 1.5,
        Constraint::MaxDropPp(_) => 0.005,
    }
}

/// Measured minus predicted, in `constraint`'s unit (0 when either is missing or infinite).
fn prediction_error(e: &Evaluation, constraint: Constraint) -> f64 {
    let error = match constraint {
        Constraint::MinSqnrDb(_) => e
            .measured_sqnr_db
            .zip(e.predicted_sqnr_db)
            .map(|(m, p)| m - p),
        Constraint::MaxDropPp(_) => e
            .measured_accuracy
            .zip(e.predicted_accuracy)
            .map(|(m, p)| m - p),
    };
    error.filter(|d| d.is_finite()).unwrap_or(0.0)
}

/// Finds the plan (see the module documentation). `base` gives the settings every plan
/// shares (symmetry, per-channel scales, clipping, prune method, quality floor).
pub fn search(
    model: &LoadedModel,
    s: &Sensitivity,
    base: &Recipe,
    options: &SearchOptions<'_>,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<SearchReport> {
    let started = Instant::now();
    if let Constraint::MaxDropPp(_) = options.constraint
        && (options.measure.data.labels.is_none() || s.original_accuracy.is_none())
    {
        return Err(Error::InvalidArgument {
            what: "--max-drop",
            reason: "an accuracy drop needs labelled data (--data with labels); give --min-sqnr \
                     for unlabelled data"
                .to_owned(),
        });
    }
    let compressible: u64 = s.layers.iter().map(|l| l.bytes).sum();
    let front = front(s, model.file_size_bytes.saturating_sub(compressible));
    let mut base = base.clone();
    if let Constraint::MinSqnrDb(db) = options.constraint {
        base.quality.min_output_sqnr_db = db;
    }
    let within_budget = |p: &FrontPoint| options.budget_bytes.is_none_or(|b| p.size_bytes <= b);
    let mut evaluations: Vec<Evaluation> = Vec::new();
    let evaluate = |i: usize, evaluations: &mut Vec<Evaluation>| -> Result<bool> {
        cancel.check()?;
        report(
            progress,
            &format!(
                "search: measuring plan {} of ≤{}",
                evaluations.len() + 1,
                options.max_evaluations
            ),
            evaluations.len() as u64,
            options.max_evaluations as u64,
        );
        let t = Instant::now();
        let recipe = recipe_of(s, &base, &front[i].choice);
        let e = measure_plan(model, &recipe, &options.measure, cancel)?;
        let fits = options.budget_bytes.is_none_or(|b| e.size_bytes <= b);
        let passed = fits
            && match options.constraint {
                // The SQNR itself: a class-score output's agreement does not vouch here.
                Constraint::MinSqnrDb(db) => e.passed_floor && e.sqnr_db.is_none_or(|s| s >= db),
                Constraint::MaxDropPp(pp) => {
                    e.passed_floor
                        && match (s.original_accuracy, e.accuracy) {
                            (Some(o), Some(a)) => (o - a) * 100.0 <= pp + 1e-9,
                            _ => false,
                        }
                }
            };
        evaluations.push(Evaluation {
            point: i,
            predicted_sqnr_db: front[i].predicted_sqnr_db,
            measured_sqnr_db: e.sqnr_db,
            predicted_accuracy: front[i].predicted_accuracy,
            measured_accuracy: e.accuracy,
            size_bytes: e.size_bytes,
            passed,
            verdict: e.verdict,
            seconds: t.elapsed().as_secs_f64(),
        });
        Ok(passed)
    };
    let max = options.max_evaluations.max(1);
    if options.budget_bytes.is_some() {
        // The most faithful front point predicted to fit; a file that turns out larger
        // moves to the next point, one that fails the constraint ends the search (every
        // smaller point is predicted worse).
        let mut next = front.iter().position(within_budget);
        while let Some(i) = next.filter(|_| evaluations.len() < max) {
            if evaluate(i, &mut evaluations)? {
                break;
            }
            let too_big = evaluations
                .last()
                .is_some_and(|e| options.budget_bytes.is_some_and(|b| e.size_bytes > b));
            next = (too_big && i + 1 < front.len()).then_some(i + 1);
        }
    } else {
        // Search for the last passing point (index 0, float, passes by definition): each
        // probe is the last point still open whose prediction, corrected by the last measured
        // error of the prediction, meets the constraint — or, when none does, the last one
        // that would within the prediction's usual error; the search ends when neither exists.
        let (mut lo, mut hi) = (0usize, front.len().saturating_sub(1));
        let mut correction = 0.0;
        let last_meeting = |lo: usize, hi: usize, correction: f64| {
            (lo + 1..=hi).rev().find(|&i| {
                predicted_ok(
                    &front[i],
                    options.constraint,
                    s.original_accuracy,
                    correction,
                )
            })
        };
        while lo < hi && evaluations.len() < max {
            let margin = prediction_margin(options.constraint);
            let Some(probe) = last_meeting(lo, hi, correction)
                .or_else(|| last_meeting(lo, hi, correction + margin))
            else {
                break;
            };
            let passed = evaluate(probe, &mut evaluations)?;
            if passed {
                lo = probe;
            } else {
                hi = probe - 1;
            }
            if let Some(e) = evaluations.last() {
                correction = prediction_error(e, options.constraint);
            }
        }
    }
    let chosen = evaluations
        .iter()
        .filter(|e| e.passed)
        .min_by_key(|e| e.size_bytes)
        .map(|e| e.point);
    let recipe = recipe_of(s, &base, &front[chosen.unwrap_or(0)].choice);
    Ok(SearchReport {
        schema: SEARCH_SCHEMA,
        constraint: options.constraint,
        budget_bytes: options.budget_bytes,
        prediction: "additive output noise: each layer's measured noise power (alone) summed \
                     per output; accuracy: the original's minus the layers' summed drops"
            .to_owned(),
        original_size_bytes: model.file_size_bytes,
        front,
        evaluations,
        chosen,
        recipe,
        wall_time_s: started.elapsed().as_secs_f64(),
    })
}

/// What measuring one plan gave.
struct PlanMeasurement {
    sqnr_db: Option<f64>,
    accuracy: Option<f64>,
    size_bytes: u64,
    passed_floor: bool,
    verdict: String,
}

/// `recipe` through the optimize job itself (every stage it runs, the file written to a
/// temporary folder and verified), judged against the recipe's floor: a measured pick is
/// what the export of that plan gives.
fn measure_plan(
    model: &LoadedModel,
    recipe: &Recipe,
    measure: &OptimizeOptions<'_>,
    cancel: &CancelToken,
) -> Result<PlanMeasurement> {
    let dir = tempfile::tempdir()
        .map_err(|e| Error::io("cannot create a temporary folder", std::env::temp_dir(), e))?;
    let options = OptimizeOptions {
        recipe,
        format: format_of(recipe),
        latency_runs: 0,
        ..*measure
    };
    let report = optimize(
        model,
        &options,
        &dir.path().join("plan.onnx"),
        &NoProgress,
        cancel,
    )?;
    let accuracy = report.compressed.accuracy.map(|a| a.top1);
    let (sqnr_db, passed, verdict) = match (&report.quality, &report.not_measured) {
        (Some(q), _) => (
            q.worst_sqnr_db,
            q.passed && report.verification.passed,
            if report.verification.passed {
                q.message.clone()
            } else {
                report.verification.message.clone()
            },
        ),
        (None, reason) => (
            None,
            false,
            reason.clone().unwrap_or_else(|| "not measured".to_owned()),
        ),
    };
    Ok(PlanMeasurement {
        sqnr_db,
        accuracy,
        size_bytes: report.compressed.size_bytes,
        passed_floor: passed,
        verdict,
    })
}

/// The candidates that can make a file smaller than another candidate does at no more error,
/// and why the others are left out of a size search: codes below 8 bits are stored in int8
/// containers (the same bytes as int8, more error), and magnitude pruning leaves zeros in a
/// dense file (no bytes saved).
pub fn size_candidates(
    candidates: &[Candidate],
    method: crate::compress::plan::PruneMethod,
) -> (Vec<Candidate>, Vec<String>) {
    let has_int8 = candidates
        .iter()
        .any(|c| c.precision == Precision::Int { bits: 8 } && c.prune_ratio == 0.0);
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for c in candidates {
        let pruned = c.prune_ratio > 0.0;
        let reason = match c.precision {
            Precision::Int { bits }
                if bits < 8 && has_int8 && !(pruned && method.is_structured()) =>
            {
                Some("stored in int8 containers: the bytes of int8, with more error")
            }
            _ if pruned && !method.is_structured() => {
                Some("magnitude pruning leaves zeros in a dense file: no bytes saved")
            }
            _ => None,
        };
        match reason {
            Some(r) => dropped.push((c.label(), r)),
            None => kept.push(*c),
        }
    }
    let mut reasons: Vec<&str> = dropped.iter().map(|(_, r)| *r).collect();
    reasons.dedup();
    let grouped = reasons
        .into_iter()
        .map(|r| {
            let labels: Vec<&str> = dropped
                .iter()
                .filter(|(_, why)| *why == r)
                .map(|(l, _)| l.as_str())
                .collect();
            format!("{} ({r})", labels.join(", "))
        })
        .collect();
    (kept, grouped)
}

/// The format a plan is written in: weight-only int8 codes for its integer layers and
/// float16 storage for its float16 ones (float32 when nothing is compressed).
pub fn format_of(recipe: &Recipe) -> ExportFormat {
    let compressed = recipe
        .layers
        .values()
        .filter_map(|o| o.precision)
        .chain(std::iter::once(recipe.defaults.precision))
        .any(|p| p != Precision::Float32);
    if compressed {
        ExportFormat::WeightsInt8
    } else {
        ExportFormat::Fp32
    }
}

#[cfg(test)]
mod tests;
