//! One open model with its plan: the recipe, undo/redo history, the live compression
//! estimates and every evaluated configuration.

use std::sync::Arc;

use edgefit_engine::compress::compressor::{Compression, Compressor};
use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::Dataset;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{InputSetting, generated_data};
use edgefit_engine::{CancelToken, LoadedModel, ModelAnalysis};

/// A model that finished loading and analysing, with the data found for it.
pub struct OpenModel {
    pub loaded: LoadedModel,
    pub analysis: ModelAnalysis,
    /// Labelled samples from the dataset.json beside the model; `None`: generated inputs are
    /// used (see [`Session::data`]).
    pub data: Option<Arc<Dataset>>,
    /// Calibration samples, when the data source has a calibration split.
    pub calibration: Option<Arc<Dataset>>,
}

/// How configurations are measured: the runtime and the model's input settings (concrete
/// shapes for symbolic dims, values for the inputs the data does not feed). Remembered per
/// model in the session.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunSettings {
    pub runtime: RuntimeKind,
    pub inputs: Vec<InputSetting>,
    /// Data chosen in the window (else the dataset beside the model, else generated inputs).
    pub data: Option<super::data_panel::DataSource>,
}

pub use super::points::EvalPoint;

/// Histograms of the selected layer's weight, computed when the plan or the selection
/// changes (never per frame: a layer can hold millions of values).
#[derive(Clone, Debug)]
pub struct WeightsView {
    /// Index into `compressor.layers`.
    pub layer: usize,
    pub before: edgefit_engine::analyse::stats::Histogram,
    pub after: edgefit_engine::analyse::stats::Histogram,
    /// Largest magnitude that magnitude pruning zeroed, when it pruned anything.
    pub prune_threshold: Option<f32>,
    /// (min, max) of each output channel before and after; empty when the layer has no
    /// channel axis.
    pub channel_ranges_before: Vec<(f32, f32)>,
    pub channel_ranges_after: Vec<(f32, f32)>,
}

/// Bins of the weight histograms.
const HISTOGRAM_BINS: usize = 80;

/// The plan being edited for one open model.
pub struct Session {
    pub open: Arc<OpenModel>,
    pub compressor: Compressor,
    pub recipe: Recipe,
    pub format: ExportFormat,
    /// Runtime and input settings of evaluations.
    pub run: RunSettings,
    /// The samples evaluations run on: the model's data, or inputs generated at the shape
    /// `run.inputs` gives (unknown dims chosen, other inputs held); an error says which
    /// input needs a shape.
    pub data: Result<Arc<Dataset>, String>,
    /// The input settings evaluations run with: `run.inputs`, plus the choices made for
    /// generated inputs.
    pub data_inputs: Vec<InputSetting>,
    /// `data` and `data_inputs` as evaluated points record them (hashed once, when they
    /// change); `None` while an input still needs a shape.
    pub data_key: Option<super::points::DataKey>,
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
    /// Two evaluated points compared layer by layer.
    pub ab: Option<AbComparison>,
    /// The compressor of A/B comparisons, made on first use.
    ab_compressor: Option<Compressor>,
    /// A comparison being computed in the background (large models).
    ab_pending: Option<poll_promise::Promise<AbComparison>>,
    /// Large models: estimates are computed on a worker thread (see [`super::estimator`]).
    estimator: Option<super::estimator::Estimator>,
    /// Whether `compression` lags behind `recipe` (a background estimate is under way).
    pub estimating: bool,
    /// The last sensitivity sweep of this model with these run settings (a new runtime or
    /// new inputs clear it: it would no longer describe what evaluations measure).
    pub sensitivity: Option<Arc<edgefit_engine::guide::sensitivity::Sensitivity>>,
    /// The last plan search from that sweep.
    pub search: Option<Arc<edgefit_engine::guide::search::SearchReport>>,
    /// The original as a restored session measured it, waiting for its data to load.
    restored_baseline: Option<EvalPoint>,
    /// The data chosen in the window, once loaded (it wins over the dataset beside the model).
    pub chosen_data: Option<super::data_panel::LoadedData>,
    /// The file the plan writes in `format`, for the plan and format it was computed for
    /// (small models: built on the UI thread when either changes).
    pub planned_file: Option<(
        Recipe,
        ExportFormat,
        Result<edgefit_engine::export::build::PlannedFile, String>,
    )>,
    /// The last diff of this model against another file.
    pub diff: Option<super::diff_panel::DiffView>,
    /// The Devices panel: verdicts per device, placement and split of the chosen one.
    pub deploy: super::deploy::DeployState,
    dirty: bool,
}

/// Two evaluated configurations compared layer by layer.
#[derive(Clone, Debug)]
pub struct AbComparison {
    /// Indices into `points`.
    pub a: usize,
    pub b: usize,
    pub rows: Vec<AbRow>,
    /// Why the layers could not be compared (e.g. a recipe that no longer fits).
    pub error: Option<String>,
}

/// One layer under configurations A and B.
#[derive(Clone, Debug, PartialEq)]
pub struct AbRow {
    pub layer: String,
    pub a_settings: String,
    pub b_settings: String,
    pub a_sqnr_db: Option<f64>,
    pub b_sqnr_db: Option<f64>,
    pub a_bytes: u64,
    pub b_bytes: u64,
}

impl AbRow {
    /// Whether A and B set this layer differently.
    pub fn differs(&self) -> bool {
        self.a_settings != self.b_settings
    }
}

/// A layer's settings in a few words: `prune 50% magnitude, int4 sym per-channel mse`.
fn settings_text(s: &edgefit_engine::compress::plan::LayerSettings) -> String {
    use edgefit_engine::compress::plan::Precision;
    if s.exclude {
        return "excluded".to_owned();
    }
    let prune = if s.prune_ratio > 0.0 {
        format!("prune {:.0}% {:?}, ", s.prune_ratio * 100.0, s.prune_method)
    } else {
        String::new()
    };
    let precision = match s.precision {
        Precision::Float32 => "fp32".to_owned(),
        Precision::Float16 => "fp16".to_owned(),
        Precision::Int { bits } => format!(
            "int{bits} {} {} {:?}",
            if s.symmetric { "sym" } else { "asym" },
            if s.per_channel {
                "per-channel"
            } else {
                "per-tensor"
            },
            s.clipping
        ),
    };
    format!("{prune}{precision}")
}

mod file;

pub use file::{SESSION_VERSION, SessionFile};

impl Session {
    /// Takes the same model analysed again (at a concrete input shape): shapes and MACs
    /// change, the plan, points and settings stay.
    pub fn replace_analysis(&mut self, open: Arc<OpenModel>, wake: impl Fn() + Send + 'static) {
        self.compressor = Compressor::new(&open.loaded, &open.analysis);
        self.open = open;
        self.ab_compressor = None;
        if self.estimator.is_some() {
            self.estimator =
                super::estimator::Estimator::start(self.compressor.sharing_weights(), wake).ok();
        }
        self.dirty = true;
        self.refresh();
    }

    /// What a background job measures with: the samples and the run settings (with the
    /// choices made for generated inputs); `Err` says which input still needs a shape.
    pub fn job_run(&self) -> Result<(Arc<Dataset>, RunSettings), String> {
        let data = self.data.clone()?;
        let run = RunSettings {
            inputs: self.data_inputs.clone(),
            ..self.run.clone()
        };
        Ok((data, run))
    }

    /// Uses `loaded` for evaluation and calibration from now on (`None`: the dataset beside
    /// the model, else generated inputs). The original is measured again on it.
    pub fn set_chosen_data(&mut self, loaded: Option<super::data_panel::LoadedData>) {
        let run = RunSettings {
            data: loaded.as_ref().map(|d| d.source.clone()),
            ..self.run.clone()
        };
        self.chosen_data = loaded;
        self.set_run(run);
    }

    /// Calibration samples for the data in use: the chosen data's split, else the model's.
    pub fn calibration(&self) -> Option<Arc<Dataset>> {
        match &self.chosen_data {
            Some(d) => d.calibration.clone(),
            None => self.open.calibration.clone(),
        }
    }

    /// The evaluated point that measured the current plan, format, runtime and data, if any.
    pub fn measured_point(&self) -> Option<usize> {
        let key = self.data_key.as_ref()?;
        self.points
            .iter()
            .position(|p| p.measures(&self.recipe, self.format, self.run.runtime, key))
    }

    /// Changes the runtime or input settings. The original is measured again under them (its
    /// latency is the runtime's); evaluated points keep the runtime that measured them.
    pub fn set_run(&mut self, run: RunSettings) {
        self.run = run;
        self.baseline = None;
        self.sensitivity = None;
        self.search = None;
        // Data chosen for another source than the one now asked for no longer applies.
        if self.chosen_data.as_ref().map(|d| &d.source) != self.run.data.as_ref() {
            self.chosen_data = None;
        }
        (self.data, self.data_inputs) = session_data(
            &self.open,
            self.chosen_data.as_ref().map(|d| &d.data),
            &self.run.inputs,
        );
        self.data_key = data_key(&self.data, &self.data_inputs);
        if let Some(b) = self
            .restored_baseline
            .take_if(|b| b.data.is_some() && b.data == self.data_key)
        {
            self.baseline = Some(b);
        }
    }

    pub fn new(open: Arc<OpenModel>) -> Self {
        let compressor = Compressor::new(&open.loaded, &open.analysis);
        let selected = if compressor.layers.is_empty() {
            None
        } else {
            Some(0)
        };
        let (data, data_inputs) = session_data(&open, None, &[]);
        let data_key = data_key(&data, &data_inputs);
        let mut session = Self {
            open: open.clone(),
            compressor,
            recipe: Recipe::default(),
            format: ExportFormat::Fp32,
            run: RunSettings::default(),
            data,
            data_inputs,
            data_key,
            compression: None,
            compression_error: None,
            undo: Vec::new(),
            redo: Vec::new(),
            selected,
            weights_view: None,
            baseline: None,
            points: Vec::new(),
            ab: None,
            ab_compressor: None,
            ab_pending: None,
            estimator: None,
            estimating: false,
            sensitivity: None,
            search: None,
            restored_baseline: None,
            planned_file: None,
            chosen_data: None,
            diff: None,
            deploy: super::deploy::DeployState::default(),
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

    /// Whether this model is large enough to estimate off the UI thread.
    pub fn is_large(&self, above_weights: usize) -> bool {
        let weights: usize = (0..self.compressor.layers.len())
            .map(|i| self.compressor.original(i).len())
            .sum();
        weights > above_weights
    }

    /// Computes the estimates on a worker thread from now on; `wake` repaints the window
    /// when a result arrives. When the thread cannot start, estimates stay on this thread.
    pub fn estimate_in_background(&mut self, wake: impl Fn() + Send + 'static) {
        if let Ok(estimator) =
            super::estimator::Estimator::start(self.compressor.sharing_weights(), wake)
        {
            self.estimator = Some(estimator);
            self.dirty = true;
            self.refresh();
        }
    }

    /// Takes a finished background estimate, if any (call once per frame).
    pub fn poll_estimates(&mut self) {
        let Some((recipe, estimate)) = self.estimator.as_ref().and_then(|e| e.take()) else {
            return;
        };
        // A newer recipe may already be waiting in the worker's mailbox.
        self.estimating = recipe != self.recipe;
        match estimate {
            Ok(c) => {
                self.compression = Some(c);
                self.compression_error = None;
            }
            Err(e) => self.compression_error = Some(e),
        }
        self.update_weights_view();
    }

    /// Recomputes the estimates if the recipe changed: at once (cached per layer), or for a
    /// large model by asking the background worker (the previous estimates stay shown).
    pub fn refresh(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        if let Some(estimator) = &self.estimator {
            estimator.request(self.recipe.clone());
            self.estimating = true;
            return;
        }
        match self.compressor.apply(&self.recipe, &CancelToken::new()) {
            Ok(c) => {
                self.compression = Some(c);
                self.compression_error = None;
            }
            Err(e) => self.compression_error = Some(e.to_string()),
        }
        self.update_weights_view();
    }

    /// Builds the plan's file in the chosen format (without writing it) when the plan or the
    /// format changed, so the Summary shows the size of the file the export writes. Large
    /// models (estimated off the UI thread) keep the per-layer estimate.
    pub fn update_planned_file(&mut self) {
        let Some(c) = self
            .compression
            .as_ref()
            .filter(|c| c.recipe == self.recipe)
        else {
            return;
        };
        if self.estimator.is_some()
            || self
                .planned_file
                .as_ref()
                .is_some_and(|(r, f, _)| *r == self.recipe && *f == self.format)
        {
            return;
        }
        let planned = edgefit_engine::export::build::planned_file(
            &self.open.loaded,
            &self.compressor,
            c,
            self.format,
        )
        .map_err(|e| e.to_string());
        self.planned_file = Some((self.recipe.clone(), self.format, planned));
    }

    /// Refreshes the Devices panel's figures when the plan, the format or a choice changed.
    pub fn update_deploy(&mut self) {
        self.deploy.update(
            &self.open.loaded,
            &self.compressor,
            self.compression.as_ref(),
            &self.recipe,
            self.format,
        );
        let large = self.estimator.is_some();
        self.deploy
            .update_points(&self.open.loaded, &self.compressor, &self.points, large);
    }

    /// Selects layer `i` (an index into `compressor.layers`).
    pub fn select(&mut self, i: usize) {
        if self.selected != Some(i) {
            self.selected = Some(i);
            self.update_weights_view();
        }
    }

    fn update_weights_view(&mut self) {
        use edgefit_engine::analyse::stats::{histogram, tensor_stats};
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
        let layer = &self.compressor.layers[i];
        let ranges = |values: &[f32]| {
            layer.channel_axis.map_or_else(Vec::new, |axis| {
                edgefit_engine::analyse::stats::channel_ranges(values, &layer.dims, axis)
            })
        };
        self.weights_view = Some(WeightsView {
            channel_ranges_before: ranges(original),
            channel_ranges_after: ranges(&result.values),
            layer: i,
            before: histogram(original, stats.min, stats.max, HISTOGRAM_BINS),
            after: histogram(&result.values, stats.min, stats.max, HISTOGRAM_BINS),
            prune_threshold,
        });
    }

    /// Compares evaluated points `a` and `b` layer by layer: their settings and estimates,
    /// computed on a second compressor sharing the weights (the live estimates keep their
    /// cache). Large models compare on a background thread (`wake` repaints when done; the
    /// comparison shows as pending until then).
    pub fn compare(&mut self, a: usize, b: usize, wake: impl Fn() + Send + 'static) {
        let (Some(pa), Some(pb)) = (self.points.get(a), self.points.get(b)) else {
            self.ab = Some(AbComparison {
                a,
                b,
                rows: Vec::new(),
                error: Some("no such point".to_owned()),
            });
            return;
        };
        let (ra, rb) = (pa.recipe.clone(), pb.recipe.clone());
        if self.estimator.is_some() {
            let mut compressor = self.compressor.sharing_weights();
            self.ab = None;
            self.ab_pending = Some(poll_promise::Promise::spawn_thread(
                "edgefit-compare",
                move || {
                    let comparison = compare_recipes(&mut compressor, a, b, &ra, &rb);
                    wake();
                    comparison
                },
            ));
            return;
        }
        let shared = &self.compressor;
        let compressor = self
            .ab_compressor
            .get_or_insert_with(|| shared.sharing_weights());
        self.ab = Some(compare_recipes(compressor, a, b, &ra, &rb));
    }

    /// Takes a finished background comparison, if any.
    pub fn poll_comparison(&mut self) {
        if let Some(pending) = self.ab_pending.take() {
            match pending.try_take() {
                Ok(comparison) => self.ab = Some(comparison),
                Err(pending) => self.ab_pending = Some(pending),
            }
        }
    }

    /// Closes the comparison (and forgets one still being computed).
    pub fn close_comparison(&mut self) {
        self.ab = None;
        self.ab_pending = None;
    }

    /// Whether a comparison is being computed in the background.
    pub fn comparing(&self) -> bool {
        self.ab_pending.is_some()
    }
}

/// Points `a` and `b` (recipes `ra`, `rb`) layer by layer.
fn compare_recipes(
    compressor: &mut Compressor,
    a: usize,
    b: usize,
    ra: &Recipe,
    rb: &Recipe,
) -> AbComparison {
    let mut comparison = AbComparison {
        a,
        b,
        rows: Vec::new(),
        error: None,
    };
    let cancel = CancelToken::new();
    let applied = compressor.apply(ra, &cancel).and_then(|ca| {
        compressor
            .apply(rb, &cancel)
            .map(|cb| (ca.layers, cb.layers))
    });
    match applied {
        Ok((la, lb)) => {
            comparison.rows = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| AbRow {
                    layer: x.report.name.clone(),
                    a_settings: settings_text(&x.report.settings),
                    b_settings: settings_text(&y.report.settings),
                    a_sqnr_db: x.report.sqnr_db,
                    b_sqnr_db: y.report.sqnr_db,
                    a_bytes: x.report.bytes_after,
                    b_bytes: y.report.bytes_after,
                })
                .collect();
        }
        Err(e) => comparison.error = Some(e.to_string()),
    }
    comparison
}

/// The model's own data, else inputs generated at the shape `inputs` resolve to (see
/// [`generated_data`]); with the settings to run them with.
fn data_key(
    data: &Result<Arc<Dataset>, String>,
    inputs: &[InputSetting],
) -> Option<super::points::DataKey> {
    let data = data.as_ref().ok()?;
    Some(super::points::DataKey::of(data, inputs))
}

fn session_data(
    open: &OpenModel,
    chosen: Option<&Arc<Dataset>>,
    inputs: &[InputSetting],
) -> (Result<Arc<Dataset>, String>, Vec<InputSetting>) {
    if let Some(data) = chosen.or(open.data.as_ref()) {
        return (Ok(data.clone()), inputs.to_vec());
    }
    match generated_data(&open.loaded, inputs) {
        Ok((data, settings)) => (Ok(Arc::new(data)), settings),
        Err(e) => (Err(e.to_string()), inputs.to_vec()),
    }
}
