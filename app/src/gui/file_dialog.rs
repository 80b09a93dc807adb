//! File dialogs that always lead somewhere: the platform's own dialog, asked for on a
//! background thread (the window and job progress keep moving while it is open), and a
//! built-in one drawn by egui when no platform dialog answers — a plain X session or a
//! container has no desktop portal, and rfd then returns nothing at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use poll_promise::Promise;

/// What a dialog is for: its title, filter and default name, and what the app does with the
/// path chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DialogPurpose {
    OpenModel,
    Export,
    SaveSession,
    OpenSession,
    /// Another model to compare the open one with.
    Diff,
    /// Evaluation data: a folder (dataset or images) or an .npz/.npy file.
    Data,
    /// The device half of a split (the server half is written beside it).
    SplitHead,
}

impl DialogPurpose {
    fn title(self) -> &'static str {
        match self {
            Self::OpenModel => "Open a model",
            Self::Export => "Export the plan",
            Self::SaveSession => "Save the session",
            Self::OpenSession => "Open a session",
            Self::Diff => "Compare with a model",
            Self::Data => "Choose evaluation data",
            Self::SplitHead => "Export the device half (the server half goes beside it)",
        }
    }

    /// Whether a folder is an answer (an image or dataset folder).
    fn takes_folders(self) -> bool {
        self == Self::Data
    }

    fn saves(self) -> bool {
        matches!(self, Self::Export | Self::SaveSession | Self::SplitHead)
    }

    /// (filter name, extensions)
    fn filter(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::OpenModel | Self::Export | Self::Diff | Self::SplitHead => {
                ("ONNX model", &["onnx"])
            }
            Self::SaveSession | Self::OpenSession => ("Edgefit session", &["json"]),
            Self::Data => ("Dataset", &["npz", "npy", "json"]),
        }
    }

    fn default_name(self) -> &'static str {
        match self {
            Self::Export => "model.optimized.onnx",
            Self::SaveSession => "session.edgefit.json",
            Self::SplitHead => "model.head.onnx",
            Self::OpenModel | Self::OpenSession | Self::Diff | Self::Data => "",
        }
    }

    fn accepts(self, path: &Path) -> bool {
        let (_, extensions) = self.filter();
        path.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
    }
}

/// A platform dialog that gives nothing back faster than this was never shown: no person
/// cancels a dialog that quickly.
const NO_DIALOG_WITHIN: Duration = Duration::from_millis(300);

/// The dialogs of the window: at most one open at a time.
pub struct FileDialogs {
    /// Skip the platform dialog (`EDGEFIT_FILE_DIALOG=builtin`, and tests).
    pub builtin_only: bool,
    native: Option<(DialogPurpose, Instant, Promise<Option<PathBuf>>)>,
    builtin: Option<BuiltinDialog>,
}

/// What the app does with a chosen path.
impl DialogPurpose {
    pub fn command(self, path: PathBuf) -> super::Command {
        match self {
            Self::OpenModel => super::Command::Open(path),
            Self::Export => super::Command::Export(path),
            Self::SaveSession => super::Command::SaveSession(path),
            Self::OpenSession => super::Command::OpenSession(path),
            Self::Diff => super::Command::Diff(path),
            Self::Data => super::Command::ChooseData(path),
            Self::SplitHead => super::Command::ExportSplit(path),
        }
    }
}

impl Default for FileDialogs {
    fn default() -> Self {
        Self {
            builtin_only: std::env::var("EDGEFIT_FILE_DIALOG").is_ok_and(|v| v == "builtin"),
            native: None,
            builtin: None,
        }
    }
}

impl FileDialogs {
    /// Whether a dialog is open.
    pub fn is_open(&self) -> bool {
        self.native.is_some() || self.builtin.is_some()
    }

    /// Opens a dialog for `purpose`, starting in `folder` when given.
    pub fn open(&mut self, purpose: DialogPurpose, folder: Option<&Path>, ctx: &egui::Context) {
        if self.is_open() {
            return;
        }
        // A folder or a file is an answer: platform dialogs (on Linux) ask for one or the
        // other, so the built-in dialog, which takes both, is used.
        if self.builtin_only || purpose.takes_folders() {
            self.builtin = Some(BuiltinDialog::new(purpose, folder));
            return;
        }
        let (name, extensions) = purpose.filter();
        let mut dialog = rfd::AsyncFileDialog::new()
            .add_filter(name, extensions)
            .set_title(purpose.title());
        if let Some(folder) = folder {
            dialog = dialog.set_directory(folder);
        }
        if purpose.saves() {
            dialog = dialog.set_file_name(purpose.default_name());
        }
        // The future is made here (macOS wants dialogs made on the main thread) and waited
        // for on a thread of its own.
        let future = if purpose.saves() {
            Box::pin(dialog.save_file()) as std::pin::Pin<Box<dyn Future<Output = _> + Send>>
        } else {
            Box::pin(dialog.pick_file())
        };
        let repaint = ctx.clone();
        let promise = Promise::spawn_thread("edgefit-file-dialog", move || {
            let picked = pollster::block_on(future).map(|h| h.path().to_path_buf());
            repaint.request_repaint();
            picked
        });
        self.native = Some((purpose, Instant::now(), promise));
    }

    /// The path chosen this frame, if any. A platform dialog that answered nothing at once
    /// gives way to the built-in one.
    pub fn poll(&mut self, folder: Option<&Path>) -> Option<(DialogPurpose, PathBuf)> {
        let (purpose, asked, promise) = self.native.take()?;
        match promise.try_take() {
            Err(promise) => {
                self.native = Some((purpose, asked, promise));
                None
            }
            Ok(Some(path)) => Some((purpose, path)),
            Ok(None) => {
                if asked.elapsed() < NO_DIALOG_WITHIN {
                    tracing::info!("no platform file dialog answered: using the built-in one");
                    self.builtin_only = true;
                    self.builtin = Some(BuiltinDialog::new(purpose, folder));
                }
                None
            }
        }
    }

    /// Draws the built-in dialog when it is open; the path chosen, if any.
    pub fn builtin_ui(&mut self, ui: &mut egui::Ui) -> Option<(DialogPurpose, PathBuf)> {
        let dialog = self.builtin.as_mut()?;
        match dialog.ui(ui) {
            Outcome::Open => None,
            Outcome::Cancelled => {
                self.builtin = None;
                None
            }
            Outcome::Chosen(path) => {
                let purpose = dialog.purpose;
                self.builtin = None;
                Some((purpose, path))
            }
        }
    }
}

enum Outcome {
    Open,
    Cancelled,
    Chosen(PathBuf),
}

/// One entry of the folder shown.
struct Entry {
    name: String,
    folder: bool,
}

/// The built-in dialog: a folder's sub-folders and matching files, a path to type, and for
/// saving a file name.
struct BuiltinDialog {
    purpose: DialogPurpose,
    folder: PathBuf,
    /// The folder as typed (applied on Enter or "Go").
    folder_text: String,
    entries: Vec<Entry>,
    /// Why the folder could not be listed.
    error: Option<String>,
    file_name: String,
}

impl BuiltinDialog {
    fn new(purpose: DialogPurpose, folder: Option<&Path>) -> Self {
        let folder = folder
            .map(Path::to_path_buf)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let mut dialog = Self {
            purpose,
            folder_text: folder.display().to_string(),
            folder: folder.clone(),
            entries: Vec::new(),
            error: None,
            file_name: purpose.default_name().to_owned(),
        };
        dialog.enter(folder);
        dialog
    }

    /// Lists `folder` (read once, not per frame).
    fn enter(&mut self, folder: PathBuf) {
        match std::fs::read_dir(&folder) {
            Ok(read) => {
                let mut entries: Vec<Entry> = read
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let folder = e.path().is_dir();
                        let shown =
                            !name.starts_with('.') && (folder || self.purpose.accepts(&e.path()));
                        shown.then_some(Entry { name, folder })
                    })
                    .collect();
                entries.sort_by(|a, b| b.folder.cmp(&a.folder).then(a.name.cmp(&b.name)));
                self.entries = entries;
                self.error = None;
                self.folder_text = folder.display().to_string();
                self.folder = folder;
            }
            Err(e) => self.error = Some(format!("Cannot list {}: {e}", folder.display())),
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui) -> Outcome {
        let mut outcome = Outcome::Open;
        let mut enter = None;
        egui::Modal::new(egui::Id::unique("builtin_file_dialog")).show(ui.ctx(), |ui| {
            ui.set_width(520.0);
            ui.heading(self.purpose.title());
            ui.horizontal(|ui| {
                if ui.button("Up").on_hover_text("The parent folder").clicked()
                    && let Some(parent) = self.folder.parent()
                {
                    enter = Some(parent.to_path_buf());
                }
                let label = ui.label("Folder");
                let field = ui
                    .add(egui::TextEdit::singleline(&mut self.folder_text).desired_width(330.0))
                    .labelled_by(label.id);
                let submitted = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button("Go").clicked() || submitted {
                    enter = Some(PathBuf::from(self.folder_text.trim()));
                }
            });
            if let Some(e) = &self.error {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            let (filter, extensions) = self.purpose.filter();
            ui.small(format!(
                "Folders and {filter} files (.{})",
                extensions.join(", .")
            ));
            egui::ScrollArea::vertical()
                .max_height(280.0)
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    for entry in &self.entries {
                        let label = if entry.folder {
                            format!("{}/", entry.name)
                        } else {
                            entry.name.clone()
                        };
                        let selected = !entry.folder && entry.name == self.file_name;
                        let row = ui.selectable_label(selected, label);
                        if entry.folder && (row.double_clicked() || row.clicked()) {
                            enter = Some(self.folder.join(&entry.name));
                        } else if row.double_clicked() {
                            outcome = Outcome::Chosen(self.folder.join(&entry.name));
                        } else if row.clicked() {
                            self.file_name = entry.name.clone();
                        }
                    }
                });
            ui.horizontal(|ui| {
                let label = ui.label("File name");
                ui.add(egui::TextEdit::singleline(&mut self.file_name).desired_width(300.0))
                    .labelled_by(label.id);
            });
            let chosen = self.chosen_path();
            if self.purpose.saves()
                && let Some(path) = &chosen
                && path.exists()
            {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("{} exists and will be replaced.", path.display()),
                );
            }
            ui.horizontal(|ui| {
                let action = if self.purpose.saves() { "Save" } else { "Open" };
                let ready = chosen
                    .as_ref()
                    .is_some_and(|p| self.purpose.saves() || p.is_file());
                if ui.add_enabled(ready, egui::Button::new(action)).clicked()
                    && let Some(path) = chosen
                {
                    outcome = Outcome::Chosen(path);
                }
                if self.purpose.takes_folders()
                    && ui
                        .button("Use this folder")
                        .on_hover_text(self.folder.display().to_string())
                        .clicked()
                {
                    outcome = Outcome::Chosen(self.folder.clone());
                }
                if ui.button("Cancel").clicked() {
                    outcome = Outcome::Cancelled;
                }
            });
        });
        if let Some(folder) = enter {
            self.enter(folder);
        }
        outcome
    }

    /// The file name in the folder shown, with the purpose's extension added when a saved
    /// file has none.
    fn chosen_path(&self) -> Option<PathBuf> {
        let name = self.file_name.trim();
        if name.is_empty() {
            return None;
        }
        let path = self.folder.join(name);
        if self.purpose.saves() && !self.purpose.accepts(&path) {
            let (_, extensions) = self.purpose.filter();
            let mut named = path.into_os_string();
            named.push(".");
            named.push(extensions.first().copied().unwrap_or_default());
            return Some(PathBuf::from(named));
        }
        Some(path)
    }
}
