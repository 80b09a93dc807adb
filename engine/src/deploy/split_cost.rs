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
use super::split::Cut;
pub use super::split::Transfer;

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

/// Every cut's cost, from the cuts of [`super::split::prefix_cuts`] and the per-node
/// estimates of the model on the device and on the server (the same execution order: one
/// estimate per main-graph node). Tensors of unknown size count as zero bytes.
pub fn cut_costs(
    cuts: &[Cut],
    device: &DeviceProfile,
    on_device: &LatencyEstimate,
    on_server: &LatencyEstimate,
    link: Link,
) -> Vec<CutCost> {
    let prefix = |values: &mut dyn Iterator<Item = f64>| {
        let mut sums = vec![0.0];
        let mut acc = 0.0;
        for v in values {
            acc += v;
            sums.push(acc);
        }
        sums
    };
    let device_sum = prefix(&mut on_device.nodes.iter().map(|n| n.latency_ms));
    let device_energy = prefix(&mut on_device.nodes.iter().map(|n| n.energy_mj));
    let server_sum = prefix(&mut on_server.nodes.iter().map(|n| n.latency_ms));
    let server_total = server_sum.last().copied().unwrap_or(0.0);
    let at = |sums: &[f64], k: usize| sums.get(k).or(sums.last()).copied().unwrap_or(0.0);
    let n = cuts.len().saturating_sub(1);
    let idle_w = device.power_w.idle.unwrap_or(0.0);
    let nj_per_byte = device.radio.map_or(0.0, |r| r.uplink_nj_per_byte);
    cuts.iter()
        .map(|cut| {
            let k = cut.after_nodes;
            let device_only = k >= n;
            let sent_bytes = if device_only {
                0
            } else {
                cut.tensors
                    .iter()
                    .filter_map(|t| t.bytes(link.transfer))
                    .fold(0, u64::saturating_add)
            };
            let transfer_ms = if device_only {
                0.0
            } else {
                link.rtt_ms + sent_bytes as f64 * 8.0 / (link.uplink_mbps.max(1e-6) * 1e3)
            };
            let server_ms = (server_total - at(&server_sum, k)).max(0.0);
            let device_ms = at(&device_sum, k);
            let device_energy_mj = at(&device_energy, k)
                + sent_bytes as f64 * nj_per_byte * 1e-6
                + idle_w * (transfer_ms + server_ms);
            CutCost {
                after_nodes: k,
                last_device_node: cut.last_node.clone(),
                tensors: cut.names(),
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
