//! Background jobs: loading a model, and evaluating or exporting a configuration. Each runs on
//! a named thread, reports progress through a shared slot and wakes the UI.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::guide::search::{Constraint, SearchOptions, SearchReport, search};
use edgefit_engine::guide::sensitivity::{
    Sensitivity, SensitivityOptions, candidates, sensitivity,
};
use edgefit_engine::measure::dataset::{Dataset, load_calibration, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{
    AnalysisOptions, CancelToken, LoadedModel, Progress, ProgressSink, analyse, load_model,
};
use poll_promise::Promise;

use super::session::{OpenModel, RunSettings};

/// What a job produces.
pub enum JobOutput {
    Loaded(Arc<OpenModel>),
    /// The open model analysed again at a concrete input shape.
    Reanalysed(Arc<OpenModel>),
    /// An evaluation (written to a scratch file) or an export.
    Optimized {
        report: Box<OptimizeReport>,
        export: bool,
        /// What it was measured on.
        data: super::points::DataKey,
    },
    /// Each layer alone at each candidate setting, for the model at this path.
    Sensitivity(Box<Sensitivity>),
    /// The smallest plan within an output-SQNR floor, found from a sweep.
    Search(Box<SearchReport>),
    /// Data chosen in the window, loaded for the model at this path.
    Data {
        model: PathBuf,
        loaded: Box<super::data_panel::LoadedData>,
    },
    /// The open model (at this path) against another file.
    Diff {
        model: PathBuf,
        view: Box<super::diff_panel::DiffView>,
    },
    /// The two halves of a split, written; `passed`: head then tail reproduced the model.
    Split {
        message: String,
        passed: bool,
    },
}

/// What a job is doing, for the progress line.
#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    Load(PathBuf),
    /// Shapes and MACs inferred again at the input shape the user gave.
    Reanalyse,
    Evaluate,
    Export(PathBuf),
    Sensitivity,
    Search,
    /// The open model against this file.
    Diff(PathBuf),
    /// Data chosen in the window.
    LoadData(PathBuf),
    /// The device half of a split, written here (the server half beside it).
    Split(PathBuf),
}

/// What a split export needs.
pub struct SplitRequest {
    pub open: Arc<OpenModel>,
    pub data: Arc<Dataset>,
    pub run: RunSettings,
    pub onnxruntime_library: Option<PathBuf>,
    /// The tensors sent from the device to the server.
    pub tensors: Vec<String>,
    pub transfer: edgefit_engine::deploy::split::Transfer,
    /// Where the device half goes (the server half: [`tail_path`]).
    pub head: PathBuf,
}

/// The server half's path beside the device half: `x.head.onnx` -> `x.tail.onnx`, else
/// `x.onnx` -> `x.tail.onnx`.
pub fn tail_path(head: &std::path::Path) -> PathBuf {
    let stem = head
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base = stem.strip_suffix(".head").unwrap_or(&stem);
    head.with_file_name(format!("{base}.tail.onnx"))
}

/// What an evaluation or an export measures, and in what.
pub struct OptimizeRequest {
    pub open: Arc<OpenModel>,
    pub data: Arc<Dataset>,
    /// Calibration samples of the data in use (`None`: calibrate on `data`).
    pub calibration: Option<Arc<Dataset>>,
    /// `data` and the input settings as points record them (hashed once by the session).
    pub data_key: super::points::DataKey,
    pub run: RunSettings,
    /// The ONNX Runtime library chosen in the studio (else the usual places).
    pub onnxruntime_library: Option<PathBuf>,
    pub recipe: Recipe,
    pub format: ExportFormat,
    /// Where to export; `None` evaluates into a scratch file.
    pub export: Option<PathBuf>,
}

/// A running background job.
pub struct Job {
    pub kind: JobKind,
    pub promise: Promise<Result<JobOutput, String>>,
    pub progress: Arc<Mutex<Option<Progress>>>,
    pub cancel: CancelToken,
    pub started: Instant,
}

impl Job {
    fn spawn(
        kind: JobKind,
        ctx: &egui::Context,
        work: impl FnOnce(&dyn ProgressSink, &CancelToken) -> Result<JobOutput, String> + Send + 'static,
    ) -> Self {
        let progress = Arc::new(Mutex::new(None));
        let cancel = CancelToken::new();
        let (slot, job_cancel, ctx) = (progress.clone(), cancel.clone(), ctx.clone());
        let name = match &kind {
            JobKind::Load(_) => "edgefit-load-model",
            JobKind::Reanalyse => "edgefit-reanalyse",
            JobKind::Evaluate => "edgefit-evaluate",
            JobKind::Export(_) => "edgefit-export",
            JobKind::Sensitivity => "edgefit-sensitivity",
            JobKind::Search => "edgefit-search",
            JobKind::Diff(_) => "edgefit-diff",
            JobKind::LoadData(_) => "edgefit-load-data",
            JobKind::Split(_) => "edgefit-split",
        };
        let promise = Promise::spawn_thread(name, move || {
            let repaint = ctx.clone();
            let sink = move |p: Progress| {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(p);
                }
                repaint.request_repaint();
            };
            let started = Instant::now();
            tracing::info!(job = name, "started");
            let result = work(&sink, &job_cancel);
            let seconds = started.elapsed().as_secs_f64();
            match &result {
                Ok(_) => tracing::info!(job = name, seconds, "finished"),
                Err(e) => tracing::warn!(job = name, seconds, error = %e, "failed"),
            }
            ctx.request_repaint();
            result
        });
        Self {
            kind,
            promise,
            progress,
            cancel,
            started: Instant::now(),
        }
    }

    /// Loads and analyses `path`, and finds its evaluation data.
    pub fn load(path: PathBuf, ctx: &egui::Context) -> Self {
        let job_path = path.clone();
        Self::spawn(JobKind::Load(path), ctx, move |sink, cancel| {
            let loaded = load_model(&job_path, sink, cancel).map_err(|e| e.to_string())?;
            let analysis = analyse(&loaded, &AnalysisOptions::default(), sink, cancel)
                .map_err(|e| e.to_string())?;
            let (data, calibration) = data_beside(&loaded).map_err(|e| e.to_string())?;
            Ok(JobOutput::Loaded(Arc::new(OpenModel {
                loaded,
                analysis,
                data: data.map(Arc::new),
                calibration: calibration.map(Arc::new),
            })))
        })
    }

    /// Loads `source` for `open` (at most its sample count), with its calibration split, and
    /// checks it fits the model's input under `run`.
    pub fn load_data(
        open: Arc<OpenModel>,
        source: super::data_panel::DataSource,
        run: RunSettings,
        ctx: &egui::Context,
    ) -> Self {
        Self::spawn(
            JobKind::LoadData(source.path.clone()),
            ctx,
            move |sink, cancel| {
                sink.report(Progress {
                    stage: "reading the data".to_owned(),
                    done: 0,
                    total: 0,
                });
                let mut data = load_dataset(&source.path, source.preprocess.as_ref())
                    .map_err(|e| e.to_string())?;
                cancel.check().map_err(|e| e.to_string())?;
                if let Some(n) = source.samples {
                    data = data.first(n);
                }
                if data.is_empty() {
                    return Err(format!("{} holds no samples", source.path.display()));
                }
                let resolved = edgefit_engine::pipeline::resolve_inputs(
                    &open.loaded,
                    Some(&data),
                    &run.inputs,
                )
                .map_err(|e| format!("the data does not fit the model: {e}"))?;
                // A fixed declared shape wins over the data's: the sizes must agree.
                let per_sample: usize = resolved.shape.iter().skip(1).product();
                if per_sample != data.sample_len() {
                    return Err(format!(
                        "the data does not fit the model: a sample has shape {:?} ({} values) \
                         but the model's input {:?} takes {per_sample} per sample",
                        data.sample_shape,
                        data.sample_len(),
                        resolved.shape
                    ));
                }
                let calibration = load_calibration(&source.path)
                    .map_err(|e| e.to_string())?
                    .map(Arc::new);
                Ok(JobOutput::Data {
                    model: open.loaded.path.clone(),
                    loaded: Box::new(super::data_panel::LoadedData {
                        source,
                        data: Arc::new(data),
                        calibration,
                    }),
                })
            },
        )
    }

    /// Compares the open model with the model at `other`: what was added, removed and
    /// changed, node by node and weight by weight.
    pub fn diff(open: Arc<OpenModel>, other: PathBuf, ctx: &egui::Context) -> Self {
        Self::spawn(JobKind::Diff(other.clone()), ctx, move |sink, cancel| {
            let b = load_model(&other, sink, cancel).map_err(|e| e.to_string())?;
            let diff = edgefit_engine::analyse::diff::diff_models(&open.loaded, &b)
                .map_err(|e| e.to_string())?;
            Ok(JobOutput::Diff {
                model: open.loaded.path.clone(),
                view: Box::new(super::diff_panel::DiffView::new(diff)),
            })
        })
    }

    /// Splits `open` where `tensors` cross, checks head then tail against the model on
    /// `data` (tract, and onnxruntime when it loads), then writes both halves.
    pub fn split(request: SplitRequest, ctx: &egui::Context) -> Self {
        let SplitRequest {
            open,
            data,
            run,
            onnxruntime_library,
            tensors,
            transfer,
            head,
        } = request;
        Self::spawn(JobKind::Split(head.clone()), ctx, move |sink, cancel| {
            use edgefit_engine::deploy::split::{
                VerifyOptions, split_model, verify_split, write_split,
            };
            let model = &open.loaded;
            let split = split_model(model, &tensors).map_err(|e| e.to_string())?;
            let tail = tail_path(&head);
            let mut runtimes = vec![RuntimeKind::Tract];
            if edgefit_engine::measure::runtime::onnxruntime::load(onnxruntime_library.as_deref())
                .is_ok()
            {
                runtimes.push(RuntimeKind::OnnxRuntime);
            }
            let data = data.first(16);
            let resolved =
                edgefit_engine::pipeline::resolve_inputs(model, Some(&data), &run.inputs)
                    .map_err(|e| e.to_string())?;
            let verification = verify_split(
                model,
                &split,
                &VerifyOptions {
                    data: &data,
                    input: &resolved.input,
                    input_shape: &resolved.shape,
                    fixed_inputs: &resolved.fixed,
                    runtimes: &runtimes,
                    transfer,
                },
                sink,
                cancel,
            )
            .map_err(|e| e.to_string())?;
            write_split(model, &split, &head, &tail).map_err(|e| e.to_string())?;
            let checks: Vec<String> = verification
                .runtimes
                .iter()
                .map(|c| {
                    let figure = match (c.sqnr_db, transfer) {
                        (_, edgefit_engine::deploy::split::Transfer::Fp32) | (None, _) => {
                            format!("max abs error {:.2e}", c.max_abs_error)
                        }
                        (Some(db), _) => format!("output SQNR {db:.1} dB"),
                    };
                    format!(
                        "{}: {} ({figure})",
                        c.runtime,
                        if !c.ran {
                            "not run"
                        } else if c.passed {
                            "reproduces the model"
                        } else {
                            "FAILED"
                        }
                    )
                })
                .collect();
            Ok(JobOutput::Split {
                message: format!(
                    "Wrote {} (device) and {} (server), sending {} as {}: {}",
                    head.display(),
                    tail.display(),
                    split.sent.join(", "),
                    transfer.name(),
                    checks.join("; ")
                ),
                passed: verification.passed,
            })
        })
    }

    /// Infers `open`'s shapes and MACs again with its first input at `shape`.
    pub fn reanalyse(open: Arc<OpenModel>, shape: Vec<usize>, ctx: &egui::Context) -> Self {
        Self::spawn(JobKind::Reanalyse, ctx, move |sink, cancel| {
            let loaded = open.loaded.with_input_shape(&shape);
            let analysis = analyse(&loaded, &AnalysisOptions::default(), sink, cancel)
                .map_err(|e| e.to_string())?;
            Ok(JobOutput::Reanalysed(Arc::new(OpenModel {
                loaded,
                analysis,
                data: open.data.clone(),
                calibration: open.calibration.clone(),
            })))
        })
    }

    /// Runs the optimize pipeline for `recipe`: into a scratch file (evaluation) or `export`.
    pub fn optimize(request: OptimizeRequest, ctx: &egui::Context) -> Self {
        let OptimizeRequest {
            open,
            data,
            calibration,
            data_key,
            run,
            onnxruntime_library,
            recipe,
            format,
            export,
        } = request;
        let kind = match &export {
            Some(p) => JobKind::Export(p.clone()),
            None => JobKind::Evaluate,
        };
        Self::spawn(kind, ctx, move |sink, cancel| {
            let is_export = export.is_some();
            let out = match export {
                Some(p) => p,
                None => scratch_path()?,
            };
            if run.runtime == RuntimeKind::OnnxRuntime {
                edgefit_engine::measure::runtime::onnxruntime::load(onnxruntime_library.as_deref())
                    .map_err(|e| e.to_string())?;
            }
            let options = OptimizeOptions {
                recipe: &recipe,
                format,
                data: &data,
                calibration: calibration.as_deref(),
                latency_runs: 30,
                runtime: run.runtime,
                input_shapes: &run.inputs,
                output: None,
            };
            let report =
                optimize(&open.loaded, &options, &out, sink, cancel).map_err(|e| e.to_string())?;
            if !is_export {
                remove_scratch(&out);
                // An evaluation that could not run the model has nothing to show: say why.
                if let Some(reason) = &report.not_measured {
                    return Err(reason.clone());
                }
            }
            Ok(JobOutput::Optimized {
                report: Box::new(report),
                export: is_export,
                data: data_key,
            })
        })
    }

    /// The sensitivity sweep of `open` on `data`: every layer alone at the studio's candidates
    /// (integer 8/6/4/3/2 bits, float16, and prune 25–90% by the plan's method), starting
    /// from the plan's defaults (symmetry, per-channel, clipping).
    pub fn sensitivity(request: SensitivityRequest, ctx: &egui::Context) -> Self {
        Self::spawn(JobKind::Sensitivity, ctx, move |sink, cancel| {
            let SensitivityRequest {
                open,
                data,
                run,
                onnxruntime_library,
                base,
            } = request;
            // onnxruntime serves the whole sweep from one session (tract rebuilds the model
            // per cell; their cells agree within 0.1 dB): used whenever it runs the model.
            let (runtime, _) = edgefit_engine::pipeline::choose_runtime(
                &open.loaded,
                &data,
                &run.inputs,
                onnxruntime_library.as_deref(),
            );
            let candidates = candidates(&[8, 6, 4, 3, 2], true, &[0.25, 0.5, 0.75, 0.9]);
            let options = SensitivityOptions {
                base: &base,
                candidates: &candidates,
                data: &data,
                runtime,
                input_shapes: &run.inputs,
                output: None,
            };
            let result = sensitivity(&open.loaded, &open.analysis, &options, sink, cancel)
                .map_err(|e| e.to_string())?;
            Ok(JobOutput::Sensitivity(Box::new(result)))
        })
    }

    /// The smallest plan whose output SQNR stays at or above the request's floor, measured on
    /// at most five front points in the sweep's runtime (see `edgefit search`).
    pub fn search(request: SearchRequest, ctx: &egui::Context) -> Self {
        Self::spawn(JobKind::Search, ctx, move |sink, cancel| {
            let SearchRequest {
                open,
                data,
                calibration,
                run,
                onnxruntime_library,
                base,
                sensitivity,
                min_sqnr_db,
            } = request;
            if sensitivity.runtime == RuntimeKind::OnnxRuntime {
                edgefit_engine::measure::runtime::onnxruntime::load(onnxruntime_library.as_deref())
                    .map_err(|e| e.to_string())?;
            }
            let options = SearchOptions {
                constraint: Constraint::MinSqnrDb(min_sqnr_db),
                budget_bytes: None,
                max_evaluations: 5,
                measure: OptimizeOptions {
                    recipe: &base,
                    format: ExportFormat::Fp32,
                    data: &data,
                    calibration: calibration.as_deref(),
                    latency_runs: 0,
                    runtime: sensitivity.runtime,
                    input_shapes: &run.inputs,
                    output: None,
                },
            };
            let report = search(&open.loaded, &sensitivity, &base, &options, sink, cancel)
                .map_err(|e| e.to_string())?;
            Ok(JobOutput::Search(Box::new(report)))
        })
    }
}

/// What a plan search runs on: the sweep it starts from, and the floor.
pub struct SearchRequest {
    pub open: Arc<OpenModel>,
    pub data: Arc<Dataset>,
    pub calibration: Option<Arc<Dataset>>,
    pub run: RunSettings,
    pub onnxruntime_library: Option<PathBuf>,
    pub base: Recipe,
    pub sensitivity: Arc<Sensitivity>,
    pub min_sqnr_db: f64,
}

/// What a sensitivity sweep runs on.
pub struct SensitivityRequest {
    pub open: Arc<OpenModel>,
    pub data: Arc<Dataset>,
    pub run: RunSettings,
    pub onnxruntime_library: Option<PathBuf>,
    /// The plan whose defaults each candidate starts from.
    pub base: Recipe,
}

/// The dataset.json beside the model, with its calibration split (none: the session
/// generates inputs).
pub fn data_beside(
    model: &LoadedModel,
) -> edgefit_engine::Result<(Option<Dataset>, Option<Dataset>)> {
    if let Some(dir) = model
        .path
        .parent()
        .filter(|d| d.join("dataset.json").is_file())
    {
        return Ok((Some(load_dataset(dir, None)?), load_calibration(dir)?));
    }
    Ok((None, None))
}

fn scratch_path() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("edgefit-studio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(dir.join(format!("evaluation-{n}.onnx")))
}

fn remove_scratch(out: &Path) {
    let (recipe, json, md) = edgefit_engine::pipeline::sidecar_paths(out);
    for p in [out.to_path_buf(), recipe, json, md] {
        // Scratch files only; a leftover in the temp folder is harmless.
        let _ = std::fs::remove_file(p);
    }
}
