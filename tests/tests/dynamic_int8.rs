//! dynamic-int8 exports: MatMul/Gemm layers as `DynamicQuantizeLinear` → `MatMulInteger`
//! (onnxruntime's `quantize_dynamic` layout), no calibration data, verified in tract and
//! onnxruntime against the preview, weight codes within the target's integer-kernel range.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::plan::{Precision, Recipe, Target};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{Dataset, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, LoadedModel, NoProgress, load_model};
use edgefit_tests::{SAMPLE_MODELS, onnxruntime, sample_model};

fn open(path: &std::path::Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

fn sample_data(name: &str) -> Dataset {
    load_dataset(sample_model(name).parent().unwrap(), None).unwrap()
}

fn int8_recipe(target: Target) -> Recipe {
    let mut r = Recipe::default();
    r.defaults.precision = Precision::Int { bits: 8 };
    r.target = target;
    r
}

/// Exports `name` as dynamic-int8, previewed in `runtime`, into `dir` (no calibration data).
fn export(
    name: &str,
    recipe: &Recipe,
    runtime: RuntimeKind,
    data: &Dataset,
    dir: &std::path::Path,
) -> (std::path::PathBuf, OptimizeReport) {
    let model = open(&sample_model(name));
    let out = dir.join(format!("{name}-{runtime}.onnx"));
    let options = OptimizeOptions {
        recipe,
        format: ExportFormat::DynamicInt8,
        data,
        calibration: None,
        latency_runs: 0,
        runtime,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("{name} in {runtime}: {e}"));
    (out, report)
}

/// Op counts of a written file's main graph.
fn ops(model: &LoadedModel) -> std::collections::HashMap<String, usize> {
    let mut counts = std::collections::HashMap::new();
    for n in model.graph.main_nodes() {
        *counts.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    counts
}

/// The largest |code| of the int8 weights `MatMulInteger` reads.
fn matmul_integer_code_peak(model: &LoadedModel) -> i32 {
    model
        .graph
        .main_nodes()
        .filter(|n| n.op_type == "MatMulInteger")
        .filter_map(|n| model.weight(n.inputs.get(1)?))
        .flat_map(|w| w.values.clone().unwrap_or_default())
        .map(|v| v.abs() as i32)
        .max()
        .unwrap_or(0)
}

#[test]
fn dynamic_int8_runs_matmul_and_gemm_as_integer_kernels_and_verifies_in_both_runtimes() {
    let mut runtimes = vec![RuntimeKind::Tract];
    if onnxruntime() {
        runtimes.push(RuntimeKind::OnnxRuntime);
    }
    for name in SAMPLE_MODELS {
        let data = sample_data(name);
        for &runtime in &runtimes {
            let dir = tempfile::tempdir().unwrap();
            let recipe = int8_recipe(Target::Portable);
            let (out, report) = export(name, &recipe, runtime, &data, dir.path());
            let written = open(&out);
            let counts = ops(&written);
            let count = |op: &str| counts.get(op).copied().unwrap_or(0);
            // digits-mlp is three Gemms; mnist-cnn's head is one Gemm (its Convs stay float).
            let gemms = if *name == "digits-mlp" { 3 } else { 1 };
            assert_eq!(count("MatMulInteger"), gemms, "{name}: {counts:?}");
            assert_eq!(count("DynamicQuantizeLinear"), gemms, "{name}: {counts:?}");
            assert_eq!(count("Gemm") + count("MatMul"), 0, "{name}: {counts:?}");
            assert_eq!(
                report.quantized_activations.len(),
                gemms,
                "{name}: {:?}",
                report.quantized_activations
            );
            // Smaller than the float model.
            assert!(
                report.compressed.size_bytes * 2 < report.original.size_bytes,
                "{name}: {} B written against {} B float",
                report.compressed.size_bytes,
                report.original.size_bytes
            );
            // The preview is what ships: reloaded in the preview's runtime and in the other.
            let v = &report.verification;
            assert!(v.passed, "{name} in {runtime}: {}", v.message);
            for r in &v.runtimes {
                let must_run = r.runtime == "tract" || runtimes.contains(&RuntimeKind::OnnxRuntime);
                assert!(!must_run || (r.ran && r.passed), "{name}: {}", r.message);
            }
            assert!(v.runtimes.iter().filter(|r| r.ran).count() == runtimes.len());
            // Accuracy within 0.5 points of float on the bundled test split.
            let top1 = |m: &edgefit_engine::pipeline::Measured| m.accuracy.as_ref().unwrap().top1;
            let drop = top1(&report.original) - top1(&report.compressed);
            assert!(drop <= 0.005, "{name} in {runtime}: top-1 down {drop}");
            // Portable target: 7-bit codes, as onnxruntime's u8×s8 kernels need without VNNI.
            let peak = matmul_integer_code_peak(&written);
            assert!((32..=64).contains(&peak), "{name}: |code| up to {peak}");
            assert_eq!(
                report.integer_kernels.as_ref().map(|k| k.weight_bits),
                Some(7)
            );
        }
    }
}

#[test]
fn dynamic_int8_uses_full_range_codes_where_the_target_computes_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample_data("digits-mlp").first(200);
    let recipe = int8_recipe(Target::X86_64Vnni);
    let (out, report) = export("digits-mlp", &recipe, RuntimeKind::Tract, &data, dir.path());
    let peak = matmul_integer_code_peak(&open(&out));
    assert!(peak > 64, "|code| up to {peak}");
    assert_eq!(
        report.integer_kernels.as_ref().map(|k| k.weight_bits),
        Some(8)
    );
}

#[test]
fn dynamic_int8_needs_no_calibration_and_keeps_float_layers_float() {
    let format = ExportFormat::DynamicInt8;
    assert!(format.is_weight_only());
    assert!(format.has_integer_kernels());
    assert_eq!(ExportFormat::parse("dynamic-int8"), Some(format));
    // mnist-cnn's Convs compute in float: their codes are cast back, as in weights-int8.
    let dir = tempfile::tempdir().unwrap();
    let data = sample_data("mnist-cnn").first(100);
    let (out, report) = export(
        "mnist-cnn",
        &int8_recipe(Target::Portable),
        RuntimeKind::Tract,
        &data,
        dir.path(),
    );
    let counts = ops(&open(&out));
    assert_eq!(counts.get("Conv").copied(), Some(10), "{counts:?}");
    assert_eq!(counts.get("ConvInteger"), None, "{counts:?}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("10 integer-planned layers compute in float")),
        "{:?}",
        report.notes
    );
}
