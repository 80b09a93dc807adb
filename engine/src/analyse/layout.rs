//! A layered (Sugiyama-style) layout of the main graph, top to bottom, in plain `f32`
//! coordinates: longest-path layering, dummy vertices for edges that span several layers,
//! barycenter ordering sweeps against crossings, then coordinate assignment.
//!
//! Boxes are the main graph's nodes plus one box per graph input and output; initializers
//! (weights) are not boxes. [`layout_graph_grouped`] draws collapsed groups (name prefixes,
//! subgraph bodies: see [`groups`]) as one box each and the nodes of open subgraph bodies.
//! Everything is deterministic: the same graph gives the same layout.

pub mod groups;
mod proper;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::Result;
use crate::job::{CancelToken, ProgressSink, report};
use crate::model::graph::GraphView;

pub use groups::{Group, GroupKind, GroupTree, Grouping};
use proper::ProperGraph;

/// What a box of the layout stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoxKind {
    /// A main-graph node: an index into [`GraphView::nodes`].
    Node(usize),
    /// A graph input: an index into [`GraphView::inputs`].
    Input(usize),
    /// A graph output: an index into [`GraphView::outputs`].
    Output(usize),
    /// A collapsed group: an index into [`GroupTree::groups`] of [`GraphLayout::groups`].
    Group(usize),
}

/// One box, placed: `x`/`y` is its top-left corner.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutBox {
    pub kind: BoxKind,
    /// Layer index, 0 at the top.
    pub layer: usize,
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl LayoutBox {
    /// The centre of the box.
    pub fn centre(&self) -> [f32; 2] {
        [self.x + self.w / 2.0, self.y + self.h / 2.0]
    }
}

/// One edge from a producer box to a consumer box, as a polyline from the bottom of the
/// producer to the top of the consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutEdge {
    /// Index into [`GraphLayout::boxes`] of the producer.
    pub from: usize,
    /// Index into [`GraphLayout::boxes`] of the consumer.
    pub to: usize,
    /// At least two points, top to bottom for an edge that points downward.
    pub points: Vec<[f32; 2]>,
}

/// Sizes and spacing of the layout, in layout units (points at zoom 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayoutOptions {
    /// Width of one label character.
    pub char_width: f32,
    /// Horizontal padding inside a box, each side.
    pub padding: f32,
    pub min_width: f32,
    pub node_height: f32,
    /// Horizontal space between two boxes of a layer.
    pub node_gap: f32,
    /// Vertical space between two layers.
    pub layer_gap: f32,
    /// Barycenter sweeps (each one down or up) to reduce crossings.
    pub sweeps: usize,
}

impl Default for LayoutOptions {
    fn default() -> Self {
        Self {
            char_width: 7.5,
            padding: 10.0,
            min_width: 56.0,
            node_height: 28.0,
            node_gap: 18.0,
            layer_gap: 34.0,
            sweeps: 6,
        }
    }
}

impl LayoutOptions {
    /// Vertical distance between the tops of two consecutive layers.
    pub fn layer_pitch(&self) -> f32 {
        self.node_height + self.layer_gap
    }
}

/// The placed graph.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphLayout {
    pub boxes: Vec<LayoutBox>,
    pub edges: Vec<LayoutEdge>,
    /// Box indices of each layer, left to right (boxes of a layer never overlap).
    pub layers: Vec<Vec<usize>>,
    /// Extent of everything placed: boxes and edge points lie in `0..width` × `0..height`.
    pub width: f32,
    pub height: f32,
    /// Vertical distance between the tops of two consecutive layers.
    pub layer_pitch: f32,
    /// Edges drawn as straight lines: against the flow (a cycle) or over the dummy budget.
    pub unrouted_edges: usize,
    /// Crossings between routed edge pieces of consecutive layers (the ordering keeps the
    /// sweep with the fewest).
    pub crossings: u64,
    /// The text of each box: op type (with a `+ then_branch (12 nodes)` marker per collapsed
    /// subgraph), input or output name, or a group's path and node count.
    pub labels: Vec<String>,
    /// The box each node of the view is drawn in (its own, a collapsed group's, or the owner
    /// of a collapsed subgraph), by index into [`GraphView::nodes`].
    pub node_box: Vec<Option<usize>>,
    /// The groups of the graph, which [`BoxKind::Group`] indexes.
    pub groups: Arc<GroupTree>,
}

/// The op type of a node, the name of a graph input or output (`group` for a group: its
/// text is in [`GraphLayout::labels`]).
pub fn box_label(view: &GraphView, kind: BoxKind) -> &str {
    match kind {
        BoxKind::Node(i) => view.nodes.get(i).map_or("?", |n| n.op_type.as_str()),
        BoxKind::Input(i) => view.inputs.get(i).map_or("?", |v| v.name.as_str()),
        BoxKind::Output(i) => view.outputs.get(i).map_or("?", |v| v.name.as_str()),
        BoxKind::Group(_) => "group",
    }
}

/// Lays out the main graph of `view`, subgraphs collapsed into their owners, no name groups.
/// Returns `Err(Cancelled)` once `cancel` is set.
pub fn layout_graph(
    view: &GraphView,
    options: &LayoutOptions,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<GraphLayout> {
    let tree = Arc::new(GroupTree::new(view));
    layout_graph_grouped(view, tree, &Grouping::default(), options, progress, cancel)
}

/// Lays out `view` with the groups of `tree` (built from this view) collapsed but for those
/// `grouping` opens. Returns `Err(Cancelled)` once `cancel` is set.
pub fn layout_graph_grouped(
    view: &GraphView,
    tree: Arc<GroupTree>,
    grouping: &Grouping,
    options: &LayoutOptions,
    progress: &dyn ProgressSink,
    cancel: &CancelToken,
) -> Result<GraphLayout> {
    report(progress, "graph layout: layering", 0, 4);
    let groups::Visible {
        kinds,
        edges,
        labels,
        node_box,
    } = groups::visible(view, &tree, grouping);
    let n = kinds.len();
    let mut preds: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut succs: Vec<Vec<u32>> = vec![Vec::new(); n];
    for &(u, v) in &edges {
        succs[u as usize].push(v);
        preds[v as usize].push(u);
    }
    let layer = assign_layers(&kinds, &preds, &succs);
    cancel.check()?;

    report(progress, "graph layout: routing", 1, 4);
    let mut graph = ProperGraph::new(&layer);
    let mut order: Vec<usize> = (0..edges.len()).collect();
    let span = |e: usize| layer[edges[e].1 as usize] as i64 - layer[edges[e].0 as usize] as i64;
    order.sort_by_key(|&e| span(e));
    let budget = (4 * n).max(20_000);
    let mut chains: Vec<Vec<u32>> = vec![Vec::new(); edges.len()];
    let mut unrouted = 0;
    for e in order {
        let (u, v) = edges[e];
        let s = span(e);
        if s >= 1 && (s as usize - 1) + graph.dummies() <= budget {
            chains[e] = graph.route(u, v);
        } else {
            unrouted += 1;
            chains[e] = vec![u, v];
        }
    }
    cancel.check()?;

    report(progress, "graph layout: ordering", 2, 4);
    let mut widths: Vec<f32> = labels
        .iter()
        .map(|label| {
            let chars = label.chars().count() as f32;
            (chars * options.char_width + 2.0 * options.padding).max(options.min_width)
        })
        .collect();
    widths.resize(graph.layer.len(), 0.0);
    let mut layers = graph.initial_order();
    let mut crossings = graph.crossings(&layers);
    let mut best = layers.clone();
    for sweep in 0..options.sweeps {
        if crossings == 0 {
            break;
        }
        cancel.check()?;
        graph.sweep(&mut layers, sweep % 2 == 0);
        let now = graph.crossings(&layers);
        if now < crossings {
            crossings = now;
            best.clone_from(&layers);
        }
    }
    let layers = best;

    report(progress, "graph layout: placing", 3, 4);
    let cx = graph.place(&layers, &widths, options);
    cancel.check()?;

    // Boxes, shifted so that everything starts at x = 0.
    let min_x = (0..n)
        .map(|v| cx[v] - widths[v] / 2.0)
        .chain((n..cx.len()).map(|v| cx[v]))
        .fold(f32::INFINITY, f32::min);
    let shift = if min_x.is_finite() { -min_x } else { 0.0 };
    let pitch = options.layer_pitch();
    let boxes: Vec<LayoutBox> = kinds
        .iter()
        .enumerate()
        .map(|(v, &kind)| LayoutBox {
            kind,
            layer: graph.layer[v] as usize,
            x: cx[v] - widths[v] / 2.0 + shift,
            y: graph.layer[v] as f32 * pitch,
            w: widths[v],
            h: options.node_height,
        })
        .collect();
    let layout_edges = edge_polylines(&boxes, &chains, &graph.layer, &cx, shift, options);
    let layer_count = layers.len();
    let real_layers: Vec<Vec<usize>> = layers
        .into_iter()
        .map(|l| {
            l.into_iter()
                .filter(|&v| (v as usize) < n)
                .map(|v| v as usize)
                .collect()
        })
        .collect();
    let width = boxes
        .iter()
        .map(|b| b.x + b.w)
        .chain((n..cx.len()).map(|v| cx[v] + shift))
        .fold(0f32, f32::max);
    report(progress, "graph layout: placing", 4, 4);
    Ok(GraphLayout {
        boxes,
        edges: layout_edges,
        layers: real_layers,
        width,
        height: if layer_count == 0 {
            0.0
        } else {
            (layer_count - 1) as f32 * pitch + options.node_height
        },
        layer_pitch: pitch,
        unrouted_edges: unrouted,
        crossings,
        labels,
        node_box,
        groups: tree,
    })
}

/// Longest-path layering in topological order; vertices on a cycle are forced in index
/// order. Vertices with no graph input upstream (constants and what is computed from them
/// alone) then move down next to their first consumer.
fn assign_layers(kinds: &[BoxKind], preds: &[Vec<u32>], succs: &[Vec<u32>]) -> Vec<u32> {
    let n = kinds.len();
    let mut indegree: Vec<usize> = preds.iter().map(Vec::len).collect();
    let mut done = vec![false; n];
    let mut layer = vec![0u32; n];
    let mut queue: VecDeque<usize> = (0..n).filter(|&v| indegree[v] == 0).collect();
    let mut topo = Vec::with_capacity(n);
    let mut next_forced = 0;
    while topo.len() < n {
        let v = match queue.pop_front() {
            Some(v) => v,
            None => {
                while next_forced < n && done[next_forced] {
                    next_forced += 1;
                }
                if next_forced >= n {
                    break;
                }
                next_forced
            }
        };
        if done[v] {
            continue;
        }
        done[v] = true;
        topo.push(v);
        layer[v] = preds[v]
            .iter()
            .filter(|&&u| done[u as usize])
            .map(|&u| layer[u as usize] + 1)
            .max()
            .unwrap_or(0);
        for &w in &succs[v] {
            let w = w as usize;
            if !done[w] {
                indegree[w] = indegree[w].saturating_sub(1);
                if indegree[w] == 0 {
                    queue.push_back(w);
                }
            }
        }
    }
    // Constant subgraphs (no graph input upstream: a Constant, or a Reshape/Cast/... of
    // constants, as exporters leave weight preprocessing in the graph) hang right above
    // their first consumer instead of piling up at the top with long edges down.
    let mut constant_only = vec![false; n];
    for &v in &topo {
        constant_only[v] = !matches!(kinds[v], BoxKind::Input(_))
            && preds[v].iter().all(|&u| constant_only[u as usize]);
    }
    for &v in topo.iter().rev() {
        if constant_only[v] {
            let lowest = succs[v]
                .iter()
                .map(|&w| layer[w as usize])
                .filter(|&l| l > layer[v])
                .min();
            if let Some(l) = lowest {
                layer[v] = l - 1;
            }
        }
    }
    layer
}

/// Polylines: bottom of the producer, down each dummy's column, top of the consumer. Edges
/// entering a box are spread across its top in the left-to-right order of their producers.
fn edge_polylines(
    boxes: &[LayoutBox],
    chains: &[Vec<u32>],
    layer: &[u32],
    cx: &[f32],
    shift: f32,
    options: &LayoutOptions,
) -> Vec<LayoutEdge> {
    let pitch = options.layer_pitch();
    let mut incoming: Vec<Vec<(f32, usize)>> = vec![Vec::new(); boxes.len()];
    for (e, chain) in chains.iter().enumerate() {
        if let (Some(&last), Some(&before)) = (chain.last(), chain.get(chain.len().wrapping_sub(2)))
        {
            incoming[last as usize].push((cx[before as usize], e));
        }
    }
    let mut entry = vec![0f32; chains.len()];
    for (b, list) in incoming.iter_mut().enumerate() {
        list.sort_by(|a, c| a.0.total_cmp(&c.0).then(a.1.cmp(&c.1)));
        let k = list.len() as f32;
        for (i, &(_, e)) in list.iter().enumerate() {
            let bx = &boxes[b];
            let spread = (bx.w * 0.6).min(12.0 * k);
            entry[e] = bx.x + bx.w / 2.0 - spread / 2.0 + spread * (i as f32 + 0.5) / k;
        }
    }
    chains
        .iter()
        .enumerate()
        .filter_map(|(e, chain)| {
            let (&first, &last) = (chain.first()?, chain.last()?);
            let (from, to) = (&boxes[first as usize], &boxes[last as usize]);
            let mut points = Vec::with_capacity(2 * chain.len());
            points.push([from.x + from.w / 2.0, from.y + from.h]);
            for &d in &chain[1..chain.len() - 1] {
                let x = cx[d as usize] + shift;
                let top = layer[d as usize] as f32 * pitch;
                points.push([x, top]);
                points.push([x, top + options.node_height]);
            }
            points.push([entry[e], to.y]);
            Some(LayoutEdge {
                from: first as usize,
                to: last as usize,
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
