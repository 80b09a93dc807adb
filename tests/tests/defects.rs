//! Defects found in review, each pinned by a test that failed before its fix (issue 9 item 5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::compress::compressor::{Compressor, compress_layer};
use edgefit_engine::compress::plan::{LayerSettings, Precision, PruneMethod};
use edgefit_engine::measure::dataset::generated_inputs;
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::{AnalysisOptions, CancelToken, LoadedModel, NoProgress, analyse, load_model};
use edgefit_tests::fixture;

fn open(name: &str) -> LoadedModel {
    load_model(&fixture(name), &NoProgress, &CancelToken::new()).unwrap()
}

#[test]
fn macs_count_the_weight_as_the_layer_reads_it_through_a_transpose() {
    let model = open("opsets/matmul_transposed_weight.onnx");
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let layer = analysis.layers.iter().find(|l| l.op == "MatMul").unwrap();
    // x [1, 3] @ W^T [3, 5]: 1 × 3 × 5 multiply-accumulates (the stored [5, 3] gave 25).
    assert_eq!(layer.macs, Some(15), "{layer:?}");
}

#[test]
fn a_left_weight_matmul_is_quantized_per_output_row_and_not_channel_pruned() {
    let model = open("opsets/matmul_left_weight.onnx");
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let compressor = Compressor::new(&model, &analysis);
    let layer = &compressor.layers[0];
    assert_eq!(
        layer.channel_axis,
        Some(0),
        "W's rows are the output's rows"
    );
    assert!(!layer.structured_ok);
    let settings = LayerSettings {
        precision: Precision::Int { bits: 8 },
        ..Default::default()
    };
    let result = compress_layer(layer, compressor.original(0), settings);
    let q = result.quantized.unwrap();
    assert_eq!((q.axis, q.params.len()), (Some(0), 4));
    // One scale per row follows each row's range (rows of 0.01 … 10): every row keeps its
    // precision (a per-column scale would flatten the small rows to zero).
    let original = compressor.original(0);
    for row in 0..4 {
        let peak = (0..3)
            .map(|k| original[row * 3 + k].abs())
            .fold(0f32, f32::max);
        let err = (0..3)
            .map(|k| (original[row * 3 + k] - result.values[row * 3 + k]).abs())
            .fold(0f32, f32::max);
        assert!(
            err <= peak / 127.0 * 0.51,
            "row {row}: {err} vs peak {peak}"
        );
    }
    // Channel pruning is refused and said so, instead of pruning the reduction axis.
    let pruning = LayerSettings {
        prune_ratio: 0.5,
        prune_method: PruneMethod::ChannelsL1,
        ..Default::default()
    };
    let pruned = compress_layer(layer, compressor.original(0), pruning);
    assert_eq!(pruned.removed_channels, Vec::<usize>::new());
}

#[test]
fn per_channel_qlinearconv_scales_are_reported_along_the_output_channels() {
    let model = open("quantized.onnx");
    let analysis = analyse(
        &model,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let with_axis: Vec<(String, Option<i64>)> = analysis
        .tensors
        .iter()
        .filter_map(|t| t.quantization.as_ref().map(|q| (t.name.clone(), q.axis)))
        .collect();
    let conv_weight = analysis
        .layers
        .iter()
        .find(|l| l.op == "QLinearConv")
        .and_then(|l| l.weight.clone())
        .unwrap();
    let axis = with_axis.iter().find(|(n, _)| *n == conv_weight).unwrap().1;
    assert_eq!(axis, Some(0), "{with_axis:?}");
}

#[test]
fn batchnorm_statistics_over_a_batch_keep_channels_apart() {
    let model = open("opsets/batchnorm_batch2.onnx");
    let data = generated_inputs(&[2, 3, 4, 4], 3, 7);
    let stats = edgefit_engine::pipeline::batchnorm_statistics_in(
        RuntimeKind::Tract,
        &model,
        |_| Ok(model.proto.clone()),
        &[2, 3, 4, 4],
        &[],
        &data,
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let (mean, var) = &stats["bn"];
    // The BN input is the model input: mean and variance of x[:, c] over samples, batch, H, W.
    for c in 0..3 {
        let mut values = Vec::new();
        for s in 0..data.len() {
            let x = data.sample(s);
            for n in 0..2 {
                values.extend_from_slice(&x[(n * 3 + c) * 16..(n * 3 + c + 1) * 16]);
            }
        }
        let m = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
        let v = values
            .iter()
            .map(|&x| (f64::from(x) - m).powi(2))
            .sum::<f64>()
            / values.len() as f64;
        assert!(
            (f64::from(mean[c]) - m).abs() < 1e-5,
            "channel {c}: {} vs {m}",
            mean[c]
        );
        assert!(
            (f64::from(var[c]) - v).abs() < 1e-4,
            "channel {c}: {} vs {v}",
            var[c]
        );
    }
}
