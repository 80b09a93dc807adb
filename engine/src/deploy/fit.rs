//! Will it fit, and roughly how fast: one model form against every device profile — peak
//! activation memory and weights against RAM and flash, the latency estimate against a
//! target, and what the accelerator would refuse.

use serde::Serialize;

use super::device::{DeviceClass, DeviceProfile};
use super::estimate::{LatencyEstimate, estimate};
use super::graph::DeviceGraph;
use super::memory::{MemoryPlan, plan_memory};
use super::partition::{Partition, UnsupportedOp, partition};
use crate::compress::plan::Target;

/// What the user asks of every device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct FitTargets {
    /// The latency an inference must stay under, ms.
    pub max_latency_ms: Option<f64>,
}

/// What the accelerator of a device takes of the model.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AcceleratorFit {
    pub name: String,
    pub execution_provider: String,
    pub accelerator_nodes: usize,
    pub cpu_nodes: usize,
    pub partitions: usize,
    pub crossing_tensors: usize,
    pub unsupported: Vec<UnsupportedOp>,
}

/// One device's verdicts for one model form.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeviceFit {
    pub device: String,
    pub name: String,
    pub class: DeviceClass,
    /// "original" or the plan's export format.
    pub form: String,
    /// The arena the planner laid out for one inference (inputs and outputs included).
    pub peak_activation_bytes: u64,
    /// The most bytes alive during one node: no planner needs less.
    pub activation_lower_bound_bytes: u64,
    /// Every activation at its own address.
    pub naive_activation_bytes: u64,
    pub input_bytes: u64,
    pub output_bytes: u64,
    /// The weights as stored (flash, or storage).
    pub weight_bytes: u64,
    /// RAM the model needs: the arena, plus the weights where they are loaded into RAM.
    pub ram_needed_bytes: u64,
    pub ram_bytes: u64,
    pub fits_ram: bool,
    /// `ram_bytes - ram_needed_bytes` (negative when it does not fit).
    pub ram_margin_bytes: i64,
    /// Flash (microcontrollers) or storage the weights are checked against.
    pub weight_budget_bytes: Option<u64>,
    pub fits_flash: Option<bool>,
    pub flash_margin_bytes: Option<i64>,
    /// An estimate; `latency_basis` says how it was made.
    pub latency_ms: f64,
    pub latency_basis: String,
    pub energy_mj: f64,
    pub meets_latency: Option<bool>,
    pub accelerator: Option<AcceleratorFit>,
    /// The CPU kind the device's integer (QDQ) export is made for.
    pub integer_target: Target,
    pub runtime: String,
    /// Activation tensors of unknown size (counted as zero: give a concrete input shape).
    pub unknown_tensors: usize,
    pub notes: Vec<String>,
}

impl DeviceFit {
    /// Whether every verdict that applies is green.
    pub fn fits(&self) -> bool {
        self.fits_ram && self.fits_flash != Some(false) && self.meets_latency != Some(false)
    }
}

/// Everything computed for one device, for callers that draw more than the verdicts.
#[derive(Clone, Debug)]
pub struct DeviceDetail {
    pub fit: DeviceFit,
    pub partition: Partition,
    pub estimate: LatencyEstimate,
}

fn signed_margin(budget: u64, needed: u64) -> i64 {
    i64::try_from(budget)
        .unwrap_or(i64::MAX)
        .saturating_sub(i64::try_from(needed).unwrap_or(i64::MAX))
}

/// `graph` (with its memory plan) on `profile`.
pub fn fit_device(
    graph: &DeviceGraph,
    memory: &MemoryPlan,
    profile: &DeviceProfile,
    targets: FitTargets,
) -> DeviceDetail {
    let partition = partition(graph, profile);
    let estimate = estimate(graph, profile, &partition);
    let (input_bytes, output_bytes) = graph.io_bytes();
    let weights_in_ram = if profile.weights_in_ram() {
        graph.weight_ram_bytes
    } else {
        0
    };
    let ram_needed_bytes = memory.arena_bytes.saturating_add(weights_in_ram);
    let weight_budget_bytes = profile.weight_budget_bytes();
    let mut notes = Vec::new();
    if !profile.runtime.runs_onnx {
        notes.push(format!(
            "runs no ONNX runtime: figures assume {} after conversion",
            profile.runtime.name
        ));
    }
    if profile.weights_in_ram() && graph.weight_ram_bytes > graph.weight_bytes {
        notes.push(
            "weight-only int8: the runtime folds the weights back to float32 in RAM".to_owned(),
        );
    }
    if graph.unknown_tensors > 0 {
        notes.push(format!(
            "{} activation tensors have unknown sizes (counted as 0): give a concrete input shape",
            graph.unknown_tensors
        ));
    }
    if profile.runtime.integer_kernels_saturate {
        notes.push(
            "its int8 kernels saturate full-range weights: integer exports for it use 7-bit weights"
                .to_owned(),
        );
    }
    let fit = DeviceFit {
        device: profile.id.clone(),
        name: profile.name.clone(),
        class: profile.class,
        form: graph.form.clone(),
        peak_activation_bytes: memory.arena_bytes,
        activation_lower_bound_bytes: memory.lower_bound_bytes,
        naive_activation_bytes: memory.naive_bytes,
        input_bytes,
        output_bytes,
        weight_bytes: graph.weight_bytes,
        ram_needed_bytes,
        ram_bytes: profile.memory.ram_bytes,
        fits_ram: ram_needed_bytes <= profile.memory.ram_bytes,
        ram_margin_bytes: signed_margin(profile.memory.ram_bytes, ram_needed_bytes),
        weight_budget_bytes,
        fits_flash: weight_budget_bytes.map(|b| graph.weight_bytes <= b),
        flash_margin_bytes: weight_budget_bytes.map(|b| signed_margin(b, graph.weight_bytes)),
        latency_ms: estimate.latency_ms,
        latency_basis: estimate.basis.clone(),
        energy_mj: estimate.energy_mj,
        meets_latency: targets.max_latency_ms.map(|l| estimate.latency_ms <= l),
        accelerator: profile.accelerator.as_ref().map(|acc| AcceleratorFit {
            name: acc.name.clone(),
            execution_provider: acc.execution_provider.clone(),
            accelerator_nodes: partition.accelerator_nodes,
            cpu_nodes: partition.cpu_nodes,
            partitions: partition.accelerator_partitions,
            crossing_tensors: partition.crossing_tensors,
            unsupported: partition.unsupported.clone(),
        }),
        integer_target: profile.cpu.integer_target,
        runtime: profile.runtime.name.clone(),
        unknown_tensors: graph.unknown_tensors,
        notes,
    };
    DeviceDetail {
        fit,
        partition,
        estimate,
    }
}

/// `graph` on every profile (the memory plan is made once).
pub fn fit_devices<'a>(
    graph: &DeviceGraph,
    profiles: impl IntoIterator<Item = &'a DeviceProfile>,
    targets: FitTargets,
) -> (MemoryPlan, Vec<DeviceDetail>) {
    let memory = plan_memory(graph);
    let details = profiles
        .into_iter()
        .map(|p| fit_device(graph, &memory, p, targets))
        .collect();
    (memory, details)
}
