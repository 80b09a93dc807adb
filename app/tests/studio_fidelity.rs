//! Fidelity that fits the task in the studio: output SQNR for every model, top-1 agreement
//! only for class scores, accuracy only with labels; broken plans look broken; a plan already
//! measured is not measured again; A/B needs two points. Headless, by accessible label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{studio, wait_idle};

use std::path::{Path, PathBuf};
use std::time::Duration;

use edgefit::gui::{Command, Persisted, StudioApp};
use edgefit_engine::compress::plan::Precision;
use edgefit_tests::sample_model as sample;
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};

/// `model` copied alone into a fresh folder: no dataset beside it, so inputs are generated.
fn without_data(model: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.onnx");
    std::fs::copy(model, &copy).unwrap();
    (dir, copy)
}

fn set_bits(harness: &mut Harness<'static, StudioApp>, bits: u8) {
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    // Frames by hand: with automatic evaluation on, a timer keeps asking for frames.
    harness.step();
    harness.step();
}

fn evaluate(harness: &mut Harness<'static, StudioApp>) {
    harness.get_by_label("Evaluate now").click();
    wait_idle(harness);
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
}

#[test]
fn a_recurrent_model_without_labels_is_judged_by_output_sqnr_and_int2_looks_broken() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/lstm.onnx");
    let (_dir, model) = without_data(&fixture);
    let mut harness = studio(&model);
    set_bits(&mut harness, 2);
    evaluate(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.points.len(), 1);
    let point = &s.points[0];
    let fidelity = point.fidelity.as_ref().expect("outputs measured");
    // The output is [5, 1, 1, 16], not class scores: no agreement, no accuracy — only the
    // output error, which int2 makes large.
    assert_eq!(fidelity.agreement, None, "{fidelity:?}");
    assert_eq!(point.accuracy, None);
    let db = fidelity.output_sqnr_db.expect("not identical");
    assert!(db < 20.0, "int2 everywhere: {db} dB");
    assert!(fidelity.cosine < 1.0);
    // The window offers output SQNR and nothing it cannot back.
    assert!(
        harness.query_by_label(&format!("{db:.1} dB")).is_some(),
        "the points list shows the SQNR"
    );
    assert!(harness.query_by_label("accuracy").is_none());
    assert!(harness.query_by_label("top-1 agreement").is_none());
    assert!(harness.query_all_by_label("output SQNR").count() >= 1);
}

#[test]
fn a_classifier_without_labels_offers_top1_agreement_beside_output_sqnr() {
    let (_dir, model) = without_data(&sample("digits-mlp"));
    let mut harness = studio(&model);
    set_bits(&mut harness, 4);
    evaluate(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    let point = &s.points[0];
    assert_eq!(point.accuracy, None, "generated inputs have no labels");
    let fidelity = point.fidelity.as_ref().unwrap();
    assert!(fidelity.agreement.is_some_and(|a| a > 0.5), "{fidelity:?}");
    assert!(fidelity.output_sqnr_db.is_some_and(|db| db.is_finite()));
    assert!(harness.query_by_label("top-1 agreement").is_some());
    assert!(harness.query_by_label("accuracy").is_none());
    // The original is its own reference: identical, agreeing fully.
    let baseline = s.baseline.as_ref().unwrap().fidelity.clone().unwrap();
    assert_eq!(
        (baseline.output_sqnr_db, baseline.agreement),
        (None, Some(1.0))
    );
}

#[test]
fn a_plan_already_measured_is_not_measured_again_and_a_reopened_session_shows_its_points() {
    let dir = tempfile::tempdir().unwrap();
    let session_file = dir.path().join("digits.edgefit.json");
    let mut harness = studio(&sample("digits-mlp"));
    set_bits(&mut harness, 8);
    evaluate(&mut harness);
    evaluate(&mut harness);
    {
        let app = harness.state();
        let s = app.session.as_ref().unwrap();
        assert_eq!(app.evaluations_started, 2, "Evaluate now always measures");
        assert_eq!(
            s.points.len(),
            1,
            "the same plan measured twice is one point"
        );
        assert_eq!(s.measured_point(), Some(0));
    }
    harness
        .state_mut()
        .send(Command::SaveSession(session_file.clone()));
    harness.run();
    assert!(session_file.is_file());

    // Reopened with automatic evaluation on: the saved original and plan are shown as they
    // were, and nothing is measured.
    let mut again = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(|_cc| StudioApp::new(Persisted::default(), None));
    again.state_mut().send(Command::OpenSession(session_file));
    wait_idle(&mut again);
    for _ in 0..10 {
        again.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_idle(&mut again);
    let app = again.state();
    let s = app.session.as_ref().unwrap();
    assert_eq!(s.points.len(), 1);
    assert!(s.baseline.is_some());
    assert_eq!(app.evaluations_started, 0, "{:?}", app.error);

    // A change of plan is measured (automatically), and going back to the measured plan is
    // not.
    set_bits(&mut again, 4);
    std::thread::sleep(Duration::from_millis(900));
    wait_idle(&mut again);
    assert_eq!(again.state().evaluations_started, 1);
    assert_eq!(again.state().session.as_ref().unwrap().points.len(), 2);
    again.state_mut().send(Command::Undo);
    again.step();
    std::thread::sleep(Duration::from_millis(900));
    wait_idle(&mut again);
    assert_eq!(again.state().evaluations_started, 1);
    assert_eq!(again.state().session.as_ref().unwrap().points.len(), 2);
}

#[test]
fn one_point_cannot_be_compared_with_itself_and_a_comparison_keeps_the_panel_width() {
    let mut harness = studio(&sample("digits-mlp"));
    set_bits(&mut harness, 8);
    evaluate(&mut harness);
    assert!(
        harness
            .get_by_label("Compare point 1 as A")
            .accesskit_node()
            .is_disabled(),
        "one point: nothing to compare it with"
    );
    let width_before = harness.state().panel_rect("tradeoffs").unwrap().width();
    // A plan whose layer settings read long: every layer set apart.
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 3 };
    recipe.defaults.prune_ratio = 0.3;
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.run();
    evaluate(&mut harness);
    // A alone: compared with the newest other point, never with itself.
    harness.get_by_label("Compare point 2 as A").click();
    harness.run();
    for _ in 0..20 {
        harness.step();
    }
    let ab = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .ab
        .clone()
        .expect("a comparison");
    assert_eq!((ab.a, ab.b), (1, 0));
    let width_open = harness.state().panel_rect("tradeoffs").unwrap().width();
    assert!(
        width_open <= width_before + 1.0,
        "the panel kept its width: {width_before} → {width_open}"
    );
    harness.get_by_label("Close").click();
    harness.run();
    let width_closed = harness.state().panel_rect("tradeoffs").unwrap().width();
    assert!(width_closed <= width_before + 1.0, "{width_closed}");
}

#[test]
fn a_session_file_of_version_one_still_opens_and_its_points_are_listed() {
    // What the previous version (session format 1) wrote: points with a bare `accuracy`
    // (accuracy or agreement), no fidelity, no data key; run settings without data.
    let dir = tempfile::tempdir().unwrap();
    let recipe = serde_json::to_value(edgefit_engine::compress::plan::Recipe::default()).unwrap();
    let mut int8 = recipe.clone();
    int8["defaults"]["precision"] = serde_json::json!({"type": "int", "bits": 8});
    let point = |recipe: &serde_json::Value, format: &str, accuracy: f64, size: u64| {
        serde_json::json!({
            "recipe": recipe, "format": format, "accuracy": accuracy, "size_bytes": size,
            "latency_ms": 0.2, "verified": true, "runtime": "tract"
        })
    };
    let v1 = serde_json::json!({
        "version": 1,
        "model": sample("digits-mlp"),
        "recipe": int8,
        "format": "weights-int8",
        "baseline": point(&recipe, "fp32", 0.97, 27_050),
        "points": [point(&int8, "weights-int8", 0.965, 8_659)],
        "run": {"runtime": "tract", "inputs": []},
    });
    let file = dir.path().join("v1.edgefit.json");
    std::fs::write(&file, serde_json::to_string_pretty(&v1).unwrap()).unwrap();
    let mut harness = studio(&sample("mnist-cnn"));
    harness
        .state_mut()
        .send(edgefit::gui::Command::OpenSession(file));
    wait_idle(&mut harness);
    let app = harness.state();
    assert!(app.error.is_none(), "{:?}", app.error);
    let s = app.session.as_ref().unwrap();
    assert!(s.open.loaded.path.ends_with("digits-mlp/model.onnx"));
    assert_eq!(
        s.format,
        edgefit_engine::export::build::ExportFormat::WeightsInt8
    );
    assert_eq!(s.points.len(), 1);
    let old = &s.points[0];
    assert_eq!((old.accuracy, old.size_bytes), (Some(0.965), 8_659));
    assert!(old.fidelity.is_none() && old.data.is_none());
    // Measured by a version that recorded no data: the original is measured again.
    assert!(s.baseline.is_none());
    assert!(harness.query_by_label("Restore point 1").is_some());
}

#[test]
fn labelled_data_on_a_map_output_offers_no_accuracy_axis_and_draws_its_points() {
    // A Conv whose output is [batch, 4, height, width], with a labelled dataset beside it:
    // the labels cannot index that output, so there is no accuracy to plot.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(edgefit_tests::fixture("symbolic_dims.onnx"), &model).unwrap();
    edgefit_tests::write_labelled_dataset(dir.path(), 6, &[3, 8, 8]).unwrap();
    let mut harness = studio(&model);
    set_bits(&mut harness, 4);
    evaluate(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    assert!(s.data.as_ref().unwrap().labels.is_some());
    let point = &s.points[0];
    assert_eq!(point.accuracy, None);
    assert!(point.fidelity.as_ref().unwrap().output_sqnr_db.is_some());
    assert!(
        harness.query_by_label("accuracy").is_none(),
        "no accuracy axis or column: nothing could be drawn on it"
    );
    assert!(harness.query_by_label_contains("not drawn").is_none());
}
