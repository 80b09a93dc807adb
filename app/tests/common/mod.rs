//! The studio harness the kittest files share: the real app, headless, driven by accessible
//! label.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edgefit::gui::{Persisted, StudioApp};
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// The studio on `model` in a `width` × `height` window, once it has opened it; automatic
/// evaluation as asked (off in tests that step frames by hand).
pub fn studio_sized(
    model: &Path,
    auto_evaluate: bool,
    size: [f32; 2],
) -> Harness<'static, StudioApp> {
    let model = model.to_path_buf();
    let mut harness = Harness::builder().with_size(size).build_eframe(move |_cc| {
        let mut app = StudioApp::new(Persisted::default(), Some(model));
        app.auto_evaluate = auto_evaluate;
        app
    });
    wait_idle(&mut harness);
    harness
}

/// [`studio_sized`] at 1400 × 900 without automatic evaluation.
pub fn studio(model: &Path) -> Harness<'static, StudioApp> {
    studio_sized(model, false, [1400.0, 900.0])
}

/// Steps frames until no background job runs and no estimate is pending.
pub fn wait_idle(harness: &mut Harness<'static, StudioApp>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    harness.step();
    while harness.state().is_busy()
        || harness
            .state()
            .session
            .as_ref()
            .is_some_and(|s| s.estimating)
    {
        assert!(Instant::now() < deadline, "background job did not finish");
        std::thread::sleep(Duration::from_millis(20));
        harness.step();
    }
    harness.step();
    harness.step();
}

/// Replaces the text of the text field labelled `label` with `text`, as a person would
/// (focus, select all, type).
pub fn type_into(harness: &mut Harness<'static, StudioApp>, label: &str, text: &str) {
    harness
        .get_by_role_and_label(Role::TextInput, label)
        .focus();
    harness.step();
    harness.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::A);
    harness
        .get_by_role_and_label(Role::TextInput, label)
        .type_text(text);
    harness.step();
}
