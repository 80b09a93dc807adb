//! The model diff on real models and real exports: a model against itself, against its
//! qdq-int8 export (Q/DQ added, batch norms folded, weight SQNRs as the optimize report gives
//! them), a structured-pruning export, nameless nodes, unrelated models, bad files, and a
//! 10k-node graph.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use edgefit_engine::analyse::diff::{
    Comparison, DIFF_SCHEMA, MatchedBy, NodeChange, NodeStatus, diff_files, diff_models,
    diff_protos,
};
use edgefit_engine::compress::plan::{Precision, PruneMethod, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::measure::dataset::{load_calibration, load_dataset};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::pipeline::{OptimizeOptions, OptimizeReport, optimize};
use edgefit_engine::{CancelToken, Error, LoadedModel, NoProgress, load_model};
use edgefit_tests::{fixture, sample_model};

fn load(path: &Path) -> LoadedModel {
    load_model(path, &NoProgress, &CancelToken::new()).unwrap()
}

/// Runs the optimize pipeline on a sample model and returns its report and the export.
fn export(
    name: &str,
    recipe: &Recipe,
    format: ExportFormat,
    dir: &Path,
) -> (OptimizeReport, LoadedModel) {
    let path = sample_model(name);
    let model = load(&path);
    let data = load_dataset(path.parent().unwrap(), None)
        .unwrap()
        .first(20);
    let calibration = load_calibration(path.parent().unwrap()).unwrap();
    let out = dir.join(format!("{name}.onnx"));
    let options = OptimizeOptions {
        recipe,
        format,
        data: &data,
        calibration: calibration.as_ref(),
        latency_runs: 0,
        runtime: RuntimeKind::Tract,
        input_shapes: &[],
        output: None,
    };
    let report = optimize(&model, &options, &out, &NoProgress, &CancelToken::new()).unwrap();
    (report, load(&out))
}

fn int8() -> Recipe {
    let mut r = Recipe::default();
    r.defaults.precision = Precision::Int { bits: 8 };
    r
}

fn node_ops(list: &[NodeChange]) -> Vec<String> {
    list.iter().map(|n| n.op_type.clone()).collect()
}

#[test]
fn a_model_against_itself_has_no_differences() {
    for path in [
        sample_model("mnist-cnn"),
        sample_model("digits-mlp"),
        fixture("fp16_weights.onnx"),
        fixture("quantized.onnx"),
        fixture("constant_weights.onnx"),
        fixture("subgraph_weights.onnx"),
        fixture("nan_weights.onnx"),
        fixture("lstm.onnx"),
    ] {
        let model = load(&path);
        let diff = diff_models(&model, &model).unwrap();
        let s = &diff.summary;
        assert!(diff.is_empty(), "{}: {s:?}", path.display());
        assert_eq!(s.nodes_unchanged, model.graph.nodes.len());
        assert_eq!(
            s.matched_by_name + s.matched_by_structure,
            s.nodes_unchanged
        );
        assert!(
            diff.status_a.iter().all(|&st| st == NodeStatus::Unchanged),
            "{}",
            path.display()
        );
        for w in &diff.weights {
            assert!(
                matches!(w.comparison, Comparison::Identical | Comparison::NotDecoded),
                "{}: {w:?}",
                path.display()
            );
            assert_eq!(w.sqnr_db, None);
        }
        assert!(s.weights_unchanged > 0 || diff.weights.is_empty());
        assert_eq!(diff.schema, DIFF_SCHEMA);
    }
}

#[test]
fn qdq_export_adds_quantize_nodes_folds_batchnorm_and_matches_the_report_sqnr() {
    let dir = tempfile::tempdir().unwrap();
    let original = load(&sample_model("mnist-cnn"));
    let (report, exported) = export("mnist-cnn", &int8(), ExportFormat::QdqInt8, dir.path());
    let diff = diff_models(&original, &exported).unwrap();

    let added = node_ops(&diff.added);
    assert!(added.iter().any(|op| op == "QuantizeLinear"), "{added:?}");
    assert!(added.iter().any(|op| op == "DequantizeLinear"), "{added:?}");
    // Every batch norm was folded into the convolution before it, and the diff says so.
    let removed: Vec<_> = diff
        .removed
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .collect();
    assert_eq!(removed.len(), 10, "{:?}", diff.removed);
    assert!(removed.iter().all(|n| n.reason.starts_with("folded into")));
    // Every Conv and Gemm is still matched, by name, to the same op.
    for (i, node) in original.graph.nodes.iter().enumerate() {
        if node.op_type == "Conv" || node.op_type == "Gemm" {
            let j = diff
                .counterpart_in_b(i)
                .unwrap_or_else(|| panic!("{}", node.name));
            assert_eq!(exported.graph.nodes[j].op_type, node.op_type);
            assert_ne!(diff.node_status_a(i), Some(NodeStatus::Removed));
            assert!(
                diff.matches
                    .iter()
                    .any(|m| m.a_node == i && m.matched_by == MatchedBy::Name)
            );
        }
    }
    // Nodes of B are coloured too: the inserted ones are Added.
    for n in &diff.added {
        assert_eq!(
            diff.node_status_b(n.b_node.unwrap()),
            Some(NodeStatus::Added)
        );
    }
    // Each quantized weight: int8 codes, the optimize report's SQNR within 0.01 dB.
    assert!(!report.layers.is_empty());
    for layer in &report.layers {
        let w = diff
            .weights
            .iter()
            .find(|w| w.a.as_ref().is_some_and(|a| a.name == layer.weight))
            .unwrap_or_else(|| panic!("weight {} not in the diff", layer.weight));
        let b = w.b.as_ref().unwrap();
        assert_eq!(b.bits, Some(8), "{}", layer.weight);
        assert_eq!(b.dtype.name(), "int8");
        assert!(b.levels.is_some_and(|l| l > 16 && l <= 256), "{b:?}");
        assert!(b.storage_bytes < w.a.as_ref().unwrap().storage_bytes);
        let expected = layer.sqnr_db.unwrap();
        let got = w.sqnr_db.unwrap();
        assert!(
            (got - expected).abs() < 0.01,
            "{}: diff {got} dB, report {expected} dB ({:?})",
            layer.weight,
            w.folded_batchnorm
        );
    }
    assert!(diff.weights.iter().any(|w| w.folded_batchnorm.is_some()));
    assert!(diff.a.weight_bytes > diff.b.weight_bytes);
    assert!(diff.a.file_size_bytes > diff.b.file_size_bytes);
}

#[test]
fn structured_pruning_reports_the_axis_that_shrank() {
    let dir = tempfile::tempdir().unwrap();
    let original = load(&sample_model("mnist-cnn"));
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 0.5;
    recipe.defaults.prune_method = PruneMethod::ChannelsL1;
    let (report, exported) = export("mnist-cnn", &recipe, ExportFormat::Fp32, dir.path());
    let diff = diff_models(&original, &exported).unwrap();
    let stem = report
        .structured
        .iter()
        .find(|r| r.layer == "stem.conv")
        .unwrap();
    let stem_weight = original
        .graph
        .nodes
        .iter()
        .find(|n| n.name == "stem.conv")
        .map(|n| n.inputs[1].clone())
        .unwrap();
    let w = diff
        .weights
        .iter()
        .find(|w| w.a.as_ref().is_some_and(|a| a.name == stem_weight))
        .unwrap();
    assert_eq!(w.comparison, Comparison::ShapesDiffer);
    let axis0 = w.shape_changes.iter().find(|c| c.axis == 0).unwrap();
    assert_eq!(
        (axis0.before, axis0.after),
        (
            stem.channels_before as i64,
            (stem.channels_before - stem.removed) as i64
        )
    );
    assert!(w.changed && diff.summary.weights_changed > 0);
    // The next layer lost input channels: axis 1 shrank (or axis 0 for a depthwise conv).
    assert!(
        diff.weights
            .iter()
            .filter(|w| w.shape_changes.iter().any(|c| c.after < c.before))
            .count()
            >= 2
    );
}

/// A copy of `model`'s protobuf with every node name blanked (main graph).
fn nameless(model: &LoadedModel) -> edgefit_engine::model::proto::ModelProto {
    let mut proto = model.proto.clone();
    for node in &mut proto.graph.as_mut().unwrap().node {
        node.clear_name();
    }
    proto
}

#[test]
fn nodes_without_names_are_matched_by_structure() {
    let original = load(&sample_model("mnist-cnn"));
    let blank = nameless(&original);
    let diff = diff_protos(&original.proto, &blank).unwrap();
    assert!(diff.is_empty(), "{:?}", diff.summary);
    assert_eq!(
        diff.summary.matched_by_structure,
        original.graph.nodes.len()
    );

    // Both sides nameless and one quantized: the Q/DQ nodes are still the added ones.
    let dir = tempfile::tempdir().unwrap();
    let (_, exported) = export("mnist-cnn", &int8(), ExportFormat::QdqInt8, dir.path());
    let diff = diff_protos(&blank, &nameless(&exported)).unwrap();
    assert_eq!(diff.summary.matched_by_name, 0);
    let added = node_ops(&diff.added);
    assert!(
        added.iter().all(|op| matches!(
            op.as_str(),
            "QuantizeLinear" | "DequantizeLinear" | "Constant"
        )),
        "{added:?}"
    );
    let removed = node_ops(&diff.removed);
    assert!(
        removed.iter().all(|op| op == "BatchNormalization"),
        "{removed:?}"
    );
    for (i, node) in original.graph.nodes.iter().enumerate() {
        if node.op_type == "Conv" || node.op_type == "Gemm" {
            assert!(diff.counterpart_in_b(i).is_some(), "{}", node.name);
        }
    }
    // Weights are matched through the nodes that read them (same names here, too).
    assert!(diff.summary.weights_changed > 0);
}

#[test]
fn unrelated_models_diff_without_failing() {
    let a = load(&sample_model("mnist-cnn"));
    let b = load(&sample_model("digits-mlp"));
    let diff = diff_models(&a, &b).unwrap();
    let s = &diff.summary;
    assert_eq!(s.matched_by_name, 0);
    assert!(
        s.nodes_removed > 0 && s.nodes_added + s.nodes_changed > 0,
        "{s:?}"
    );
    assert!(!diff.is_empty());
    let json = serde_json::to_value(&diff).unwrap();
    assert_eq!(json["schema"], "edgefit.diff/1");
}

#[test]
fn bad_files_give_the_loaders_errors() {
    let good = sample_model("mnist-cnn");
    let cancel = CancelToken::new();
    for (bad, expect) in [
        ("truncated.onnx", "truncated"),
        ("corrupt.onnx", "not a valid ONNX file"),
        ("not_onnx.onnx", "not a valid ONNX file"),
        ("empty.onnx", "empty"),
    ] {
        for (a, b) in [(fixture(bad), good.clone()), (good.clone(), fixture(bad))] {
            let err = diff_files(&a, &b, &NoProgress, &cancel).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(expect), "{bad}: {text}");
            assert!(
                text.contains(bad),
                "{bad}: the message names the file: {text}"
            );
        }
    }
    let missing = diff_files(Path::new("/no/such.onnx"), &good, &NoProgress, &cancel);
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[test]
fn in_memory_models_with_external_data_are_refused_clearly() {
    let dir = fixture("external_data");
    let onnx = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "onnx"))
        .unwrap();
    let model = load(&onnx);
    // From files, external data is read and compared.
    let diff = diff_models(&model, &model).unwrap();
    assert!(diff.is_empty());
    let err = diff_protos(&model.proto, &model.proto).unwrap_err();
    assert!(matches!(err, Error::ExternalData { .. }), "{err}");
}

#[test]
fn a_10k_node_graph_diffs_quickly() {
    use edgefit_engine::model::synthetic::mlp_chain;
    let a = mlp_chain(8, 3_400);
    let nodes = a.graph.as_ref().unwrap().node.len();
    assert!(nodes >= 10_000, "{nodes}");
    // B: every name blanked (all matched by structure) and one node dropped.
    let mut b = a.clone();
    let graph = b.graph.as_mut().unwrap();
    for node in &mut graph.node {
        node.clear_name();
    }
    let start = std::time::Instant::now();
    let diff = diff_protos(&a, &b).unwrap();
    let same = start.elapsed();
    assert_eq!(diff.summary.matched_by_structure, nodes);
    // Two unrelated sequences: the worst case of the sequence diff.
    let mut c = a.clone();
    for (k, node) in c.graph.as_mut().unwrap().node.iter_mut().enumerate() {
        node.clear_name();
        if k % 2 == 0 {
            node.set_op_type(format!("Custom{}", k % 7));
        }
    }
    let start = std::time::Instant::now();
    let unrelated = diff_protos(&a, &c).unwrap();
    let worst = start.elapsed();
    assert!(unrelated.summary.nodes_added > 0);
    eprintln!(
        "10k-node diff: {:.0} ms (renamed), {:.0} ms (half the ops changed)",
        same.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    // Debug builds of the tests run the engine at opt-level 2; a release build is faster.
    assert!(same.as_secs_f64() < 2.0 && worst.as_secs_f64() < 3.0);
    // From files: loading (with shape inference) is most of the time.
    let dir = tempfile::tempdir().unwrap();
    let (path_a, path_b) = (dir.path().join("a.onnx"), dir.path().join("b.onnx"));
    edgefit_engine::write_model_atomic(&a, &path_a, Path::new("/nonexistent.onnx")).unwrap();
    edgefit_engine::write_model_atomic(&b, &path_b, Path::new("/nonexistent.onnx")).unwrap();
    let start = std::time::Instant::now();
    let files = diff_files(&path_a, &path_b, &NoProgress, &CancelToken::new()).unwrap();
    eprintln!(
        "10k-node diff from files: {:.0} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(files.summary.nodes_unchanged, nodes);
}

#[test]
fn low_bit_codes_in_int8_containers_and_fp16_storage_are_read_through_their_casts() {
    let dir = tempfile::tempdir().unwrap();
    let original = load(&sample_model("digits-mlp"));
    // weights-int8 writes Cast → (Sub zero point) → Mul scale: 4-bit codes, int8 containers.
    let mut recipe = int8();
    recipe.defaults.precision = Precision::Int { bits: 4 };
    let (report, exported) = export("digits-mlp", &recipe, ExportFormat::WeightsInt8, dir.path());
    let diff = diff_models(&original, &exported).unwrap();
    for layer in &report.layers {
        let w = diff
            .weights
            .iter()
            .find(|w| w.a.as_ref().is_some_and(|a| a.name == layer.weight))
            .unwrap();
        let b = w.b.as_ref().unwrap();
        assert_eq!((b.dtype.name(), b.bits), ("int8".to_owned(), Some(8)));
        assert!(b.levels.is_some_and(|l| l <= 16), "{b:?}");
        let (got, expected) = (w.sqnr_db.unwrap(), layer.sqnr_db.unwrap());
        assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
    }
    let cast_nodes = diff.added.iter().filter(|n| n.op_type == "Cast").count();
    assert_eq!(cast_nodes, report.layers.len());

    // fp16: the stored half values are the weight.
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Float16;
    let (_, exported) = export("digits-mlp", &recipe, ExportFormat::Fp16, dir.path());
    let diff = diff_models(&original, &exported).unwrap();
    let halves: Vec<_> = diff
        .weights
        .iter()
        .filter(|w| w.b.as_ref().is_some_and(|b| b.dtype.name() == "float16"))
        .collect();
    assert!(!halves.is_empty());
    for w in halves {
        assert_eq!(w.b.as_ref().unwrap().bits, Some(16));
        assert_eq!(w.comparison, Comparison::Compared);
        assert!(w.sqnr_db.is_some_and(|db| db > 50.0), "{w:?}");
        assert_eq!(
            w.b.as_ref().unwrap().storage_bytes * 2,
            w.a.as_ref().unwrap().storage_bytes
        );
    }
}
