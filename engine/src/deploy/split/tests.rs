#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::model::graph_edit::{float_tensor, node, value_info};
use crate::model::proto::{
    AttributeProto, ModelProto, OperatorSetIdProto, attribute_proto, type_proto,
};

/// `x → A(Relu) → a → B(Relu) → b → C(Neg) → c`, `y = D(Add)(a, c)`: a skip connection
/// around B and C. Nodes in the order given (by name).
fn skip_model(order: &[&str]) -> ModelProto {
    let nodes = [
        ("A", node("Relu", "A", &["x"], "a", &[])),
        ("B", node("Relu", "B", &["a"], "b", &[])),
        ("C", node("Neg", "C", &["b"], "c", &[])),
        ("D", node("Add", "D", &["a", "c"], "y", &[])),
    ];
    let mut graph = GraphProto::new();
    graph.set_name("skip".to_owned());
    for name in order {
        let (_, n) = nodes.iter().find(|(k, _)| k == name).unwrap();
        graph.node.push(n.clone());
    }
    graph.input.push(value_info("x", &[1, 4]));
    graph.output.push(value_info("y", &[1, 4]));
    wrap(graph)
}

fn wrap(graph: GraphProto) -> ModelProto {
    let mut model = ModelProto::new();
    model.set_ir_version(8);
    let mut opset = OperatorSetIdProto::new();
    opset.set_version(13);
    model.opset_import.push(opset);
    model.graph = Some(graph).into();
    model
}

fn load(proto: ModelProto) -> LoadedModel {
    crate::model::load::from_proto(
        proto,
        std::env::temp_dir().join("split-test.onnx"),
        0,
        &crate::job::NoProgress,
    )
    .unwrap()
}

fn names(cut: &Cut) -> Vec<&str> {
    cut.tensors.iter().map(|t| t.name.as_str()).collect()
}

#[test]
fn a_skip_connection_crosses_every_cut_inside_the_branch() {
    let model = load(skip_model(&["A", "B", "C", "D"]));
    let cuts = prefix_cuts(&model);
    assert_eq!(cuts.len(), 5);
    let sets: Vec<Vec<&str>> = cuts.iter().map(names).collect();
    assert_eq!(
        sets,
        vec![vec!["x"], vec!["a"], vec!["a", "b"], vec!["a", "c"], vec![]]
    );
    assert!(cuts[0].tensors[0].graph_input);
    assert_eq!(cuts[0].last_node, None);
    assert_eq!(cuts[2].last_node.as_deref(), Some("B"));
    assert_eq!(cuts[2].last_op.as_deref(), Some("Relu"));
    // Inside the branch two tensors cross, each 4 float32s.
    for k in [2, 3] {
        assert_eq!(cuts[k].tensors.len(), 2);
        assert_eq!(cuts[k].elements(), Some(8));
        assert_eq!(cuts[k].bytes(Transfer::Fp32), Some(32));
        assert_eq!(cuts[k].bytes(Transfer::Fp16), Some(16));
        assert_eq!(cuts[k].bytes(Transfer::Int8), Some(18));
    }
    // Device-only: nothing crosses, the output is computed on the device.
    assert!(cuts[4].device_outputs.iter().any(|t| t.name == "y"));
    assert!(cuts[3].device_outputs.is_empty());
}

#[test]
fn a_file_out_of_order_is_sorted_before_cutting() {
    let model = load(skip_model(&["D", "C", "A", "B"]));
    let cuts = prefix_cuts(&model);
    let sets: Vec<Vec<&str>> = cuts.iter().map(names).collect();
    assert_eq!(
        sets,
        vec![vec!["x"], vec!["a"], vec!["a", "b"], vec!["a", "c"], vec![]]
    );
    assert_eq!(cuts[1].last_node.as_deref(), Some("A"));
}

#[test]
fn constants_and_weights_never_cross_and_subgraph_reads_count() {
    // k = Constant; a = Add(x, k); w: weight; t = Mul(a, w); If(cond) whose branches read
    // `t` from the outer graph; y = the If's output.
    let mut graph = GraphProto::new();
    graph.node.push(crate::model::graph_edit::constant_node(
        "K",
        "k",
        float_tensor("kv", &[1, 4], &[1.0; 4]),
    ));
    graph.node.push(node("Add", "A", &["x", "k"], "a", &[]));
    graph.node.push(node("Mul", "M", &["a", "w"], "t", &[]));
    let branch = |op: &str| {
        let mut g = GraphProto::new();
        g.node.push(node(op, op, &["t"], &format!("{op}_out"), &[]));
        g.output.push(value_info(&format!("{op}_out"), &[1, 4]));
        let mut a = AttributeProto::new();
        a.set_name(
            if op == "Relu" {
                "then_branch"
            } else {
                "else_branch"
            }
            .to_owned(),
        );
        a.set_type(attribute_proto::AttributeType::GRAPH);
        a.g = Some(g).into();
        a
    };
    let mut if_node = node("If", "I", &["cond"], "y", &[]);
    if_node.attribute = vec![branch("Relu"), branch("Neg")];
    graph.node.push(if_node);
    graph
        .initializer
        .push(float_tensor("w", &[1, 4], &[2.0; 4]));
    graph.input.push(value_info("x", &[1, 4]));
    let mut cond = value_info("cond", &[]);
    if let Some(type_proto::Value::TensorType(t)) =
        cond.type_.as_mut().and_then(|t| t.value.as_mut())
    {
        t.set_elem_type(DType::BOOL.0);
    }
    graph.input.push(cond);
    graph.value_info.push(value_info("t", &[1, 4]));
    graph.output.push(value_info("y", &[1, 4]));
    let model = load(wrap(graph));
    let cuts = prefix_cuts(&model);
    let sets: Vec<Vec<&str>> = cuts.iter().map(names).collect();
    assert_eq!(
        sets,
        vec![
            vec!["cond", "x"],
            vec!["cond", "x"],
            vec!["cond", "a"],
            vec!["cond", "t"],
            vec![],
        ]
    );
    // The If reads `t` from its branches: cutting before it sends `t` (and forwards `cond`).
    let split = split_model(&model, &["t".to_owned()]).unwrap();
    assert_eq!(split.sent, vec!["t", "cond"]);
    assert_eq!(split.forwarded_inputs, vec!["cond"]);
    assert_eq!((split.head_nodes, split.tail_nodes), (3, 1));
    let head = split.head.graph.as_ref().unwrap();
    assert_eq!(head.initializer.len(), 1);
    assert!(split.tail.graph.as_ref().unwrap().initializer.is_empty());
    // A constant or a weight is not a tensor to send.
    assert!(split_model(&model, &["k".to_owned()]).is_err());
    assert!(split_model(&model, &["w".to_owned()]).is_err());
}

#[test]
fn a_cut_that_misses_a_sibling_branch_is_refused() {
    let model = load(skip_model(&["A", "B", "C", "D"]));
    let e = split_model(&model, &["b".to_owned()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("do not separate") && e.contains("`a`") && e.contains("`D`"),
        "{e}"
    );
    let split = split_model(&model, &["a".to_owned(), "b".to_owned()]).unwrap();
    assert_eq!((split.head_nodes, split.tail_nodes), (2, 2));
    let head = split.head.graph.as_ref().unwrap();
    let tail = split.tail.graph.as_ref().unwrap();
    let outs: Vec<&str> = head.output.iter().map(|o| o.name()).collect();
    let ins: Vec<&str> = tail.input.iter().map(|o| o.name()).collect();
    assert_eq!(outs, vec!["a", "b"]);
    assert_eq!(ins, vec!["a", "b"]);
    assert_eq!(tail.output[0].name(), "y");
    // Every end refused with a reason: nothing on the device, nothing on the server, unknown.
    assert!(split_model(&model, &["x".to_owned()]).is_err());
    assert!(split_model(&model, &["y".to_owned()]).is_err());
    assert!(split_model(&model, &["nope".to_owned()]).is_err());
    // `c` depends on `b`, so sending `a` and `c` puts B and C on the device.
    let split = split_model(&model, &["a".to_owned(), "c".to_owned()]).unwrap();
    assert_eq!((split.head_nodes, split.tail_nodes), (3, 1));
    let e = split_model(&model, &["a".to_owned(), "b".to_owned(), "c".to_owned()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("`b` is not read"), "{e}");
}

#[test]
fn a_graph_input_read_after_the_cut_is_forwarded() {
    // y = Add(Relu(x), x): cutting at the Relu's output also sends x.
    let mut graph = GraphProto::new();
    graph.node.push(node("Relu", "A", &["x"], "a", &[]));
    graph.node.push(node("Add", "D", &["a", "x"], "y", &[]));
    graph.input.push(value_info("x", &[1, 4]));
    graph.output.push(value_info("y", &[1, 4]));
    let model = load(wrap(graph));
    let cuts = prefix_cuts(&model);
    assert_eq!(names(&cuts[1]), vec!["x", "a"]);
    let split = split_model(&model, &["a".to_owned()]).unwrap();
    assert_eq!(split.sent, vec!["a", "x"]);
    assert_eq!(split.forwarded_inputs, vec!["x"]);
}

#[test]
fn int8_transfer_keeps_zero_and_the_range() {
    let mut v = vec![0.0, 1.0, -0.5, 0.25, 2.0];
    verify::apply_transfer(Transfer::Int8, &mut v);
    assert_eq!(v[0], 0.0);
    let step = 2.5 / 255.0;
    for (a, b) in v.iter().zip([0.0, 1.0, -0.5, 0.25, 2.0]) {
        assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} vs {b}");
    }
    let mut h = vec![1.0 / 3.0];
    verify::apply_transfer(Transfer::Fp16, &mut h);
    assert!((h[0] - 1.0 / 3.0).abs() < 1e-3 && h[0] != 1.0 / 3.0);
}

#[test]
fn cuts_of_a_large_graph_are_listed_quickly() {
    let model = load(crate::model::synthetic::branchy_cnn(20_000));
    let start = std::time::Instant::now();
    let cuts = prefix_cuts(&model);
    let elapsed = start.elapsed();
    let n = model.graph.main_nodes().count();
    assert_eq!(cuts.len(), n + 1);
    assert!(n >= 19_000, "{n}");
    // Debug builds are several times slower than release; the release figure is far below.
    eprintln!("prefix_cuts on {n} nodes: {elapsed:?}");
}
