//! Peak activation memory of one inference: every activation tensor lives from the node that
//! writes it to the last node that reads it (graph inputs from the start, graph outputs to
//! the end), and an arena planner places them at offsets so that tensors alive at the same
//! time never share bytes — TFLite Micro's `GreedyMemoryPlanner` strategy: largest tensor
//! first, each at the lowest offset that does not collide with a tensor already placed whose
//! lifetime overlaps its own.
//!
//! The arena is never smaller than the most bytes alive during one node (the lower bound
//! reported next to it) and never larger than the sum of all activations (what a runtime
//! that reuses nothing needs). Runtimes that run some ops in place (a `Reshape` sharing its
//! input's buffer) can use less; this planner does not alias.

use serde::Serialize;

use super::graph::DeviceGraph;

/// Where one tensor sits in the arena.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// Index into [`DeviceGraph::tensors`].
    pub tensor: usize,
    pub offset_bytes: u64,
    pub bytes: u64,
    /// First and last positions in the execution order where it is alive.
    pub first: usize,
    pub last: usize,
}

/// The memory plan of one inference.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MemoryPlan {
    /// Size of the arena the planner laid out: the peak activation memory.
    pub arena_bytes: u64,
    /// The most bytes alive while one node runs: no planner can do better without aliasing.
    pub lower_bound_bytes: u64,
    /// Every activation at its own address (no reuse).
    pub naive_bytes: u64,
    /// Per node (execution order), the bytes alive while it runs (its inputs and outputs
    /// included).
    pub live_bytes: Vec<u64>,
    pub placements: Vec<Placement>,
}

/// Lays out the activations of `graph` in one arena.
pub fn plan_memory(graph: &DeviceGraph) -> MemoryPlan {
    let steps = graph.nodes.len().max(1);
    let mut buffers: Vec<Placement> = graph
        .tensors
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let bytes = t.bytes.filter(|&b| b > 0)?;
            let first = t.producer.unwrap_or(0).min(steps - 1);
            Some(Placement {
                tensor: i,
                offset_bytes: 0,
                bytes,
                first,
                last: t.last_use.clamp(first, steps - 1),
            })
        })
        .collect();

    // Live bytes per step, by a difference array over the lifetimes.
    let mut delta = vec![0i128; steps + 1];
    for b in &buffers {
        delta[b.first] += i128::from(b.bytes);
        delta[b.last + 1] -= i128::from(b.bytes);
    }
    let mut live_bytes = Vec::with_capacity(steps);
    let mut running = 0i128;
    for d in delta.iter().take(steps) {
        running += d;
        live_bytes.push(u64::try_from(running).unwrap_or(u64::MAX));
    }
    let lower_bound_bytes = live_bytes.iter().copied().max().unwrap_or(0);
    let naive_bytes = buffers.iter().fold(0u64, |a, b| a.saturating_add(b.bytes));

    // Largest first; ties by first use, then tensor index, so the plan is deterministic.
    buffers.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then(a.first.cmp(&b.first))
            .then(a.tensor.cmp(&b.tensor))
    });
    // Placed buffers alive at each step, so a buffer only checks those it overlaps in time.
    let mut alive_at: Vec<Vec<usize>> = vec![Vec::new(); steps];
    let mut arena_bytes = 0u64;
    let mut overlapping: Vec<(u64, u64)> = Vec::new();
    let mut seen: Vec<u32> = vec![0; buffers.len()];
    for i in 0..buffers.len() {
        let (first, last, bytes) = (buffers[i].first, buffers[i].last, buffers[i].bytes);
        overlapping.clear();
        let stamp = u32::try_from(i + 1).unwrap_or(u32::MAX);
        for step in &alive_at[first..=last] {
            for &j in step {
                if seen[j] != stamp {
                    seen[j] = stamp;
                    let end = buffers[j].offset_bytes.saturating_add(buffers[j].bytes);
                    overlapping.push((buffers[j].offset_bytes, end));
                }
            }
        }
        overlapping.sort_unstable();
        // The lowest gap that holds `bytes`.
        let mut offset = 0u64;
        for &(start, end) in &overlapping {
            if start >= offset.saturating_add(bytes) {
                break;
            }
            offset = offset.max(end);
        }
        buffers[i].offset_bytes = offset;
        arena_bytes = arena_bytes.max(offset.saturating_add(bytes));
        for step in &mut alive_at[first..=last] {
            step.push(i);
        }
    }
    buffers.sort_by_key(|b| b.tensor);
    MemoryPlan {
        arena_bytes,
        lower_bound_bytes,
        naive_bytes,
        live_bytes,
        placements: buffers,
    }
}

#[cfg(test)]
#[path = "memory/tests.rs"]
mod tests;
