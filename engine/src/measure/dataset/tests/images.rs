//! Image-folder datasets: classes from folders, preprocessing, and errors naming the file.

use super::*;

/// A `width` x `height` RGB image whose pixel (x, y) is (10x + y, 100 + y, 200).
fn gradient(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(10 * x + y) as u8, 100 + y as u8, 200])
    })
}

#[test]
fn image_folder_with_two_classes_and_preprocess_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for class in ["dog", "cat"] {
        std::fs::create_dir(root.join(class)).unwrap();
    }
    gradient(3, 2).save(root.join("cat/b.png")).unwrap();
    gradient(3, 2).save(root.join("cat/a.bmp")).unwrap();
    gradient(3, 2).save(root.join("dog/z.PNG")).unwrap();
    std::fs::write(root.join("dog/notes.txt"), "ignored").unwrap();
    std::fs::create_dir(root.join(".hidden")).unwrap();
    gradient(3, 2).save(root.join(".hidden/x.png")).unwrap();

    // Defaults: RGB, x / 255, CHW.
    let ds = load_dataset(root, None).unwrap();
    assert_eq!(ds.sample_shape, vec![3, 2, 3]);
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.labels, Some(vec![0, 0, 1]));
    assert_eq!(
        ds.class_names,
        Some(vec!["cat".to_string(), "dog".to_string()])
    );
    let red: Vec<f32> = [0u8, 10, 20, 1, 11, 21]
        .iter()
        .map(|&v| f32::from(v) / 255.0)
        .collect();
    // raw * (1/255) may differ from raw / 255 in the last bit.
    let close = |a: &[f32], b: &[f32]| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    };
    assert!(close(&ds.sample(0)[..6], &red), "{:?}", ds.sample(0));
    assert!(close(&ds.sample(0)[6..7], &[100.0 / 255.0]));
    assert!(close(&ds.sample(2)[17..], &[200.0 / 255.0]));
    assert!(
        ds.description.contains("3 labelled images, 2 classes"),
        "{}",
        ds.description
    );

    // preprocess.json: BGR, HWC, one mean and std for every channel.
    std::fs::write(
        root.join("preprocess.json"),
        r#"{"scale": 1.0, "mean": [100], "std": [2], "channels": "bgr", "layout": "nhwc"}"#,
    )
    .unwrap();
    let ds = load_dataset(root, None).unwrap();
    assert_eq!(ds.sample_shape, vec![2, 3, 3]);
    // Pixel (0, 0) is RGB (0, 100, 200): B, G, R = 200, 100, 0.
    assert_eq!(&ds.sample(0)[..3], &[50.0, 0.0, -50.0]);

    // The argument wins over preprocess.json: gray, resized to 4x5.
    let gray = Preprocess {
        resize: Some([4, 5]),
        channels: ChannelOrder::Gray,
        ..Preprocess::default()
    };
    let ds = load_dataset(root, Some(&gray)).unwrap();
    assert_eq!(ds.sample_shape, vec![1, 4, 5]);
    assert_eq!(ds.inputs.len(), 3 * 20);
    assert!(ds.inputs.iter().all(|v| (0.0..=1.0).contains(v)));

    // Per-channel mean and std.
    std::fs::write(
        root.join("preprocess.json"),
        r#"{"mean": [0.5, 0.25, 0.0], "std": [0.5, 0.25, 1.0], "resize": [2, 2]}"#,
    )
    .unwrap();
    let ds = load_dataset(root, None).unwrap();
    assert_eq!(ds.sample_shape, vec![3, 2, 2]);
    let blue = ds.sample(0)[8];
    assert!((blue - 200.0 / 255.0).abs() < 1e-6, "{blue}");

    // Bad settings name preprocess.json.
    let settings = root.join("preprocess.json");
    for (json, expected) in [
        (r#"{"mean": [1, 2]}"#, "\"mean\" has 2 values"),
        (r#"{"std": [0]}"#, "non-zero"),
        (r#"{"resize": [0, 4]}"#, "at least 1"),
        (r#"{"scael": 1}"#, "unknown field"),
        (r#"{"channels": "cmyk"}"#, "unknown variant"),
    ] {
        std::fs::write(&settings, json).unwrap();
        let message = error_naming(load_dataset(root, None), &settings);
        assert!(message.contains(expected), "{message}");
    }
    std::fs::remove_file(&settings).unwrap();

    // A JPEG of another size needs a resize.
    image::DynamicImage::ImageRgb8(gradient(8, 8))
        .save(root.join("dog/big.jpg"))
        .unwrap();
    let message = error_naming(load_dataset(root, None), &root.join("dog/big.jpg"));
    assert!(message.contains("resize"), "{message}");
    let resize = Preprocess {
        resize: Some([2, 3]),
        ..Preprocess::default()
    };
    assert_eq!(load_dataset(root, Some(&resize)).unwrap().len(), 4);

    // An undecodable image names itself.
    std::fs::write(root.join("dog/broken.png"), b"\x89PNG\r\n\x1a\n broken").unwrap();
    let message = error_naming(
        load_dataset(root, Some(&resize)),
        &root.join("dog/broken.png"),
    );
    assert!(message.contains("decode"), "{message}");
}

#[test]
fn dataset_folder_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "x.npy",
        &npy_v1("<f4", &[2, 1], &f32_bytes(&[0.0, 1.0])),
    );
    write(root, "y.npy", &npy_v1("<i8", &[2], &i64_bytes(&[0, 3])));
    let json = root.join(DATASET_FILE);
    std::fs::write(
        &json,
        r#"{"format": "edgefit-dataset/1", "inputs": "x.npy", "labels": "y.npy", "num_classes": 4}"#,
    )
    .unwrap();
    let ds = load_dataset(root, None).unwrap();
    assert_eq!(ds.labels, Some(vec![0, 3]));
    // The dataset.json path itself works too, and no calibration is Ok(None).
    assert_eq!(load_dataset(&json, None).unwrap().labels, Some(vec![0, 3]));
    assert_eq!(load_calibration(root).unwrap(), None);

    std::fs::write(
        &json,
        r#"{"format": "edgefit-dataset/1", "inputs": "x.npy", "labels": "y.npy", "num_classes": 3}"#,
    )
    .unwrap();
    let message = error_naming(load_dataset(root, None), &root.join("y.npy"));
    assert!(
        message.contains("label 1 is 3") && message.contains("3 classes"),
        "{message}"
    );

    std::fs::write(
        &json,
        r#"{"format": "edgefit-dataset/9", "inputs": "x.npy"}"#,
    )
    .unwrap();
    assert!(error_naming(load_dataset(root, None), &json).contains("edgefit-dataset/9"));
    std::fs::write(&json, r#"{"format": "edgefit-dataset/1"}"#).unwrap();
    assert!(error_naming(load_dataset(root, None), &json).contains("inputs"));
    std::fs::write(
        &json,
        r#"{"format": "edgefit-dataset/1", "inputs": "missing.npy"}"#,
    )
    .unwrap();
    error_naming(load_dataset(root, None), &root.join("missing.npy"));

    // Calibration samples must match the inputs' sample shape.
    write(
        root,
        "c.npy",
        &npy_v1("<f4", &[1, 2], &f32_bytes(&[0.0, 1.0])),
    );
    std::fs::write(
        &json,
        r#"{"format": "edgefit-dataset/1", "inputs": "x.npy", "calibration": "c.npy"}"#,
    )
    .unwrap();
    let message = load_calibration(root).unwrap_err().to_string();
    assert!(
        message.contains("c.npy") && message.contains("[2]") && message.contains("[1]"),
        "{message}"
    );

    // Not a dataset at all.
    let empty = root.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(error_naming(load_dataset(&empty, None), &empty).contains("no dataset.json"));
    gradient(2, 2).save(empty.join("flat.png")).unwrap();
    assert!(error_naming(load_dataset(&empty, None), &empty).contains("sub-folder named after"));
    let csv = write(root, "data.csv", b"1,2");
    assert!(error_naming(load_dataset(&csv, None), &csv).contains("'.csv'"));
    let missing = root.join("nope.npy");
    error_naming(load_dataset(&missing, None), &missing);
    assert!(load_calibration(&missing).is_err());
    assert_eq!(load_calibration(&root.join("x.npy")).unwrap(), None);
}
