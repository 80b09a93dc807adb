//! The "Sensitivity" panel: a layers × candidates heat map of the model's output SQNR with
//! only that layer changed. A cell's click gives the layer that setting (an undo step).

use edgefit_engine::guide::sensitivity::{Cell, Sensitivity};

use super::Command;
use super::session::Session;
use crate::format::bytes;

/// Width of a heat-map cell, in points.
const CELL_WIDTH: f32 = 36.0;

/// View state: which sweep result was last brought into view, and the search's floor.
pub struct SensitivityView {
    shown: Option<usize>,
    /// The output SQNR the plan search must keep, in dB.
    pub min_sqnr_db: f64,
}

impl Default for SensitivityView {
    fn default() -> Self {
        Self {
            shown: None,
            min_sqnr_db: 30.0,
        }
    }
}

/// The heading, the button, what the last sweep found, and the heat map. A new result
/// scrolls into view.
pub fn sensitivity_ui(
    ui: &mut egui::Ui,
    session: &Session,
    view: &mut SensitivityView,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    let section = ui.scope(|ui| section_ui(ui, session, view, busy, commands));
    let identity = session
        .sensitivity
        .as_ref()
        .map(|s| std::sync::Arc::as_ptr(s) as usize);
    if identity.is_some() && identity != view.shown {
        view.shown = identity;
        ui.scroll_to_rect(section.response.rect, Some(egui::Align::TOP));
    }
}

fn section_ui(
    ui: &mut egui::Ui,
    session: &Session,
    view: &mut SensitivityView,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    ui.heading("Sensitivity");
    let button = ui
        .add_enabled(!busy, egui::Button::new("Analyse sensitivity"))
        .on_hover_text(
            "Set each layer ALONE to int8…int2, fp16 and 25–90% pruning, and measure the \
             model's outputs against the original on the evaluation samples",
        );
    if button.clicked() {
        commands.push(Command::AnalyseSensitivity);
    }
    let Some(s) = &session.sensitivity else {
        ui.small("Which layers can take fewer bits or pruning, measured one layer at a time.");
        return;
    };
    ui.small(format!(
        "{} samples, {} runs, {} build{}, {:.1} s ({}).",
        s.samples,
        s.model_runs,
        s.model_builds,
        if s.model_builds == 1 { "" } else { "s" },
        s.wall_time_s,
        s.runtime.name()
    ));
    if !s.same_defaults(&session.recipe) {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "Measured with other default settings (symmetry, per-channel, clipping or prune \
             method): analyse again to match the plan.",
        );
    }
    let worst = most_sensitive(s, 3);
    if !worst.is_empty() {
        ui.label(format!(
            "Most sensitive at {}: {}",
            s.labels[0],
            worst.join(", ")
        ));
    }
    search_ui(ui, session, view, busy, commands);
    ui.small("Output SQNR in dB with only that layer changed; click a cell to use it.");
    egui::ScrollArea::horizontal()
        .id_salt("sensitivity-map")
        .show(ui, |ui| heat_map_ui(ui, session, s, commands));
}

/// The grid: one row per layer, one column per candidate.
fn heat_map_ui(ui: &mut egui::Ui, session: &Session, s: &Sensitivity, commands: &mut Vec<Command>) {
    egui::Grid::new("sensitivity-grid")
        .spacing([2.0, 2.0])
        .show(ui, |ui| {
            ui.label("");
            for label in &s.labels {
                ui.add_sized(
                    [CELL_WIDTH, 14.0],
                    egui::Label::new(egui::RichText::new(label).small()),
                );
            }
            ui.end_row();
            for layer in &s.layers {
                let name = short(&layer.name, 16);
                ui.label(name).on_hover_text(&layer.name);
                let current = session.recipe.settings_for(&layer.name);
                for (c, cell) in layer.cells.iter().enumerate() {
                    let candidate = s.candidates[c];
                    let Some(cell) = cell else {
                        ui.add_sized([CELL_WIDTH, 18.0], egui::Label::new("–"))
                            .on_hover_text("does not apply to this layer");
                        continue;
                    };
                    let chosen = !current.exclude
                        && current.precision == candidate.precision
                        && current.prune_ratio == candidate.prune_ratio;
                    let text = egui::RichText::new(db_text(cell))
                        .small()
                        .color(egui::Color32::BLACK);
                    let mut button = egui::Button::new(text).fill(colour(cell.output_sqnr_db));
                    if chosen {
                        button =
                            button.stroke(egui::Stroke::new(2.0, ui.visuals().strong_text_color()));
                    }
                    let label = format!("{} at {}", layer.name, s.labels[c]);
                    let response = ui
                        .add_sized([CELL_WIDTH, 18.0], button)
                        .on_hover_text(describe(s, layer.bytes, cell, &label));
                    response.widget_info(|| {
                        egui::WidgetInfo::labeled(egui::Role::Button, true, &label)
                    });
                    if response.clicked() {
                        commands.push(Command::ApplyCandidate {
                            layer: layer.name.clone(),
                            candidate,
                        });
                    }
                }
                ui.end_row();
            }
        });
}

/// The floor, the "Find smallest plan" button, and the last search's measured picks.
fn search_ui(
    ui: &mut egui::Ui,
    session: &Session,
    view: &mut SensitivityView,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    ui.horizontal(|ui| {
        let label = ui.label("Keep output SQNR ≥");
        ui.add(
            egui::DragValue::new(&mut view.min_sqnr_db)
                .range(0.0..=120.0)
                .speed(0.5)
                .suffix(" dB"),
        )
        .labelled_by(label.id);
        if ui
            .add_enabled(!busy, egui::Button::new("Find smallest plan"))
            .on_hover_text(
                "Predict every plan on the size/error front from this table (the layers' \
                 noise added up), measure at most five, and make the smallest that keeps the \
                 floor the current plan (an undo step)",
            )
            .clicked()
        {
            commands.push(Command::SearchPlan {
                min_sqnr_db: view.min_sqnr_db,
            });
        }
    });
    let Some(r) = &session.search else { return };
    for e in &r.evaluations {
        let db = |v: Option<f64>| v.map_or("∞".to_owned(), |v| format!("{v:.1}"));
        ui.small(format!(
            "plan {}: {} — predicted {} dB, measured {} dB: {}",
            e.point,
            bytes(e.size_bytes),
            db(e.predicted_sqnr_db),
            db(e.measured_sqnr_db),
            if e.passed { "passes" } else { "fails" }
        ));
    }
    if let Some(i) = r.chosen {
        ui.small(format!(
            "Applied plan {i}: {} of {} layers compressed ({:.1} s).",
            r.front[i].choice.iter().filter(|c| c.is_some()).count(),
            r.front[i].choice.len(),
            r.wall_time_s
        ));
    }
}

/// The `count` layers with the lowest SQNR at the first candidate, `name (dB)`.
fn most_sensitive(s: &Sensitivity, count: usize) -> Vec<String> {
    let mut at_first: Vec<(&str, f64)> = s
        .layers
        .iter()
        .filter_map(|l| {
            let cell = l.cells.first()?.as_ref()?;
            Some((
                l.name.as_str(),
                cell.output_sqnr_db.unwrap_or(f64::INFINITY),
            ))
        })
        .collect();
    at_first.sort_by(|a, b| a.1.total_cmp(&b.1));
    at_first
        .into_iter()
        .take(count)
        .map(|(name, db)| format!("{} ({db:.1} dB)", short(name, 28)))
        .collect()
}

fn db_text(cell: &Cell) -> String {
    match cell.output_sqnr_db {
        None => "∞".to_owned(),
        Some(v) if v == f64::NEG_INFINITY => "-∞".to_owned(),
        Some(v) => format!("{v:.0}"),
    }
}

fn describe(s: &Sensitivity, layer_bytes: u64, cell: &Cell, label: &str) -> String {
    let mut text = format!(
        "{label}: output SQNR {} dB, top-1 agreement {:.1}%",
        db_text(cell),
        cell.top1_agreement * 100.0
    );
    if let (Some(a), Some(o)) = (cell.accuracy, s.original_accuracy) {
        text.push_str(&format!(
            ", accuracy {:.2}% (original {:.2}%)",
            a * 100.0,
            o * 100.0
        ));
    }
    text.push_str(&format!(
        "; weight {} → {}. Click to use it for this layer.",
        bytes(layer_bytes),
        bytes(cell.bytes)
    ));
    text
}

/// Red below 10 dB, through amber at 25 dB, to green from 40 dB up.
fn colour(db: Option<f64>) -> egui::Color32 {
    let t = db.map_or(1.0, |v| ((v - 10.0) / 30.0).clamp(0.0, 1.0)) as f32;
    let (red, amber, green) = (
        egui::Color32::from_rgb(230, 110, 100),
        egui::Color32::from_rgb(240, 200, 90),
        egui::Color32::from_rgb(120, 200, 120),
    );
    if t < 0.5 {
        lerp(red, amber, t * 2.0)
    } else {
        lerp(amber, green, (t - 0.5) * 2.0)
    }
}

fn lerp(a: egui::Color32, b: egui::Color32, t: f32) -> egui::Color32 {
    let mix = |x: u8, y: u8| (f32::from(x) + (f32::from(y) - f32::from(x)) * t).round() as u8;
    egui::Color32::from_rgb(mix(a.r(), b.r()), mix(a.g(), b.g()), mix(a.b(), b.b()))
}

/// `name` cut to `max` characters with `…` (the whole name is in the hover text).
fn short(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let tail: String = name
            .chars()
            .rev()
            .take(max - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
