//! The list of evaluated points: one row per configuration with its measures, settings and
//! restore / A / B buttons.

use super::super::Command;
use super::super::session::Session;
use crate::format::bytes;

/// One row per evaluated configuration, newest first, with its settings in short form and
/// restore and A/B buttons.
pub(super) fn points_ui(ui: &mut egui::Ui, session: &Session, commands: &mut Vec<Command>) {
    if session.points.is_empty() {
        return;
    }
    let (a, b) = session
        .ab
        .as_ref()
        .map_or((None, None), |ab| (Some(ab.a), Some(ab.b)));
    let labelled = session.points.iter().any(|p| p.accuracy.is_some());
    let agreement = session
        .points
        .iter()
        .any(|p| p.fidelity.as_ref().is_some_and(|f| f.agreement.is_some()));
    let current = session.measured_point();
    // The newest point other than `i`: what a single A or B is compared with.
    let other_than = |i: usize| (0..session.points.len()).rev().find(|&j| j != i);
    // Wide settings scroll inside the panel instead of widening it.
    egui::ScrollArea::both()
        .id_salt("evaluated_points")
        .max_height(160.0)
        .show(ui, |ui| {
            egui::Grid::new("points_grid").striped(true).show(ui, |ui| {
                ui.strong("#");
                ui.strong("");
                ui.strong("output SQNR");
                if labelled {
                    ui.strong("accuracy");
                }
                if agreement {
                    ui.strong("agreement");
                }
                let device = session
                    .deploy
                    .choices
                    .device
                    .as_deref()
                    .filter(|_| !session.deploy.point_fits.is_empty());
                for h in ["size", "latency"] {
                    ui.strong(h);
                }
                if let Some(id) = device {
                    ui.strong(format!("on {id}"));
                }
                ui.strong("settings");
                ui.end_row();
                for (i, p) in session.points.iter().enumerate().rev() {
                    let number = format!("{}", i + 1);
                    if current == Some(i) {
                        ui.strong(number).on_hover_text("The plan as it is now");
                    } else {
                        ui.label(number);
                    }
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
                        // A single A or B is compared with the newest other point; with one
                        // point there is nothing to compare.
                        ui.add_enabled_ui(session.points.len() > 1, |ui| {
                            if named(
                                ui.selectable_label(a == Some(i), "A"),
                                a == Some(i),
                                format!("Compare point {} as A", i + 1),
                            )
                            .clicked()
                                && let Some(other) = b.filter(|&b| b != i).or(other_than(i))
                            {
                                commands.push(Command::CompareAb { a: i, b: other });
                            }
                            if named(
                                ui.selectable_label(b == Some(i), "B"),
                                b == Some(i),
                                format!("Compare point {} as B", i + 1),
                            )
                            .clicked()
                                && let Some(other) = a.filter(|&a| a != i).or(other_than(i))
                            {
                                commands.push(Command::CompareAb { a: other, b: i });
                            }
                        });
                    });
                    match &p.fidelity {
                        Some(f) => {
                            let text = f.sqnr_text();
                            let detail = format!(
                                "cosine similarity {:.4}, max abs error {:.3e}{}",
                                f.cosine,
                                f.max_abs_err,
                                f.worst_output
                                    .as_ref()
                                    .map_or(String::new(), |o| format!(", lowest on {o}"))
                            );
                            if f.broken() {
                                ui.colored_label(ui.visuals().error_fg_color, text)
                            } else {
                                ui.label(text)
                            }
                            .on_hover_text(detail);
                        }
                        None => {
                            ui.label("-")
                                .on_hover_text("Measured by an older version: not recorded");
                        }
                    }
                    if labelled {
                        ui.label(p.accuracy.map_or("-".to_owned(), percent));
                    }
                    if agreement {
                        ui.label(
                            p.fidelity
                                .as_ref()
                                .and_then(|f| f.agreement)
                                .map_or("-".to_owned(), percent),
                        );
                    }
                    ui.label(bytes(p.size_bytes));
                    ui.label(
                        p.latency_ms
                            .map_or("-".to_owned(), |l| format!("{l:.3} ms {}", p.runtime)),
                    );
                    if device.is_some() {
                        fit_badge_ui(
                            ui,
                            session.deploy.point_fits.get(i).and_then(Option::as_ref),
                        );
                    }
                    let settings = format!(
                        "{}{}{}",
                        p.settings_short(),
                        if p.verified { "" } else { " · NOT verified" },
                        if p.data.is_some() && p.data != session.data_key {
                            " · other data"
                        } else {
                            ""
                        }
                    );
                    match &p.data {
                        Some(d) => ui.label(settings).on_hover_text(format!(
                            "measured in {} on {} ({} samples)",
                            p.runtime, d.description, d.samples
                        )),
                        None => ui.label(settings),
                    };
                    ui.end_row();
                }
            });
        });
}

/// OK (green) when the point's plan fits the chosen device's RAM and flash and meets the
/// latency target, else NO (red); the figures on hover.
fn fit_badge_ui(ui: &mut egui::Ui, fit: Option<&edgefit_engine::deploy::fit::DeviceFit>) {
    let Some(f) = fit else {
        ui.label("-");
        return;
    };
    let (text, colour) = if f.fits() {
        ("OK", egui::Color32::from_rgb(60, 170, 90))
    } else {
        ("NO", egui::Color32::from_rgb(220, 70, 60))
    };
    ui.colored_label(colour, text).on_hover_text(format!(
        "RAM {} of {}, weights {}{}, ~{:.2} ms (estimate){}",
        bytes(f.ram_needed_bytes),
        bytes(f.ram_bytes),
        bytes(f.weight_bytes),
        f.weight_budget_bytes
            .map_or(String::new(), |b| format!(" of {}", bytes(b))),
        f.latency_ms,
        f.meets_latency.map_or(String::new(), |m| if m {
            ", meets the target".to_owned()
        } else {
            ", misses the target".to_owned()
        })
    ));
}

pub(super) fn percent(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

/// `response` with the accessible name `name` (and as its hover text): one-letter buttons
/// repeated on every row need a name that says which row.
fn named(response: egui::Response, selected: bool, name: String) -> egui::Response {
    response.widget_info(|| {
        egui::WidgetInfo::selected(egui::Role::Button, true, selected, name.clone())
    });
    response.on_hover_text(name)
}
