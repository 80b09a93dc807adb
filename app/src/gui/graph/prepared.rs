//! A laid-out graph with what the Graph panel looks up every frame (built on a background
//! thread): box colours, search keys, layer <-> box maps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefit_engine::CancelToken;
use edgefit_engine::NoProgress;
use edgefit_engine::analyse::layout::{
    BoxKind, GraphLayout, GroupTree, Grouping, LayoutOptions, box_label, layout_graph_grouped,
};
use edgefit_engine::model::graph::GraphView;
use egui::Pos2;

use crate::gui::graph_paint::{EdgeIndex, Family, visible_in_layer};

/// A laid-out graph with what the panel looks up every frame.
pub struct PreparedGraph {
    pub layout: GraphLayout,
    /// How long the layout (and the index) took on the background thread.
    pub elapsed: Duration,
    /// The groups this layout opens.
    pub grouping: Grouping,
    pub(super) index: EdgeIndex,
    pub(super) families: Vec<Family>,
    /// What search looks in: inputs, every node (subgraphs' too), outputs, with the lower-case
    /// `name op` (or value name) of each.
    pub(super) keys: Vec<(BoxKind, String)>,
    /// Index into `compressor.layers` of each box that is a compressible layer.
    pub(super) layer_of_box: Vec<Option<usize>>,
    /// Box of each compressible layer (when the layer's node is a box of its own).
    box_of_layer: Vec<Option<usize>>,
    /// Graph node of each compressible layer.
    pub(super) layer_nodes: Vec<usize>,
    /// Compressible layers inside each box that is a collapsed group (else empty).
    pub(super) group_layers: Vec<Vec<usize>>,
    box_of_kind: HashMap<BoxKind, usize>,
}

impl PreparedGraph {
    /// Lays out `view` (`tree`: its groups when already known); `layer_nodes[i]` is the graph
    /// node of compressible layer `i`.
    pub fn build(
        view: &GraphView,
        layer_nodes: &[usize],
        tree: Option<Arc<GroupTree>>,
        grouping: Grouping,
        cancel: &CancelToken,
    ) -> Result<Self, String> {
        let start = Instant::now();
        let tree = tree.unwrap_or_else(|| Arc::new(GroupTree::new(view)));
        let layout = layout_graph_grouped(
            view,
            tree,
            &grouping,
            &LayoutOptions::default(),
            &NoProgress,
            cancel,
        )
        .map_err(|e| e.to_string())?;
        let index = EdgeIndex::new(&layout);
        let box_of_kind: HashMap<BoxKind, usize> = layout
            .boxes
            .iter()
            .enumerate()
            .map(|(b, bx)| (bx.kind, b))
            .collect();
        let mut layer_of_box = vec![None; layout.boxes.len()];
        let mut group_layers = vec![Vec::new(); layout.boxes.len()];
        let box_of_layer: Vec<Option<usize>> = layer_nodes
            .iter()
            .enumerate()
            .map(|(l, n)| {
                let own = box_of_kind.get(&BoxKind::Node(*n)).copied();
                if let Some(b) = own {
                    layer_of_box[b] = Some(l);
                } else if let Some(b) = layout.node_box.get(*n).copied().flatten()
                    && matches!(layout.boxes[b].kind, BoxKind::Group(_))
                {
                    group_layers[b].push(l);
                }
                own
            })
            .collect();
        let families = layout
            .boxes
            .iter()
            .map(|bx| match bx.kind {
                BoxKind::Node(n) => Family::of_op(view.nodes.get(n).map_or("", |n| &n.op_type)),
                BoxKind::Input(_) => Family::Input,
                BoxKind::Output(_) => Family::Output,
                BoxKind::Group(_) => Family::Group,
            })
            .collect();
        let value = |kind| (kind, box_label(view, kind).to_lowercase());
        let keys = (0..view.inputs.len())
            .map(|i| value(BoxKind::Input(i)))
            .chain(view.nodes.iter().enumerate().map(|(n, node)| {
                let key = format!("{} {}", node.name, node.op_type).to_lowercase();
                (BoxKind::Node(n), key)
            }))
            .chain((0..view.outputs.len()).map(|i| value(BoxKind::Output(i))))
            .collect();
        Ok(Self {
            elapsed: start.elapsed(),
            layout,
            grouping,
            index,
            families,
            keys,
            layer_of_box,
            box_of_layer,
            layer_nodes: layer_nodes.to_vec(),
            group_layers,
            box_of_kind,
        })
    }

    /// The box under layout point `p`.
    pub fn hit(&self, p: Pos2) -> Option<usize> {
        let pitch = self.layout.layer_pitch;
        if p.y < 0.0 || pitch <= 0.0 {
            return None;
        }
        let l = (p.y / pitch).floor() as usize;
        visible_in_layer(&self.layout, l, p.x, p.x)
            .iter()
            .copied()
            .find(|&b| {
                let bx = &self.layout.boxes[b];
                p.x >= bx.x && p.x <= bx.x + bx.w && p.y >= bx.y && p.y <= bx.y + bx.h
            })
    }

    /// The box of compressible layer `l` (an index into `compressor.layers`), when its node
    /// is drawn as a box of its own.
    pub fn box_of_layer(&self, l: usize) -> Option<usize> {
        self.box_of_layer.get(l).copied().flatten()
    }

    /// The compressible layer a box stands for.
    pub fn layer_of_box(&self, b: usize) -> Option<usize> {
        self.layer_of_box.get(b).copied().flatten()
    }

    /// The box standing for `kind` (for a node: its own box only).
    pub fn box_of(&self, kind: BoxKind) -> Option<usize> {
        self.box_of_kind.get(&kind).copied()
    }

    /// The box `kind` is drawn in: a node folded into a collapsed group or subgraph gives
    /// the box that holds it.
    pub fn box_showing(&self, kind: BoxKind) -> Option<usize> {
        match kind {
            BoxKind::Node(n) => self.layout.node_box.get(n).copied().flatten(),
            _ => self.box_of(kind),
        }
    }

    /// The groups of the graph.
    pub fn groups(&self) -> &GroupTree {
        &self.layout.groups
    }

    /// Name shown for a box: the node name, the input/output name, or the group path.
    pub fn name<'a>(&'a self, view: &'a GraphView, b: usize) -> &'a str {
        match self.layout.boxes.get(b) {
            Some(bx) => self.name_of(view, bx.kind),
            None => "?",
        }
    }

    /// Name of a node, input, output or group.
    pub fn name_of<'a>(&'a self, view: &'a GraphView, kind: BoxKind) -> &'a str {
        match kind {
            BoxKind::Node(n) => view.nodes.get(n).map_or("?", |n| n.name.as_str()),
            BoxKind::Group(g) => self.groups().groups.get(g).map_or("?", |g| &g.path),
            kind => box_label(view, kind),
        }
    }
}
