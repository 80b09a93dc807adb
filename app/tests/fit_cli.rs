//! `edgefit fit` and `edgefit devices` driven as a script would: every built-in device on
//! both samples, the plan against the original, the activation memory against an independent
//! computation (Python's onnx shape inference), a user's own profile, `--require-fit`, and
//! bad profiles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use edgefit_tests::{python_with_onnx, root, run_python};
use serde_json::Value;

fn edgefit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(args)
        .current_dir(root())
        // The user's own profile folder must not change what the tests see.
        .env("EDGEFIT_DEVICES_DIR", root().join("no-such-folder"))
        .output()
        .unwrap()
}

fn json(o: &Output) -> Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

const MNIST: &str = "sample-models/mnist-cnn/model.onnx";
const MLP: &str = "sample-models/digits-mlp/model.onnx";
const BUILT_IN: [&str; 9] = [
    "android-midrange",
    "cortex-m4f",
    "cortex-m7",
    "iphone-15",
    "jetson-orin-nano",
    "raspberry-pi-4",
    "raspberry-pi-5",
    "x86-laptop",
    "x86-server-no-vnni",
];

#[test]
fn every_built_in_device_gets_verdicts_and_estimates() {
    let v = json(&edgefit(&["fit", MNIST, "--device", "all", "--json"]));
    assert_eq!(v["schema"], "edgefit.fit/1");
    assert_eq!(v["format"], "original");
    let devices = v["devices"].as_array().unwrap();
    let ids: Vec<&str> = devices
        .iter()
        .map(|d| d["device"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BUILT_IN);
    for d in devices {
        let peak = d["peak_activation_bytes"].as_u64().unwrap();
        let lower = d["activation_lower_bound_bytes"].as_u64().unwrap();
        let naive = d["naive_activation_bytes"].as_u64().unwrap();
        assert!(lower <= peak && peak <= naive, "{d}");
        // The sample's weights: 80.2 KiB of float32 (what `inspect` reports).
        assert_eq!(d["weight_bytes"].as_u64().unwrap(), 82_088, "{d}");
        let latency = d["latency_ms"].as_f64().unwrap();
        assert!(latency > 0.0 && latency.is_finite(), "{d}");
        assert!(d["latency_basis"].as_str().unwrap().starts_with("estimate"));
        assert!(d["fits_ram"].as_bool().unwrap(), "{d}");
    }
    // A microcontroller runs at 120 MHz: slower than a Raspberry Pi, by far.
    let latency = |id: &str| {
        devices.iter().find(|d| d["device"] == id).unwrap()["latency_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(latency("cortex-m4f") > 20.0 * latency("raspberry-pi-4"));
    assert!(latency("cortex-m4f") > latency("cortex-m7"));
}

#[test]
fn activation_memory_matches_an_independent_computation() {
    let Some(python) = python_with_onnx() else {
        return;
    };
    for model in [MNIST, MLP] {
        let reference: Value = serde_json::from_str(&run_python(
            &python,
            "activation_memory.py",
            &[&root().join(model)],
        ))
        .unwrap();
        let v = json(&edgefit(&["fit", model, "--device", "cortex-m7", "--json"]));
        let d = &v["devices"][0];
        assert_eq!(
            d["activation_lower_bound_bytes"], reference["lower_bound_bytes"],
            "{model}"
        );
        assert_eq!(
            d["naive_activation_bytes"], reference["naive_bytes"],
            "{model}"
        );
        // The greedy arena reaches the lower bound on these chains with skips.
        assert_eq!(
            d["peak_activation_bytes"], reference["lower_bound_bytes"],
            "{model}"
        );
    }
}

#[test]
fn an_int8_plan_is_smaller_and_faster_than_the_original_on_a_microcontroller() {
    for model in [MNIST, MLP] {
        let v = json(&edgefit(&[
            "fit",
            model,
            "--device",
            "cortex-m7",
            "--format",
            "qdq-int8",
            "--json",
        ]));
        assert_eq!(v["format"], "qdq-int8");
        let plan = &v["devices"][0];
        let original = &v["original"][0];
        let get = |d: &Value, k: &str| d[k].as_f64().unwrap();
        // int8 codes of the layers; biases and batch-norm parameters stay float32.
        assert!(
            get(plan, "weight_bytes") < 0.4 * get(original, "weight_bytes"),
            "{model}"
        );
        assert!(
            get(plan, "peak_activation_bytes") < get(original, "peak_activation_bytes"),
            "{model}"
        );
        assert!(
            get(plan, "latency_ms") < get(original, "latency_ms"),
            "{model}"
        );
    }
}

#[test]
fn weight_only_int8_is_folded_back_to_float_in_a_phones_ram() {
    let v = json(&edgefit(&[
        "fit",
        MNIST,
        "--device",
        "raspberry-pi-4",
        "--format",
        "weights-int8",
        "--json",
    ]));
    let plan = &v["devices"][0];
    let original = &v["original"][0];
    assert!(plan["weight_bytes"].as_u64() < original["weight_bytes"].as_u64());
    // Stored small, loaded as float32: the RAM it needs is the original's.
    assert_eq!(plan["ram_needed_bytes"], original["ram_needed_bytes"]);
    let notes = plan["notes"].to_string();
    assert!(
        notes.contains("folds the weights back to float32"),
        "{notes}"
    );
}

#[test]
fn an_accelerator_lists_what_it_refuses() {
    let v = json(&edgefit(&["fit", MNIST, "--device", "iphone-15", "--json"]));
    let acc = &v["devices"][0]["accelerator"];
    let nodes = acc["accelerator_nodes"].as_u64().unwrap() + acc["cpu_nodes"].as_u64().unwrap();
    // 35 nodes, 10 batch norms fused into their convs by every runtime.
    assert_eq!(nodes, 25, "{acc}");
    let refused: Vec<&str> = acc["unsupported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["op"].as_str().unwrap())
        .collect();
    // Core ML's ML Program list has no Flatten.
    assert_eq!(refused, ["Flatten"], "{acc}");
    // The Gemm after the Flatten depends on the first partition through the CPU: a second
    // partition. Copies: the input in, pool -> Flatten out, Flatten -> Gemm in, logits out.
    assert_eq!(acc["partitions"], 2, "{acc}");
    assert_eq!(acc["crossing_tensors"], 4, "{acc}");
}

/// A profile of the schema with `ram` bytes of RAM and `flash` of flash.
fn tiny_profile(id: &str, ram: u64, flash: u64) -> String {
    format!(
        r#"{{
  "schema": 1, "id": "{id}", "name": "Tiny test board", "class": "microcontroller",
  "cpu": {{ "core": "Cortex-M0+", "cores": 1, "clock_mhz": 48, "integer_target": "portable" }},
  "memory": {{ "ram_bytes": {ram}, "flash_bytes": {flash}, "bandwidth_gb_per_s": 0.1 }},
  "throughput_gops": {{ "fp32": 0.005, "fp16": null, "int8": 0.05 }},
  "power_w": {{ "active": 0.01 }},
  "runtime": {{ "name": "TFLite Micro", "runs_onnx": false, "integer_kernels_saturate": false }},
  "sources": [ {{ "what": "a test", "url": "https://example.invalid" }} ]
}}"#
    )
}

#[test]
fn a_users_profile_is_listed_checked_and_can_fail_the_fit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.json");
    std::fs::write(&path, tiny_profile("tiny-board", 16 * 1024, 64 * 1024)).unwrap();
    let file = path.to_str().unwrap();

    // In the user folder: listed next to the built-in ones.
    let listed = Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(["devices", "--json"])
        .env("EDGEFIT_DEVICES_DIR", dir.path())
        .output()
        .unwrap();
    let listed = json(&listed);
    let ids: Vec<&str> = listed["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"tiny-board") && ids.contains(&"cortex-m4f"),
        "{ids:?}"
    );

    // 100 KiB of activations and 80 KiB of weights do not fit 16 KiB / 64 KiB.
    let v = json(&edgefit(&[
        "fit",
        MNIST,
        "--device-file",
        file,
        "--device",
        "tiny-board",
        "--json",
    ]));
    let d = &v["devices"][0];
    assert_eq!(d["fits_ram"], false);
    assert_eq!(d["fits_flash"], false);
    assert!(d["ram_margin_bytes"].as_i64().unwrap() < 0);
    let text = edgefit(&[
        "fit",
        MNIST,
        "--device-file",
        file,
        "--device",
        "tiny-board",
    ]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(stdout.contains("NO "), "{stdout}");

    // --require-fit turns a red verdict into exit status 5; a latency target too.
    let o = edgefit(&[
        "fit",
        MNIST,
        "--device-file",
        file,
        "--device",
        "tiny-board",
        "--require-fit",
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = edgefit(&[
        "fit",
        MNIST,
        "--device",
        "raspberry-pi-4",
        "--max-latency-ms",
        "0.000001",
        "--require-fit",
    ]);
    assert_eq!(o.status.code(), Some(5));
    let o = edgefit(&[
        "fit",
        MNIST,
        "--device",
        "raspberry-pi-4",
        "--max-latency-ms",
        "1000",
        "--require-fit",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_profiles_and_unknown_devices_are_clear_errors() {
    let o = edgefit(&["fit", MNIST, "--device", "nokia-3310"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nokia-3310") && err.contains("raspberry-pi-4"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("broken.json", "{ not json".to_owned()),
        ("zero-ram.json", tiny_profile("zero-ram", 0, 1)),
        ("bad-id.json", tiny_profile("Bad Id!", 1, 1)),
        (
            "extra.json",
            tiny_profile("extra", 1, 1)
                .replace("\"schema\": 1,", "\"schema\": 1, \"colour\": \"red\","),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let o = edgefit(&["fit", MNIST, "--device-file", path.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(name), "{name}: {err}");
    }
    // In the user folder a broken file is a warning: the built-in devices still work.
    let o = Command::new(env!("CARGO_BIN_EXE_edgefit"))
        .args(["fit", MNIST, "--device", "cortex-m7", "--json"])
        .current_dir(root())
        .env("EDGEFIT_DEVICES_DIR", dir.path())
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("warning"));
}

#[test]
fn a_devices_profile_decides_the_int8_weight_range_of_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let bits = |device: &str| {
        let out = dir.path().join(format!("{device}.onnx"));
        let v = json(&edgefit(&[
            "optimize",
            MNIST,
            "--out",
            out.to_str().unwrap(),
            "--format",
            "qdq-int8",
            "--device",
            device,
            "--runs",
            "0",
            "--samples",
            "20",
            "--json",
        ]));
        let kernels = &v["integer_kernels"];
        (
            kernels["target"].as_str().unwrap().to_owned(),
            kernels["weight_bits"].as_u64().unwrap(),
        )
    };
    // ARM64 dot products are exact with full-range weights; an x86-64 without VNNI
    // saturates them, so its file uses 7-bit weights.
    assert_eq!(bits("raspberry-pi-4"), ("arm64".to_owned(), 8));
    assert_eq!(bits("x86-server-no-vnni"), ("x86-64".to_owned(), 7));
    let o = edgefit(&["optimize", MNIST, "--out", "x.onnx", "--device", "pdp-11"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn split_list_with_a_device_costs_every_cut_and_names_the_best() {
    let costs = |mbps: &str, rtt: &str| {
        let v = json(&edgefit(&[
            "split",
            MNIST,
            "--device",
            "cortex-m4f",
            "--bandwidth-mbps",
            mbps,
            "--rtt-ms",
            rtt,
            "--json",
        ]));
        assert_eq!(v["link"]["device"], "cortex-m4f");
        assert_eq!(v["link"]["server"], "x86-server-no-vnni");
        let cuts = v["cuts"].as_array().unwrap().clone();
        assert_eq!(cuts.len(), 36, "35 nodes: 36 cuts, both ends included");
        for c in &cuts {
            let e = &c["estimate"];
            let sum = e["device_ms"].as_f64().unwrap()
                + e["transfer_ms"].as_f64().unwrap()
                + e["server_ms"].as_f64().unwrap();
            assert!((sum - e["total_ms"].as_f64().unwrap()).abs() < 1e-9, "{e}");
        }
        // Device time grows along the cuts; the device-only end sends nothing.
        let device_ms: Vec<f64> = cuts
            .iter()
            .map(|c| c["estimate"]["device_ms"].as_f64().unwrap())
            .collect();
        assert!(device_ms.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(cuts[35]["estimate"]["sent_bytes"], 0);
        assert_eq!(cuts[0]["estimate"]["sent_bytes"], 784 * 4);
        v["best_cut"].as_u64().unwrap()
    };
    // A microcontroller next to a fast link: send the input. Over a slow one: keep it all.
    assert_eq!(costs("1000", "0"), 0);
    assert_eq!(costs("0.1", "300"), 35);
}

#[test]
fn each_format_is_estimated_as_its_file_computes() {
    let fit = |format: &str| {
        let v = json(&edgefit(&[
            "fit",
            MLP,
            "--device",
            "cortex-m7",
            "--format",
            format,
            "--json",
        ]));
        let d = v["devices"][0].clone();
        (
            d["latency_ms"].as_f64().unwrap(),
            d["weight_bytes"].as_u64().unwrap(),
        )
    };
    let (fp32_ms, fp32_bytes) = fit("fp32");
    // Stored small, computed in float32: the same time.
    for format in ["fp16", "weights-int8"] {
        let (ms, bytes) = fit(format);
        assert!(bytes < fp32_bytes, "{format}");
        assert!((ms - fp32_ms).abs() < 1e-9, "{format}: {ms} vs {fp32_ms}");
    }
    // Integer kernels: digits-mlp is Gemms only, all of them int8 in both integer formats.
    for format in ["qdq-int8", "dynamic-int8"] {
        let (ms, bytes) = fit(format);
        assert!(bytes < fp32_bytes / 2, "{format}");
        assert!(ms < fp32_ms, "{format}: {ms} vs {fp32_ms}");
    }
}
