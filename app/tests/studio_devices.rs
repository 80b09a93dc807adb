//! The Devices panel: every device's verdicts for the original and the plan, a device chosen
//! in its menu colours the graph by where its accelerator runs each node, the Layers table
//! shows the memory alive at each layer, and the split explorer's best cut moves with the
//! uplink slider. Headless, by accessible label.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use edgefit::gui::{Command, StudioApp};
use edgefit_engine::compress::plan::Precision;
use edgefit_engine::deploy::partition::Placement;
use edgefit_engine::export::build::ExportFormat;
use edgefit_tests::sample_model as sample;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

mod common;

use common::{studio_sized, wait_idle};

fn deploy<'a>(harness: &'a Harness<'static, StudioApp>) -> &'a edgefit::gui::deploy::DeployState {
    &harness.state().session.as_ref().unwrap().deploy
}

/// Opens the combo box labelled `combo` and picks `option`, scrolled into view first.
fn pick(harness: &mut Harness<'static, StudioApp>, combo: &str, option: &str) {
    harness.get_by_label(combo).scroll_to_me();
    harness.run();
    harness.get_by_role_and_label(Role::ComboBox, combo).click();
    harness.run();
    harness.get_by_label(option).click();
    harness.run();
}

#[test]
fn choosing_a_device_shows_its_verdicts_placement_memory_and_split() {
    let mut harness = studio_sized(&sample("mnist-cnn"), false, [1400.0, 1600.0]);
    harness.run();
    {
        let state = deploy(&harness);
        // The built-in profiles (and any in the user's own folder).
        assert!(state.rows.len() >= 9);
        // The plan is the original: no plan rows yet.
        assert!(state.rows.iter().all(|r| r.plan.is_none()));
        assert!(state.rows.iter().all(|r| r.original.fits_ram));
    }
    harness.get_by_label("Devices");

    // An int8 plan in the QDQ format: every device gets a second, smaller row.
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    harness
        .state_mut()
        .send(Command::SetFormat(ExportFormat::QdqInt8));
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    wait_idle(&mut harness);
    harness.run();
    {
        let state = deploy(&harness);
        for row in &state.rows {
            let plan = row.plan.as_ref().expect("a plan row");
            assert_eq!(plan.form, "qdq-int8");
            assert!(plan.weight_bytes < row.original.weight_bytes);
            assert!(plan.peak_activation_bytes < row.original.peak_activation_bytes);
        }
    }

    // The iPhone: its Neural Engine takes every node but the Flatten.
    pick(
        &mut harness,
        "Target device",
        "Apple iPhone 15 (A16 Bionic)",
    );
    {
        let s = harness.state().session.as_ref().unwrap();
        assert_eq!(s.deploy.choices.device.as_deref(), Some("iphone-15"));
        let graph = &s.open.loaded.graph;
        for node in graph.main_nodes() {
            let mark = s.deploy.placement[node.index].expect("every main node placed");
            let expected = if node.op_type == "Flatten" {
                (Placement::Cpu, true)
            } else {
                (Placement::Accelerator, false)
            };
            assert_eq!(mark, expected, "{}", node.name);
        }
        // The Layers table's memory: every layer's live bytes, at least its own output.
        for layer in &s.compressor.layers {
            let live = s.deploy.live_bytes[layer.node].expect("live bytes");
            assert!(live > 0, "{}", layer.name);
        }
    }
    harness.get_by_label_contains("Flatten x1: not in the provider's op list");
    // The graph coloured by placement shows its legend.
    pick(
        &mut harness,
        "Colour by",
        "Device placement (accelerator / CPU)",
    );
    harness.get_by_label("CPU (accelerator refuses it)");

    // The split: a slow microcontroller, a server a fast link away sends everything to the
    // server; a crawling uplink keeps everything on the device.
    pick(
        &mut harness,
        "Target device",
        "STMicroelectronics NUCLEO-L4R5ZI (STM32L4R5ZI, Arm Cortex-M4F)",
    );
    let nodes = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .open
        .loaded
        .graph
        .main_nodes()
        .count();
    let best = |harness: &Harness<'static, StudioApp>| {
        let cuts = &deploy(harness).cuts;
        assert_eq!(
            cuts.len(),
            nodes + 1,
            "every prefix cut, both ends included"
        );
        edgefit_engine::deploy::split_cost::best_cut(cuts)
            .unwrap()
            .after_nodes
    };
    // The sliders send the panel's choices with a new link (what a drag does).
    let set_link = |harness: &mut Harness<'static, StudioApp>, mbps: f64, rtt_ms: f64| {
        harness.get_by_role_and_label(Role::Slider, "uplink Mbps");
        let mut choices = deploy(harness).choices.clone();
        choices.link.uplink_mbps = mbps;
        choices.link.rtt_ms = rtt_ms;
        harness.state_mut().send(Command::SetDeployChoices(choices));
        harness.run();
        harness.run();
    };
    set_link(&mut harness, 1000.0, 0.0);
    assert_eq!(best(&harness), 0, "cloud-only over a fast link");
    harness.get_by_label_contains("Best: cloud-only");
    set_link(&mut harness, 0.1, 300.0);
    assert_eq!(best(&harness), nodes, "device-only over a crawling link");
    harness.get_by_label_contains("Best: device-only");
}

#[test]
fn the_two_halves_of_a_cut_are_exported_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let mut harness = studio_sized(&sample("mnist-cnn"), false, [1400.0, 1600.0]);
    harness.state_mut().file_dialogs.builtin_only = true;
    let mut choices = deploy(&harness).choices.clone();
    choices.device = Some("cortex-m7".to_owned());
    // Inside the first residual block: two tensors cross.
    choices.cut = Some(13);
    harness.state_mut().send(Command::SetDeployChoices(choices));
    harness.run();
    let cut = deploy(&harness).cuts[13].clone();
    assert_eq!(cut.tensors.len(), 2, "{cut:?}");
    let button = harness.get_by_label("Export the two halves...");
    button.scroll_to_me();
    harness.run();
    harness.get_by_label("Export the two halves...").click();
    harness.run();
    for _ in 0..100 {
        if harness
            .query_by_label_contains("Export the device half")
            .is_some()
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        harness.step();
    }
    common::type_into(&mut harness, "Folder", &dir.path().display().to_string());
    harness.get_by_label("Go").click();
    harness.step();
    common::type_into(&mut harness, "File name", "mnist.head");
    harness.get_by_label("Save").click();
    harness.step();
    wait_idle(&mut harness);
    let head = dir.path().join("mnist.head.onnx");
    let tail = dir.path().join("mnist.tail.onnx");
    assert!(
        head.is_file() && tail.is_file(),
        "{:?}",
        harness.state().error
    );
    let status = harness.state().status.clone().unwrap_or_default();
    assert!(status.contains("tract: reproduces the model"), "{status}");
    for name in &cut.tensors {
        assert!(status.contains(name.as_str()), "{status}");
    }
    // The halves load, and together they hold every node of the model.
    let nodes = |p: &std::path::Path| {
        edgefit_engine::load_model(
            p,
            &edgefit_engine::NoProgress,
            &edgefit_engine::CancelToken::new(),
        )
        .unwrap()
        .graph
        .main_nodes()
        .count()
    };
    assert_eq!(nodes(&head) + nodes(&tail), nodes(&sample("mnist-cnn")));
}

#[test]
fn the_summary_and_every_evaluated_point_say_whether_it_fits_the_device() {
    let mut harness = studio_sized(&sample("mnist-cnn"), false, [1400.0, 1600.0]);
    harness.state_mut().send(Command::Evaluate);
    wait_idle(&mut harness);
    let mut recipe = harness.state().session.as_ref().unwrap().recipe.clone();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    harness
        .state_mut()
        .send(Command::SetFormat(ExportFormat::QdqInt8));
    harness.state_mut().send(Command::SetRecipe {
        recipe,
        record: true,
    });
    harness.state_mut().send(Command::Evaluate);
    wait_idle(&mut harness);
    let points = harness.state().session.as_ref().unwrap().points.len();
    assert!(points >= 1);
    // No device: the Summary asks for one, the points list has no device column.
    harness.get_by_label_contains("Choose a target device under Devices");
    assert!(deploy(&harness).point_fits.is_empty());

    // A profile whose RAM holds the int8 plan's arena but not the float original's.
    let mut choices = deploy(&harness).choices.clone();
    choices.device = Some("cortex-m7".to_owned());
    choices.max_latency_ms = Some(5.0);
    harness.state_mut().send(Command::SetDeployChoices(choices));
    harness.run();
    harness.run();
    let state = deploy(&harness);
    assert_eq!(state.point_fits.len(), points);
    let fits: Vec<bool> = state
        .point_fits
        .iter()
        .map(|f| f.as_ref().expect("a verdict per point").fits())
        .collect();
    // The Cortex-M7 runs the float plan in ~10 ms and the int8 QDQ one in ~3 ms
    // (estimates): against a 5 ms target only the int8 point fits.
    let int8 = harness
        .state()
        .session
        .as_ref()
        .unwrap()
        .points
        .iter()
        .map(|p| p.recipe.defaults.precision == Precision::Int { bits: 8 })
        .collect::<Vec<_>>();
    assert_eq!(fits, int8, "{:?}", state.point_fits);
    harness.get_by_label("on cortex-m7");
    harness.get_by_label_contains("On STMicroelectronics NUCLEO-H7A3ZI-Q");
}
