#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use super::*;
use crate::measure::runtime::TractModel;
use crate::model::graph_edit::attr_int;
use crate::model::graph_edit::test_models::{Builder, int, ints, load};
use crate::{CancelToken, NoProgress};

/// Dims of a stored constant (initializer or Constant node) of `proto`.
fn dims_of(proto: &ModelProto, name: &str) -> Vec<i64> {
    let graph = proto.graph.as_ref().unwrap();
    let ix = Index::new(graph);
    ix.const_ref(name)
        .unwrap_or_else(|| panic!("no constant `{name}`"))
        .dims()
        .to_vec()
}

fn node_input(proto: &ModelProto, node: &str, slot: usize) -> String {
    let graph = proto.graph.as_ref().unwrap();
    let n = graph.node.iter().find(|n| n.name() == node).unwrap();
    n.input[slot].clone()
}

/// Sets `values[c * inner .. (c + 1) * inner]` to zero for each channel `c` (axis 0).
fn zero_rows(proto: &mut ModelProto, name: &str, channels: &[usize]) {
    zero_along(proto, name, 0, channels);
}

fn zero_along(proto: &mut ModelProto, name: &str, axis: usize, channels: &[usize]) {
    let graph = proto.graph.as_mut().unwrap();
    let (values, dims, at) = {
        let ix = Index::new(graph);
        let c = ix.const_ref(name).unwrap();
        (
            c.float_values(name).unwrap(),
            c.dims().to_vec(),
            ix.stored[name],
        )
    };
    let (_, n, inner) = split(&dims, axis);
    let values: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if channels.contains(&((i / inner) % n)) {
                0.0
            } else {
                v
            }
        })
        .collect();
    let t = float_tensor(name, &dims, &values);
    match at {
        Stored::Initializer(i) => graph.initializer[i] = t,
        Stored::ConstantNode(i) => graph.node[i].attribute[0].t = Some(t).into(),
    }
}

fn run(proto: &ModelProto, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let sample: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let model = TractModel::build(proto, None, shape, &[]).unwrap();
    model.run(&sample).unwrap().remove(0)
}

fn assert_close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + x.abs()), "{a:?} vs {b:?}");
    }
}

fn plan(entries: &[(&str, &[usize])]) -> ChannelPlan {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect()
}

fn removal<'r>(report: &'r [ChannelRemoval], layer: &str) -> &'r ChannelRemoval {
    report.iter().find(|r| r.layer == layer).unwrap()
}

/// input[1,3,8,8] → conv1 → bn1 → relu1 → conv2 → relu2 → pool → flatten → fc.
fn conv_chain() -> Builder {
    let mut b = Builder::new();
    let pads = || vec![ints("pads", &[1, 1, 1, 1])];
    b.input("input", &[1, 3, 8, 8])
        .random("conv1.w", &[6, 3, 3, 3])
        .random("conv1.b", &[6])
        .op("Conv", "conv1", &["input", "conv1.w", "conv1.b"], pads())
        .positive("bn1.scale", &[6])
        .random("bn1.bias", &[6])
        .random("bn1.mean", &[6])
        .positive("bn1.var", &[6])
        .op(
            "BatchNormalization",
            "bn1",
            &["conv1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
            vec![],
        )
        .op("Relu", "relu1", &["bn1"], vec![])
        .random("conv2.w", &[5, 6, 3, 3])
        .random("conv2.b", &[5])
        .op("Conv", "conv2", &["relu1", "conv2.w", "conv2.b"], pads())
        .op("Relu", "relu2", &["conv2"], vec![])
        .op("GlobalAveragePool", "pool", &["relu2"], vec![])
        .op("Flatten", "flatten", &["pool"], vec![int("axis", 1)])
        .random("fc.w", &[4, 5])
        .random("fc.b", &[4])
        .node(
            "Gemm",
            "fc",
            &["flatten", "fc.w", "fc.b"],
            &["logits"],
            vec![int("transB", 1)],
        )
        .output("logits", &[1, 4])
        .declare("conv1", &[1, 6, 8, 8])
        .declare("relu1", &[1, 6, 8, 8])
        .declare("conv2", &[1, 5, 8, 8])
        .declare("flatten", &[1, 5]);
    b
}

#[test]
fn conv_bn_relu_conv_pool_gemm_shrinks_exactly() {
    let mut original = conv_chain().model();
    // Planned channels carry exact zeros: their removal cannot change the outputs.
    zero_rows(&mut original, "conv1.w", &[1, 4]);
    zero_rows(&mut original, "conv1.b", &[1, 4]);
    zero_rows(&mut original, "bn1.bias", &[1, 4]);
    zero_rows(&mut original, "bn1.mean", &[1, 4]);
    zero_rows(&mut original, "conv2.w", &[0, 2, 3]);
    zero_rows(&mut original, "conv2.b", &[0, 2, 3]);
    let model = load(original.clone());
    let (pruned, report) =
        remove_channels(&model, &plan(&[("conv1", &[1, 4]), ("conv2", &[0, 2, 3])])).unwrap();

    let conv1 = removal(&report, "conv1");
    assert_eq!(
        (conv1.requested, conv1.removed, conv1.channels_before),
        (2, 2, 6)
    );
    assert_eq!(conv1.reason, None);
    assert_eq!(conv1.affected, ["bn1", "conv2"]);
    let conv2 = removal(&report, "conv2");
    assert_eq!((conv2.removed, conv2.channels_before), (3, 5));
    assert_eq!(conv2.affected, ["fc"]);

    assert_eq!(dims_of(&pruned, "conv1.w"), [4, 3, 3, 3]);
    assert_eq!(dims_of(&pruned, "conv1.b"), [4]);
    for p in ["bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"] {
        assert_eq!(dims_of(&pruned, p), [4]);
    }
    assert_eq!(dims_of(&pruned, "conv2.w"), [2, 4, 3, 3]);
    assert_eq!(dims_of(&pruned, "conv2.b"), [2]);
    assert_eq!(dims_of(&pruned, "fc.w"), [4, 2]);
    assert_eq!(dims_of(&pruned, "fc.b"), [4]);
    // Stale declarations are gone; nodes are untouched in number and order.
    let graph = pruned.graph.as_ref().unwrap();
    assert!(graph.value_info.is_empty(), "{:?}", graph.value_info);
    let before: Vec<&str> = original.graph.node.iter().map(|n| n.name()).collect();
    let after: Vec<&str> = graph.node.iter().map(|n| n.name()).collect();
    assert_eq!(before, after);

    assert_close(&run(&original, &[1, 3, 8, 8]), &run(&pruned, &[1, 3, 8, 8]));
    // The result reloads and its MACs drop.
    let macs = |p: ModelProto| {
        let m = load(p);
        crate::analyse(&m, &Default::default(), &NoProgress, &CancelToken::new())
            .unwrap()
            .macs
    };
    assert!(macs(pruned) < macs(original));
}

#[test]
fn random_weights_still_give_a_valid_smaller_model() {
    let model = load(conv_chain().model());
    let (pruned, report) = remove_channels(&model, &plan(&[("conv1", &[0, 5])])).unwrap();
    assert_eq!(report[0].removed, 2);
    let out = run(&pruned, &[1, 3, 8, 8]);
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn residual_add_is_refused_and_nothing_changes() {
    let mut b = Builder::new();
    b.input("input", &[1, 4, 6, 6])
        .random("conv.w", &[4, 4, 3, 3])
        .op(
            "Conv",
            "conv",
            &["input", "conv.w"],
            vec![ints("pads", &[1, 1, 1, 1])],
        )
        .op("Relu", "relu", &["conv"], vec![])
        .node("Add", "residual", &["relu", "input"], &["sum"], vec![])
        .random("head.w", &[2, 4, 1, 1])
        .node("Conv", "head", &["sum", "head.w"], &["out"], vec![])
        .output("out", &[1, 2, 6, 6]);
    let original = b.model();
    let model = load(original.clone());
    let (pruned, report) =
        remove_channels(&model, &plan(&[("conv", &[0, 1]), ("head", &[1])])).unwrap();
    let conv = removal(&report, "conv");
    assert_eq!(
        (conv.requested, conv.removed, conv.channels_before),
        (2, 0, 4)
    );
    let reason = conv.reason.as_deref().unwrap();
    assert!(reason.contains("Add `residual`"), "{reason}");
    assert!(reason.contains("another branch"), "{reason}");
    assert!(conv.affected.is_empty());
    assert_eq!(dims_of(&pruned, "conv.w"), [4, 4, 3, 3]);
    // A layer whose output is the graph output is refused too.
    let head = removal(&report, "head");
    assert_eq!(head.removed, 0);
    assert!(head.reason.as_deref().unwrap().contains("graph output"));
    assert_eq!(pruned, original);
}

#[test]
fn gemm_and_matmul_producers_shrink_exactly() {
    let mut b = Builder::new();
    b.input("x", &[1, 8])
        .random("g1.w", &[6, 8])
        .random("g1.b", &[6])
        .op("Gemm", "g1", &["x", "g1.w", "g1.b"], vec![int("transB", 1)])
        .op("LeakyRelu", "leaky", &["g1"], vec![])
        .constant(
            "mm.w",
            &[6, 5],
            &(0..30).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
        )
        .op("MatMul", "mm", &["leaky", "mm.w"], vec![])
        .random("mm.b", &[5])
        .op("Add", "mm.add", &["mm", "mm.b"], vec![])
        .constant("lo", &[], &[-1.0])
        .constant("hi", &[], &[1.0])
        .op("Clip", "clip", &["mm.add", "lo", "hi"], vec![])
        .random("g2.w", &[5, 3])
        .random("g2.b", &[3])
        .node("Gemm", "g2", &["clip", "g2.w", "g2.b"], &["y"], vec![])
        .output("y", &[1, 3])
        .declare("g1", &[1, 6])
        .declare("clip", &[1, 5])
        .declare("leaky", &[1, 6]);
    let mut original = b.model();
    zero_rows(&mut original, "g1.w", &[0, 3]);
    zero_rows(&mut original, "g1.b", &[0, 3]);
    zero_along(&mut original, "mm.w", 1, &[2]);
    zero_rows(&mut original, "mm.b", &[2]);
    let model = load(original.clone());
    let (pruned, report) =
        remove_channels(&model, &plan(&[("g1", &[0, 3]), ("mm", &[2])])).unwrap();
    assert_eq!(removal(&report, "g1").removed, 2);
    assert_eq!(removal(&report, "g1").affected, ["mm"]);
    assert_eq!(removal(&report, "mm").removed, 1);
    assert_eq!(removal(&report, "mm").affected, ["mm.add", "g2"]);
    assert_eq!(dims_of(&pruned, "g1.w"), [4, 8]);
    assert_eq!(dims_of(&pruned, "g1.b"), [4]);
    assert_eq!(dims_of(&pruned, "mm.w"), [4, 4]);
    assert_eq!(dims_of(&pruned, "mm.b"), [4]);
    assert_eq!(dims_of(&pruned, "g2.w"), [4, 3]);
    assert!(pruned.graph.value_info.is_empty());
    assert_close(&run(&original, &[1, 8]), &run(&pruned, &[1, 8]));
}

#[test]
fn depthwise_conv_and_swish_are_followed() {
    let mut b = Builder::new();
    b.input("input", &[1, 3, 8, 8])
        .random("pw1.w", &[6, 3, 1, 1])
        .random("pw1.b", &[6])
        .op("Conv", "pw1", &["input", "pw1.w", "pw1.b"], vec![])
        .op("HardSwish", "hswish", &["pw1"], vec![])
        .random("dw.w", &[6, 1, 3, 3])
        .random("dw.b", &[6])
        .op(
            "Conv",
            "dw",
            &["hswish", "dw.w", "dw.b"],
            vec![int("group", 6), ints("pads", &[1, 1, 1, 1])],
        )
        .positive("bn.scale", &[6])
        .random("bn.bias", &[6])
        .random("bn.mean", &[6])
        .positive("bn.var", &[6])
        .op(
            "BatchNormalization",
            "bn",
            &["dw", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
            vec![],
        )
        .op("Sigmoid", "sig", &["bn"], vec![])
        .op("Mul", "swish", &["bn", "sig"], vec![])
        .node("Dropout", "drop", &["swish"], &["dropped"], vec![])
        .random("pw2.w", &[4, 6, 1, 1])
        .node("Conv", "pw2", &["dropped", "pw2.w"], &["out"], vec![])
        .output("out", &[1, 4, 8, 8]);
    let mut original = b.model();
    for t in ["pw1.w", "pw1.b", "dw.b", "bn.bias", "bn.mean"] {
        zero_rows(&mut original, t, &[0, 5]);
    }
    let model = load(original.clone());
    let (pruned, report) = remove_channels(&model, &plan(&[("pw1", &[0, 5])])).unwrap();
    let r = &report[0];
    assert_eq!((r.removed, r.reason.as_deref()), (2, None));
    assert_eq!(r.affected, ["dw", "bn", "pw2"]);
    assert_eq!(dims_of(&pruned, "dw.w"), [4, 1, 3, 3]);
    assert_eq!(dims_of(&pruned, "pw2.w"), [4, 4, 1, 1]);
    let graph = pruned.graph.as_ref().unwrap();
    let dw = graph.node.iter().find(|n| n.name() == "dw").unwrap();
    assert_eq!(attr_int(dw, "group", 1), 4);
    assert_close(&run(&original, &[1, 3, 8, 8]), &run(&pruned, &[1, 3, 8, 8]));
    // A depthwise conv itself is not a producer.
    let (_, report) = remove_channels(&model, &plan(&[("dw", &[1])])).unwrap();
    assert_eq!(report[0].removed, 0);
    assert!(report[0].reason.as_deref().unwrap().contains("depthwise"));
}

#[test]
fn shared_weights_are_copied_and_one_channel_is_kept() {
    let mut b = Builder::new();
    b.input("input", &[1, 2, 5, 5])
        .random("c1.w", &[4, 2, 1, 1])
        .op("Conv", "c1", &["input", "c1.w"], vec![])
        .positive("scale", &[4])
        .random("shift", &[4])
        .init("zeros", &[4], &[0.0; 4])
        .positive("ones", &[4])
        .op(
            "BatchNormalization",
            "bn1",
            &["c1", "scale", "shift", "zeros", "ones"],
            vec![],
        )
        .random("c2.w", &[4, 4, 1, 1])
        .op("Conv", "c2", &["bn1", "c2.w"], vec![])
        .node(
            "BatchNormalization",
            "bn2",
            &["c2", "scale", "shift", "zeros", "ones"],
            &["out"],
            vec![],
        )
        .output("out", &[1, 4, 5, 5]);
    let model = load(b.model());
    let (pruned, report) = remove_channels(&model, &plan(&[("c1", &[0, 1, 2, 3])])).unwrap();
    let r = &report[0];
    assert_eq!((r.requested, r.removed, r.channels_before), (4, 3, 4));
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("at least one channel")
    );
    assert_eq!(dims_of(&pruned, "c1.w"), [1, 2, 1, 1]);
    assert_eq!(dims_of(&pruned, "c2.w"), [4, 1, 1, 1]);
    // bn2 still reads the full shared parameters; bn1 reads sliced copies.
    assert_eq!(dims_of(&pruned, "zeros"), [4]);
    assert_eq!(node_input(&pruned, "bn2", 3), "zeros");
    let copy = node_input(&pruned, "bn1", 3);
    assert_eq!(copy, "zeros_pruned");
    assert_eq!(dims_of(&pruned, &copy), [1]);
    assert_eq!(run(&pruned, &[1, 2, 5, 5]).len(), 100);
}

#[test]
fn blocking_ops_are_named() {
    let mut b = Builder::new();
    b.input("input", &[1, 2, 4, 4])
        .random("c.w", &[3, 2, 1, 1])
        .op("Conv", "c", &["input", "c.w"], vec![])
        .op("Relu", "r", &["c"], vec![])
        .init("shape", &[2], &[1.0, 48.0])
        .node("Reshape", "reshape", &["r", "shape"], &["out"], vec![])
        .output("out", &[1, 48]);
    let model = load(b.model());
    let (_, report) =
        remove_channels(&model, &plan(&[("c", &[2]), ("r", &[0]), ("reshape", &[])])).unwrap();
    let c = removal(&report, "c");
    assert_eq!(c.removed, 0);
    assert!(
        c.reason.as_deref().unwrap().contains("Reshape `reshape`"),
        "{c:?}"
    );
    let r = removal(&report, "r");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("not a channel producer"),
        "{r:?}"
    );
    assert_eq!(removal(&report, "reshape").reason, None);
}

#[test]
fn bad_plans_are_errors() {
    let model = load(conv_chain().model());
    let err = remove_channels(&model, &plan(&[("nope", &[0])])).unwrap_err();
    assert!(matches!(err, Error::Recipe { .. }), "{err}");
    let err = remove_channels(&model, &plan(&[("conv1", &[3, 1])])).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    let err = remove_channels(&model, &plan(&[("conv1", &[6])])).unwrap_err();
    assert!(err.to_string().contains("channel 6"), "{err}");
}

fn mnist() -> LoadedModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-models/mnist-cnn/model.onnx");
    crate::model::load::load_model(&path, &NoProgress, &CancelToken::new()).unwrap()
}

/// Half the channels (the even ones) of every Conv with group 1 and of the Gemm.
fn half_plan(model: &LoadedModel) -> ChannelPlan {
    let graph = model.proto.graph.as_ref().unwrap();
    let ix = Index::new(graph);
    graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            (n.op_type() == "Conv" && attr_int(n, "group", 1) == 1) || n.op_type() == "Gemm"
        })
        .map(|(i, n)| {
            let c = ix.const_ref(&n.input[1]).unwrap().dims()[0] as usize;
            (ix.node_name(i), (0..c).step_by(2).collect())
        })
        .collect()
}

#[test]
fn mnist_cnn_prunes_what_does_not_feed_a_residual_add() {
    let model = mnist();
    let plan = half_plan(&model);
    let (pruned, report) = remove_channels(&model, &plan).unwrap();
    let removed: BTreeMap<&str, (usize, usize)> = report
        .iter()
        .map(|r| (r.layer.as_str(), (r.removed, r.channels_before)))
        .collect();
    assert_eq!(removed["stem.conv"], (8, 16));
    assert_eq!(removed["head.conv"], (64, 128));
    for blocked in [
        "down1.pw.conv",
        "block1.pw.conv",
        "down2.pw.conv",
        "block2.pw.conv",
    ] {
        let r = removal(&report, blocked);
        assert_eq!(r.removed, 0);
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains("Add `block"), "{blocked}: {reason}");
    }
    assert!(
        removal(&report, "fc.gemm")
            .reason
            .as_deref()
            .unwrap()
            .contains("graph output")
    );
    assert_eq!(
        removal(&report, "stem.conv").affected,
        ["stem.bn", "down1.dw.conv", "down1.dw.bn", "down1.pw.conv"]
    );
    assert_eq!(
        removal(&report, "head.conv").affected,
        ["head.bn", "fc.gemm"]
    );

    let options = crate::AnalysisOptions::default();
    let before = crate::analyse(&model, &options, &NoProgress, &CancelToken::new()).unwrap();
    let reloaded = load(pruned.clone());
    let after = crate::analyse(&reloaded, &options, &NoProgress, &CancelToken::new()).unwrap();
    assert!(after.macs_complete);
    println!(
        "mnist-cnn MACs {} -> {} ({:.1}% less); parameters {} -> {}",
        before.macs,
        after.macs,
        100.0 * (1.0 - after.macs as f64 / before.macs as f64),
        before.parameters,
        after.parameters
    );
    for (b, a) in before.layers.iter().zip(&after.layers) {
        if b.macs != a.macs {
            println!("  {}: {:?} -> {:?}", b.name, b.macs, a.macs);
        }
    }
    assert!(after.macs < before.macs);
    assert_eq!(run(&pruned, &[1, 1, 28, 28]).len(), 10);
}

#[test]
fn mnist_cnn_removal_is_exact_when_planned_channels_are_zero() {
    let model = mnist();
    let mut original = model.self_contained_proto().unwrap();
    let stem: Vec<usize> = (0..16).step_by(2).collect();
    let head: Vec<usize> = (1..128).step_by(2).collect();
    // Zero conv rows, and make the BN that follows map 0 to 0 on those channels.
    for (conv, bn, channels) in [("stem", "stem", &stem), ("head", "head", &head)] {
        zero_rows(&mut original, &format!("{conv}.conv.weight"), channels);
        zero_rows(&mut original, &format!("{bn}.bn.bias"), channels);
        zero_rows(&mut original, &format!("{bn}.bn.mean"), channels);
    }
    // The depthwise block after the stem has no bias, and its BN must map 0 to 0 too.
    zero_rows(&mut original, "down1.dw.bn.bias", &stem);
    zero_rows(&mut original, "down1.dw.bn.mean", &stem);
    let zeroed = load(original.clone());
    let plan = plan(&[("stem.conv", &stem), ("head.conv", &head)]);
    let (pruned, report) = remove_channels(&zeroed, &plan).unwrap();
    assert!(
        report.iter().all(|r| r.removed == r.requested),
        "{report:?}"
    );
    assert_eq!(dims_of(&pruned, "down1.dw.conv.weight"), [8, 1, 3, 3]);
    assert_eq!(dims_of(&pruned, "down1.pw.conv.weight"), [32, 8, 1, 1]);
    assert_eq!(dims_of(&pruned, "fc.weight"), [10, 64]);
    assert_close(
        &run(&original, &[1, 1, 28, 28]),
        &run(&pruned, &[1, 1, 28, 28]),
    );
}
