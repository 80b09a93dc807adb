//! The studio's sensitivity panel, driven by accessible label as a person would, headless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgefit::gui::{Persisted, StudioApp};
use edgefit_engine::compress::plan::Precision;
use edgefit_tests::sample_model as sample;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

mod common;

use common::{studio, wait_idle};

#[test]
fn analysing_sensitivity_shows_a_heat_map_whose_cells_set_the_plan() {
    let mut harness = studio(&sample("digits-mlp"));
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
    harness.get_by_label("Analyse sensitivity").click();
    harness.step();
    assert!(
        harness.state().is_busy(),
        "the sweep runs in the background"
    );
    wait_idle(&mut harness);
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
    let s = harness.state().session.as_ref().unwrap();
    let sweep = s.sensitivity.clone().expect("a sweep result");
    assert_eq!(sweep.labels.len(), 10, "{:?}", sweep.labels);
    let layer = sweep.layers[0].name.clone();
    // The most sensitive layers are named, and every cell is a button named after its layer
    // and candidate.
    assert!(
        harness
            .query_by_label_contains("Most sensitive at int8")
            .is_some()
    );
    // "Find smallest plan" at the default floor (30 dB): a measured plan becomes the plan.
    harness.get_by_label("Find smallest plan").click();
    harness.step();
    wait_idle(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    let found = s.search.clone().expect("a search result");
    let chosen = found.chosen.expect("digits-mlp has a plan above 30 dB");
    let pick = found
        .evaluations
        .iter()
        .find(|e| e.point == chosen)
        .unwrap();
    assert!(
        pick.passed && pick.measured_sqnr_db.unwrap() >= 30.0,
        "{pick:?}"
    );
    assert_eq!(s.recipe, found.recipe);
    assert_eq!(
        s.format,
        edgefit_engine::export::build::ExportFormat::WeightsInt8
    );
    assert!(harness.query_by_label_contains("passes").is_some());
    // Undo goes back to the float plan.
    harness.get_by_label("Undo").click();
    harness.step();
    harness.step();
    assert!(
        harness
            .state()
            .session
            .as_ref()
            .unwrap()
            .recipe
            .layers
            .is_empty()
    );
    harness.get_by_label(&format!("{layer} at int4")).click();
    harness.step();
    harness.step();
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(
        s.recipe.settings_for(&layer).precision,
        Precision::Int { bits: 4 }
    );
    // Only that layer changed.
    for other in sweep.layers.iter().skip(1) {
        assert_eq!(
            s.recipe.settings_for(&other.name).precision,
            Precision::Float32
        );
    }
    // A new runtime or new inputs make the sweep stale: it is cleared, not shown.
    let run = edgefit::gui::session::RunSettings {
        inputs: vec![edgefit_engine::pipeline::parse_input_shape("input=1,64").unwrap()],
        ..s.run.clone()
    };
    harness.state_mut().send(edgefit::gui::Command::SetRun(run));
    harness.step();
    harness.step();
    assert!(
        harness
            .state()
            .session
            .as_ref()
            .unwrap()
            .sensitivity
            .is_none()
    );
}

#[test]
fn a_saved_session_keeps_its_sweep_while_it_still_describes_the_model() {
    let mut harness = studio(&sample("digits-mlp"));
    harness.get_by_label("Analyse sensitivity").click();
    harness.step();
    wait_idle(&mut harness);
    let sweep = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .sensitivity
        .clone()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.edgefit.json");
    harness
        .state_mut()
        .send(edgefit::gui::Command::SaveSession(path.clone()));
    harness.step();
    assert!(path.is_file(), "{:?}", harness.state().error);

    let reopen = |file: &Path| {
        let file = file.to_path_buf();
        let mut h = Harness::builder()
            .with_size([1400.0, 900.0])
            .build_eframe(move |_cc| {
                let mut app = StudioApp::new(Persisted::default(), None);
                app.auto_evaluate = false;
                app.send(edgefit::gui::Command::OpenSession(file));
                app
            });
        wait_idle(&mut h);
        h
    };
    let h = reopen(&path);
    let restored = h.state().session.as_ref().unwrap().sensitivity.clone();
    assert_eq!(
        restored.as_deref(),
        Some(&*sweep),
        "the sweep comes back as saved"
    );
    h.get_by_label("Find smallest plan");

    // A table measured on another file (here: another size) is not shown as this model's.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    json["sensitivity"]["model_file"]["size_bytes"] = serde_json::json!(1);
    let stale = dir.path().join("stale.edgefit.json");
    std::fs::write(&stale, json.to_string()).unwrap();
    let h = reopen(&stale);
    assert!(h.state().session.as_ref().unwrap().sensitivity.is_none());
}
