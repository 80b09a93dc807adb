//! Real data from the window: Data... picks an image folder (through the built-in dialog),
//! the form is filled from the model's input, the data loads in the background, thumbnails
//! show the first samples, and the choice is remembered with the session. Headless.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{studio_sized, type_into, wait_idle};

use std::path::PathBuf;
use std::time::Duration;

use edgefit::gui::{Command, Persisted, StudioApp};
use edgefit_tests::sample_model as sample;
use egui::accesskit::Role;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;

/// The MNIST CNN alone in a folder (no dataset beside it: inputs are generated), and an
/// image folder with two classes of 28x28 gray digits-like images.
fn model_and_images() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(sample("mnist-cnn"), &model).unwrap();
    let images = dir.path().join("images");
    for (class, stroke) in [("ones", 0u32), ("sevens", 1)] {
        std::fs::create_dir_all(images.join(class)).unwrap();
        for i in 0..3u32 {
            // A vertical bar for "ones", a bar plus a top stroke for "sevens".
            let img = image::GrayImage::from_fn(28, 28, |x, y| {
                let bar = (12 + i..16 + i).contains(&x) && (4..24).contains(&y);
                let top = stroke == 1 && (4..8).contains(&y) && (6..22).contains(&x);
                image::Luma([if bar || top { 255 } else { 0 }])
            });
            img.save(images.join(class).join(format!("{i}.png")))
                .unwrap();
        }
    }
    (dir, model, images)
}

#[test]
fn an_image_folder_chosen_in_the_window_is_evaluated_on_and_remembered() {
    let (dir, model, images) = model_and_images();
    let mut harness = studio_sized(&model, false, [1400.0, 1800.0]);
    assert!(
        harness
            .state()
            .session
            .as_ref()
            .unwrap()
            .data
            .as_ref()
            .unwrap()
            .generated
    );
    harness.get_by_label("Data...").click();
    harness.step();
    harness.step();
    assert!(
        harness.state().file_dialogs.is_open(),
        "{:?}",
        harness.state().error
    );
    // (A new window is sized on its first frame and drawn on the next.)
    harness.step();
    // The built-in dialog takes a folder: go there and use it.
    type_into(&mut harness, "Folder", &images.display().to_string());
    harness.get_by_label("Go").click();
    harness.step();
    harness.step();
    harness.get_by_label("Use this folder").click();
    harness.run();
    // The form is filled from the model's [1, 1, 28, 28] input.
    let resize = harness
        .get_by_role_and_label(Role::TextInput, "Resize")
        .value();
    assert_eq!(resize.as_deref(), Some("28x28"));
    harness.get_by_label("Load data").click();
    harness.step();
    wait_idle(&mut harness);
    {
        let app = harness.state();
        assert!(app.error.is_none(), "{:?}", app.error);
        let s = app.session.as_ref().unwrap();
        let data = s.data.as_ref().unwrap();
        assert!(!data.generated);
        assert_eq!(data.len(), 6);
        assert_eq!(data.sample_shape, vec![1, 28, 28]);
        assert_eq!(
            data.class_names.as_deref(),
            Some(&["ones".to_owned(), "sevens".to_owned()][..])
        );
        assert_eq!(s.run.data.as_ref().unwrap().path, images);
    }
    // Thumbnails of the first samples, as the model sees them.
    assert!(harness.query_by_label("sample 1").is_some());
    // Evaluations run on it: accuracy against its labels.
    harness.get_by_label("Evaluate now").click();
    harness.step();
    wait_idle(&mut harness);
    let session_file = dir.path().join("s.edgefit.json");
    {
        let app = harness.state();
        let s = app.session.as_ref().unwrap();
        assert_eq!(s.points.len(), 1, "{:?}", app.error);
        assert!(s.points[0].accuracy.is_some());
        assert!(!s.points[0].data.as_ref().unwrap().generated);
    }
    harness
        .state_mut()
        .send(Command::SaveSession(session_file.clone()));
    harness.step();

    // Reopened: the data is read again by itself and the saved point is shown, not measured.
    let mut again = Harness::builder()
        .with_size([1400.0, 1800.0])
        .build_eframe(|_cc| StudioApp::new(Persisted::default(), None));
    again.state_mut().send(Command::OpenSession(session_file));
    wait_idle(&mut again);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(20));
        again.step();
    }
    wait_idle(&mut again);
    let app = again.state();
    let s = app.session.as_ref().unwrap();
    assert!(!s.data.as_ref().unwrap().generated, "{:?}", app.error);
    assert_eq!(s.data.as_ref().unwrap().len(), 6);
    assert!(s.baseline.is_some());
    assert_eq!(app.evaluations_started, 0);
}

#[test]
fn data_that_does_not_fit_the_model_is_refused_and_generated_inputs_stay() {
    let (dir, model, _) = model_and_images();
    // 64 values per sample: the digits MLP's input, not the CNN's 1x28x28.
    let wrong = dir.path().join("wrong.npy");
    std::fs::copy(
        sample("digits-mlp")
            .parent()
            .unwrap()
            .join("test_inputs.npy"),
        &wrong,
    )
    .unwrap();
    let mut harness = studio_sized(&model, false, [1400.0, 1800.0]);
    harness.state_mut().send(Command::ChooseData(wrong.clone()));
    harness.step();
    harness.step();
    harness.get_by_label("Load data").click();
    harness.step();
    wait_idle(&mut harness);
    let app = harness.state();
    let error = app.error.clone().unwrap_or_default();
    assert!(
        error.contains("does not fit the model") && error.contains("wrong.npy"),
        "{error}"
    );
    let s = app.session.as_ref().unwrap();
    assert!(s.data.as_ref().unwrap().generated);
    assert!(s.run.data.is_none());
}
