//! Which nodes a device's accelerator takes: a node goes to the accelerator when its execution
//! provider lists the op and the accelerator computes the node's precision (a float32 node
//! runs there in float16 when the accelerator has float16 and no float32, as the CoreML, NNAPI
//! and QNN providers do when asked to relax precision). Accelerator nodes are grouped into the
//! partitions onnxruntime hands to the provider (a group may not depend on itself through a
//! CPU node); every tensor that crosses between the accelerator and the CPU is a copy.

use std::collections::BTreeMap;

use serde::Serialize;

use super::device::DeviceProfile;
use super::graph::{ComputePrecision, DeviceGraph};

/// Where a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    Accelerator,
    Cpu,
}

/// The split of a graph between a device's accelerator and its CPU.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Partition {
    /// The accelerator's name, or `None` when the device has none (everything on the CPU).
    pub accelerator: Option<String>,
    /// Per node (execution order).
    pub placement: Vec<Placement>,
    /// Groups of accelerator nodes handed to the provider as one call each (no group
    /// depends on itself through a CPU node).
    pub accelerator_partitions: usize,
    /// Activation tensors copied between the accelerator and the CPU.
    pub crossing_tensors: usize,
    pub accelerator_nodes: usize,
    pub cpu_nodes: usize,
    /// Ops left on the CPU, with how many nodes each and why.
    pub unsupported: Vec<UnsupportedOp>,
}

/// An op type the accelerator does not take (for at least one node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnsupportedOp {
    pub op: String,
    pub nodes: usize,
    /// `not in the provider's op list`, or the precision it cannot compute.
    pub reason: String,
}

/// Whether `profile`'s accelerator computes a node of this precision, and at which.
pub fn accelerator_precision(
    profile: &DeviceProfile,
    compute: ComputePrecision,
) -> Option<ComputePrecision> {
    let acc = profile.accelerator.as_ref()?;
    let has = |p: &str| acc.precisions.iter().any(|q| q == p);
    match compute {
        ComputePrecision::Int8 if has("int8") => Some(ComputePrecision::Int8),
        ComputePrecision::Int8 | ComputePrecision::Fp16 if has("fp16") => {
            Some(ComputePrecision::Fp16)
        }
        ComputePrecision::Fp32 if has("fp32") => Some(ComputePrecision::Fp32),
        ComputePrecision::Fp32 if has("fp16") => Some(ComputePrecision::Fp16),
        _ => None,
    }
}

/// Places every node of `graph` on `profile`'s accelerator or CPU.
pub fn partition(graph: &DeviceGraph, profile: &DeviceProfile) -> Partition {
    let Some(acc) = &profile.accelerator else {
        return Partition {
            accelerator: None,
            placement: vec![Placement::Cpu; graph.nodes.len()],
            accelerator_partitions: 0,
            crossing_tensors: 0,
            accelerator_nodes: 0,
            cpu_nodes: graph.nodes.iter().filter(|n| !n.fused).count(),
            unsupported: Vec::new(),
        };
    };
    let mut unsupported: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut placement: Vec<Placement> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let place = if node.fused {
            // Goes where the node that produces its input goes.
            node.reads
                .first()
                .and_then(|&t| graph.tensors[t].producer)
                .and_then(|p| placement.get(p).copied())
                .unwrap_or(Placement::Cpu)
        } else if !acc.ops.contains(&node.op) {
            *unsupported
                .entry((node.op.clone(), "not in the provider's op list".to_owned()))
                .or_default() += 1;
            Placement::Cpu
        } else if accelerator_precision(profile, node.compute).is_none() {
            *unsupported
                .entry((
                    node.op.clone(),
                    format!("{} is not computed there", node.compute.name()),
                ))
                .or_default() += 1;
            Placement::Cpu
        } else {
            Placement::Accelerator
        };
        placement.push(place);
    }

    // Partitions as onnxruntime's partitioner forms them: nodes in execution order join the
    // current accelerator partition unless one of their inputs depends on that partition
    // through a CPU node (joining would make the partitions a cycle); then a new one starts.
    // `tainted[t] == Some(c)`: tensor t depends on partition c through the CPU.
    let mut partition_of: Vec<Option<usize>> = vec![None; graph.nodes.len()];
    let mut tainted: Vec<Option<usize>> = vec![None; graph.tensors.len()];
    let mut current = 0usize;
    let mut used = false;
    for (position, node) in graph.nodes.iter().enumerate() {
        if node.fused {
            partition_of[position] = node
                .reads
                .first()
                .and_then(|&t| graph.tensors[t].producer)
                .and_then(|p| partition_of[p]);
        } else if placement[position] == Placement::Accelerator {
            if node.reads.iter().any(|&t| tainted[t] == Some(current)) {
                current += 1;
            }
            partition_of[position] = Some(current);
            used = true;
            continue;
        }
        // A CPU node (or a folded one) passes on a dependency on the current partition.
        let depends = node.reads.iter().any(|&t| {
            let from_current = graph.tensors[t]
                .producer
                .and_then(|p| partition_of[p])
                .is_some_and(|c| c == current);
            tainted[t] == Some(current) || (!node.fused && from_current)
        });
        if depends {
            for &t in &node.writes {
                tainted[t] = Some(current);
            }
        }
    }
    let partitions = if used { current + 1 } else { 0 };
    // Graph inputs start on the CPU; graph outputs end there.
    let side = |t: usize| {
        graph.tensors[t]
            .producer
            .map_or(Placement::Cpu, |p| placement[p])
    };
    let mut crosses: Vec<bool> = graph
        .tensors
        .iter()
        .enumerate()
        .map(|(t, tensor)| tensor.is_graph_output && side(t) == Placement::Accelerator)
        .collect();
    for (position, node) in graph.nodes.iter().enumerate() {
        for &t in &node.reads {
            if placement[position] != side(t) {
                crosses[t] = true;
            }
        }
    }
    let crossing_tensors = crosses.iter().filter(|c| **c).count();
    // Folded nodes are not nodes to the runtime: not counted.
    let counted = graph.nodes.iter().filter(|n| !n.fused).count();
    let accelerator_nodes = graph
        .nodes
        .iter()
        .zip(&placement)
        .filter(|(n, p)| !n.fused && **p == Placement::Accelerator)
        .count();
    let mut unsupported: Vec<UnsupportedOp> = unsupported
        .into_iter()
        .map(|((op, reason), nodes)| UnsupportedOp { op, nodes, reason })
        .collect();
    unsupported.sort_by(|a, b| b.nodes.cmp(&a.nodes).then(a.op.cmp(&b.op)));
    Partition {
        accelerator: Some(acc.name.clone()),
        accelerator_partitions: partitions,
        crossing_tensors,
        accelerator_nodes,
        cpu_nodes: counted - accelerator_nodes,
        placement,
        unsupported,
    }
}
