//! The window's menu bar and status bar.

use super::jobs::JobKind;
use super::{Command, StudioApp};

impl StudioApp {
    pub(super) fn menu_ui(&mut self, ui: &mut egui::Ui) {
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
