//! The diff view: after an export, "Show what changed" compares the open model with the file
//! written; the graph is coloured by it and every changed weight is listed. Headless, by
//! accessible label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{studio_sized, wait_idle};

use std::time::{Duration, Instant};

use edgefit::gui::Command;
use edgefit::gui::diff_panel::DiffMark;
use edgefit_engine::compress::plan::Precision;
use edgefit_engine::export::build::ExportFormat;
use edgefit_tests::sample_model as sample;

use egui_kittest::kittest::Queryable;

#[test]
fn an_export_is_compared_with_the_original_node_by_node_and_weight_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mnist.qdq.onnx");
    // Tall enough for the right panel's sections down to the diff.
    let mut harness = studio_sized(&sample("mnist-cnn"), false, [1400.0, 1600.0]);
    harness
        .state_mut()
        .send(Command::SetFormat(ExportFormat::QdqInt8));
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.state_mut().send(Command::Export(out.clone()));
    wait_idle(&mut harness);
    assert!(out.is_file(), "{:?}", harness.state().error);
    harness.get_by_label("Show what changed (diff)").click();
    harness.step();
    wait_idle(&mut harness);
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
    let app = harness.state();
    let s = app.session.as_ref().unwrap();
    let view = s.diff.as_ref().expect("a diff");
    let summary = &view.diff.summary;
    // QDQ inserts quantize/dequantize nodes, folds the batch norms, quantizes every layer.
    assert!(
        summary.nodes_added > 0 && summary.nodes_removed > 0,
        "{summary:?}"
    );
    assert!(
        summary.weights_changed >= s.compressor.layers.len(),
        "every layer's weight is quantized: {summary:?}"
    );
    assert_eq!(
        summary.weights_only_in_a,
        4 * summary.nodes_removed,
        "the scale, bias, mean and variance of each folded batch norm: {summary:?}"
    );
    let graph = &s.open.loaded.graph;
    for (node, mark) in graph.nodes.iter().zip(&view.marks) {
        match node.op_type.as_str() {
            "BatchNormalization" => assert_eq!(*mark, DiffMark::Removed, "{}", node.name),
            "Relu" => assert_ne!(*mark, DiffMark::Removed, "{}", node.name),
            _ => {}
        }
    }
    assert!(
        view.marks
            .iter()
            .any(|m| matches!(m, DiffMark::Changed | DiffMark::WeightsChanged))
    );
    // The panel lists the weights; a row's button shows its layer in the graph.
    let layer = s.compressor.layers[1].weight.clone();
    assert!(
        harness
            .query_by_label_contains("Weights changed:")
            .is_some()
    );
    // (The graph is laid out on a thread of its own.)
    let deadline = Instant::now() + Duration::from_secs(60);
    while harness.state().graph.prepared().is_none() {
        assert!(Instant::now() < deadline, "graph layout did not finish");
        std::thread::sleep(Duration::from_millis(10));
        harness.step();
    }
    harness.get_by_label(&layer).click();
    harness.step();
    harness.step();
    let app = harness.state();
    assert_eq!(
        app.session.as_ref().unwrap().selected,
        Some(1),
        "the layer reading {layer} is selected"
    );
    harness.get_by_label("Close diff").click();
    harness.step();
    assert!(harness.state().session.as_ref().unwrap().diff.is_none());
}
