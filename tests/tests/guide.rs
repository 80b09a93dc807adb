//! Guided compression on the real sample models: the sensitivity sweep measures what an
//! export with only that layer changed computes, in either runtime, and stops when cancelled.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::plan::{PruneMethod, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::guide::sensitivity::{
    Sensitivity, SensitivityOptions, candidates, one_layer, sensitivity,
};
use edgefit_engine::measure::dataset::{Dataset, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, optimize};
use edgefit_engine::{
    AnalysisOptions, CancelToken, Error, LoadedModel, ModelAnalysis, NoProgress, analyse,
    load_model,
};
use edgefit_tests::{onnxruntime, sample_model};

fn open(name: &str, samples: usize) -> (LoadedModel, ModelAnalysis, Dataset) {
    let path = sample_model(name);
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let data = load_dataset(path.parent().unwrap(), None)
        .unwrap()
        .first(samples);
    (model, analysis, data)
}

fn sweep(
    model: &LoadedModel,
    analysis: &ModelAnalysis,
    data: &Dataset,
    base: &Recipe,
    runtime: RuntimeKind,
) -> Sensitivity {
    let candidates = candidates(&[8, 4, 2], true, &[0.5]);
    let options = SensitivityOptions {
        base,
        candidates: &candidates,
        data,
        runtime,
        input_shapes: &[],
        output: None,
    };
    sensitivity(model, analysis, &options, &NoProgress, &CancelToken::new()).unwrap()
}

fn db(cell: Option<f64>) -> f64 {
    cell.unwrap_or(f64::INFINITY)
}

#[test]
fn each_cell_is_what_an_export_with_only_that_layer_changed_measures() {
    let (model, analysis, data) = open("digits-mlp", 200);
    let runtime = if onnxruntime() {
        RuntimeKind::OnnxRuntime
    } else {
        RuntimeKind::Tract
    };
    let base = Recipe::default();
    let s = sweep(&model, &analysis, &data, &base, runtime);
    assert_eq!(s.labels, ["int8", "int4", "int2", "fp16", "prune 50%"]);
    assert!(s.layers.len() >= 2, "{:?}", s.layers);
    // onnxruntime feeds every weight per run: one build for the whole sweep.
    if runtime == RuntimeKind::OnnxRuntime {
        assert_eq!(s.model_builds, 1, "{}", s.method);
    }
    assert_eq!(
        s.model_runs,
        (1 + s.layers.len() * s.candidates.len()) as u64 * data.len() as u64
    );
    let dir = tempfile::tempdir().unwrap();
    for layer in &s.layers {
        for (c, candidate) in [(1usize, s.candidates[1]), (4, s.candidates[4])] {
            let recipe = one_layer(&base, &layer.name, candidate);
            let out = dir.path().join(format!("{}-{c}.onnx", layer.name));
            let options = OptimizeOptions {
                recipe: &recipe,
                format: ExportFormat::Fp32,
                data: &data,
                calibration: None,
                latency_runs: 0,
                runtime,
                input_shapes: &[],
                output: None,
            };
            let report =
                optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
            let exported = db(report.fidelity.unwrap().sqnr_db);
            let cell = s
                .layers
                .iter()
                .find(|l| l.name == layer.name)
                .unwrap()
                .cells[c]
                .clone()
                .unwrap();
            let swept = db(cell.output_sqnr_db);
            assert!(
                (exported - swept).abs() < 0.05,
                "{} at {}: the export measures {exported:.3} dB, the sweep {swept:.3} dB",
                layer.name,
                s.labels[c]
            );
            let accuracy = report.compressed.accuracy.unwrap().top1;
            assert!(
                (cell.accuracy.unwrap() - accuracy).abs() < 1e-9,
                "{}: {accuracy} vs {:?}",
                layer.name,
                cell.accuracy
            );
        }
    }
}

#[test]
fn the_sweep_agrees_across_runtimes_and_fewer_bits_cost_more() {
    if !onnxruntime() {
        return;
    }
    let (model, analysis, data) = open("mnist-cnn", 100);
    let base = Recipe::default();
    let ort = sweep(&model, &analysis, &data, &base, RuntimeKind::OnnxRuntime);
    let tract = sweep(&model, &analysis, &data, &base, RuntimeKind::Tract);
    assert_eq!(ort.layers.len(), tract.layers.len());
    for (a, b) in ort.layers.iter().zip(&tract.layers) {
        for (i, (x, y)) in a.cells.iter().zip(&b.cells).enumerate() {
            let (x, y) = (x.as_ref().unwrap(), y.as_ref().unwrap());
            let (dx, dy) = (db(x.output_sqnr_db), db(y.output_sqnr_db));
            // Past ~60 dB the runtimes' own float rounding shows; below, the weight decides.
            if dx < 60.0 {
                assert!(
                    (dx - dy).abs() < 0.1,
                    "{} at {}: onnxruntime {dx:.2} dB, tract {dy:.2} dB",
                    a.name,
                    ort.labels[i]
                );
            }
        }
        let sqnr = |i: usize| db(a.cells[i].as_ref().unwrap().output_sqnr_db);
        assert!(
            sqnr(0) > sqnr(1) && sqnr(1) > sqnr(2),
            "{}: int8 {:.1}, int4 {:.1}, int2 {:.1} dB",
            a.name,
            sqnr(0),
            sqnr(1),
            sqnr(2)
        );
        // int8 and int4 are both stored in int8 containers: the same bytes, a quarter of
        // fp32 plus a scale and zero point per channel.
        let bytes = |i: usize| a.cells[i].as_ref().unwrap().bytes;
        assert_eq!(bytes(0), bytes(1));
        assert!(bytes(0) < a.bytes / 2, "{} vs {}", bytes(0), a.bytes);
    }
}

#[test]
fn structured_candidates_apply_only_where_channels_can_go() {
    let (model, analysis, data) = open("mnist-cnn", 50);
    let mut base = Recipe::default();
    base.defaults.prune_method = PruneMethod::ChannelsL1;
    let s = sweep(&model, &analysis, &data, &base, RuntimeKind::Tract);
    let prune = s.labels.iter().position(|l| l == "prune 50%").unwrap();
    let applies: Vec<&str> = s
        .layers
        .iter()
        .filter(|l| l.cells[prune].is_some())
        .map(|l| l.name.as_str())
        .collect();
    // The residual blocks tie every other layer's channels together; the stem and the head
    // are free (the studio's structured pruning says the same).
    assert_eq!(applies, ["stem.conv", "head.conv"], "{:?}", s.layers);
    for l in &s.layers {
        if let Some(c) = &l.cells[prune] {
            assert!(db(c.output_sqnr_db) < 30.0, "{}: {:?}", l.name, c);
        }
    }
}

#[test]
fn a_cancelled_sweep_stops_with_cancelled() {
    let (model, analysis, data) = open("digits-mlp", 20);
    let candidates = candidates(&[8], false, &[]);
    let base = Recipe::default();
    let options = SensitivityOptions {
        base: &base,
        candidates: &candidates,
        data: &data,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let cancel = CancelToken::new();
    cancel.cancel();
    let e = sensitivity(&model, &analysis, &options, &NoProgress, &cancel).unwrap_err();
    assert!(matches!(e, Error::Cancelled), "{e}");
}

#[test]
fn constant_node_weights_are_fed_per_run_like_initializers() {
    if !onnxruntime() {
        return;
    }
    let path = edgefit_tests::fixture("constant_weights.onnx");
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let (data, settings) = edgefit_engine::pipeline::generated_data(&model, &[]).unwrap();
    let candidates = candidates(&[8, 4], true, &[]);
    let base = Recipe::default();
    let run = |runtime| {
        let options = SensitivityOptions {
            base: &base,
            candidates: &candidates,
            data: &data,
            runtime,
            input_shapes: &settings,
            output: None,
        };
        sensitivity(
            &model,
            &analysis,
            &options,
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap()
    };
    let (ort, tract) = (run(RuntimeKind::OnnxRuntime), run(RuntimeKind::Tract));
    // Every weight of this model is a Constant node: still one session for the whole sweep.
    assert_eq!(ort.model_builds, 1, "{}", ort.method);
    assert_eq!(ort.layers.len(), 2);
    for (a, b) in ort.layers.iter().zip(&tract.layers) {
        for (x, y) in a.cells.iter().zip(&b.cells) {
            let (x, y) = (
                db(x.as_ref().unwrap().output_sqnr_db),
                db(y.as_ref().unwrap().output_sqnr_db),
            );
            assert!((x - y).abs() < 0.1, "{}: {x} vs {y}", a.name);
        }
    }
}
