//! One open model with its plan: the recipe, undo/redo history, the live compression
//! estimates and every evaluated configuration.

use std::sync::Arc;

use edgefit_engine::compress::{Compression, Compressor};
use edgefit_engine::dataset::Dataset;
use edgefit_engine::export::ExportFormat;
use edgefit_engine::plan::Recipe;
use edgefit_engine::{CancelToken, LoadedModel, ModelAnalysis};

/// A model that finished loading and analysing, with the data it is evaluated on.
pub struct OpenModel {
    pub loaded: LoadedModel,
    pub analysis: ModelAnalysis,
    /// Evaluation samples (the dataset.json beside the model, or generated inputs).
    pub data: Arc<Dataset>,
    /// Calibration samples, when the data source has a calibration split.
    pub calibration: Option<Arc<Dataset>>,
}

/// One measured configuration, shown on the trade-off chart.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalPoint {
    pub recipe: Recipe,
    pub format: ExportFormat,
    /// Top-1 accuracy when the data is labelled, else top-1 agreement with the original.
    pub accuracy: f64,
    pub size_bytes: u64,
    pub latency_ms: Option<f64>,
    pub verified: bool,
}

/// Histograms of the selected layer's weight, computed when the plan or the selection
/// changes (never per frame: a layer can hold millions of values).
#[derive(Clone, Debug)]
pub struct WeightsView {
    /// Index into `compressor.layers`.
    pub layer: usize,
    pub before: edgefit_engine::stats::Histogram,
    pub after: edgefit_engine::stats::Histogram,
    /// Largest magnitude that magnitude pruning zeroed, when it pruned anything.
    pub prune_threshold: Option<f32>,
}

/// Bins of the weight histograms.
const HISTOGRAM_BINS: usize = 80;

/// The plan being edited for one open model.
pub struct Session {
    pub open: Arc<OpenModel>,
    pub compressor: Compressor,
    pub recipe: Recipe,
    pub format: ExportFormat,
    /// Estimates for `recipe`, refreshed whenever it changes (only changed layers recompute).
    pub compression: Option<Compression>,
    pub compression_error: Option<String>,
    undo: Vec<Recipe>,
    redo: Vec<Recipe>,
    /// Index into `compressor.layers`.
    pub selected: Option<usize>,
    /// Histograms of the selected layer for the current plan.
    pub weights_view: Option<WeightsView>,
    /// The original model as measured, then every evaluated configuration.
    pub baseline: Option<EvalPoint>,
    pub points: Vec<EvalPoint>,
    dirty: bool,
}

/// What a `.edgefit.json` session file holds (also autosaved in the app's storage).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionFile {
    /// Format version of this file.
    pub version: u32,
    pub model: std::path::PathBuf,
    pub recipe: Recipe,
    pub format: ExportFormat,
    #[serde(default)]
    pub baseline: Option<EvalPoint>,
    #[serde(default)]
    pub points: Vec<EvalPoint>,
}

/// The session file format version.
pub const SESSION_VERSION: u32 = 1;

impl Session {
    /// The state worth keeping across runs.
    pub fn to_file(&self) -> SessionFile {
        SessionFile {
            version: SESSION_VERSION,
            model: self.open.loaded.path.clone(),
            recipe: self.recipe.clone(),
            format: self.format,
            baseline: self.baseline.clone(),
            points: self.points.clone(),
        }
    }

    /// Restores the plan and the evaluated points of `file` (whose model must be this one).
    pub fn restore(&mut self, file: &SessionFile) {
        self.set_recipe(file.recipe.clone(), true);
        self.format = file.format;
        self.baseline = file.baseline.clone();
        self.points = file.points.clone();
        self.refresh();
    }

    pub fn new(open: Arc<OpenModel>) -> Self {
        let compressor = Compressor::new(&open.loaded, &open.analysis);
        let selected = if compressor.layers.is_empty() {
            None
        } else {
            Some(0)
        };
        let mut session = Self {
            open,
            compressor,
            recipe: Recipe::default(),
            format: ExportFormat::Fp32,
            compression: None,
            compression_error: None,
            undo: Vec::new(),
            redo: Vec::new(),
            selected,
            weights_view: None,
            baseline: None,
            points: Vec::new(),
            dirty: true,
        };
        session.refresh();
        session
    }

    /// Replaces the recipe; `record` pushes the previous one on the undo stack (off while a
    /// slider is being dragged, so one drag is one undo step).
    pub fn set_recipe(&mut self, recipe: Recipe, record: bool) {
        if recipe == self.recipe {
            return;
        }
        if record {
            self.undo.push(self.recipe.clone());
            self.redo.clear();
        }
        self.recipe = recipe;
        self.dirty = true;
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn undo(&mut self) {
        if let Some(previous) = self.undo.pop() {
            self.redo
                .push(std::mem::replace(&mut self.recipe, previous));
            self.dirty = true;
        }
    }

    pub fn redo(&mut self) {
        if let Some(next) = self.redo.pop() {
            self.undo.push(std::mem::replace(&mut self.recipe, next));
            self.dirty = true;
        }
    }

    /// Recomputes the estimates if the recipe changed. Cheap: cached per layer.
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        match self.compressor.apply(&self.recipe, &CancelToken::new()) {
            Ok(c) => {
                self.compression = Some(c);
                self.compression_error = None;
            }
            Err(e) => self.compression_error = Some(e.to_string()),
        }
        self.update_weights_view();
    }

    /// Selects layer `i` (an index into `compressor.layers`).
    pub fn select(&mut self, i: usize) {
        if self.selected != Some(i) {
            self.selected = Some(i);
            self.update_weights_view();
        }
    }

    fn update_weights_view(&mut self) {
        use edgefit_engine::stats::{histogram, tensor_stats};
        self.weights_view = None;
        let (Some(i), Some(c)) = (self.selected, &self.compression) else {
            return;
        };
        let Some(result) = c.layers.get(i) else {
            return;
        };
        let original = self.compressor.original(i);
        let stats = tensor_stats(original);
        let settings = result.report.settings;
        let prune_threshold =
            (settings.prune_ratio > 0.0 && !settings.prune_method.is_structured()).then(|| {
                original
                    .iter()
                    .zip(&result.values)
                    .filter(|(o, v)| **v == 0.0 && **o != 0.0)
                    .map(|(o, _)| o.abs())
                    .fold(0f32, f32::max)
            });
        self.weights_view = Some(WeightsView {
            layer: i,
            before: histogram(original, stats.min, stats.max, HISTOGRAM_BINS),
            after: histogram(&result.values, stats.min, stats.max, HISTOGRAM_BINS),
            prune_threshold,
        });
    }

    /// Indices of the points on the accuracy-vs-size Pareto front, by size.
    pub fn pareto_front(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.points.len()).collect();
        order.sort_by(|&a, &b| {
            let (pa, pb) = (&self.points[a], &self.points[b]);
            pa.size_bytes
                .cmp(&pb.size_bytes)
                .then(pb.accuracy.total_cmp(&pa.accuracy))
        });
        let mut front = Vec::new();
        let mut best = f64::NEG_INFINITY;
        for i in order {
            if self.points[i].accuracy > best {
                best = self.points[i].accuracy;
                front.push(i);
            }
        }
        front
    }
}
