//! `edgefit diff`: what changed between two ONNX models — nodes added, removed and changed,
//! and every weight's shape, storage, SQNR, sparsity and bits.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use edgefit_engine::analyse::diff::{
    Comparison, ModelDiff, ModelSummary, NodeChange, WeightDiff, WeightSide, diff_models,
};
use edgefit_engine::load_model;

use super::{interruptible, progress_bar, sink};
use crate::format::{bytes, display_width, fit, terminal_safe};

/// `edgefit diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The reference model (e.g. the original).
    pub a: PathBuf,
    /// The model compared with it (e.g. an export).
    pub b: PathBuf,
    /// Print the diff as one JSON object (`"schema": "edgefit.diff/1"`).
    #[arg(long)]
    pub json: bool,
}

/// Loads both models, diffs them and prints the result.
pub fn diff_cmd(args: &DiffArgs) -> Result<()> {
    let bar = progress_bar();
    let cancel = interruptible();
    let a = load_model(&args.a, &sink(&bar), &cancel).context("model A")?;
    let b = load_model(&args.b, &sink(&bar), &cancel).context("model B")?;
    bar.finish_and_clear();
    let diff = diff_models(&a, &b).context("comparing the models")?;
    if args.json {
        super::print_json("diff", &diff)?;
    } else {
        print!("{}", diff_text(&diff));
    }
    Ok(())
}

fn model_line(label: &str, m: &ModelSummary) -> String {
    format!(
        "{label}  {}\n   {} on disk, {} nodes, {} weights, {} stored\n",
        terminal_safe(&m.path),
        bytes(m.file_size_bytes),
        m.nodes,
        m.weights,
        bytes(m.weight_bytes)
    )
}

/// The readable report of `edgefit diff`.
pub fn diff_text(d: &ModelDiff) -> String {
    let mut out = String::new();
    out.push_str(&model_line("A", &d.a));
    out.push_str(&model_line("B", &d.b));
    let s = &d.summary;
    let _ = writeln!(
        out,
        "\nNodes    {} added, {} removed, {} changed, {} unchanged ({} matched by name, {} by structure)",
        s.nodes_added,
        s.nodes_removed,
        s.nodes_changed,
        s.nodes_unchanged,
        s.matched_by_name,
        s.matched_by_structure
    );
    let _ = writeln!(
        out,
        "Weights  {} changed, {} unchanged, {} only in A, {} only in B; {} → {} stored; file {} → {}",
        s.weights_changed,
        s.weights_unchanged,
        s.weights_only_in_a,
        s.weights_only_in_b,
        bytes(d.a.weight_bytes),
        bytes(d.b.weight_bytes),
        bytes(d.a.file_size_bytes),
        bytes(d.b.file_size_bytes)
    );
    if d.is_empty() {
        let _ = writeln!(out, "\nThe models have the same nodes and weights.");
        return out;
    }
    node_section(&mut out, "Added nodes (only in B)", '+', &d.added);
    node_section(&mut out, "Removed nodes (only in A)", '-', &d.removed);
    node_section(&mut out, "Changed nodes", '~', &d.changed);
    weight_section(&mut out, &d.weights);
    out
}

fn node_section(out: &mut String, title: &str, mark: char, nodes: &[NodeChange]) {
    if nodes.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}: {}", nodes.len());
    let width = nodes
        .iter()
        .map(|n| display_width(&terminal_safe(&n.name)))
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    for n in nodes {
        let _ = writeln!(
            out,
            "  {mark} {} {}  {}",
            fit(&n.op_type, 20),
            fit(&n.name, width),
            terminal_safe(&n.reason)
        );
    }
}

fn dims(d: &[i64]) -> String {
    let parts: Vec<String> = d.iter().map(i64::to_string).collect();
    format!("[{}]", parts.join(","))
}

fn bits(w: &WeightSide) -> String {
    match (w.bits, w.levels) {
        (Some(b), Some(l)) => format!("{b} ({l} lv)"),
        (Some(b), None) => b.to_string(),
        (None, _) => "?".to_owned(),
    }
}

fn before_after(a: Option<String>, b: Option<String>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if a == b => a,
        (Some(a), Some(b)) => format!("{a} → {b}"),
        (Some(a), None) => format!("{a} → —"),
        (None, Some(b)) => format!("— → {b}"),
        (None, None) => String::new(),
    }
}

fn sqnr_text(w: &WeightDiff) -> String {
    match (w.comparison, w.sqnr_db) {
        (Comparison::Identical, _) => "identical".to_owned(),
        (Comparison::Compared, Some(db)) if db.is_finite() => format!("{db:.2} dB"),
        (Comparison::Compared, _) if w.nonfinite_values > 0 => {
            format!("−∞ ({} NaN/Inf)", w.nonfinite_values)
        }
        (Comparison::Compared, _) => "−∞".to_owned(),
        (Comparison::ShapesDiffer, _) => "shape differs".to_owned(),
        (Comparison::NotDecoded, _) => "not decoded".to_owned(),
        (Comparison::OneSided, _) => "—".to_owned(),
    }
}

fn weight_section(out: &mut String, weights: &[WeightDiff]) {
    if weights.is_empty() {
        return;
    }
    let name_of = |w: &WeightDiff| match (&w.a, &w.b) {
        (Some(a), Some(b)) if a.name != b.name => format!("{} → {}", a.name, b.name),
        (Some(a), _) => a.name.clone(),
        (None, Some(b)) => b.name.clone(),
        (None, None) => String::new(),
    };
    let width = weights
        .iter()
        .map(|w| display_width(&terminal_safe(&name_of(w))))
        .max()
        .unwrap_or(6)
        .clamp(6, 40);
    let _ = writeln!(out, "\nWeights: {}", weights.len());
    let _ = writeln!(
        out,
        "  {:<width$}  {:<28} {:<18} {:<22} {:>16} {:<16} Bits",
        "Weight", "Shape", "Type", "Stored", "SQNR", "Zeros"
    );
    for w in weights {
        let (a, b) = (w.a.as_ref(), w.b.as_ref());
        let mut shape = before_after(a.map(|s| dims(&s.dims)), b.map(|s| dims(&s.dims)));
        for c in &w.shape_changes {
            let _ = write!(shape, " (axis {}: {:+})", c.axis, c.after - c.before);
        }
        let dtype = before_after(a.map(|s| s.dtype.name()), b.map(|s| s.dtype.name()));
        let stored = before_after(
            a.map(|s| bytes(s.storage_bytes)),
            b.map(|s| bytes(s.storage_bytes)),
        );
        let zeros = before_after(
            a.map(|s| format!("{:.1}%", s.sparsity * 100.0)),
            b.map(|s| format!("{:.1}%", s.sparsity * 100.0)),
        );
        let bits = before_after(a.map(bits), b.map(bits));
        let mut note = String::new();
        if let Some(bn) = &w.folded_batchnorm {
            note = format!("  (with `{}` folded in)", terminal_safe(bn));
        }
        let _ = writeln!(
            out,
            "  {}  {} {} {} {:>16} {} {bits}{note}",
            fit(&name_of(w), width),
            fit(&shape, 28),
            fit(&dtype, 18),
            fit(&stored, 22),
            sqnr_text(w),
            fit(&zeros, 16),
        );
    }
}
