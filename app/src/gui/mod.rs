//! The studio window. Panels read the session and push [`Command`]s; the app applies them at
//! the end of the frame. Loading, evaluation and export run on named background threads that
//! wake the UI; the window never waits for them.

mod apply;
pub mod data_panel;
pub mod deploy;
mod deploy_panel;
pub mod diff_panel;
mod estimator;
pub mod file_dialog;
pub mod graph;
mod graph_details;
mod graph_paint;
mod jobs;
mod outcomes;
mod panels;
pub mod points;
mod run_panel;
mod screenshot;
mod sensitivity_panel;
pub mod session;
mod start;
pub mod tour;
mod tradeoffs;
mod window;

use std::path::PathBuf;
use std::sync::Arc;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use jobs::Job;
use screenshot::ScreenshotTask;
use session::Session;

pub use start::{StartOptions, run};

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
        recipe: edgefit_engine::compress::plan::Recipe,
        record: bool,
    },
    Undo,
    Redo,
    SelectLayer(usize),
    SetFormat(edgefit_engine::export::build::ExportFormat),
    /// Measure the current plan in the background (a point on the trade-off chart).
    Evaluate,
    PickExportPath,
    Export(PathBuf),
    /// Choose evaluation data (a folder or an .npz/.npy file).
    PickData,
    /// Show the data form for this path.
    ChooseData(PathBuf),
    /// Load this data for evaluation and calibration, in the background.
    LoadData(data_panel::DataSource),
    /// Evaluate on the dataset beside the model, else on generated inputs.
    UseGeneratedData,
    /// Choose a model to compare the open one with.
    PickDiff,
    /// Compare the open model with this file (nodes and weights), in the background.
    Diff(PathBuf),
    CloseDiff,
    /// Select and centre this node (index into the open model's `GraphView::nodes`).
    FocusNode(usize),
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
    /// Measure every layer alone at each candidate setting in the background (the heat map).
    AnalyseSensitivity,
    /// Find the smallest plan whose output SQNR stays at or above this floor (dB), from the
    /// last sweep; the plan found becomes the current one (an undo step).
    SearchPlan {
        min_sqnr_db: f64,
    },
    /// Give `layer` the settings of one candidate of the sensitivity sweep (an undo step).
    ApplyCandidate {
        layer: String,
        candidate: edgefit_engine::guide::sensitivity::Candidate,
    },
    /// The Devices panel's choices: the target device, the latency target, the split's
    /// server and link.
    SetDeployChoices(deploy::DeployChoices),
    /// Choose where to write the two halves of a split at these tensors.
    PickSplitExport(Vec<String>),
    /// Split where the chosen tensors cross, verify and write the device half here (the
    /// server half beside it), in the background.
    ExportSplit(PathBuf),
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
    /// The last evaluation's failed verdict (below the quality floor, or a written file that
    /// did not verify), shown in red. A result, not a failure: a scripted session goes on.
    pub verdict: Option<String>,
    /// The last export's outcome.
    pub status: Option<String>,
    job: Option<Job>,
    commands: Vec<Command>,
    auto_evaluate_at: Option<Instant>,
    /// Evaluate automatically after changes (off in tests that step frames by hand).
    pub auto_evaluate: bool,
    /// Evaluations and exports started since the window opened (a plan already measured
    /// is not measured again: tests count on it).
    pub evaluations_started: usize,
    /// Plan to start from once the first model is open (`--recipe`).
    pub initial_recipe: Option<edgefit_engine::compress::plan::Recipe>,
    /// A session file waiting for its model to load.
    pending_session: Option<session::SessionFile>,
    screenshot: Option<ScreenshotTask>,
    input_form: run_panel::InputForm,
    /// The data form (a chosen path before it is loaded) and the thumbnails.
    pub data_form: data_panel::DataForm,
    tradeoff_view: tradeoffs::TradeoffView,
    layers_view: panels::LayersView,
    sensitivity_view: sensitivity_panel::SensitivityView,
    /// Models with more compressible weights than this estimate off the UI thread.
    pub background_estimates_above: usize,
    /// Steps of a scripted session (`--tour`) still to run.
    pub tour: std::collections::VecDeque<tour::TourStep>,
    /// The diff last scrolled into view (by its address).
    diff_shown: Option<usize>,
    /// Scroll the Devices panel into view on the next frame (a tour chose a device).
    pub show_devices: bool,
    /// The tensors of the split whose halves the export dialog is choosing a path for.
    pending_split: Option<Vec<String>>,
    /// The last file exported from this window (offered for a diff with the original).
    pub last_export: Option<PathBuf>,
    /// Open, export and session dialogs (the platform's, else a built-in one).
    pub file_dialogs: file_dialog::FileDialogs,
    /// The title last given to the window.
    window_title: String,
    /// A close was asked for while an export was being written: the prompt is shown.
    pub confirm_close: bool,
    /// The person chose to quit: the next close goes through.
    quitting: bool,
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
            verdict: None,
            status: None,
            job: None,
            commands: Vec::new(),
            auto_evaluate_at: None,
            auto_evaluate: true,
            evaluations_started: 0,
            initial_recipe: None,
            show_devices: false,
            pending_split: None,
            pending_session: None,
            screenshot: None,
            input_form: run_panel::InputForm::default(),
            data_form: data_panel::DataForm::default(),
            tradeoff_view: tradeoffs::TradeoffView::default(),
            layers_view: panels::LayersView::default(),
            sensitivity_view: sensitivity_panel::SensitivityView::default(),
            tour: Default::default(),
            background_estimates_above: estimator::BACKGROUND_ABOVE_WEIGHTS,
            last_export: None,
            diff_shown: None,
            file_dialogs: file_dialog::FileDialogs::default(),
            window_title: String::new(),
            confirm_close: false,
            quitting: false,
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

    /// Where the last frame drew a panel (`weights`, `tradeoffs`, `sensitivity`, `graph`).
    pub fn panel_rect(&self, name: &str) -> Option<egui::Rect> {
        self.panel_rects
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
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
        self.shortcuts_logic(ctx);
        // Before the job is collected: a close during an export asks first.
        self.close_logic(ctx);
        self.poll_job(ctx);
        let folder = self.dialog_folder();
        if let Some((purpose, path)) = self.file_dialogs.poll(folder.as_deref()) {
            self.commands.push(purpose.command(path));
        }
        self.title_logic(ctx);
        if let Some(s) = &mut self.session {
            s.poll_estimates();
            s.poll_comparison();
            s.update_planned_file();
            s.update_deploy();
        }
        if let Some(at) = self.auto_evaluate_at
            && self.auto_evaluate
            && self.job.is_none()
            && !ctx.input(|i| i.pointer.any_down())
        {
            let now = Instant::now();
            if now >= at {
                self.auto_evaluate_at = None;
                // A plan already measured on these data is shown, not measured again.
                let measured = self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.baseline.is_some() && s.measured_point().is_some());
                if !measured {
                    self.commands.push(Command::Evaluate);
                }
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
        self.confirm_close_ui(ui);
        if let Some((purpose, path)) = self.file_dialogs.builtin_ui(ui) {
            self.commands.push(purpose.command(path));
        }
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
                            // Held open while the model cannot be evaluated for want of a shape;
                            // open at first: the data control is the first thing a new model needs.
                            egui::CollapsingHeader::new("Data, inputs and runtime")
                                .default_open(true)
                                .open(session.data.is_err().then_some(true))
                                .show(ui, |ui| {
                                    data_panel::data_ui(
                                        ui,
                                        session,
                                        &mut self.data_form,
                                        self.job.is_some(),
                                        commands,
                                    );
                                    ui.separator();
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
                                    panels::summary_ui(ui, session);
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
                            ui.separator();
                            let busy = self.job.is_some();
                            let sensitivity = ui.scope(|ui| {
                                sensitivity_panel::sensitivity_ui(
                                    ui,
                                    session,
                                    &mut self.sensitivity_view,
                                    busy,
                                    commands,
                                );
                            });
                            rects.push(("sensitivity", sensitivity.response.rect));
                            if let Some(view) = &session.diff {
                                ui.separator();
                                let diff = ui.scope(|ui| diff_panel::diff_ui(ui, view, commands));
                                rects.push(("diff", diff.response.rect));
                                // A new diff is scrolled into view once: it is what was asked.
                                let identity = Some(Arc::as_ptr(&view.diff) as usize);
                                if identity != self.diff_shown {
                                    self.diff_shown = identity;
                                    ui.scroll_to_rect(diff.response.rect, Some(egui::Align::TOP));
                                }
                            }
                            ui.separator();
                            let devices = ui
                                .scope(|ui| deploy_panel::devices_ui(ui, session, busy, commands));
                            rects.push(("devices", devices.response.rect));
                            if std::mem::take(&mut self.show_devices) {
                                ui.scroll_to_rect(devices.response.rect, Some(egui::Align::TOP));
                            }
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
