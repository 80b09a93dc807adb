//! The trade-off chart (accuracy against size or latency, every evaluated configuration, the
//! original and the Pareto front), the list of evaluated points, and the A/B comparison of two
//! configurations layer by layer.

use egui::Color32;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use super::Command;
use super::session::{AbComparison, EvalPoint, Session};
use crate::format::bytes;

/// What the chart's horizontal axis shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XAxis {
    #[default]
    Size,
    Latency,
}

/// View state of the trade-off panel.
#[derive(Default)]
pub struct TradeoffView {
    pub x_axis: XAxis,
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

/// Indices of `points` on the Pareto front (smaller x and higher accuracy are better), by x.
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
    ui.horizontal(|ui| {
        ui.label("Accuracy against");
        ui.selectable_value(&mut view.x_axis, XAxis::Size, "size");
        ui.selectable_value(
            &mut view.x_axis,
            XAxis::Latency,
            format!("latency ({runtime})"),
        );
    });
    let axis = view.x_axis;
    let placed: Vec<(usize, [f64; 2])> = session
        .points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| x_of(p, axis, runtime).map(|x| (i, [x, p.accuracy * 100.0])))
        .collect();
    let front: Vec<[f64; 2]> = pareto_front(&placed)
        .into_iter()
        .filter_map(|i| placed.iter().find(|(j, _)| *j == i).map(|(_, p)| *p))
        .collect();
    let x_label = match axis {
        XAxis::Size => "size (KiB)".to_owned(),
        XAxis::Latency => format!("latency p50 (ms, {runtime})"),
    };
    let coordinates: Vec<[f64; 2]> = placed.iter().map(|(_, p)| *p).collect();
    let response = Plot::new(("tradeoffs", axis == XAxis::Latency))
        // Bottom right: the best points (small, accurate) sit top left, the original top right.
        .legend(Legend::default().position(egui_plot::Corner::RightBottom))
        .height(220.0)
        .x_axis_label(x_label)
        .y_axis_label("accuracy (%)")
        .show(ui, |plot| {
            if let Some(b) = &session.baseline
                && let Some(x) = x_of(b, axis, runtime)
            {
                plot.points(
                    Points::new("original", PlotPoints::from(vec![[x, b.accuracy * 100.0]]))
                        .radius(6.0)
                        .color(Color32::from_rgb(90, 200, 120)),
                );
            }
            plot.points(
                Points::new("evaluated", PlotPoints::from(coordinates.clone()))
                    .radius(4.0)
                    .color(Color32::from_rgb(230, 140, 60)),
            );
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
    if axis == XAxis::Latency && placed.len() < session.points.len() {
        ui.small(format!(
            "{} point(s) without a {runtime} latency are not drawn.",
            session.points.len() - placed.len()
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

/// One row per evaluated configuration, newest first, with restore and A/B buttons.
fn points_ui(ui: &mut egui::Ui, session: &Session, commands: &mut Vec<Command>) {
    if session.points.is_empty() {
        return;
    }
    let (a, b) = session
        .ab
        .as_ref()
        .map_or((None, None), |ab| (Some(ab.a), Some(ab.b)));
    egui::ScrollArea::vertical()
        .id_salt("evaluated_points")
        .max_height(160.0)
        .show(ui, |ui| {
            egui::Grid::new("points_grid")
                .striped(true)
                .num_columns(6)
                .show(ui, |ui| {
                    for h in ["#", "accuracy", "size", "latency", "format", ""] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for (i, p) in session.points.iter().enumerate().rev() {
                        ui.label(format!("{}", i + 1));
                        ui.label(format!("{:.2}%", p.accuracy * 100.0));
                        ui.label(bytes(p.size_bytes));
                        ui.label(
                            p.latency_ms
                                .map_or("-".to_owned(), |l| format!("{l:.3} ms {}", p.runtime)),
                        );
                        ui.label(format!(
                            "{}{}",
                            p.format.name(),
                            if p.verified { "" } else { " NOT verified" }
                        ));
                        ui.horizontal(|ui| {
                            let restore = ui.small_button("Restore");
                            let restore_name = format!("Restore point {}", i + 1);
                            restore.widget_info(|| {
                                egui::WidgetInfo::labeled(
                                    egui::Role::Button,
                                    true,
                                    restore_name.clone(),
                                )
                            });
                            if restore.on_hover_text(restore_name.clone()).clicked() {
                                commands.push(Command::RestorePoint(i));
                            }
                            // A is the older of the two compared points, B the newer.
                            if named(
                                ui.selectable_label(a == Some(i), "A"),
                                a == Some(i),
                                format!("Compare point {} as A", i + 1),
                            )
                            .clicked()
                            {
                                let other = b.filter(|&b| b != i).unwrap_or(i);
                                commands.push(Command::CompareAb { a: i, b: other });
                            }
                            if named(
                                ui.selectable_label(b == Some(i), "B"),
                                b == Some(i),
                                format!("Compare point {} as B", i + 1),
                            )
                            .clicked()
                            {
                                let other = a.filter(|&a| a != i).unwrap_or(i);
                                commands.push(Command::CompareAb { a: other, b: i });
                            }
                        });
                        ui.end_row();
                    }
                });
        });
}

/// `response` with the accessible name `name` (and as its hover text): one-letter buttons
/// repeated on every row need a name that says which row.
fn named(response: egui::Response, selected: bool, name: String) -> egui::Response {
    response.widget_info(|| {
        egui::WidgetInfo::selected(egui::Role::Button, true, selected, name.clone())
    });
    response.on_hover_text(name)
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
    egui::Grid::new("ab_totals").num_columns(3).show(ui, |ui| {
        for (what, x, y) in [
            (
                "accuracy",
                format!("{:.2}%", pa.accuracy * 100.0),
                format!("{:.2}%", pb.accuracy * 100.0),
            ),
            ("size", bytes(pa.size_bytes), bytes(pb.size_bytes)),
            ("latency", latency(pa), latency(pb)),
            (
                "format",
                pa.format.name().to_owned(),
                pb.format.name().to_owned(),
            ),
        ] {
            ui.label(what);
            ui.label(format!("A {x}"));
            ui.label(format!("B {y}"));
            ui.end_row();
        }
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
    egui::ScrollArea::vertical()
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
