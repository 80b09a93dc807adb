//! Quantization with error compensation (GPTQ) on both sample models, against the other
//! ways of choosing low-bit weights: measured end to end through the optimize job (tract),
//! calibrated on each model's calibration split and evaluated on its test split.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::plan::{Clipping, Precision, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{load_calibration, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, NoProgress, load_model};
use edgefit_tests::{SAMPLE_MODELS, sample_model};

fn export(name: &str, bits: u8, clipping: Clipping, compensate: bool) -> OptimizeReport {
    let path = sample_model(name);
    let model = load_model(&path, &NoProgress, &CancelToken::new()).unwrap();
    let data = load_dataset(path.parent().unwrap(), None).unwrap();
    let calibration = load_calibration(path.parent().unwrap()).unwrap().unwrap();
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Int { bits };
    recipe.defaults.clipping = clipping;
    recipe.defaults.error_compensation = compensate;
    let dir = tempfile::tempdir().unwrap();
    let options = OptimizeOptions {
        recipe: &recipe,
        format: ExportFormat::WeightsInt8,
        data: &data,
        calibration: Some(&calibration),
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    optimize(
        &model,
        &options,
        &dir.path().join("out.onnx"),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap()
}

fn sqnr(r: &OptimizeReport) -> f64 {
    r.fidelity.unwrap().sqnr_db.unwrap()
}

#[test]
fn compensated_low_bit_weights_beat_plain_rounding_and_output_mse_clipping() {
    for name in SAMPLE_MODELS {
        for bits in [4, 3] {
            let plain = export(name, bits, Clipping::Mse, false);
            let output_mse = export(name, bits, Clipping::OutputMse, false);
            let gptq = export(name, bits, Clipping::Mse, true);
            let (p, o, g) = (sqnr(&plain), sqnr(&output_mse), sqnr(&gptq));
            eprintln!("{name} int{bits}: mse {p:.1} dB, output-mse {o:.1} dB, gptq {g:.1} dB");
            assert!(
                g > p + 3.0,
                "{name} int{bits}: gptq {g:.1} vs mse {p:.1} dB"
            );
            assert!(
                g > o,
                "{name} int{bits}: gptq {g:.1} vs output-mse {o:.1} dB"
            );
            // Every compressible layer was compensated: none fell back to plain rounding.
            for l in &gptq.layers {
                assert!(
                    !l.notes.iter().any(|n| n.contains("no error compensation")),
                    "{}: {:?}",
                    l.name,
                    l.notes
                );
            }
            assert!(gptq.verification.passed, "{}", gptq.verification.message);
        }
    }
}
