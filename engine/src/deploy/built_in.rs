//! The device profiles compiled into Edgefit: every `assets/devices/*.json`, by file name
//! (a test checks that none is missing from this list).

/// (file name, contents) of each built-in profile, sorted by file name.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "android-midrange.json",
        include_str!("../../../assets/devices/android-midrange.json"),
    ),
    (
        "cortex-m4f.json",
        include_str!("../../../assets/devices/cortex-m4f.json"),
    ),
    (
        "cortex-m7.json",
        include_str!("../../../assets/devices/cortex-m7.json"),
    ),
    (
        "iphone-15.json",
        include_str!("../../../assets/devices/iphone-15.json"),
    ),
    (
        "jetson-orin-nano.json",
        include_str!("../../../assets/devices/jetson-orin-nano.json"),
    ),
    (
        "raspberry-pi-4.json",
        include_str!("../../../assets/devices/raspberry-pi-4.json"),
    ),
    (
        "raspberry-pi-5.json",
        include_str!("../../../assets/devices/raspberry-pi-5.json"),
    ),
    (
        "x86-laptop.json",
        include_str!("../../../assets/devices/x86-laptop.json"),
    ),
    (
        "x86-server-no-vnni.json",
        include_str!("../../../assets/devices/x86-server-no-vnni.json"),
    ),
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::BUILT_IN;
    use crate::deploy::device::DeviceCatalog;

    const IDS: [&str; 9] = [
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
    fn built_in_profiles_parse_and_cover_every_id() {
        let catalog = DeviceCatalog::built_in();
        assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
        for id in IDS {
            let profile = catalog.get(id).expect(id);
            assert_eq!(profile.origin, format!("built-in {id}.json"));
            assert!(!profile.sources.is_empty(), "{id} cites no source");
        }
        assert_eq!(catalog.profiles.len(), IDS.len());
    }

    #[test]
    fn built_in_list_is_sorted_and_names_match_ids() {
        let names: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        let catalog = DeviceCatalog::built_in();
        for profile in &catalog.profiles {
            assert!(names.contains(&format!("{}.json", profile.id).as_str()));
        }
    }

    #[test]
    fn every_asset_file_is_built_in() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/devices");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("assets/devices")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".json"))
            .collect();
        files.sort();
        let listed: Vec<&str> = BUILT_IN.iter().map(|(name, _)| *name).collect();
        for file in &files {
            assert!(listed.contains(&file.as_str()), "{file} is not in BUILT_IN");
        }
        assert_eq!(files.len(), listed.len());
    }

    #[test]
    fn accelerator_op_lists_are_sorted_unique_and_non_empty() {
        let catalog = DeviceCatalog::built_in();
        let mut seen = 0;
        for profile in &catalog.profiles {
            let Some(acc) = &profile.accelerator else {
                continue;
            };
            seen += 1;
            assert!(!acc.ops.is_empty(), "{}: empty op list", profile.id);
            for pair in acc.ops.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "{}: `{}` then `{}` (unsorted or duplicate)",
                    profile.id,
                    pair[0],
                    pair[1]
                );
            }
            assert!(acc.ops_source.starts_with("https://"), "{}", profile.id);
        }
        assert_eq!(seen, 3);
    }
}
