#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use super::*;
use crate::measure::runtime::TractModel;
use crate::model::graph_edit::float_tensor;
use crate::model::graph_edit::test_models::{Builder, Rng, float, int, ints, load};
use crate::model::proto::NodeProto;
use crate::{CancelToken, NoProgress};

fn fold(proto: &ModelProto) -> (ModelProto, FoldReport) {
    fold_batchnorm(&load(proto.clone())).unwrap()
}

fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn ops(proto: &ModelProto) -> Vec<&str> {
    proto.graph.node.iter().map(|n| n.op_type()).collect()
}

fn node<'p>(proto: &'p ModelProto, name: &str) -> &'p NodeProto {
    proto.graph.node.iter().find(|n| n.name() == name).unwrap()
}

fn initializers(proto: &ModelProto) -> Vec<&str> {
    let mut names: Vec<&str> = proto.graph.initializer.iter().map(|t| t.name()).collect();
    names.sort_unstable();
    names
}

/// Runs both models on a few random inputs of `shape`; returns the largest difference
/// relative to `1 + |original|`, after checking that it is within 1e-4.
fn assert_same_outputs(original: &ModelProto, folded: &ModelProto, shape: &[usize]) -> f32 {
    let a = TractModel::build(original, None, shape, &[]).unwrap();
    let b = TractModel::build(folded, None, shape, &[]).unwrap();
    let n: usize = shape.iter().product();
    let mut worst = 0f32;
    for seed in 1..=4u64 {
        let input: Vec<f32> = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .values(n)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let x = a.run(&input).unwrap().remove(0);
        let y = b.run(&input).unwrap().remove(0);
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(&y) {
            assert!(p.is_finite() && q.is_finite());
            worst = worst.max((p - q).abs() / (1.0 + p.abs()));
        }
    }
    assert!(worst <= 1e-4, "outputs differ by {worst} (relative)");
    worst
}

#[test]
fn fold_conv_bn_relu() {
    let mut b = Builder::new();
    b.input("input", &[1, 3, 8, 8])
        .random("conv.w", &[6, 3, 3, 3])
        .random("conv.b", &[6])
        .op(
            "Conv",
            "conv",
            &["input", "conv.w", "conv.b"],
            vec![ints("pads", &[1, 1, 1, 1])],
        )
        .bn("bn", "conv", 6, "bn")
        .node("Relu", "relu", &["bn"], &["out"], vec![])
        .output("out", &[1, 6, 8, 8])
        .declare("conv", &[1, 6, 8, 8])
        .declare("bn", &[1, 6, 8, 8]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(report.folded, pairs(&[("bn", "conv")]));
    assert!(report.kept.is_empty());
    assert_eq!(ops(&folded), ["Conv", "Relu"]);
    let conv = node(&folded, "conv");
    // Weights rewritten in place; the conv takes over the batch norm's output.
    assert_eq!(conv.input, ["input", "conv.w", "conv.b"]);
    assert_eq!(conv.output, ["bn"]);
    assert_eq!(initializers(&folded), ["conv.b", "conv.w"]);
    let declared: Vec<&str> = folded.graph.value_info.iter().map(|v| v.name()).collect();
    assert_eq!(declared, ["bn"]);
    assert_ne!(
        folded.graph.initializer[0].raw_data(),
        original.graph.initializer[0].raw_data()
    );
    assert_same_outputs(&original, &folded, &[1, 3, 8, 8]);
    // Folding again finds nothing to do.
    let (again, report) = fold(&folded);
    assert_eq!(
        report,
        FoldReport {
            folded: vec![],
            kept: vec![]
        }
    );
    assert_eq!(again, folded);
}

#[test]
fn fold_depthwise_and_grouped_convs_with_constant_node_params() {
    let mut b = Builder::new();
    b.input("input", &[1, 4, 6, 6])
        .random("dw.weight", &[4, 1, 3, 3])
        .op(
            "Conv",
            "dw",
            &["input", "dw.weight"],
            vec![int("group", 4), ints("pads", &[1, 1, 1, 1])],
        )
        .random_constant("dw.bn.scale", &[4], true, false)
        .random_constant("dw.bn.bias", &[4], false, true)
        .random_constant("dw.bn.mean", &[4], false, false)
        .random_constant("dw.bn.var", &[4], true, true)
        .op(
            "BatchNormalization",
            "dw.bn",
            &["dw", "dw.bn.scale", "dw.bn.bias", "dw.bn.mean", "dw.bn.var"],
            vec![],
        )
        .op("Relu", "relu", &["dw.bn"], vec![])
        .random("g.w", &[6, 2, 1, 1])
        .random("g.b", &[6])
        .op("Conv", "g", &["relu", "g.w", "g.b"], vec![int("group", 2)])
        .bn("g.bn", "g", 6, "out")
        .output("out", &[1, 6, 6, 6]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(report.folded, pairs(&[("dw.bn", "dw"), ("g.bn", "g")]));
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    // The Constant nodes of the parameters went with the batch norm.
    assert_eq!(ops(&folded), ["Conv", "Relu", "Conv"]);
    assert_eq!(node(&folded, "dw").input, ["input", "dw.weight", "dw.bias"]);
    assert_eq!(node(&folded, "g").output, ["out"]);
    assert_eq!(
        initializers(&folded),
        ["dw.bias", "dw.weight", "g.b", "g.w"]
    );
    assert_same_outputs(&original, &folded, &[1, 4, 6, 6]);
}

#[test]
fn fold_conv_without_bias_adds_one() {
    let mut b = Builder::new();
    b.input("x", &[1, 3, 10])
        .random("c.w", &[5, 3, 3])
        .node("Conv", "c", &["x", "c.w"], &["c.out"], vec![])
        .bn("c.bn", "c.out", 5, "y")
        .output("y", &[1, 5, 8]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(report.folded, pairs(&[("c.bn", "c")]));
    assert_eq!(node(&folded, "c").input, ["x", "c.w", "c.w_bias"]);
    assert_eq!(node(&folded, "c").output, ["y"]);
    assert_eq!(initializers(&folded), ["c.w", "c.w_bias"]);
    assert_same_outputs(&original, &folded, &[1, 3, 10]);
}

#[test]
fn fold_gemm_rows_columns_and_beta() {
    let mut b = Builder::new();
    b.input("x", &[2, 8])
        // transB = 1: B[6, 8], scaled by rows.
        .random("g1.w", &[6, 8])
        .random("g1.b", &[6])
        .op("Gemm", "g1", &["x", "g1.w", "g1.b"], vec![int("transB", 1)])
        .bn("bn1", "g1", 6, "bn1")
        .op("Relu", "r1", &["bn1"], vec![])
        // transB = 0: B[6, 5], scaled by columns; alpha, beta and a [1, 5] bias.
        .random("g2.w", &[6, 5])
        .random("g2.c", &[1, 5])
        .op(
            "Gemm",
            "g2",
            &["r1", "g2.w", "g2.c"],
            vec![float("alpha", 1.5), float("beta", 0.5)],
        )
        .bn("bn2", "g2", 5, "bn2")
        .op("Relu", "r2", &["bn2"], vec![])
        // No bias, and a scalar one broadcast over the columns.
        .random("g3.w", &[5, 4])
        .op("Gemm", "g3", &["r2", "g3.w"], vec![])
        .bn("bn3", "g3", 4, "bn3")
        .random("g4.w", &[3, 4])
        .init("g4.c", &[], &[0.25])
        .op(
            "Gemm",
            "g4",
            &["bn3", "g4.w", "g4.c"],
            vec![int("transB", 1), float("beta", 2.0)],
        )
        .bn("bn4", "g4", 3, "out")
        .output("out", &[2, 3]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(
        report.folded,
        pairs(&[("bn1", "g1"), ("bn2", "g2"), ("bn3", "g3"), ("bn4", "g4")])
    );
    assert_eq!(
        ops(&folded),
        ["Gemm", "Relu", "Gemm", "Relu", "Gemm", "Gemm"]
    );
    // beta went into the new bias.
    assert_eq!(attr_float(node(&folded, "g2"), "beta", 1.0), 1.0);
    assert_eq!(attr_float(node(&folded, "g2"), "alpha", 1.0), 1.5);
    assert_eq!(node(&folded, "g3").input, ["r2", "g3.w", "g3.w_bias"]);
    // The scalar bias changed shape, so it was replaced under a new name.
    assert_eq!(node(&folded, "g4").input, ["bn3", "g4.w", "g4.c_folded"]);
    assert_eq!(
        initializers(&folded),
        [
            "g1.b",
            "g1.w",
            "g2.c",
            "g2.w",
            "g3.w",
            "g3.w_bias",
            "g4.c_folded",
            "g4.w"
        ]
    );
    assert_same_outputs(&original, &folded, &[2, 8]);
}

#[test]
fn fold_grouped_conv_transpose() {
    let mut b = Builder::new();
    b.input("x", &[1, 4, 5, 5])
        // Cin 4, group 2, Cout/g 3: 6 output channels.
        .random("ct.w", &[4, 3, 3, 3])
        .random("ct.b", &[6])
        .op(
            "ConvTranspose",
            "ct",
            &["x", "ct.w", "ct.b"],
            vec![int("group", 2), ints("strides", &[2, 2])],
        )
        .bn("bn", "ct", 6, "out")
        .output("out", &[1, 6, 11, 11]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(report.folded, pairs(&[("bn", "ct")]));
    assert_eq!(ops(&folded), ["ConvTranspose"]);
    assert_same_outputs(&original, &folded, &[1, 4, 5, 5]);
}

#[test]
fn shared_weights_are_copied_and_chains_fold_completely() {
    let mut b = Builder::new();
    b.input("x", &[1, 4, 5, 5])
        .random("w", &[4, 4, 1, 1])
        .random("b", &[4])
        .op("Conv", "c1", &["x", "w", "b"], vec![])
        .bn("bn1", "c1", 4, "bn1")
        .op("Relu", "relu", &["bn1"], vec![])
        .op("Conv", "c2", &["relu", "w"], vec![])
        .bn("bnA", "c2", 4, "bnA")
        .bn("bnB", "bnA", 4, "out")
        .output("out", &[1, 4, 5, 5]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert_eq!(
        report.folded,
        pairs(&[("bn1", "c1"), ("bnA", "c2"), ("bnB", "c2")])
    );
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert_eq!(ops(&folded), ["Conv", "Relu", "Conv"]);
    assert_eq!(node(&folded, "c1").input, ["x", "w_folded", "b"]);
    assert_eq!(node(&folded, "c2").input, ["relu", "w_folded_1", "w_bias"]);
    assert_eq!(node(&folded, "c2").output, ["out"]);
    // `w` is read by nothing any more.
    assert_eq!(
        initializers(&folded),
        ["b", "w_bias", "w_folded", "w_folded_1"]
    );
    assert_same_outputs(&original, &folded, &[1, 4, 5, 5]);
}

#[test]
fn batch_norms_that_cannot_fold_are_kept_with_the_reason() {
    let mut b = Builder::new();
    b.input("x", &[1, 3, 6, 6])
        .random("c.w", &[4, 3, 3, 3])
        .op(
            "Conv",
            "c",
            &["x", "c.w"],
            vec![ints("pads", &[1, 1, 1, 1])],
        )
        .bn("bn", "c", 4, "bn")
        .op("Relu", "side", &["c"], vec![])
        .op("Add", "add", &["bn", "side"], vec![])
        .bn("after_add", "add", 4, "after_add")
        .bn("on_input", "x", 3, "on_input")
        .op("GlobalAveragePool", "pool", &["on_input"], vec![])
        .op("Flatten", "flat", &["pool"], vec![])
        .op("Flatten", "flat2", &["after_add"], vec![])
        .op("Concat", "out", &["flat", "flat2"], vec![int("axis", 1)])
        .output("out", &[1, 147]);
    let original = b.model();
    let (folded, report) = fold(&original);
    assert!(report.folded.is_empty());
    let reason = |bn: &str| {
        report
            .kept
            .iter()
            .find(|(n, _)| n == bn)
            .map(|(_, r)| r.clone())
            .unwrap()
    };
    assert_eq!(
        reason("bn"),
        "`c` (the output of Conv `c`) is also read by Relu `side`"
    );
    assert!(reason("after_add").contains("comes from Add `add`"));
    assert!(reason("on_input").contains("not produced by a node"));
    assert_eq!(report.kept.len(), 3);
    assert_eq!(folded, original);
    assert_same_outputs(&original, &folded, &[1, 3, 6, 6]);

    // Training mode, a graph output in between, a non-float weight: kept too.
    let mut b = Builder::new();
    b.input("x", &[1, 3, 6, 6])
        .random("c1.w", &[4, 3, 1, 1])
        .op("Conv", "c1", &["x", "c1.w"], vec![])
        .bn("train", "c1", 4, "train")
        .random("c2.w", &[4, 4, 1, 1])
        .op("Conv", "c2", &["train", "c2.w"], vec![])
        .bn("shown", "c2", 4, "shown")
        .node("Conv", "c3", &["shown", "c2.w", "c3.b"], &["c3"], vec![])
        .bn("int_bias", "c3", 4, "out")
        .output("out", &[1, 4, 6, 6])
        .output("c2", &[1, 4, 6, 6]);
    let mut original = b.model();
    let graph = original.graph.as_mut().unwrap();
    let mut bias = float_tensor("c3.b", &[4], &[0.0; 4]);
    bias.set_data_type(DType::INT32.0);
    bias.set_raw_data(vec![0; 16]);
    graph.initializer.push(bias);
    graph.node[1].attribute.push(int("training_mode", 1));
    let (folded, report) = fold(&original);
    assert!(report.folded.is_empty(), "{:?}", report.folded);
    assert!(
        report.kept[0].1.contains("training_mode=1"),
        "{:?}",
        report.kept
    );
    assert!(
        report.kept[1].1.contains("is a graph output"),
        "{:?}",
        report.kept
    );
    assert!(report.kept[2].1.contains("int32"), "{:?}", report.kept);
    assert_eq!(folded, original);
}

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-models/mnist-cnn")
}

#[test]
fn mnist_cnn_folds_every_batch_norm() {
    let model = crate::model::load::load_model(
        &mnist_dir().join("model.onnx"),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    let (folded, report) = fold_batchnorm(&model).unwrap();
    assert_eq!(report.folded.len(), 10, "{report:?}");
    assert!(report.kept.is_empty(), "{:?}", report.kept);
    assert!(
        report
            .folded
            .iter()
            .all(|(bn, layer)| bn.strip_suffix(".bn") == layer.strip_suffix(".conv")),
        "{report:?}"
    );
    assert!(!ops(&folded).contains(&"BatchNormalization"));
    let before = model.proto.graph.node.len();
    let after = folded.graph.node.len();
    assert_eq!(before - after, 10);

    let data = crate::measure::dataset::load_dataset(&mnist_dir(), None).unwrap();
    let shape = [1, 1, 28, 28];
    let a = TractModel::build(&model.proto, None, &shape, &[]).unwrap();
    let b = TractModel::build(&folded, None, &shape, &[]).unwrap();
    let mut max_diff = 0f32;
    let mut max_logit = 0f32;
    let samples = 20.min(data.len());
    assert_eq!(samples, 20);
    for i in 0..samples {
        let x = a.run(data.sample(i)).unwrap().remove(0);
        let y = b.run(data.sample(i)).unwrap().remove(0);
        assert_eq!(x.len(), 10);
        for (p, q) in x.iter().zip(&y) {
            max_diff = max_diff.max((p - q).abs());
            max_logit = max_logit.max(p.abs());
        }
    }
    println!(
        "mnist-cnn: nodes {before} -> {after}, initializers {} -> {}, max |logit difference| {max_diff:e} on {samples} samples (max |logit| {max_logit})",
        model.proto.graph.initializer.len(),
        folded.graph.initializer.len()
    );
    assert!(max_diff <= 1e-4, "{max_diff}");

    let reloaded =
        crate::model::load::from_proto(folded, mnist_dir().join("folded.onnx"), 0, &NoProgress)
            .unwrap();
    assert!(reloaded.warnings.is_empty(), "{:?}", reloaded.warnings);
    let analysis = crate::analyse(
        &reloaded,
        &Default::default(),
        &NoProgress,
        &CancelToken::new(),
    )
    .unwrap();
    assert!(analysis.macs_complete);
    assert_eq!(analysis.nodes, after);
}
