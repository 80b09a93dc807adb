//! The studio window. Panels read the state and push [`Command`]s; the app applies them at the
//! end of the frame. Loading runs on a named background thread and wakes the UI on progress.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use edgefit_engine::graph::format_shape;
use edgefit_engine::{
    AnalysisOptions, CancelToken, LoadedModel, ModelAnalysis, Progress, analyse, load_model,
};
use egui::{Color32, RichText};
use poll_promise::Promise;
use serde::{Deserialize, Serialize};

use crate::format::{bytes, si, thousands};

/// A model that finished loading and analysing.
pub struct OpenModel {
    pub loaded: LoadedModel,
    pub analysis: ModelAnalysis,
}

type LoadResult = std::result::Result<OpenModel, String>;

/// A load running in the background.
struct LoadJob {
    path: PathBuf,
    promise: Promise<LoadResult>,
    progress: Arc<Mutex<Option<Progress>>>,
    cancel: CancelToken,
}

/// What panels ask the app to do; applied at the end of the frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Open the file dialog.
    PickFile,
    /// Load this model in the background.
    Open(PathBuf),
    /// Cancel the running load.
    CancelLoad,
    /// Forget the list of recent files.
    ClearRecent,
}

/// State persisted between sessions (eframe storage).
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub recent_files: Vec<PathBuf>,
}

const MAX_RECENT: usize = 10;
const STORAGE_KEY: &str = "edgefit.studio";

/// The studio application state.
pub struct StudioApp {
    pub persisted: Persisted,
    pub model: Option<Arc<OpenModel>>,
    /// Why the last open failed; the previous model stays open.
    pub error: Option<String>,
    job: Option<LoadJob>,
    commands: Vec<Command>,
    screenshot: Option<ScreenshotTask>,
}

impl StudioApp {
    /// A studio with `persisted` state that starts loading `initial` if given.
    pub fn new(persisted: Persisted, initial: Option<PathBuf>) -> Self {
        let mut app = Self {
            persisted,
            model: None,
            error: None,
            job: None,
            commands: Vec::new(),
            screenshot: None,
        };
        if let Some(path) = initial {
            app.commands.push(Command::Open(path));
        }
        app
    }

    fn apply_commands(&mut self, ctx: &egui::Context) {
        for command in std::mem::take(&mut self.commands) {
            match command {
                Command::PickFile => {
                    let picked = rfd::FileDialog::new()
                        .add_filter("ONNX model", &["onnx"])
                        .pick_file();
                    if let Some(path) = picked {
                        self.start_load(path, ctx);
                    }
                }
                Command::Open(path) => self.start_load(path, ctx),
                Command::CancelLoad => {
                    if let Some(job) = &self.job {
                        job.cancel.cancel();
                    }
                }
                Command::ClearRecent => self.persisted.recent_files.clear(),
            }
        }
    }

    fn start_load(&mut self, path: PathBuf, ctx: &egui::Context) {
        if let Some(old) = self.job.take() {
            old.cancel.cancel();
        }
        let progress = Arc::new(Mutex::new(None));
        let cancel = CancelToken::new();
        let (sink_progress, job_cancel, ctx_for_job) =
            (progress.clone(), cancel.clone(), ctx.clone());
        let job_path = path.clone();
        let promise = Promise::spawn_thread("edgefit-load-model", move || {
            let repaint = ctx_for_job.clone();
            let sink = move |p: Progress| {
                if let Ok(mut slot) = sink_progress.lock() {
                    *slot = Some(p);
                }
                repaint.request_repaint();
            };
            let result = load_model(&job_path, &sink, &job_cancel).and_then(|loaded| {
                let analysis = analyse(&loaded, &AnalysisOptions::default(), &sink, &job_cancel)?;
                Ok(OpenModel { loaded, analysis })
            });
            ctx_for_job.request_repaint();
            result.map_err(|e| e.to_string())
        });
        self.job = Some(LoadJob {
            path,
            promise,
            progress,
            cancel,
        });
    }

    fn poll_job(&mut self, _ctx: &egui::Context) {
        let Some(job) = self.job.take() else { return };
        match job.promise.try_take() {
            Ok(Ok(model)) => {
                self.remember_recent(&job.path);
                self.model = Some(Arc::new(model));
                self.error = None;
            }
            Ok(Err(message)) => {
                self.error = Some(format!("Could not open {}: {message}", job.path.display()));
            }
            Err(promise) => {
                self.job = Some(LoadJob { promise, ..job });
            }
        }
    }

    fn remember_recent(&mut self, path: &Path) {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let recent = &mut self.persisted.recent_files;
        recent.retain(|p| p != &path);
        recent.insert(0, path);
        recent.truncate(MAX_RECENT);
    }

    fn menu_ui(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open…").clicked() {
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
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
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
                let (text, fraction) = match progress {
                    Some(p) => (format!("{}: {}", job.path.display(), p.stage), p.fraction()),
                    None => (format!("Opening {}", job.path.display()), None),
                };
                ui.add(
                    egui::ProgressBar::new(fraction.unwrap_or(0.0))
                        .desired_width(200.0)
                        .show_percentage(),
                );
                ui.label(text);
                if ui.button("Cancel").clicked() {
                    self.commands.push(Command::CancelLoad);
                }
            });
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        if let Some(model) = &self.model {
            for warning in &model.analysis.warnings {
                ui.colored_label(ui.visuals().warn_fg_color, format!("⚠ {warning}"));
            }
        }
    }
}

fn summary_ui(ui: &mut egui::Ui, a: &ModelAnalysis) {
    ui.heading("Summary");
    egui::Grid::new("summary_grid")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            let mut row = |label: &str, value: String| {
                ui.label(label);
                ui.label(value);
                ui.end_row();
            };
            row("File", a.path.clone());
            row("Size on disk", bytes(a.file_size_bytes));
            row("Producer", a.producer.clone());
            row("IR version", a.ir_version.to_string());
            row("Parameters", thousands(a.parameters));
            row("Weight bytes", bytes(a.weight_bytes));
            let macs = if a.macs_complete {
                si(a.macs)
            } else {
                format!("{} (partial)", si(a.macs))
            };
            row("MACs", macs);
            row("Nodes", thousands(a.nodes as u64));
            row("Layers", a.layers.len().to_string());
        });
    ui.separator();
    ui.strong("Inputs");
    for v in &a.inputs {
        ui.monospace(value_line(v));
    }
    ui.strong("Outputs");
    for v in &a.outputs {
        ui.monospace(value_line(v));
    }
    ui.separator();
    ui.strong("Ops");
    let mut ops: Vec<(&String, &usize)> = a.ops.iter().collect();
    ops.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    for (op, count) in ops {
        ui.label(format!("{op} × {count}"));
    }
}

fn value_line(v: &edgefit_engine::graph::ValueDesc) -> String {
    let dtype = v.dtype.map_or("?".to_owned(), |d| d.name());
    format!("{}: {dtype} {}", v.name, format_shape(v.shape.as_deref()))
}

fn layers_ui(ui: &mut egui::Ui, a: &ModelAnalysis) {
    ui.heading("Layers");
    egui::ScrollArea::both()
        .auto_shrink([false, false])
        .show(ui, |ui| {
            egui::Grid::new("layers_grid")
                .num_columns(8)
                .striped(true)
                .show(ui, |ui| {
                    for h in [
                        "Layer", "Op", "Params", "MACs", "Size", "Min", "Max", "Zeros",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for l in &a.layers {
                        ui.label(&l.name);
                        ui.label(&l.op);
                        ui.label(thousands(l.parameters));
                        match l.macs {
                            Some(m) => ui.label(si(m)),
                            None => ui
                                .label(RichText::new("?").color(Color32::GRAY))
                                .on_hover_text(l.macs_note.clone().unwrap_or_default()),
                        };
                        ui.label(bytes(l.bytes));
                        match &l.stats {
                            Some(s) => {
                                ui.label(format!("{:.4}", s.min));
                                ui.label(format!("{:.4}", s.max));
                                ui.label(format!("{:.1}%", s.zero_fraction * 100.0));
                            }
                            None => {
                                ui.label("");
                                ui.label("");
                                ui.label("");
                            }
                        }
                        ui.end_row();
                    }
                });
        });
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
        self.poll_job(ctx);
        if let Some(task) = &mut self.screenshot {
            task.tick(
                ctx,
                self.job.is_none() && (self.model.is_some() || self.error.is_some()),
            );
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        egui::Panel::top("menu").show(ui, |ui| self.menu_ui(ui));
        egui::Panel::bottom("status")
            .resizable(true)
            .show(ui, |ui| self.status_ui(ui));
        let model = self.model.clone();
        match model {
            Some(model) => {
                egui::Panel::left("summary")
                    .resizable(true)
                    .default_size(320.0)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical().show(ui, |ui| {
                            summary_ui(ui, &model.analysis);
                            if model.loaded.has_external_data() {
                                ui.label(
                                    "Weights are read from external-data files beside the model.",
                                );
                            }
                        });
                    });
                egui::CentralPanel::default().show(ui, |ui| layers_ui(ui, &model.analysis));
            }
            None => {
                egui::CentralPanel::default().show(ui, |ui| {
                    ui.centered_and_justified(|ui| {
                        if ui
                            .button("Open an ONNX model… (or drop one here)")
                            .clicked()
                        {
                            self.commands.push(Command::PickFile);
                        }
                    });
                });
            }
        }
        let ctx = ui.ctx().clone();
        self.apply_commands(&ctx);
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.persisted);
    }
}

/// Takes one screenshot once the window shows a loaded model, saves it, and closes the window.
struct ScreenshotTask {
    path: PathBuf,
    ready_frames: u32,
    requested: bool,
    result: Arc<Mutex<Option<std::result::Result<(), String>>>>,
}

impl ScreenshotTask {
    fn tick(&mut self, ctx: &egui::Context, ready: bool) {
        if let Ok(mut slot) = self.result.lock()
            && let Some(outcome) = slot.take()
        {
            if let Err(e) = outcome {
                eprintln!("error: screenshot failed: {e}");
            }
            ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            return;
        }
        if !ready || self.requested {
            ctx.request_repaint();
            return;
        }
        // Let layout settle for a few frames before capturing.
        self.ready_frames += 1;
        if self.ready_frames >= 5 {
            self.requested = true;
            let path = self.path.clone();
            let result = self.result.clone();
            let ctx_for_callback = ctx.clone();
            ctx.request_screenshot(move |image| {
                let saved = save_png(&path, &image).map_err(|e| format!("{e:#}"));
                if let Ok(mut slot) = result.lock() {
                    *slot = Some(saved);
                }
                ctx_for_callback.request_repaint();
            });
        }
        ctx.request_repaint();
    }
}

fn save_png(path: &Path, image: &egui::ColorImage) -> Result<()> {
    use anyhow::Context;
    let [w, h] = image.size;
    let pixels: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
    let buffer = image::RgbaImage::from_raw(w as u32, h as u32, pixels)
        .context("screenshot has an unexpected size")?;
    buffer
        .save(path)
        .with_context(|| format!("saving {}", path.display()))
}

/// Opens the studio window on `model` (or the bundled sample).
pub fn run(model: Option<PathBuf>, screenshot: Option<PathBuf>) -> Result<()> {
    let initial = model.or_else(crate::samples::default_sample_model);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("Edgefit Studio")
            .with_inner_size([1280.0, 800.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "Edgefit Studio",
        options,
        Box::new(move |cc| {
            let persisted: Persisted = cc
                .storage
                .and_then(|s| eframe::get_value(s, STORAGE_KEY))
                .unwrap_or_default();
            let mut app = StudioApp::new(persisted, initial);
            app.screenshot = screenshot.map(|path| ScreenshotTask {
                path,
                ready_frames: 0,
                requested: false,
                result: Arc::new(Mutex::new(None)),
            });
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| anyhow::anyhow!("the studio window could not start: {e}"))
}
