//! Defences against hostile or broken models, applied before anything runs them:
//!
//! - a memory budget for every size computed from declared dims (generated inputs, constants
//!   a runtime would fold), checked before allocating, with a message naming the tensor;
//! - patterns known to crash or hang tract (an `If` whose constant condition is not one
//!   value; absurd pads, strides, dilations or kernel sizes; constant-folding targets above
//!   the budget) found in the protobuf, so tract never sees them;
//! - panics inside third-party code (tract) caught without printing `panicked at` on the
//!   user's terminal ([`quietly`]).

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::proto::{GraphProto, ModelProto, NodeProto, TensorProto};

/// The memory budget set by the user (0: the default, see [`memory_budget_bytes`]).
static BUDGET: AtomicU64 = AtomicU64::new(0);

/// The longest one inference may run, in seconds (0: the default).
static RUN_TIMEOUT: AtomicU64 = AtomicU64::new(0);

/// Sets the longest one inference may run (`--run-timeout`).
pub fn set_run_timeout(limit: std::time::Duration) {
    RUN_TIMEOUT.store(limit.as_secs().max(1), Ordering::Relaxed);
}

/// The longest one inference may run before onnxruntime is told to stop it (default 300 s:
/// far beyond any single inference of a model that fits the memory budget on this machine).
pub fn run_timeout() -> std::time::Duration {
    match RUN_TIMEOUT.load(Ordering::Relaxed) {
        0 => std::time::Duration::from_secs(300),
        s => std::time::Duration::from_secs(s),
    }
}

/// Sets the memory budget for sizes computed from declared dims (`--memory-budget`).
pub fn set_memory_budget_bytes(bytes: u64) {
    BUDGET.store(bytes, Ordering::Relaxed);
}

/// The memory budget for a model of `file_bytes`: the user's, else the larger of 8 GiB and
/// 4× the file (room for any model onnxruntime loads on a machine like ours).
pub fn memory_budget_bytes(file_bytes: u64) -> u64 {
    match BUDGET.load(Ordering::Relaxed) {
        0 => (8u64 << 30).max(file_bytes.saturating_mul(4)),
        set => set,
    }
}

/// Refuses an allocation of `elements` × `element_bytes` for `what` when it exceeds the
/// budget (or overflows), before it is made.
pub fn check_allocation(
    what: &str,
    elements: u64,
    element_bytes: u64,
    file_bytes: u64,
) -> crate::Result<()> {
    check_within(
        what,
        elements,
        element_bytes,
        memory_budget_bytes(file_bytes),
    )
}

/// [`check_allocation`] against an explicit `budget` in bytes.
pub fn check_within(
    what: &str,
    elements: u64,
    element_bytes: u64,
    budget: u64,
) -> crate::Result<()> {
    match elements.checked_mul(element_bytes) {
        Some(bytes) if bytes <= budget => Ok(()),
        bytes => Err(crate::Error::InvalidArgument {
            what: "memory budget",
            reason: format!(
                "{what} would need {} but the memory budget is {} (--memory-budget raises it)",
                bytes.map_or_else(|| "more than 16 EiB".to_owned(), human_bytes),
                human_bytes(budget)
            ),
        }),
    }
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Refuses to read `path` unless it is a regular file (a FIFO named as a model, external data
/// or dataset file would block forever; a device would never end). Checked before opening.
pub fn regular_file(path: &std::path::Path, what: &'static str) -> crate::Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| crate::Error::io("cannot read", path, e))?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(crate::Error::InvalidArgument {
            what,
            reason: format!(
                "`{}` is not a regular file ({}); refused",
                path.display(),
                if meta.is_dir() {
                    "a folder"
                } else {
                    "a pipe, socket or device"
                }
            ),
        })
    }
}

/// `relative` resolved inside `dir`, refusing absolute paths, `..` and symlinks that lead
/// out of it (dataset files are read from the dataset's folder only).
pub fn confined(dir: &std::path::Path, relative: &str) -> crate::Result<std::path::PathBuf> {
    use std::path::{Component, Path};
    let bad = |reason: String| crate::Error::Dataset {
        reason,
        path: dir.join(relative),
    };
    let rel = Path::new(relative);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(bad(format!(
            "`{relative}` points outside the dataset's folder; refused"
        )));
    }
    let joined = dir.join(rel);
    if let (Ok(base), Ok(target)) = (dir.canonicalize(), joined.canonicalize())
        && !target.starts_with(&base)
    {
        return Err(bad(format!(
            "`{relative}` leads outside the dataset's folder (a link to {}); refused",
            target.display()
        )));
    }
    Ok(joined)
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

static HOOK: Once = Once::new();

/// Runs `f`, catching a panic without printing it (the caller turns it into a clear error):
/// tract reports some malformed models by panicking, and a user should see edgefit's
/// message, not `thread 'main' panicked at …`. Panics elsewhere still print as usual.
pub fn quietly<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                default(info);
            }
        }));
    });
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result
}

/// A pattern that would crash or hang tract, or make it allocate past the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hazard {
    pub node: String,
    pub op: String,
    pub message: String,
}

impl std::fmt::Display for Hazard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}`: {}", self.op, self.node, self.message)
    }
}

/// The largest pad, stride, dilation or kernel size accepted (a million: far beyond any real
/// model, far below what makes tract's shape arithmetic loop or overflow).
const MAX_SPATIAL: i64 = 1 << 20;

/// Every hazard in `model` (main graph and subgraphs), for a budget of `budget_bytes`.
pub fn hazards(model: &ModelProto, budget_bytes: u64) -> Vec<Hazard> {
    let mut out = Vec::new();
    if let Some(g) = model.graph.as_ref() {
        graph_hazards(g, None, budget_bytes / 4, &mut out);
    }
    out
}

/// A constant's values as i64, when small (shape-like inputs), whatever its integer (or
/// float) type: tract folds a shape given as uint64 as readily as one given as int64.
fn small_ints(t: &TensorProto) -> Option<Vec<i64>> {
    let count = t.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d))?;
    if !(0..=64).contains(&count) {
        return None;
    }
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    if !t.uint64_data.is_empty() {
        return Some(
            t.uint64_data
                .iter()
                .map(|&v| v.min(i64::MAX as u64) as i64)
                .collect(),
        );
    }
    if !t.int32_data.is_empty() {
        return Some(t.int32_data.iter().map(|&v| i64::from(v)).collect());
    }
    if !t.float_data.is_empty() {
        return Some(t.float_data.iter().map(|&v| v as i64).collect());
    }
    let raw = t.raw_data();
    let each = |width: usize, f: &dyn Fn(&[u8]) -> i64| -> Option<Vec<i64>> {
        Some(raw.chunks_exact(width).map(f).collect())
    };
    let bytes = |c: &[u8], n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&c[..n]);
        b
    };
    match t.data_type() {
        7 => each(8, &|c| i64::from_le_bytes(bytes(c, 8))),
        13 => each(8, &|c| {
            u64::from_le_bytes(bytes(c, 8)).min(i64::MAX as u64) as i64
        }),
        6 => each(4, &|c| {
            i64::from(i32::from_le_bytes(
                bytes(c, 4)[..4].try_into().unwrap_or([0; 4]),
            ))
        }),
        12 => each(4, &|c| {
            i64::from(u32::from_le_bytes(
                bytes(c, 4)[..4].try_into().unwrap_or([0; 4]),
            ))
        }),
        5 => each(2, &|c| i64::from(i16::from_le_bytes([c[0], c[1]]))),
        4 => each(2, &|c| i64::from(u16::from_le_bytes([c[0], c[1]]))),
        3 => each(1, &|c| i64::from(c[0] as i8)),
        2 => each(1, &|c| i64::from(c[0])),
        1 => each(4, &|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64),
        11 => each(8, &|c| f64::from_le_bytes(bytes(c, 8)) as i64),
        _ => None,
    }
}

/// The constants a graph's nodes can read by name: its own (initializers, then `Constant`
/// values by their tensor's name; the later of two equal names wins), then its enclosing
/// graphs', then its own `Constant` nodes by output name (the first wins). Maps rather than
/// scans: a lookup per Reshape/Expand/Pad of a 50,000-node graph made the scan quadratic.
struct Scope<'a, 'p> {
    by_name: HashMap<&'a str, &'a TensorProto>,
    by_output: HashMap<&'a str, &'a TensorProto>,
    outer: Option<&'p Scope<'a, 'p>>,
}

impl<'a> Scope<'a, '_> {
    fn named(&self, name: &str) -> Option<&'a TensorProto> {
        self.by_name
            .get(name)
            .copied()
            .or_else(|| self.outer.and_then(|o| o.named_by_tensor(name)))
            .or_else(|| self.by_output.get(name).copied())
    }

    /// Lookup in this scope and the enclosing ones by tensor name only.
    fn named_by_tensor(&self, name: &str) -> Option<&'a TensorProto> {
        self.by_name
            .get(name)
            .copied()
            .or_else(|| self.outer.and_then(|o| o.named_by_tensor(name)))
    }
}

fn graph_hazards<'a>(
    graph: &'a GraphProto,
    outer: Option<&Scope<'a, '_>>,
    max_elements: u64,
    out: &mut Vec<Hazard>,
) {
    let mut own: Vec<&TensorProto> = graph.initializer.iter().collect();
    let mut by_output: HashMap<&str, &TensorProto> = HashMap::new();
    for node in &graph.node {
        if node.op_type() == "Constant"
            && let Some(t) = node.attribute.iter().find_map(|a| a.t.as_ref())
        {
            // Read under the node's output name.
            own.push(t);
            if let Some(output) = node.output.first() {
                by_output.entry(output.as_str()).or_insert(t);
            }
        }
    }
    let scope = Scope {
        by_name: own.iter().map(|t| (t.name(), *t)).collect(),
        by_output,
        outer,
    };
    let constant_named = |name: &str| -> Option<&TensorProto> { scope.named(name) };
    // The declared inputs and value_info by name (the first wins), for the last dim below.
    let mut declared: HashMap<&str, &crate::model::proto::ValueInfoProto> = HashMap::new();
    for info in graph.input.iter().chain(&graph.value_info) {
        declared.entry(info.name()).or_insert(info);
    }
    // The last dim of a value as the graph declares it (inputs, value_info), when known.
    let declared_last_dim = |name: &str| -> Option<i64> {
        let info = declared.get(name)?;
        match info.type_.as_ref()?.value.as_ref()? {
            crate::model::proto::type_proto::Value::TensorType(t) => {
                let last = t.shape.as_ref()?.dim.last()?;
                match last.value.as_ref()? {
                    crate::model::proto::tensor_shape_proto::dimension::Value::DimValue(v)
                        if *v > 0 =>
                    {
                        Some(*v)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    };
    // An empty constant with huge dims (`[2^32, 0]`) holds nothing, yet ops over it loop over
    // its outer dims: tract's Softmax spun for hours on one (fuzz seed 501).
    for t in &own {
        let extent = t
            .dims
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d.max(1).unsigned_abs()));
        if t.dims.contains(&0) && extent > max_elements {
            out.push(Hazard {
                node: t.name().to_owned(),
                op: "constant".to_owned(),
                message: format!(
                    "an empty tensor with dims {:?}: ops over it would loop {extent} times",
                    t.dims
                ),
            });
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        let name = if node.name().is_empty() {
            format!("{}#{i}", node.op_type())
        } else {
            node.name().to_owned()
        };
        let mut hazard = |message: String| {
            out.push(Hazard {
                node: name.clone(),
                op: node.op_type().to_owned(),
                message,
            });
        };
        node_hazards(
            node,
            &constant_named,
            &declared_last_dim,
            max_elements,
            &mut hazard,
        );
        for attr in &node.attribute {
            for g in attr.g.as_ref().into_iter().chain(&attr.graphs) {
                graph_hazards(g, Some(&scope), max_elements, out);
            }
        }
    }
}

fn node_hazards<'a>(
    node: &NodeProto,
    constant_named: &dyn Fn(&str) -> Option<&'a TensorProto>,
    declared_last_dim: &dyn Fn(&str) -> Option<i64>,
    max_elements: u64,
    hazard: &mut dyn FnMut(String),
) {
    let op = node.op_type();
    let input = |slot: usize| node.input.get(slot).filter(|s| !s.is_empty());
    match op {
        "If" => {
            if input(0).is_none() {
                hazard("its condition input is missing".to_owned());
            }
            if let Some(cond) = input(0).and_then(|c| constant_named(c)) {
                let count = cond.dims.iter().try_fold(1i64, |a, &d| a.checked_mul(d));
                if count != Some(1) {
                    hazard(format!(
                        "its condition is a constant of shape {:?}, not one value",
                        cond.dims
                    ));
                }
            }
        }
        "Transpose" => {
            // tract turns a perm into axis moves until it reaches it: a perm that is not a
            // permutation (`[1, 1]`) is never reached, and the list grows until memory runs
            // out (24 GB from a 226-byte file; fuzz seed 701).
            if let Some(perm) = node.attribute.iter().find(|a| a.name() == "perm") {
                let n = perm.ints.len();
                let mut seen = vec![false; n];
                let permutation = perm.ints.iter().all(|&p| {
                    let Ok(i) = usize::try_from(p) else {
                        return false;
                    };
                    i < n && !std::mem::replace(&mut seen[i], true)
                });
                if !permutation {
                    hazard(format!(
                        "perm {:?} is not a permutation of 0..{n}",
                        perm.ints
                    ));
                }
            }
        }
        "Conv" | "ConvTranspose" | "MaxPool" | "AveragePool" | "LpPool" | "ConvInteger"
        | "QLinearConv" | "Col2Im" | "DeformConv" => {
            for attr in &node.attribute {
                let limited = matches!(
                    attr.name(),
                    "pads"
                        | "strides"
                        | "dilations"
                        | "kernel_shape"
                        | "output_padding"
                        | "output_shape"
                );
                if limited
                    && let Some(v) = attr.ints.iter().find(|&&v| !(0..=MAX_SPATIAL).contains(&v))
                {
                    hazard(format!(
                        "attribute `{}` holds {v}, outside 0..={MAX_SPATIAL}",
                        attr.name()
                    ));
                }
                if matches!(attr.name(), "strides" | "dilations") && attr.ints.contains(&0) {
                    hazard(format!("attribute `{}` holds 0", attr.name()));
                }
            }
        }
        "ConstantOfShape" | "Expand" | "Reshape" => {
            let slot = usize::from(op != "ConstantOfShape");
            if let Some(dims) = input(slot)
                .and_then(|s| constant_named(s))
                .and_then(small_ints)
            {
                // Reshape allows one -1 (inferred) and 0 (copied); no shape allows other
                // negatives, which tract reads as huge unsigned dims (a ConstantOfShape of
                // [32768, -5.7e18] spun for minutes in tract's analysis; fuzz seed 802).
                let lowest_allowed = if op == "Reshape" { -1 } else { 0 };
                if let Some(bad) = dims.iter().find(|&&d| d < lowest_allowed) {
                    hazard(format!("its constant shape {dims:?} holds {bad}"));
                    return;
                }
                let count = dims
                    .iter()
                    .filter(|&&d| d > 0)
                    .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
                if count.is_none_or(|c| c > max_elements) {
                    hazard(format!(
                        "its constant shape {dims:?} asks for {} values, above the memory budget",
                        count.map_or_else(|| "more than 2^64".to_owned(), |c| c.to_string())
                    ));
                }
            }
        }
        "LSTM" | "GRU" | "RNN" => {
            // tract's recurrent kernels trust these dims (a GRU with hidden_size -1 over an
            // input of 65,536 features where W has 8 segfaulted in its matmul).
            let gates = match op {
                "LSTM" => 4,
                "GRU" => 3,
                _ => 1,
            };
            let w = input(1).and_then(|s| constant_named(s));
            let attr = |name: &str| node.attribute.iter().find(|a| a.name() == name);
            let Some(w) = w else { return };
            if w.dims.len() != 3 || w.dims[1] <= 0 || w.dims[1] % gates != 0 || w.dims[2] <= 0 {
                hazard(format!(
                    "its weight W has dims {:?}, not [directions, {gates}·hidden, inputs]",
                    w.dims
                ));
                return;
            }
            let hidden = w.dims[1] / gates;
            if let Some(h) = attr("hidden_size").map(|a| a.i())
                && h != hidden
            {
                hazard(format!("hidden_size {h} does not match W's {hidden}"));
            }
            if let Some(r) = input(2).and_then(|s| constant_named(s))
                && r.dims != [w.dims[0], w.dims[1], hidden]
            {
                hazard(format!(
                    "R has dims {:?}, not {:?}",
                    r.dims,
                    [w.dims[0], w.dims[1], hidden]
                ));
            }
            if let Some(b) = input(3).and_then(|s| constant_named(s))
                && b.dims != [w.dims[0], 2 * w.dims[1]]
            {
                hazard(format!(
                    "B has dims {:?}, not {:?}",
                    b.dims,
                    [w.dims[0], 2 * w.dims[1]]
                ));
            }
            if let Some(inputs) = input(0).and_then(|x| declared_last_dim(x))
                && inputs != w.dims[2]
            {
                hazard(format!(
                    "its input has {inputs} features where W takes {}",
                    w.dims[2]
                ));
            }
        }
        "Pad" => {
            if let Some(pads) = input(1)
                .and_then(|s| constant_named(s))
                .and_then(small_ints)
                && let Some(v) = pads
                    .iter()
                    .find(|&&v| v.unsigned_abs() > MAX_SPATIAL as u64)
            {
                hazard(format!("pads hold {v}, outside ±{MAX_SPATIAL}"));
            }
        }
        "Range" => {
            let scalar = |slot: usize| {
                input(slot)
                    .and_then(|s| constant_named(s))
                    .and_then(small_ints)
                    .and_then(|v| v.first().copied())
            };
            if let (Some(start), Some(limit), Some(delta)) = (scalar(0), scalar(1), scalar(2))
                && delta != 0
            {
                let count = (i128::from(limit) - i128::from(start)) / i128::from(delta);
                if count > i128::from(max_elements) {
                    hazard(format!("it makes {count} values, above the memory budget"));
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quietly_catches_without_printing_and_restores_the_flag() {
        let r: std::thread::Result<()> = quietly(|| panic!("inside a third-party crate"));
        assert!(r.is_err());
        assert!(!QUIET.with(Cell::get));
        assert_eq!(quietly(|| 3).ok(), Some(3));
    }

    #[test]
    fn allocations_above_the_budget_are_refused_with_the_tensor_named() {
        let e = check_within("generated inputs for `x`", 1 << 20, 4, 1 << 20)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("`x`") && e.contains("4.0 MiB") && e.contains("1.0 MiB"),
            "{e}"
        );
        assert!(check_within("x", u64::MAX, 4, u64::MAX).is_err());
        assert!(check_within("x", 1000, 4, 1 << 20).is_ok());
        assert_eq!(memory_budget_bytes(0), 8 << 30);
        assert_eq!(memory_budget_bytes(4 << 30), 16 << 30);
    }
}
