//! The mutations: bytes (truncation, bit flips, inserted/deleted/duplicated ranges) and
//! protobuf messages (hostile dims and data types, data cut or lengthened, external data
//! pointing out, swapped ops, renamed inputs, duplicated nodes, huge attributes, opsets, nested
//! subgraphs, constant growers).

use edgefit_engine::model::proto::{Message, ModelProto, NodeProto, TensorProto, tensor_proto};

/// SplitMix64: deterministic for a seed on every platform.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    pub fn chance(&mut self, one_in: u64) -> bool {
        self.next().is_multiple_of(one_in)
    }
    fn hostile_dim(&mut self) -> i64 {
        const DIMS: [i64; 12] = [
            0,
            -1,
            1,
            2,
            3,
            255,
            65_536,
            1 << 31,
            (1 << 31) - 1,
            1 << 38,
            1 << 62,
            i64::MAX,
        ];
        DIMS[self.below(DIMS.len())]
    }
}

const OPS: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Add",
    "Reshape",
    "Transpose",
    "Gather",
    "If",
    "Loop",
    "LSTM",
    "BatchNormalization",
    "ConstantOfShape",
    "Expand",
    "Slice",
    "Concat",
    "Softmax",
    "DequantizeLinear",
    "QuantizeLinear",
    "Resize",
    "Pad",
    "Squeeze",
    "Unsqueeze",
    "Cast",
    "NotAnOp",
];

/// One byte-level mutation.
fn mutate_bytes(bytes: &mut Vec<u8>, rng: &mut Rng) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let at = rng.below(bytes.len());
    match rng.below(6) {
        0 => bytes.truncate(at),
        1 => {
            for _ in 0..=rng.below(8) {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let n = 1 + rng.below(16);
            let insert: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            bytes.splice(at..at, insert);
        }
        3 => {
            let end = (at + 1 + rng.below(64)).min(bytes.len());
            bytes.drain(at..end);
        }
        4 => {
            let end = (at + 1 + rng.below(256)).min(bytes.len());
            let chunk = bytes[at..end].to_vec();
            let to = rng.below(bytes.len());
            bytes.splice(to..to, chunk);
        }
        _ => {
            let end = (at + 1 + rng.below(8)).min(bytes.len());
            bytes[at..end].fill(0xFF);
        }
    }
}

fn all_tensors(model: &mut ModelProto) -> Vec<&mut TensorProto> {
    let mut out = Vec::new();
    if let Some(g) = model.graph.as_mut() {
        out.extend(g.initializer.iter_mut());
        for n in g.node.iter_mut() {
            for a in n.attribute.iter_mut() {
                if let Some(t) = a.t.as_mut() {
                    out.push(t);
                }
            }
        }
    }
    out
}

fn all_nodes(model: &mut ModelProto) -> Vec<&mut NodeProto> {
    model
        .graph
        .as_mut()
        .map(|g| g.node.iter_mut().collect())
        .unwrap_or_default()
}

/// One structure-aware mutation of a parsed model.
fn mutate_model(model: &mut ModelProto, rng: &mut Rng) {
    match rng.below(10) {
        0 | 1 => {
            let mut tensors = all_tensors(model);
            if tensors.is_empty() {
                return;
            }
            let pick = rng.below(tensors.len());
            let t = &mut tensors[pick];
            match rng.below(6) {
                0 => {
                    let i = rng.below(t.dims.len().max(1));
                    let d = rng.hostile_dim();
                    if i < t.dims.len() {
                        t.dims[i] = d;
                    } else {
                        t.dims.push(d);
                    }
                }
                1 => t.set_data_type(rng.below(26) as i32),
                2 => t.clear_raw_data(),
                3 => {
                    let mut raw = t.raw_data().to_vec();
                    raw.truncate(rng.below(raw.len() + 1));
                    t.set_raw_data(raw);
                }
                4 => {
                    let mut raw = t.raw_data().to_vec();
                    raw.extend((0..1 + rng.below(64)).map(|_| rng.next() as u8));
                    t.set_raw_data(raw);
                }
                _ => {
                    t.set_data_location(tensor_proto::DataLocation::EXTERNAL);
                    let mut entry = edgefit_engine::model::proto::StringStringEntryProto::new();
                    entry.set_key("location".to_owned());
                    const PLACES: [&str; 5] = [
                        "../escape.bin",
                        "/dev/zero",
                        "missing.bin",
                        "",
                        "model.onnx",
                    ];
                    entry.set_value(PLACES[rng.below(PLACES.len())].to_owned());
                    t.external_data.push(entry);
                    let mut offset = edgefit_engine::model::proto::StringStringEntryProto::new();
                    offset.set_key("offset".to_owned());
                    offset.set_value(rng.hostile_dim().to_string());
                    t.external_data.push(offset);
                }
            }
        }
        2 | 3 => {
            let mut nodes = all_nodes(model);
            if nodes.is_empty() {
                return;
            }
            let pick = rng.below(nodes.len());
            let n = &mut nodes[pick];
            match rng.below(5) {
                0 => n.set_op_type(OPS[rng.below(OPS.len())].to_owned()),
                1 => {
                    if !n.input.is_empty() {
                        let i = rng.below(n.input.len());
                        n.input[i] = if rng.chance(2) {
                            String::new()
                        } else {
                            format!("nowhere{}", rng.below(9))
                        };
                    }
                }
                2 => {
                    if let Some(first) = n.input.first().cloned() {
                        n.input.push(first);
                    }
                }
                3 => n.output.clear(),
                _ => {
                    for a in n.attribute.iter_mut() {
                        for v in a.ints.iter_mut() {
                            *v = rng.hostile_dim();
                        }
                        if a.has_i() {
                            a.set_i(rng.hostile_dim());
                        }
                    }
                    if n.attribute.is_empty() {
                        let mut a = edgefit_engine::model::proto::AttributeProto::new();
                        a.set_name(
                            ["pads", "axis", "group", "strides", "perm"][rng.below(5)].to_owned(),
                        );
                        a.set_type(
                            edgefit_engine::model::proto::attribute_proto::AttributeType::INTS,
                        );
                        a.ints = (0..1 + rng.below(4)).map(|_| rng.hostile_dim()).collect();
                        n.attribute.push(a);
                    }
                }
            }
        }
        4 => {
            if let Some(g) = model.graph.as_mut()
                && !g.node.is_empty()
            {
                let n = g.node[rng.below(g.node.len())].clone();
                let at = rng.below(g.node.len());
                g.node.insert(at, n);
            }
        }
        5 => {
            if let Some(g) = model.graph.as_mut()
                && let Some(input) = g.input.first_mut()
                && let Some(t) = input.type_.as_mut()
                && let Some(edgefit_engine::model::proto::type_proto::Value::TensorType(tt)) =
                    t.value.as_mut()
            {
                if rng.chance(3) {
                    tt.set_elem_type(rng.below(26) as i32);
                } else if let Some(shape) = tt.shape.as_mut() {
                    for d in shape.dim.iter_mut() {
                        if rng.chance(2) {
                            d.set_dim_value(rng.hostile_dim());
                        }
                    }
                }
            }
        }
        6 => {
            for o in model.opset_import.iter_mut() {
                o.set_version(rng.below(30) as i64);
            }
            if rng.chance(2) {
                model.set_ir_version(rng.below(12) as i64);
            }
        }
        7 => {
            // Nest the graph in If branches a few levels deep, with a hostile condition.
            if let Some(g) = model.graph.as_ref().cloned() {
                let mut body = g.clone();
                body.input.clear();
                body.initializer.clear();
                let mut node = NodeProto::new();
                node.set_op_type("If".to_owned());
                node.input.push(
                    g.input
                        .first()
                        .map(|i| i.name().to_owned())
                        .unwrap_or_default(),
                );
                node.output = g.output.iter().map(|o| o.name().to_owned()).collect();
                for branch in ["then_branch", "else_branch"] {
                    let mut a = edgefit_engine::model::proto::AttributeProto::new();
                    a.set_name(branch.to_owned());
                    a.set_type(edgefit_engine::model::proto::attribute_proto::AttributeType::GRAPH);
                    a.g = Some(body.clone()).into();
                    node.attribute.push(a);
                }
                if let Some(graph) = model.graph.as_mut() {
                    graph.node = vec![node];
                }
            }
        }
        8 => {
            if let Some(g) = model.graph.as_mut() {
                let mut t = TensorProto::new();
                t.set_name(format!("big{}", rng.below(9)));
                t.set_data_type([1, 7, 8, 9, 14, 17][rng.below(6)]);
                t.dims = (0..1 + rng.below(3)).map(|_| rng.hostile_dim()).collect();
                g.initializer.push(t);
            }
        }
        _ => {
            if let Some(g) = model.graph.as_mut() {
                let mut n = NodeProto::new();
                n.set_op_type(
                    ["ConstantOfShape", "Range", "Expand", "Tile"][rng.below(4)].to_owned(),
                );
                n.input = g
                    .initializer
                    .iter()
                    .take(1 + rng.below(3))
                    .map(|t| t.name().to_owned())
                    .collect();
                n.output.push(format!("grown{}", rng.below(9)));
                g.node.push(n);
            }
        }
    }
}

/// A mutated copy of `seed`.
pub fn mutant(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        // Three in four mutations keep the protobuf readable (deeper code is reached).
        if !rng.chance(4)
            && let Ok(mut model) = ModelProto::parse_from_bytes(&bytes)
        {
            mutate_model(&mut model, rng);
            if let Ok(b) = model.write_to_bytes() {
                bytes = b;
                continue;
            }
        }
        mutate_bytes(&mut bytes, rng);
    }
    bytes
}

/// Byte-level mutants only (for data files, whose structure the byte mutations reach).
pub fn mutant_bytes_only(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_bytes(&mut bytes, rng);
    }
    bytes
}
