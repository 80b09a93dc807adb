//! Finding and loading the ONNX Runtime shared library, once per process.

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::environment::Environment;

use super::{HOW_TO_ENABLE, LIBRARY_ENV, ORT_LIBRARY_ENV, runtime_error};
use crate::error::Result;

/// The library this process loaded, once loaded.
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
/// This process's one ONNX Runtime environment, created right after the library loads.
pub(super) static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
/// Serializes load attempts.
static LOADING: Mutex<()> = Mutex::new(());
/// The outcome of looking in the well-known places when nothing was configured, remembered
/// so a missing library is not searched for again and again.
static DISCOVERY_FAILED: OnceLock<String> = OnceLock::new();

/// The ONNX Runtime library loaded by this process, if one is.
pub fn loaded_library() -> Option<&'static Path> {
    LIBRARY.get().map(PathBuf::as_path)
}

/// Loads the ONNX Runtime shared library (once per process) and returns its path.
///
/// Looked for, in order:
/// 1. `explicit` (a setting or a command-line option): a library file or a folder holding one;
/// 2. `$EDGEFIT_ONNXRUNTIME_LIB`, then `$ORT_DYLIB_PATH`;
/// 3. well-known places: the `onnxruntime/capi/` folder of a pip-installed `onnxruntime`
///    (user, system, pyenv, virtualenv and conda site-packages, then where `python3` imports
///    it from), and system library folders (`/usr/lib`, `/usr/local/lib`, …).
///
/// A path given in (1) or (2) is used alone: when it does not load, the error says why rather
/// than falling back to another library. Each candidate is opened with `ort::init_from` until
/// one loads; only then is any other `ort` API used. Once a library is loaded, later calls
/// return it whatever they ask for (a process keeps the library it loaded).
///
/// When none loads: [`Error::Runtime`] naming what was tried and how to enable onnxruntime.
pub fn load(explicit: Option<&Path>) -> Result<&'static Path> {
    if let Some(path) = LIBRARY.get() {
        return Ok(path);
    }
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = LIBRARY.get() {
        return Ok(path);
    }
    let configured = explicit
        .map(|p| (p.to_path_buf(), "the configured library path".to_owned()))
        .or_else(|| env_path(LIBRARY_ENV).map(|p| (p, LIBRARY_ENV.to_owned())))
        .or_else(|| env_path(ORT_LIBRARY_ENV).map(|p| (p, ORT_LIBRARY_ENV.to_owned())));
    match configured {
        Some((path, origin)) => {
            let candidates = if path.is_dir() {
                libraries_in(&path)
            } else {
                vec![path.clone()]
            };
            if candidates.is_empty() {
                return Err(runtime_error(format!(
                    "the ONNX Runtime library was not found: {origin} is a folder with no libonnxruntime in it ({}); {HOW_TO_ENABLE}",
                    path.display()
                )));
            }
            try_candidates(&candidates).map_err(|tried| {
                runtime_error(format!(
                    "the ONNX Runtime library from {origin} does not load: {}; {HOW_TO_ENABLE}",
                    tried.join("; ")
                ))
            })
        }
        None => {
            if let Some(message) = DISCOVERY_FAILED.get() {
                return Err(runtime_error(message));
            }
            let mut candidates = well_known_libraries();
            let mut result = try_candidates(&candidates);
            if result.is_err() {
                let more: Vec<PathBuf> = python_capi_dir()
                    .map(|dir| libraries_in(&dir))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !candidates.contains(p))
                    .collect();
                if !more.is_empty() {
                    let tried_before = result.err().unwrap_or_default();
                    result = try_candidates(&more).map_err(|mut t| {
                        t.splice(0..0, tried_before);
                        t
                    });
                    candidates.extend(more);
                }
            }
            result.map_err(|tried| {
                let message = if tried.is_empty() {
                    format!(
                        "the ONNX Runtime library was not found (looked in pip's onnxruntime/capi folders and system library folders; ${LIBRARY_ENV} is not set); {HOW_TO_ENABLE}"
                    )
                } else {
                    format!(
                        "no ONNX Runtime library found loads ({}); {HOW_TO_ENABLE}",
                        tried.join("; ")
                    )
                };
                let _ = DISCOVERY_FAILED.set(message.clone());
                runtime_error(message)
            })
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Opens each candidate in turn with `ort::init_from`; on the first that loads, commits this
/// process's one environment and records it. Otherwise returns what each attempt said.
fn try_candidates(candidates: &[PathBuf]) -> std::result::Result<&'static Path, Vec<String>> {
    let mut tried = Vec::new();
    for path in candidates {
        if !path.exists() {
            tried.push(format!("{}: no such file", path.display()));
            continue;
        }
        let attempt = catch_unwind(|| {
            ort::init_from(path)
                .map_err(|e| e.to_string())?
                .with_name("edgefit")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        match attempt {
            Ok(Ok(environment)) => {
                let _ = ENVIRONMENT.set(environment);
                let _ = LIBRARY.set(path.clone());
                if let Some(p) = LIBRARY.get() {
                    return Ok(p);
                }
            }
            Ok(Err(e)) => tried.push(e),
            Err(_) => tried.push(format!("{}: loading it crashed", path.display())),
        }
    }
    Err(tried)
}

/// Whether `name` is an ONNX Runtime library file name (`libonnxruntime.so`,
/// `libonnxruntime.so.1.32.0`, `libonnxruntime.1.32.0.dylib`, `onnxruntime.dll`), not one of
/// its provider plug-ins.
fn is_library_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("onnxruntime.dll") {
        return true;
    }
    let Some(rest) = name.strip_prefix("libonnxruntime") else {
        return false;
    };
    if rest.starts_with('_') {
        return false;
    }
    let numeric = |s: &str| {
        s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(version) = rest.strip_prefix(".so") {
        return version.is_empty() || version.strip_prefix('.').is_some_and(numeric);
    }
    if let Some(version) = rest.strip_suffix(".dylib") {
        return version.is_empty() || version.strip_prefix('.').is_some_and(numeric);
    }
    false
}

/// The version numbers in a library file name, for ordering (newest first).
fn version_key(path: &Path) -> Vec<u64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// ONNX Runtime library files directly in `dir`, newest version first.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_library_name))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort_by(|a, b| version_key(b).cmp(&version_key(a)).then(a.cmp(b)));
    found
}

/// Expands `*` in the components of `pattern` (no other wildcards), sorted.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::new()];
    for component in Path::new(pattern).components() {
        let part = component.as_os_str().to_string_lossy().into_owned();
        if let Some((prefix, suffix)) = part.split_once('*') {
            let mut next = Vec::new();
            for base in &paths {
                let Ok(entries) = std::fs::read_dir(if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                }) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| {
                        n.len() >= prefix.len() + suffix.len()
                            && n.starts_with(prefix)
                            && n.ends_with(suffix)
                    })
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            }
            paths = next;
        } else {
            for p in &mut paths {
                p.push(&part);
            }
        }
    }
    paths.into_iter().filter(|p| p.exists()).collect()
}

/// Library files in the well-known places, in the order they are tried.
fn well_known_libraries() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut folders: Vec<String> = Vec::new();
    let capi = "site-packages/onnxruntime/capi";
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env_path(var) {
            folders.push(format!("{}/lib/python3*/{capi}", prefix.display()));
        }
    }
    if let Some(home) = &home {
        let home = home.display();
        folders.push(format!("{home}/.local/lib/python3*/{capi}"));
        folders.push(format!("{home}/.pyenv/versions/*/lib/python3*/{capi}"));
        folders.push(format!("{home}/miniconda3/lib/python3*/{capi}"));
        folders.push(format!("{home}/anaconda3/lib/python3*/{capi}"));
    }
    if let Some(root) = env_path("PYENV_ROOT") {
        folders.push(format!("{}/versions/*/lib/python3*/{capi}", root.display()));
    }
    for prefix in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"] {
        folders.push(format!("{prefix}/python3*/{capi}"));
        folders.push(format!("{prefix}/python3*/dist-packages/onnxruntime/capi"));
    }
    folders.push("/usr/lib/python3/dist-packages/onnxruntime/capi".to_owned());
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
        "/usr/local/onnxruntime/lib",
        "/opt/homebrew/lib",
    ] {
        folders.push(dir.to_owned());
    }
    let mut libraries = Vec::new();
    for pattern in folders {
        for dir in expand(&pattern) {
            for lib in libraries_in(&dir) {
                if !libraries.contains(&lib) {
                    libraries.push(lib);
                }
            }
        }
    }
    libraries
}

/// The `onnxruntime/capi` folder of the `onnxruntime` that `python3` imports, if any.
fn python_capi_dir() -> Option<PathBuf> {
    let python = std::env::var("EDGEFIT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(dir.trim()).join("capi");
    dir.is_dir().then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        for ok in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so.1",
            "libonnxruntime.dylib",
            "libonnxruntime.1.20.1.dylib",
            "onnxruntime.dll",
        ] {
            assert!(is_library_name(ok), "{ok}");
        }
        for no in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.32.0.dbg",
            "libonnxruntime.so.x",
            "onnxruntime.py",
            "libonnxruntime.a",
        ] {
            assert!(!is_library_name(no), "{no}");
        }
    }

    #[test]
    fn newest_version_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.20.1",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        let names: Vec<String> = libraries_in(dir.path())
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            [
                "libonnxruntime.so.1.32.0",
                "libonnxruntime.so.1.20.1",
                "libonnxruntime.so.1.9.0"
            ]
        );
        let pattern = format!("{}/libonnxruntime.so.1.*", dir.path().display());
        assert_eq!(expand(&pattern).len(), 3);
    }
}
