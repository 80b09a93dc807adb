//! Compression on the real sample models: every pruning and quantization mode, every export
//! format written, reloaded and verified; verification failure and cancellation reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::compressor::Compressor;
use edgefit_engine::compress::plan::{Clipping, LayerOverride, Precision, PruneMethod, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{Dataset, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, optimize, sidecar_paths, verify_written};
use edgefit_engine::{
    AnalysisOptions, CancelToken, Error, LoadedModel, NoProgress, analyse, load_model,
};
use edgefit_tests::sample_model;

fn open(name: &str) -> (LoadedModel, Dataset) {
    let path = sample_model(name);
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let data = load_dataset(path.parent().unwrap(), None).unwrap();
    (model, data)
}

fn compressor(model: &LoadedModel) -> Compressor {
    let analysis = analyse(
        model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    Compressor::new(model, &analysis)
}

fn int8() -> Recipe {
    let mut r = Recipe::default();
    r.defaults.precision = Precision::Int { bits: 8 };
    r
}

#[test]
fn magnitude_pruning_reaches_the_requested_sparsity_per_layer() {
    let (model, _) = open("mnist-cnn");
    let mut c = compressor(&model);
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 0.5;
    let result = c.apply(&recipe, &CancelToken::new()).unwrap();
    assert!(!result.layers.is_empty());
    for l in &result.layers {
        let r = &l.report;
        // floor(0.5 × n) zeros, plus any weight that was already exactly zero.
        assert!(
            r.sparsity >= 0.49 && r.sparsity <= 0.55,
            "{}: {}",
            r.name,
            r.sparsity
        );
        assert!(r.sqnr_db.is_some_and(|s| s.is_finite()));
    }
    // BatchNormalization layers are reported as left alone, with the reason.
    assert!(
        result
            .skipped
            .iter()
            .any(|s| s.op == "BatchNormalization" && s.reason.contains("float32"))
    );
}

#[test]
fn channel_pruning_zeroes_whole_filters() {
    let (model, _) = open("mnist-cnn");
    let mut c = compressor(&model);
    for method in [PruneMethod::ChannelsL1, PruneMethod::ChannelsL2] {
        let mut recipe = Recipe::default();
        recipe.defaults.prune_ratio = 0.25;
        recipe.defaults.prune_method = method;
        let result = c.apply(&recipe, &CancelToken::new()).unwrap();
        let (i, head) = c
            .layers
            .iter()
            .enumerate()
            .find(|(_, l)| l.name == "head.conv")
            .unwrap();
        let removed = &result.layers[i].removed_channels;
        let channels = head.dims[0] as usize;
        assert_eq!(removed.len(), channels / 4, "{method:?}");
        let per_channel = result.layers[i].values.len() / channels;
        for &ch in removed {
            assert!(
                result.layers[i].values[ch * per_channel..(ch + 1) * per_channel]
                    .iter()
                    .all(|v| *v == 0.0)
            );
        }
    }
}

#[test]
fn quantization_modes_trade_error_as_expected() {
    let (model, _) = open("mnist-cnn");
    let mut c = compressor(&model);
    let sqnr = |c: &mut Compressor, recipe: &Recipe| -> f64 {
        let r = c.apply(recipe, &CancelToken::new()).unwrap();
        let (b, a) = r.layers.iter().fold((0.0, 0.0), |(s, n), l| {
            (s + l.report.sqnr_db.unwrap_or(200.0), n + 1.0)
        });
        b / a
    };
    let mut recipe = int8();
    let int8_per_channel = sqnr(&mut c, &recipe);
    recipe.defaults.per_channel = false;
    let int8_per_tensor = sqnr(&mut c, &recipe);
    recipe.defaults.symmetric = false;
    let int8_asym = sqnr(&mut c, &recipe);
    assert!(
        int8_per_channel > int8_per_tensor,
        "{int8_per_channel} vs {int8_per_tensor}"
    );
    assert!(int8_asym > 20.0);
    let mut four = int8();
    four.defaults.precision = Precision::Int { bits: 4 };
    let four_minmax = sqnr(&mut c, &four);
    four.defaults.clipping = Clipping::Mse;
    let four_mse = sqnr(&mut c, &four);
    // The search must find clipping ranges below min-max somewhere (min-max is one of its
    // candidates, so "not worse" would hold even if it searched nothing).
    assert!(
        four_mse > four_minmax + 0.05,
        "MSE clipping {four_mse} dB vs min-max {four_minmax} dB"
    );
    // Percentile clipping really clips: some layer's largest dequantized |w| falls below the
    // original's, and its SQNR is not min-max's.
    four.defaults.clipping = Clipping::Percentile { percentile: 99.0 };
    let four_pct = sqnr(&mut c, &four);
    assert!(
        (four_pct - four_minmax).abs() > 0.05,
        "{four_pct} vs {four_minmax}"
    );
    let clipped = c.apply(&four, &CancelToken::new()).unwrap();
    let peak = |v: &[f32]| v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let clipped_layers = clipped
        .layers
        .iter()
        .enumerate()
        .filter(|(i, l)| peak(&l.values) < 0.95 * peak(c.original(*i)))
        .count();
    assert!(
        clipped_layers > 0,
        "no layer was clipped at the 99th percentile"
    );
    assert!(int8_per_channel > four_mse + 10.0);
    let mut half = Recipe::default();
    half.defaults.precision = Precision::Float16;
    assert!(sqnr(&mut c, &half) > 60.0);
}

#[test]
fn only_changed_layers_are_recomputed() {
    let (model, _) = open("mnist-cnn");
    let mut c = compressor(&model);
    let mut recipe = int8();
    let first = c.apply(&recipe, &CancelToken::new()).unwrap();
    assert_eq!(first.recomputed, c.layers.len());
    assert_eq!(c.apply(&recipe, &CancelToken::new()).unwrap().recomputed, 0);
    recipe.layers.insert(
        "fc.gemm".into(),
        LayerOverride {
            prune_ratio: Some(0.3),
            ..Default::default()
        },
    );
    let again = c.apply(&recipe, &CancelToken::new()).unwrap();
    assert_eq!(again.recomputed, 1);
}

#[test]
fn recipes_naming_unknown_layers_are_refused() {
    let (model, _) = open("digits-mlp");
    let mut c = compressor(&model);
    let mut recipe = Recipe::default();
    recipe
        .layers
        .insert("no.such.layer".into(), LayerOverride::default());
    let e = c.apply(&recipe, &CancelToken::new()).unwrap_err();
    assert!(
        matches!(e, Error::Recipe { .. }) && e.to_string().contains("no.such.layer"),
        "{e}"
    );
}

fn run_optimize(
    name: &str,
    recipe: &Recipe,
    format: ExportFormat,
) -> edgefit_engine::pipeline::OptimizeReport {
    let (model, data) = open(name);
    let calibration =
        edgefit_engine::measure::dataset::load_calibration(sample_model(name).parent().unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let data = data.first(200);
    let options = OptimizeOptions {
        recipe,
        format,
        data: &data,
        calibration: calibration.as_ref(),
        latency_runs: 3,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
    let (recipe_path, json, md) = sidecar_paths(&out);
    for p in [&out, &recipe_path, &json, &md] {
        assert!(p.is_file(), "{} written", p.display());
    }
    // The recipe written is the one applied: the format decides int8 activations.
    assert_eq!(
        Recipe::from_json(&std::fs::read_to_string(recipe_path).unwrap()).unwrap(),
        recipe
            .clone()
            .with_int8_activations(format.has_integer_kernels())
    );
    assert_eq!(
        report.compressed.size_bytes,
        std::fs::metadata(&out).unwrap().len(),
        "size is the real file size"
    );
    report
}

#[test]
fn every_export_format_verifies_on_both_sample_models() {
    for name in ["mnist-cnn", "digits-mlp"] {
        for format in ExportFormat::ALL {
            let mut recipe = match format {
                ExportFormat::WeightsInt8 | ExportFormat::QdqInt8 | ExportFormat::DynamicInt8 => {
                    int8()
                }
                ExportFormat::Fp16 => {
                    let mut r = Recipe::default();
                    r.defaults.precision = Precision::Float16;
                    r
                }
                ExportFormat::Fp32 => Recipe::default(),
            };
            if format == ExportFormat::Fp32 {
                recipe.defaults.prune_ratio = 0.1;
            }
            let report = run_optimize(name, &recipe, format);
            assert!(
                report.verification.passed,
                "{name} {format:?}: {}",
                report.verification.message
            );
            let original = report.original.accuracy.unwrap().top1;
            let compressed = report.compressed.accuracy.unwrap().top1;
            assert!(original > 0.95, "{name}: float accuracy {original}");
            assert!(
                compressed > original - 0.05,
                "{name} {format:?}: {compressed} vs {original}"
            );
            match format {
                ExportFormat::Fp16
                | ExportFormat::WeightsInt8
                | ExportFormat::QdqInt8
                | ExportFormat::DynamicInt8 => {
                    assert!(
                        report.compressed.size_bytes < report.original.size_bytes * 7 / 10,
                        "{name} {format:?} smaller"
                    )
                }
                ExportFormat::Fp32 => {}
            }
            if format == ExportFormat::QdqInt8 {
                assert!(!report.quantized_activations.is_empty());
            }
            assert!(report.compressed.latency_ms.is_some());
        }
    }
}

#[test]
fn low_bit_weights_are_stored_in_int8_containers_and_say_so() {
    let mut recipe = int8();
    recipe.defaults.precision = Precision::Int { bits: 4 };
    recipe.defaults.clipping = Clipping::Mse;
    let report = run_optimize("digits-mlp", &recipe, ExportFormat::WeightsInt8);
    assert!(report.verification.passed);
    assert!(
        report.notes.iter().any(|n| n.contains("int8 containers")),
        "{:?}",
        report.notes
    );
}

#[test]
fn verification_failure_is_reported() {
    let (model, data) = open("digits-mlp");
    let data = data.first(8);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.onnx");
    edgefit_engine::write_model_atomic(&model.proto, &out, &model.path).unwrap();
    // Expected outputs that the file cannot reproduce.
    let wrong: Vec<Vec<f32>> = (0..data.len()).map(|_| vec![1000.0; 10]).collect();
    let v = verify_written(&out, &data, &wrong, &[1, 64], &CancelToken::new());
    assert!(!v.passed && v.message.contains("differs"), "{}", v.message);
    std::fs::write(&out, b"\x08\x07garbage").unwrap();
    let v = verify_written(&out, &data, &wrong, &[1, 64], &CancelToken::new());
    assert!(
        !v.passed && v.message.contains("does not load"),
        "{}",
        v.message
    );
}

#[test]
fn cancelled_optimize_writes_nothing() {
    let (model, data) = open("mnist-cnn");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let cancel = CancelToken::new();
    cancel.cancel();
    let recipe = int8();
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::WeightsInt8,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let e = optimize(&model, &options, &out, &NoProgress, &cancel).unwrap_err();
    assert!(matches!(e, Error::Cancelled));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn the_opened_model_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.onnx");
    std::fs::copy(sample_model("digits-mlp"), &path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let data = load_dataset(sample_model("digits-mlp").parent().unwrap(), None)
        .unwrap()
        .first(4);
    let recipe = int8();
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::WeightsInt8,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let e = optimize(&model, &options, &path, &NoProgress, &CancelToken::new()).unwrap_err();
    assert!(matches!(e, Error::WouldOverwriteSource { .. }), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn structured_pruning_physically_removes_channels_and_work() {
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 0.5;
    recipe.defaults.prune_method = PruneMethod::ChannelsL1;
    let report = run_optimize("mnist-cnn", &recipe, ExportFormat::Fp32);
    assert!(
        report.verification.passed,
        "{}",
        report.verification.message
    );
    let stem = report
        .structured
        .iter()
        .find(|r| r.layer == "stem.conv")
        .unwrap();
    assert_eq!((stem.channels_before, stem.removed), (16, 8));
    // Residual branches cannot shrink: they are reported, not silently skipped.
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.name == "block1.pw.conv" && s.reason.contains("block1.add"))
    );
    assert!(
        report.macs_after < report.macs_before * 8 / 10,
        "{} → {}",
        report.macs_before,
        report.macs_after
    );
    assert!(report.compressed.size_bytes < report.original.size_bytes * 8 / 10);
    // Batch-norm re-estimation keeps the pruned network usable without training.
    assert!(
        report.compressed.accuracy.unwrap().top1 > 0.7,
        "{:?}",
        report.compressed.accuracy
    );
}

#[test]
fn batchnorm_recalibration_recovers_magnitude_pruning() {
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 0.3;
    recipe.recalibrate_batchnorm = edgefit_engine::compress::plan::BatchNormRecalibration::Never;
    let without = run_optimize("mnist-cnn", &recipe, ExportFormat::Fp32)
        .compressed
        .accuracy
        .unwrap()
        .top1;
    recipe.recalibrate_batchnorm =
        edgefit_engine::compress::plan::BatchNormRecalibration::WhenPruned;
    let with = run_optimize("mnist-cnn", &recipe, ExportFormat::Fp32)
        .compressed
        .accuracy
        .unwrap()
        .top1;
    assert!(with > without + 0.2, "with {with} vs without {without}");
}

#[test]
fn qdq_export_folds_batchnorm_first_and_keeps_accuracy() {
    let mut recipe = int8();
    let report = run_optimize("mnist-cnn", &recipe, ExportFormat::QdqInt8);
    assert!(report.verification.passed);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("folded 10 BatchNormalization")),
        "{:?}",
        report.notes
    );
    let (orig, q) = (
        report.original.accuracy.unwrap().top1,
        report.compressed.accuracy.unwrap().top1,
    );
    assert!(q >= orig - 0.01, "int8 {q} vs float {orig}");
    // Without folding the float batch norms stay between integer layers.
    recipe.fold_batchnorm = false;
    let unfolded = run_optimize("mnist-cnn", &recipe, ExportFormat::QdqInt8);
    assert!(!unfolded.notes.iter().any(|n| n.contains("folded")));
    assert!(unfolded.compressed.size_bytes > report.compressed.size_bytes);
}

#[test]
fn optimize_evaluates_and_verifies_the_output_asked_for() {
    use edgefit_engine::measure::eval::{fidelity, run_dataset};
    use edgefit_engine::measure::runtime::{BuildOptions, RunnableModel};
    let (model, data) = open("mnist-cnn");
    let data = data.first(50);
    // An intermediate tensor: the head convolution's output (64 channels × 7 × 7 here).
    let tensor = model
        .graph
        .main_nodes()
        .find(|n| n.name == "head.conv")
        .map(|n| n.outputs[0].clone())
        .unwrap();
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 0.4;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::Fp32,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: Some(&tensor),
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
    assert!(
        report.verification.passed,
        "{}",
        report.verification.message
    );
    assert_eq!(report.evaluated_output.as_deref(), Some(tensor.as_str()));
    // The report's fidelity is that of the intermediate tensor, as run from the files.
    let outputs_of = |proto: &edgefit_engine::model::proto::ModelProto| {
        let build = BuildOptions {
            output: Some(tensor.clone()),
            ..BuildOptions::default()
        };
        let runnable = RunnableModel::build_with(
            RuntimeKind::Tract,
            proto,
            None,
            &[1, 1, 28, 28],
            &[],
            &build,
        )
        .unwrap();
        run_dataset(&runnable, &data, &NoProgress, &CancelToken::new()).unwrap()
    };
    let original = outputs_of(&model.proto);
    let written = load_model(&out, &NoProgress, &CancelToken::new()).unwrap();
    let compressed = outputs_of(&written.proto);
    assert!(original[0].len() > 10, "an intermediate, not the logits");
    let expected = fidelity(&original, &compressed);
    let measured = report.fidelity.unwrap();
    assert_eq!(measured.samples, expected.samples);
    assert!(
        (measured.max_abs_err - expected.max_abs_err).abs() < 1e-6,
        "{measured:?} vs {expected:?}"
    );
    let json = std::fs::read_to_string(dir.path().join("out.report.json")).unwrap();
    assert!(json.contains("\"evaluated_output\""), "{json}");
}

#[test]
fn float16_saturates_weights_beyond_its_range_instead_of_writing_infinity() {
    use edgefit_engine::compress::compressor::{CompressibleLayer, compress_layer};
    let layer = CompressibleLayer {
        name: "big".into(),
        op: "Gemm".into(),
        node: 0,
        weight: "w".into(),
        weight_index: 0,
        dims: vec![2, 2],
        channel_axis: Some(0),
        structured_ok: true,
        opset: 13,
        macs: None,
    };
    let original = [1.0e5f32, -2.0e5, 0.5, 1.0];
    let settings = edgefit_engine::compress::plan::LayerSettings {
        precision: Precision::Float16,
        ..Default::default()
    };
    let result = compress_layer(&layer, &original, settings);
    assert!(
        result.values.iter().all(|v| v.is_finite()),
        "{:?}",
        result.values
    );
    assert_eq!(result.values[0], 65504.0);
    assert_eq!(result.values[1], -65504.0);
    let notes = result.report.notes.join(" ");
    assert!(
        notes.contains("2 weights beyond float16's range"),
        "{notes}"
    );
    // The weight SQNR reflects the clipped values: low, not the 70 dB of the rest.
    let db = result.report.sqnr_db.unwrap();
    assert!(db.is_finite() && db < 10.0, "{db}");
}
