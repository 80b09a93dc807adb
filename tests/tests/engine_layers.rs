//! The engine's stages form a ladder: a module under `engine/src/<stage>/` may name
//! (`crate::<other>::…`, in code, not in comments) only the shared basics and the stages below
//! its own, in the order of `STAGES`. Like rerun's denied dependencies, this keeps the
//! pipeline readable from `ls engine/src` and stops a new module from tying the stages into a
//! circle again. A reversed import (say `crate::pipeline` named from `measure/`) fails here,
//! naming the file and line.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. `error` and `job` are the shared basics every stage may use.
const STAGES: &[&str] = &[
    "error", "job", "model", "analyse", "measure", "compress", "export", "recover", "pipeline",
    "guide", "deploy",
];

fn rank(name: &str) -> Option<usize> {
    match name {
        // The shared basics sit together at the bottom.
        "error" | "job" => Some(0),
        _ => STAGES.iter().position(|s| *s == name),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The stage a file belongs to: its first path component under `src/` (`model/load.rs` and
/// `model.rs` are both `model`).
fn stage_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Every `crate::<name>` named in the code of `text` (comments stripped), with line numbers.
fn named_modules(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Only modules count: `crate::analyse(..)` calls the re-exported function and
            // `crate::Error::…` names a re-exported type.
            let followed_by_path = after[name.len()..].starts_with("::");
            let is_module = name.starts_with(|c: char| c.is_ascii_lowercase());
            rest = &after[name.len()..];
            if followed_by_path && is_module {
                found.push((index + 1, name));
            }
        }
    }
    found
}

fn violations(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut problems = Vec::new();
    for file in files {
        let Some(stage) = stage_of(src, &file) else {
            continue;
        };
        if stage == "lib" {
            continue; // the crate root re-exports from every stage
        }
        let Some(own) = rank(&stage) else {
            problems.push(format!(
                "{}: `{stage}` is not a stage; put the file in one of {STAGES:?}",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(&file).expect("reading a source file");
        for (line, name) in named_modules(&text) {
            match rank(&name) {
                Some(theirs) if theirs <= own => {}
                Some(_) => problems.push(format!(
                    "{}:{line}: stage `{stage}` names the higher stage `{name}`",
                    file.display()
                )),
                None => problems.push(format!(
                    "{}:{line}: `crate::{name}` is not a stage (re-exports at the root are for \
                     the CLI and the studio)",
                    file.display()
                )),
            }
        }
    }
    problems
}

#[test]
fn lower_stages_never_name_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src");
    let problems = violations(&src);
    assert!(
        problems.is_empty(),
        "stage rule broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_sees_a_reversed_import_and_ignores_comments() {
    let dir = tempfile::tempdir().expect("temp dir");
    let measure = dir.path().join("measure");
    fs::create_dir_all(&measure).expect("mkdir");
    fs::write(
        measure.join("eval.rs"),
        "//! See [`crate::pipeline::optimize`].\nuse crate::model::load::LoadedModel;\nuse crate::pipeline::report::markdown;\nfn f() -> crate::Error::Io { crate::analyse(); }\n",
    )
    .expect("write");
    let problems = violations(dir.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("eval.rs:3") && problems[0].contains("`pipeline`"));
}
