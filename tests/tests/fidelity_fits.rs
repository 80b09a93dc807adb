//! Top-1 means something only for class scores: a model whose output is a map (a detector's
//! `[N, C, H, W]`) given labelled data is judged by output SQNR, with no accuracy and no top-1
//! agreement, while a classifier keeps both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgefit_engine::compress::plan::{Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::load_dataset;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{InputSetting, OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, NoProgress, load_model};
use edgefit_tests::{root, sample_model, write_labelled_dataset};

fn int8_export(model: &Path, data_dir: &Path, shape: Option<Vec<usize>>) -> OptimizeReport {
    let cancel = CancelToken::new();
    let loaded = load_model(model, &NoProgress, &cancel).unwrap();
    let data = load_dataset(data_dir, None).unwrap();
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    let shapes: Vec<InputSetting> = shape
        .map(|s| {
            vec![
                edgefit_engine::pipeline::parse_input_shape(&format!(
                    "x={}",
                    s.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
                ))
                .unwrap(),
            ]
        })
        .unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::WeightsInt8,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &shapes,
        output: None,
    };
    optimize(
        &loaded,
        &options,
        &dir.path().join("out.onnx"),
        &NoProgress,
        &cancel,
    )
    .unwrap()
}

#[test]
fn a_map_output_with_labels_is_judged_by_sqnr_and_a_classifier_keeps_top1() {
    // A Conv whose output is [batch, 4, height, width], with labelled 3x8x8 samples.
    let dir = tempfile::tempdir().unwrap();
    write_labelled_dataset(dir.path(), 6, &[3, 8, 8]).unwrap();
    let map = int8_export(
        &root().join("tests/fixtures/symbolic_dims.onnx"),
        dir.path(),
        Some(vec![1, 3, 8, 8]),
    );
    let first = &map.outputs[0];
    assert!(
        !first.class_scores,
        "a [N, 4, H, W] map is not class scores"
    );
    assert!(map.original.accuracy.is_none() && map.compressed.accuracy.is_none());
    assert!(first.fidelity.sqnr_db.is_some_and(f64::is_finite));

    let classifier = sample_model("digits-mlp");
    let report = int8_export(&classifier, classifier.parent().unwrap(), None);
    assert!(report.outputs[0].class_scores);
    assert!(report.compressed.accuracy.is_some_and(|a| a.top1 > 0.9));
}
