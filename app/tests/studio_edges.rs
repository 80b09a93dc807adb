//! Rough edges a new user found, each driven as a person would (pointer and keyboard),
//! headless: a slider drag is one undo step, the platform shortcuts, the window title, and
//! closing the window while an export is being written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{studio, type_into, wait_idle};

use std::time::{Duration, Instant};

use edgefit::gui::{Command, StudioApp};
use edgefit_tests::sample_model as sample;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

fn prune_ratio(harness: &Harness<'static, StudioApp>) -> f32 {
    harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .recipe
        .defaults
        .prune_ratio
}

/// Presses on the prune-ratio slider at `from` (fraction of its width), drags through
/// `through` and releases there, a frame per move.
fn drag_prune_slider(harness: &mut Harness<'static, StudioApp>, from: f32, through: &[f32]) {
    let rect = harness
        .get_by_role_and_label(Role::Slider, "Prune ratio")
        .rect();
    let at = |f: f32| egui::pos2(rect.left() + rect.width() * f, rect.center().y);
    harness.hover_at(at(from));
    harness.step();
    harness.drag_at(at(from));
    harness.step();
    for &f in through {
        harness.hover_at(at(f));
        harness.step();
    }
    harness.drop_at(at(*through.last().unwrap()));
    harness.step();
    harness.step();
}

#[test]
fn a_slider_drag_is_one_undo_step_and_the_keyboard_undoes_and_redoes_it() {
    let mut harness = studio(&sample("digits-mlp"));
    assert_eq!(prune_ratio(&harness), 0.0);
    assert!(!harness.state().session.as_ref().unwrap().can_undo());
    drag_prune_slider(&mut harness, 0.3, &[0.4, 0.5, 0.6]);
    let dragged = prune_ratio(&harness);
    assert!(dragged > 0.3, "the drag moved the ratio: {dragged}");
    assert!(
        harness.state().session.as_ref().unwrap().can_undo(),
        "a first drag can be undone"
    );
    // Ctrl+Z (⌘Z on macOS): the whole drag at once, back to where it started.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    harness.step();
    harness.step();
    assert_eq!(prune_ratio(&harness), 0.0);
    assert!(!harness.state().session.as_ref().unwrap().can_undo());
    // Ctrl+Y redoes it.
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Y);
    harness.step();
    harness.step();
    assert_eq!(prune_ratio(&harness), dragged);
    // Two drags are two steps.
    drag_prune_slider(&mut harness, 0.8, &[0.85, 0.9]);
    let second = prune_ratio(&harness);
    assert!(second > dragged, "{second} > {dragged}");
    harness.state_mut().send(Command::Undo);
    harness.step();
    assert_eq!(prune_ratio(&harness), dragged);
    harness.state_mut().send(Command::Undo);
    harness.step();
    assert_eq!(prune_ratio(&harness), 0.0);
}

#[test]
fn dragging_a_layer_prune_ratio_is_one_undo_step() {
    let mut harness = studio(&sample("digits-mlp"));
    let layer = harness.state().session.as_ref().unwrap().compressor.layers[0]
        .name
        .clone();
    let layer_ratio = |h: &Harness<'static, StudioApp>| {
        h.state()
            .session
            .as_ref()
            .unwrap()
            .recipe
            .layers
            .get(&layer)
            .and_then(|o| o.prune_ratio)
    };
    let rect = harness
        .get_by_role_and_label(Role::SpinButton, &layer)
        .rect();
    // A DragValue changes with the pointer's movement once the press has become a drag.
    let start = rect.center();
    harness.hover_at(start);
    harness.step();
    harness.drag_at(start);
    harness.step();
    for dx in [10.0, 20.0, 30.0, 40.0] {
        harness.hover_at(start + egui::vec2(dx, 0.0));
        harness.step();
    }
    harness.drop_at(start + egui::vec2(40.0, 0.0));
    harness.step();
    harness.step();
    let dragged = layer_ratio(&harness).expect("the drag set an override");
    assert!(dragged > 0.0, "{dragged}");
    assert!(
        harness.state().session.as_ref().unwrap().can_undo(),
        "the drag can be undone"
    );
    harness.state_mut().send(Command::Undo);
    harness.step();
    assert_eq!(
        layer_ratio(&harness),
        None,
        "one undo takes the whole drag back"
    );
}

#[test]
fn the_title_names_the_model_and_the_menus_show_the_shortcuts() {
    let mut harness = studio(&sample("mnist-cnn"));
    assert_eq!(
        harness.state().window_title(),
        "model.onnx — Edgefit Studio"
    );
    harness.get_by_label("File").click();
    harness.step();
    harness.step();
    // The platform's spelling: Ctrl+O here (⌘O on macOS).
    let open = harness.get_by_label_contains("Open...");
    assert!(
        format!("{open:?}").contains("Ctrl+O"),
        "the menu entry shows its shortcut: {open:?}"
    );
}

fn root_commands(harness: &Harness<'static, StudioApp>) -> Vec<egui::ViewportCommand> {
    harness
        .output()
        .viewport_output
        .get(&egui::ViewportId::ROOT)
        .map(|v| v.commands.clone())
        .unwrap_or_default()
}

fn request_close(harness: &mut Harness<'static, StudioApp>) {
    harness
        .input_mut()
        .viewports
        .get_mut(&egui::ViewportId::ROOT)
        .unwrap()
        .events
        .push(egui::ViewportEvent::Close);
    harness.step();
}

#[test]
fn closing_during_an_export_asks_first_and_keep_working_keeps_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits.onnx");
    let mut harness = studio(&sample("digits-mlp"));
    // No export: the window closes at once.
    request_close(&mut harness);
    assert!(!root_commands(&harness).contains(&egui::ViewportCommand::CancelClose));
    assert!(!harness.state().confirm_close);

    harness.state_mut().send(Command::Export(out.clone()));
    harness.step();
    assert!(harness.state().exporting());
    request_close(&mut harness);
    assert!(
        root_commands(&harness).contains(&egui::ViewportCommand::CancelClose),
        "the close waits for an answer"
    );
    assert!(harness.state().confirm_close);
    harness.step();
    assert!(
        harness
            .query_by_label("Cancel the export and quit")
            .is_some()
            || harness.query_by_label("Quit").is_some()
    );
    harness.get_by_label("Keep working").click();
    harness.step();
    assert!(!harness.state().confirm_close);
    wait_idle(&mut harness);
    assert!(
        out.is_file(),
        "the export went on: {:?}",
        harness.state().error
    );
}

/// Steps frames until `label` is on screen (a dialog thread answering, say).
fn wait_for_label(harness: &mut Harness<'static, StudioApp>, label: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while harness.query_by_label(label).is_none() {
        assert!(Instant::now() < deadline, "`{label}` never appeared");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
}

#[test]
fn export_leads_to_a_built_in_dialog_when_no_platform_dialog_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = studio(&sample("digits-mlp"));
    // Without a D-Bus session (CI, containers) the platform dialog answers nothing at once:
    // the built-in one must open by itself. Elsewhere, ask for the built-in one directly.
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() {
        harness.state_mut().file_dialogs.builtin_only = true;
    }
    harness.get_by_label("File").click();
    harness.step();
    harness.get_by_label_contains("Export...").click();
    harness.step();
    wait_for_label(&mut harness, "Export the plan");
    // It starts beside the model; go to the temporary folder and save there.
    type_into(&mut harness, "Folder", &dir.path().display().to_string());
    harness.get_by_label("Go").click();
    harness.step();
    // The default name is offered; a name without the extension gets it.
    type_into(&mut harness, "File name", "digits-int8");
    harness.get_by_label("Save").click();
    harness.step();
    wait_idle(&mut harness);
    let out = dir.path().join("digits-int8.onnx");
    assert!(out.is_file(), "{:?}", harness.state().error);
    assert!(!harness.state().file_dialogs.is_open());

    // Open… lists the folder's models; one is picked and opened.
    harness.get_by_label("File").click();
    harness.step();
    harness.step();
    harness.get_by_label_contains("Open...").click();
    harness.step();
    wait_for_label(&mut harness, "Open a model");
    type_into(&mut harness, "Folder", &dir.path().display().to_string());
    harness.get_by_label("Go").click();
    harness.step();
    harness.step();
    harness.get_by_label("digits-int8.onnx").click();
    harness.step();
    harness.get_by_label("Open").click();
    harness.step();
    wait_idle(&mut harness);
    assert_eq!(
        harness.state().session.as_ref().unwrap().open.loaded.path,
        out
    );
}

#[test]
fn the_summary_shows_the_size_of_the_file_the_format_writes_and_what_it_does_not_realise() {
    use edgefit_engine::compress::plan::Precision;
    use edgefit_engine::export::build::ExportFormat;
    let dir = tempfile::tempdir().unwrap();
    let mut harness = studio(&sample("mnist-cnn"));
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 4 };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    for (format, note) in [
        (ExportFormat::Fp32, "does not shrink"),
        (ExportFormat::WeightsInt8, "int8 containers"),
    ] {
        harness.state_mut().send(Command::SetFormat(format));
        harness.step();
        harness.step();
        let planned = {
            let s = harness.state().session.as_ref().unwrap();
            let (_, f, planned) = s.planned_file.as_ref().expect("a planned file");
            assert_eq!(*f, format);
            let planned = planned.as_ref().unwrap();
            assert!(planned.exact);
            planned.size_bytes
        };
        assert!(
            harness.query_by_label_contains(note).is_some(),
            "{}: the Summary says `{note}`",
            format.name()
        );
        let out = dir.path().join(format!("{}.onnx", format.name()));
        harness.state_mut().send(Command::Export(out.clone()));
        wait_idle(&mut harness);
        let written = std::fs::metadata(&out).unwrap().len();
        assert_eq!(planned, written, "{}", format.name());
    }
}

#[test]
fn nothing_of_the_previous_model_carries_over_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = studio(&sample("digits-mlp"));
    harness
        .get_by_role_and_label(Role::TextInput, "Search")
        .focus();
    harness.step();
    harness
        .get_by_role_and_label(Role::TextInput, "Search")
        .type_text("gemm");
    harness.step();
    harness
        .state_mut()
        .send(Command::Export(dir.path().join("digits.onnx")));
    wait_idle(&mut harness);
    assert!(harness.state().status.is_some());
    assert!(harness.state().last_export.is_some());
    harness.state_mut().send(Command::Open(sample("mnist-cnn")));
    wait_idle(&mut harness);
    let app = harness.state();
    assert!(
        app.session
            .as_ref()
            .unwrap()
            .open
            .loaded
            .path
            .ends_with("mnist-cnn/model.onnx")
    );
    assert_eq!(app.status, None, "the export status was the other model's");
    assert_eq!(app.last_export, None);
    assert_eq!(
        harness
            .get_by_role_and_label(Role::TextInput, "Search")
            .value()
            .unwrap_or_default(),
        ""
    );
}
