//! Small test models for the graph passes, built node by node.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::{float_tensor, int_attr, value_attr, value_info};
use crate::NoProgress;
use crate::model::load::LoadedModel;
use crate::model::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, attribute_proto,
};

/// xorshift values in [-0.5, 0.5).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 24) as f32 - 0.5
    }

    pub(crate) fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

/// Builds small test models.
pub(crate) struct Builder {
    graph: GraphProto,
    rng: Rng,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Self {
            graph: GraphProto::new(),
            rng: Rng(0x2545_F491_4F6C_DD1D),
        }
    }

    pub(crate) fn random(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        let values = self.rng.values(dims.iter().product::<i64>() as usize);
        self.init(name, dims, &values)
    }

    /// Random values in [0.5, 1.5) (variances, scales).
    pub(crate) fn positive(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        let n = dims.iter().product::<i64>() as usize;
        let values: Vec<f32> = self.rng.values(n).iter().map(|v| v + 1.0).collect();
        self.init(name, dims, &values)
    }

    pub(crate) fn init(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        self.graph
            .initializer
            .push(float_tensor(name, dims, values));
        self
    }

    /// A `Constant` node `name_const` holding `values` as a tensor.
    pub(crate) fn constant(&mut self, name: &str, dims: &[i64], values: &[f32]) -> &mut Self {
        let a = value_attr(float_tensor(name, dims, values));
        self.node("Constant", &format!("{name}_const"), &[], &[name], vec![a])
    }

    /// A `Constant` node holding random values: as a tensor, or as `value_floats`.
    pub(crate) fn random_constant(
        &mut self,
        name: &str,
        dims: &[i64],
        positive: bool,
        floats: bool,
    ) -> &mut Self {
        let n = dims.iter().product::<i64>() as usize;
        let offset = if positive { 1.0 } else { 0.0 };
        let values: Vec<f32> = self.rng.values(n).iter().map(|v| v + offset).collect();
        if !floats {
            return self.constant(name, dims, &values);
        }
        let mut a = AttributeProto::new();
        a.set_name("value_floats".to_owned());
        a.set_type(attribute_proto::AttributeType::FLOATS);
        a.floats = values;
        self.node("Constant", &format!("{name}_const"), &[], &[name], vec![a])
    }

    pub(crate) fn node(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> &mut Self {
        let mut n = NodeProto::new();
        n.set_op_type(op.to_owned());
        n.set_name(name.to_owned());
        n.input = inputs.iter().map(|s| (*s).to_owned()).collect();
        n.output = outputs.iter().map(|s| (*s).to_owned()).collect();
        n.attribute = attributes;
        self.graph.node.push(n);
        self
    }

    /// `node` with one output named like the node.
    pub(crate) fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attrs: Vec<AttributeProto>,
    ) -> &mut Self {
        self.node(op, name, inputs, &[name], attrs)
    }

    /// A batch norm `name` over `input` with initializer parameters `name.scale` etc.
    pub(crate) fn bn(&mut self, name: &str, input: &str, channels: i64, output: &str) -> &mut Self {
        let p = |s: &str| format!("{name}.{s}");
        self.positive(&p("scale"), &[channels])
            .random(&p("bias"), &[channels])
            .random(&p("mean"), &[channels])
            .positive(&p("var"), &[channels]);
        let (scale, bias, mean, var) = (p("scale"), p("bias"), p("mean"), p("var"));
        self.node(
            "BatchNormalization",
            name,
            &[input, &scale, &bias, &mean, &var],
            &[output],
            vec![float("epsilon", 1e-3)],
        )
    }

    pub(crate) fn input(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.graph.input.push(value_info(name, dims));
        self
    }

    pub(crate) fn output(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.graph.output.push(value_info(name, dims));
        self
    }

    pub(crate) fn declare(&mut self, name: &str, dims: &[i64]) -> &mut Self {
        self.graph.value_info.push(value_info(name, dims));
        self
    }

    pub(crate) fn model(&self) -> ModelProto {
        let mut model = ModelProto::new();
        model.set_ir_version(8);
        let mut opset = OperatorSetIdProto::new();
        opset.set_domain(String::new());
        opset.set_version(13);
        model.opset_import.push(opset);
        let mut graph = self.graph.clone();
        graph.set_name("test".to_owned());
        model.graph = Some(graph).into();
        model
    }
}

pub(crate) fn ints(name: &str, values: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.to_owned());
    a.set_type(attribute_proto::AttributeType::INTS);
    a.ints = values.to_vec();
    a
}

pub(crate) fn int(name: &str, value: i64) -> AttributeProto {
    int_attr(name, value)
}

pub(crate) fn float(name: &str, value: f32) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.set_name(name.to_owned());
    a.set_type(attribute_proto::AttributeType::FLOAT);
    a.set_f(value);
    a
}

/// Loads `proto` as if read from `test.onnx`.
pub(crate) fn load(proto: ModelProto) -> LoadedModel {
    crate::model::load::from_proto(proto, PathBuf::from("test.onnx"), 0, &NoProgress).unwrap()
}
