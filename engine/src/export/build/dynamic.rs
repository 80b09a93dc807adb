//! The dynamic int8 form, laid out as onnxruntime's `quantize_dynamic` writes it: int8 weight
//! codes, the layer's input quantized to uint8 at run time, an integer kernel, and its int32
//! result scaled back to float:
//!
//! ```text
//! X ─ DynamicQuantizeLinear ─┬─ Xq ─┐
//!                            ├─ x_zero_point ─ MatMulInteger(Xq, Wq, x_zp, w_zp) ─ Cast(float) ─┐
//!                            └─ x_scale ─ Mul(x_scale, w_scale) ──────────────────────────── Mul ─ (Add bias) ─ Y
//! ```
//!
//! onnxruntime fuses this pattern into `DynamicQuantizeMatMul` (u8×s8 kernels); tract runs the
//! ops as they are. No calibration: the input's range is measured on each run.
//!
//! Conv layers stay float (their codes stored as in weights-int8): written as `ConvInteger`
//! the same way (as `quantize_dynamic` does), the sample CNN kept its accuracy (98.00%) but
//! ran 0.6–1.1 ms in onnxruntime 1.32 against 0.06 ms in float — it fuses no `ConvInteger`
//! pattern and runs it through im2col, 10× slower even without the depthwise layers.

use std::collections::{HashMap, HashSet};

use crate::compress::compressor::{CompressibleLayer, QuantizedWeight};
use crate::model::graph_edit::{float_tensor, int_attr, int8_tensor, node, unique};
use crate::model::load::LoadedModel;
use crate::model::proto::{GraphProto, NodeProto};

/// How the replaced layer combined its product.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Combine {
    /// `MatMul(X, W)`: the scaled product is the output.
    MatMul,
    /// `Gemm(A, B, C)`: `alpha` is folded into the weight scales, `beta · C` added after.
    Gemm { beta: f32 },
}

/// An integer-planned layer that the dynamic export runs as `MatMulInteger`, with the
/// initializers already written for it.
pub(super) struct DynamicLayer {
    /// The layer node's output (unique in a valid graph): how its node is found again.
    output: String,
    combine: Combine,
    /// int8 codes laid out `[K, N]`.
    codes: String,
    /// Weight scales (× Gemm's `alpha`): a scalar, or one per output column `[N]`.
    scale: String,
    /// Weight zero points (int8), shaped like `scale`.
    zero_point: String,
}

fn attr<'a>(model: &'a LoadedModel, node: usize, name: &str) -> Option<&'a str> {
    model.graph.nodes[node]
        .attributes
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.value.as_str())
}

/// Why `layer` cannot run as `MatMulInteger`, or `None` when it can.
fn refusal(model: &LoadedModel, layer: &CompressibleLayer, q: &QuantizedWeight) -> Option<String> {
    let node = &model.graph.nodes[layer.node];
    let readers = model.graph.consumers.get(&layer.weight).map_or(0, Vec::len);
    let int_attr_of =
        |name: &str| attr(model, layer.node, name).and_then(|v| v.parse::<i64>().ok());
    let reason = if !node.domain.is_empty() || !node.graph.is_empty() {
        "not a main-graph ONNX node"
    } else if node.op_type == "Conv" {
        "Conv stays float: onnxruntime runs ConvInteger ~10× slower than a float Conv"
    } else if !matches!(node.op_type.as_str(), "MatMul" | "Gemm") {
        "only MatMul and Gemm layers run as MatMulInteger"
    } else if node.inputs.get(1) != Some(&layer.weight) {
        "its weight is not the right-hand operand"
    } else if layer.dims.len() != 2 {
        "its weight is not a matrix"
    } else if readers != 1 {
        "its weight is shared with other nodes"
    } else if node.op_type == "Gemm" && int_attr_of("transA").unwrap_or(0) != 0 {
        "Gemm with transA=1"
    } else {
        let trans_b = node.op_type == "Gemm" && int_attr_of("transB").unwrap_or(0) != 0;
        let column_axis = if trans_b { 0 } else { 1 };
        let columns = layer.dims[column_axis].max(0) as usize;
        let per_column = q.axis == Some(column_axis) && q.params.len() == columns;
        let per_tensor = q.axis.is_none() && q.params.len() == 1;
        let in_range = q
            .params
            .iter()
            .all(|p| (-128..=127).contains(&p.zero_point));
        if !(per_column || per_tensor) || !in_range {
            "its scales are neither per tensor nor per output column"
        } else {
            return None;
        }
    };
    Some(reason.to_owned())
}

/// Writes the int8 codes (as `[K, N]`), scales and zero points of `layer` into `graph` and
/// returns the plan for its node, or why it stays a float layer (then nothing is written).
pub(super) fn plan_layer(
    model: &LoadedModel,
    layer: &CompressibleLayer,
    q: &QuantizedWeight,
    graph: &mut GraphProto,
    names: &mut HashSet<String>,
) -> Result<DynamicLayer, String> {
    if let Some(reason) = refusal(model, layer, q) {
        return Err(reason);
    }
    let node = &model.graph.nodes[layer.node];
    let output = node.outputs.first().cloned().ok_or("no output")?;
    let float_of = |name: &str, default: f32| {
        attr(model, layer.node, name)
            .and_then(|v| v.parse::<f32>().ok())
            .unwrap_or(default)
    };
    let (combine, trans_b, alpha) = if node.op_type == "Gemm" {
        let trans_b = attr(model, layer.node, "transB").and_then(|v| v.parse::<i64>().ok());
        let beta = if node.inputs.get(2).is_some_and(|c| !c.is_empty()) {
            float_of("beta", 1.0)
        } else {
            0.0
        };
        (
            Combine::Gemm { beta },
            trans_b.unwrap_or(0) != 0,
            float_of("alpha", 1.0),
        )
    } else {
        (Combine::MatMul, false, 1.0)
    };
    let (rows, cols) = (layer.dims[0].max(0) as usize, layer.dims[1].max(0) as usize);
    // B of MatMulInteger is [K, N]: a transposed Gemm weight [N, K] is stored transposed.
    let (codes, dims) = if trans_b {
        let mut t = vec![0i8; q.codes.len()];
        for n in 0..rows {
            for k in 0..cols {
                t[k * rows + n] = q.codes[n * cols + k];
            }
        }
        (t, [layer.dims[1], layer.dims[0]])
    } else {
        (q.codes.clone(), [layer.dims[0], layer.dims[1]])
    };
    let w = layer.weight.as_str();
    let plan = DynamicLayer {
        output,
        combine,
        codes: unique(names, &format!("{w}_quantized")),
        scale: unique(names, &format!("{w}_scale")),
        zero_point: unique(names, &format!("{w}_zero_point")),
    };
    let group_dims: Vec<i64> = if q.axis.is_some() {
        vec![q.params.len() as i64]
    } else {
        vec![]
    };
    let (scales, zps): (Vec<f32>, Vec<i8>) = q
        .params
        .iter()
        .map(|p| (p.scale * alpha, p.zero_point as i8))
        .unzip();
    graph
        .initializer
        .push(int8_tensor(&plan.codes, &dims, &codes));
    graph
        .initializer
        .push(float_tensor(&plan.scale, &group_dims, &scales));
    graph
        .initializer
        .push(int8_tensor(&plan.zero_point, &group_dims, &zps));
    Ok(plan)
}

/// The three outputs of one `DynamicQuantizeLinear`: (uint8 codes, scale, zero point).
type Quantized = (String, String, String);

/// Replaces the node of each planned layer in `body` by the dynamic int8 pattern; one
/// `DynamicQuantizeLinear` per input tensor, shared by the layers that read it. Returns the
/// new body and the tensors quantized at run time.
pub(super) fn rewrite(
    body: Vec<NodeProto>,
    layers: Vec<DynamicLayer>,
    graph: &mut GraphProto,
    names: &mut HashSet<String>,
) -> (Vec<NodeProto>, Vec<String>) {
    let mut by_output: HashMap<String, DynamicLayer> =
        layers.into_iter().map(|l| (l.output.clone(), l)).collect();
    let mut quantized: HashMap<String, Quantized> = HashMap::new();
    let mut order = Vec::new();
    let mut out = Vec::with_capacity(body.len() + 6 * by_output.len());
    for n in body {
        let plan = n
            .output
            .first()
            .filter(|_| matches!(n.op_type(), "MatMul" | "Gemm"))
            .and_then(|o| by_output.remove(o));
        let (Some(plan), Some(x)) = (plan, n.input.first()) else {
            out.push(n);
            continue;
        };
        let (xq, x_scale, x_zp) = quantized
            .entry(x.clone())
            .or_insert_with(|| {
                let q = (
                    unique(names, &format!("{x}_quantized")),
                    unique(names, &format!("{x}_scale")),
                    unique(names, &format!("{x}_zero_point")),
                );
                let mut dql = node(
                    "DynamicQuantizeLinear",
                    &unique(names, &format!("{x}_dynamic_quantize")),
                    &[x],
                    &q.0,
                    &[],
                );
                dql.output.push(q.1.clone());
                dql.output.push(q.2.clone());
                out.push(dql);
                order.push(x.clone());
                q
            })
            .clone();
        let y = plan.output.as_str();
        let product = unique(names, &format!("{y}_output_quantized"));
        out.push(node(
            "MatMulInteger",
            &unique(names, &format!("{y}_matmul_integer")),
            &[&xq, &plan.codes, &x_zp, &plan.zero_point],
            &product,
            &[],
        ));
        let scales = unique(names, &format!("{y}_scales_mul"));
        out.push(node(
            "Mul",
            &unique(names, &format!("{y}_scales_mul_node")),
            &[&x_scale, &plan.scale],
            &scales,
            &[],
        ));
        let as_float = unique(names, &format!("{y}_output_quantized_cast_output"));
        out.push(node(
            "Cast",
            &unique(names, &format!("{y}_output_quantized_cast")),
            &[&product],
            &as_float,
            &[int_attr("to", 1)],
        ));
        let bias = match plan.combine {
            Combine::Gemm { beta } if beta != 0.0 => n.input.get(2).cloned().map(|c| (c, beta)),
            _ => None,
        };
        let Some((c, beta)) = bias else {
            out.push(node(
                "Mul",
                &unique(names, &format!("{y}_output_scale_mul")),
                &[&as_float, &scales],
                y,
                &[],
            ));
            continue;
        };
        let scaled = unique(names, &format!("{y}_scaled"));
        out.push(node(
            "Mul",
            &unique(names, &format!("{y}_output_scale_mul")),
            &[&as_float, &scales],
            &scaled,
            &[],
        ));
        let c = if beta == 1.0 {
            c
        } else {
            let beta_name = unique(names, &format!("{y}_beta"));
            let c_beta = unique(names, &format!("{c}_times_beta"));
            graph
                .initializer
                .push(float_tensor(&beta_name, &[], &[beta]));
            out.push(node(
                "Mul",
                &unique(names, &format!("{y}_beta_mul")),
                &[&c, &beta_name],
                &c_beta,
                &[],
            ));
            c_beta
        };
        out.push(node(
            "Add",
            &unique(names, &format!("{y}_bias_add")),
            &[&scaled, &c],
            y,
            &[],
        ));
    }
    (out, order)
}

/// What the dynamic export did, for the report: how many layers run as integer kernels, and
/// which integer-planned layers compute in float (stored as weights-int8 codes), by reason.
pub(super) fn notes(notes: &mut Vec<String>, integer: usize, float: &[(String, String)]) {
    notes.push(format!(
        "{integer} MatMul/Gemm layers run as integer kernels (DynamicQuantizeLinear → \
         MatMulInteger: int8 weights, uint8 activations quantized at run time, no calibration)"
    ));
    let mut reasons: Vec<&str> = float.iter().map(|(_, r)| r.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    for reason in reasons {
        let layers: Vec<&str> = float
            .iter()
            .filter(|(_, r)| r == reason)
            .map(|(l, _)| l.as_str())
            .collect();
        let shown: Vec<String> = layers.iter().take(6).map(|l| format!("`{l}`")).collect();
        notes.push(format!(
            "{} integer-planned layers compute in float (int8 codes + Cast/Mul, as \
             weights-int8): {reason}: {}{}",
            layers.len(),
            shown.join(", "),
            if layers.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        ));
    }
}
