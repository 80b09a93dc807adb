//! Loading real models and edge-case fixtures, checked against independent counts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit_engine::model::load::WeightOrigin;
use edgefit_engine::{
    AnalysisOptions, CancelToken, Error, LoadedModel, ModelAnalysis, NoProgress, analyse,
    load_model,
};
use edgefit_tests::{SAMPLE_MODELS, fixture, python_with_onnx, run_python, sample_model};
use std::path::Path;

fn open(path: &Path) -> (LoadedModel, ModelAnalysis) {
    let loaded = load_model(path, &NoProgress, &CancelToken::new())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()));
    let analysis = analyse(
        &loaded,
        &AnalysisOptions::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap_or_else(|e| panic!("analysing {}: {e}", path.display()));
    (loaded, analysis)
}

fn load_error(path: &Path) -> Error {
    match load_model(path, &NoProgress, &CancelToken::new()) {
        Ok(_) => panic!("{} loaded but should fail", path.display()),
        Err(e) => e,
    }
}

#[test]
fn constant_node_weights_are_found_like_paddle_exports() {
    let (loaded, a) = open(&fixture("constant_weights.onnx"));
    assert!(loaded.proto.graph.initializer.is_empty());
    assert!(
        loaded
            .weights
            .iter()
            .all(|w| w.origin == WeightOrigin::ConstantNode)
    );
    // Hand count (tests/fixtures/README.md): 108 + 4 + 1024 + 4 + 1 (value_float) + 2 (value_ints).
    assert_eq!(a.parameters, 1143);
    let conv = a
        .layers
        .iter()
        .find(|l| l.op == "Conv")
        .expect("conv layer");
    assert_eq!(conv.parameters, 112);
    assert_eq!(conv.macs, Some(6912));
    let matmul = a
        .layers
        .iter()
        .find(|l| l.op == "MatMul")
        .expect("matmul layer");
    assert_eq!(matmul.macs, Some(1024));
}

#[test]
fn subgraph_weights_are_counted() {
    let (loaded, a) = open(&fixture("subgraph_weights.onnx"));
    assert_eq!(a.parameters, 95);
    let in_subgraphs = loaded
        .weights
        .iter()
        .filter(|w| !w.graph.is_empty())
        .count();
    assert!(
        in_subgraphs >= 3,
        "weights inside If/Loop bodies: {in_subgraphs}"
    );
    let sub_layers: Vec<_> = a.layers.iter().filter(|l| !l.graph.is_empty()).collect();
    assert_eq!(
        sub_layers.len(),
        3,
        "then/else/body MatMuls: {sub_layers:?}"
    );
    assert!(
        a.warnings.iter().any(|w| w.contains("Loop")),
        "{:?}",
        a.warnings
    );
}

#[test]
fn external_data_is_read_from_beside_the_model() {
    let (loaded, a) = open(&fixture("external_data/model.onnx"));
    assert!(loaded.has_external_data());
    assert_eq!(a.parameters, 762);
    assert!(a.tensors.iter().all(|t| t.external && t.stats.is_some()));
    // The weights decoded from weights.bin are real values, not zeros.
    assert!(
        a.tensors
            .iter()
            .any(|t| t.stats.as_ref().unwrap().std > 0.0)
    );
}

#[test]
fn missing_external_data_names_the_file() {
    let e = load_error(&fixture("external_missing/model.onnx"));
    assert!(matches!(e, Error::ExternalData { .. }), "{e}");
    let message = e.to_string();
    assert!(
        message.contains("missing") && message.contains("weights.bin"),
        "{message}"
    );
}

#[test]
fn external_data_outside_the_folder_is_refused() {
    let e = load_error(&fixture("external_escape/model.onnx"));
    let message = e.to_string();
    assert!(
        message.contains("outside the model's folder") && message.contains("../escape.bin"),
        "{message}"
    );
}

#[test]
fn bad_files_give_clear_errors() {
    let cases = [
        ("empty.onnx", "empty"),
        ("truncated.onnx", "truncated"),
        ("not_onnx.onnx", "not a valid ONNX file"),
        ("corrupt.onnx", "corrupt"),
    ];
    for (name, expected) in cases {
        let message = load_error(&fixture(name)).to_string();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains(name),
            "{name}: the message names the file: {message}"
        );
    }
    let missing = load_error(&fixture("no_such_model.onnx")).to_string();
    assert!(missing.contains("no_such_model.onnx"), "{missing}");
}

#[test]
fn unknown_ops_nan_weights_and_overflowing_dims_are_warnings() {
    let (_, a) = open(&fixture("unknown_op.onnx"));
    assert!(
        a.warnings
            .iter()
            .any(|w| w.contains("FrobnicateXYZ") && w.contains("com.example")),
        "{:?}",
        a.warnings
    );

    let (_, a) = open(&fixture("nan_weights.onnx"));
    let w = a
        .tensors
        .iter()
        .find(|t| t.name == "w")
        .unwrap()
        .stats
        .clone()
        .unwrap();
    assert_eq!((w.nan_count, w.inf_count), (1, 2));
    assert!(w.min.is_finite() && w.max.is_finite());
    assert!(
        a.warnings.iter().any(|m| m.contains("NaN")),
        "{:?}",
        a.warnings
    );

    let (_, a) = open(&fixture("big_dims.onnx"));
    assert!(
        a.warnings.iter().any(|m| m.contains("overflows")),
        "{:?}",
        a.warnings
    );
    let matmul = &a.layers[0];
    assert_eq!(matmul.macs, None);
}

#[test]
fn paddle_export_with_dynamic_minus_one_dims_loads() {
    let (_, a) = open(&fixture("real/ch_ppocr_mobile_v2.0_cls_infer.onnx"));
    assert_eq!(a.parameters, 133_777);
    let shape = edgefit_engine::model::graph::format_shape(a.inputs[0].shape.as_deref());
    assert_eq!(shape, "[?, 3, ?, ?]");
    assert!(
        !a.warnings.iter().any(|w| w.contains("overflows")),
        "{:?}",
        a.warnings
    );
    assert!(a.layers.iter().filter(|l| l.op == "Conv").count() == 53);
}

#[test]
fn symbolic_dims_are_shown_by_name() {
    let (_, a) = open(&fixture("symbolic_dims.onnx"));
    let shape = edgefit_engine::model::graph::format_shape(a.inputs[0].shape.as_deref());
    assert_eq!(shape, "[batch, 3, height, width]");
    let conv = &a.layers[0];
    assert_eq!(conv.macs, None, "MACs are not guessed for symbolic dims");
    assert!(
        conv.macs_note.as_deref().unwrap_or("").contains("batch"),
        "{:?}",
        conv.macs_note
    );
    assert!(!a.macs_complete);
}

#[test]
fn every_weight_dtype_decodes() {
    for (name, dtype) in [
        ("fp16_weights.onnx", "float16"),
        ("bf16_weights.onnx", "bfloat16"),
        ("double_weights.onnx", "float64"),
        ("int_weights.onnx", "int64"),
        ("int_weights.onnx", "int8"),
        ("quantized.onnx", "int8"),
    ] {
        let (_, a) = open(&fixture(name));
        let t = a
            .tensors
            .iter()
            .find(|t| t.dtype.name() == dtype)
            .unwrap_or_else(|| panic!("{name} has a {dtype} tensor"));
        let stats = t
            .stats
            .as_ref()
            .unwrap_or_else(|| panic!("{name}: {dtype} decoded"));
        assert_eq!(stats.count, t.elements);
        assert!(
            stats.max > stats.min || t.elements == 1,
            "{name}: {stats:?}"
        );
    }
}

#[test]
fn quantized_weights_note_scale_and_zero_point() {
    let (_, a) = open(&fixture("quantized.onnx"));
    let qconv = a
        .layers
        .iter()
        .find(|l| l.op == "QLinearConv")
        .expect("QLinearConv layer");
    let q = qconv.quantization.as_ref().expect("quantization info");
    assert!(!q.scales.is_empty());
    let dq = a
        .tensors
        .iter()
        .filter_map(|t| t.quantization.as_ref())
        .find(|q| q.axis == Some(0))
        .expect("per-channel DequantizeLinear weight");
    assert!(dq.scales.len() > 1);
}

#[test]
fn cancelled_analysis_stops() {
    let loaded = load_model(&sample_model("mnist-cnn"), &NoProgress, &CancelToken::new()).unwrap();
    let cancel = CancelToken::new();
    cancel.cancel();
    let result = analyse(&loaded, &AnalysisOptions::default(), &NoProgress, &cancel);
    assert!(matches!(result, Err(Error::Cancelled)));
    assert!(matches!(
        load_model(&sample_model("mnist-cnn"), &NoProgress, &cancel),
        Err(Error::Cancelled)
    ));
}

#[test]
fn histograms_have_the_requested_bins_and_count_every_value() {
    let loaded = load_model(&sample_model("mnist-cnn"), &NoProgress, &CancelToken::new()).unwrap();
    let a = analyse(
        &loaded,
        &AnalysisOptions { histogram_bins: 17 },
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    for t in &a.tensors {
        let h = t.histogram.as_ref().unwrap();
        assert_eq!(h.counts.len(), 17);
        assert_eq!(h.counts.iter().sum::<u64>(), t.elements, "{}", t.name);
    }
}

/// Every model the Python reference can read, with what it counts.
fn cross_check_models() -> Vec<std::path::PathBuf> {
    let mut models: Vec<_> = SAMPLE_MODELS.iter().map(|m| sample_model(m)).collect();
    for name in [
        "constant_weights.onnx",
        "subgraph_weights.onnx",
        "external_data/model.onnx",
        "metadata.onnx",
        "fp16_weights.onnx",
        "bf16_weights.onnx",
        "double_weights.onnx",
        "int_weights.onnx",
        "quantized.onnx",
        "nan_weights.onnx",
        "unknown_op.onnx",
        "symbolic_dims.onnx",
        "big_dims.onnx",
        "lstm.onnx",
        "gru.onnx",
        "real/ch_ppocr_mobile_v2.0_cls_infer.onnx",
    ] {
        models.push(fixture(name));
    }
    models
}

#[test]
fn counts_match_pythons_onnx_package() {
    let Some(python) = python_with_onnx() else {
        return;
    };
    for path in cross_check_models() {
        let expected: serde_json::Value =
            serde_json::from_str(&run_python(&python, "onnx_counts.py", &[&path])).unwrap();
        let (_, a) = open(&path);
        let got = serde_json::to_value(&a).unwrap();
        let what = path.display();
        assert_eq!(
            got["parameters"], expected["parameters"],
            "{what}: parameters"
        );
        assert_eq!(
            got["weight_bytes"], expected["weight_bytes"],
            "{what}: weight_bytes"
        );
        assert_eq!(got["nodes"], expected["nodes"], "{what}: nodes");
        assert_eq!(got["ops"], expected["ops"], "{what}: ops");
        for key in ["inputs", "outputs"] {
            // A dimension stored as -1 (Paddle2ONNX) or named "?" means unknown.
            let unknown = |d: &serde_json::Value| {
                d.as_i64().is_some_and(|v| v < 0) || d.as_str() == Some("?")
            };
            let strip = |v: &serde_json::Value| -> Vec<(serde_json::Value, serde_json::Value)> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        let shape = match x["shape"].as_array() {
                            Some(dims) => dims
                                .iter()
                                .map(|d| {
                                    if unknown(d) {
                                        serde_json::Value::Null
                                    } else {
                                        d.clone()
                                    }
                                })
                                .collect(),
                            None => x["shape"].clone(),
                        };
                        (x["name"].clone(), shape)
                    })
                    .collect()
            };
            assert_eq!(
                strip(&got[key]),
                strip(&expected[key]),
                "{what}: {key} shapes"
            );
        }
        // MACs of the main-graph Conv/Gemm/MatMul layers the reference can count.
        let by_node = expected["macs_by_node"].as_object().unwrap();
        for layer in a.layers.iter().filter(|l| l.graph.is_empty()) {
            if let Some(reference) = by_node.get(&layer.name) {
                assert_eq!(
                    layer.macs,
                    reference.as_u64(),
                    "{what}: MACs of {}",
                    layer.name
                );
            }
        }
    }
}

#[test]
fn unmodified_write_back_is_lossless() {
    let Some(python) = python_with_onnx() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut models = cross_check_models();
    models.retain(|p| !p.ends_with("big_dims.onnx"));
    for (i, path) in models.iter().enumerate() {
        let (loaded, _) = open(path);
        let out = dir.path().join(format!("written_{i}.onnx"));
        let proto = loaded.self_contained_proto().unwrap();
        edgefit_engine::write_model_atomic(&proto, &out, &loaded.path).unwrap();
        run_python(&python, "check_roundtrip.py", &[path, &out]);
    }
}

#[test]
fn writing_over_the_opened_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model.onnx");
    std::fs::copy(sample_model("digits-mlp"), &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let (loaded, _) = open(&copy);
    let e = edgefit_engine::write_model_atomic(&loaded.proto, &copy, &loaded.path).unwrap_err();
    assert!(matches!(e, Error::WouldOverwriteSource { .. }), "{e}");
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // No temporary file is left behind either.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
