//! The proper graph of the layout: the layered graph with dummy vertices so that every routed
//! edge joins consecutive layers, with the barycenter ordering sweeps, the crossing count and
//! the coordinate assignment that work on it.

use super::LayoutOptions;

/// The graph with dummy vertices, where every routed edge joins consecutive layers.
pub(super) struct ProperGraph {
    /// Layer of every vertex, real ones first, then dummies.
    pub(super) layer: Vec<u32>,
    real: usize,
    preds: Vec<Vec<u32>>,
    succs: Vec<Vec<u32>>,
}

impl ProperGraph {
    pub(super) fn new(layer: &[u32]) -> Self {
        Self {
            layer: layer.to_vec(),
            real: layer.len(),
            preds: vec![Vec::new(); layer.len()],
            succs: vec![Vec::new(); layer.len()],
        }
    }

    pub(super) fn dummies(&self) -> usize {
        self.layer.len() - self.real
    }

    /// Adds the edge `u → v` (downward), with dummies; returns its chain of vertices.
    pub(super) fn route(&mut self, u: u32, v: u32) -> Vec<u32> {
        let mut chain = vec![u];
        let mut previous = u;
        for l in self.layer[u as usize] + 1..self.layer[v as usize] {
            let d = self.layer.len() as u32;
            self.layer.push(l);
            self.preds.push(Vec::new());
            self.succs.push(Vec::new());
            self.link(previous, d);
            chain.push(d);
            previous = d;
        }
        self.link(previous, v);
        chain.push(v);
        chain
    }

    fn link(&mut self, u: u32, v: u32) {
        self.succs[u as usize].push(v);
        self.preds[v as usize].push(u);
    }

    /// Vertices by layer, in index order (file order for real vertices).
    pub(super) fn initial_order(&self) -> Vec<Vec<u32>> {
        let count = self.layer.iter().max().map_or(0, |&l| l as usize + 1);
        let mut layers = vec![Vec::new(); count];
        for (v, &l) in self.layer.iter().enumerate() {
            layers[l as usize].push(v as u32);
        }
        layers
    }

    /// One barycenter sweep, downward (order by predecessors) or upward (by successors).
    pub(super) fn sweep(&self, layers: &mut [Vec<u32>], down: bool) {
        let mut pos = vec![0f32; self.layer.len()];
        for layer in layers.iter() {
            for (i, &v) in layer.iter().enumerate() {
                pos[v as usize] = i as f32;
            }
        }
        let count = layers.len();
        let mut keyed: Vec<(f32, usize, u32)> = Vec::new();
        for step in 1..count {
            let l = if down { step } else { count - 1 - step };
            let adjacent = if down { l - 1 } else { l + 1 };
            // A vertex without neighbours keeps its relative place, in the adjacent layer's
            // index scale that the others' barycenters use.
            let scale = layers[adjacent].len() as f32 / layers[l].len().max(1) as f32;
            let layer = &mut layers[l];
            keyed.clear();
            for (i, &v) in layer.iter().enumerate() {
                let neighbours = if down {
                    &self.preds[v as usize]
                } else {
                    &self.succs[v as usize]
                };
                let key = if neighbours.is_empty() {
                    i as f32 * scale
                } else {
                    let sum: f32 = neighbours.iter().map(|&u| pos[u as usize]).sum();
                    sum / neighbours.len() as f32
                };
                keyed.push((key, i, v));
            }
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for (i, &(_, _, v)) in keyed.iter().enumerate() {
                layer[i] = v;
                pos[v as usize] = i as f32;
            }
        }
    }

    /// Crossings between consecutive layers: inversions of the edges' target positions when
    /// sorted by source position, counted with a Fenwick tree.
    pub(super) fn crossings(&self, layers: &[Vec<u32>]) -> u64 {
        let mut pos = vec![0usize; self.layer.len()];
        for layer in layers {
            for (i, &v) in layer.iter().enumerate() {
                pos[v as usize] = i;
            }
        }
        let mut total = 0u64;
        let mut pairs: Vec<(usize, usize)> = Vec::new();
        let mut tree: Vec<u64> = Vec::new();
        for l in 0..layers.len().saturating_sub(1) {
            pairs.clear();
            for &u in &layers[l] {
                for &w in &self.succs[u as usize] {
                    pairs.push((pos[u as usize], pos[w as usize]));
                }
            }
            pairs.sort_unstable();
            tree.clear();
            tree.resize(layers[l + 1].len() + 1, 0);
            for (seen, &(_, b)) in pairs.iter().enumerate() {
                // Earlier pieces that end to the right of b cross this one.
                let mut at_or_left = 0;
                let mut i = b + 1;
                while i > 0 {
                    at_or_left += tree[i];
                    i &= i - 1;
                }
                total += seen as u64 - at_or_left;
                let mut i = b + 1;
                while i < tree.len() {
                    tree[i] += 1;
                    i += i & i.wrapping_neg();
                }
            }
        }
        total
    }

    /// Centre x of every vertex: each layer keeps its order and spacing, and every vertex
    /// moves towards the mean of its neighbours in the previous (or next) layer.
    pub(super) fn place(
        &self,
        layers: &[Vec<u32>],
        widths: &[f32],
        options: &LayoutOptions,
    ) -> Vec<f32> {
        let mut cx = vec![0f32; self.layer.len()];
        let gap = |a: u32, b: u32| {
            let real = |v: u32| (v as usize) < self.real;
            let g = if real(a) && real(b) {
                options.node_gap
            } else {
                options.node_gap / 2.0
            };
            (widths[a as usize] + widths[b as usize]) / 2.0 + g
        };
        for layer in layers {
            let mut x = 0.0;
            for (i, &v) in layer.iter().enumerate() {
                if i > 0 {
                    x += gap(layer[i - 1], v);
                }
                cx[v as usize] = x;
            }
            let mid = x / 2.0;
            for &v in layer {
                cx[v as usize] -= mid;
            }
        }
        let mut desired = Vec::new();
        let mut offsets: Vec<f32> = Vec::new();
        let mut blocks: Vec<(f32, f32, usize)> = Vec::new();
        for pass in 0..4 {
            let down = pass % 2 == 0;
            let range: Vec<usize> = if down {
                (1..layers.len()).collect()
            } else {
                (0..layers.len().saturating_sub(1)).rev().collect()
            };
            for l in range {
                let layer = &layers[l];
                desired.clear();
                for &v in layer {
                    let neighbours = if down {
                        &self.preds[v as usize]
                    } else {
                        &self.succs[v as usize]
                    };
                    // A real vertex follows its real neighbours (the main flow) and lets
                    // long edges (dummies) run beside it: averaging them in makes every
                    // residual block shift the graph sideways.
                    let real = (v as usize) < self.real;
                    let (mut sum, mut count, mut dummy_sum, mut dummies) = (0.0, 0, 0.0, 0);
                    for &u in neighbours {
                        if (u as usize) < self.real || !real {
                            sum += cx[u as usize];
                            count += 1;
                        } else {
                            dummy_sum += cx[u as usize];
                            dummies += 1;
                        }
                    }
                    desired.push(if count > 0 {
                        sum / count as f32
                    } else if dummies > 0 {
                        dummy_sum / dummies as f32
                    } else {
                        cx[v as usize]
                    });
                }
                // Closest placement to `desired` (least squares, weighted: real vertices
                // count far more than dummies) that keeps the order and the gaps: with
                // y = x - offset the gaps become y non-decreasing, solved exactly by
                // pooling adjacent violators.
                offsets.clear();
                blocks.clear();
                let mut offset = 0.0;
                for (i, &v) in layer.iter().enumerate() {
                    if i > 0 {
                        offset += gap(layer[i - 1], v);
                    }
                    offsets.push(offset);
                    let w = if (v as usize) < self.real { 1.0 } else { 0.02 };
                    let mut block = (w * (desired[i] - offset), w, 1usize);
                    while let Some(&last) = blocks.last() {
                        if last.0 / last.1 > block.0 / block.1 {
                            blocks.pop();
                            block = (last.0 + block.0, last.1 + block.1, last.2 + block.2);
                        } else {
                            break;
                        }
                    }
                    blocks.push(block);
                }
                let mut i = 0;
                for &(sum, weight, len) in &blocks {
                    for _ in 0..len {
                        cx[layer[i] as usize] = sum / weight + offsets[i];
                        i += 1;
                    }
                }
            }
        }
        cx
    }
}
