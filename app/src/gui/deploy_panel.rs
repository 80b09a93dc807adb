//! The "Devices" panel: will the original and the plan fit each deployment target (RAM,
//! flash, a latency target), roughly how fast they run there and what the accelerator
//! refuses; for a chosen device, the edge-cloud split explorer. Latency and energy are
//! estimates, and say so.

use edgefit_engine::deploy::fit::DeviceFit;
use edgefit_engine::deploy::split_cost::{Transfer, best_cut};
use egui::{Color32, RichText};
use egui_plot::{Legend, Line, Plot, PlotPoints, Points, VLine};

use super::Command;
use super::deploy::{DeployChoices, DeployState};
use super::session::Session;
use crate::format::bytes;

const GREEN: Color32 = Color32::from_rgb(60, 170, 90);
const RED: Color32 = Color32::from_rgb(220, 70, 60);

/// The heading, the device table, the chosen device's accelerator view and the split.
pub fn devices_ui(ui: &mut egui::Ui, session: &Session, busy: bool, commands: &mut Vec<Command>) {
    let state = &session.deploy;
    ui.heading("Devices");
    let mut choices = state.choices.clone();
    ui.horizontal(|ui| {
        let label = ui.label("Target device");
        egui::ComboBox::from_id_salt("deploy_device")
            .width(220.0)
            .truncate()
            .selected_text(
                choices
                    .device
                    .as_deref()
                    .and_then(|id| state.catalog.get(id))
                    .map_or("(none)", |p| p.name.as_str()),
            )
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut choices.device, None, "(none)");
                for p in &state.catalog.profiles {
                    ui.selectable_value(&mut choices.device, Some(p.id.clone()), &p.name);
                }
            })
            .response
            .labelled_by(label.id);
    });
    ui.horizontal(|ui| {
        let mut on = choices.max_latency_ms.is_some();
        ui.checkbox(&mut on, "Latency target");
        let mut ms = choices.max_latency_ms.unwrap_or(10.0);
        ui.add_enabled(
            on,
            egui::DragValue::new(&mut ms)
                .range(0.01..=100_000.0)
                .speed(0.5)
                .suffix(" ms"),
        );
        choices.max_latency_ms = on.then_some(ms);
    });
    devices_table_ui(ui, state);
    ui.label(
        RichText::new(
            "Latency and energy are estimates from each device's roofline (hover a figure), \
             not measurements. RAM = peak activations (arena planner) + weights where they \
             load into RAM.",
        )
        .small()
        .weak(),
    );
    if let Some(row) = choices
        .device
        .as_deref()
        .and_then(|id| state.rows.iter().find(|r| r.original.device == id))
    {
        ui.separator();
        accelerator_ui(ui, row.plan.as_ref().unwrap_or(&row.original));
        ui.separator();
        split_ui(ui, state, &mut choices, busy, commands);
    }
    for problem in &state.catalog.problems {
        ui.colored_label(RED, problem);
    }
    if choices != state.choices {
        commands.push(Command::SetDeployChoices(choices));
    }
}

fn verdict_text(ok: Option<bool>, text: String) -> RichText {
    match ok {
        Some(true) => RichText::new(format!("OK {text}")).color(GREEN),
        Some(false) => RichText::new(format!("NO {text}")).color(RED),
        None => RichText::new(text),
    }
}

fn devices_table_ui(ui: &mut egui::Ui, state: &DeployState) {
    // Scrolls sideways instead of widening the column (the graph keeps its room).
    egui::ScrollArea::horizontal()
        .id_salt("devices_table_scroll")
        .show(ui, |ui| devices_grid_ui(ui, state));
}

fn devices_grid_ui(ui: &mut egui::Ui, state: &DeployState) {
    egui::Grid::new("devices_table")
        .striped(true)
        .num_columns(5)
        .show(ui, |ui| {
            for h in ["Device", "", "Latency (est.)", "RAM", "Flash / storage"] {
                ui.label(RichText::new(h).strong());
            }
            ui.end_row();
            for row in &state.rows {
                let forms: Vec<&DeviceFit> = std::iter::once(&row.original)
                    .chain(row.plan.as_ref())
                    .collect();
                for (i, f) in forms.into_iter().enumerate() {
                    if i == 0 {
                        ui.label(&f.device).on_hover_text(&f.name);
                    } else {
                        ui.label("");
                    }
                    ui.label(if i == 0 { "original" } else { "plan" });
                    ui.label(verdict_text(
                        f.meets_latency,
                        format!("{:.2} ms", f.latency_ms),
                    ))
                    .on_hover_text(format!("{}\nenergy {:.3} mJ", f.latency_basis, f.energy_mj));
                    ui.label(verdict_text(Some(f.fits_ram), bytes(f.ram_needed_bytes)))
                        .on_hover_text(format!(
                            "needs {} of {} (peak activations {}, lower bound {}, no reuse {})",
                            bytes(f.ram_needed_bytes),
                            bytes(f.ram_bytes),
                            bytes(f.peak_activation_bytes),
                            bytes(f.activation_lower_bound_bytes),
                            bytes(f.naive_activation_bytes)
                        ));
                    let budget = f
                        .weight_budget_bytes
                        .map_or_else(|| "no budget".to_owned(), bytes);
                    ui.label(verdict_text(f.fits_flash, bytes(f.weight_bytes)))
                        .on_hover_text(format!("weights {} of {budget}", bytes(f.weight_bytes)));
                    ui.end_row();
                }
            }
        });
}

fn accelerator_ui(ui: &mut egui::Ui, f: &DeviceFit) {
    let Some(acc) = &f.accelerator else {
        ui.label(format!(
            "{}: no accelerator in its profile; everything runs on the CPU ({}).",
            f.name, f.runtime
        ));
        return;
    };
    ui.label(format!(
        "{} ({}): {} of {} nodes, {} partitions, {} tensors copied between it and the CPU.",
        acc.name,
        acc.execution_provider,
        acc.accelerator_nodes,
        acc.accelerator_nodes + acc.cpu_nodes,
        acc.partitions,
        acc.crossing_tensors
    ));
    if acc.unsupported.is_empty() {
        ui.colored_label(GREEN, "It takes every node.");
    } else {
        ui.label("Left on the CPU:");
        for u in &acc.unsupported {
            ui.label(format!("  {} x{}: {}", u.op, u.nodes, u.reason));
        }
    }
    ui.label(
        RichText::new("Colour the graph by \"Device placement\" to see where each node runs.")
            .small()
            .weak(),
    );
}

fn split_ui(
    ui: &mut egui::Ui,
    state: &DeployState,
    choices: &mut DeployChoices,
    busy: bool,
    commands: &mut Vec<Command>,
) {
    ui.strong("Edge-cloud split");
    ui.horizontal(|ui| {
        let label = ui.label("Server");
        egui::ComboBox::from_id_salt("deploy_server")
            .width(220.0)
            .truncate()
            .selected_text(
                state
                    .catalog
                    .get(&choices.server)
                    .map_or(choices.server.as_str(), |p| p.name.as_str()),
            )
            .show_ui(ui, |ui| {
                for p in &state.catalog.profiles {
                    ui.selectable_value(&mut choices.server, p.id.clone(), &p.name);
                }
            })
            .response
            .labelled_by(label.id);
    });
    ui.add(
        egui::Slider::new(&mut choices.link.uplink_mbps, 0.1..=1000.0)
            .logarithmic(true)
            .text("uplink Mbps"),
    );
    ui.add(egui::Slider::new(&mut choices.link.rtt_ms, 0.0..=300.0).text("round trip ms"));
    ui.horizontal(|ui| {
        let label = ui.label("Send tensors as");
        egui::ComboBox::from_id_salt("deploy_transfer")
            .selected_text(choices.link.transfer.name())
            .show_ui(ui, |ui| {
                for t in Transfer::ALL {
                    ui.selectable_value(&mut choices.link.transfer, t, t.name());
                }
            })
            .response
            .labelled_by(label.id);
    });
    if let Some(note) = &state.split_note {
        ui.label(note);
        return;
    }
    let cuts = &state.cuts;
    let (Some(best), Some(device_only), Some(cloud_only)) =
        (best_cut(cuts), cuts.last(), cuts.first())
    else {
        return;
    };
    let line = |f: fn(&edgefit_engine::deploy::split_cost::CutCost) -> f64| -> PlotPoints {
        cuts.iter()
            .map(|c| [c.after_nodes as f64, f(c)])
            .collect::<Vec<_>>()
            .into()
    };
    Plot::new("split_chart")
        .height(170.0)
        .legend(Legend::default())
        .x_axis_label("device runs the first N nodes")
        .y_axis_label("ms (estimate)")
        .allow_scroll(false)
        .show(ui, |plot| {
            plot.line(Line::new("total", line(|c| c.total_ms)).width(2.0));
            plot.line(Line::new("device", line(|c| c.device_ms)));
            plot.line(Line::new("transfer", line(|c| c.transfer_ms)));
            plot.line(Line::new("server", line(|c| c.server_ms)));
            plot.vline(VLine::new("best", best.after_nodes as f64));
            plot.points(
                Points::new("best cut", vec![[best.after_nodes as f64, best.total_ms]]).radius(4.0),
            );
        });
    let place = match best.after_nodes {
        0 => "cloud-only (send the inputs)".to_owned(),
        n if n == device_only.after_nodes => "device-only".to_owned(),
        _ => format!(
            "after `{}` (node {} of {}), sending {} tensors, {}",
            best.last_device_node.as_deref().unwrap_or("?"),
            best.after_nodes,
            device_only.after_nodes,
            best.tensors.len(),
            bytes(best.sent_bytes)
        ),
    };
    ui.label(format!("Best: {place}: {:.2} ms total.", best.total_ms));
    ui.label(format!(
        "Device-only {:.2} ms, {:.3} mJ; cloud-only {:.2} ms, {:.3} mJ on the device.",
        device_only.total_ms,
        device_only.device_energy_mj,
        cloud_only.total_ms,
        cloud_only.device_energy_mj
    ));
    // The halves of a cut inside the model: the best one unless another is chosen.
    let last = device_only.after_nodes;
    if last < 2 {
        return;
    }
    let mut at = choices.cut.unwrap_or(best.after_nodes).clamp(1, last - 1);
    ui.horizontal(|ui| {
        let label = ui.label("Export the cut after node");
        ui.add(egui::DragValue::new(&mut at).range(1..=last - 1))
            .labelled_by(label.id);
        if ui.small_button("best").clicked() {
            at = best.after_nodes.clamp(1, last - 1);
        }
    });
    if Some(at) != choices.cut && (choices.cut.is_some() || at != best.after_nodes) {
        choices.cut = Some(at);
    }
    if let Some(cut) = cuts.get(at) {
        ui.label(format!(
            "after `{}`: sends {} ({}), {:.2} ms total",
            cut.last_device_node.as_deref().unwrap_or("?"),
            cut.tensors.join(", "),
            bytes(cut.sent_bytes),
            cut.total_ms
        ));
        let export = ui
            .add_enabled(!busy, egui::Button::new("Export the two halves..."))
            .on_hover_text(
                "Writes the device half and the server half as ONNX files and checks that \
                 running one then the other reproduces the model (tract and onnxruntime)",
            );
        if export.clicked() {
            commands.push(Command::PickSplitExport(cut.tensors.clone()));
        }
    }
}
