#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn overrides_merge_onto_defaults_and_round_trip_as_json() {
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Int { bits: 8 };
    recipe.layers.insert(
        "conv1".into(),
        LayerOverride {
            prune_ratio: Some(0.5),
            precision: Some(Precision::Float16),
            ..Default::default()
        },
    );
    let s = recipe.settings_for("conv1");
    assert_eq!((s.prune_ratio, s.precision), (0.5, Precision::Float16));
    assert_eq!(
        recipe.settings_for("other").precision,
        Precision::Int { bits: 8 }
    );
    let back = Recipe::from_json(&recipe.to_json()).unwrap();
    assert_eq!(back, recipe);
}

#[test]
fn impossible_values_and_unknown_layers_are_errors() {
    let mut recipe = Recipe::default();
    recipe.defaults.prune_ratio = 1.5;
    assert!(
        recipe
            .validate(["a"])
            .unwrap_err()
            .to_string()
            .contains("prune ratio")
    );
    let mut recipe = Recipe::default();
    recipe.defaults.precision = Precision::Int { bits: 12 };
    assert!(
        recipe
            .validate(["a"])
            .unwrap_err()
            .to_string()
            .contains("12 bits")
    );
    let mut recipe = Recipe::default();
    recipe
        .layers
        .insert("nope".into(), LayerOverride::default());
    let message = recipe.validate(["a", "b"]).unwrap_err().to_string();
    assert!(
        message.contains("`nope`") && message.contains("a, b"),
        "{message}"
    );
    assert!(Recipe::from_json(r#"{"version": 2}"#).is_err());
    assert!(Recipe::from_json(r#"{"version": 1, "typo": 3}"#).is_err());
}

#[test]
fn reconstruction_round_trips_and_old_recipes_still_parse() {
    let mut recipe = Recipe {
        reconstruct: Reconstruction {
            enabled: true,
            mask: PruneMask::Activation,
            dampening: 0.05,
        },
        ..Recipe::default()
    };
    recipe.defaults.clipping = Clipping::OutputMse;
    let json = recipe.to_json();
    assert!(
        json.contains("\"activation\"") && json.contains("output_mse"),
        "{json}"
    );
    assert_eq!(Recipe::from_json(&json).unwrap(), recipe);
    // A recipe written before the field existed.
    let old = Recipe::from_json(
        r#"{"version": 1, "defaults": {"prune_ratio": 0.5}, "fold_batchnorm": true}"#,
    )
    .unwrap();
    assert_eq!(old.reconstruct, Reconstruction::default());
    assert!(!old.reconstruct.enabled);
    let partial = Recipe::from_json(r#"{"version": 1, "reconstruct": {"enabled": true}}"#).unwrap();
    assert!(partial.reconstruct.enabled);
    assert_eq!(partial.reconstruct.dampening, 0.01);
    let mut bad = Recipe::default();
    bad.reconstruct.dampening = -1.0;
    assert!(bad.validate(["a"]).is_err());
}

#[test]
fn the_integer_weight_range_follows_the_target_and_full_range_is_refused_where_it_saturates() {
    let qdq = |target, range| {
        let mut r = Recipe {
            target,
            ..Recipe::default()
        }
        .with_int8_activations(true);
        r.activations.weight_range = range;
        r
    };
    assert_eq!(Recipe::default().target, Target::Portable);
    // Weight-only formats: no integer kernels, no cap.
    assert_eq!(Recipe::default().integer_kernel_bits_cap(), None);
    for (target, cap) in [
        (Target::Portable, Some(7)),
        (Target::X86_64, Some(7)),
        (Target::X86_64Vnni, None),
        (Target::Arm64, None),
    ] {
        assert_eq!(
            qdq(target, WeightRange::Auto).integer_kernel_bits_cap(),
            cap,
            "{target:?}"
        );
        assert_eq!(
            qdq(target, WeightRange::Reduced).integer_kernel_bits_cap(),
            Some(7)
        );
        let full = qdq(target, WeightRange::Full);
        assert_eq!(full.validate(["a"]).is_ok(), target.full_range_exact());
        if target.full_range_exact() {
            assert_eq!(full.integer_kernel_bits_cap(), None);
        }
        assert_eq!(Target::parse(target.name()), Some(target));
    }
    assert!(Target::parse("host").is_some());
    assert_eq!(Target::parse("riscv"), None);
    let recipe = qdq(Target::Arm64, WeightRange::Full);
    let json = recipe.to_json();
    assert!(
        json.contains("\"target\": \"arm64\"") && json.contains("\"weight_range\": \"full\""),
        "{json}"
    );
    assert_eq!(Recipe::from_json(&json).unwrap(), recipe);
    let vnni = Recipe::from_json(r#"{"version": 1, "target": "x86-64-vnni"}"#).unwrap();
    assert_eq!(vnni.target, Target::X86_64Vnni);
}

#[test]
fn a_partial_recipe_file_keeps_the_documented_defaults() {
    let recipe = Recipe::from_json(
        r#"{"version": 1, "defaults": {"prune_ratio": 0.5, "precision": {"type": "int", "bits": 4}}}"#,
    )
    .unwrap();
    let d = recipe.defaults;
    assert!(d.symmetric && d.per_channel, "{d:?}");
    assert_eq!(d.clipping, Clipping::MinMax);
    assert_eq!(d.prune_ratio, 0.5);
    assert_eq!(
        Recipe::from_json(r#"{"version": 1}"#).unwrap(),
        Recipe::default()
    );
}
