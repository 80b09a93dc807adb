#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

mod images;

/// A version 1.0 `.npy` file with the given header fields and raw data.
fn npy_v1(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    npy_with(1, descr, "False", shape, data)
}

fn npy_with(version: u8, descr: &str, fortran: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {dims}, }}");
    let prefix = if version == 1 { 10 } else { 12 };
    while (prefix + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The error message of a failed load, checked to name `file`.
fn error_naming(result: Result<Dataset>, file: &Path) -> String {
    let message = result.expect_err("should fail").to_string();
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(message.contains(&name), "`{message}` does not name {name}");
    message
}

#[test]
fn npy_round_trips_every_supported_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let expected = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("<f4", f32_bytes(&expected)),
        (
            "<f8",
            expected
                .iter()
                .flat_map(|&v| f64::from(v).to_le_bytes())
                .collect(),
        ),
        (
            "<f2",
            expected
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
        ),
        (
            "<i8",
            expected
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect(),
        ),
        (
            "<i4",
            expected
                .iter()
                .flat_map(|&v| (v as i32).to_le_bytes())
                .collect(),
        ),
        (
            "<i2",
            expected
                .iter()
                .flat_map(|&v| (v as i16).to_le_bytes())
                .collect(),
        ),
        ("|i1", expected.iter().map(|&v| v as i8 as u8).collect()),
        ("|u1", expected.iter().map(|&v| v as u8).collect()),
        (
            "<u2",
            expected
                .iter()
                .flat_map(|&v| (v as u16).to_le_bytes())
                .collect(),
        ),
        (
            "<u4",
            expected
                .iter()
                .flat_map(|&v| (v as u32).to_le_bytes())
                .collect(),
        ),
        (
            "<u8",
            expected
                .iter()
                .flat_map(|&v| (v as u64).to_le_bytes())
                .collect(),
        ),
        ("=f4", f32_bytes(&expected)),
    ];
    for (descr, data) in cases {
        let path = write(dir.path(), "a.npy", &npy_v1(descr, &[3, 2], &data));
        let ds = load_dataset(&path, None).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(ds.sample_shape, vec![2], "{descr}");
        assert_eq!(ds.len(), 3, "{descr}");
        assert_eq!(ds.inputs, expected, "{descr}");
        assert_eq!(ds.sample(1), &[2.0, 3.0], "{descr}");
        assert!(ds.labels.is_none() && !ds.generated);
        assert!(
            ds.description.contains("3 unlabelled samples"),
            "{}",
            ds.description
        );
    }
    let path = write(dir.path(), "b.npy", &npy_v1("|b1", &[2, 2], &[0, 1, 1, 0]));
    assert_eq!(
        load_dataset(&path, None).unwrap().inputs,
        [0.0, 1.0, 1.0, 0.0]
    );
    // Negative integers and non-integral floats keep their values.
    let path = write(dir.path(), "c.npy", &npy_v1("|i1", &[1, 2], &[0xFF, 0x80]));
    assert_eq!(load_dataset(&path, None).unwrap().inputs, [-1.0, -128.0]);
    let path = write(
        dir.path(),
        "d.npy",
        &npy_v1("<f4", &[2, 1, 1], &f32_bytes(&[-0.5, 1e-3])),
    );
    let ds = load_dataset(&path, None).unwrap();
    assert_eq!(
        (ds.sample_shape.clone(), ds.inputs.clone()),
        (vec![1, 1], vec![-0.5, 1e-3])
    );
}

#[test]
fn npy_versions_2_and_3_and_python2_headers() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_bytes(&[1.0, 2.0]);
    for version in [2, 3] {
        let path = write(
            dir.path(),
            "v.npy",
            &npy_with(version, "<f4", "False", &[2], &data),
        );
        let ds = load_dataset(&path, None).unwrap();
        assert_eq!((ds.len(), ds.sample_shape.clone()), (2, vec![]));
        assert_eq!(ds.inputs, [1.0, 2.0]);
    }
    // Python 2's numpy wrote `2L`; double quotes are valid Python too.
    let header = "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L, 1L)}\n";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&data);
    let path = write(dir.path(), "py2.npy", &bytes);
    assert_eq!(load_dataset(&path, None).unwrap().sample_shape, vec![1]);
}

#[test]
fn malformed_npy_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = npy_v1("<f4", &[2, 3], &f32_bytes(&[0.0; 6]));
    let path = dir.path().join("bad.npy");
    // Every truncation of a valid file.
    for len in 0..good.len() {
        std::fs::write(&path, &good[..len]).unwrap();
        error_naming(load_dataset(&path, None), &path);
    }
    // Every single-byte corruption of the header either loads or fails cleanly.
    for i in 0..good.len() - 24 {
        for value in [0u8, b'(', b')', b'{', b'\'', b'9', 0xFF] {
            let mut bytes = good.clone();
            bytes[i] = value;
            std::fs::write(&path, &bytes).unwrap();
            let _ = load_dataset(&path, None);
        }
    }
    let message = error_naming(
        {
            std::fs::write(&path, &good[..good.len() - 4]).unwrap();
            load_dataset(&path, None)
        },
        &path,
    );
    assert!(
        message.contains("truncated") && message.contains("needs 24"),
        "{message}"
    );
    let mut longer = good.clone();
    longer.push(0);
    std::fs::write(&path, &longer).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("25 bytes"));
    std::fs::write(&path, b"PK\x03\x04 not numpy").unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("magic"));
    std::fs::write(&path, npy_with(4, "<f4", "False", &[1], &[0; 4])).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("version 4.0"));
    // Shape `()` is a scalar.
    std::fs::write(&path, npy_v1("<f4", &[], &[0; 4])).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("scalar"));
    std::fs::write(&path, npy_v1("<f4", &[0, 3], &[])).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("no samples"));
    std::fs::write(&path, npy_v1("<f4", &[3, 0], &[])).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("empty sample dimension"));
}

#[test]
fn big_endian_fortran_object_and_structured_arrays_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.npy");
    let cases = [
        (npy_v1(">f4", &[1, 1], &1f32.to_be_bytes()), "big-endian"),
        (npy_v1(">i8", &[1, 1], &[0; 8]), "big-endian"),
        (
            npy_with(1, "<f4", "True", &[2, 2], &[0; 16]),
            "Fortran-order",
        ),
        (npy_v1("|O", &[1, 1], &[0; 8]), "object arrays"),
        (npy_v1("<c8", &[1, 1], &[0; 8]), "unsupported element type"),
        (npy_v1("<U3", &[1, 1], &[0; 12]), "unsupported element type"),
    ];
    for (bytes, expected) in cases {
        std::fs::write(&path, bytes).unwrap();
        let message = error_naming(load_dataset(&path, None), &path);
        assert!(message.contains(expected), "{message}");
        assert!(message.starts_with("dataset: "), "{message}");
    }
    let header = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0; 4]);
    std::fs::write(&path, bytes).unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("structured"));
}

/// An `.npz` with the given `(key, npy bytes)` entries, deflated when `compressed`.
fn npz(path: &Path, entries: &[(&str, Vec<u8>)], compressed: bool) {
    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let method = if compressed {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (key, bytes) in entries {
        zip.start_file(format!("{key}.npy"), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

#[test]
fn npz_with_inputs_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let x = npy_v1("<f4", &[3, 2], &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let path = dir.path().join("data.npz");
    for (compressed, (xk, yk)) in [
        (false, ("x", "y")),
        (true, ("inputs", "labels")),
        (true, ("data", "target")),
    ] {
        let y = npy_v1("<i8", &[3], &i64_bytes(&[2, 0, 1]));
        npz(&path, &[(xk, x.clone()), (yk, y)], compressed);
        let ds = load_dataset(&path, None).unwrap();
        assert_eq!(ds.sample_shape, vec![2]);
        assert_eq!(ds.sample(2), &[5.0, 6.0]);
        assert_eq!(ds.labels, Some(vec![2, 0, 1]));
        assert!(
            ds.description.contains("3 labelled samples"),
            "{}",
            ds.description
        );
    }
    // Labels of other integer types, and whole-number floats.
    for y in [
        npy_v1("|u1", &[3], &[2, 0, 1]),
        npy_v1("<i4", &[3], &[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
        npy_v1("<f4", &[3], &f32_bytes(&[2.0, 0.0, 1.0])),
    ] {
        npz(&path, &[("x", x.clone()), ("y", y)], true);
        assert_eq!(
            load_dataset(&path, None).unwrap().labels,
            Some(vec![2, 0, 1])
        );
    }
    // A single unnamed array (np.savez(path, a)) is the inputs.
    npz(&path, &[("arr_0", x.clone())], false);
    let ds = load_dataset(&path, None).unwrap();
    assert_eq!((ds.len(), ds.labels.is_none()), (3, true));

    let bad_labels = [
        (
            npy_v1("<f4", &[3], &f32_bytes(&[2.0, 0.5, 1.0])),
            "label 1 is 0.5",
        ),
        (
            npy_v1("<i8", &[3], &i64_bytes(&[2, -1, 1])),
            "label 1 is -1",
        ),
        (
            npy_v1("<i8", &[2], &i64_bytes(&[2, 1])),
            "2 labels but 3 samples",
        ),
        (npy_v1("<i8", &[3, 1], &i64_bytes(&[2, 0, 1])), "1-D"),
        (npy_v1("<i8", &[3], &i64_bytes(&[2, 0])), "truncated"),
    ];
    for (y, expected) in bad_labels {
        npz(&path, &[("x", x.clone()), ("y", y)], true);
        let message = error_naming(load_dataset(&path, None), &path);
        assert!(
            message.contains(expected) && message.contains("`y`"),
            "{message}"
        );
    }
    npz(&path, &[("a", x.clone()), ("b", x.clone())], false);
    let message = error_naming(load_dataset(&path, None), &path);
    assert!(
        message.contains("x, inputs, input, data") && message.contains("a, b"),
        "{message}"
    );
    std::fs::write(&path, b"not a zip").unwrap();
    assert!(error_naming(load_dataset(&path, None), &path).contains("zip"));
}

#[test]
fn sample_models_load_with_labels_and_calibration() {
    let models = repo_root().join("sample-models");
    for (name, count, shape) in [
        ("mnist-cnn", 1000, vec![1, 28, 28]),
        ("digits-mlp", 450, vec![64]),
    ] {
        let dir = models.join(name);
        let ds = load_dataset(&dir, None).unwrap();
        assert_eq!(ds.len(), count, "{name}");
        assert_eq!(ds.sample_shape, shape, "{name}");
        assert_eq!(ds.inputs.len(), count * ds.sample_len());
        assert_eq!(ds.input_name.as_deref(), Some("input"));
        assert!(!ds.generated);
        let labels = ds.labels.as_ref().unwrap();
        assert_eq!(labels.len(), count);
        assert!(labels.iter().all(|l| (0..10).contains(l)));
        for class in 0..10 {
            assert!(labels.contains(&class), "{name}: class {class} missing");
        }
        assert_eq!(ds.class_names.as_ref().map(Vec::len), Some(10));
        assert!(ds.inputs.iter().all(|v| v.is_finite()));
        assert!(
            ds.description
                .contains(&format!("{count} labelled samples")),
            "{}",
            ds.description
        );

        let calib = load_calibration(&dir).unwrap().unwrap();
        assert_eq!(calib.len(), 300, "{name}");
        assert_eq!(calib.sample_shape, shape);
        assert!(calib.labels.is_none());
        assert!(
            calib.description.contains("calibration"),
            "{}",
            calib.description
        );
    }
    let mnist = load_dataset(&models.join("mnist-cnn"), None).unwrap();
    assert_eq!(
        mnist
            .labels
            .as_ref()
            .unwrap()
            .iter()
            .filter(|&&l| l == 7)
            .count(),
        100
    );
    // Background pixels are (0 - 0.1307) / 0.3081.
    let background = -0.1307f32 / 0.3081;
    assert!(
        mnist
            .sample(0)
            .iter()
            .any(|v| (v - background).abs() < 1e-5)
    );
    let digits = load_dataset(&models.join("digits-mlp/dataset.json"), None).unwrap();
    assert!(digits.inputs.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn generated_inputs_are_deterministic_and_marked() {
    let a = generated_inputs(&[1, 4, 4], 8, 0);
    let b = generated_inputs(&[1, 4, 4], 8, 0);
    let c = generated_inputs(&[1, 4, 4], 8, 1);
    assert_eq!(a, b);
    assert_ne!(a.inputs, c.inputs);
    assert_eq!((a.len(), a.sample_len(), a.inputs.len()), (8, 16, 128));
    assert!(a.generated && a.labels.is_none());
    assert!(a.inputs.iter().all(|v| (-1.0..=1.0).contains(v)));
    let mean = a.inputs.iter().sum::<f32>() / 128.0;
    assert!(mean.abs() < 0.2, "{mean}");
    assert_eq!(
        generated_inputs(&[64], 128, 0).description,
        "128 generated inputs (uniform in [-1, 1], seed 0) — not real data"
    );
    assert!(generated_inputs(&[3], 0, 0).is_empty());
}

#[test]
fn sample_and_first() {
    let ds = Dataset {
        input_name: Some("input".into()),
        sample_shape: vec![2],
        inputs: vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        labels: Some(vec![0, 1, 2]),
        class_names: None,
        description: "test".into(),
        generated: false,
    };
    assert_eq!(ds.sample(2), &[4.0, 5.0]);
    assert!(ds.sample(3).is_empty());
    assert!(ds.sample(usize::MAX).is_empty());
    let head = ds.first(2);
    assert_eq!(head.len(), 2);
    assert_eq!(head.inputs, [0.0, 1.0, 2.0, 3.0]);
    assert_eq!(head.labels, Some(vec![0, 1]));
    assert_eq!(head.description, "test, first 2 of 3 samples");
    assert_eq!(ds.first(10), ds);
    assert!(ds.first(0).is_empty());
    let odd = Dataset {
        sample_shape: vec![0],
        ..ds.clone()
    };
    assert_eq!(odd.len(), 3);
    assert!(odd.sample(0).is_empty());
}

#[test]
fn preprocess_defaults_and_serde() {
    let p: Preprocess = serde_json::from_str("{}").unwrap();
    assert_eq!(p, Preprocess::default());
    assert_eq!(p.scale, 1.0 / 255.0);
    assert_eq!((p.channels, p.layout), (ChannelOrder::Rgb, Layout::Nchw));
    let p: Preprocess =
        serde_json::from_str(r#"{"channels": "GRAY", "layout": "NHWC", "resize": [224, 224]}"#)
            .unwrap();
    assert_eq!(
        (p.channels, p.layout, p.resize),
        (ChannelOrder::Gray, Layout::Nhwc, Some([224, 224]))
    );
    let text = serde_json::to_string(&p).unwrap();
    assert_eq!(serde_json::from_str::<Preprocess>(&text).unwrap(), p);
}
