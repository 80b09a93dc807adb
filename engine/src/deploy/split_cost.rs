//! The cost of splitting a model between a device and a server at every prefix of the
//! execution order (Neurosurgeon's exploration, on the user's own model): the device runs
//! nodes `0..k`, sends the tensors that cross the cut, and the server runs `k..n`. Cut 0 is
//! cloud-only (the inputs are sent); cut `n` is device-only (nothing is sent).
//!
//! Times are the estimates of [`super::estimate`] on each side; the transfer takes the
//! round-trip time plus the bytes over the uplink bandwidth (the result's way back is inside
//! the round trip). Device energy is its compute energy, the radio's energy per byte sent, and
//! its idle power while it waits for the server.

use serde::Serialize;

use super::device::DeviceProfile;
use super::estimate::LatencyEstimate;
use super::graph::DeviceGraph;

/// The precision the crossing tensors are sent in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    #[default]
    Fp32,
    Fp16,
    Int8,
}

impl Transfer {
    /// Every choice, for menus.
    pub const ALL: [Transfer; 3] = [Self::Fp32, Self::Fp16, Self::Int8];

    /// The CLI/JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Int8 => "int8",
        }
    }

    /// Parses a CLI name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Bytes to send a float tensor of `fp32_bytes` (int8 adds a scale and zero point).
    pub fn bytes(self, fp32_bytes: u64) -> u64 {
        match self {
            Self::Fp32 => fp32_bytes,
            Self::Fp16 => fp32_bytes / 2,
            Self::Int8 => fp32_bytes / 4 + 8,
        }
    }
}

/// The link between the device and the server.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Link {
    pub uplink_mbps: f64,
    pub rtt_ms: f64,
    pub transfer: Transfer,
}

/// One cut: the device runs the first `after_nodes` nodes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CutCost {
    pub after_nodes: usize,
    /// The last node the device runs (`None` for cloud-only).
    pub last_device_node: Option<String>,
    /// Names of the tensors sent.
    pub tensors: Vec<String>,
    pub sent_bytes: u64,
    pub device_ms: f64,
    pub transfer_ms: f64,
    pub server_ms: f64,
    pub total_ms: f64,
    pub device_energy_mj: f64,
}

/// The tensors crossing each cut `k` in `0..=n`: read (or output) at a position `>= k`
/// and produced before `k` (graph inputs count as produced before 0). Graph outputs made
/// on the device stay there.
pub fn crossing_tensors(graph: &DeviceGraph) -> Vec<Vec<usize>> {
    let n = graph.nodes.len();
    // Each tensor crosses the cuts `first+1 ..= last_read` (`first` = its producer, or -1).
    let mut last_read = vec![None::<usize>; graph.tensors.len()];
    for (position, node) in graph.nodes.iter().enumerate() {
        for &t in &node.reads {
            last_read[t] = Some(last_read[t].map_or(position, |p: usize| p.max(position)));
        }
    }
    let mut starts: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    let mut ends: Vec<Vec<usize>> = vec![Vec::new(); n + 2];
    for (t, tensor) in graph.tensors.iter().enumerate() {
        let Some(last) = last_read[t] else { continue };
        let from = tensor.producer.map_or(0, |p| p + 1);
        if from <= last {
            starts[from].push(t);
            ends[last + 1].push(t);
        }
    }
    let mut live: std::collections::BTreeSet<usize> = Default::default();
    let mut cuts = Vec::with_capacity(n + 1);
    for k in 0..=n {
        for t in &ends[k] {
            live.remove(t);
        }
        live.extend(starts[k].iter().copied());
        cuts.push(live.iter().copied().collect());
    }
    cuts
}

/// Every cut's cost, from the per-node estimates of the same graph on the device and on the
/// server (`crossing` from [`crossing_tensors`]).
pub fn cut_costs(
    graph: &DeviceGraph,
    crossing: &[Vec<usize>],
    device: &DeviceProfile,
    on_device: &LatencyEstimate,
    on_server: &LatencyEstimate,
    link: Link,
) -> Vec<CutCost> {
    let n = graph.nodes.len();
    let prefix = |e: &LatencyEstimate| {
        let mut sums = Vec::with_capacity(n + 1);
        let mut acc = 0.0;
        sums.push(0.0);
        for node in &e.nodes {
            acc += node.latency_ms;
            sums.push(acc);
        }
        sums
    };
    let device_sum = prefix(on_device);
    let device_energy = {
        let mut sums = vec![0.0];
        let mut acc = 0.0;
        for node in &on_device.nodes {
            acc += node.energy_mj;
            sums.push(acc);
        }
        sums
    };
    let server_sum = prefix(on_server);
    let server_total = server_sum.last().copied().unwrap_or(0.0);
    let idle_w = device.power_w.idle.unwrap_or(0.0);
    let nj_per_byte = device.radio.map_or(0.0, |r| r.uplink_nj_per_byte);
    (0..=n)
        .map(|k| {
            let tensors = crossing.get(k).map_or(&[][..], Vec::as_slice);
            let sent_bytes = if k == n {
                0
            } else {
                tensors
                    .iter()
                    .filter_map(|&t| graph.tensors[t].bytes)
                    .map(|b| link.transfer.bytes(b))
                    .fold(0, u64::saturating_add)
            };
            let transfer_ms = if k == n {
                0.0
            } else {
                link.rtt_ms + sent_bytes as f64 * 8.0 / (link.uplink_mbps.max(1e-6) * 1e3)
            };
            let server_ms = server_total - server_sum[k];
            let device_ms = device_sum[k];
            let device_energy_mj = device_energy[k]
                + sent_bytes as f64 * nj_per_byte * 1e-6
                + idle_w * (transfer_ms + server_ms);
            CutCost {
                after_nodes: k,
                last_device_node: k.checked_sub(1).map(|p| graph.nodes[p].name.clone()),
                tensors: tensors
                    .iter()
                    .map(|&t| graph.tensors[t].name.clone())
                    .collect(),
                sent_bytes,
                device_ms,
                transfer_ms,
                server_ms,
                total_ms: device_ms + transfer_ms + server_ms,
                device_energy_mj,
            }
        })
        .collect()
}

/// The cut with the lowest total latency (the first of equals).
pub fn best_cut(costs: &[CutCost]) -> Option<&CutCost> {
    costs
        .iter()
        .min_by(|a, b| a.total_ms.total_cmp(&b.total_ms))
}
