//! qdq-int8 exports compute in onnxruntime's integer kernels what the preview (tract, QDQ in
//! float) showed: weights of integer layers in the range the target computes exactly, biases
//! quantized as the kernels add them, one rounding per Conv+Relu.
//!
//! The same property on a CPU without VNNI (emulated) is checked by
//! `tests/python/check_cpu_kinds.py` in CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::plan::{Precision, Recipe, Target, WeightRange};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{Dataset, load_calibration, load_dataset};
use edgefit_engine::measure::eval::{fidelity, run_dataset};
use edgefit_engine::measure::runtime::{RunnableModel, RuntimeKind};
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, LoadedModel, NoProgress, load_model};
use edgefit_tests::{SAMPLE_MODELS, onnxruntime, sample_model};

fn open(path: &std::path::Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

fn sample_data(name: &str) -> Dataset {
    load_dataset(sample_model(name).parent().unwrap(), None).unwrap()
}

fn qdq_recipe(target: Target, range: WeightRange) -> Recipe {
    let mut r = Recipe::default();
    r.defaults.precision = Precision::Int { bits: 8 };
    r.target = target;
    r.activations.weight_range = range;
    r
}

/// Exports `name` as qdq-int8 (previewed in tract) into `dir`.
fn export(
    name: &str,
    recipe: &Recipe,
    data: &Dataset,
    dir: &std::path::Path,
) -> (std::path::PathBuf, OptimizeReport) {
    let model = open(&sample_model(name));
    let calibration = load_calibration(sample_model(name).parent().unwrap()).unwrap();
    let out = dir.join(format!("{name}.onnx"));
    let options = OptimizeOptions {
        recipe,
        format: ExportFormat::QdqInt8,
        data,
        calibration: calibration.as_ref(),
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (out, report)
}

/// The int8 weight codes and int32 biases read by each integer layer of a written file.
fn stored_integers(path: &std::path::Path) -> (Vec<(String, i32)>, Vec<String>) {
    let model = open(path);
    let mut weight_peaks = Vec::new();
    let mut int32_biases = Vec::new();
    for w in &model.weights {
        if w.name.ends_with("weight_quantized") {
            let peak = w
                .values
                .as_ref()
                .unwrap()
                .iter()
                .map(|v| v.abs() as i32)
                .max()
                .unwrap();
            weight_peaks.push((w.name.clone(), peak));
        }
        if w.dtype == edgefit_engine::model::dtype::DType::INT32 && w.name.contains("bias") {
            int32_biases.push(w.name.clone());
        }
    }
    (weight_peaks, int32_biases)
}

#[test]
fn the_default_target_keeps_integer_layer_weights_within_7_bits_and_vnni_unlocks_8() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_data("mnist-cnn").first(50);
    let (portable, report) = export(
        "mnist-cnn",
        &qdq_recipe(Target::Portable, WeightRange::Auto),
        &data,
        dir.path(),
    );
    let kernels = report.integer_kernels.as_ref().unwrap();
    assert_eq!((kernels.target, kernels.weight_bits), (Target::Portable, 7));
    assert!(kernels.exact_on.contains("every CPU"), "{kernels:?}");
    let (peaks, biases) = stored_integers(&portable);
    assert_eq!(peaks.len(), 11, "{peaks:?}");
    for (name, peak) in &peaks {
        // 7-bit symmetric codes: |code| ≤ 63, so a u8·s8 pair sum stays within int16.
        assert!(*peak <= 63, "{name}: {peak}");
    }
    // Every Conv/Gemm bias stored as int32 at input scale × weight scale.
    assert_eq!(biases.len(), 11, "{biases:?}");
    let md = std::fs::read_to_string(dir.path().join("mnist-cnn.report.md")).unwrap();
    assert!(md.contains("target `portable`, 7-bit weight codes"), "{md}");

    let sub = dir.path().join("vnni");
    std::fs::create_dir(&sub).unwrap();
    let (full, report) = export(
        "mnist-cnn",
        &qdq_recipe(Target::X86_64Vnni, WeightRange::Auto),
        &data,
        &sub,
    );
    assert_eq!(report.integer_kernels.as_ref().unwrap().weight_bits, 8);
    let (peaks, _) = stored_integers(&full);
    assert!(peaks.iter().all(|(_, p)| *p == 127), "{peaks:?}");

    // Reduced on a VNNI target is allowed; full on a target that saturates is refused.
    let (_, report) = export(
        "digits-mlp",
        &qdq_recipe(Target::Arm64, WeightRange::Reduced),
        &sample_data("digits-mlp").first(20),
        &sub,
    );
    assert_eq!(report.integer_kernels.as_ref().unwrap().weight_bits, 7);
    for target in [Target::Portable, Target::X86_64] {
        let model = open(&sample_model("digits-mlp"));
        let data = sample_data("digits-mlp").first(10);
        let recipe = qdq_recipe(target, WeightRange::Full);
        let options = OptimizeOptions {
            recipe: &recipe,
            format: ExportFormat::QdqInt8,
            data: &data,
            calibration: None,
            latency_runs: 0,
            runtime: RuntimeKind::Tract,
            input_shapes: &[],
            output: None,
        };
        let out = sub.join("refused.onnx");
        let e = optimize(&model, &options, &out, &NoProgress, &CancelToken::new())
            .expect_err("full range on a saturating target");
        assert!(e.to_string().contains("saturate"), "{e}");
        assert!(!out.exists());
    }
}

#[test]
fn weight_only_int8_keeps_the_full_range_whatever_the_target() {
    // weights-int8 is dequantized to float by every runtime: no integer kernel, no limit.
    let model = open(&sample_model("digits-mlp"));
    let data = sample_data("digits-mlp").first(20);
    let recipe = qdq_recipe(Target::Portable, WeightRange::Auto);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.onnx");
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
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
    assert!(report.integer_kernels.is_none());
    let (peaks, biases) = stored_integers(&out);
    assert!(
        !peaks.is_empty() && peaks.iter().all(|(_, p)| *p == 127),
        "{peaks:?}"
    );
    assert!(biases.is_empty(), "{biases:?}");
}

#[test]
fn a_conv_followed_by_relu_is_quantized_once_after_the_relu() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_data("mnist-cnn").first(20);
    let (out, report) = export(
        "mnist-cnn",
        &qdq_recipe(Target::Portable, WeightRange::Auto),
        &data,
        dir.path(),
    );
    let model = open(&out);
    let graph = &model.graph;
    for relu in graph.main_nodes().filter(|n| n.op_type == "Relu") {
        let producer = &graph.nodes[graph.producer[&relu.inputs[0]]];
        assert_ne!(
            producer.op_type, "DequantizeLinear",
            "`{}` reads a dequantized tensor: the Conv before it is rounded twice",
            relu.name
        );
    }
    assert!(
        report
            .quantized_activations
            .iter()
            .any(|t| t == "stem.relu"),
        "{:?}",
        report.quantized_activations
    );
    assert!(
        !report.quantized_activations.iter().any(|t| t == "stem.bn"),
        "{:?}",
        report.quantized_activations
    );
}

#[test]
fn onnxruntimes_integer_kernels_compute_what_tract_previewed() {
    if !onnxruntime() {
        return;
    }
    for name in SAMPLE_MODELS {
        let dir = tempfile::tempdir().unwrap();
        let data = sample_data(name).first(300);
        let (out, report) = export(
            name,
            &qdq_recipe(Target::Portable, WeightRange::Auto),
            &data,
            dir.path(),
        );
        let reloaded = open(&out);
        let shape = report.input_shape.clone();
        let run = |runtime| {
            let model = RunnableModel::build(runtime, &reloaded.proto, None, &shape, &[])
                .unwrap_or_else(|e| panic!("{runtime}: {e}"));
            run_dataset(&model, &data, &NoProgress, &CancelToken::new()).unwrap()
        };
        let tract = run(RuntimeKind::Tract);
        // onnxruntime with all graph optimizations: QDQ fused into integer kernels.
        let ort = run(RuntimeKind::OnnxRuntime);
        let f = fidelity(&tract, &ort);
        // Observed 0.08 / 66 dB; before biases were quantized and Conv+Relu rounded once,
        // 0.48 / 38.6 dB (a few activations one step apart, amplified layer by layer).
        assert!(
            f.max_abs_err <= 0.2 && f.sqnr_db.is_some_and(|s| s >= 55.0),
            "{name}: tract vs onnxruntime {f:?}"
        );
        assert_eq!(f.agreement, 1.0, "{name}: {f:?}");
    }
}
