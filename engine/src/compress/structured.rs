//! Structured pruning that removes work: planned output channels of a layer are physically
//! cut out of its weight, and the graph downstream is shrunk to match (batch norms,
//! activations, depthwise convolutions, pools, and the input channels of the next layer).
//!
//! A model pass: model in, model + report out. A layer whose output reaches something that
//! cannot follow the new channel count (a residual `Add`, a `Concat`, a `Reshape`, a graph
//! output, an unknown op) is left untouched and the report says which node blocked it.
//!
//! Nodes are never added, removed or reordered, so names stay unique and the graph stays
//! topologically sorted; a weight shared with nodes outside the path is copied (under a new,
//! unique initializer name) rather than sliced in place.

#[cfg(test)]
mod tests;
mod trace;

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::model::dtype::DType;
use crate::model::graph_edit::{
    ConstRef, Index, Stored, all_names, float_tensor, int_attr, le_bytes, shape_proto, unique,
    value_attr,
};
use crate::model::load::LoadedModel;
use crate::model::proto::{GraphProto, ModelProto, type_proto};
use crate::model::tensor::decode_f32;
use trace::{Producer, producer, trace};

/// Output channels to remove, by layer (node) name, ascending indices.
pub type ChannelPlan = BTreeMap<String, Vec<usize>>;

/// What the pass did to one requested layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelRemoval {
    pub layer: String,
    /// Channels asked to remove.
    pub requested: usize,
    /// Channels physically removed (0 when the graph does not allow it).
    pub removed: usize,
    /// Output channels of the layer before the pass (0 when the layer is not a channel
    /// producer this pass understands).
    pub channels_before: usize,
    /// Why fewer channels were removed than requested.
    pub reason: Option<String>,
    /// Other nodes whose weights (or `group`) were changed to follow the new channel count.
    pub affected: Vec<String>,
}

/// Returns a new model (self-contained, no external data) with the planned channels
/// physically removed wherever the graph allows, plus one [`ChannelRemoval`] per planned
/// layer, in plan order.
///
/// Layers are processed one after the other on the model being rewritten, so removing the
/// output channels of two consecutive layers composes. Fails on a layer name that is not a
/// main-graph node, on indices that are not strictly ascending or out of range, and on
/// weights whose data is corrupt.
pub fn remove_channels(
    model: &LoadedModel,
    plan: &ChannelPlan,
) -> Result<(ModelProto, Vec<ChannelRemoval>)> {
    let mut proto = model.self_contained_proto()?;
    let mut targets = Vec::with_capacity(plan.len());
    for (layer, channels) in plan {
        let node = model
            .graph
            .main_nodes()
            .find(|n| &n.name == layer)
            .ok_or_else(|| Error::Recipe {
                reason: format!("no layer called `{layer}` in the main graph"),
            })?;
        if let Some(w) = channels.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument {
                what: "channel plan",
                reason: format!(
                    "channels of `{layer}` must be strictly ascending, found {} then {}",
                    w[0], w[1]
                ),
            });
        }
        targets.push((layer, node.outputs.first().cloned(), channels));
    }
    let mut report = Vec::with_capacity(targets.len());
    for (layer, output, channels) in targets {
        let graph = proto.graph.as_mut().ok_or_else(|| Error::InvalidArgument {
            what: "model",
            reason: "no graph".to_owned(),
        })?;
        report.push(prune_layer(
            graph,
            model,
            layer,
            output.as_deref(),
            channels,
        )?);
    }
    Ok((proto, report))
}

// ---------------------------------------------------------------------------------------------
// Constants of the graph being rewritten

impl ConstRef<'_> {
    /// Values of a float32 constant.
    fn float_values(&self, name: &str) -> Result<Vec<f32>> {
        let bad = |reason: &str| Error::BadTensor {
            tensor: name.to_owned(),
            reason: reason.to_owned(),
        };
        if self.dtype() != DType::FLOAT32 {
            return Err(bad("only float32 weights can be sliced"));
        }
        match self {
            ConstRef::Tensor(t) => {
                decode_f32(t, None)?.ok_or_else(|| bad("its values cannot be decoded"))
            }
            ConstRef::Inline(_, _, values) => Ok(values.clone()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rewriting

/// A weight's new contents.
struct TensorEdit {
    node: usize,
    slot: usize,
    name: String,
    /// Sliced where it is stored, or (when shared) copied under a new name.
    in_place: Option<Stored>,
    dims: Vec<i64>,
    values: Vec<f32>,
}

fn prune_layer(
    graph: &mut GraphProto,
    model: &LoadedModel,
    layer: &str,
    output: Option<&str>,
    planned: &[usize],
) -> Result<ChannelRemoval> {
    let mut result = ChannelRemoval {
        layer: layer.to_owned(),
        requested: planned.len(),
        removed: 0,
        channels_before: 0,
        reason: None,
        affected: Vec::new(),
    };
    let (edits, groups, changed, removed) = {
        let ix = Index::new(graph);
        let position = output.and_then(|o| {
            ix.graph
                .node
                .iter()
                .position(|n| n.output.first().map(String::as_str) == Some(o))
        });
        let Some(n) = position else {
            result.reason = Some(format!("`{layer}` has no output to follow"));
            return Ok(result);
        };
        let producer = match producer(&ix, model, n) {
            Ok(p) => p,
            Err(reason) => {
                result.reason = (!planned.is_empty()).then_some(reason);
                return Ok(result);
            }
        };
        result.channels_before = producer.channels;
        if let Some(&bad) = planned.iter().find(|&&c| c >= producer.channels) {
            return Err(Error::InvalidArgument {
                what: "channel plan",
                reason: format!(
                    "`{layer}` has {} output channels; channel {bad} does not exist",
                    producer.channels
                ),
            });
        }
        if planned.is_empty() {
            return Ok(result);
        }
        let mut removed = planned.to_vec();
        if removed.len() >= producer.channels {
            let kept = strongest(&ix, &producer, &removed)?;
            removed.retain(|&c| c != kept);
            result.reason = Some(format!(
                "at least one channel is kept: channel {kept} (the largest planned weight norm) stays"
            ));
            if removed.is_empty() {
                return Ok(result);
            }
        }
        let trace = match trace(&ix, model, &producer, n) {
            Ok(t) => t,
            Err(reason) => {
                result.reason = Some(reason);
                return Ok(result);
            }
        };
        let mut edits = Vec::with_capacity(trace.slices.len());
        for s in &trace.slices {
            let name = ix.node(s.node).input[s.slot].clone();
            let c = ix.const_ref(&name).ok_or_else(|| Error::InvalidArgument {
                what: "model",
                reason: format!("`{name}` is no longer a constant"),
            })?;
            let values = c.float_values(&name)?;
            let (dims, values) = slice_axis(&name, &values, c.dims(), s.axis, &removed)?;
            let in_place = ix
                .private(&name, s.node, s.slot)
                .then(|| ix.stored.get(name.as_str()).copied())
                .flatten();
            edits.push(TensorEdit {
                node: s.node,
                slot: s.slot,
                name,
                in_place,
                dims,
                values,
            });
        }
        result.affected = trace
            .affected
            .iter()
            .filter(|&&a| a != n)
            .map(|&a| ix.node_name(a))
            .collect();
        let changed: HashSet<String> = trace.changed.iter().map(|s| (*s).to_owned()).collect();
        let new_count = (trace.channels - removed.len()) as i64;
        let groups: Vec<(usize, i64)> = trace.groups.iter().map(|&g| (g, new_count)).collect();
        (edits, groups, changed, removed.len())
    };
    apply(graph, edits, &groups, &changed);
    result.removed = removed;
    Ok(result)
}

/// The planned channel with the largest L2 norm in the producer's main weight.
fn strongest(ix: &Index<'_>, producer: &Producer<'_>, planned: &[usize]) -> Result<usize> {
    let first = planned.first().copied().unwrap_or(0);
    let Some(main) = producer.slices.first() else {
        return Ok(first);
    };
    let name = &ix.node(main.node).input[main.slot];
    let Some(c) = ix.const_ref(name) else {
        return Ok(first);
    };
    let values = c.float_values(name)?;
    let (_, n, inner) = split(c.dims(), main.axis);
    let mut norms = vec![0f64; n];
    for (i, v) in values.iter().enumerate() {
        norms[(i / inner.max(1)) % n.max(1)] += f64::from(*v) * f64::from(*v);
    }
    Ok(planned
        .iter()
        .copied()
        .max_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(b.cmp(&a)))
        .unwrap_or(first))
}

/// (outer, channels, inner) sizes of `dims` around `axis`.
fn split(dims: &[i64], axis: usize) -> (usize, usize, usize) {
    let size = |d: &[i64]| d.iter().map(|&v| v.max(0) as usize).product::<usize>();
    let channels = dims.get(axis).map_or(1, |&d| d.max(0) as usize);
    let outer = size(dims.get(..axis).unwrap_or(&[]));
    let inner = size(dims.get(axis + 1..).unwrap_or(&[]));
    (outer, channels, inner)
}

/// `values` (C order, `dims`) without the indices `removed` of `axis`.
fn slice_axis(
    name: &str,
    values: &[f32],
    dims: &[i64],
    axis: usize,
    removed: &[usize],
) -> Result<(Vec<i64>, Vec<f32>)> {
    let (outer, channels, inner) = split(dims, axis);
    if axis >= dims.len() || outer * channels * inner != values.len() {
        return Err(Error::BadTensor {
            tensor: name.to_owned(),
            reason: format!(
                "{} values do not fit shape {dims:?} sliced on axis {axis}",
                values.len()
            ),
        });
    }
    let keep: Vec<bool> = (0..channels)
        .map(|c| removed.binary_search(&c).is_err())
        .collect();
    let kept = keep.iter().filter(|k| **k).count();
    let mut out = Vec::with_capacity(outer * kept * inner);
    for o in 0..outer {
        for (c, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            let start = (o * channels + c) * inner;
            out.extend_from_slice(&values[start..start + inner]);
        }
    }
    let mut new_dims = dims.to_vec();
    new_dims[axis] = kept as i64;
    Ok((new_dims, out))
}

fn apply(
    graph: &mut GraphProto,
    edits: Vec<TensorEdit>,
    groups: &[(usize, i64)],
    changed: &HashSet<String>,
) {
    let mut names = all_names(graph);
    let mut resized: HashSet<String> = changed.clone();
    for e in edits {
        match e.in_place {
            Some(Stored::Initializer(i)) => {
                let t = &mut graph.initializer[i];
                t.dims = e.dims.clone();
                t.float_data.clear();
                t.external_data.clear();
                t.set_data_type(DType::FLOAT32.0);
                t.set_raw_data(le_bytes(&e.values));
                // Old exports also list initializers as graph inputs, with their shape.
                for input in graph.input.iter_mut().filter(|i| i.name() == e.name) {
                    set_declared_shape(input, &e.dims);
                }
                resized.insert(e.name);
            }
            Some(Stored::ConstantNode(i)) => {
                graph.node[i].attribute =
                    vec![value_attr(float_tensor(&e.name, &e.dims, &e.values))];
                resized.insert(e.name);
            }
            None => {
                let copy = unique(&mut names, &format!("{}_pruned", e.name));
                graph
                    .initializer
                    .push(float_tensor(&copy, &e.dims, &e.values));
                if let Some(input) = graph.node[e.node].input.get_mut(e.slot) {
                    *input = copy;
                }
            }
        }
    }
    for &(n, group) in groups {
        let node = &mut graph.node[n];
        match node.attribute.iter_mut().find(|a| a.name() == "group") {
            Some(a) => a.set_i(group),
            None => node.attribute.push(int_attr("group", group)),
        }
    }
    // Declared shapes of resized tensors are stale: drop them (shape inference redoes them).
    graph.value_info.retain(|v| !resized.contains(v.name()));
}

fn set_declared_shape(info: &mut crate::model::proto::ValueInfoProto, dims: &[i64]) {
    let Some(t) = info.type_.as_mut() else {
        return;
    };
    if let Some(type_proto::Value::TensorType(tensor)) = t.value.as_mut() {
        tensor.shape = Some(shape_proto(dims)).into();
    }
}
