//! Real models from PyPI wheels (tests/fixtures/real/README.md) exported out of the box —
//! no data, no shapes, no values given — in every format, as files onnx.checker and
//! onnxruntime accept, verified in both runtimes where they can run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use edgefit_engine::compress::plan::{Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::pipeline::{OptimizeOptions, choose_runtime, generated_data, optimize};
use edgefit_engine::{CancelToken, NoProgress, load_model};
use edgefit_tests::{fixture, python_with_onnx, run_python};

const MODELS: &[&str] = &[
    "real/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    "real/attacut-c.onnx",
    "real/silero_vad.onnx",
];

#[test]
fn real_models_export_out_of_the_box_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut written: Vec<PathBuf> = Vec::new();
    for name in MODELS {
        let model = load_model(&fixture(name), &NoProgress, &CancelToken::new()).unwrap();
        let (data, settings) = generated_data(&model, &[]).unwrap();
        let (runtime, _) = choose_runtime(&model, &data, &settings, None);
        for format in ExportFormat::ALL {
            let mut recipe = Recipe::default();
            recipe.defaults.precision = match format {
                ExportFormat::Fp32 => Precision::Float32,
                ExportFormat::Fp16 => Precision::Float16,
                _ => Precision::Int { bits: 8 },
            };
            let stem = Path::new(name).file_stem().unwrap().to_string_lossy();
            let out = dir.path().join(format!("{stem}.{}.onnx", format.name()));
            let options = OptimizeOptions {
                recipe: &recipe,
                format,
                data: &data,
                calibration: None,
                latency_runs: 0,
                runtime,
                input_shapes: &settings,
                output: None,
            };
            let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new())
                .unwrap_or_else(|e| panic!("{name} {format:?}: {e}"));
            let v = &report.verification;
            assert!(v.passed, "{name} {format:?}: {}", v.message);
            assert!(
                v.schema.passed,
                "{name} {format:?}: {:?}",
                v.schema.problems
            );
            eprintln!(
                "{name} {:<12} {runtime:<11} size {:.2}x, worst output {}",
                format.name(),
                report.compressed.size_bytes as f64 / report.original.size_bytes as f64,
                report
                    .quality
                    .as_ref()
                    .map_or("not measured".to_owned(), |q| q.message.clone())
            );
            written.push(out);
        }
    }
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
