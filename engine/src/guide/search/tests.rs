//! The front, the recipe of a point and the candidates of a size search, on hand-made tables.

#![allow(clippy::unwrap_used)]
use super::*;
use crate::guide::sensitivity::{Cell, LayerSensitivity};
use crate::measure::runtime::RuntimeKind;

fn cell(bytes: u64, noise: f64) -> Option<Cell> {
    Some(Cell {
        output_sqnr_db: sqnr_of_noise(noise),
        noise_ratio: vec![noise],
        top1_agreement: 1.0,
        accuracy: None,
        weight_sqnr_db: None,
        bytes,
        macs: None,
    })
}

fn layer(name: &str, bytes: u64, cells: Vec<Option<Cell>>) -> LayerSensitivity {
    LayerSensitivity {
        name: name.to_owned(),
        op: "Conv".to_owned(),
        weight: format!("{name}.w"),
        parameters: bytes / 4,
        bytes,
        macs: None,
        cells,
    }
}

fn table(layers: Vec<LayerSensitivity>) -> Sensitivity {
    let candidate = |bits| Candidate {
        precision: Precision::Int { bits },
        prune_ratio: 0.0,
    };
    Sensitivity {
        schema: crate::guide::sensitivity::SENSITIVITY_SCHEMA.to_owned(),
        model: String::new(),
        model_file: Default::default(),
        data: String::new(),
        samples: 1,
        generated_data: true,
        runtime: RuntimeKind::Tract,
        input_shape: vec![1],
        base: Recipe::default(),
        candidates: vec![candidate(8), candidate(6), candidate(2)],
        labels: vec!["int8".into(), "int6".into(), "int2".into()],
        outputs: vec!["y".into()],
        original_accuracy: None,
        layers,
        skipped: Vec::new(),
        model_runs: 0,
        model_builds: 0,
        wall_time_s: 0.0,
        method: String::new(),
    }
}

#[test]
fn the_front_takes_the_cheapest_noise_per_byte_first_and_adds_noise() {
    let s = table(vec![
        // Candidate 0 is dominated by candidate 1 (same bytes, less noise): never chosen.
        layer(
            "a",
            400,
            vec![cell(100, 0.01), cell(100, 0.001), cell(50, 0.1)],
        ),
        layer(
            "b",
            1000,
            vec![cell(250, 0.0001), None, cell(250, f64::INFINITY)],
        ),
    ]);
    let front = front(&s, 10);
    let choices: Vec<Vec<Option<usize>>> = front.iter().map(|p| p.choice.clone()).collect();
    assert_eq!(
        choices,
        [
            vec![None, None],
            vec![None, Some(0)],
            vec![Some(1), Some(0)],
            vec![Some(2), Some(0)],
        ]
    );
    let sizes: Vec<u64> = front.iter().map(|p| p.size_bytes).collect();
    assert_eq!(sizes, [1410, 660, 360, 310]);
    assert_eq!(front[0].predicted_sqnr_db, None);
    let last = front[3].predicted_sqnr_db.unwrap();
    assert!((last - -10.0 * 0.1001f64.log10()).abs() < 1e-9, "{last}");
    // The recipe of a point names exactly its compressed layers.
    let recipe = recipe_of(&s, &Recipe::default(), &front[2].choice);
    assert_eq!(
        recipe.settings_for("a").precision,
        Precision::Int { bits: 6 }
    );
    assert_eq!(
        recipe.settings_for("b").precision,
        Precision::Int { bits: 8 }
    );
    assert_eq!(recipe.settings_for("c").precision, Precision::Float32);
    assert_eq!(format_of(&recipe), ExportFormat::WeightsInt8);
}

#[test]
fn a_size_search_leaves_out_candidates_that_save_no_bytes() {
    use crate::compress::plan::PruneMethod;
    let all = crate::guide::sensitivity::candidates(&[8, 4], true, &[0.5]);
    let (kept, dropped) = size_candidates(&all, PruneMethod::Magnitude);
    let labels: Vec<String> = kept.iter().map(Candidate::label).collect();
    assert_eq!(labels, ["int8", "fp16"]);
    assert_eq!(
        dropped,
        [
            "int4 (stored in int8 containers: the bytes of int8, with more error)",
            "prune 50% (magnitude pruning leaves zeros in a dense file: no bytes saved)"
        ]
    );
    // Removed channels do save bytes; without int8 to stand for it, int4 stays.
    let (kept, _) = size_candidates(&all[1..], PruneMethod::ChannelsL1);
    let labels: Vec<String> = kept.iter().map(Candidate::label).collect();
    assert_eq!(labels, ["int4", "fp16", "prune 50%"]);
}
