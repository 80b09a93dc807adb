//! The Layers table: one row per compressible layer with its per-layer overrides, sortable
//! by any measured column, with a fixed header and only the visible rows built.

use std::cmp::Ordering;

use edgefit_engine::compress::plan::Precision;
use egui::{Color32, RichText};
use egui_extras::Column;

use super::super::Command;
use super::super::session::Session;
use super::{precision_label, send_recipe};
use crate::format::{bytes, si, thousands};

/// A column the Layers table can be sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LayerColumn {
    Name,
    Op,
    Params,
    Macs,
    Prune,
    Precision,
    Sparsity,
    Sqnr,
    Size,
    /// Activation bytes alive while the layer runs, under the plan.
    Memory,
}

impl LayerColumn {
    /// The header's text (also its accessible name).
    fn title(self) -> &'static str {
        match self {
            Self::Name => "Layer",
            Self::Op => "Op",
            Self::Params => "Params",
            Self::Macs => "MACs",
            Self::Prune => "Prune",
            Self::Precision => "Precision",
            Self::Sparsity => "Sparsity",
            Self::Sqnr => "SQNR (dB)",
            Self::Size => "Size",
            Self::Memory => "Live memory",
        }
    }

    /// What an ascending sort puts first, for the header's tooltip.
    fn ascending_first(self) -> &'static str {
        match self {
            Self::Name | Self::Op => "A first",
            Self::Params | Self::Macs | Self::Prune | Self::Sparsity => "smallest first",
            Self::Precision => "fewest bits first",
            Self::Sqnr => "lowest (most damaged) first",
            Self::Size => "smallest after the plan first",
            Self::Memory => "least activation memory first",
        }
    }
}

/// One row's value in the sorted column.
enum SortKey<'a> {
    Text(&'a str),
    Number(f64),
    /// Not known (MACs of an op whose shapes are unknown): last in either direction.
    Unknown,
}

/// The order of the compressible layers in the table: model order, or sorted by `sort`
/// (column, descending). Stable: equal values keep model order in both directions.
fn layer_order(
    session: &Session,
    c: &edgefit_engine::compress::compressor::Compression,
    sort: Option<(LayerColumn, bool)>,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..c.layers.len()).collect();
    let Some((column, descending)) = sort else {
        return order;
    };
    let keys: Vec<SortKey> = c
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let r = &l.report;
            match column {
                LayerColumn::Name => SortKey::Text(&r.name),
                LayerColumn::Op => SortKey::Text(&r.op),
                LayerColumn::Params => SortKey::Number(session.compressor.original(i).len() as f64),
                LayerColumn::Macs => r
                    .macs_before
                    .map_or(SortKey::Unknown, |m| SortKey::Number(m as f64)),
                LayerColumn::Prune => SortKey::Number(f64::from(r.settings.prune_ratio)),
                // An excluded layer keeps its float32 weight.
                LayerColumn::Precision => SortKey::Number(match r.settings.precision {
                    _ if r.settings.exclude => 32.0,
                    Precision::Float32 => 32.0,
                    Precision::Float16 => 16.0,
                    Precision::Int { bits } => f64::from(bits),
                }),
                LayerColumn::Sparsity => SortKey::Number(r.sparsity),
                // No SQNR: the weight is unchanged ("inf"), the largest value.
                LayerColumn::Sqnr => SortKey::Number(r.sqnr_db.unwrap_or(f64::INFINITY)),
                LayerColumn::Size => SortKey::Number(r.bytes_after as f64),
                LayerColumn::Memory => session
                    .compressor
                    .layers
                    .get(i)
                    .and_then(|l| session.deploy.live_bytes.get(l.node).copied().flatten())
                    .map_or(SortKey::Unknown, |b| SortKey::Number(b as f64)),
            }
        })
        .collect();
    order.sort_by(|&a, &b| {
        let (Some(ka), Some(kb)) = (keys.get(a), keys.get(b)) else {
            return Ordering::Equal;
        };
        let ordering = match (ka, kb) {
            (SortKey::Unknown, SortKey::Unknown) => return Ordering::Equal,
            (SortKey::Unknown, _) => return Ordering::Greater,
            (_, SortKey::Unknown) => return Ordering::Less,
            (SortKey::Text(x), SortKey::Text(y)) => x.cmp(y),
            (SortKey::Number(x), SortKey::Number(y)) => x.total_cmp(y),
            // One column gives one kind of key.
            (SortKey::Text(_), SortKey::Number(_)) => Ordering::Less,
            (SortKey::Number(_), SortKey::Text(_)) => Ordering::Greater,
        };
        if descending {
            ordering.reverse()
        } else {
            ordering
        }
    });
    order
}

/// View state of the Layers table.
#[derive(Default)]
pub struct LayersView {
    /// The selection the table last scrolled for.
    shown_selection: Option<usize>,
    /// Row positions built in the last frame.
    visible: std::ops::Range<usize>,
    /// The column the rows are sorted by and whether descending; `None`: model order.
    sort: Option<(LayerColumn, bool)>,
    /// Layer indices in row order (the skipped layers follow them).
    order: Vec<usize>,
    /// The sort `order` was made for.
    ordered_by: Option<(LayerColumn, bool)>,
    /// The sort changed: show the first rows.
    scroll_to_top: bool,
}

/// A sortable column's header: click sorts ascending, again descending, a third time back to
/// model order. The sorted column is highlighted with a painted triangle (no font glyph).
fn sort_header_ui(ui: &mut egui::Ui, view: &mut LayersView, column: LayerColumn) {
    let sorted = view.sort.filter(|(c, _)| *c == column).map(|(_, d)| d);
    let hint = match sorted {
        None => format!("Sort, {}", column.ascending_first()),
        Some(false) => "Sorted; click to reverse".to_owned(),
        Some(true) => "Sorted, reversed; click for model order".to_owned(),
    };
    let response = ui
        .add(egui::Button::selectable(
            sorted.is_some(),
            RichText::new(column.title()).strong(),
        ))
        .on_hover_text(hint);
    if let Some(descending) = sorted {
        let side_pt = 8.0;
        let (rect, _) = ui.allocate_exact_size(egui::vec2(side_pt, side_pt), egui::Sense::hover());
        let (tip, base) = if descending {
            (rect.center_bottom(), rect.top())
        } else {
            (rect.center_top(), rect.bottom())
        };
        ui.painter().add(egui::Shape::convex_polygon(
            vec![
                egui::pos2(rect.left(), base),
                egui::pos2(rect.right(), base),
                tip,
            ],
            ui.visuals().strong_text_color(),
            egui::Stroke::NONE,
        ));
    }
    if response.clicked() {
        view.sort = match sorted {
            None => Some((column, false)),
            Some(false) => Some((column, true)),
            Some(true) => None,
        };
        view.scroll_to_top = true;
        ui.ctx().request_repaint();
    }
}

/// One row per compressible layer with its live estimates; click to select, per-row exclude.
/// A fixed header whose columns sort the rows and resize; only the visible rows are built
/// (a model can have thousands of layers). The layers the plan leaves as they are follow,
/// unsorted.
pub fn layers_ui(
    ui: &mut egui::Ui,
    session: &Session,
    view: &mut LayersView,
    commands: &mut Vec<Command>,
) {
    let Some(c) = &session.compression else {
        return;
    };
    // Rows keep their order while a pointer is held (dragging a prune ratio of a table sorted
    // by prune ratio must not move the row away under the pointer).
    let held = ui.input(|i| i.pointer.any_down());
    if !held || view.order.len() != c.layers.len() || view.ordered_by != view.sort {
        view.order = layer_order(session, c, view.sort);
        view.ordered_by = view.sort;
    }
    let order = std::mem::take(&mut view.order);
    let row_height = ui.spacing().interact_size.y;
    let total = order.len() + c.skipped.len();
    // A layer selected elsewhere (the graph, a search) is scrolled into view. The scroll
    // lands at the end of this frame: its rows come with the next one.
    let mut scroll_to = None;
    if session.selected != view.shown_selection {
        scroll_to = session
            .selected
            .and_then(|i| order.iter().position(|&l| l == i))
            .filter(|row| !view.visible.contains(row));
        view.shown_selection = session.selected;
    }
    let scroll_to_top = std::mem::take(&mut view.scroll_to_top);
    if scroll_to.is_some() || scroll_to_top {
        ui.ctx().request_repaint();
    }
    // The table scrolls sideways in a narrow panel (its columns keep their widths) rather
    // than widening the panel under its neighbours.
    let mut visible: Option<std::ops::Range<usize>> = None;
    egui::ScrollArea::horizontal()
        .id_salt("layers_hscroll")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            let mut table = egui_extras::TableBuilder::new(ui)
                .id_salt("layers_table")
                .striped(true)
                .resizable(true)
                .auto_shrink([false, false])
                // A jump to a selected row lands at once (as the old table did), not over frames.
                .animate_scrolling(false)
                .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
                .column(Column::initial(160.0).at_least(60.0).clip(true))
                .column(Column::initial(70.0).at_least(30.0).clip(true))
                .column(Column::initial(65.0).at_least(40.0).clip(true))
                .column(Column::initial(65.0).at_least(40.0).clip(true))
                .column(Column::initial(60.0).at_least(50.0).clip(true))
                .column(Column::initial(90.0).at_least(70.0).clip(true))
                .column(Column::initial(65.0).at_least(40.0).clip(true))
                .column(Column::initial(80.0).at_least(40.0).clip(true))
                .column(Column::initial(130.0).at_least(40.0).clip(true))
                .column(Column::initial(80.0).at_least(40.0).clip(true))
                .column(Column::remainder().at_least(50.0));
            if scroll_to_top {
                table = table.vertical_scroll_offset(0.0);
            }
            if let Some(row) = scroll_to {
                table = table.scroll_to_row(row, Some(egui::Align::Center));
            }
            let columns = [
                LayerColumn::Name,
                LayerColumn::Op,
                LayerColumn::Params,
                LayerColumn::Macs,
                LayerColumn::Prune,
                LayerColumn::Precision,
                LayerColumn::Sparsity,
                LayerColumn::Sqnr,
                LayerColumn::Size,
                LayerColumn::Memory,
            ];
            table
                .header(row_height, |mut header| {
                    for column in columns {
                        header.col(|ui| sort_header_ui(ui, view, column));
                    }
                    header.col(|ui| {
                        ui.strong("Exclude");
                    });
                })
                .body(|body| {
                    body.rows(row_height, total, |mut row| {
                        let position = row.index();
                        visible = Some(match visible.take() {
                            Some(v) => v.start.min(position)..v.end.max(position + 1),
                            None => position..position + 1,
                        });
                        match order.get(position) {
                            Some(&i) => layer_row_ui(&mut row, session, i, commands),
                            None => {
                                if let Some(s) = c.skipped.get(position - order.len()) {
                                    row.col(|ui| {
                                        ui.label(RichText::new(&s.name).weak());
                                    });
                                    row.col(|ui| {
                                        ui.label(RichText::new(&s.op).weak());
                                    });
                                    for _ in 0..2 {
                                        row.col(|_| {});
                                    }
                                    row.col(|ui| {
                                        ui.label(RichText::new("left as is").weak())
                                            .on_hover_text(&s.reason);
                                    });
                                }
                            }
                        }
                    });
                });
        });
    view.visible = visible.unwrap_or_default();
    view.order = order;
}

/// The cells of compressible layer `i`'s row.
fn layer_row_ui(
    row: &mut egui_extras::TableRow<'_, '_>,
    session: &Session,
    i: usize,
    commands: &mut Vec<Command>,
) {
    let (Some(layer), Some(result)) = (
        session.compressor.layers.get(i),
        session.compression.as_ref().and_then(|c| c.layers.get(i)),
    ) else {
        return;
    };
    let r = &result.report;
    let selected = session.selected == Some(i);
    row.set_selected(selected);
    let mut name = None;
    row.col(|ui| {
        let response = ui.selectable_label(selected, &layer.name);
        if response.clicked() {
            commands.push(Command::SelectLayer(i));
        }
        name = Some(response.id);
    });
    let Some(name) = name else {
        return;
    };
    row.col(|ui| {
        ui.label(&layer.op);
    });
    row.col(|ui| {
        ui.label(thousands(session.compressor.original(i).len() as u64));
    });
    row.col(|ui| {
        ui.label(r.macs_before.map_or("?".to_owned(), si));
    });
    let overridden = session
        .recipe
        .layers
        .get(&layer.name)
        .copied()
        .unwrap_or_default();
    row.col(|ui| {
        // Per-layer prune ratio: editing it makes an override of this layer only. Its id
        // follows the layer, not the row, so a drag survives a re-sort.
        ui.push_id(("layer_prune", i), |ui| {
            let mut ratio = r.settings.prune_ratio;
            let drag = ui
                .add(
                    egui::DragValue::new(&mut ratio)
                        .range(0.0..=0.95)
                        .speed(0.01)
                        .max_decimals(2),
                )
                .labelled_by(name);
            send_recipe(ui, commands, &drag, || {
                let mut recipe = session.recipe.clone();
                recipe
                    .layers
                    .entry(layer.name.clone())
                    .or_default()
                    .prune_ratio = Some(ratio);
                recipe
            });
        });
    });
    row.col(|ui| {
        let mut precision = r.settings.precision;
        let label = if r.settings.exclude {
            "excluded".to_owned()
        } else {
            precision_label(precision)
        };
        let label = if overridden.precision.is_some() {
            format!("{label} *")
        } else {
            label
        };
        let combo = egui::ComboBox::from_id_salt(("layer_precision", i))
            .selected_text(label)
            .show_ui(ui, |ui| {
                for p in [
                    Precision::Float32,
                    Precision::Float16,
                    Precision::Int { bits: 8 },
                    Precision::Int { bits: 6 },
                    Precision::Int { bits: 4 },
                    Precision::Int { bits: 2 },
                ] {
                    ui.selectable_value(&mut precision, p, precision_label(p));
                }
            });
        combo.response.labelled_by(name);
        if precision != r.settings.precision {
            let mut recipe = session.recipe.clone();
            recipe
                .layers
                .entry(layer.name.clone())
                .or_default()
                .precision = Some(precision);
            commands.push(Command::SetRecipe {
                recipe,
                record: true,
            });
        }
    });
    row.col(|ui| {
        ui.label(format!("{:.1}%", r.sparsity * 100.0));
    });
    row.col(|ui| {
        let sqnr = r.sqnr_db.map_or("inf".to_owned(), |s| format!("{s:.1}"));
        let colour = match r.sqnr_db {
            Some(s) if s < 10.0 => Color32::from_rgb(220, 80, 60),
            Some(s) if s < 20.0 => Color32::from_rgb(220, 170, 40),
            _ => ui.visuals().text_color(),
        };
        ui.label(RichText::new(sqnr).color(colour));
    });
    row.col(|ui| {
        ui.label(format!(
            "{} -> {}",
            bytes(r.bytes_before),
            bytes(r.bytes_after)
        ));
    });
    row.col(|ui| {
        let live = session.deploy.live_bytes.get(layer.node).copied().flatten();
        ui.label(live.map_or("?".to_owned(), bytes)).on_hover_text(
            "Activation memory alive while this layer runs (its inputs, its output and every \
             tensor kept for later layers), under the plan",
        );
    });
    row.col(|ui| {
        let mut exclude = r.settings.exclude;
        if ui
            .checkbox(&mut exclude, "")
            .labelled_by(name)
            .on_hover_text("Leave this layer as it is")
            .changed()
        {
            let mut recipe = session.recipe.clone();
            recipe.layers.entry(layer.name.clone()).or_default().exclude = Some(exclude);
            commands.push(Command::SetRecipe {
                recipe,
                record: true,
            });
        }
    });
}
