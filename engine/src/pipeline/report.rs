//! The readable Markdown report written beside an export.

use std::fmt::Write;

use crate::pipeline::{Measured, OptimizeReport};

fn percent(v: f64) -> String {
    format!("{:.2}%", v * 100.0)
}

fn measured_row(out: &mut String, label: &str, m: &Measured) {
    let acc = m.accuracy.map_or(("–".to_owned(), "–".to_owned()), |a| {
        (percent(a.top1), percent(a.top5))
    });
    let lat = m
        .latency_ms
        .as_ref()
        .map_or(("–".to_owned(), "–".to_owned()), |l| {
            (format!("{:.3}", l.median), format!("{:.3}", l.p90))
        });
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {} |",
        acc.0, acc.1, m.size_bytes, lat.0, lat.1
    );
}

/// Renders `report` as Markdown with the per-layer table.
pub fn markdown(report: &OptimizeReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Edgefit export report\n");
    let _ = writeln!(out, "- model: `{}`", report.model);
    let _ = writeln!(
        out,
        "- output: `{}` ({})",
        report.output,
        report.format.name()
    );
    let _ = writeln!(
        out,
        "- data: {} (fingerprint `{}`)",
        report.data, report.data_fingerprint
    );
    let _ = writeln!(
        out,
        "- measured by edgefit {} in {}{}",
        report.edgefit_version,
        report.runtime,
        report
            .onnxruntime_library
            .as_ref()
            .map_or(String::new(), |l| format!(" (onnxruntime library `{l}`)"))
    );
    if let Some(k) = &report.integer_kernels {
        let _ = writeln!(
            out,
            "- integer kernels: target `{}`, {}-bit weight codes — exact on {}",
            k.target.name(),
            k.weight_bits,
            k.exact_on
        );
    }
    let v = &report.verification;
    let _ = writeln!(
        out,
        "- verification ({}): **{}** — {}\n",
        v.runtime,
        if v.passed { "passed" } else { "FAILED" },
        v.message
    );
    let _ = writeln!(
        out,
        "| model | top-1 | top-5 | size (bytes) | latency median (ms) | latency p90 (ms) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    measured_row(&mut out, "original", &report.original);
    measured_row(&mut out, "compressed", &report.compressed);
    match (&report.fidelity, &report.not_measured) {
        (Some(f), _) => {
            let _ = writeln!(
                out,
                "\nFidelity to the original: top-1 agreement {}, output SQNR {}, max abs error {:.4e} ({} samples).\n",
                percent(f.agreement),
                f.sqnr_text(),
                f.max_abs_err,
                f.samples
            );
        }
        (None, reason) => {
            let _ = writeln!(
                out,
                "\n**Outputs not measured**: {}.\n",
                reason.as_deref().unwrap_or("the model was not run")
            );
        }
    }
    let _ = writeln!(out, "## Layers\n");
    let _ = writeln!(
        out,
        "| layer | op | precision | prune | sparsity | SQNR (dB) | bytes before | bytes after | MACs before | MACs after |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for l in &report.layers {
        let s = l.settings;
        let precision = if s.exclude {
            "excluded".to_owned()
        } else {
            format!("{:?}", s.precision)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} {:?} | {} | {} | {} | {} | {} | {} |",
            l.name,
            l.op,
            precision,
            s.prune_ratio,
            s.prune_method,
            percent(l.sparsity),
            l.sqnr_db.map_or("∞".to_owned(), |v| format!("{v:.1}")),
            l.bytes_before,
            l.bytes_after,
            l.macs_before.map_or("?".to_owned(), |m| m.to_string()),
            l.macs_after.map_or("?".to_owned(), |m| m.to_string()),
        );
    }
    if !report.reconstruction.is_empty() {
        let _ = writeln!(out, "\n## Reconstruction after pruning\n");
        let _ = writeln!(
            out,
            "Relative output error on the calibration data, ‖X w − X° w°‖² / ‖X° w°‖²:\n"
        );
        let _ = writeln!(
            out,
            "| layer | op | sparsity | error pruned | error reconstructed | rows re-solved |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for l in &report.reconstruction {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {:.4} | {:.4} | {}/{} |",
                l.name,
                l.op,
                percent(l.sparsity),
                l.relative_error_pruned,
                l.relative_error_reconstructed,
                l.rows_solved,
                l.rows
            );
        }
    }
    if !report.skipped.is_empty() {
        let _ = writeln!(out, "\n## Layers left as they are\n");
        for s in &report.skipped {
            let _ = writeln!(out, "- `{}` ({}): {}", s.name, s.op, s.reason);
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "\n## Notes\n");
        for n in &report.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
