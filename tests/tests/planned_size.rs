//! One plan, one file: the size the studio shows for a plan in a format is the size of the
//! file the export writes — built the same way and measured without writing — and what the
//! format does not realise (int4 in int8 containers, integer plans in an fp32 file) is said.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::compressor::Compressor;
use edgefit_engine::compress::plan::{Precision, PruneMethod, Recipe};
use edgefit_engine::export::build::{ExportFormat, planned_file};
use edgefit_engine::measure::dataset::load_dataset;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, optimize};
use edgefit_engine::{AnalysisOptions, CancelToken, NoProgress, analyse, load_model};
use edgefit_tests::{SAMPLE_MODELS, sample_model};

fn recipe(prune: f32, method: PruneMethod, precision: Precision) -> Recipe {
    let mut r = Recipe::default();
    r.defaults.prune_ratio = prune;
    r.defaults.prune_method = method;
    r.defaults.precision = precision;
    r
}

/// (planned, written) bytes of `recipe` in `format` on sample `name`, and the plan's notes.
fn planned_and_written(
    name: &str,
    recipe: &Recipe,
    format: ExportFormat,
) -> (u64, u64, bool, Vec<String>) {
    let path = sample_model(name);
    let cancel = CancelToken::new();
    let model = load_model(&path, &NoProgress, &cancel).unwrap();
    let analysis = analyse(&model, &AnalysisOptions::default(), &NoProgress, &cancel).unwrap();
    let mut compressor = Compressor::new(&model, &analysis);
    let compression = compressor.apply(recipe, &cancel).unwrap();
    let planned = planned_file(&model, &compressor, &compression, format).unwrap();
    let data = load_dataset(path.parent().unwrap(), None)
        .unwrap()
        .first(50);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let options = OptimizeOptions {
        recipe,
        format,
        data: &data,
        calibration: None,
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &cancel).unwrap();
    let written = std::fs::metadata(&out).unwrap().len();
    assert_eq!(report.compressed.size_bytes, written);
    // Reproducible: the report says what measured it and on which data.
    assert_eq!(report.edgefit_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        report.data_fingerprint,
        format!("{:016x}", data.fingerprint())
    );
    let markdown = std::fs::read_to_string(dir.path().join("out.report.md")).unwrap();
    assert!(markdown.contains(&report.data_fingerprint), "{markdown}");
    (planned.size_bytes, written, planned.exact, planned.notes)
}

#[test]
fn the_planned_size_is_the_written_file_in_every_weight_format() {
    let plans = [
        recipe(0.0, PruneMethod::Magnitude, Precision::Int { bits: 8 }),
        recipe(0.3, PruneMethod::Magnitude, Precision::Int { bits: 4 }),
        recipe(0.5, PruneMethod::Magnitude, Precision::Float16),
    ];
    for name in SAMPLE_MODELS {
        for plan in &plans {
            for format in [
                ExportFormat::Fp32,
                ExportFormat::Fp16,
                ExportFormat::WeightsInt8,
            ] {
                let (planned, written, exact, _) = planned_and_written(name, plan, format);
                let off = (planned as f64 - written as f64).abs() / written as f64;
                eprintln!(
                    "{name} {:?} {} -> planned {planned} B, written {written} B ({:.3}%)",
                    plan.defaults.precision,
                    format.name(),
                    off * 100.0
                );
                if exact {
                    assert!(
                        off <= 0.02,
                        "{name} {}: {planned} vs {written}",
                        format.name()
                    );
                }
            }
        }
    }
}

#[test]
fn what_a_format_does_not_realise_is_said() {
    let int4 = recipe(0.0, PruneMethod::Magnitude, Precision::Int { bits: 4 });
    let (fp32_planned, fp32_written, _, notes) =
        planned_and_written("mnist-cnn", &int4, ExportFormat::Fp32);
    assert!(
        notes.iter().any(|n| n.contains("does not shrink")),
        "{notes:?}"
    );
    // int4 in weights-int8: the int8 file, and a note that says so.
    let (int4_planned, _, _, notes) =
        planned_and_written("mnist-cnn", &int4, ExportFormat::WeightsInt8);
    assert!(
        notes.iter().any(|n| n.contains("int8 containers")),
        "{notes:?}"
    );
    let int8 = recipe(0.0, PruneMethod::Magnitude, Precision::Int { bits: 8 });
    let (int8_planned, _, _, _) =
        planned_and_written("mnist-cnn", &int8, ExportFormat::WeightsInt8);
    assert_eq!(int4_planned, int8_planned, "4-bit codes take a byte each");
    assert!(int4_planned * 2 < fp32_planned && fp32_planned > fp32_written * 98 / 100);
    // Channel pruning: said to be an upper bound (layers downstream shrink too).
    let channels = recipe(0.5, PruneMethod::ChannelsL1, Precision::Float32);
    let (planned, written, exact, notes) =
        planned_and_written("mnist-cnn", &channels, ExportFormat::Fp32);
    assert!(!exact && planned >= written, "{planned} vs {written}");
    assert!(
        notes.iter().any(|n| n.contains("channel pruning")),
        "{notes:?}"
    );
}
