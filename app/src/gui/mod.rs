//! The studio window. Panels read the session and push [`Command`]s; the app applies them at
//! the end of the frame. Loading, evaluation and export run on named background threads that
//! wake the UI; the window never waits for them.

mod estimator;
pub mod graph;
mod graph_details;
mod graph_paint;
mod jobs;
mod panels;
mod run_panel;
mod screenshot;
pub mod session;
pub mod tour;
mod tradeoffs;

use std::path::PathBuf;

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use jobs::{Job, JobKind, JobOutput, OptimizeRequest};
use screenshot::ScreenshotTask;
use session::{EvalPoint, Session};

/// What panels ask the app to do; applied at the end of the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Open the file dialog.
    PickFile,
    /// Load this model in the background.
    Open(PathBuf),
    /// Cancel the running job.
    CancelJob,
    ClearRecent,
    /// Replace the plan; `record` makes it an undo step.
    SetRecipe {
        recipe: edgefit_engine::plan::Recipe,
        record: bool,
    },
    Undo,
    Redo,
    SelectLayer(usize),
    SetFormat(edgefit_engine::export::ExportFormat),
    /// Measure the current plan in the background (a point on the trade-off chart).
    Evaluate,
    PickExportPath,
    Export(PathBuf),
    /// Bring back the settings of an evaluated point.
    RestorePoint(usize),
    /// Save the session (model path, plan, evaluated points) to a `.edgefit.json` file.
    SaveSession(PathBuf),
    /// Open a `.edgefit.json` session: its model, plan and points.
    OpenSession(PathBuf),
    PickSaveSession,
    PickOpenSession,
    /// Change the runtime or the input settings of evaluations.
    SetRun(session::RunSettings),
    PickOnnxRuntimeLibrary,
    /// Use this ONNX Runtime shared library (remembered).
    SetOnnxRuntimeLibrary(PathBuf),
    /// Compare evaluated points `a` and `b` layer by layer.
    CompareAb {
        a: usize,
        b: usize,
    },
    CloseAb,
}

/// State persisted between sessions (eframe storage).
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub recent_files: Vec<PathBuf>,
    /// The last session of each model (autosave), by canonical model path.
    pub sessions: Vec<session::SessionFile>,
    /// The ONNX Runtime shared library chosen in the studio (else the usual places).
    pub onnxruntime_library: Option<PathBuf>,
}

/// Sessions remembered in the app's storage.
const MAX_REMEMBERED_SESSIONS: usize = 20;

const MAX_RECENT: usize = 10;
const STORAGE_KEY: &str = "edgefit.studio";
/// How long after the last plan change an evaluation starts by itself.
const AUTO_EVALUATE_AFTER: Duration = Duration::from_millis(800);

/// The studio application state.
pub struct StudioApp {
    pub persisted: Persisted,
    pub session: Option<Session>,
    /// The last failure (open, evaluate, export); what was open stays usable.
    pub error: Option<String>,
    /// The last export's outcome.
    pub status: Option<String>,
    job: Option<Job>,
    commands: Vec<Command>,
    auto_evaluate_at: Option<Instant>,
    /// Evaluate automatically after changes (off in tests that step frames by hand).
    pub auto_evaluate: bool,
    /// Plan to start from once the first model is open (`--recipe`).
    pub initial_recipe: Option<edgefit_engine::plan::Recipe>,
    /// A session file waiting for its model to load.
    pending_session: Option<session::SessionFile>,
    screenshot: Option<ScreenshotTask>,
    input_form: run_panel::InputForm,
    tradeoff_view: tradeoffs::TradeoffView,
    layers_view: panels::LayersView,
    /// Models with more compressible weights than this estimate off the UI thread.
    pub background_estimates_above: usize,
    /// Steps of a scripted session (`--tour`) still to run.
    pub tour: std::collections::VecDeque<tour::TourStep>,
    /// Where this frame drew the graph, weights and trade-off panels (screenshot crops).
    panel_rects: Vec<(&'static str, egui::Rect)>,
    /// View state of the Graph panel (pan, zoom, search, highlighted node).
    pub graph: graph::GraphPanel,
}

impl StudioApp {
    /// A studio with `persisted` state that starts loading `initial` if given.
    pub fn new(persisted: Persisted, initial: Option<PathBuf>) -> Self {
        let mut app = Self {
            persisted,
            session: None,
            error: None,
            status: None,
            job: None,
            commands: Vec::new(),
            auto_evaluate_at: None,
            auto_evaluate: true,
            initial_recipe: None,
            pending_session: None,
            screenshot: None,
            input_form: run_panel::InputForm::default(),
            tradeoff_view: tradeoffs::TradeoffView::default(),
            layers_view: panels::LayersView::default(),
            tour: Default::default(),
            background_estimates_above: estimator::BACKGROUND_ABOVE_WEIGHTS,
            panel_rects: Vec::new(),
            graph: graph::GraphPanel::default(),
        };
        if let Some(path) = initial {
            app.commands.push(Command::Open(path));
        }
        app
    }

    /// Queues a command as a panel would.
    pub fn send(&mut self, command: Command) {
        self.commands.push(command);
    }

    /// Whether a background job is running.
    pub fn is_busy(&self) -> bool {
        self.job.is_some()
    }

    fn apply_commands(&mut self, ctx: &egui::Context) {
        let commands = std::mem::take(&mut self.commands);
        if !commands.is_empty() {
            // The state changed after this frame was drawn: draw it again.
            ctx.request_repaint();
        }
        for command in commands {
            match command {
                Command::PickFile => {
                    if let Some(path) = rfd::FileDialog::new()
                        .add_filter("ONNX model", &["onnx"])
                        .pick_file()
                    {
                        self.start(Job::load(path, ctx));
                    }
                }
                Command::Open(path) => self.start(Job::load(path, ctx)),
                Command::CancelJob => {
                    if let Some(job) = &self.job {
                        job.cancel.cancel();
                    }
                }
                Command::ClearRecent => self.persisted.recent_files.clear(),
                Command::SetRecipe { recipe, record } => {
                    if let Some(s) = &mut self.session {
                        s.set_recipe(recipe, record);
                        self.auto_evaluate_at = Some(Instant::now() + AUTO_EVALUATE_AFTER);
                    }
                }
                Command::Undo | Command::Redo => {
                    if let Some(s) = &mut self.session {
                        if command == Command::Undo {
                            s.undo()
                        } else {
                            s.redo()
                        }
                        self.auto_evaluate_at = Some(Instant::now() + AUTO_EVALUATE_AFTER);
                    }
                }
                Command::SelectLayer(i) => {
                    if let Some(s) = &mut self.session {
                        s.select(i);
                    }
                }
                Command::SetFormat(f) => {
                    if let Some(s) = &mut self.session {
                        s.format = f;
                        self.auto_evaluate_at = Some(Instant::now() + AUTO_EVALUATE_AFTER);
                    }
                }
                Command::Evaluate => self.start_optimize(None, ctx),
                Command::PickExportPath => {
                    let picked = rfd::FileDialog::new()
                        .add_filter("ONNX model", &["onnx"])
                        .set_file_name("model.optimized.onnx")
                        .save_file();
                    if let Some(path) = picked {
                        self.start_optimize(Some(path), ctx);
                    }
                }
                Command::Export(path) => self.start_optimize(Some(path), ctx),
                Command::PickSaveSession => {
                    let picked = rfd::FileDialog::new()
                        .add_filter("Edgefit session", &["json"])
                        .set_file_name("session.edgefit.json")
                        .save_file();
                    if let Some(path) = picked {
                        self.commands.push(Command::SaveSession(path));
                    }
                }
                Command::PickOpenSession => {
                    if let Some(path) = rfd::FileDialog::new()
                        .add_filter("Edgefit session", &["json"])
                        .pick_file()
                    {
                        self.commands.push(Command::OpenSession(path));
                    }
                }
                Command::SaveSession(path) => {
                    if let Some(s) = &self.session {
                        let json = serde_json::to_string_pretty(&s.to_file()).unwrap_or_default();
                        match edgefit_engine::write::write_bytes_atomic(&path, json.as_bytes()) {
                            Ok(()) => {
                                self.status = Some(format!("Saved session {}", path.display()))
                            }
                            Err(e) => self.error = Some(format!("Could not save the session: {e}")),
                        }
                    }
                }
                Command::OpenSession(path) => {
                    let read = std::fs::read_to_string(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| {
                            serde_json::from_str::<session::SessionFile>(&t)
                                .map_err(|e| e.to_string())
                        });
                    match read {
                        Ok(file) => {
                            self.pending_session = Some(file.clone());
                            self.start(Job::load(file.model, ctx));
                        }
                        Err(e) => {
                            self.error =
                                Some(format!("Could not open session {}: {e}", path.display()))
                        }
                    }
                }
                Command::SetRun(run) => self.set_run(run, ctx),
                Command::PickOnnxRuntimeLibrary => {
                    if let Some(path) = rfd::FileDialog::new()
                        .set_title("ONNX Runtime shared library (libonnxruntime.so*)")
                        .pick_file()
                    {
                        self.commands.push(Command::SetOnnxRuntimeLibrary(path));
                    }
                }
                Command::SetOnnxRuntimeLibrary(path) => self.set_onnxruntime_library(path),
                Command::CompareAb { a, b } => {
                    if let Some(s) = &mut self.session {
                        let repaint = ctx.clone();
                        s.compare(a, b, move || repaint.request_repaint());
                    }
                }
                Command::CloseAb => {
                    if let Some(s) = &mut self.session {
                        s.close_comparison();
                    }
                }
                Command::RestorePoint(i) => {
                    if let Some(s) = &mut self.session
                        && let Some(p) = s.points.get(i).cloned()
                    {
                        s.format = p.format;
                        s.set_recipe(p.recipe, true);
                    }
                }
            }
        }
        if let Some(s) = &mut self.session {
            s.refresh();
        }
    }

    /// Applies new run settings; onnxruntime is loaded first, and when it cannot be the
    /// runtime stays what it was and the message says how to enable it.
    fn set_run(&mut self, run: session::RunSettings, ctx: &egui::Context) {
        if run.runtime == edgefit_engine::runtime::RuntimeKind::OnnxRuntime
            && let Err(e) = edgefit_engine::runtime::onnxruntime::load(
                self.persisted.onnxruntime_library.as_deref(),
            )
        {
            self.error = Some(format!(
                "onnxruntime is not available: {e}. Install it (pip install onnxruntime) or \
                 choose its library with \"ONNX Runtime library...\"; tract stays in use."
            ));
            return;
        }
        if let Some(s) = &mut self.session
            && s.run != run
        {
            let inputs_changed = s.run.inputs != run.inputs;
            s.set_run(run);
            self.error = None;
            self.auto_evaluate_at = Some(Instant::now() + AUTO_EVALUATE_AFTER);
            // Symbolic or -1 dims hid shapes and MACs: infer them at the shape now given.
            let open_dims = s.open.loaded.graph.inputs.first().is_some_and(|i| {
                i.shape
                    .as_ref()
                    .is_none_or(|d| d.iter().any(|d| d.known().is_none()))
            });
            if inputs_changed
                && open_dims
                && let Ok(shape) = edgefit_engine::pipeline::resolve_input_shape(
                    &s.open.loaded,
                    None,
                    &s.run.inputs,
                )
            {
                let job = Job::reanalyse(s.open.clone(), shape, ctx);
                self.start(job);
            }
        }
    }

    /// Remembers `path` as the ONNX Runtime library and loads it now if none is loaded.
    fn set_onnxruntime_library(&mut self, path: PathBuf) {
        use edgefit_engine::runtime::onnxruntime::{load, loaded_library};
        self.persisted.onnxruntime_library = Some(path.clone());
        match loaded_library() {
            Some(loaded) if loaded != path => {
                self.status = Some(format!(
                    "onnxruntime is already loaded from {}; {} is used from the next start",
                    loaded.display(),
                    path.display()
                ));
            }
            _ => match load(Some(&path)) {
                Ok(p) => self.status = Some(format!("onnxruntime loaded from {}", p.display())),
                Err(e) => self.error = Some(format!("Could not load onnxruntime: {e}")),
            },
        }
    }

    fn start(&mut self, job: Job) {
        if let Some(old) = self.job.take() {
            old.cancel.cancel();
        }
        self.job = Some(job);
    }

    fn start_optimize(&mut self, export: Option<PathBuf>, ctx: &egui::Context) {
        let Some(s) = &self.session else { return };
        self.auto_evaluate_at = None;
        let data = match &s.data {
            Ok(data) => data.clone(),
            Err(e) => {
                self.error = Some(format!(
                    "Cannot evaluate yet: {e}. Set the input shape under Inputs and runtime."
                ));
                return;
            }
        };
        let job = Job::optimize(
            OptimizeRequest {
                open: s.open.clone(),
                data,
                run: s.run.clone(),
                onnxruntime_library: self.persisted.onnxruntime_library.clone(),
                recipe: s.recipe.clone(),
                format: s.format,
                export,
            },
            ctx,
        );
        self.start(job);
    }

    fn poll_job(&mut self, ctx: &egui::Context) {
        let Some(job) = self.job.take() else { return };
        let kind = job.kind.clone();
        match job.promise.try_take() {
            Err(promise) => self.job = Some(Job { promise, ..job }),
            Ok(Err(message)) => {
                self.error = Some(match kind {
                    JobKind::Load(path) => format!("Could not open {}: {message}", path.display()),
                    JobKind::Evaluate => format!("Evaluation failed: {}", for_the_window(&message)),
                    JobKind::Reanalyse => {
                        format!("Could not analyse the model at that input shape: {message}")
                    }
                    JobKind::Export(path) => format!(
                        "Export to {} failed: {}",
                        path.display(),
                        for_the_window(&message)
                    ),
                });
            }
            Ok(Ok(JobOutput::Loaded(open))) => {
                if let JobKind::Load(path) = &kind {
                    self.remember_recent(path);
                }
                let mut session = Session::new(open);
                if session.is_large(self.background_estimates_above) {
                    let repaint = ctx.clone();
                    session.estimate_in_background(move || repaint.request_repaint());
                }
                // An explicit session file wins, then the autosaved one of this model.
                let path = session.open.loaded.path.clone();
                let saved = self.pending_session.take().or_else(|| {
                    self.persisted
                        .sessions
                        .iter()
                        .find(|f| f.model == path)
                        .cloned()
                });
                if let Some(file) = saved {
                    session.restore(&file);
                }
                if let Some(recipe) = self.initial_recipe.take() {
                    session.set_recipe(recipe, false);
                    session.refresh();
                    if let Some(e) = &session.compression_error {
                        self.error = Some(format!("The recipe does not fit this model: {e}"));
                    }
                }
                self.session = Some(session);
                self.error = self.error.take().filter(|e| e.starts_with("The recipe"));
                // Measure the original once so the trade-off chart has its reference.
                self.auto_evaluate_at = Some(Instant::now());
            }
            Ok(Ok(JobOutput::Reanalysed(open))) => {
                if let Some(s) = &mut self.session
                    && s.open.loaded.path == open.loaded.path
                {
                    let repaint = ctx.clone();
                    s.replace_analysis(open, move || repaint.request_repaint());
                }
            }
            Ok(Ok(JobOutput::Optimized { report, export })) => {
                self.error = None;
                if let Some(s) = &mut self.session {
                    let measured =
                        |m: &edgefit_engine::pipeline::Measured| m.accuracy.map(|a| a.top1);
                    let accuracy =
                        measured(&report.compressed).unwrap_or(report.fidelity.agreement);
                    if s.baseline.is_none() {
                        s.baseline = Some(EvalPoint {
                            recipe: edgefit_engine::plan::Recipe::default(),
                            format: edgefit_engine::export::ExportFormat::Fp32,
                            accuracy: measured(&report.original).unwrap_or(1.0),
                            size_bytes: report.original.size_bytes,
                            latency_ms: report.original.latency_ms.as_ref().map(|l| l.median),
                            verified: true,
                            runtime: report.runtime,
                        });
                    }
                    s.points.push(EvalPoint {
                        recipe: report.recipe.clone(),
                        format: report.format,
                        accuracy,
                        size_bytes: report.compressed.size_bytes,
                        latency_ms: report.compressed.latency_ms.as_ref().map(|l| l.median),
                        verified: report.verification.passed,
                        runtime: report.runtime,
                    });
                }
                if export {
                    self.status = Some(format!(
                        "Exported {} - verification {}: {}",
                        report.output,
                        if report.verification.passed {
                            "passed"
                        } else {
                            "FAILED"
                        },
                        report.verification.message
                    ));
                }
            }
        }
    }

    /// Starts the next tour step once the window is idle (the original measured, no job).
    fn run_tour_step(&mut self) {
        let Some(s) = &self.session else { return };
        // Idle means no job, none about to start (queued commands, a pending auto-evaluation)
        // and no failure to look at.
        if self.job.is_some()
            || !self.commands.is_empty()
            || self.auto_evaluate_at.is_some()
            || self.error.is_some()
        {
            return;
        }
        let Some(step) = self.tour.pop_front() else {
            return;
        };
        if let Some(format) = step.format {
            self.commands.push(Command::SetFormat(format));
        }
        if let Some(recipe) = step.recipe {
            self.commands.push(Command::SetRecipe {
                recipe,
                record: true,
            });
        }
        if let Some(name) = &step.select {
            match s.compressor.layers.iter().position(|l| &l.name == name) {
                Some(i) => self.commands.push(Command::SelectLayer(i)),
                None => self.error = Some(format!("tour: the model has no layer `{name}`")),
            }
        }
        if step.evaluate {
            self.commands.push(Command::Evaluate);
        }
    }

    /// Autosave: the open model's plan and points go into the persisted state.
    pub fn remember_session(&mut self) {
        let Some(s) = &self.session else { return };
        let file = s.to_file();
        let sessions = &mut self.persisted.sessions;
        sessions.retain(|f| f.model != file.model);
        sessions.insert(0, file);
        sessions.truncate(MAX_REMEMBERED_SESSIONS);
    }

    fn remember_recent(&mut self, path: &std::path::Path) {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let recent = &mut self.persisted.recent_files;
        recent.retain(|p| p != &path);
        recent.insert(0, path);
        recent.truncate(MAX_RECENT);
    }

    fn menu_ui(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open...").clicked() {
                    self.commands.push(Command::PickFile);
                }
                ui.menu_button("Open recent", |ui| {
                    if self.persisted.recent_files.is_empty() {
                        ui.label("(none)");
                    }
                    for path in &self.persisted.recent_files {
                        if ui.button(path.display().to_string()).clicked() {
                            self.commands.push(Command::Open(path.clone()));
                        }
                    }
                    ui.separator();
                    if ui.button("Clear recent files").clicked() {
                        self.commands.push(Command::ClearRecent);
                    }
                });
                if ui
                    .add_enabled(self.session.is_some(), egui::Button::new("Export..."))
                    .clicked()
                {
                    self.commands.push(Command::PickExportPath);
                }
                ui.separator();
                if ui
                    .add_enabled(self.session.is_some(), egui::Button::new("Save session..."))
                    .clicked()
                {
                    self.commands.push(Command::PickSaveSession);
                }
                if ui.button("Open session...").clicked() {
                    self.commands.push(Command::PickOpenSession);
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("Edit", |ui| {
                if ui.button("Undo (Ctrl+Z)").clicked() {
                    self.commands.push(Command::Undo);
                }
                if ui.button("Redo (Ctrl+Shift+Z)").clicked() {
                    self.commands.push(Command::Redo);
                }
            });
            ui.menu_button("View", |ui| {
                egui::global_theme_preference_buttons(ui);
            });
        });
    }

    fn status_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = &self.job {
            ui.horizontal(|ui| {
                ui.spinner();
                let progress = job.progress.lock().ok().and_then(|p| p.clone());
                let what = match &job.kind {
                    JobKind::Load(p) => format!("Opening {}", p.display()),
                    JobKind::Evaluate => "Evaluating".to_owned(),
                    JobKind::Reanalyse => "Inferring shapes at the new input shape".to_owned(),
                    JobKind::Export(p) => format!("Exporting {}", p.display()),
                };
                let (stage, fraction) =
                    progress.map_or((String::new(), None), |p| (p.stage.clone(), p.fraction()));
                ui.add(
                    egui::ProgressBar::new(fraction.unwrap_or(0.0))
                        .desired_width(200.0)
                        .show_percentage(),
                );
                ui.label(format!(
                    "{what}: {stage} ({:.0} s)",
                    job.started.elapsed().as_secs_f32()
                ));
                if ui.button("Cancel").clicked() {
                    self.commands.push(Command::CancelJob);
                }
            });
        }
        if let Some(status) = &self.status {
            ui.label(status);
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        if let Some(s) = &self.session {
            for warning in &s.open.analysis.warnings {
                ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {warning}"));
            }
        }
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(path) = dropped.into_iter().next() {
            self.commands.push(Command::Open(path));
        }
        let (undo, redo) = ctx.input_mut(|i| {
            let redo = i.consume_key(
                egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
                egui::Key::Z,
            );
            let undo = i.consume_key(egui::Modifiers::COMMAND, egui::Key::Z);
            (undo, redo)
        });
        if undo {
            self.commands.push(Command::Undo);
        }
        if redo {
            self.commands.push(Command::Redo);
        }
        self.poll_job(ctx);
        if let Some(s) = &mut self.session {
            s.poll_estimates();
            s.poll_comparison();
        }
        if let Some(at) = self.auto_evaluate_at
            && self.auto_evaluate
            && self.job.is_none()
            && !ctx.input(|i| i.pointer.any_down())
        {
            let now = Instant::now();
            if now >= at {
                self.auto_evaluate_at = None;
                self.commands.push(Command::Evaluate);
            } else {
                ctx.request_repaint_after(at - now);
            }
        }
        self.run_tour_step();
        if let Some(task) = &mut self.screenshot {
            let ready = self.job.is_none()
                && self.commands.is_empty()
                && self.auto_evaluate_at.is_none()
                && self.tour.is_empty()
                && (self.session.is_some() || self.error.is_some());
            task.tick(ctx, ready, &self.panel_rects);
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("menu").show(ui, |ui| self.menu_ui(ui));
        egui::Panel::bottom("status")
            .resizable(true)
            .show(ui, |ui| self.status_ui(ui));
        let commands = &mut self.commands;
        match &self.session {
            Some(session) => {
                egui::Panel::left("controls")
                    .resizable(true)
                    .default_size(270.0)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical().show(ui, |ui| {
                            panels::controls_ui(ui, session, commands);
                            ui.separator();
                            // Held open while the model cannot be evaluated for want of a shape.
                            egui::CollapsingHeader::new("Inputs and runtime")
                                .open(session.data.is_err().then_some(true))
                                .show(ui, |ui| {
                                    run_panel::run_settings_ui(
                                        ui,
                                        session,
                                        &mut self.input_form,
                                        commands,
                                    );
                                });
                            ui.separator();
                            egui::CollapsingHeader::new("Summary")
                                .default_open(true)
                                .show(ui, |ui| {
                                    panels::summary_ui(
                                        ui,
                                        &session.open.analysis,
                                        session.compression.as_ref(),
                                    );
                                });
                        });
                    });
                let rects = &mut self.panel_rects;
                rects.clear();
                egui::Panel::right("plots")
                    .resizable(true)
                    .default_size(390.0)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical().show(ui, |ui| {
                            let weights = ui.scope(|ui| {
                                ui.heading("Weights");
                                panels::weights_ui(ui, session);
                            });
                            rects.push(("weights", weights.response.rect));
                            ui.separator();
                            let tradeoffs = ui.scope(|ui| {
                                ui.heading("Trade-offs");
                                tradeoffs::tradeoff_ui(
                                    ui,
                                    session,
                                    &mut self.tradeoff_view,
                                    commands,
                                );
                            });
                            rects.push(("tradeoffs", tradeoffs.response.rect));
                        });
                    });
                egui::CentralPanel::default().show(ui, |ui| {
                    egui::Panel::bottom("layers")
                        .resizable(true)
                        .default_size(260.0)
                        .show(ui, |ui| {
                            ui.heading("Layers");
                            panels::layers_ui(ui, session, &mut self.layers_view, commands);
                        });
                    let graph = ui.scope(|ui| {
                        graph::graph_ui(ui, session, &mut self.graph, commands);
                    });
                    rects.push(("graph", graph.response.rect));
                });
            }
            None => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.centered_and_justified(|ui| {
                        if ui
                            .button("Open an ONNX model... (or drop one here)")
                            .clicked()
                        {
                            commands.push(Command::PickFile);
                        }
                    });
                });
            }
        }
        let ctx = ui.ctx().clone();
        self.apply_commands(&ctx);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.screenshot.is_some() {
            // A screenshot run leaves the user's recent files and sessions alone.
            return;
        }
        self.remember_session();
        eframe::set_value(storage, STORAGE_KEY, &self.persisted);
    }
}

/// An engine message as the window says it: command-line advice becomes the control that
/// does the same here.
fn for_the_window(message: &str) -> String {
    message
        .replace(
            "use `--runtime onnxruntime`",
            "choose onnxruntime under Inputs and runtime",
        )
        .replace(
            "(--input-shape ",
            "(under Inputs and runtime, or --input-shape ",
        )
}

/// How the studio starts (the command line's options).
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The model to open (default: the bundled sample).
    pub model: Option<PathBuf>,
    /// Save a PNG of the window (and crops of its panels) once idle, then exit. The run uses
    /// fresh state and saves none, so screenshots do not depend on earlier sessions.
    pub screenshot: Option<PathBuf>,
    /// Start from this recipe.
    pub recipe: Option<PathBuf>,
    /// Run this scripted session (see [`tour`]).
    pub tour: Option<PathBuf>,
}

/// Opens the studio window.
pub fn run(start: StartOptions) -> Result<()> {
    use anyhow::Context;
    let StartOptions {
        model,
        screenshot,
        recipe,
        tour,
    } = start;
    let initial = model.or_else(crate::samples::default_sample_model);
    let tour = match tour {
        Some(path) => tour::load_tour(&path)?,
        None => Vec::new(),
    };
    let recipe = match recipe {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some(
                edgefit_engine::plan::Recipe::from_json(&text)
                    .with_context(|| format!("in {}", path.display()))?,
            )
        }
        None => None,
    };
    // A screenshot run keeps its window state (egui memory) in a scratch file: it neither
    // reads nor changes the user's.
    let scratch_storage = screenshot.as_ref().map(|_| {
        std::env::temp_dir().join(format!("edgefit-screenshot-{}.ron", std::process::id()))
    });
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Edgefit Studio")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        persistence_path: scratch_storage.clone(),
        ..Default::default()
    };
    eframe::run_native(
        "Edgefit Studio",
        options,
        Box::new(move |cc| {
            let persisted: Persisted = match &screenshot {
                Some(_) => Persisted::default(),
                None => cc
                    .storage
                    .and_then(|s| eframe::get_value(s, STORAGE_KEY))
                    .unwrap_or_default(),
            };
            let mut app = StudioApp::new(persisted, initial);
            app.initial_recipe = recipe;
            app.tour = tour.into();
            app.screenshot = screenshot.map(ScreenshotTask::new);
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the studio window could not start: {e}"))?;
    if let Some(path) = scratch_storage {
        // Only a scratch file of this run.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}
