//! Data-aware compression on the real sample CNN: pruning with layer-wise weight
//! reconstruction, and output-MSE clipping. Layer outputs are measured by running the models
//! (tract), independently of the engine's own Gram-matrix bookkeeping.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::compressor::Compressor;
use edgefit_engine::compress::plan::{Clipping, Precision, PruneMask, Recipe};
use edgefit_engine::export::build::{ExportFormat, build_export};
use edgefit_engine::measure::dataset::{Dataset, load_calibration, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::model::proto::ModelProto;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, observe_tensors, optimize};
use edgefit_engine::recover::reconstruct::reconstruct_pass;
use edgefit_engine::{
    AnalysisOptions, CancelToken, Error, LoadedModel, NoProgress, Progress, analyse, load_model,
};
use edgefit_tests::sample_model;

fn open() -> (LoadedModel, Dataset, Dataset) {
    let path = sample_model("mnist-cnn");
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let data = load_dataset(path.parent().unwrap(), None).unwrap();
    let calibration = load_calibration(path.parent().unwrap()).unwrap().unwrap();
    (model, data, calibration)
}

fn pruned(ratio: f32, reconstruct: bool, mask: PruneMask) -> Recipe {
    let mut r = Recipe::default();
    r.defaults.prune_ratio = ratio;
    r.reconstruct.enabled = reconstruct;
    r.reconstruct.mask = mask;
    r
}

fn options<'a>(
    recipe: &'a Recipe,
    format: ExportFormat,
    data: &'a Dataset,
    calibration: &'a Dataset,
) -> OptimizeOptions<'a> {
    OptimizeOptions {
        recipe,
        format,
        data,
        calibration: Some(calibration),
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    }
}

/// Every sample's values of tensor `name` in `proto`.
fn tensor_values(proto: &ModelProto, name: &str, data: &Dataset) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    observe_tensors(
        RuntimeKind::Tract,
        proto,
        &[1, 1, 28, 28],
        &[],
        &[name.to_owned()],
        data,
        "test",
        &NoProgress,
        &CancelToken::new(),
        |_, v| out.push(v.to_vec()),
    )
    .unwrap();
    out
}

fn squared_error(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum()
}

fn weight<'m>(model: &'m LoadedModel, name: &str) -> &'m [f32] {
    model.weight(name).unwrap().values.as_deref().unwrap()
}

#[test]
fn reconstruction_keeps_the_mask_and_lowers_the_layer_output_error() {
    let (model, data, calibration) = open();
    let test = data.first(300);
    let recipe = pruned(0.5, true, PruneMask::Magnitude);
    let opts = options(&recipe, ExportFormat::Fp32, &test, &calibration);
    let rebuilt = reconstruct_pass(&model, &recipe, &opts, &NoProgress, &CancelToken::new())
        .unwrap()
        .expect("the recipe prunes, so the pass runs");
    assert_eq!(rebuilt.layers.len(), 11, "every Conv and the Gemm");

    // Plain magnitude pruning of the same model at the same ratio.
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let mut compressor = Compressor::new(&model, &analysis);
    let plain = compressor
        .apply(
            &pruned(0.5, false, PruneMask::Magnitude),
            &CancelToken::new(),
        )
        .unwrap();
    for (layer, result) in compressor.layers.iter().zip(&plain.layers) {
        let after = weight(&rebuilt.model, &layer.weight);
        let before = &result.values;
        // Same mask: zero exactly where magnitude pruning put zeros, nowhere else.
        let zeros = before.iter().filter(|v| **v == 0.0).count();
        assert_eq!(zeros, before.len() / 2, "{}: ⌊0.5·n⌋ zeros", layer.name);
        for (i, (a, b)) in after.iter().zip(before).enumerate() {
            assert_eq!(*a == 0.0, *b == 0.0, "{} weight {i}", layer.name);
        }
        // And the kept weights did change.
        assert!(
            after.iter().zip(before).any(|(a, b)| a != b),
            "{} was not re-solved",
            layer.name
        );
    }
    let report = rebuilt
        .layers
        .iter()
        .find(|l| l.name == "stem.conv")
        .unwrap();
    assert!(report.relative_error_reconstructed < report.relative_error_pruned);

    // The first layer's output (same input in every model), measured in tract on held-out
    // test samples (not the calibration data the weights were solved on).
    let original = model.self_contained_proto().unwrap();
    let plain_proto = build_export(&model, &compressor, &plain, ExportFormat::Fp32, None, None)
        .unwrap()
        .proto;
    let rebuilt_proto = rebuilt.model.self_contained_proto().unwrap();
    let conv_out = "stem.conv.out";
    let stem = model
        .graph
        .main_nodes()
        .find(|n| n.name == "stem.conv")
        .unwrap();
    let conv_out = stem.outputs.first().map_or(conv_out, String::as_str);
    let reference = tensor_values(&original, conv_out, &test);
    let e_plain = squared_error(&tensor_values(&plain_proto, conv_out, &test), &reference);
    let e_rebuilt = squared_error(&tensor_values(&rebuilt_proto, conv_out, &test), &reference);
    assert!(
        e_rebuilt < 0.7 * e_plain,
        "stem.conv output error on test data: reconstructed {e_rebuilt:.3} vs pruned {e_plain:.3}"
    );
    // The logits, which every layer's error reaches.
    let logits = model.graph.outputs[0].name.clone();
    let reference = tensor_values(&original, &logits, &test);
    let e_plain = squared_error(&tensor_values(&plain_proto, &logits, &test), &reference);
    let e_rebuilt = squared_error(&tensor_values(&rebuilt_proto, &logits, &test), &reference);
    assert!(
        e_rebuilt < e_plain,
        "logit error: reconstructed {e_rebuilt:.3} vs pruned {e_plain:.3}"
    );
}

fn top1(report: &OptimizeReport) -> f64 {
    report.compressed.accuracy.unwrap().top1
}

fn run(recipe: &Recipe, format: ExportFormat) -> (OptimizeReport, LoadedModel) {
    let (model, data, calibration) = open();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let opts = options(recipe, format, &data, &calibration);
    let report = optimize(&model, &opts, &out, &NoProgress, &CancelToken::new()).unwrap();
    assert!(
        report.verification.passed,
        "{}",
        report.verification.message
    );
    let written = load_model(&out, &NoProgress, &CancelToken::new()).unwrap();
    (report, written)
}

#[test]
fn pruning_with_reconstruction_beats_plain_pruning_and_keeps_the_sparsity() {
    let mut plain = pruned(0.5, false, PruneMask::Magnitude);
    plain.defaults.precision = Precision::Int { bits: 8 };
    plain.activations.int8 = true;
    let mut rebuilt = plain.clone();
    rebuilt.reconstruct.enabled = true;
    rebuilt.reconstruct.mask = PruneMask::Obs;
    let (plain_report, _) = run(&plain, ExportFormat::QdqInt8);
    let (rebuilt_report, _) = run(&rebuilt, ExportFormat::QdqInt8);
    let float = rebuilt_report.original.accuracy.unwrap().top1;
    assert!(
        top1(&rebuilt_report) > top1(&plain_report),
        "reconstructed {} vs plain {}",
        top1(&rebuilt_report),
        top1(&plain_report)
    );
    // The target: 50% pruning + int8 within 1 point of float (1000 test samples).
    assert!(
        top1(&rebuilt_report) >= float - 0.01,
        "reconstructed {} vs float {float}",
        top1(&rebuilt_report)
    );
    assert_eq!(rebuilt_report.reconstruction.len(), 11);
    let markdown = edgefit_engine::pipeline::report::markdown(&rebuilt_report);
    assert!(
        markdown.contains("## Reconstruction after pruning") && markdown.contains("`head.conv`")
    );
    assert!(!edgefit_engine::pipeline::report::markdown(&plain_report).contains("Reconstruction"));
    for l in &rebuilt_report.reconstruction {
        assert!(
            l.relative_error_reconstructed <= l.relative_error_pruned,
            "{}: {} > {}",
            l.name,
            l.relative_error_reconstructed,
            l.relative_error_pruned
        );
    }
    // The exported weights (folded, quantized) are at least as sparse as asked.
    for l in &rebuilt_report.layers {
        assert!(l.sparsity >= 0.5 - 1e-3, "{}: {}", l.name, l.sparsity);
    }

    // fp32: exactly the requested sparsity in the written file, layer by layer.
    let fp32 = pruned(0.5, true, PruneMask::Obs);
    let (report, written) = run(&fp32, ExportFormat::Fp32);
    let mut zeros = 0usize;
    let mut total = 0usize;
    for l in &report.layers {
        let w = weight(&written, &l.weight);
        let z = w.iter().filter(|v| **v == 0.0).count();
        assert_eq!(z, w.len() / 2, "{}", l.name);
        zeros += z;
        total += w.len();
    }
    assert!((zeros as f64 / total as f64 - 0.5).abs() < 1e-3);
}

#[test]
fn reconstruction_can_be_cancelled_midway() {
    let (model, data, calibration) = open();
    let test = data.first(50);
    let recipe = pruned(0.5, true, PruneMask::Obs);
    let opts = options(&recipe, ExportFormat::Fp32, &test, &calibration);
    let cancel = CancelToken::new();
    let stages = std::sync::Mutex::new(Vec::new());
    let progress = |p: Progress| {
        if p.stage == "reconstructing pruned layers" {
            stages.lock().unwrap().push(p.done);
            if p.done >= 2 {
                cancel.cancel();
            }
        }
    };
    let e = reconstruct_pass(&model, &recipe, &opts, &progress, &cancel)
        .err()
        .expect("cancelled");
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert_eq!(*stages.lock().unwrap(), vec![0, 1, 2]);
    // Through the whole pipeline too.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let cancel = CancelToken::new();
    let progress = |p: Progress| {
        if p.stage == "reconstructing pruned layers" && p.done >= 1 {
            cancel.cancel();
        }
    };
    let e = optimize(&model, &opts, &out, &progress, &cancel)
        .map(|_| ())
        .expect_err("cancelled");
    assert!(matches!(e, Error::Cancelled), "{e}");
    assert!(!out.exists());
}

#[test]
fn output_mse_clipping_beats_min_max_at_4_bits() {
    let mut results = Vec::new();
    for clipping in [Clipping::MinMax, Clipping::OutputMse] {
        let mut r = Recipe::default();
        r.defaults.precision = Precision::Int { bits: 4 };
        r.defaults.clipping = clipping;
        let (report, _) = run(&r, ExportFormat::WeightsInt8);
        results.push(report);
    }
    let (minmax, output_mse) = (&results[0], &results[1]);
    let sqnr = |r: &OptimizeReport| r.fidelity.unwrap().sqnr_db.unwrap();
    assert!(
        sqnr(output_mse) > sqnr(minmax) + 1.0,
        "logit SQNR: output-mse {} dB vs minmax {} dB",
        sqnr(output_mse),
        sqnr(minmax)
    );
    assert!(
        top1(output_mse) > top1(minmax),
        "top-1: output-mse {} vs minmax {}",
        top1(output_mse),
        top1(minmax)
    );
    // Output-MSE clips (some scales are smaller than min-max's), without the fallback note.
    assert!(
        output_mse
            .notes
            .iter()
            .all(|n| !n.contains("weight MSE used"))
    );
    let changed = output_mse
        .layers
        .iter()
        .zip(&minmax.layers)
        .filter(|(a, b)| a.sqnr_db != b.sqnr_db)
        .count();
    assert!(changed > 0);
}
