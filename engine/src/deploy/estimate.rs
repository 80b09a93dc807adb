//! Latency and energy of one inference on a device: an estimate, not a measurement.
//!
//! Basis (every figure the CLI and the studio show carries this): each node takes the longer
//! of its compute time and its memory time on the device's roofline,
//! `max(2 x MACs / (peak ops/s x efficiency), bytes moved / bandwidth)`, plus a fixed
//! dispatch cost per node. MACs at the node's precision (int8 for the integer layers of a
//! qdq-int8 or dynamic-int8 plan, else float32 — an fp16 file casts its weights to float32;
//! an accelerator without float32 runs float nodes in float16) use that precision's peak, or
//! the next wider one's when the device has no fast path for it; nodes without MACs
//! (element-wise, pooling) count one op per output value. Bytes moved are the node's activation inputs and outputs and the weights it reads.
//! The efficiency factors say how much of the peak a runtime's kernels reach, per kind of
//! kernel ([`Efficiency`]); they are stated assumptions from published kernel studies, checked
//! against published measurements by `bench/device_estimates.py`. Energy is the device's
//! active power (the accelerator's for nodes it runs) times the time.

use serde::Serialize;

use super::device::{DeviceClass, DeviceProfile, Throughput};
use super::graph::{ComputePrecision, DeviceGraph, OpKind};
use super::partition::{Partition, Placement, accelerator_precision};

/// The share of a peak the kernels reach, per kind of kernel.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Efficiency {
    pub dense: f64,
    pub depthwise: f64,
    pub other: f64,
    /// Fixed cost of dispatching one node, microseconds.
    pub per_node_us: f64,
}

impl Efficiency {
    /// The assumptions for a device's CPU runtime (see the module doc).
    ///
    /// - Application CPUs (onnxruntime MLAS / XNNPACK): GEMM-like kernels reach about half
    ///   of the FMA peak on small-batch inference, depthwise convolutions about a fifth (they
    ///   reuse each weight a few times only); a node costs a few microseconds to dispatch.
    /// - Microcontrollers (TFLite Micro + CMSIS-NN): convolutions keep the MAC unit about
    ///   half busy (operand loads and requantization take the rest); the interpreter costs
    ///   tens of microseconds per node at 100-500 MHz.
    pub fn cpu(profile: &DeviceProfile) -> Self {
        match profile.class {
            DeviceClass::Microcontroller => Self {
                dense: 0.5,
                depthwise: 0.3,
                other: 0.25,
                per_node_us: 20.0,
            },
            _ => Self {
                dense: 0.5,
                depthwise: 0.2,
                other: 0.25,
                per_node_us: 5.0,
            },
        }
    }

    /// The assumptions for an accelerator (NPU/GPU through an execution provider): dense
    /// kernels a third of the peak at batch 1, depthwise a tenth; a node costs little to
    /// dispatch once its partition is compiled.
    pub fn accelerator() -> Self {
        Self {
            dense: 0.3,
            depthwise: 0.1,
            other: 0.1,
            per_node_us: 2.0,
        }
    }

    fn of(&self, kind: OpKind) -> f64 {
        match kind {
            OpKind::Dense => self.dense,
            OpKind::Depthwise => self.depthwise,
            OpKind::Other => self.other,
        }
    }
}

/// Fixed cost of handing a partition to the accelerator and back (copies aside), ms: a
/// stated assumption in the range onnxruntime's NNAPI/CoreML/QNN providers show per call.
pub const PARTITION_CALL_MS: f64 = 0.1;

/// What bounds a node's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    Compute,
    Memory,
    Dispatch,
}

/// One node's estimate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeEstimate {
    pub latency_ms: f64,
    pub energy_mj: f64,
    pub bound: Bound,
    pub placement: Placement,
    /// The precision whose peak was used.
    pub precision: ComputePrecision,
}

/// The estimate of one inference of a graph on a device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyEstimate {
    pub latency_ms: f64,
    pub energy_mj: f64,
    /// Per node, in execution order.
    pub nodes: Vec<NodeEstimate>,
    /// How the figure was made, for people.
    pub basis: String,
}

/// The peak for `precision`, else the next wider precision's; `None` when the profile gives
/// no figure at all (a profile's CPU always has fp32; an accelerator may have none).
fn peak_gops(t: &Throughput, precision: ComputePrecision) -> Option<(f64, ComputePrecision)> {
    let at = |p: ComputePrecision| -> Option<(f64, ComputePrecision)> {
        match p {
            ComputePrecision::Int8 => t.int8,
            ComputePrecision::Fp16 => t.fp16,
            ComputePrecision::Fp32 => t.fp32,
        }
        .map(|v| (v, p))
    };
    match precision {
        ComputePrecision::Int8 => at(precision)
            .or_else(|| at(ComputePrecision::Fp16))
            .or_else(|| at(ComputePrecision::Fp32)),
        ComputePrecision::Fp16 => at(precision).or_else(|| at(ComputePrecision::Fp32)),
        ComputePrecision::Fp32 => at(precision).or_else(|| at(ComputePrecision::Fp16)),
    }
}

/// Estimates one inference of `graph` on `profile`, with nodes placed by `partition`.
pub fn estimate(
    graph: &DeviceGraph,
    profile: &DeviceProfile,
    partition: &Partition,
) -> LatencyEstimate {
    let cpu = Efficiency::cpu(profile);
    let acc_eff = Efficiency::accelerator();
    let bandwidth = profile.memory.bandwidth_gb_per_s * 1e9;
    let mut nodes = Vec::with_capacity(graph.nodes.len());
    for (position, node) in graph.nodes.iter().enumerate() {
        let placement = partition
            .placement
            .get(position)
            .copied()
            .unwrap_or(Placement::Cpu);
        let (gops, precision, eff, power_w) = match (placement, &profile.accelerator) {
            (Placement::Accelerator, Some(acc)) => {
                let at = accelerator_precision(profile, node.compute).unwrap_or(node.compute);
                match peak_gops(&acc.throughput_gops, at) {
                    Some((gops, precision)) => (gops, precision, acc_eff, acc.power_w),
                    // No published figure: the CPU's peak stands in (said in the basis).
                    None => {
                        let (gops, precision) = peak_gops(&profile.throughput_gops, at)
                            .unwrap_or((1.0, ComputePrecision::Fp32));
                        (gops, precision, acc_eff, acc.power_w)
                    }
                }
            }
            _ => {
                let (gops, precision) = peak_gops(&profile.throughput_gops, node.compute)
                    .unwrap_or((1.0, ComputePrecision::Fp32));
                (gops, precision, cpu, profile.power_w.active)
            }
        };
        if node.fused {
            nodes.push(NodeEstimate {
                latency_ms: 0.0,
                energy_mj: 0.0,
                bound: Bound::Dispatch,
                placement,
                precision: node.compute,
            });
            continue;
        }
        let ops = match node.macs {
            Some(m) if m > 0 => 2.0 * m as f64,
            _ => node
                .writes
                .iter()
                .filter_map(|&t| graph.tensors[t].bytes)
                .map(|b| b as f64 / 4.0)
                .sum(),
        };
        let compute_s = ops / (gops * 1e9 * eff.of(node.kind));
        let bytes = graph
            .activation_traffic_bytes(node)
            .saturating_add(node.weight_bytes) as f64;
        let memory_s = bytes / bandwidth;
        let dispatch_s = eff.per_node_us * 1e-6;
        let bound = if dispatch_s > compute_s.max(memory_s) {
            Bound::Dispatch
        } else if compute_s >= memory_s {
            Bound::Compute
        } else {
            Bound::Memory
        };
        let latency_ms = (compute_s.max(memory_s) + dispatch_s) * 1e3;
        nodes.push(NodeEstimate {
            latency_ms,
            energy_mj: latency_ms * power_w,
            bound,
            placement,
            precision,
        });
    }
    let calls_ms = partition.accelerator_partitions as f64 * PARTITION_CALL_MS;
    let latency_ms = nodes.iter().map(|n| n.latency_ms).sum::<f64>() + calls_ms;
    let energy_mj =
        nodes.iter().map(|n| n.energy_mj).sum::<f64>() + calls_ms * profile.power_w.active;
    let basis = format!(
        "estimate: roofline of {} ({} GB/s, fp32 {} GOPS{}{}) with kernel efficiencies dense {:.0}%, depthwise {:.0}%, other {:.0}%, {} us per node{}",
        profile.name,
        profile.memory.bandwidth_gb_per_s,
        profile.throughput_gops.fp32.unwrap_or(0.0),
        profile
            .throughput_gops
            .fp16
            .map_or(String::new(), |v| format!(", fp16 {v}")),
        profile
            .throughput_gops
            .int8
            .map_or(String::new(), |v| format!(", int8 {v}")),
        cpu.dense * 100.0,
        cpu.depthwise * 100.0,
        cpu.other * 100.0,
        cpu.per_node_us,
        partition
            .accelerator
            .as_ref()
            .map_or(String::new(), |a| format!(
                "; {} nodes on {a} in {} partitions{}",
                partition.accelerator_nodes,
                partition.accelerator_partitions,
                profile.accelerator.as_ref().map_or("", |acc| {
                    let t = &acc.throughput_gops;
                    if t.fp32.or(t.fp16).or(t.int8).is_none() {
                        " (its throughput is not published: the CPU's peak stands in)"
                    } else {
                        ""
                    }
                })
            )),
    );
    LatencyEstimate {
        latency_ms,
        energy_mj,
        nodes,
        basis,
    }
}
