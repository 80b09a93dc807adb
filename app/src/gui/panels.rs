//! The studio's panels. Each reads the session and pushes [`Command`]s; none mutates state.

use edgefit_engine::ModelAnalysis;
use edgefit_engine::compress::plan::{Clipping, Precision, PruneMethod, Recipe};
use edgefit_engine::export::build::ExportFormat;
use edgefit_engine::model::graph::format_shape;

use egui::{Color32, RichText};
use egui_plot::{Bar, BarChart, Legend, Plot, VLine};

use super::Command;
use super::session::Session;

mod layers_table;

use crate::format::{bytes, si, signed_bytes, thousands};
pub use layers_table::{LayersView, layers_ui};

/// Sends `recipe` if it differs. A press-and-drag is one undo step: its first change records
/// the plan as it was before the press, the rest of the gesture joins that step. (A slider
/// jumps to the pointer on the press, before egui calls it a drag: "drag started" cannot
/// mark the step.)
fn send_recipe(
    ui: &egui::Ui,
    commands: &mut Vec<Command>,
    response: &egui::Response,
    recipe: impl FnOnce() -> Recipe,
) {
    let recorded = response.id.with("gesture_recorded_for_undo");
    let held = response.is_pointer_button_down_on() || response.dragged();
    if !held {
        ui.data_mut(|d| d.remove::<bool>(recorded));
    }
    if !response.changed() {
        return;
    }
    let record = if held {
        let first = !ui.data(|d| d.get_temp::<bool>(recorded).unwrap_or(false));
        ui.data_mut(|d| d.insert_temp(recorded, true));
        first
    } else {
        true
    };
    commands.push(Command::SetRecipe {
        recipe: recipe(),
        record,
    });
}

fn precision_label(p: Precision) -> String {
    match p {
        Precision::Float32 => "float32".to_owned(),
        Precision::Float16 => "float16".to_owned(),
        Precision::Int { bits } => format!("int{bits}"),
    }
}

/// Global pruning and quantization settings, the export format, and the actions.
pub fn controls_ui(ui: &mut egui::Ui, session: &Session, commands: &mut Vec<Command>) {
    ui.heading("Controls");
    let d = session.recipe.defaults;
    let mut recipe = session.recipe.clone();

    ui.strong("Pruning");
    let mut ratio = d.prune_ratio;
    let r = ui.add(egui::Slider::new(&mut ratio, 0.0..=0.95).text("Prune ratio"));
    recipe.defaults.prune_ratio = ratio;
    send_recipe(ui, commands, &r, || recipe.clone());
    let mut method = d.prune_method;
    egui::ComboBox::from_label("Pruning method")
        .selected_text(format!("{method:?}"))
        .show_ui(ui, |ui| {
            for m in [
                PruneMethod::Magnitude,
                PruneMethod::ChannelsL1,
                PruneMethod::ChannelsL2,
            ] {
                ui.selectable_value(&mut method, m, format!("{m:?}"));
            }
        });
    if method != d.prune_method {
        let mut r = session.recipe.clone();
        r.defaults.prune_method = method;
        commands.push(Command::SetRecipe {
            recipe: r,
            record: true,
        });
    }
    let mut reconstruct = session.recipe.reconstruct.enabled;
    if ui
        .checkbox(
            &mut reconstruct,
            "Reconstruct kept weights (calibration data)",
        )
        .on_hover_text(
            "After magnitude pruning, re-solve each layer's kept weights so it reproduces the \
             original layer outputs on the calibration data. Applied when evaluating and \
             exporting; the per-layer estimates do not include it.",
        )
        .changed()
    {
        let mut r = session.recipe.clone();
        r.reconstruct.enabled = reconstruct;
        commands.push(Command::SetRecipe {
            recipe: r,
            record: true,
        });
    }

    ui.separator();
    ui.strong("Quantization");
    let mut precision = d.precision;
    egui::ComboBox::from_label("Weight precision")
        .selected_text(precision_label(precision))
        .show_ui(ui, |ui| {
            for p in [
                Precision::Float32,
                Precision::Float16,
                Precision::Int { bits: 8 },
                Precision::Int { bits: 4 },
            ] {
                ui.selectable_value(&mut precision, p, precision_label(p));
            }
        });
    if let Precision::Int { bits } = precision {
        let mut b = bits;
        let r = ui.add(egui::Slider::new(&mut b, 2..=8).text("Bits"));
        send_recipe(ui, commands, &r, || {
            let mut rec = session.recipe.clone();
            rec.defaults.precision = Precision::Int { bits: b };
            rec
        });
    }
    if precision != d.precision {
        let mut r = session.recipe.clone();
        r.defaults.precision = precision;
        commands.push(Command::SetRecipe {
            recipe: r,
            record: true,
        });
    }
    let mut symmetric = d.symmetric;
    let mut per_channel = d.per_channel;
    let mut clipping = d.clipping;
    let c1 = ui.checkbox(&mut symmetric, "Symmetric").changed();
    let c2 = ui.checkbox(&mut per_channel, "Per channel").changed();
    egui::ComboBox::from_label("Clipping")
        .selected_text(match clipping {
            Clipping::MinMax => "min-max".to_owned(),
            Clipping::Mse => "MSE-optimal".to_owned(),
            Clipping::OutputMse => "output-MSE (data)".to_owned(),
            Clipping::Percentile { percentile } => format!("percentile {percentile}"),
        })
        .show_ui(ui, |ui| {
            ui.selectable_value(&mut clipping, Clipping::MinMax, "min-max");
            ui.selectable_value(&mut clipping, Clipping::Mse, "MSE-optimal");
            ui.selectable_value(&mut clipping, Clipping::OutputMse, "output-MSE (data)");
            ui.selectable_value(
                &mut clipping,
                Clipping::Percentile { percentile: 99.99 },
                "percentile 99.99",
            );
        });
    let mut compensate = d.error_compensation;
    let c3 = ui
        .checkbox(&mut compensate, "Error compensation (GPTQ, data)")
        .on_hover_text(
            "Round each output row's integer weights one at a time and spread each rounding \
             error over the rest, so the layer's output on the calibration data moves the \
             least (Conv/Gemm/MatMul). Applied when evaluating and exporting; the per-layer \
             estimates round plainly.",
        )
        .changed();
    if c1 || c2 || c3 || clipping != d.clipping {
        let mut r = session.recipe.clone();
        r.defaults.symmetric = symmetric;
        r.defaults.per_channel = per_channel;
        r.defaults.clipping = clipping;
        r.defaults.error_compensation = compensate;
        commands.push(Command::SetRecipe {
            recipe: r,
            record: true,
        });
    }

    ui.separator();
    ui.strong("Export");
    let mut format = session.format;
    egui::ComboBox::from_label("Format")
        .selected_text(format.name())
        .show_ui(ui, |ui| {
            for f in ExportFormat::ALL {
                ui.selectable_value(&mut format, f, f.name());
            }
        });
    if format != session.format {
        commands.push(Command::SetFormat(format));
    }
    ui.horizontal(|ui| {
        if ui.button("Evaluate now").clicked() {
            commands.push(Command::Evaluate);
        }
        if ui.button("Export...").clicked() {
            commands.push(Command::PickExportPath);
        }
    });
    ui.horizontal(|ui| {
        if ui
            .add_enabled(session.can_undo(), egui::Button::new("Undo"))
            .clicked()
        {
            commands.push(Command::Undo);
        }
        if ui
            .add_enabled(session.can_redo(), egui::Button::new("Redo"))
            .clicked()
        {
            commands.push(Command::Redo);
        }
    });
    if let Some(c) = &session.compression {
        let (before, after) = c.weight_bytes();
        ui.label(format!(
            "Compressed layers: {} -> {}",
            bytes(before),
            bytes(after)
        ));
    }
    if session.estimating {
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label("Updating estimates (large model: computed in the background)");
        });
    }
    if let Some(e) = &session.compression_error {
        ui.colored_label(ui.visuals().error_fg_color, e);
    }
}

/// Model summary: inputs/outputs, totals, op counts.
/// The model's figures, original and under the current plan (estimated from the per-layer
/// results; the evaluated points hold the measured ones), then op counts and inputs/outputs.
pub fn summary_ui(ui: &mut egui::Ui, session: &Session) {
    let a: &ModelAnalysis = &session.open.analysis;
    let plan = session.compression.as_ref();
    // What the plan changes: weight bytes, zeroed parameters, MACs of structurally pruned layers.
    let (mut bytes_saved, mut zeros, mut macs_saved) = (0i64, 0u64, 0u64);
    if let Some(c) = plan {
        for l in &c.layers {
            let r = &l.report;
            bytes_saved += r.bytes_before as i64 - r.bytes_after as i64;
            zeros += (r.sparsity * (r.bytes_before / 4) as f64).round() as u64;
            if let (Some(before), Some(after)) = (r.macs_before, r.macs_after) {
                macs_saved += before.saturating_sub(after);
            }
        }
    }
    let shrink = |b: u64| bytes(b.saturating_sub(bytes_saved.max(0) as u64));
    egui::Grid::new("summary_grid")
        .num_columns(3)
        .striped(true)
        .show(ui, |ui| {
            let mut row = |label: &str, original: String, planned: String| {
                ui.label(label);
                ui.label(original);
                ui.label(planned);
                ui.end_row();
            };
            row("", "original".to_owned(), "plan (est.)".to_owned());
            // The file the chosen format writes: measured when this plan was evaluated,
            // else built without writing (exact unless a later stage changes it).
            let planned = session
                .planned_file
                .as_ref()
                .filter(|(r, f, _)| *r == session.recipe && *f == session.format)
                .and_then(|(_, _, p)| p.as_ref().ok());
            let measured = session
                .measured_point()
                .and_then(|i| session.points.get(i))
                .map(|p| p.size_bytes);
            let file = match (measured, planned) {
                (Some(m), _) => format!("{} (measured)", bytes(m)),
                (None, Some(p)) if p.exact => bytes(p.size_bytes),
                (None, Some(p)) => format!("~{}", bytes(p.size_bytes)),
                (None, None) => format!("~{} (weights)", shrink(a.file_size_bytes)),
            };
            row(
                &format!("Size on disk ({})", session.format.name()),
                bytes(a.file_size_bytes),
                file,
            );
            row(
                "Parameters",
                thousands(a.parameters),
                format!("{} non-zero", thousands(a.parameters.saturating_sub(zeros))),
            );
            row(
                "Weight bytes",
                bytes(a.weight_bytes),
                shrink(a.weight_bytes),
            );
            let macs = |m: u64| {
                if a.macs_complete {
                    si(m)
                } else {
                    format!("{} (partial)", si(m))
                }
            };
            row(
                "MACs",
                macs(a.macs),
                macs(a.macs.saturating_sub(macs_saved)),
            );
            row("Nodes", thousands(a.nodes as u64), String::new());
            row("Layers", a.layers.len().to_string(), String::new());
        });
    device_badges_ui(ui, session);
    // What the format does not realise of the plan, and which format would.
    if let Some((_, _, planned)) = session
        .planned_file
        .as_ref()
        .filter(|(r, f, _)| *r == session.recipe && *f == session.format)
    {
        match planned {
            Ok(p) => {
                for note in &p.notes {
                    ui.colored_label(ui.visuals().warn_fg_color, note);
                }
            }
            Err(e) => {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    format!("The plan's file could not be built: {e}"),
                );
            }
        }
    }
    ui.label(format!(
        "Ops: {}",
        a.ops
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (label, values) in [("Inputs", &a.inputs), ("Outputs", &a.outputs)] {
        ui.strong(label);
        for v in values {
            let dtype = v.dtype.map_or("?".to_owned(), |d| d.name());
            ui.monospace(format!(
                "{}: {dtype} {}",
                v.name,
                format_shape(v.shape.as_deref())
            ));
        }
    }
}

/// The target device's verdicts for the original and the plan (chosen in the Devices panel):
/// fits RAM, fits flash, meets the latency target — green or red, with the margins.
fn device_badges_ui(ui: &mut egui::Ui, session: &Session) {
    let deploy = &session.deploy;
    let Some(row) = deploy
        .choices
        .device
        .as_deref()
        .and_then(|id| deploy.rows.iter().find(|r| r.original.device == id))
    else {
        ui.label(
            RichText::new("Choose a target device under Devices to see whether it fits.")
                .small()
                .weak(),
        );
        return;
    };
    ui.strong(format!("On {}", row.original.name));
    let badge = |ui: &mut egui::Ui, ok: Option<bool>, text: String| {
        let (mark, colour) = match ok {
            Some(true) => ("OK", Color32::from_rgb(60, 170, 90)),
            Some(false) => ("NO", Color32::from_rgb(220, 70, 60)),
            None => ("--", ui.visuals().weak_text_color()),
        };
        ui.label(RichText::new(format!("{mark} {text}")).color(colour));
    };
    // Wrapped, not a grid: the controls column keeps its width.
    for (label, f) in
        std::iter::once(("original", &row.original)).chain(row.plan.as_ref().map(|p| ("plan", p)))
    {
        ui.horizontal_wrapped(|ui| {
            ui.label(format!("{label}:"));
            badge(
                ui,
                Some(f.fits_ram),
                format!(
                    "RAM {} ({})",
                    bytes(f.ram_needed_bytes),
                    signed_bytes(f.ram_margin_bytes)
                ),
            );
            badge(
                ui,
                f.fits_flash,
                match f.flash_margin_bytes {
                    Some(m) => format!("flash {} ({})", bytes(f.weight_bytes), signed_bytes(m)),
                    None => format!("weights {}", bytes(f.weight_bytes)),
                },
            );
            badge(
                ui,
                f.meets_latency,
                format!("~{:.2} ms (estimate)", f.latency_ms),
            );
        });
    }
}

/// Histogram of the selected layer's weight before and after, with the quantization levels.
pub fn weights_ui(ui: &mut egui::Ui, session: &Session) {
    let (Some(view), Some(c)) = (&session.weights_view, &session.compression) else {
        ui.label("Select a layer to see its weights.");
        return;
    };
    let i = view.layer;
    let layer = &session.compressor.layers[i];
    let result = &c.layers[i];
    ui.label(format!(
        "{} - {} {:?}",
        layer.name, layer.weight, layer.dims
    ));
    let (before, after) = (&view.before, &view.after);
    let width = f64::from(before.bin_width());
    // Pruning piles every zeroed weight into one bin, which would flatten everything else:
    // bars are capped a little above the tallest other bin and the capped ones say their count.
    let zero_bin = |h: &edgefit_engine::analyse::stats::Histogram| {
        let at = ((0.0 - f64::from(h.min)) / width).floor();
        (at >= 0.0).then_some(at as usize)
    };
    let tallest_other = [before, after]
        .iter()
        .flat_map(|h| {
            let zero = zero_bin(h);
            h.counts
                .iter()
                .enumerate()
                .filter(move |(b, _)| Some(*b) != zero)
                .map(|(_, &n)| n)
        })
        .max()
        .unwrap_or(0);
    let cap = (tallest_other as f64 * 1.3).max(1.0);
    let mut capped: Vec<(f64, u64)> = Vec::new();
    let mut bars = |h: &edgefit_engine::analyse::stats::Histogram| -> Vec<Bar> {
        h.counts
            .iter()
            .enumerate()
            .map(|(b, &n)| {
                let x = f64::from(h.min) + (b as f64 + 0.5) * width;
                if n as f64 > cap {
                    capped.push((x, n));
                }
                Bar::new(x, (n as f64).min(cap)).width(width)
            })
            .collect()
    };
    let (before_bars, after_bars) = (bars(before), bars(after));
    Plot::new("weights_histogram")
        .legend(Legend::default())
        .include_y(if capped.is_empty() { 0.0 } else { cap * 1.15 })
        .height(220.0)
        .x_axis_label("weight value")
        .y_axis_label("count")
        .show(ui, |plot| {
            plot.bar_chart(
                BarChart::new("original", before_bars).color(Color32::from_rgb(90, 140, 220)),
            );
            plot.bar_chart(
                BarChart::new("compressed", after_bars)
                    .color(Color32::from_rgba_unmultiplied(230, 140, 60, 150)),
            );
            for &(x, n) in &capped {
                plot.text(
                    egui_plot::Text::new(
                        "",
                        egui_plot::PlotPoint::new(x, cap),
                        format!("{} (cut)", crate::format::thousands(n)),
                    )
                    .anchor(egui::Align2::CENTER_BOTTOM),
                );
            }
            if let Some(q) = &result.quantized {
                // Levels of the first quantization group, when there are few enough to draw.
                if let Some(p) = q.params.first() {
                    let (lo, hi) = edgefit_engine::compress::quant::code_range(q.bits, q.symmetric);
                    if hi - lo <= 32 {
                        for code in lo..=hi {
                            plot.vline(
                                VLine::new(
                                    "quantization levels (channel 0)",
                                    f64::from(p.dequantize(code)),
                                )
                                .color(Color32::from_gray(150)),
                            );
                        }
                    }
                }
            }
            if let Some(threshold) = view.prune_threshold {
                for x in [-threshold, threshold] {
                    plot.vline(
                        VLine::new("pruning threshold", f64::from(x))
                            .color(Color32::from_rgb(200, 60, 60)),
                    );
                }
            }
        });
    channel_ranges_ui(ui, view);
    ui.label(format!(
        "sparsity {:.1}%, SQNR {}, MSE {:.3e}",
        result.report.sparsity * 100.0,
        result
            .report
            .sqnr_db
            .map_or("inf".to_owned(), |s| format!("{s:.1} dB")),
        result.report.mse
    ));
}

/// Per output channel, the range (min to max) of the weight before and after: the spread that
/// per-channel scales follow, and channels that pruning emptied.
fn channel_ranges_ui(ui: &mut egui::Ui, view: &super::session::WeightsView) {
    let (before, after) = (&view.channel_ranges_before, &view.channel_ranges_after);
    if before.is_empty() {
        return;
    }
    let bars = |ranges: &[(f32, f32)], width: f64| -> Vec<Bar> {
        ranges
            .iter()
            .enumerate()
            .map(|(c, &(lo, hi))| {
                Bar::new(c as f64, f64::from(hi - lo))
                    .base_offset(f64::from(lo))
                    .width(width)
            })
            .collect()
    };
    Plot::new("channel_ranges")
        .legend(Legend::default())
        .height(150.0)
        .x_axis_label("output channel")
        .y_axis_label("min..max")
        .show(ui, |plot| {
            plot.bar_chart(
                BarChart::new("original range", bars(before, 0.8))
                    .color(Color32::from_rgb(90, 140, 220)),
            );
            plot.bar_chart(
                BarChart::new("compressed range", bars(after, 0.4))
                    .color(Color32::from_rgba_unmultiplied(230, 140, 60, 200)),
            );
        });
}
