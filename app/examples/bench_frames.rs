//! Frame-time benchmark of the studio (Graph panel on a synthetic ~10,000-node model, and the
//! prune-ratio slider dragged on the MNIST sample), headless.
//!
//! ```sh
//! cargo run -p edgefit --example bench_frames            # dev profile (deps at opt-level 2)
//! cargo run --release -p edgefit --example bench_frames  # release
//! cargo run -p edgefit --example bench_frames -- --write-model big.onnx  # the model only
//! ```
//!
//! A frame is measured as the real `StudioApp` frame driven by egui_kittest (input → UI →
//! shapes, plus kittest's AccessKit update) followed by `Context::tessellate` of its shapes.
//! GPU upload and rasterisation are not included.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use edgefit::gui::{Command, Persisted, StudioApp};
use edgefit_engine::analyse::layout::{LayoutOptions, layout_graph};
use edgefit_engine::model::graph::GraphView;
use edgefit_engine::{CancelToken, NoProgress};
use egui::{Event, Modifiers, MouseWheelUnit, PointerButton, Pos2, TouchPhase, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

const BUDGET_MS: f64 = 1000.0 / 60.0;

fn studio(model: &Path) -> Harness<'static, StudioApp> {
    let model = model.to_path_buf();
    let mut harness = Harness::builder()
        .with_size([1400.0, 860.0])
        .build_eframe(move |_cc| {
            let mut app = StudioApp::new(Persisted::default(), Some(model));
            app.auto_evaluate = false;
            app
        });
    let deadline = Instant::now() + Duration::from_secs(600);
    harness.step();
    while harness.state().is_busy()
        || (harness.state().session.is_some() && harness.state().graph.prepared().is_none())
    {
        assert!(Instant::now() < deadline, "the model did not open");
        std::thread::sleep(Duration::from_millis(10));
        harness.step();
    }
    assert!(
        harness.state().error.is_none(),
        "{:?}",
        harness.state().error
    );
    for _ in 0..3 {
        harness.step();
    }
    harness
}

/// One frame: queued input, the app's UI, then tessellation. Returns (ms, shapes, primitives).
fn frame(harness: &mut Harness<'static, StudioApp>) -> (f64, usize, usize) {
    let start = Instant::now();
    harness.step();
    let shapes = harness.output().shapes.clone();
    let count = shapes.len();
    let ppp = harness.ctx.pixels_per_point();
    let primitives = harness.ctx.tessellate(shapes, ppp);
    (start.elapsed().as_secs_f64() * 1e3, count, primitives.len())
}

struct Run {
    times: Vec<f64>,
    shapes: Vec<usize>,
    graph_nodes: Vec<usize>,
    graph_edges: Vec<usize>,
}

impl Run {
    fn new() -> Self {
        Run {
            times: Vec::new(),
            shapes: Vec::new(),
            graph_nodes: Vec::new(),
            graph_edges: Vec::new(),
        }
    }

    fn record(&mut self, harness: &mut Harness<'static, StudioApp>) {
        let (ms, shapes, _) = frame(harness);
        self.times.push(ms);
        self.shapes.push(shapes);
        let stats = harness.state().graph.stats;
        self.graph_nodes.push(stats.nodes);
        self.graph_edges.push(stats.edges);
    }

    fn print(&self, name: &str) {
        let mut t = self.times.clone();
        t.sort_by(f64::total_cmp);
        let pick = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
        let median = pick(0.5);
        let p95 = pick(0.95);
        let max = t.last().copied().unwrap_or(0.0);
        let range = |v: &[usize]| {
            let (lo, hi) = (v.iter().min().unwrap_or(&0), v.iter().max().unwrap_or(&0));
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}-{hi}")
            }
        };
        println!(
            "{name:<34} {:>4} frames  median {median:6.2} ms  p95 {p95:6.2} ms  max {max:6.2} ms  \
             shapes {:>9}  graph nodes {:>9} edges {:>9}  60 FPS: {}",
            t.len(),
            range(&self.shapes),
            range(&self.graph_nodes),
            range(&self.graph_edges),
            if p95 <= BUDGET_MS {
                "yes (p95)"
            } else if median <= BUDGET_MS {
                "median only"
            } else {
                "NO"
            },
        );
    }
}

fn canvas_centre(harness: &Harness<'static, StudioApp>) -> Pos2 {
    harness.state().graph.canvas_rect().unwrap().center()
}

fn wheel(delta: f32) -> Event {
    Event::MouseWheel {
        unit: MouseWheelUnit::Point,
        delta: Vec2::new(0.0, delta),
        phase: TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: Modifiers::NONE,
    }
}

fn button(pos: Pos2, pressed: bool) -> Event {
    Event::PointerButton {
        pos,
        button: PointerButton::Primary,
        pressed,
        modifiers: Modifiers::NONE,
    }
}

fn synthetic_model(nodes: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("edgefit-bench-frames-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("branchy_cnn.onnx");
    let model = edgefit_engine::model::synthetic::branchy_cnn(nodes);
    edgefit_engine::write_model_atomic(&model, &path, Path::new("")).unwrap();
    path
}

fn main() {
    // `--write-model PATH [NODES]`: only write the synthetic model (to open it in the studio).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--write-model") {
        let path = PathBuf::from(args.get(i + 1).expect("--write-model PATH"));
        let nodes = args
            .get(i + 2)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000);
        let model = edgefit_engine::model::synthetic::branchy_cnn(nodes);
        edgefit_engine::write_model_atomic(&model, &path, Path::new("")).unwrap();
        println!("wrote {} ({nodes} nodes)", path.display());
        return;
    }
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    println!(
        "profile: {profile}; frame = app frame (kittest, headless) + tessellation; GPU not included"
    );

    // Layout alone.
    let model = edgefit_engine::model::synthetic::branchy_cnn(10_000);
    let view = GraphView::new(&model);
    let mut layout_ms = Vec::new();
    let mut summary = String::new();
    for _ in 0..5 {
        let start = Instant::now();
        let layout = layout_graph(
            &view,
            &LayoutOptions::default(),
            &NoProgress,
            &CancelToken::new(),
        )
        .unwrap();
        layout_ms.push(start.elapsed().as_secs_f64() * 1e3);
        summary = format!(
            "{} boxes, {} edges, {} layers, {} crossings, {:.0} x {:.0} units",
            layout.boxes.len(),
            layout.edges.len(),
            layout.layers.len(),
            layout.crossings,
            layout.width,
            layout.height
        );
    }
    layout_ms.sort_by(f64::total_cmp);
    println!(
        "layout of the synthetic model ({summary}): median {:.1} ms of 5 (min {:.1}, max {:.1})",
        layout_ms[2], layout_ms[0], layout_ms[4]
    );

    // The studio on the synthetic model.
    let path = synthetic_model(10_000);
    let start = Instant::now();
    let mut harness = studio(&path);
    let prepared = harness.state().graph.prepared().unwrap();
    println!(
        "studio: model open + graph ready in {:.2} s (layout + index on the background thread {:.1} ms)",
        start.elapsed().as_secs_f64(),
        prepared.elapsed.as_secs_f64() * 1e3
    );
    let layers = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .compressor
        .layers
        .len();

    // (a) Fit: the whole graph, zoomed out.
    harness.state_mut().graph.fit();
    let mut run = Run::new();
    for i in 0..60 {
        // A moving pointer keeps the frames real (hover tests, tooltips).
        harness.hover_at(canvas_centre(&harness) + Vec2::new(i as f32, 0.0));
        run.record(&mut harness);
    }
    run.print(&format!(
        "(a) fit to screen ({:.2}%)",
        harness.state().graph.zoom() * 100.0
    ));

    // (b) 100% on a node in the middle of the graph.
    harness.state_mut().send(Command::SelectLayer(layers / 2));
    harness.step();
    harness.step();
    let mut run = Run::new();
    for i in 0..60 {
        harness.hover_at(canvas_centre(&harness) + Vec2::new(i as f32, 0.0));
        run.record(&mut harness);
    }
    run.print(&format!(
        "(b) 100% zoom ({:.0}%)",
        harness.state().graph.zoom() * 100.0
    ));

    // (c) Panning: a drag of 100 frames, 40 points a frame.
    let mut p = canvas_centre(&harness);
    harness.hover_at(p);
    harness.step();
    harness.event(button(p, true));
    harness.step();
    let mut run = Run::new();
    for i in 0..100 {
        let step = if (i / 25) % 2 == 0 {
            Vec2::new(3.0, -40.0)
        } else {
            Vec2::new(-3.0, -40.0)
        };
        p += step;
        if p.y < 150.0 {
            // Re-grip lower down, as a person would.
            harness.event(button(p, false));
            harness.step();
            p.y = canvas_centre(&harness).y + 200.0;
            harness.event(Event::PointerMoved(p));
            harness.event(button(p, true));
            harness.step();
        }
        harness.event(Event::PointerMoved(p));
        run.record(&mut harness);
    }
    harness.event(button(p, false));
    harness.step();
    run.print("(c) panning (drag, 100 frames)");

    // (d) Zooming out to the whole graph and back in with the wheel, about the pointer.
    let centre = canvas_centre(&harness);
    harness.hover_at(centre);
    harness.step();
    let mut run = Run::new();
    let mut zooms = Vec::new();
    for i in 0..120 {
        let delta = if i < 60 { -60.0 } else { 60.0 };
        harness.event(wheel(delta));
        run.record(&mut harness);
        zooms.push(harness.state().graph.zoom());
    }
    let (lo, hi) = zooms
        .iter()
        .fold((f32::MAX, 0f32), |(lo, hi), &z| (lo.min(z), hi.max(z)));
    run.print(&format!(
        "(d) wheel zoom {:.2}%..{:.0}%",
        lo * 100.0,
        hi * 100.0
    ));
    drop(harness);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }

    // The prune-ratio slider dragged on the MNIST sample (estimates recomputed every frame),
    // then on a 25M-parameter model (every layer's estimate is stale at each step).
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample-models/mnist-cnn/model.onnx");
    drag_prune_slider(&sample, "(e) prune slider drag, mnist-cnn");
    let dir = std::env::temp_dir().join(format!("edgefit-bench-frames-mlp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let big = dir.join("mlp-25m.onnx");
    let model = edgefit_engine::model::synthetic::mlp_chain(274, 333);
    std::fs::write(
        &big,
        edgefit_engine::model::proto::Message::write_to_bytes(&model).expect("encode"),
    )
    .expect("write the 25M model");
    drop(model);
    drag_prune_slider(&big, "(f) prune slider drag, 25M-param MLP");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Drags the global prune-ratio slider 0 -> max -> 0 over 101 frames on `model`.
fn drag_prune_slider(model: &Path, name: &str) {
    let mut harness = studio(model);
    let rect = harness
        .get_by_role_and_label(egui::accesskit::Role::Slider, "Prune ratio")
        .rect();
    let y = rect.center().y;
    let (x0, x1) = (rect.left() + 2.0, rect.right() - 2.0);
    harness.hover_at(Pos2::new(x0, y));
    harness.step();
    harness.event(button(Pos2::new(x0, y), true));
    harness.step();
    let mut run = Run::new();
    let mut ratio = 0f32;
    let mut estimates_seen = 0usize;
    let mut last_estimate: Option<f32> = None;
    for i in 0..=100 {
        let t = i as f32 / 100.0;
        let t = if t <= 0.5 { 2.0 * t } else { 2.0 - 2.0 * t };
        harness.event(Event::PointerMoved(Pos2::new(x0 + (x1 - x0) * t, y)));
        run.record(&mut harness);
        let now = harness
            .state()
            .session
            .as_ref()
            .map_or(0.0, |s| s.recipe.defaults.prune_ratio);
        ratio = ratio.max(now);
        let shown = harness
            .state()
            .session
            .as_ref()
            .and_then(|s| s.compression.as_ref())
            .map(|c| c.recipe.defaults.prune_ratio);
        if shown != last_estimate {
            estimates_seen += 1;
            last_estimate = shown;
        }
    }
    harness.event(button(Pos2::new(x0, y), false));
    let released = Instant::now();
    harness.step();
    while harness
        .state()
        .session
        .as_ref()
        .is_some_and(|s| s.estimating)
    {
        std::thread::sleep(Duration::from_millis(1));
        harness.step();
    }
    let settled_ms = released.elapsed().as_secs_f64() * 1e3;
    run.print(name);
    println!(
        "    (largest prune ratio reached: {ratio:.2}; estimates shown changed {estimates_seen} times in 101 frames; final estimates {settled_ms:.0} ms after release)"
    );
}
