//! What background jobs deliver, taken in at the start of a frame: a loaded model, an
//! evaluation or export (a point on the chart), a sweep, a search, data, a diff; failures
//! worded for the window.

use std::time::Instant;

use super::jobs::{Job, JobKind, JobOutput};
use super::session::{EvalPoint, Session};
use super::{Command, StudioApp};

impl StudioApp {
    pub(super) fn poll_job(&mut self, ctx: &egui::Context) {
        let Some(job) = self.job.take() else { return };
        let kind = job.kind.clone();
        match job.promise.try_take() {
            Err(promise) => self.job = Some(Job { promise, ..job }),
            Ok(Err(message)) => {
                self.error = Some(match kind {
                    JobKind::Load(path) => format!("Could not open {}: {message}", path.display()),
                    JobKind::Evaluate => format!("Evaluation failed: {}", for_the_window(&message)),
                    JobKind::Reanalyse => {
                        format!("Could not analyse the model at that input shape: {message}")
                    }
                    JobKind::Export(path) => format!(
                        "Export to {} failed: {}",
                        path.display(),
                        for_the_window(&message)
                    ),
                    JobKind::Sensitivity => {
                        format!("Sensitivity analysis failed: {}", for_the_window(&message))
                    }
                    JobKind::Search => {
                        format!("The plan search failed: {}", for_the_window(&message))
                    }
                    JobKind::LoadData(path) => {
                        format!("Could not use {} as data: {message}", path.display())
                    }
                    JobKind::Diff(path) => {
                        format!("Could not compare with {}: {message}", path.display())
                    }
                    JobKind::Split(path) => format!(
                        "Could not split the model into {}: {}",
                        path.display(),
                        for_the_window(&message)
                    ),
                });
            }
            Ok(Ok(JobOutput::Loaded(open))) => {
                if let JobKind::Load(path) = &kind {
                    self.remember_recent(path);
                }
                let mut session = Session::new(open);
                if session.is_large(self.background_estimates_above) {
                    let repaint = ctx.clone();
                    session.estimate_in_background(move || repaint.request_repaint());
                }
                // An explicit session file wins, then the autosaved one of this model.
                let path = session.open.loaded.path.clone();
                let saved = self.pending_session.take().or_else(|| {
                    self.persisted
                        .sessions
                        .iter()
                        .find(|f| f.model == path)
                        .cloned()
                });
                if let Some(file) = saved {
                    session.restore(&file);
                }
                if let Some(recipe) = self.initial_recipe.take() {
                    session.set_recipe(recipe, false);
                    session.refresh();
                    if let Some(e) = &session.compression_error {
                        self.error = Some(format!("The recipe does not fit this model: {e}"));
                    }
                }
                self.session = Some(session);
                self.error = self.error.take().filter(|e| e.starts_with("The recipe"));
                // Nothing of the previous model's window carries over: its export status, the
                // graph's search and view, the tables' scroll, the data form.
                self.status = None;
                self.verdict = None;
                self.last_export = None;
                self.data_form = Default::default();
                self.graph = Default::default();
                self.layers_view = Default::default();
                self.tradeoff_view = Default::default();
                // A restored session's data is loaded again (then its shape is used); else
                // its input shape: shapes and MACs inferred at it again.
                match self.session.as_ref().and_then(|s| s.run.data.clone()) {
                    Some(source) => self.load_data(source, ctx),
                    None => self.reanalyse_at_given_shape(ctx),
                }
                // Measure the original once so the trade-off chart has its reference.
                self.auto_evaluate_at = Some(Instant::now());
            }
            Ok(Ok(JobOutput::Sensitivity(result))) => {
                if let Some(s) = &mut self.session
                    && s.open.loaded.path.display().to_string() == result.model
                {
                    s.sensitivity = Some(std::sync::Arc::new(*result));
                    s.search = None;
                }
            }
            Ok(Ok(JobOutput::Search(report))) => {
                if let Some(s) = &mut self.session {
                    let floor = match report.constraint {
                        edgefit_engine::guide::search::Constraint::MinSqnrDb(db) => db,
                        edgefit_engine::guide::search::Constraint::MaxDropPp(_) => f64::NAN,
                    };
                    match report.chosen {
                        Some(_) => {
                            self.verdict = None;
                            self.commands.push(Command::SetFormat(
                                edgefit_engine::guide::search::format_of(&report.recipe),
                            ));
                            self.commands.push(Command::SetRecipe {
                                recipe: report.recipe.clone(),
                                record: true,
                            });
                        }
                        None => {
                            self.verdict = Some(format!(
                                "No plan on the front kept the output SQNR at {floor} dB or more \
                                 ({} measured); the plan is unchanged",
                                report.evaluations.len()
                            ));
                        }
                    }
                    s.search = Some(std::sync::Arc::new(*report));
                }
            }
            Ok(Ok(JobOutput::Data { model, loaded })) => {
                if let Some(s) = &mut self.session
                    && s.open.loaded.path == model
                {
                    s.set_chosen_data(Some(*loaded));
                    self.error = None;
                    self.auto_evaluate_at = Some(Instant::now());
                    // The data may give the open dims their shape.
                    self.reanalyse_at_given_shape(ctx);
                }
            }
            Ok(Ok(JobOutput::Diff { model, view })) => {
                if let Some(s) = &mut self.session
                    && s.open.loaded.path == model
                {
                    s.diff = Some(*view);
                    // What changed is what the person asked to see.
                    self.graph.set_overlay(super::graph_paint::Overlay::Diff);
                }
            }
            Ok(Ok(JobOutput::Split { message, passed })) => {
                if passed {
                    self.status = Some(message);
                } else {
                    self.verdict = Some(message);
                }
            }
            Ok(Ok(JobOutput::Reanalysed(open))) => {
                if let Some(s) = &mut self.session
                    && s.open.loaded.path == open.loaded.path
                {
                    let repaint = ctx.clone();
                    s.replace_analysis(open, move || repaint.request_repaint());
                }
            }
            Ok(Ok(JobOutput::Optimized {
                report,
                export,
                data,
            })) => {
                self.error = None;
                self.verdict = None;
                if let Some(reason) = &report.not_measured {
                    // Nothing to plot: the model could not be run here.
                    self.error = Some(format!(
                        "{} - outputs not measured: {reason}",
                        if export {
                            format!(
                                "Exported {} (checked against the ONNX schemas)",
                                report.output
                            )
                        } else {
                            "Evaluated without running".to_owned()
                        }
                    ));
                } else if let Some(s) = &mut self.session {
                    if s.baseline.is_none() {
                        s.baseline = Some(EvalPoint::original(&report, data.clone()));
                    }
                    // One point per measured configuration: measuring it again (an export,
                    // an explicit Evaluate) refreshes that point instead of adding a copy.
                    let point = EvalPoint::compressed(&report, data);
                    let key = point.data.clone();
                    match key.and_then(|key| {
                        s.points.iter().position(|p| {
                            p.measures(&point.recipe, point.format, point.runtime, &key)
                        })
                    }) {
                        Some(i) => s.points[i] = point,
                        None => s.points.push(point),
                    }
                }
                if export {
                    self.last_export = Some(std::path::PathBuf::from(&report.output));
                }
                if export && report.not_measured.is_none() {
                    self.status = Some(format!(
                        "Exported {} - verification {}: {}",
                        report.output,
                        if report.verification.passed {
                            "passed"
                        } else {
                            "FAILED"
                        },
                        report.verification.message
                    ));
                }
                // Shown in red: a plan below the quality floor, or a file that did not verify.
                if let Some(q) = report.quality.as_ref().filter(|q| !q.passed) {
                    let layers: Vec<&str> =
                        q.layers.iter().take(3).map(|l| l.layer.as_str()).collect();
                    self.verdict = Some(format!(
                        "Quality below the floor: {}{}",
                        q.message,
                        if layers.is_empty() {
                            String::new()
                        } else {
                            format!(
                                ". The layers adding the most error: {} (exclude them or give them more bits)",
                                layers.join(", ")
                            )
                        }
                    ));
                } else if !report.verification.passed {
                    self.verdict = Some(format!(
                        "The written file did not verify: {}",
                        report.verification.message
                    ));
                }
            }
        }
    }
}

/// An engine message as the window says it: command-line advice becomes the control that
/// does the same here.
fn for_the_window(message: &str) -> String {
    let message = message.replace(
        "use `--runtime onnxruntime`",
        "choose onnxruntime under Data, inputs and runtime",
    );
    let message = flags_for_the_window(&message, "--input-shape ", "Shape");
    let message = flags_for_the_window(&message, "--input-value ", "Value");
    message
        .replace("(--data, ", "(Data..., ")
        .replace("--runtime)", "the Runtime choice)")
}

/// `--input-shape x=1,3,N,N` (a flag of the command line) as the window says it: the field
/// `what` of input `x` under "Data, inputs and runtime".
fn flags_for_the_window(message: &str, flag: &str, what: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(flag) {
        out.push_str(&rest[..at]);
        let after = &rest[at + flag.len()..];
        let end = after
            .find(|c: char| c.is_whitespace() || c == ')' || c == '`')
            .unwrap_or(after.len());
        let token = after[..end].trim_end_matches([',', '.', ';']);
        match token.split_once('=') {
            Some((name, value)) => out.push_str(&format!(
                "{what} `{value}` for input `{name}` under Data, inputs and runtime"
            )),
            None => out.push_str(&format!("the {what} field under Data, inputs and runtime")),
        }
        rest = &after[token.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::for_the_window;

    #[test]
    fn command_line_flags_become_the_window_fields() {
        let m = for_the_window(
            "input `images` has shape [N, 3, N, N] with unknown dimensions; give data of a \
             fixed shape or a concrete shape (--input-shape images=1,3,640,640)",
        );
        assert!(!m.contains("--"), "{m}");
        assert!(
            m.contains("Shape `1,3,640,640` for input `images` under Data, inputs and runtime"),
            "{m}"
        );
        let m = for_the_window(
            "give the others a value (--input-value NAME=V, and --input-shape NAME=DIMS where \
             their shape is not fixed)",
        );
        assert!(!m.contains("--"), "{m}");
        assert!(m.contains("Value `V` for input `NAME`"), "{m}");
    }
}
