//! Applying the commands panels sent, at the end of the frame, and collecting what
//! background jobs deliver: loading, evaluation, export, re-analysis, tours.

use std::path::PathBuf;
use std::time::Instant;

use super::file_dialog::DialogPurpose;
use super::jobs::{Job, OptimizeRequest, SearchRequest, SensitivityRequest};
use super::session;
use super::{AUTO_EVALUATE_AFTER, Command, MAX_RECENT, MAX_REMEMBERED_SESSIONS, StudioApp};

impl StudioApp {
    pub(super) fn apply_commands(&mut self, ctx: &egui::Context) {
        let commands = std::mem::take(&mut self.commands);
        if !commands.is_empty() {
            // The state changed after this frame was drawn: draw it again.
            ctx.request_repaint();
        }
        for command in commands {
            match command {
                Command::PickFile => self.open_dialog(DialogPurpose::OpenModel, ctx),
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
                Command::PickExportPath => self.open_dialog(DialogPurpose::Export, ctx),
                Command::Export(path) => self.start_optimize(Some(path), ctx),
                Command::PickSaveSession => self.open_dialog(DialogPurpose::SaveSession, ctx),
                Command::PickOpenSession => self.open_dialog(DialogPurpose::OpenSession, ctx),
                Command::PickDiff => self.open_dialog(DialogPurpose::Diff, ctx),
                Command::PickData => self.open_dialog(DialogPurpose::Data, ctx),
                Command::ChooseData(path) => {
                    if let Some(s) = &self.session {
                        self.data_form.choose(path, s);
                    }
                }
                Command::LoadData(source) => self.load_data(source, ctx),
                Command::UseGeneratedData => {
                    if let Some(s) = &mut self.session {
                        s.set_chosen_data(None);
                        self.auto_evaluate_at = Some(Instant::now() + AUTO_EVALUATE_AFTER);
                    }
                }
                Command::Diff(path) => {
                    if let Some(s) = &self.session {
                        let job = Job::diff(s.open.clone(), path, ctx);
                        self.start(job);
                    }
                }
                Command::CloseDiff => {
                    if let Some(s) = &mut self.session {
                        s.diff = None;
                    }
                    if self.graph.overlay() == super::graph_paint::Overlay::Diff {
                        self.graph
                            .set_overlay(super::graph_paint::Overlay::OpFamily);
                    }
                }
                Command::FocusNode(node) => self.graph.focus_node(node, &mut self.commands),
                Command::SaveSession(path) => {
                    if let Some(s) = &self.session {
                        let json = serde_json::to_string_pretty(&s.to_file()).unwrap_or_default();
                        match edgefit_engine::model::write::write_bytes_atomic(
                            &path,
                            json.as_bytes(),
                        ) {
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
                Command::AnalyseSensitivity => self.start_sensitivity(ctx),
                Command::SearchPlan { min_sqnr_db } => self.start_search(min_sqnr_db, ctx),
                Command::PickSplitExport(tensors) => {
                    self.pending_split = Some(tensors);
                    self.open_dialog(DialogPurpose::SplitHead, ctx);
                }
                Command::ExportSplit(head) => self.start_split(head, ctx),
                Command::SetDeployChoices(choices) => {
                    if let Some(s) = &mut self.session {
                        s.deploy.choices = choices;
                    }
                }
                Command::ApplyCandidate { layer, candidate } => {
                    if let Some(s) = &self.session {
                        let mut recipe = s.recipe.clone();
                        let entry = recipe.layers.entry(layer).or_default();
                        entry.precision = Some(candidate.precision);
                        entry.prune_ratio = Some(candidate.prune_ratio);
                        entry.exclude = Some(false);
                        self.commands.push(Command::SetRecipe {
                            recipe,
                            record: true,
                        });
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
        if run.runtime == edgefit_engine::measure::runtime::RuntimeKind::OnnxRuntime
            && let Err(e) = edgefit_engine::measure::runtime::onnxruntime::load(
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
            if inputs_changed {
                self.reanalyse_at_given_shape(ctx);
            }
        }
    }

    /// Symbolic or -1 dims hid shapes and MACs: infers them again at the shape the run
    /// settings now give (set in the window, or restored with a session).
    pub(super) fn reanalyse_at_given_shape(&mut self, ctx: &egui::Context) {
        let Some(s) = &self.session else { return };
        let open_dims = s.open.loaded.graph.inputs.first().is_some_and(|i| {
            i.shape
                .as_ref()
                .is_none_or(|d| d.iter().any(|d| d.known().is_none()))
        });
        if open_dims
            && !s.run.inputs.is_empty()
            && let Ok(shape) =
                edgefit_engine::pipeline::resolve_input_shape(&s.open.loaded, None, &s.run.inputs)
        {
            let job = Job::reanalyse(s.open.clone(), shape, ctx);
            self.start(job);
        }
    }

    /// Remembers `path` as the ONNX Runtime library and loads it now if none is loaded.
    fn set_onnxruntime_library(&mut self, path: PathBuf) {
        use edgefit_engine::measure::runtime::onnxruntime::{load, loaded_library};
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

    /// Loads data chosen in the window in the background.
    pub(super) fn load_data(&mut self, source: super::data_panel::DataSource, ctx: &egui::Context) {
        if let Some(s) = &self.session {
            let job = Job::load_data(s.open.clone(), source, s.run.clone(), ctx);
            self.start(job);
        }
    }

    /// Opens a file dialog beside the open model (the platform's, else the built-in one).
    fn open_dialog(&mut self, purpose: DialogPurpose, ctx: &egui::Context) {
        let folder = self.dialog_folder();
        self.file_dialogs.open(purpose, folder.as_deref(), ctx);
    }

    /// Where file dialogs start: the open model's folder.
    pub(super) fn dialog_folder(&self) -> Option<PathBuf> {
        self.session.as_ref().and_then(|s| {
            s.open
                .loaded
                .path
                .parent()
                .map(std::path::Path::to_path_buf)
        })
    }

    pub(super) fn start(&mut self, job: Job) {
        if let Some(old) = self.job.take() {
            old.cancel.cancel();
        }
        self.job = Some(job);
    }

    /// Splits the open model at the tensors chosen in the Devices panel, writing the device
    /// half to `head` and the server half beside it.
    fn start_split(&mut self, head: PathBuf, ctx: &egui::Context) {
        let (Some(s), Some(tensors)) = (&self.session, self.pending_split.take()) else {
            return;
        };
        let (data, run) = match s.job_run() {
            Ok(job_run) => job_run,
            Err(e) => {
                self.error = Some(format!(
                    "Cannot verify the split yet: {e}. Set the input shape under Data, inputs and runtime."
                ));
                return;
            }
        };
        let job = Job::split(
            super::jobs::SplitRequest {
                open: s.open.clone(),
                data,
                run,
                onnxruntime_library: self.persisted.onnxruntime_library.clone(),
                tensors,
                transfer: s.deploy.choices.link.transfer,
                head,
            },
            ctx,
        );
        self.start(job);
    }

    fn start_optimize(&mut self, export: Option<PathBuf>, ctx: &egui::Context) {
        let Some(s) = &self.session else { return };
        self.auto_evaluate_at = None;
        let (data, run) = match s.job_run() {
            Ok(job_run) => job_run,
            Err(e) => {
                self.error = Some(format!(
                    "Cannot evaluate yet: {e}. Set the input shape under Data, inputs and runtime."
                ));
                return;
            }
        };
        // Hashed by the session when its data changed (present whenever the data is).
        let data_key = s
            .data_key
            .clone()
            .unwrap_or_else(|| super::points::DataKey::of(&data, &run.inputs));
        self.evaluations_started += 1;
        let job = Job::optimize(
            OptimizeRequest {
                open: s.open.clone(),
                data,
                calibration: s.calibration(),
                data_key,
                run,
                onnxruntime_library: self.persisted.onnxruntime_library.clone(),
                recipe: s.recipe.clone(),
                format: s.format,
                export,
            },
            ctx,
        );
        self.start(job);
    }

    fn start_search(&mut self, min_sqnr_db: f64, ctx: &egui::Context) {
        let Some(s) = &self.session else { return };
        let (Some(sensitivity), Ok((data, run))) = (&s.sensitivity, s.job_run()) else {
            self.error = Some("Analyse sensitivity first: the search starts from it.".to_owned());
            return;
        };
        let job = Job::search(
            SearchRequest {
                open: s.open.clone(),
                data,
                calibration: s.calibration(),
                run,
                onnxruntime_library: self.persisted.onnxruntime_library.clone(),
                base: s.recipe.clone(),
                sensitivity: sensitivity.clone(),
                min_sqnr_db,
            },
            ctx,
        );
        self.start(job);
    }

    fn start_sensitivity(&mut self, ctx: &egui::Context) {
        let Some(s) = &self.session else { return };
        let (data, run) = match s.job_run() {
            Ok(job_run) => job_run,
            Err(e) => {
                self.error = Some(format!(
                    "Cannot analyse yet: {e}. Set the input shape under Data, inputs and runtime."
                ));
                return;
            }
        };
        let job = Job::sensitivity(
            SensitivityRequest {
                open: s.open.clone(),
                data,
                run,
                onnxruntime_library: self.persisted.onnxruntime_library.clone(),
                base: s.recipe.clone(),
            },
            ctx,
        );
        self.start(job);
    }

    /// Starts the next tour step once the window is idle (the original measured, no job).
    pub(super) fn run_tour_step(&mut self) {
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
        if let Some(id) = &step.device {
            if s.deploy.catalog.get(id).is_some() {
                let mut choices = s.deploy.choices.clone();
                choices.device = Some(id.clone());
                self.commands.push(Command::SetDeployChoices(choices));
                self.graph.set_overlay(super::graph_paint::Overlay::Device);
                self.show_devices = true;
            } else {
                self.error = Some(format!("tour: no device profile `{id}`"));
            }
        }
        // One job at a time: a sweep, data, export or diff step is not also evaluated.
        if let Some(source) = step.data {
            self.commands.push(Command::LoadData(source));
        } else if let Some(path) = step.export {
            self.commands.push(Command::Export(path));
        } else if let Some(path) = step.diff {
            self.commands.push(Command::Diff(path));
        } else if step.sensitivity {
            self.commands.push(Command::AnalyseSensitivity);
        } else if step.evaluate {
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

    pub(super) fn remember_recent(&mut self, path: &std::path::Path) {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let recent = &mut self.persisted.recent_files;
        recent.retain(|p| p != &path);
        recent.insert(0, path);
        recent.truncate(MAX_RECENT);
    }
}
