//! The studio driven as a person would, by accessible label, headless (no GPU needed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use edgefit::gui::{Command, Persisted, StudioApp};
use edgefit_tests::{fixture, onnxruntime, sample_model as sample};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

mod common;

use common::{studio, wait_idle};

fn estimates(harness: &Harness<'static, StudioApp>) -> (f64, u64) {
    let s = harness.state().session.as_ref().unwrap();
    let c = s.compression.as_ref().unwrap();
    let sparsity: f64 =
        c.layers.iter().map(|l| l.report.sparsity).sum::<f64>() / c.layers.len() as f64;
    (sparsity, c.weight_bytes().1)
}

#[test]
fn opens_the_sample_model_and_shows_its_layers() {
    let harness = studio(&sample("mnist-cnn"));
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
    assert!(harness.query_all_by_label("stem.conv").count() >= 1);
    assert!(harness.query_all_by_label("head.conv").count() >= 1);
    harness.get_by_label("Evaluate now");
}

#[test]
fn global_settings_change_the_estimates_and_undo_restores_them() {
    let mut harness = studio(&sample("mnist-cnn"));
    let (sparsity0, bytes0) = estimates(&harness);
    assert_eq!(sparsity0, 0.0);
    // The summary's plan column starts equal to the original.
    harness.get_by_label("20,522 non-zero");
    // Drive the recipe through the same command the sliders send.
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.prune_ratio = 0.5;
    recipe.defaults.precision = edgefit_engine::compress::plan::Precision::Int { bits: 8 };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.step();
    let (sparsity1, bytes1) = estimates(&harness);
    assert!(sparsity1 > 0.45, "{sparsity1}");
    assert!(bytes1 < bytes0 / 3, "{bytes1} vs {bytes0}");
    harness.run();
    assert!(harness.query_by_label("20,522 non-zero").is_none());
    let s = harness.state().session.as_ref().unwrap();
    let zeros: f64 = s
        .compression
        .as_ref()
        .unwrap()
        .layers
        .iter()
        .map(|l| l.report.sparsity * (l.report.bytes_before / 4) as f64)
        .sum();
    let expected = format!(
        "{} non-zero",
        edgefit::format::thousands(20_522 - zeros.round() as u64)
    );
    harness.get_by_label(&expected);
    harness.run();
    harness.get_by_label("Undo").click();
    harness.run();
    assert_eq!(estimates(&harness), (sparsity0, bytes0));
    // Ctrl+Shift+Z redoes.
    harness.key_press_modifiers(
        egui::Modifiers::COMMAND | egui::Modifiers::SHIFT,
        egui::Key::Z,
    );
    harness.run();
    assert_eq!(estimates(&harness).1, bytes1);
}

#[test]
fn evaluating_adds_a_point_to_the_trade_off_chart() {
    let mut harness = studio(&sample("digits-mlp"));
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.points.len(), 1, "{:?}", harness.state().error);
    assert!(s.points[0].verified);
    assert!(s.points[0].accuracy.unwrap() > 0.9);
    assert!(s.baseline.is_some());
}

#[test]
fn a_plan_below_the_quality_floor_is_shown_in_red_with_its_worst_layers() {
    let mut harness = studio(&sample("digits-mlp"));
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.prune_ratio = 0.95;
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let verdict = harness.state().verdict.clone().unwrap_or_default();
    assert!(
        verdict.contains("Quality below the floor")
            && verdict.contains("layers adding the most error"),
        "{verdict}"
    );
}

#[test]
fn export_writes_a_verified_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("digits.int8.onnx");
    let mut harness = studio(&sample("digits-mlp"));
    harness.state_mut().send(Command::SetFormat(
        edgefit_engine::export::build::ExportFormat::WeightsInt8,
    ));
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = edgefit_engine::compress::plan::Precision::Int { bits: 8 };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.state_mut().send(Command::Export(out.clone()));
    wait_idle(&mut harness);
    assert!(out.is_file());
    let status = harness.state().status.clone().unwrap_or_default();
    assert!(
        status.contains("verification passed"),
        "{status} / {:?}",
        harness.state().error
    );
    assert!(dir.path().join("digits.int8.report.md").is_file());
}

#[test]
fn a_bad_file_shows_its_reason_and_keeps_the_open_model() {
    let mut harness = studio(&sample("digits-mlp"));
    let bad = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/truncated.onnx");
    harness.state_mut().send(Command::Open(bad));
    wait_idle(&mut harness);
    let error = harness.state().error.clone().unwrap_or_default();
    assert!(error.contains("truncated"), "{error}");
    assert!(
        harness.state().session.is_some(),
        "the previous model stays open"
    );
    assert!(harness.query_all_by_label("fc1.gemm").count() >= 1);
}

#[test]
fn input_shapes_and_the_runtime_are_set_in_the_window_and_remembered() {
    use edgefit_engine::measure::runtime::RuntimeKind;
    use egui::accesskit::Role;
    // Symbolic dims and no data beside the model: inputs are generated at a stated default
    // shape until one is given.
    let mut harness = studio(&fixture("runtimes/symbolic_chain.onnx"));
    let data_error =
        |h: &Harness<'static, StudioApp>| h.state().session.as_ref().unwrap().data.clone().err();
    let generated =
        |h: &Harness<'static, StudioApp>| h.state().session.as_ref().unwrap().data.clone().unwrap();
    let data = generated(&harness);
    assert_eq!(data.sample_shape, vec![3, 224, 224]);
    assert!(
        data.description.contains("height 224, width 224 chosen"),
        "{}",
        data.description
    );
    let field = harness.get_by_role_and_label(Role::TextInput, "Shape");
    field.focus();
    harness.run();
    harness
        .get_by_role_and_label(Role::TextInput, "Shape")
        .type_text("1,3,12,20");
    harness.run();
    let macs_before = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .open
        .analysis
        .macs_complete;
    assert!(!macs_before, "symbolic dims hide the MACs");
    harness.get_by_label("Apply inputs").click();
    wait_idle(&mut harness);
    assert_eq!(data_error(&harness), None, "{:?}", harness.state().error);
    assert_eq!(generated(&harness).sample_shape, vec![3, 12, 20]);
    // The model was analysed again at that shape in the background: its MACs are known.
    let analysis = &harness.state().session.as_ref().unwrap().open.analysis;
    assert!(
        analysis.macs_complete && analysis.macs > 0,
        "{}",
        analysis.macs
    );
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.run.inputs[0].shape, Some(vec![1, 3, 12, 20]));
    assert_eq!(s.data.as_ref().unwrap().sample_shape, vec![3, 12, 20]);
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.points.len(), 1, "{:?}", harness.state().error);
    assert!(s.points[0].verified);
    assert_eq!(s.points[0].runtime, RuntimeKind::Tract);

    if onnxruntime() {
        harness.get_by_label("Runtime").click();
        harness.run();
        harness.get_by_label("onnxruntime").click();
        harness.run();
        let s = harness.state().session.as_ref().unwrap();
        assert_eq!(
            s.run.runtime,
            RuntimeKind::OnnxRuntime,
            "{:?}",
            harness.state().error
        );
        assert!(
            s.baseline.is_none(),
            "the original is measured again in onnxruntime"
        );
        harness.get_by_label("Evaluate now").click();
        wait_idle(&mut harness);
        let s = harness.state().session.as_ref().unwrap();
        assert_eq!(s.points.len(), 2, "{:?}", harness.state().error);
        assert_eq!(s.points[1].runtime, RuntimeKind::OnnxRuntime);
        assert_eq!(
            s.baseline.as_ref().unwrap().runtime,
            RuntimeKind::OnnxRuntime
        );
    }

    // The settings are part of the model's autosaved session: opening it again restores them.
    harness.state_mut().remember_session();
    let persisted = std::mem::take(&mut harness.state_mut().persisted);
    let model = fixture("runtimes/symbolic_chain.onnx");
    let mut again = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |_cc| {
            let mut app = StudioApp::new(persisted, Some(model));
            app.auto_evaluate = false;
            app
        });
    wait_idle(&mut again);
    let s = again.state().session.as_ref().unwrap();
    assert_eq!(s.run.inputs[0].shape, Some(vec![1, 3, 12, 20]));
    assert!(s.data.is_ok());
    // ... and analyses it again at that shape: the MACs are known, not "0 (partial)".
    assert!(
        s.open.analysis.macs_complete && s.open.analysis.macs > 0,
        "{}",
        s.open.analysis.macs
    );
}

#[test]
fn two_evaluated_points_compare_layer_by_layer() {
    let mut harness = studio(&sample("digits-mlp"));
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = edgefit_engine::compress::plan::Precision::Int { bits: 4 };
    let first_layer = harness.state().session.as_ref().unwrap().compressor.layers[0]
        .name
        .clone();
    recipe.layers.insert(
        first_layer.clone(),
        edgefit_engine::compress::plan::LayerOverride {
            prune_ratio: Some(0.5),
            ..Default::default()
        },
    );
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.run();
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    assert_eq!(
        harness.state().session.as_ref().unwrap().points.len(),
        2,
        "{:?}",
        harness.state().error
    );
    // Point 1 as A, point 2 as B, from the buttons of the points list.
    harness.get_by_label("Compare point 1 as A").click();
    harness.run();
    harness.get_by_label("Compare point 2 as B").click();
    harness.run();
    let s = harness.state().session.as_ref().unwrap();
    let ab = s.ab.as_ref().expect("a comparison");
    assert_eq!((ab.a, ab.b), (0, 1));
    assert_eq!(ab.rows.len(), s.compressor.layers.len());
    assert!(
        ab.rows.iter().all(|r| r.differs()),
        "fp32 against int4 everywhere"
    );
    let first = ab.rows.iter().find(|r| r.layer == first_layer).unwrap();
    assert!(first.b_settings.contains("prune 50%"), "{first:?}");
    assert!(
        first.a_sqnr_db.is_none() && first.b_sqnr_db.unwrap() < 30.0,
        "{first:?}"
    );
    assert!(first.b_bytes < first.a_bytes);
    harness.get_by_label("A/B: point 1 against point 2");
    // The latency view draws the points measured in the current runtime.
    harness.get_by_label("latency (tract)").click();
    harness.run();
    // Below the chart and the points: scrolled to, as a person would.
    harness.get_by_label("Close").scroll_to_me();
    harness.run();
    harness.get_by_label("Close").click();
    harness.run();
    assert!(harness.state().session.as_ref().unwrap().ab.is_none());
}

#[test]
fn a_tour_sets_plans_selects_layers_and_evaluates_each_step() {
    let steps = edgefit::gui::tour::parse_tour(
        r#"[{"format": "weights-int8", "recipe": {"version": 1, "defaults": {"precision": {"type": "int", "bits": 8}}}},
            {"format": "weights-int8", "recipe": {"version": 1, "defaults": {"prune_ratio": 0.95, "precision": {"type": "int", "bits": 8}}}},
            {"format": "fp16", "select": "fc2", "recipe": {"version": 1, "defaults": {"precision": {"type": "float16"}}}}]"#,
    )
    .unwrap();
    let model = sample("digits-mlp");
    let layer = {
        let loaded = edgefit_engine::load_model(
            &model,
            &edgefit_engine::NoProgress,
            &edgefit_engine::CancelToken::new(),
        )
        .unwrap();
        loaded
            .graph
            .main_nodes()
            .last()
            .map(|n| n.name.clone())
            .unwrap()
    };
    let steps: Vec<_> = steps
        .into_iter()
        .map(|mut s| {
            if s.select.is_some() {
                s.select = Some(layer.clone());
            }
            s
        })
        .collect();
    let mut harness = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |_cc| {
            let mut app = StudioApp::new(Persisted::default(), Some(model));
            app.tour = steps.into();
            app
        });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        harness.step();
        let app = harness.state();
        if app.tour.is_empty()
            && !app.is_busy()
            && app.session.as_ref().is_some_and(|s| s.points.len() >= 4)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tour did not finish: {:?}, {} steps left, busy {}, points {:?}",
            app.error,
            app.tour.len(),
            app.is_busy(),
            app.session.as_ref().map(|s| s.points.len())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = harness.state().session.as_ref().unwrap();
    // The original (auto-evaluated on open), then one point per step, in order: a plan below
    // the quality floor (95% pruned) is a result shown in red, and the tour goes on past it.
    let formats: Vec<_> = s.points.iter().map(|p| p.format).collect();
    use edgefit_engine::export::build::ExportFormat;
    assert_eq!(
        formats,
        vec![
            ExportFormat::Fp32,
            ExportFormat::WeightsInt8,
            ExportFormat::WeightsInt8,
            ExportFormat::Fp16
        ]
    );
    assert!(s.points.iter().all(|p| p.verified));
    assert!(s.points[2].accuracy < s.points[1].accuracy);
    assert!(
        s.points[1].size_bytes < s.points[3].size_bytes,
        "int8 is smaller than fp16"
    );
    let selected = s.selected.unwrap();
    assert_eq!(s.compressor.layers[selected].name, layer);
    assert_eq!(s.format, ExportFormat::Fp16);
}

#[test]
fn large_models_estimate_in_the_background_and_catch_up_with_the_plan() {
    // The sample CNN made "large" by lowering the threshold: estimates go through the worker.
    let model = sample("mnist-cnn");
    let mut harness = Harness::builder()
        .with_size([1400.0, 900.0])
        .build_eframe(move |_cc| {
            let mut app = StudioApp::new(Persisted::default(), Some(model));
            app.auto_evaluate = false;
            app.background_estimates_above = 0;
            app
        });
    wait_idle(&mut harness);
    let (sparsity0, _) = estimates(&harness);
    assert_eq!(sparsity0, 0.0);
    // Several plans in quick succession, as during a drag: the last one wins.
    for ratio in [0.2f32, 0.4, 0.6] {
        let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
        recipe.defaults.prune_ratio = ratio;
        harness.state_mut().send(Command::SetRecipe {
            recipe,
            record: false,
        });
        harness.step();
        // Applied at the end of the frame: handed to the worker, not computed in the frame.
        assert!(harness.state().session.as_ref().unwrap().estimating);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.state().session.as_ref().unwrap().estimating {
        assert!(Instant::now() < deadline, "estimates never caught up");
        std::thread::sleep(Duration::from_millis(5));
        harness.step();
    }
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.compression.as_ref().unwrap().recipe, s.recipe);
    let (sparsity, _) = estimates(&harness);
    assert!((sparsity - 0.6).abs() < 0.02, "{sparsity}");
    // A/B of two evaluated points is computed off the UI thread too.
    for _ in 0..2 {
        harness.get_by_label("Evaluate now").click();
        wait_idle(&mut harness);
        let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
        recipe.defaults.prune_ratio = 0.3;
        harness.state_mut().send(Command::SetRecipe {
            recipe,
            record: true,
        });
        wait_idle(&mut harness);
    }
    assert_eq!(harness.state().session.as_ref().unwrap().points.len(), 2);
    harness.state_mut().send(Command::CompareAb { a: 0, b: 1 });
    harness.step();
    assert!(harness.state().session.as_ref().unwrap().comparing());
    let deadline = Instant::now() + Duration::from_secs(30);
    while harness.state().session.as_ref().unwrap().ab.is_none() {
        assert!(Instant::now() < deadline, "comparison never arrived");
        std::thread::sleep(Duration::from_millis(5));
        harness.step();
    }
    let s = harness.state().session.as_ref().unwrap();
    let ab = s.ab.as_ref().unwrap();
    assert_eq!(ab.rows.len(), s.compressor.layers.len());
    assert!(
        ab.rows.iter().all(|r| r.a_settings.contains("prune 60%")),
        "{:?}",
        ab.rows[0]
    );
    assert!(
        ab.rows.iter().all(|r| r.b_settings.contains("prune 30%")),
        "{:?}",
        ab.rows[0]
    );
}

#[test]
fn a_layer_selected_elsewhere_is_scrolled_into_the_layers_table() {
    // A model with a few hundred layers: most rows of the table are below the fold.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("branchy.onnx");
    let model = edgefit_engine::model::synthetic::branchy_cnn(600);
    edgefit_engine::write_model_atomic(&model, &path, Path::new("")).unwrap();
    let mut harness = studio(&path);
    let layers = &harness.state().session.as_ref().unwrap().compressor.layers;
    assert!(layers.len() > 100, "{}", layers.len());
    let last = layers.len() - 1;
    let name = layers[last].name.clone();
    // The row's exclude checkbox is labelled by the layer's name.
    let row_shown = |h: &Harness<'static, StudioApp>| {
        h.query_all_by_role_and_label(egui::accesskit::Role::CheckBox, &name)
            .next()
            .is_some()
    };
    assert!(!row_shown(&harness), "the last row starts below the fold");
    // What the graph sends when its node is clicked.
    harness.state_mut().send(Command::SelectLayer(last));
    harness.run();
    assert!(row_shown(&harness), "selected row scrolled into view");
}

#[test]
fn a_model_tract_cannot_run_points_to_onnxruntime_in_the_window() {
    use edgefit_engine::measure::runtime::RuntimeKind;
    let mut harness = studio(&fixture("runtimes/loop_ort_only.onnx"));
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let error = harness.state().error.clone().expect("tract has no Loop");
    assert!(error.contains("`Loop`"), "{error}");
    assert!(
        error.contains("choose onnxruntime under Data, inputs and runtime"),
        "{error}"
    );
    assert!(!error.contains("--runtime"), "{error}");
    if !onnxruntime() {
        return;
    }
    harness
        .state_mut()
        .send(Command::SetRun(edgefit::gui::session::RunSettings {
            runtime: RuntimeKind::OnnxRuntime,
            ..Default::default()
        }));
    harness.run();
    harness.get_by_label("Evaluate now").click();
    wait_idle(&mut harness);
    let s = harness.state().session.as_ref().unwrap();
    assert_eq!(s.points.len(), 1, "{:?}", harness.state().error);
    assert_eq!(s.points[0].runtime, RuntimeKind::OnnxRuntime);
    assert!(s.points[0].verified);
}
