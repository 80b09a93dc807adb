//! The trade-off chart (a fidelity or accuracy measure against size or latency, every
//! evaluated configuration, the original and the Pareto front), the list of evaluated points,
//! and the A/B comparison of two configurations layer by layer.

use egui::Color32;
use egui_plot::{Line, Plot, PlotPoints, Points};

use super::Command;
use super::session::{AbComparison, EvalPoint, Session};
use crate::format::bytes;

mod points_list;

use points_list::{percent, points_ui};

/// What the chart's horizontal axis shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XAxis {
    #[default]
    Size,
    Latency,
}

/// What the chart's vertical axis shows: what the data supports (see [`y_axes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum YAxis {
    /// The lowest output SQNR against the original: meaningful for every model.
    OutputSqnr,
    /// Top-1 accuracy: only with labels.
    Accuracy,
    /// Top-1 agreement with the original: only where the output is class scores.
    Agreement,
}

impl YAxis {
    fn label(self) -> &'static str {
        match self {
            YAxis::OutputSqnr => "output SQNR",
            YAxis::Accuracy => "accuracy",
            YAxis::Agreement => "top-1 agreement",
        }
    }

    /// The axis title (short: it is drawn along a 220-pixel axis).
    fn unit_label(self) -> &'static str {
        match self {
            YAxis::OutputSqnr => "output SQNR (dB)",
            YAxis::Accuracy => "top-1 accuracy (%)",
            YAxis::Agreement => "top-1 agreement (%)",
        }
    }

    /// What the axis measures, in full (under the chart).
    fn explained(self) -> &'static str {
        match self {
            YAxis::OutputSqnr => "output SQNR against the original, lowest over the float outputs",
            YAxis::Accuracy => "top-1 accuracy on the labels",
            YAxis::Agreement => "top-1 agreement with the original's class",
        }
    }
}

const ORIGINAL: Color32 = Color32::from_rgb(90, 200, 120);
const EVALUATED: Color32 = Color32::from_rgb(230, 140, 60);
const BROKEN: Color32 = Color32::from_rgb(220, 50, 50);

/// View state of the trade-off panel.
#[derive(Default)]
pub struct TradeoffView {
    pub x_axis: XAxis,
    /// `None`: the default for the data (accuracy with labels, else output SQNR).
    pub y_axis: Option<YAxis>,
}

/// The vertical axes the session's points support, the default first.
pub fn y_axes(session: &Session) -> Vec<YAxis> {
    let has = |f: fn(&EvalPoint) -> bool| session.points.iter().chain(&session.baseline).any(f);
    let mut axes = Vec::new();
    // Accuracy only once a point has one: labelled data fed to a detector gives none (its
    // output is not class scores), and an axis nothing can be drawn on hides the points.
    if has(|p| p.accuracy.is_some()) {
        axes.push(YAxis::Accuracy);
    }
    axes.push(YAxis::OutputSqnr);
    if has(|p| p.fidelity.as_ref().is_some_and(|f| f.agreement.is_some())) {
        axes.push(YAxis::Agreement);
    }
    axes
}

/// The x coordinate of `p` on `axis`: size in KiB, or latency in ms when it was measured in
/// `runtime` (latencies of different runtimes do not share an axis).
fn x_of(
    p: &EvalPoint,
    axis: XAxis,
    runtime: edgefit_engine::measure::runtime::RuntimeKind,
) -> Option<f64> {
    match axis {
        XAxis::Size => Some(p.size_bytes as f64 / 1024.0),
        XAxis::Latency => p.latency_ms.filter(|_| p.runtime == runtime),
    }
}

/// Where a point sits on the vertical axis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum YValue {
    Value(f64),
    /// Output SQNR ∞: identical to the original (drawn above every finite point).
    Identical,
    /// Output SQNR −∞: NaN or Inf in the outputs (drawn below every finite point, in red).
    Broken,
}

fn y_of(p: &EvalPoint, axis: YAxis) -> Option<YValue> {
    match axis {
        YAxis::Accuracy => p.accuracy.map(|a| YValue::Value(a * 100.0)),
        YAxis::Agreement => p
            .fidelity
            .as_ref()?
            .agreement
            .map(|a| YValue::Value(a * 100.0)),
        YAxis::OutputSqnr => Some(match p.fidelity.as_ref()?.output_sqnr_db {
            None => YValue::Identical,
            Some(db) if db.is_finite() => YValue::Value(db),
            Some(_) => YValue::Broken,
        }),
    }
}

/// Heights for the infinite SQNRs: 10 dB above and below the finite ones.
fn infinite_heights(values: &[YValue]) -> (f64, f64) {
    let finite = values.iter().filter_map(|v| match v {
        YValue::Value(v) => Some(*v),
        _ => None,
    });
    let (low, high) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    if low.is_finite() {
        (high + 10.0, low - 10.0)
    } else {
        (60.0, -20.0)
    }
}

/// A coloured dot and its meaning: the chart's legend, kept outside the plot so it covers
/// no point.
fn mark_ui(ui: &mut egui::Ui, colour: Color32, text: &str) {
    let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
    ui.painter().circle_filled(rect.center(), 4.0, colour);
    ui.label(text);
}

/// Indices of `points` on the Pareto front (smaller x and higher y are better), by x.
pub fn pareto_front(points: &[(usize, [f64; 2])]) -> Vec<usize> {
    let mut order: Vec<&(usize, [f64; 2])> = points.iter().collect();
    order.sort_by(|a, b| a.1[0].total_cmp(&b.1[0]).then(b.1[1].total_cmp(&a.1[1])));
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for (i, p) in order {
        if p[1] > best {
            best = p[1];
            front.push(*i);
        }
    }
    front
}

/// The chart, the points, and the A/B comparison when two points are chosen.
pub fn tradeoff_ui(
    ui: &mut egui::Ui,
    session: &Session,
    view: &mut TradeoffView,
    commands: &mut Vec<Command>,
) {
    let runtime = session.run.runtime;
    let axes = y_axes(session);
    let y_axis = view.y_axis.filter(|a| axes.contains(a)).unwrap_or(axes[0]);
    ui.horizontal_wrapped(|ui| {
        for axis in &axes {
            if ui.selectable_label(y_axis == *axis, axis.label()).clicked() {
                view.y_axis = Some(*axis);
            }
        }
        ui.label("against");
        ui.selectable_value(&mut view.x_axis, XAxis::Size, "size");
        ui.selectable_value(
            &mut view.x_axis,
            XAxis::Latency,
            format!("latency ({runtime})"),
        );
    });
    let x_axis = view.x_axis;
    let located = |p: &EvalPoint| Some((x_of(p, x_axis, runtime)?, y_of(p, y_axis)?));
    // Points measured on other data (another dataset, other input settings) are not drawn
    // beside these: their numbers are not comparable.
    let on_other_data = |p: &EvalPoint| p.data.is_some() && p.data != session.data_key;
    let evaluated: Vec<(usize, f64, YValue)> = session
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| !on_other_data(p))
        .filter_map(|(i, p)| located(p).map(|(x, y)| (i, x, y)))
        .collect();
    let other_data = session.points.iter().filter(|p| on_other_data(p)).count();
    let baseline = session.baseline.as_ref().and_then(located);
    let all_y: Vec<YValue> = evaluated
        .iter()
        .map(|(_, _, y)| *y)
        .chain(baseline.map(|b| b.1))
        .collect();
    let (identical_at, broken_at) = infinite_heights(&all_y);
    let height = |y: YValue| match y {
        YValue::Value(v) => v,
        YValue::Identical => identical_at,
        YValue::Broken => broken_at,
    };
    let placed: Vec<(usize, [f64; 2])> = evaluated
        .iter()
        .map(|(i, x, y)| (*i, [*x, height(*y)]))
        .collect();
    let front: Vec<[f64; 2]> = pareto_front(&placed)
        .into_iter()
        .filter_map(|i| placed.iter().find(|(j, _)| *j == i).map(|(_, p)| *p))
        .collect();
    let x_label = match x_axis {
        XAxis::Size => "size (KiB)".to_owned(),
        XAxis::Latency => format!("latency p50 (ms, {runtime})"),
    };
    let generated = session.data_key.as_ref().is_some_and(|k| k.generated);
    let y_label = y_axis.unit_label();
    let has_front = front.len() > 1;
    let (broken, fine): (Vec<_>, Vec<_>) = evaluated
        .iter()
        .map(|(_, x, y)| (*y, [*x, height(*y)]))
        .partition(|(y, _)| *y == YValue::Broken);
    let any_broken = !broken.is_empty();
    let response = Plot::new(("tradeoffs", x_axis == XAxis::Latency, y_axis as u8))
        // No legend inside the chart: it covered points. The caption below names the marks.
        .height(220.0)
        .x_axis_label(x_label)
        .y_axis_label(y_label)
        .show(ui, |plot| {
            if let Some((x, y)) = baseline {
                let name = if y == YValue::Identical {
                    "original (identical)"
                } else {
                    "original"
                };
                plot.points(
                    Points::new(name, PlotPoints::from(vec![[x, height(y)]]))
                        .radius(6.0)
                        .color(ORIGINAL),
                );
            }
            plot.points(
                Points::new(
                    "evaluated",
                    PlotPoints::from(fine.iter().map(|(_, p)| *p).collect::<Vec<_>>()),
                )
                .radius(4.0)
                .color(EVALUATED),
            );
            if !broken.is_empty() {
                plot.points(
                    Points::new(
                        "broken (NaN/Inf outputs)",
                        PlotPoints::from(broken.iter().map(|(_, p)| *p).collect::<Vec<_>>()),
                    )
                    .radius(5.0)
                    .shape(egui_plot::MarkerShape::Cross)
                    .color(BROKEN),
                );
            }
            if front.len() > 1 {
                plot.line(Line::new("Pareto front", PlotPoints::from(front)));
            }
            plot.pointer_coordinate()
        });
    if response.response.clicked()
        && let Some(pointer) = response.inner
    {
        // The nearest point in screen space brings its settings back.
        let at = response.transform.position_from_point(&pointer);
        let nearest = placed
            .iter()
            .map(|(i, p)| {
                let screen = response
                    .transform
                    .position_from_point(&egui_plot::PlotPoint::new(p[0], p[1]));
                (*i, screen.distance(at))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, distance)) = nearest
            && distance < 12.0
        {
            commands.push(Command::RestorePoint(i));
        }
    }
    ui.horizontal_wrapped(|ui| {
        mark_ui(ui, ORIGINAL, "original");
        mark_ui(ui, EVALUATED, "evaluated");
        if any_broken {
            mark_ui(ui, BROKEN, "broken (NaN/Inf outputs)");
        }
        if has_front {
            ui.label("line: Pareto front");
        }
    });
    ui.small(format!(
        "Vertical: {}{}.",
        y_axis.explained(),
        if generated {
            ", on generated inputs (not real data)"
        } else {
            ""
        }
    ));
    if y_axis == YAxis::OutputSqnr && all_y.contains(&YValue::Identical) {
        ui.small(format!(
            "Identical outputs (infinite SQNR) are drawn at {identical_at:.0} dB."
        ));
    }
    if other_data > 0 {
        ui.small(format!(
            "{other_data} point(s) measured on other data are not drawn (listed below)."
        ));
    }
    if placed.len() + other_data < session.points.len() {
        let why = match x_axis {
            XAxis::Latency => format!("a {runtime} latency or "),
            XAxis::Size => String::new(),
        };
        ui.small(format!(
            "{} point(s) without {why}{} are not drawn.",
            session.points.len() - placed.len() - other_data,
            y_axis.label()
        ));
    }
    points_ui(ui, session, commands);
    if session.comparing() {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Comparing the two points layer by layer");
        });
    }
    if let Some(ab) = &session.ab {
        ui.separator();
        ab_ui(ui, session, ab, commands);
    }
}

/// Two configurations side by side: the measured totals, then every layer's settings and
/// estimates, the layers that differ first.
fn ab_ui(ui: &mut egui::Ui, session: &Session, ab: &AbComparison, commands: &mut Vec<Command>) {
    let (Some(pa), Some(pb)) = (session.points.get(ab.a), session.points.get(ab.b)) else {
        return;
    };
    ui.horizontal(|ui| {
        ui.strong(format!(
            "A/B: point {} against point {}",
            ab.a + 1,
            ab.b + 1
        ));
        if ui.small_button("Close").clicked() {
            commands.push(Command::CloseAb);
        }
    });
    let latency = |p: &EvalPoint| {
        p.latency_ms
            .map_or("-".to_owned(), |l| format!("{l:.3} ms ({})", p.runtime))
    };
    let fidelity = |p: &EvalPoint, what: fn(&super::points::PointFidelity) -> String| {
        p.fidelity.as_ref().map_or("-".to_owned(), what)
    };
    let optional = |v: Option<f64>| v.map_or("-".to_owned(), percent);
    let mut rows = vec![
        (
            "output SQNR",
            fidelity(pa, |f| f.sqnr_text()),
            fidelity(pb, |f| f.sqnr_text()),
        ),
        (
            "cosine similarity",
            fidelity(pa, |f| format!("{:.4}", f.cosine)),
            fidelity(pb, |f| format!("{:.4}", f.cosine)),
        ),
        (
            "max abs error",
            fidelity(pa, |f| format!("{:.3e}", f.max_abs_err)),
            fidelity(pb, |f| format!("{:.3e}", f.max_abs_err)),
        ),
    ];
    if pa.accuracy.is_some() || pb.accuracy.is_some() {
        rows.push(("accuracy", optional(pa.accuracy), optional(pb.accuracy)));
    }
    let agreement = |p: &EvalPoint| p.fidelity.as_ref().and_then(|f| f.agreement);
    if agreement(pa).is_some() || agreement(pb).is_some() {
        rows.push((
            "top-1 agreement",
            optional(agreement(pa)),
            optional(agreement(pb)),
        ));
    }
    rows.extend([
        ("size", bytes(pa.size_bytes), bytes(pb.size_bytes)),
        ("latency", latency(pa), latency(pb)),
        ("settings", pa.settings_short(), pb.settings_short()),
    ]);
    egui::ScrollArea::horizontal()
        .id_salt("ab_totals")
        .show(ui, |ui| {
            egui::Grid::new("ab_totals").num_columns(3).show(ui, |ui| {
                for (what, x, y) in rows {
                    ui.label(what);
                    ui.label(format!("A {x}"));
                    ui.label(format!("B {y}"));
                    ui.end_row();
                }
            });
        });
    if let Some(e) = &ab.error {
        ui.colored_label(ui.visuals().error_fg_color, e);
        return;
    }
    let differing = ab.rows.iter().filter(|r| r.differs()).count();
    ui.label(format!(
        "{differing} of {} layers are set differently",
        ab.rows.len()
    ));
    egui::ScrollArea::both()
        .id_salt("ab_layers")
        .max_height(220.0)
        .show(ui, |ui| {
            egui::Grid::new("ab_layers_grid")
                .striped(true)
                .num_columns(5)
                .show(ui, |ui| {
                    for h in [
                        "layer",
                        "A settings",
                        "B settings",
                        "SQNR A / B",
                        "size A / B",
                    ] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    let mut order: Vec<&super::session::AbRow> = ab.rows.iter().collect();
                    order.sort_by_key(|r| !r.differs());
                    for r in order {
                        let name = if r.differs() {
                            egui::RichText::new(&r.layer).strong()
                        } else {
                            egui::RichText::new(&r.layer)
                        };
                        ui.label(name);
                        ui.label(&r.a_settings);
                        ui.label(&r.b_settings);
                        let db = |s: Option<f64>| s.map_or("inf".to_owned(), |v| format!("{v:.1}"));
                        ui.label(format!("{} / {} dB", db(r.a_sqnr_db), db(r.b_sqnr_db)));
                        ui.label(format!("{} / {}", bytes(r.a_bytes), bytes(r.b_bytes)));
                        ui.end_row();
                    }
                });
        });
}
