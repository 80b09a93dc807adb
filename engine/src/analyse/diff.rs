//! The model diff: what changed between two ONNX models (an original and its export, or any
//! two), on the protobuf level, so models no runtime can run still diff.
//!
//! Nodes are matched first by name (when a name is non-empty and unique in both models), then
//! the rest by structure: a Myers diff of the op types of the still-unmatched nodes, in file
//! order (ONNX requires topological order). A matched pair is *changed* when its op type,
//! attributes, number of inputs or outputs, the producer of an input (looking through nodes
//! only one side has, such as an inserted `QuantizeLinear`/`DequantizeLinear` pair or a
//! dropped `Identity`) or a declared output shape differs.
//!
//! Weights are the float constants compute nodes read: initializers and `Constant` values,
//! and what `DequantizeLinear`, `Cast`, `Mul`, `Sub`, `Add`, `Div` and `Identity` nodes make
//! of them (int8/uint8/int4/int32 codes with scales and zero points, per tensor or per axis;
//! float16 storage). A weight of A is matched to B's by name, else through the matched node
//! that reads it (same input slot). When A's layer feeds a `BatchNormalization` that B no
//! longer has, B's weight is compared with A's with that batch norm folded in.
//!
//! Entry points: [`diff_models`] (two loaded models), [`diff_protos`] (two protobufs in
//! memory, no external data) and [`diff_files`] (two paths, loaded as `load_model` does, with
//! its errors for missing, empty, truncated and corrupt files).

mod constants;
mod nodes;
mod side;
mod weights;

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::job::{CancelToken, ProgressSink, report};
use crate::model::dtype::DType;
use crate::model::load::{LoadedModel, load_model};
use crate::model::proto::ModelProto;

use side::Side;

/// The `schema` of a serialized [`ModelDiff`].
pub const DIFF_SCHEMA: &str = "edgefit.diff/1";

/// How a node of A was paired with a node of B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The same non-empty node name, unique in both models.
    Name,
    /// The op-type sequence diff of the nodes left after matching by name.
    Structure,
}

/// What happened to one node, for colouring either model's graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Matched, and nothing the diff compares differs.
    Unchanged,
    /// Matched, with a different op type, attributes, wiring or declared output shape.
    Changed,
    /// Only in B.
    Added,
    /// Only in A.
    Removed,
}

/// A node added, removed or changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeChange {
    /// The node's name (B's for an added node, else A's; `op#index` when the model leaves it
    /// empty).
    pub name: String,
    /// Its op type (A's for a changed node whose op changed; the reason says what it became).
    pub op_type: String,
    /// Index into A's `GraphView::nodes`, when the node is in A.
    pub a_node: Option<usize>,
    /// Index into B's `GraphView::nodes`, when the node is in B.
    pub b_node: Option<usize>,
    /// How a changed node was paired (`None` for added and removed nodes).
    pub matched_by: Option<MatchedBy>,
    /// What differs, for people (`only in B: quantizes `x``, `attribute group: 1 → 4`, …).
    pub reason: String,
}

/// One pair of matched nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NodeMatch {
    pub a_node: usize,
    pub b_node: usize,
    pub matched_by: MatchedBy,
    pub changed: bool,
}

/// How a weight of A was paired with one of B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightMatch {
    /// The same tensor name (B's may be computed, e.g. the output of a `DequantizeLinear`).
    Name,
    /// The same input slot of a matched node.
    Consumer,
}

/// What comparing a weight's values gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    /// Bit-for-bit the same values (NaN where A has NaN); `sqnr_db` is `null`.
    Identical,
    /// Same shape, different values: `sqnr_db` is B's SQNR against A.
    Compared,
    /// The shapes differ (e.g. structured pruning removed channels): see `shape_changes`.
    ShapesDiffer,
    /// One side's values cannot be read as numbers (strings, 8-bit floats, external data of
    /// an in-memory model).
    NotDecoded,
    /// The weight is only in A or only in B.
    OneSided,
}

/// One axis whose size differs between A and B.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AxisChange {
    pub axis: usize,
    pub before: i64,
    pub after: i64,
}

/// One side of a weight: how it is stored and what its values look like.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightSide {
    /// The name the graph reads it by (for B's dequantized weights, the dequantized tensor).
    pub name: String,
    pub dims: Vec<i64>,
    /// The stored element type: the codes' type for a dequantized weight.
    pub dtype: DType,
    /// Bytes as stored, scales and zero points included.
    pub storage_bytes: u64,
    /// Fraction of the (dequantized) values that are exactly zero.
    pub sparsity: f64,
    /// Bits per stored element (the codes' for a dequantized weight).
    pub bits: Option<u64>,
    /// Distinct codes used, for a dequantized weight (e.g. 16 for 4-bit codes stored as int8).
    pub levels: Option<u64>,
    /// Index into the model's `GraphView::nodes` of the first node that reads the weight.
    pub node: Option<usize>,
}

/// One weight of A and/or B compared.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeightDiff {
    pub a: Option<WeightSide>,
    pub b: Option<WeightSide>,
    /// How A's weight was paired with B's (`None` when only one side has it).
    pub matched_by: Option<WeightMatch>,
    pub comparison: Comparison,
    /// SQNR of B's (dequantized) values against A's, in dB: `null` when identical or not
    /// compared (see `comparison`), `"-inf"` when a finite value became NaN or infinite or
    /// A's values are all zero, a number otherwise.
    #[serde(serialize_with = "json_db")]
    pub sqnr_db: Option<f64>,
    /// Pairs where one value is NaN or infinite and the other is not the same.
    pub nonfinite_values: usize,
    /// Axes whose size differs (same rank), e.g. output channels removed by pruning.
    pub shape_changes: Vec<AxisChange>,
    /// The batch norm of A folded into A's values before comparing (B no longer has it).
    pub folded_batchnorm: Option<String>,
    /// Whether anything differs: values (when both sides could be read), shape, stored type
    /// or stored bytes.
    pub changed: bool,
}

/// Totals of one model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelSummary {
    /// Where it was read from (empty for a model given in memory).
    pub path: String,
    pub file_size_bytes: u64,
    pub nodes: usize,
    /// Weights as this diff counts them (float constants that nodes compute with).
    pub weights: usize,
    /// Bytes of every stored tensor (initializers and constants, all graphs).
    pub weight_bytes: u64,
}

/// The counts of a diff.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    pub nodes_added: usize,
    pub nodes_removed: usize,
    pub nodes_changed: usize,
    pub nodes_unchanged: usize,
    pub matched_by_name: usize,
    pub matched_by_structure: usize,
    pub weights_changed: usize,
    pub weights_unchanged: usize,
    pub weights_only_in_a: usize,
    pub weights_only_in_b: usize,
}

/// Everything that differs between model A (e.g. the original) and model B (e.g. an export).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelDiff {
    /// [`DIFF_SCHEMA`].
    pub schema: &'static str,
    pub a: ModelSummary,
    pub b: ModelSummary,
    pub summary: DiffSummary,
    /// Nodes only in B, in B's order.
    pub added: Vec<NodeChange>,
    /// Nodes only in A, in A's order.
    pub removed: Vec<NodeChange>,
    /// Matched nodes that differ, in A's order.
    pub changed: Vec<NodeChange>,
    /// Every matched pair, in A's order.
    pub matches: Vec<NodeMatch>,
    /// Every weight: A's in A's order (matched or not), then those only in B.
    pub weights: Vec<WeightDiff>,
    /// Status of each node of A, parallel to A's `GraphView::nodes`.
    #[serde(skip)]
    pub status_a: Vec<NodeStatus>,
    /// Status of each node of B, parallel to B's `GraphView::nodes`.
    #[serde(skip)]
    pub status_b: Vec<NodeStatus>,
    /// For each node of A, its counterpart's index in B.
    #[serde(skip)]
    pub a_to_b: Vec<Option<usize>>,
    /// For each node of B, its counterpart's index in A.
    #[serde(skip)]
    pub b_to_a: Vec<Option<usize>>,
}

impl ModelDiff {
    /// Status of node `index` of A's `GraphView::nodes` (`None` out of range).
    pub fn node_status_a(&self, index: usize) -> Option<NodeStatus> {
        self.status_a.get(index).copied()
    }

    /// Status of node `index` of B's `GraphView::nodes` (`None` out of range).
    pub fn node_status_b(&self, index: usize) -> Option<NodeStatus> {
        self.status_b.get(index).copied()
    }

    /// The node of B matched to node `index` of A.
    pub fn counterpart_in_b(&self, index: usize) -> Option<usize> {
        self.a_to_b.get(index).copied().flatten()
    }

    /// The node of A matched to node `index` of B.
    pub fn counterpart_in_a(&self, index: usize) -> Option<usize> {
        self.b_to_a.get(index).copied().flatten()
    }

    /// Whether the two models have the same nodes and weights (storage included).
    pub fn is_empty(&self) -> bool {
        let s = &self.summary;
        s.nodes_added + s.nodes_removed + s.nodes_changed + s.weights_changed == 0
            && s.weights_only_in_a + s.weights_only_in_b == 0
    }
}

/// Diffs two loaded models: A (the reference, e.g. the original) against B.
///
/// Fails only on a tensor whose stored data does not match its type and shape.
pub fn diff_models(a: &LoadedModel, b: &LoadedModel) -> Result<ModelDiff> {
    let a = Side::from_loaded(a)?;
    let b = Side::from_loaded(b)?;
    Ok(diff_sides(&a, &b))
}

/// Diffs two models held in memory (no path: external data cannot be read, so a model with
/// any fails with [`crate::Error::ExternalData`]; use [`diff_models`] for those).
pub fn diff_protos(a: &ModelProto, b: &ModelProto) -> Result<ModelDiff> {
    let a = Side::from_proto(a)?;
    let b = Side::from_proto(b)?;
    Ok(diff_sides(&a, &b))
}

/// Loads the ONNX files at `a` and `b` (with `load_model`'s checks and errors: missing,
/// empty, truncated, corrupt or not ONNX, bad external data) and diffs them.
pub fn diff_files(
    a: &Path,
    b: &Path,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<ModelDiff> {
    report(progress, "loading A", 0, 3);
    let model_a = load_model(a, &crate::job::NoProgress, cancel)?;
    report(progress, "loading B", 1, 3);
    let model_b = load_model(b, &crate::job::NoProgress, cancel)?;
    cancel.check()?;
    report(progress, "comparing", 2, 3);
    let diff = diff_models(&model_a, &model_b)?;
    report(progress, "compared", 3, 3);
    Ok(diff)
}

fn diff_sides(a: &Side<'_>, b: &Side<'_>) -> ModelDiff {
    let matching = nodes::match_nodes(a, b);
    let node_diff = nodes::compare_nodes(a, b, &matching);
    let weights = weights::compare_weights(a, b, &matching);
    let mut summary = DiffSummary {
        nodes_added: node_diff.added.len(),
        nodes_removed: node_diff.removed.len(),
        nodes_changed: node_diff.changed.len(),
        nodes_unchanged: node_diff.matches.iter().filter(|m| !m.changed).count(),
        matched_by_name: node_diff
            .matches
            .iter()
            .filter(|m| m.matched_by == MatchedBy::Name)
            .count(),
        matched_by_structure: node_diff
            .matches
            .iter()
            .filter(|m| m.matched_by == MatchedBy::Structure)
            .count(),
        ..DiffSummary::default()
    };
    for w in &weights.diffs {
        match (&w.a, &w.b) {
            (Some(_), Some(_)) if w.changed => summary.weights_changed += 1,
            (Some(_), Some(_)) => summary.weights_unchanged += 1,
            (Some(_), None) => summary.weights_only_in_a += 1,
            _ => summary.weights_only_in_b += 1,
        }
    }
    ModelDiff {
        schema: DIFF_SCHEMA,
        a: a.summary(weights.count_a),
        b: b.summary(weights.count_b),
        summary,
        added: node_diff.added,
        removed: node_diff.removed,
        changed: node_diff.changed,
        matches: node_diff.matches,
        weights: weights.diffs,
        status_a: node_diff.status_a,
        status_b: node_diff.status_b,
        a_to_b: matching.a_to_b,
        b_to_a: matching.b_to_a,
    }
}

/// A dB value for JSON as the engine's reports write them: `null` for `None`, numbers, and
/// `"inf"` / `"-inf"` / `"nan"` as strings (JSON has no such numbers).
fn json_db<S: serde::Serializer>(v: &Option<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(x) if x.is_finite() => s.serialize_f64(*x),
        Some(x) if x.is_nan() => s.serialize_str("nan"),
        Some(x) if *x > 0.0 => s.serialize_str("inf"),
        Some(_) => s.serialize_str("-inf"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn db_values_serialize_as_the_other_reports_write_them() {
        #[derive(Serialize)]
        struct Db(#[serde(serialize_with = "json_db")] Option<f64>);
        let json = |v| serde_json::to_string(&Db(v)).unwrap();
        assert_eq!(json(None), "null");
        assert_eq!(json(Some(41.5)), "41.5");
        assert_eq!(json(Some(f64::NEG_INFINITY)), "\"-inf\"");
        assert_eq!(json(Some(f64::NAN)), "\"nan\"");
    }
}
