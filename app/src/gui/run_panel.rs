//! "Data, inputs and runtime" (the data control is `data_panel`): which runtime measures configurations (tract or onnxruntime), and the
//! concrete shapes / held values of the model's inputs when the model leaves them open.

use std::path::PathBuf;

use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::model::graph::format_shape;
use edgefit_engine::pipeline::{
    InputSetting, merge_input_settings, parse_input_shape, parse_input_value,
};

use super::Command;
use super::session::{RunSettings, Session};

/// The text fields of the input form (view state: what the user is typing).
#[derive(Default)]
pub struct InputForm {
    /// The model and settings the texts were filled from; a change refills them.
    filled_for: Option<(PathBuf, RunSettings)>,
    /// Per model input: (shape text, value text).
    texts: Vec<(String, String)>,
    /// Why the last "Apply" was refused.
    pub error: Option<String>,
}

impl InputForm {
    /// Refills the fields from the session when its model or run settings changed.
    fn sync(&mut self, session: &Session) {
        let filled = self
            .filled_for
            .as_ref()
            .is_some_and(|(path, run)| *path == session.open.loaded.path && *run == session.run);
        if filled {
            return;
        }
        let setting = |name: &str| session.run.inputs.iter().find(|s| s.name == name);
        self.texts = session
            .open
            .loaded
            .graph
            .inputs
            .iter()
            .map(|input| {
                let s = setting(&input.name);
                let shape = s
                    .and_then(|s| s.shape.as_ref())
                    .map(|d| d.iter().map(usize::to_string).collect::<Vec<_>>().join(","))
                    .unwrap_or_default();
                let value = s
                    .and_then(|s| s.value)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                (shape, value)
            })
            .collect();
        self.filled_for = Some((session.open.loaded.path.clone(), session.run.clone()));
        self.error = None;
    }

    /// The settings the fields describe (blank fields say nothing).
    fn settings(&self, session: &Session) -> Result<Vec<InputSetting>, String> {
        let mut settings = Vec::new();
        for (input, (shape, value)) in session.open.loaded.graph.inputs.iter().zip(&self.texts) {
            if !shape.trim().is_empty() {
                settings.push(
                    parse_input_shape(&format!("{}={}", input.name, shape.trim()))
                        .map_err(|e| e.to_string())?,
                );
            }
            if !value.trim().is_empty() {
                settings.push(
                    parse_input_value(&format!("{}={}", input.name, value.trim()))
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        merge_input_settings(settings).map_err(|e| e.to_string())
    }
}

/// The runtime choice, the onnxruntime library, the input form and what data is used.
pub fn run_settings_ui(
    ui: &mut egui::Ui,
    session: &Session,
    form: &mut InputForm,
    commands: &mut Vec<Command>,
) {
    form.sync(session);
    let mut runtime = session.run.runtime;
    egui::ComboBox::from_label("Runtime")
        .selected_text(runtime.name())
        .show_ui(ui, |ui| {
            for r in RuntimeKind::ALL {
                ui.selectable_value(&mut runtime, r, r.name());
            }
        });
    if runtime != session.run.runtime {
        commands.push(Command::SetRun(RunSettings {
            runtime,
            ..session.run.clone()
        }));
    }
    match edgefit_engine::measure::runtime::onnxruntime::loaded_library() {
        Some(path) => {
            ui.small(format!("onnxruntime loaded from {}", path.display()));
        }
        None => {
            ui.small(
                "onnxruntime: not loaded yet. It is found through EDGEFIT_ONNXRUNTIME_LIB, a \
                 pip-installed onnxruntime, or the library chosen here.",
            );
        }
    }
    if ui.button("ONNX Runtime library...").clicked() {
        commands.push(Command::PickOnnxRuntimeLibrary);
    }

    ui.add_space(4.0);
    ui.strong("Inputs");
    let inputs = &session.open.loaded.graph.inputs;
    let several = inputs.len() > 1;
    for (input, (shape, value)) in inputs.iter().zip(form.texts.iter_mut()) {
        ui.label(format!(
            "{} {} {}",
            input.name,
            input.dtype.map(|d| d.name()).unwrap_or_default(),
            format_shape(input.shape.as_deref())
        ));
        ui.horizontal(|ui| {
            let label = ui.label("Shape");
            ui.add(
                egui::TextEdit::singleline(shape)
                    .hint_text("from the model or data, e.g. 1,3,224,224")
                    .desired_width(170.0),
            )
            .labelled_by(label.id)
            .on_hover_text(format!(
                "Concrete shape of `{}`, batch included",
                input.name
            ));
        });
        if several {
            ui.horizontal(|ui| {
                let label = ui.label("Value");
                ui.add(
                    egui::TextEdit::singleline(value)
                        .hint_text("blank: fed by the data")
                        .desired_width(170.0),
                )
                .labelled_by(label.id)
                .on_hover_text(format!(
                    "Hold `{}` at this value for every sample (a state, a setting)",
                    input.name
                ));
            });
        }
    }
    if ui.button("Apply inputs").clicked() {
        match form.settings(session) {
            Ok(inputs) => {
                form.error = None;
                commands.push(Command::SetRun(RunSettings {
                    inputs,
                    ..session.run.clone()
                }));
            }
            Err(e) => form.error = Some(e),
        }
    }
    if let Some(e) = &form.error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
}
