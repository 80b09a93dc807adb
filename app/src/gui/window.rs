//! The window's menu bar and status bar, its keyboard shortcuts, its title, and the prompt
//! when it is closed while an export is being written.

use egui::{Key, KeyboardShortcut, Modifiers};

use super::jobs::JobKind;
use super::{Command, StudioApp};

/// Keyboard shortcuts; the menus show them in the platform's spelling (`Ctrl+O`, `⌘O`).
pub mod keys {
    use super::{Key, KeyboardShortcut, Modifiers};

    pub const OPEN: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::O);
    pub const SAVE_SESSION: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::S);
    pub const EXPORT: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::E);
    pub const UNDO: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Z);
    pub const REDO: KeyboardShortcut = KeyboardShortcut::new(
        Modifiers {
            shift: true,
            ..Modifiers::COMMAND
        },
        Key::Z,
    );
    pub const REDO_Y: KeyboardShortcut = KeyboardShortcut::new(Modifiers::COMMAND, Key::Y);
}

/// A menu entry with its shortcut shown beside it.
fn menu_item(ui: &mut egui::Ui, text: &str, shortcut: &KeyboardShortcut, enabled: bool) -> bool {
    let shortcut_text = ui.ctx().format_shortcut(shortcut);
    ui.add_enabled(
        enabled,
        egui::Button::new(text).shortcut_text(shortcut_text),
    )
    .clicked()
}

impl StudioApp {
    /// Turns this frame's shortcut presses into commands. Redo is consumed before Undo: its
    /// keys include Undo's.
    pub(super) fn shortcuts_logic(&mut self, ctx: &egui::Context) {
        let open = self.session.is_some();
        let pressed = ctx.input_mut(|i| {
            [
                keys::REDO,
                keys::REDO_Y,
                keys::UNDO,
                keys::OPEN,
                keys::SAVE_SESSION,
                keys::EXPORT,
            ]
            .map(|k| i.consume_shortcut(&k))
        });
        let [redo, redo_y, undo, pick, save, export] = pressed;
        if redo || redo_y {
            self.commands.push(Command::Redo);
        }
        if undo {
            self.commands.push(Command::Undo);
        }
        if pick {
            self.commands.push(Command::PickFile);
        }
        if save && open {
            self.commands.push(Command::PickSaveSession);
        }
        if export && open {
            self.commands.push(Command::PickExportPath);
        }
    }

    /// The window title names the open model.
    pub(super) fn title_logic(&mut self, ctx: &egui::Context) {
        let title = match &self.session {
            Some(s) => {
                let path = &s.open.loaded.path;
                let name = path.file_name().map_or_else(
                    || path.display().to_string(),
                    |n| n.to_string_lossy().into(),
                );
                format!("{name} — Edgefit Studio")
            }
            None => "Edgefit Studio".to_owned(),
        };
        if self.window_title != title {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.window_title = title;
        }
    }

    /// The title the window was last given.
    pub fn window_title(&self) -> &str {
        &self.window_title
    }

    /// Whether an export is being written.
    pub fn exporting(&self) -> bool {
        self.job
            .as_ref()
            .is_some_and(|j| matches!(j.kind, JobKind::Export(_)))
    }

    /// A close while an export is being written waits for the person's answer.
    pub(super) fn close_logic(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested()) && self.exporting() && !self.quitting {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.confirm_close = true;
        }
    }

    /// The prompt of [`Self::close_logic`].
    pub(super) fn confirm_close_ui(&mut self, ui: &mut egui::Ui) {
        if !self.confirm_close {
            return;
        }
        let exporting = self.exporting();
        egui::Modal::new(egui::Id::unique("confirm_close")).show(ui.ctx(), |ui| {
            ui.heading("Quit Edgefit Studio?");
            if exporting {
                ui.label(
                    "An export is being written. Quitting cancels it: the file is written \
                     atomically, so no partial file is left and an existing one stays as it was.",
                );
            } else {
                ui.label("The export has finished.");
            }
            ui.horizontal(|ui| {
                if ui.button("Keep working").clicked() {
                    self.confirm_close = false;
                }
                let quit = if exporting {
                    "Cancel the export and quit"
                } else {
                    "Quit"
                };
                if ui.button(quit).clicked() {
                    if let Some(job) = &self.job {
                        job.cancel.cancel();
                    }
                    self.confirm_close = false;
                    self.quitting = true;
                    ui.send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
        });
    }

    pub(super) fn menu_ui(&mut self, ui: &mut egui::Ui) {
        let open = self.session.is_some();
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if menu_item(ui, "Open...", &keys::OPEN, true) {
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
                if menu_item(ui, "Export...", &keys::EXPORT, open) {
                    self.commands.push(Command::PickExportPath);
                }
                if ui
                    .add_enabled(open, egui::Button::new("Compare with a model..."))
                    .on_hover_text("What changed between the open model and another ONNX file")
                    .clicked()
                {
                    self.commands.push(Command::PickDiff);
                }
                ui.separator();
                if menu_item(ui, "Save session...", &keys::SAVE_SESSION, open) {
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
                if menu_item(ui, "Undo", &keys::UNDO, open) {
                    self.commands.push(Command::Undo);
                }
                if menu_item(ui, "Redo", &keys::REDO, open) {
                    self.commands.push(Command::Redo);
                }
            });
            ui.menu_button("View", |ui| {
                egui::global_theme_preference_buttons(ui);
            });
        });
    }

    pub(super) fn status_ui(&mut self, ui: &mut egui::Ui) {
        if let Some(job) = &self.job {
            ui.horizontal(|ui| {
                ui.spinner();
                let progress = job.progress.lock().ok().and_then(|p| p.clone());
                let what = match &job.kind {
                    JobKind::Load(p) => format!("Opening {}", p.display()),
                    JobKind::Evaluate => "Evaluating".to_owned(),
                    JobKind::Reanalyse => "Inferring shapes at the new input shape".to_owned(),
                    JobKind::Export(p) => format!("Exporting {}", p.display()),
                    JobKind::Sensitivity => "Analysing sensitivity".to_owned(),
                    JobKind::Search => "Searching for the smallest plan".to_owned(),
                    JobKind::Diff(p) => format!("Comparing with {}", p.display()),
                    JobKind::LoadData(p) => format!("Reading the data {}", p.display()),
                    JobKind::Split(p) => format!("Splitting into {}", p.display()),
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
            ui.horizontal_wrapped(|ui| {
                ui.label(status);
                // The export just written, against the open model: what the export changed.
                if let Some(export) = &self.last_export
                    && self.session.is_some()
                    && self.job.is_none()
                    && ui
                        .small_button("Show what changed (diff)")
                        .on_hover_text(format!("Compare the open model with {}", export.display()))
                        .clicked()
                {
                    self.commands.push(Command::Diff(export.clone()));
                }
            });
        }
        if let Some(error) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, error);
        }
        if let Some(verdict) = &self.verdict {
            ui.colored_label(ui.visuals().error_fg_color, verdict);
        }
        if let Some(s) = &self.session {
            for warning in &s.open.analysis.warnings {
                ui.colored_label(ui.visuals().warn_fg_color, format!("Warning: {warning}"));
            }
        }
    }
}
