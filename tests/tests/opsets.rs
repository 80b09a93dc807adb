//! Models of old opsets export in every format as files onnx.checker and onnxruntime accept,
//! with per-channel weights kept where the opset allows them (fixtures:
//! tests/fixtures/make_opset_fixtures.py).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use edgefit_engine::compress::plan::{Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::generated_inputs;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, Error, LoadedModel, NoProgress, load_model};
use edgefit_tests::{fixture, python_with_onnx, run_python};

fn open(path: &Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

fn export(
    name: &str,
    format: ExportFormat,
    dir: &Path,
    runtime: RuntimeKind,
) -> Result<(PathBuf, OptimizeReport), Error> {
    let model = open(&fixture(&format!("opsets/{name}.onnx")));
    let sample: Vec<usize> = model.graph.inputs[0]
        .shape
        .as_ref()
        .unwrap()
        .iter()
        .skip(1)
        .map(|d| d.known().unwrap() as usize)
        .collect();
    let data = generated_inputs(&sample, 32, 5);
    let mut recipe = Recipe::default();
    recipe.defaults.precision = match format {
        ExportFormat::Fp32 => Precision::Float32,
        ExportFormat::Fp16 => Precision::Float16,
        _ => Precision::Int { bits: 8 },
    };
    let out = dir.join(format!("{name}.{}.onnx", format.name()));
    let options = OptimizeOptions {
        recipe: &recipe,
        format,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime,
        input_shapes: &[],
        output: None,
    };
    optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).map(|r| (out, r))
}

fn opset_of(path: &Path) -> i64 {
    edgefit_engine::model::opset::default_opset(&open(path).proto)
}

#[test]
fn opset_9_and_11_models_export_valid_files_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    for name in ["opset9_mlp", "opset11_cnn"] {
        for format in ExportFormat::ALL {
            let (out, report) = export(name, format, dir.path(), RuntimeKind::Tract)
                .unwrap_or_else(|e| panic!("{name} {format:?}: {e}"));
            let v = &report.verification;
            assert!(v.passed, "{name} {format:?}: {}", v.message);
            assert!(v.schema.passed, "{name} {format:?}: {:?}", v.schema);
            written.push(out);
        }
    }
    // Per-channel kept: QDQ moved the opset-11 CNN to 13 for per-axis DequantizeLinear; the
    // weight-only form scales per channel with a Mul and keeps opset 11.
    let qdq = dir.path().join("opset11_cnn.qdq-int8.onnx");
    assert_eq!(opset_of(&qdq), 13);
    let model = open(&qdq);
    let per_axis = model
        .graph
        .main_nodes()
        .filter(|n| {
            n.op_type == "DequantizeLinear"
                && n.outputs[0].ends_with("_w")
                && n.attributes.iter().any(|a| a.name == "axis")
        })
        .count();
    assert_eq!(per_axis, 3, "conv1, conv2 and fc weights per channel");
    let weights = dir.path().join("opset11_cnn.weights-int8.onnx");
    assert_eq!(opset_of(&weights), 11);
    let w = open(&weights);
    let scale = w.weight("c2_w_scale").expect("per-channel scales");
    assert_eq!(scale.dims, vec![16, 1, 1, 1]);
    assert_eq!(opset_of(&dir.path().join("opset9_mlp.qdq-int8.onnx")), 13);
    assert_eq!(opset_of(&dir.path().join("opset9_mlp.fp32.onnx")), 9);

    if let Some(python) = python_with_onnx() {
        let paths: Vec<&Path> = written.iter().map(PathBuf::as_path).collect();
        let out = run_python(&python, "check_valid.py", &paths);
        assert_eq!(
            out.lines().filter(|l| l.starts_with("ok ")).count(),
            written.len(),
            "{out}"
        );
    }
}

#[test]
fn a_model_that_cannot_reach_opset_10_gets_a_choice_not_an_invalid_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = export(
        "opset9_upsample",
        ExportFormat::QdqInt8,
        dir.path(),
        RuntimeKind::Tract,
    )
    .expect_err("Upsample blocks opset 10");
    let message = e.to_string();
    assert!(
        message.contains("opset 10")
            && message.contains("Upsample")
            && message.contains("fp16 or fp32"),
        "{message}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // The weight-only form needs no QuantizeLinear: it stays at opset 9 (in onnxruntime,
    // since tract has no Upsample).
    if edgefit_tests::onnxruntime() {
        let (out, report) = export(
            "opset9_upsample",
            ExportFormat::WeightsInt8,
            dir.path(),
            RuntimeKind::OnnxRuntime,
        )
        .unwrap();
        assert!(
            report.verification.passed,
            "{}",
            report.verification.message
        );
        assert_eq!(opset_of(&out), 9);
    }
}
