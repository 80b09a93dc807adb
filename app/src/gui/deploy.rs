//! What the Devices panel shows, kept with the session: every device's verdicts for the
//! original and the current plan, the chosen device's accelerator placement per node (the
//! graph overlay), the memory alive at each node (the Layers table) and the split costs.
//! Recomputed on the UI thread when the plan, the format or a choice changes (a pass over
//! the graph per device, milliseconds on the models the studio opens).

use std::sync::Arc;

use edgefit_engine::compress::compressor::{Compression, Compressor};
use edgefit_engine::compress::plan::Recipe;
use edgefit_engine::deploy::device::DeviceCatalog;
use edgefit_engine::deploy::estimate::estimate;
use edgefit_engine::deploy::fit::{DeviceFit, FitTargets, fit_devices};
use edgefit_engine::deploy::graph::DeviceGraph;
use edgefit_engine::deploy::memory::{MemoryPlan, plan_memory};
use edgefit_engine::deploy::partition::{Placement, partition};
use edgefit_engine::deploy::split::{Cut, prefix_cuts};
use edgefit_engine::deploy::split_cost::{CutCost, Link, Transfer, cut_costs};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::model::load::LoadedModel;

/// What the person chose in the Devices panel (saved with nothing: a view setting).
#[derive(Clone, Debug, PartialEq)]
pub struct DeployChoices {
    /// The device whose placement colours the graph and whose split is explored.
    pub device: Option<String>,
    pub max_latency_ms: Option<f64>,
    /// The split's server, uplink and transfer precision.
    pub server: String,
    pub link: Link,
    /// The cut to export (the device runs this many nodes); `None`: the best one.
    pub cut: Option<usize>,
}

impl Default for DeployChoices {
    fn default() -> Self {
        Self {
            device: None,
            max_latency_ms: None,
            server: "x86-server-no-vnni".to_owned(),
            link: Link {
                uplink_mbps: 20.0,
                rtt_ms: 30.0,
                transfer: Transfer::Fp32,
            },
            cut: None,
        }
    }
}

/// One device's verdicts.
#[derive(Clone, Debug)]
pub struct DeviceRow {
    pub original: DeviceFit,
    pub plan: Option<DeviceFit>,
}

/// The Devices panel's state for one session.
pub struct DeployState {
    pub catalog: Arc<DeviceCatalog>,
    pub choices: DeployChoices,
    /// The plan, format and choices the figures below are for.
    key: Option<(Recipe, ExportFormat, DeployChoices)>,
    original: Option<(Arc<DeviceGraph>, MemoryPlan)>,
    /// Every prefix cut of the model with the tensors that cross it (made once).
    prefix_cuts: Option<Arc<Vec<Cut>>>,
    pub rows: Vec<DeviceRow>,
    /// Per `GraphView` node: where the chosen device runs it under the plan, and whether its
    /// accelerator refused it (`None`: no device chosen, or a subgraph node).
    pub placement: Vec<Option<(Placement, bool)>>,
    /// Per `GraphView` node: bytes alive while it runs, under the plan (else the original).
    pub live_bytes: Vec<Option<u64>>,
    /// The split costs of the original model between the chosen device and the server.
    pub cuts: Vec<CutCost>,
    /// Why the split cannot be explored (no device chosen, unknown server).
    pub split_note: Option<String>,
    /// Per evaluated point (parallel to `Session::points`): the chosen device's verdicts for
    /// its plan; empty without a device.
    pub point_fits: Vec<Option<DeviceFit>>,
    /// The points and choices `point_fits` are for.
    points_key: Option<(Vec<(Recipe, ExportFormat)>, DeployChoices)>,
}

impl Default for DeployState {
    fn default() -> Self {
        Self {
            catalog: Arc::new(DeviceCatalog::load()),
            choices: DeployChoices::default(),
            key: None,
            original: None,
            prefix_cuts: None,
            rows: Vec::new(),
            placement: Vec::new(),
            live_bytes: Vec::new(),
            cuts: Vec::new(),
            split_note: None,
            point_fits: Vec::new(),
            points_key: None,
        }
    }
}

impl DeployState {
    /// Recomputes what changed since the last frame.
    pub fn update(
        &mut self,
        model: &LoadedModel,
        compressor: &Compressor,
        compression: Option<&Compression>,
        recipe: &Recipe,
        format: ExportFormat,
    ) {
        // Called every frame: compared in place, cloned only when something changed.
        let same = self
            .key
            .as_ref()
            .is_some_and(|(r, f, c)| r == recipe && *f == format && *c == self.choices);
        if same && compression.is_some_and(|c| &c.recipe == recipe) {
            return;
        }
        let compression = compression.filter(|c| &c.recipe == recipe);
        self.key = compression.map(|_| (recipe.clone(), format, self.choices.clone()));
        let (original, original_memory) = self
            .original
            .get_or_insert_with(|| {
                let graph = DeviceGraph::original(model);
                let memory = plan_memory(&graph);
                (Arc::new(graph), memory)
            })
            .clone();
        let targets = FitTargets {
            max_latency_ms: self.choices.max_latency_ms,
        };
        let profiles = &self.catalog.profiles;
        let (_, originals) = fit_devices(&original, profiles, targets);
        let plan_graph = compression
            .filter(|c| !plan_is_original(c, format))
            .map(|c| DeviceGraph::planned(model, compressor, c, format));
        let plan = plan_graph.as_ref().map(|g| {
            let (memory, details) = fit_devices(g, profiles, targets);
            (memory, details)
        });
        self.rows = originals
            .into_iter()
            .enumerate()
            .map(|(i, o)| DeviceRow {
                original: o.fit,
                plan: plan
                    .as_ref()
                    .and_then(|(_, d)| d.get(i))
                    .map(|d| d.fit.clone()),
            })
            .collect();

        // Per node of the model: live bytes and the chosen device's placement.
        let nodes = model.graph.nodes.len();
        let (graph, memory) = match (&plan_graph, &plan) {
            (Some(g), Some((m, _))) => (g, m),
            _ => (&*original, &original_memory),
        };
        self.live_bytes = vec![None; nodes];
        for (position, node) in graph.nodes.iter().enumerate() {
            if let Some(slot) = self.live_bytes.get_mut(node.node) {
                *slot = memory.live_bytes.get(position).copied();
            }
        }
        self.placement = vec![None; nodes];
        self.cuts.clear();
        self.split_note = None;
        let Some(device) = self
            .choices
            .device
            .as_deref()
            .and_then(|id| self.catalog.get(id))
        else {
            self.split_note = Some("Choose a device to explore a split.".to_owned());
            return;
        };
        let placed = partition(graph, device);
        let refused: std::collections::HashSet<&str> =
            placed.unsupported.iter().map(|u| u.op.as_str()).collect();
        for (position, node) in graph.nodes.iter().enumerate() {
            // A Constant is a weight: it runs nowhere.
            if node.fused && node.reads.is_empty() {
                continue;
            }
            if let (Some(slot), Some(p)) = (
                self.placement.get_mut(node.node),
                placed.placement.get(position),
            ) {
                let was_refused = *p == Placement::Cpu
                    && device.accelerator.is_some()
                    && refused.contains(node.op.as_str());
                *slot = Some((*p, was_refused));
            }
        }
        let Some(server) = self.catalog.get(&self.choices.server) else {
            self.split_note = Some(format!("No server profile `{}`.", self.choices.server));
            return;
        };
        // The split is of the original model, in float32 on both sides.
        let on_device = estimate(&original, device, &partition(&original, device));
        let on_server = estimate(&original, server, &partition(&original, server));
        let cuts = self
            .prefix_cuts
            .get_or_insert_with(|| Arc::new(prefix_cuts(model)))
            .clone();
        self.cuts = cut_costs(&cuts, device, &on_device, &on_server, self.choices.link);
    }
}

impl DeployState {
    /// The chosen device's verdicts for each evaluated point's plan, recomputed when the
    /// points or the choices change. Each plan is applied again (from the compressor's
    /// cache where layers match); `large` models skip it (seconds on the UI thread).
    pub fn update_points(
        &mut self,
        model: &LoadedModel,
        compressor: &Compressor,
        points: &[super::points::EvalPoint],
        large: bool,
    ) {
        // Called every frame: compared in place, cloned only when something changed.
        let same = self.points_key.as_ref().is_some_and(|(plans, choices)| {
            *choices == self.choices
                && plans.len() == points.len()
                && plans
                    .iter()
                    .zip(points)
                    .all(|((r, f), p)| *r == p.recipe && *f == p.format)
        });
        if same {
            return;
        }
        self.points_key = Some((
            points
                .iter()
                .map(|p| (p.recipe.clone(), p.format))
                .collect(),
            self.choices.clone(),
        ));
        self.point_fits.clear();
        let Some(device) = self
            .choices
            .device
            .as_deref()
            .and_then(|id| self.catalog.get(id))
        else {
            return;
        };
        if large {
            return;
        }
        let targets = FitTargets {
            max_latency_ms: self.choices.max_latency_ms,
        };
        let mut scratch = compressor.sharing_weights();
        let cancel = edgefit_engine::CancelToken::new();
        self.point_fits = points
            .iter()
            .map(|p| {
                let compression = scratch.apply(&p.recipe, &cancel).ok()?;
                let graph = DeviceGraph::planned(model, &scratch, &compression, p.format);
                let (_, details) = fit_devices(&graph, [device], targets);
                details.into_iter().next().map(|d| d.fit)
            })
            .collect();
    }
}

/// Whether the plan leaves the model as it is (no row of its own then).
fn plan_is_original(c: &Compression, format: ExportFormat) -> bool {
    format == ExportFormat::Fp32
        && c.layers.iter().all(|l| {
            let s = &l.report.settings;
            s.exclude
                || (s.prune_ratio == 0.0
                    && s.precision == edgefit_engine::compress::plan::Precision::Float32)
        })
}
